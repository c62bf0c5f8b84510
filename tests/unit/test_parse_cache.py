"""The parse cache in catalog.db: what it returns is what parsing returns now."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import registry.parse
from registry.apply.context import parse_folder
from registry.apply.parsecache import from_json, to_json
from registry.parse import parse_migration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "migrations").rglob("*") if p.is_file() and not p.name.startswith((".", "_")))


def cfg_for(tmp_path: Path, folder: Path) -> SimpleNamespace:
    return SimpleNamespace(root=tmp_path, migrations=SimpleNamespace(value=folder),
                           catalog=SimpleNamespace(value=tmp_path / ".mreg" / "catalog.db"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_worked_example_survives_the_json_round_trip(path):
    m = parse_migration(str(path.relative_to(REPO)), path.read_bytes(), database=path.parent.name)
    text = to_json(m)
    assert text is not None
    assert from_json(text) == m


def test_second_read_comes_from_the_cache_and_a_changed_file_is_parsed_again(tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", folder)
    cfg = cfg_for(tmp_path, folder)
    first = parse_folder(cfg)
    assert len(first) >= 5

    calls = []
    real = registry.parse.parse_migration

    def counting(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(registry.parse, "parse_migration", counting)
    assert parse_folder(cfg) == first
    assert calls == []

    edited = sorted(folder.rglob("*.sql"))[0]
    edited.write_text(edited.read_text() + "\n-- edited\n")
    again = parse_folder(cfg)
    assert len(calls) == 1 and calls[0].endswith(edited.name)
    changed = [m for m in again if m.path.endswith(edited.name)]
    assert changed[0].checksum != [m for m in first if m.path.endswith(edited.name)][0].checksum
