"""`mreg init` writes what a project lacks, leaves what exists alone, and never puts a key in the repository."""

from __future__ import annotations

import json
import stat

import pytest

from registry import config
from registry.cli.main import run


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".git").mkdir()
    key = tmp_path / "keys" / "id_ed25519"
    for var in ("MREG_CONFIG", "MREG_CATALOG", "MREG_PROJECT", "MREG_MIGRATIONS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MREG_ROOT", str(root))
    monkeypatch.setenv("MREG_KEY", str(key))
    monkeypatch.chdir(root)
    return root, key


def _init(capsys, *args: str) -> list[dict]:
    assert run(["init", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_init_creates_a_working_project_then_changes_nothing(fresh, capsys):
    root, key = fresh
    first = {i["item"]: i["action"] for i in _init(capsys, "--comment", "ops@example.com")}
    assert set(first.values()) == {"created"}, first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() != b"" and not str(key).startswith(str(root))
    public = (key.parent / "id_ed25519.pub").read_text().split()[1]
    assert public in (root / ".mreg" / "allowed_signers").read_text()
    cfg = config.load()  # the written mreg.toml passes the configuration's own checks
    assert cfg.file == root / "mreg.toml" and sorted(cfg.targets) == ["neo4j", "postgres", "redis", "timescale"]
    assert (root / "migrations").is_dir() and "/catalog.db" in (root / ".gitignore").read_text()

    before = {p: p.read_bytes() for p in (root / "mreg.toml", root / ".gitignore", key,
                                            root / ".mreg" / "allowed_signers")}
    again = {i["item"]: i["action"] for i in _init(capsys)}
    assert set(again.values()) == {"exists"}, again
    assert all(p.read_bytes() == data for p, data in before.items())


def test_an_existing_untrusted_key_is_kept_and_reported(fresh, capsys):
    from ledger.keys import Signer

    root, key = fresh
    key.parent.mkdir(parents=True)
    Signer.generate("old").save(key)
    items = {i["item"]: i for i in _init(capsys)}
    assert items["signing key"]["action"] == "todo" and "mreg keys trust" in items["signing key"]["detail"]


def test_gitignore_lines_are_added_once(fresh, capsys):
    root, _ = fresh
    (root / ".gitignore").write_text("node_modules/\n/catalog.db")
    items = {i["item"]: i["action"] for i in _init(capsys)}
    assert items["gitignore"] == "updated"
    lines = (root / ".gitignore").read_text().splitlines()
    assert lines.count("/catalog.db") == 1 and "node_modules/" in lines and ".mreg/dev/" in lines


def test_a_key_path_inside_the_repository_is_refused(fresh, capsys, monkeypatch):
    root, _ = fresh
    monkeypatch.setenv("MREG_KEY", str(root / "id_ed25519"))
    assert run(["init"]) == 2
    assert "inside the repository" in capsys.readouterr().err
    assert not (root / "id_ed25519").exists()
