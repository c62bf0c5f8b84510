"""`mreg scan --all-refs` keeps one file set per ref: each migration carries the refs it is on."""

from __future__ import annotations

import json

from registry import config
from registry.cli.main import run
from registry.registration import list_migrations, show_migration
from tests.git import seedrepo
from tests.git.test_scan import scan

MAIN, FEATURE = "refs/heads/main", "refs/heads/feature"
FEATURE_ONLY = "db/migrations/V30__feature_only.sql"
SESSIONS = "db/migrations/20240110_120000_add_sessions.sql"


def rows_by_path():
    return {p: m for m in list_migrations(config.load()) for p in m["paths"]}


def branch(root):
    """A feature branch with a migration of its own; then main deletes a file the branch keeps."""
    seedrepo.git(root, "checkout", "-q", "-b", "feature")
    seedrepo.write_commit(root, seedrepo.ALICE, "2024-04-01T00:00:00Z",
                          {FEATURE_ONLY: "CREATE TABLE feature (id int);\n"}, {}, "feature")
    seedrepo.git(root, "checkout", "-q", "main")
    seedrepo.write_commit(root, seedrepo.BOB, "2024-04-02T00:00:00Z", {SESSIONS: None}, {}, "drop sessions")


def test_a_plain_scan_reports_the_branch_it_is_on(seed_project):
    result, _ = scan()
    active = [m for m in result.migrations if m["status"] == "active"]
    assert active and all(m["refs"] == [MAIN] for m in active)
    assert all(m["refs"] == [] for m in result.migrations if m["status"] == "deleted")
    assert all(r["refs"] == [MAIN] for r in list_migrations(config.load()) if r["status"] == "active")


def test_all_refs_keeps_a_file_set_per_ref(seed_project, capsys):
    branch(seed_project.root)
    result, _ = scan(all_refs=True)
    by_path = {p: m for m in result.migrations for p in m["paths"]}
    assert by_path[FEATURE_ONLY]["refs"] == [FEATURE] and by_path[FEATURE_ONLY]["status"] == "active"
    # deleted on main, still on the feature branch: active there, not "deleted" for everyone
    assert by_path[SESSIONS]["refs"] == [FEATURE]
    assert by_path[SESSIONS]["status"] == "active" and by_path[SESSIONS]["deleted"] is None
    assert by_path["db/migrations/V1__create_users.sql"]["refs"] == [FEATURE, MAIN]

    rows = rows_by_path()
    assert rows[FEATURE_ONLY]["refs"] == [FEATURE] and rows[SESSIONS]["refs"] == [FEATURE]
    assert rows["db/migrations/V1__create_users.sql"]["refs"] == [FEATURE, MAIN]
    assert show_migration(config.load(), FEATURE_ONLY)["refs"] == [FEATURE]
    capsys.readouterr()
    assert run(["list", "--json"]) == 0
    listed = {m["path"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed[FEATURE_ONLY]["refs"] == [FEATURE]

    # The branch edits the file main deleted: the same migration, one more revision, still one id.
    root = seed_project.root
    seedrepo.git(root, "checkout", "-q", "feature")
    seedrepo.write_commit(root, seedrepo.ALICE, "2024-04-03T00:00:00Z",
                          {SESSIONS: "CREATE TABLE sessions (id text PRIMARY KEY, at timestamptz);\n"}, {}, "edit")
    seedrepo.git(root, "checkout", "-q", "main")
    again, _ = scan(all_refs=True)
    sessions = [m for m in again.migrations if SESSIONS in m["paths"]]
    assert len(sessions) == 1 and sessions[0]["id"] == by_path[SESSIONS]["id"]
    assert len(sessions[0]["revisions"]) == 2 and sessions[0]["refs"] == [FEATURE]

    # The branch is gone: what only it held is deleted; a plain scan of main says the same.
    seedrepo.git(root, "branch", "-q", "-D", "feature")
    after, _ = scan(all_refs=True)
    by_path = {p: m for m in after.migrations for p in m["paths"]}
    assert by_path[FEATURE_ONLY]["status"] == "deleted" and by_path[FEATURE_ONLY]["refs"] == []
    assert by_path[SESSIONS]["status"] == "deleted" and by_path[SESSIONS]["deleted"]["sha"] is None
    rows = rows_by_path()
    assert rows[FEATURE_ONLY]["status"] == "deleted" and rows[FEATURE_ONLY]["refs"] == []


def test_a_branch_from_an_old_commit_gets_that_commits_files(seed_project):
    root = seed_project.root
    scan()  # main scanned up to its tip
    seedrepo.git(root, "checkout", "-q", "-b", "old", seed_project.commits[0])  # before the rename and deletion
    seedrepo.write_commit(root, seedrepo.ALICE, "2024-04-05T00:00:00Z",
                          {"db/migrations/V31__old_branch.sql": "CREATE TABLE old_branch (id int);\n"}, {}, "old")
    seedrepo.git(root, "checkout", "-q", "main")
    result, _ = scan(all_refs=True)
    assert result.new_commits == 1
    by_path = {p: m for m in result.migrations for p in m["paths"]}
    old = "refs/heads/old"
    assert by_path["db/migrations/V31__old_branch.sql"]["refs"] == [old]
    # the old branch still has the deleted file and the file under its name before the rename
    deleted, renamed = seedrepo.DELETED, seedrepo.RENAMED
    assert by_path[deleted]["refs"] == [old] and by_path[deleted]["status"] == "active"
    assert by_path[renamed[1]]["refs"] == [MAIN, old]
    assert len([m for m in result.migrations if renamed[1] in m["paths"] or renamed[0] in m["paths"]]) == 1
