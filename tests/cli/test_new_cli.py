"""`mreg new`: the file it writes is canonical, filled in, and parses with the parser."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

import pytest

from registry.cli.main import run
from registry.naming import parse_canonical_name
from registry.parse import parse_migration
from registry.parse.template import NewMigrationError, new_migration


def _new(capsys, *args: str) -> tuple[int, str, str]:
    code = run(["new", *args])
    out, err = capsys.readouterr()
    return code, out.strip(), err


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MREG_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "config", "user.email", "dev@example.com"], check=True)
    return tmp_path


@pytest.mark.parametrize("database,ext", [("postgresql", "sql"), ("timescale", "sql"), ("neo4j", "cypher"),
                                          ("redis", "redis")])
def test_new_writes_a_file_that_parses(project, capsys, database, ext):
    code, out, err = _new(capsys, "--type", "schema", "--database", database, "--description",
                          "Add user preferences", "--phases", "expand,migrate,contract")
    assert code == 0, err
    path = project / "migrations" / out.rsplit("/", 1)[-1]
    assert out == str(path) and path.exists() and path.suffix == f".{ext}"
    name = parse_canonical_name(path.name)
    assert name.type == "schema" and name.description == "add_user_preferences"
    m = parse_migration(str(path), path.read_bytes())
    assert m.id == name.id and m.database == database and m.version == "1.0.0"
    assert m.author == "dev@example.com" and m.breaking is False and m.dependencies == []
    assert m.created == datetime.now(timezone.utc).date().isoformat()
    text = path.read_text()
    for marker in ("Phase 1: EXPAND", "Phase 2: MIGRATE", "Phase 3: CONTRACT", "Rollback:", "Validation:"):
        assert marker in text
    assert m.metadata["warnings"] == ["no statements in any phase"]


def test_version_is_next_minor_per_database(project, capsys):
    folder = project / "migrations"
    folder.mkdir()
    (folder / "20250101_000000_schema_a.sql").write_text("-- Version: 2.3.1\n-- Database: postgresql\nSELECT 1;\n")
    (folder / "20250102_000000_schema_b.sql").write_text("-- Version: 1.9.0\nSELECT 1;\n")
    (folder / "20250103_000000_schema_c.cypher").write_text("// Version: 7.0.0\nRETURN 1;\n")
    (folder / "20250104_000000_schema_broken.sql").write_text("-- Version: 9.0.0\nSELEC 1;\n")
    code, out, _ = _new(capsys, "--type", "perf", "--database", "postgresql", "--description", "idx")
    assert code == 0
    assert parse_migration(out, open(out, "rb").read()).version == "2.4.0"
    code, out, _ = _new(capsys, "--type", "data", "--database", "neo4j", "--description", "backfill")
    assert parse_migration(out, open(out, "rb").read()).version == "7.1.0"


def test_database_subfolder_and_dir_option(project, capsys):
    (project / "migrations" / "redis").mkdir(parents=True)
    code, out, _ = _new(capsys, "--type", "data", "--database", "redis", "--description", "reshape keys")
    assert code == 0 and "/migrations/redis/" in out
    code, out, _ = _new(capsys, "--type", "data", "--database", "redis", "--description", "x", "--dir", "elsewhere")
    assert code == 0 and out.startswith(str(project / "elsewhere"))


@pytest.mark.parametrize("args,needle", [
    (["--type", "cosmetic", "--database", "postgresql", "--description", "x"], "unknown migration type"),
    (["--type", "schema", "--database", "mysql", "--description", "x"], "unknown database"),
    (["--type", "schema", "--database", "redis", "--description", "x", "--phases", "expand,later"], "unknown phase"),
    (["--type", "schema", "--database", "redis", "--description", "  "], "description is empty"),
])
def test_bad_options_exit_2(project, capsys, args, needle):
    code, _, err = _new(capsys, *args)
    assert code == 2 and needle in err and "hint:" in err


def test_existing_file_is_not_overwritten(tmp_path):
    now = datetime(2025, 11, 20, 14, 30, tzinfo=timezone.utc)
    made = new_migration(tmp_path, type="schema", database="postgresql", description="a", now=now, author_name="x")
    with pytest.raises(NewMigrationError):
        new_migration(tmp_path, type="schema", database="postgresql", description="a", now=now, author_name="x")
    assert made.path.name == "20251120_143000_schema_a.sql"
