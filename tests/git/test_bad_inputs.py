"""Bad inputs are reported as parse_error findings; none crashes the scan."""

from __future__ import annotations

import os
import time

from registry import config
from registry.registration import scan_and_register
from tests.git import seedrepo


def scan(**kw):
    return list(scan_and_register(config.load(), **kw))[-1]


def errors_by_path(result) -> dict[str, str]:
    return {p: f["message"] for f in result.findings if f["kind"] == "parse_error" for p in f["paths"]}


def test_bad_files_in_history_are_each_reported(empty_project):
    root = empty_project.root
    big = b"-- big\n" + b"SELECT 1;\n" * (50 * 1024 * 1024 // 10)
    files = {
        "db/migrations/V1__latin1.sql": b"-- caf\xe9\nCREATE TABLE t (id int);\n",
        "db/migrations/V2__huge.sql": big,
        "db/migrations/V3__binary.sql": b"\x00\x01\x02PK\x03\x04" * 100,
        "server/src/migrations/broken_module.ts": b"export const migration = { id: 'x', phases: { expand: [ ",
        "db/migrations/V5__good.sql": b"CREATE TABLE good (id int);\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink("/etc/passwd", root / "db/migrations/V4__outside.sql")
    seedrepo.git(root, "add", "-A")
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "bad inputs")
    started = time.perf_counter()
    result, _ = scan()
    assert time.perf_counter() - started < 30
    errors = errors_by_path(result)
    assert "not UTF-8" in errors["db/migrations/V1__latin1.sql"]
    assert "cap" in errors["db/migrations/V2__huge.sql"]
    assert "binary" in errors["db/migrations/V3__binary.sql"]
    assert "symlink" in errors["db/migrations/V4__outside.sql"]
    assert "does not parse" in errors["server/src/migrations/broken_module.ts"]
    assert [m["path"] for m in result.migrations] == ["db/migrations/V5__good.sql"]


def test_dotdot_path_in_a_crafted_tree_is_reported(empty_project):
    """Git refuses `..` in paths, but a crafted tree can hold one; the scan must not follow it."""
    from dulwich.objects import Blob, Commit, Tree
    from dulwich.repo import Repo

    repo = Repo(str(empty_project.root))
    try:
        blob = Blob.from_string(b"CREATE TABLE escape (id int);\n")
        inner = Tree()
        inner.add(b"V1__escape.sql", 0o100644, blob.id)
        dotdot = Tree()
        dotdot.add(b"..", 0o040000, inner.id)
        migrations = Tree()
        migrations.add(b"migrations", 0o040000, dotdot.id)
        root = Tree()
        root.add(b"db", 0o040000, migrations.id)
        head = repo[repo.head()]
        commit = Commit()
        commit.tree = root.id
        commit.parents = [head.id]
        commit.author = commit.committer = b"Mallory <m@example.com>"
        commit.author_time = commit.commit_time = 1_700_000_000
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"crafted\n"
        for obj in (blob, inner, dotdot, migrations, root, commit):
            repo.object_store.add_object(obj)
        repo.refs[b"refs/heads/main"] = commit.id
    finally:
        repo.close()
    result, _ = scan(rev="main")
    errors = errors_by_path(result)
    assert any(".." in p for p in errors), errors
    assert result.migrations == []


def test_worktree_symlink_outside_is_reported_and_untracked_migration_found(empty_project):
    root = empty_project.root
    (root / "db" / "migrations").mkdir(parents=True)
    os.symlink("/etc/hostname", root / "db/migrations/V7__link.sql")
    (root / "db/migrations/V8__untracked.sql").write_text("CREATE TABLE u (id int);\n")
    result, done = scan()
    errors = errors_by_path(result)
    assert "outside the repository" in errors["db/migrations/V7__link.sql"]
    (m,) = result.migrations
    assert m["path"] == "db/migrations/V8__untracked.sql" and m["first_commit"] is None
    assert done.skipped == [m["id"]]  # registered when committed, not before


def test_plain_folder_without_git_is_scanned(tmp_path, monkeypatch):
    from tests.git.conftest import isolate

    root = tmp_path / "plain"
    (root / "migrations").mkdir(parents=True)
    (root / "migrations" / "001_init.sql").write_text("CREATE TABLE a (id int);\n")
    isolate(tmp_path, monkeypatch, root)
    result, _ = scan()
    assert [m["path"] for m in result.migrations] == ["migrations/001_init.sql"]
