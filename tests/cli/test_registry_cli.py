"""The registry commands and their JSON shapes (issue 4, item 10)."""

from __future__ import annotations

import json
import sys

import pytest

from registry.cli.main import run

if str(__import__("pathlib").Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))  # tests/ as a package
from tests.git import seedrepo  # noqa: E402
from tests.git.conftest import isolate  # noqa: E402

FINDING_KINDS = {"duplicate_content", "version_conflict", "edited_after_commit", "missing_dependency",
                 "dependency_cycle", "parse_error"}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    commits = seedrepo.build(root)
    isolate(tmp_path, monkeypatch, root)
    return root, commits


def out_json(capsys, argv):
    assert run(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_scan_json_shape(repo, capsys):
    data = out_json(capsys, ["scan", "--json"])
    assert set(data) == {"migrations", "findings"}
    assert data["migrations"] == len(seedrepo.EXPECTED) - 1
    for f in data["findings"]:
        assert set(f) == {"kind", "paths", "message"}
        assert f["kind"] in FINDING_KINDS and f["paths"] and isinstance(f["message"], str)
    assert {f["kind"] for f in data["findings"]} == FINDING_KINDS - {"parse_error"}


def test_list_json_shape_and_filters(repo, capsys):
    root, commits = repo
    out_json(capsys, ["scan", "--json"])
    rows = out_json(capsys, ["list", "--json"])
    assert len(rows) == len(seedrepo.EXPECTED) - 1
    for r in rows:
        assert {"id", "path", "paths", "database", "scheme", "checksum", "status", "first_commit"} <= set(r)
        assert r["database"] in ("postgresql", "timescale", "neo4j", "redis")
        assert r["status"] in ("active", "deleted")
        assert r["checksum"].startswith("sha256:") and r["path"] in r["paths"]
        assert set(r["first_commit"]) == {"sha", "author", "date"} and r["first_commit"]["sha"] in commits
    neo = out_json(capsys, ["list", "--json", "--database", "neo4j"])
    assert neo and all(r["database"] == "neo4j" for r in neo)
    deleted = out_json(capsys, ["list", "--json", "--status", "deleted"])
    assert [r["path"] for r in deleted] == [seedrepo.DELETED]


def test_show_json_and_text(repo, capsys):
    out_json(capsys, ["scan", "--json"])
    rows = out_json(capsys, ["list", "--json"])
    edited = next(r for r in rows if r["path"] == seedrepo.EDITED)
    shown = out_json(capsys, ["show", edited["id"], "--json"])
    assert shown["id"] == edited["id"] and len(shown["revisions"]) == 2
    assert [f["kind"] for f in shown["findings"]] == ["edited_after_commit"]
    assert "CREATE INDEX" in shown["content"]
    assert run(["show", seedrepo.EDITED]) == 0  # a path names it too
    assert edited["id"] in capsys.readouterr().out
    assert run(["show", "no_such_migration"]) == 2
    assert "mreg scan" in capsys.readouterr().err


def test_scan_text_output_and_hooks_install(repo, capsys):
    assert run(["scan"]) == 0
    text = capsys.readouterr().out
    assert "migrations" in text and "version_conflict" in text
    assert run(["hooks", "install"]) == 0
    assert "post-commit" in capsys.readouterr().out
    assert run(["catalog", "rebuild", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["migrations"] == len(seedrepo.EXPECTED) - 1
