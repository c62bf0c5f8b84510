"""Fixtures for the registry's Git tests: a seed-shaped repository and an isolated mreg project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.git import seedrepo


@dataclass
class Project:
    root: Path
    catalog: Path
    key: Path
    commits: list[str]


def isolate(tmp_path: Path, monkeypatch, root: Path) -> tuple[Path, Path]:
    from ledger.keys import Signer

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir(exist_ok=True)
    Signer.generate(comment="test").save(key)
    catalog = tmp_path / "state" / "catalog.db"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MREG_ROOT", str(root))
    monkeypatch.setenv("MREG_CATALOG", str(catalog))
    monkeypatch.setenv("MREG_KEY", str(key))
    monkeypatch.setenv("MREG_PROJECT", "seed")
    monkeypatch.delenv("MREG_CONFIG", raising=False)
    return catalog, key


@pytest.fixture
def seed_project(tmp_path, monkeypatch) -> Project:
    """The seed-shaped repository, with MREG_ROOT/MREG_CATALOG/MREG_KEY pointing into tmp_path."""
    root = tmp_path / "repo"
    commits = seedrepo.build(root)
    catalog, key = isolate(tmp_path, monkeypatch, root)
    return Project(root, catalog, key, commits)


@pytest.fixture
def empty_project(tmp_path, monkeypatch) -> Project:
    """An empty Git repository with one initial commit and an isolated mreg setup."""
    root = tmp_path / "repo"
    root.mkdir()
    seedrepo.git(root, "init", "-q", "-b", "main")
    seedrepo.git(root, "config", "user.name", "Test")
    seedrepo.git(root, "config", "user.email", "test@example.com")
    seedrepo.git(root, "config", "core.hooksPath", str(root / ".git" / "hooks"))
    (root / "README.md").write_text("x\n")
    seedrepo.git(root, "add", "README.md")
    seedrepo.git(root, "commit", "-q", "-m", "init")
    catalog, key = isolate(tmp_path, monkeypatch, root)
    return Project(root, catalog, key, [seedrepo.git(root, "rev-parse", "HEAD")])
