"""Hooks with real `git commit`: post-commit registers within the commit; pre-commit refuses bad files."""

from __future__ import annotations

import os
import subprocess
import sys

from registry import config
from registry.cli.main import run
from registry.registration import list_migrations
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


def commit(root, message: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MREG_PYTHON": sys.executable}
    return subprocess.run(["git", "-C", str(root), "commit", "-m", message], capture_output=True, text=True,
                          env=env)


def install(project):
    assert run(["hooks", "install"]) == 0
    hooks = project.root / ".git" / "hooks"
    assert os.access(hooks / "pre-commit", os.X_OK) and os.access(hooks / "post-commit", os.X_OK)


def test_commit_of_a_new_migration_registers_it(empty_project):
    install(empty_project)
    root = empty_project.root
    (root / "migrations").mkdir()
    (root / "migrations/20251121_090000_schema_add_widgets.sql").write_text(GOOD)
    seedrepo.git(root, "add", "migrations")
    out = commit(root, "add widgets")
    assert out.returncode == 0, out.stderr
    rows = list_migrations(config.load())
    assert [r["id"] for r in rows] == ["20251121_090000_schema_add_widgets"]
    assert rows[0]["first_commit"]["sha"] == seedrepo.git(root, "rev-parse", "HEAD")
    # A later scan agrees with what the hook registered (same id, nothing new).
    from registry.registration import scan_and_register

    _result, done = list(scan_and_register(config.load()))[-1]
    assert done.registered == [] and done.updated == []


def test_malformed_migrations_are_refused_with_the_reason(empty_project):
    install(empty_project)
    root = empty_project.root
    (root / "migrations").mkdir()
    bad = root / "migrations/20251121_100000_schema_broken.sql"
    bad.write_text(GOOD.replace("20251121_090000_schema_add_widgets", "20251121_100000_schema_broken")
                   .replace("CREATE TABLE widgets (id bigint PRIMARY KEY);", "CREATE TABLE (;"))
    seedrepo.git(root, "add", "migrations")
    out = commit(root, "broken")
    assert out.returncode != 0
    assert "20251121_100000_schema_broken.sql" in out.stderr and "syntax" in out.stderr.lower()
    assert list_migrations(config.load()) == []


def test_naming_and_metadata_rules_in_the_canonical_folder(empty_project):
    install(empty_project)
    root = empty_project.root
    (root / "migrations").mkdir()
    (root / "migrations/add_things.sql").write_text("CREATE TABLE things (id int);\n")
    (root / "migrations/20251121_110000_schema_add_gadgets.sql").write_text(GOOD)  # header ID differs
    (root / "migrations/20251121_120000_schema_add_gizmos.sql").write_text(
        GOOD.replace("20251121_090000_schema_add_widgets", "20251121_120000_schema_add_gizmos")
        .replace("Version: 1.2.0", "Version: two"))
    seedrepo.git(root, "add", "migrations")
    out = commit(root, "misnamed")
    assert out.returncode != 0
    assert "add_things.sql: not a canonical name" in out.stderr
    assert "ID '20251121_090000_schema_add_widgets' differs" in out.stderr
    assert "add_gizmos.sql:3:" in out.stderr and "'two'" in out.stderr


LEAN_PROBE = """
import runpy, sys
sys.argv = ["registry.hooks", "post-commit"]
code = 0
try:
    runpy.run_module("registry.hooks", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
heavy = ("sqlite_utils", "dulwich", "typer", "rich", "pglast", "tree_sitter", "psycopg", "neo4j", "redis")
print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_post_commit_registration_keeps_a_lean_import_path(empty_project):
    """The hook registers a canonical migration without loading heavy modules (the 0.3 s goal is
    measured by bench/registry, not by a timed test)."""
    root = empty_project.root
    (root / "migrations").mkdir()
    (root / "migrations/20251121_080000_schema_add_gadgets.sql").write_text(
        GOOD.replace("20251121_090000_schema_add_widgets", "20251121_080000_schema_add_gadgets"))
    seedrepo.git(root, "add", "migrations")
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "g")
    first = subprocess.run([sys.executable, "-m", "registry.hooks", "post-commit"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr  # this one also creates catalog.db's tables
    (root / "migrations/20251121_090000_schema_add_widgets.sql").write_text(GOOD)
    seedrepo.git(root, "add", "migrations")
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "w")
    out = subprocess.run([sys.executable, "-c", LEAN_PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "registered 20251121_090000_schema_add_widgets" in out.stderr
    assert "HEAVY=\n" in out.stderr, out.stderr


def test_hook_and_scan_agree_on_a_legacy_migration(empty_project):
    root = empty_project.root
    (root / "db/migrations").mkdir(parents=True)
    (root / "db/migrations/V3__seed_roles.sql").write_text(
        "INSERT INTO roles (name) VALUES ('admin');\n-- Rollback:\nDELETE FROM roles WHERE name = 'admin';\n")
    seedrepo.git(root, "add", "db")
    seedrepo.git(root, "commit", "-q", "--no-verify", "-m", "legacy")
    out = subprocess.run([sys.executable, "-m", "registry.hooks", "post-commit"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (hooked,) = list_migrations(config.load())
    assert hooked["type"] == "data" and hooked["scheme"] == "flyway"
    from registry.registration import scan_and_register

    _result, done = list(scan_and_register(config.load()))[-1]
    assert done.registered == [] and done.updated == []
