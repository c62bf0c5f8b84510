"""Hooks with real `git commit`: post-commit registers within the commit; pre-commit refuses bad files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from registry import config
from registry.cli.main import run
from registry.registration import list_migrations, scan_and_register
from tests.git import seedrepo

GOOD = """-- Migration: add widgets
-- ID: 20251121_090000_schema_add_widgets
-- Version: 1.2.0
-- Database: postgresql
-- Author: dev@example.com
-- Created: 2025-11-21
-- Breaking: false
-- Dependencies: []

-- Phase 1: EXPAND
CREATE TABLE widgets (id bigint PRIMARY KEY);

-- Rollback:
DROP TABLE widgets;
"""


def canonical(mid: str, *, body: str = "CREATE TABLE widgets (id bigint PRIMARY KEY);", version: str = "1.2.0",
              deps: str = "[]", with_id: bool = True) -> str:
    text = GOOD.replace("20251121_090000_schema_add_widgets", mid).replace("Version: 1.2.0", f"Version: {version}")
    text = text.replace("Dependencies: []", f"Dependencies: {deps}")
    text = text.replace("CREATE TABLE widgets (id bigint PRIMARY KEY);", body)
    return text if with_id else text.replace(f"-- ID: {mid}\n", "")


def commit(root, message: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MREG_PYTHON": sys.executable}
    return subprocess.run(["git", "-C", str(root), "commit", *args, "-m", message], capture_output=True, text=True,
                          env=env)


def install(project):
    assert run(["hooks", "install"]) == 0
    hooks = project.root / ".git" / "hooks"
    assert os.access(hooks / "pre-commit", os.X_OK) and os.access(hooks / "post-commit", os.X_OK)


def add(root, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    seedrepo.git(root, "add", rel)


def findings_table(project) -> list[dict]:
    """The catalog's findings table as it is now (read with plain sqlite3, no scan)."""
    conn = sqlite3.connect(project.catalog)
    try:
        return [{"kind": k, "paths": json.loads(p), "message": m}
                for k, p, m in conn.execute("SELECT kind, paths, message FROM findings ORDER BY n")]
    finally:
        conn.close()


def scan_agrees() -> list[dict]:
    """A scan after the hook registers nothing new; its findings (`mreg scan --json`'s)."""
    result, done = list(scan_and_register(config.load()))[-1]
    assert done.registered == [] and done.updated == []
    return [{"kind": f["kind"], "paths": f["paths"]} for f in result.findings]


def test_commit_of_a_new_migration_registers_it(empty_project, capsys):
    install(empty_project)
    capsys.readouterr()
    root = empty_project.root
    add(root, "migrations/20251121_090000_schema_add_widgets.sql", GOOD)
    out = commit(root, "add widgets")
    assert out.returncode == 0, out.stderr
    assert "mreg: registered 20251121_090000_schema_add_widgets (migrations/20251121_090000_schema_add_widgets.sql)" \
        in out.stderr
    assert run(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["20251121_090000_schema_add_widgets"]
    assert rows[0]["first_commit"]["sha"] == seedrepo.git(root, "rev-parse", "HEAD")
    assert rows[0]["version"] == "1.2.0" and rows[0]["database"] == "postgresql"
    # pre-commit's reading was consumed by post-commit
    assert not (root / ".git/mreg/checked.json").exists()
    assert scan_agrees() == []


def test_malformed_migration_is_refused_with_file_line_field_and_fix(empty_project):
    install(empty_project)
    root = empty_project.root
    head = seedrepo.git(root, "rev-parse", "HEAD")
    add(root, "migrations/20251121_100000_schema_broken.sql",
        canonical("20251121_100000_schema_broken", body="CREATE TABLE (;"))
    out = commit(root, "broken")
    assert out.returncode != 0
    assert ("mreg pre-commit: migrations/20251121_100000_schema_broken.sql:11: [sql] SQL syntax error: "
            "syntax error at or near \"(\"") in out.stderr
    assert "fix: fix the statement" in out.stderr
    assert "commit refused (1 problem)" in out.stderr
    # The repository is unchanged: same HEAD, the file still staged, nothing registered.
    assert seedrepo.git(root, "rev-parse", "HEAD") == head
    assert seedrepo.git(root, "status", "--porcelain") == "A  migrations/20251121_100000_schema_broken.sql"
    assert not empty_project.catalog.exists() or list_migrations(config.load()) == []


def test_header_problems_name_their_line_field_and_fix(empty_project):
    install(empty_project)
    root = empty_project.root
    add(root, "migrations/20251121_100000_schema_bad_header.sql",
        canonical("20251121_100000_schema_bad_header", deps="[oops"))
    add(root, "migrations/20251121_110000_data_bad_version.sql",
        canonical("20251121_110000_data_bad_version", version="two"))
    out = commit(root, "bad headers")
    assert out.returncode != 0
    assert ("migrations/20251121_100000_schema_bad_header.sql:8: [Dependencies] unbalanced brackets in the "
            "dependency list\n    fix: write `Dependencies: [id1, id2]` or `Dependencies: []`") in out.stderr
    assert ("migrations/20251121_110000_data_bad_version.sql:3: [Version] version 'two' is not semantic "
            "(MAJOR.MINOR.PATCH)\n    fix: write a version such as 2.1.0") in out.stderr


def test_naming_and_metadata_rules_in_the_canonical_folder(empty_project):
    install(empty_project)
    root = empty_project.root
    add(root, "migrations/add_things.sql", "CREATE TABLE things (id int);\n")
    add(root, "migrations/20251121_110000_schema_add_gadgets.sql", GOOD)  # header ID differs
    add(root, "migrations/20251121_120000_schema_add_gizmos.sql",
        canonical("20251121_120000_schema_add_gizmos").replace("-- Version: 1.2.0\n", ""))
    out = commit(root, "misnamed")
    assert out.returncode != 0
    assert "migrations/add_things.sql: [name] not a canonical name" in out.stderr
    assert "fix: `mreg new` writes one" in out.stderr
    assert ("migrations/20251121_110000_schema_add_gadgets.sql:2: [ID] header ID "
            "'20251121_090000_schema_add_widgets' differs from the file name '20251121_110000_schema_add_gadgets'\n"
            "    fix: write `ID: 20251121_110000_schema_add_gadgets`") in out.stderr
    assert "add_gizmos.sql:1: [Version] the header has no Version" in out.stderr
    assert "commit refused (3 problems)" in out.stderr


def test_a_copy_is_a_finding_right_after_the_commit(empty_project):
    install(empty_project)
    root = empty_project.root
    text = canonical("x", with_id=False)
    add(root, "migrations/20251121_090000_schema_add_widgets.sql", text)
    assert commit(root, "first").returncode == 0
    add(root, "migrations/20251122_090000_schema_add_widgets_again.sql", text)
    out = commit(root, "copy")
    assert out.returncode == 0, out.stderr
    assert "migrations/20251122_090000_schema_add_widgets_again.sql is a copy of 20251121_090000_schema_add_widgets" \
        in out.stderr
    assert "finding duplicate_content" in out.stderr
    both = ["migrations/20251121_090000_schema_add_widgets.sql", "migrations/20251122_090000_schema_add_widgets_again.sql"]
    assert {"kind": "duplicate_content", "paths": both} in [
        {"kind": f["kind"], "paths": f["paths"]} for f in findings_table(empty_project)]
    (row,) = list_migrations(config.load())
    assert row["paths"] == both
    assert {"kind": "duplicate_content", "paths": both} in scan_agrees()


def test_a_version_claimed_twice_is_a_finding_right_after_the_commit(empty_project):
    install(empty_project)
    root = empty_project.root
    add(root, "db/migrations/V3__seed_roles.sql", "INSERT INTO roles (name) VALUES ('admin');\n")
    assert commit(root, "v3").returncode == 0
    add(root, "db/migrations/V3__seed_users.sql", "INSERT INTO users (name) VALUES ('root');\n")
    out = commit(root, "v3 again")
    assert out.returncode == 0, out.stderr
    assert "finding version_conflict: 2 migrations in db/migrations/ claim version 3" in out.stderr
    claim = {"kind": "version_conflict", "paths": ["db/migrations/V3__seed_roles.sql", "db/migrations/V3__seed_users.sql"]}
    assert claim in [{"kind": f["kind"], "paths": f["paths"]} for f in findings_table(empty_project)]
    assert claim in scan_agrees()


def test_a_missing_dependency_is_a_finding_right_after_the_commit(empty_project):
    install(empty_project)
    root = empty_project.root
    rel = "migrations/20251121_090000_schema_add_widgets.sql"
    add(root, rel, canonical("20251121_090000_schema_add_widgets", deps="[20990101_000000_schema_not_there]"))
    out = commit(root, "needs a missing one")
    assert out.returncode == 0, out.stderr
    assert "finding missing_dependency" in out.stderr
    assert {"kind": "missing_dependency", "paths": [rel]} in [
        {"kind": f["kind"], "paths": f["paths"]} for f in findings_table(empty_project)]
    # The dependency arrives: the finding goes with the next commit's hook.
    add(root, "migrations/20990101_000000_schema_not_there.sql",
        canonical("20990101_000000_schema_not_there", body="CREATE TABLE gadgets (id int);"))
    assert commit(root, "provide it").returncode == 0
    assert [f for f in findings_table(empty_project) if f["kind"] == "missing_dependency"] == []
    assert scan_agrees() == []


def test_an_edit_is_a_new_revision_and_a_finding(empty_project):
    install(empty_project)
    root = empty_project.root
    rel = "migrations/20251121_090000_schema_add_widgets.sql"
    add(root, rel, GOOD)
    assert commit(root, "first").returncode == 0
    add(root, rel, GOOD.replace("bigint", "integer"))
    out = commit(root, "edit")
    assert out.returncode == 0, out.stderr
    assert "20251121_090000_schema_add_widgets: new revision sha256:" in out.stderr
    (row,) = list_migrations(config.load())
    assert len(row["revisions"]) == 2 and row["checksum"] != row["registered_checksum"]
    assert "edited_after_commit" in {f["kind"] for f in findings_table(empty_project)}
    scan_agrees()


def test_a_commit_that_moves_a_registered_migration_is_left_to_the_scan(empty_project):
    install(empty_project)
    root = empty_project.root
    add(root, "db/migrations/V3__seed_roles.sql", "INSERT INTO roles (name) VALUES ('admin');\n")
    assert commit(root, "v3").returncode == 0
    seedrepo.git(root, "mv", "db/migrations/V3__seed_roles.sql", "db/migrations/V4__seed_roles.sql")
    out = commit(root, "renumber")
    assert out.returncode == 0, out.stderr
    assert "not registered now: it deletes or moves db/migrations/V3__seed_roles.sql" in out.stderr
    (before,) = list_migrations(config.load())
    assert before["path"] == "db/migrations/V3__seed_roles.sql"
    result, done = list(scan_and_register(config.load()))[-1]
    (after,) = list_migrations(config.load())
    assert done.updated == [before["id"]] and after["path"] == "db/migrations/V4__seed_roles.sql"


def test_a_file_committed_without_the_check_is_read_in_full(empty_project):
    """--no-verify skips pre-commit: post-commit reads the file itself, as the scan does (a parse error
    is a finding, not a migration), even when pre-commit had read another version of it."""
    install(empty_project)
    root = empty_project.root
    rel = "migrations/20251121_100000_schema_broken.sql"
    add(root, rel, canonical("20251121_100000_schema_broken"))
    check = subprocess.run([sys.executable, "-m", "registry.hooks", "pre-commit"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (root / ".git/mreg/checked.json").exists()
    add(root, rel, canonical("20251121_100000_schema_broken", body="CREATE TABLE (;"))
    out = commit(root, "broken", "--no-verify")
    assert out.returncode == 0, out.stderr
    assert "finding parse_error: migrations/20251121_100000_schema_broken.sql:11:" in out.stderr
    assert list_migrations(config.load()) == []
    assert [f["kind"] for f in findings_table(empty_project)] == ["parse_error"]
    add(root, rel, canonical("20251121_100000_schema_broken"))
    assert commit(root, "fixed").returncode == 0
    assert [r["id"] for r in list_migrations(config.load())] == ["20251121_100000_schema_broken"]
    assert findings_table(empty_project) == []


LEAN_PROBE = """
import runpy, sys
sys.argv = ["registry.hooks", "post-commit"]
code = 0
try:
    runpy.run_module("registry.hooks", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
heavy = ("sqlite_utils", "dulwich", "typer", "click", "rich", "pglast", "tree_sitter", "psycopg", "neo4j", "redis",
         "registry.parse", "registry.discovery.inspect", "registry.discovery.lineage", "registry.discovery.history")
print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_post_commit_registration_keeps_a_lean_import_path(empty_project):
    """After pre-commit read the file, post-commit registers it without the parser or any heavy library
    (the 0.3 s goal is measured by bench/hooks, not by a timed test)."""
    root = empty_project.root
    hook = [sys.executable, "-m", "registry.hooks"]
    add(root, "migrations/20251121_080000_schema_add_gadgets.sql", canonical("20251121_080000_schema_add_gadgets"))
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "g")
    first = subprocess.run(hook + ["post-commit"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr  # this one also creates catalog.db's tables
    add(root, "migrations/20251121_090000_schema_add_widgets.sql", GOOD)
    assert subprocess.run(hook + ["pre-commit"], capture_output=True).returncode == 0
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "w")
    out = subprocess.run([sys.executable, "-c", LEAN_PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "registered 20251121_090000_schema_add_widgets" in out.stderr
    assert "HEAVY=\n" in out.stderr, out.stderr


def test_hook_and_scan_agree_on_a_legacy_migration(empty_project):
    root = empty_project.root
    add(root, "db/migrations/V3__seed_roles.sql",
        "INSERT INTO roles (name) VALUES ('admin');\n-- Rollback:\nDELETE FROM roles WHERE name = 'admin';\n")
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "legacy")
    out = subprocess.run([sys.executable, "-m", "registry.hooks", "post-commit"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (hooked,) = list_migrations(config.load())
    assert hooked["type"] == "data" and hooked["scheme"] == "flyway"
    assert scan_agrees() == []


def test_installed_hooks_keep_bytecode_in_the_git_dir(empty_project):
    install(empty_project)
    root = empty_project.root
    script = (root / ".git/hooks/post-commit").read_text()
    assert f"-m registry.hooks post-commit" in script and sys.executable in script
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    add(root, "migrations/20251121_090000_schema_add_widgets.sql", GOOD)
    out = subprocess.run(["git", "-C", str(root), "commit", "-m", "w"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    cache = root / ".git/mreg/pycache"
    assert any(cache.rglob("hooks*.pyc")) and any(cache.rglob("postcommit*.pyc"))


KNEX_TS = """import { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.raw('CREATE TABLE jobs (id bigint PRIMARY KEY)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP TABLE jobs');
}
"""


def test_a_compiled_twin_is_not_a_migration(empty_project):
    """x.js beside x.ts is compiled output, as the scan decides: with the check and without it."""
    install(empty_project)
    root = empty_project.root
    for n, args in enumerate(([], ["--no-verify"])):
        stem = f"server/migrations/2024011009300{n}_create_jobs_{n}"
        add(root, f"{stem}.ts", KNEX_TS.replace("jobs", f"jobs_{n}"))
        add(root, f"{stem}.js", seedrepo.KNEX_JS.replace("jobs", f"jobs_{n}"))
        out = commit(root, f"jobs {n}", *args)
        assert out.returncode == 0, out.stderr
    assert sorted(p for m in list_migrations(config.load()) for p in m["paths"]) == [
        "server/migrations/20240110093000_create_jobs_0.ts", "server/migrations/20240110093001_create_jobs_1.ts"]
    assert scan_agrees() == []


def test_two_legacy_files_with_one_description_get_two_ids_as_in_the_scan(empty_project):
    install(empty_project)
    root = empty_project.root
    add(root, "db/migrations/V5__seed.sql", "INSERT INTO roles (name) VALUES ('admin');\n")
    add(root, "server/db/migrations/postgres/20240101_seed.sql", "INSERT INTO roles (name) VALUES ('user');\n")
    out = commit(root, "two seeds")
    assert out.returncode == 0, out.stderr
    rows = list_migrations(config.load())
    assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    assert scan_agrees() == []


@pytest.mark.parametrize("detached", [False, True])
def test_a_migration_registered_by_the_hook_is_on_heads_branch(empty_project, capsys, detached):
    """After a scan has recorded refs, the hook records the branch of the commit for what it registers
    (`refs` in `mreg list --json`), as the next scan finds it; on a detached HEAD both record `HEAD`."""
    install(empty_project)
    root = empty_project.root
    add(root, "migrations/20251121_090000_schema_add_widgets.sql", GOOD)
    assert commit(root, "add widgets").returncode == 0
    if detached:
        seedrepo.git(root, "checkout", "--detach", "HEAD")
    scan_agrees()
    branch = "HEAD" if detached else seedrepo.git(root, "symbolic-ref", "HEAD")
    add(root, "migrations/20251121_100000_schema_add_gadgets.sql",
        canonical("20251121_100000_schema_add_gadgets", body="CREATE TABLE gadgets (id int);"))
    out = commit(root, "add gadgets")
    assert out.returncode == 0 and "registered 20251121_100000_schema_add_gadgets" in out.stderr, out.stderr
    capsys.readouterr()
    assert run(["list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["20251121_100000_schema_add_gadgets"]["refs"] == [branch]  # by the hook
    assert scan_agrees() == []
    assert run(["list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["20251121_100000_schema_add_gadgets"]["refs"] == [branch]  # by the scan
    assert rows["20251121_090000_schema_add_widgets"]["refs"] == [branch]


def test_head_ref_reads_branches_worktrees_and_detached_heads(tmp_path):
    from registry.postcommit import head_ref

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert head_ref(tmp_path / "repo") == "refs/heads/main"
    (tmp_path / "wt").mkdir()
    (tmp_path / "repo" / ".git" / "worktrees" / "wt").mkdir(parents=True)
    (tmp_path / "repo" / ".git" / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/topic\n")
    (tmp_path / "wt" / ".git").write_text("gitdir: ../repo/.git/worktrees/wt\n")
    assert head_ref(tmp_path / "wt") == "refs/heads/topic"
    (tmp_path / "repo" / ".git" / "HEAD").write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert head_ref(tmp_path / "repo") == "HEAD"  # detached: the name a scan records too
    assert head_ref(tmp_path / "nowhere") is None
