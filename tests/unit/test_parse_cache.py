"""The parse cache in catalog.db: what it returns is what parsing returns now."""

from __future__ import annotations

import shutil
import sqlite3
import threading
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


def _many(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"20250101_{i:06d}_schema_t_{i:05d}.sql").write_text(
            f"-- Phase 1: EXPAND\nCREATE TABLE t_{i:05d} (id integer);\n")


def test_a_large_folder_parsed_in_a_worker_gives_what_parsing_here_gives(tmp_path):
    """start_loading forks a worker for a large folder (the engine connects meanwhile)."""
    from registry.apply.context import PARALLEL_MIN_FILES, start_loading

    from registry.apply.context import EMIT_EVERY

    folder = tmp_path / "migrations"
    _many(folder, max(PARALLEL_MIN_FILES, 2 * EMIT_EVERY) + 5)  # three parts through the pipe
    cfg = cfg_for(tmp_path, folder)
    loading = start_loading(cfg)
    forked = loading.proc
    if threading.active_count() == 1:  # fork is only used by a single-threaded process
        assert forked is not None
    got = loading.result()
    assert loading.proc is None  # handed over: joined at exit, after it writes the parse cache
    assert got == [parse_migration(str(p.relative_to(tmp_path)), p.read_bytes(), database=None)
                   for p in sorted(folder.iterdir())]
    if forked is not None:
        forked.join(30)
        assert forked.exitcode == 0
        db = sqlite3.connect(cfg.catalog.value)
        assert db.execute("SELECT count(*) FROM parsed_migrations").fetchone()[0] == len(got)
        db.close()


def test_a_bad_file_in_a_large_folder_raises_its_parse_error_in_the_engine(tmp_path):
    from registry.apply.context import PARALLEL_MIN_FILES, start_loading
    from registry.parse import ParseError

    folder = tmp_path / "migrations"
    _many(folder, PARALLEL_MIN_FILES + 105)
    bad = folder / "20250101_000150_schema_t_00150.sql"  # in the second part
    bad.write_text("-- Phase 1: EXPAND\nCREATE TABLEE t (id integer);\n")
    loading = start_loading(cfg_for(tmp_path, folder))
    with pytest.raises(ParseError) as err:
        loading.result()
    assert bad.name in str(err.value) and "syntax error" in str(err.value)


def test_cancel_stops_the_worker(tmp_path):
    from registry.apply.context import PARALLEL_MIN_FILES, start_loading

    folder = tmp_path / "migrations"
    _many(folder, PARALLEL_MIN_FILES + 5)
    loading = start_loading(cfg_for(tmp_path, folder))
    proc = loading.proc
    loading.cancel()
    assert loading.proc is None and (proc is None or not proc.is_alive())


def test_the_folder_walk_lists_what_rglob_lists(tmp_path):
    """_folder_files walks with os.walk; it must list what sorted(rglob("*")) lists, in that order."""
    import os

    from registry.apply.context import _folder_files
    from registry.parse import EXTENSIONS

    m = tmp_path / "m"
    for rel in ("a.sql", "B.sql", "postgres/x.sql", "postgres/.h.sql", "_u.sql", "neo4j/z.cypher", "a.b.sql",
                "noext", ".sql", "x.SQL", "sub/dir/deep.redis", "a-b/c.sql", "a/c.sql", "a.sql.bak"):
        (m / rel).parent.mkdir(parents=True, exist_ok=True)
        (m / rel).write_text(rel)
    os.symlink(m / "postgres", m / "link")  # a symlinked folder is not entered
    for root in (tmp_path, tmp_path / "elsewhere"):
        cfg = SimpleNamespace(root=root, migrations=SimpleNamespace(value=m))
        want = []
        for path in sorted(m.rglob("*")):
            if path.is_file() and path.suffix[1:] in EXTENSIONS and not path.name.startswith((".", "_")):
                shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
                want.append((shown, path.read_bytes()))
        assert [(shown, data) for shown, data, _ in _folder_files(cfg)] == want
        assert len(want) == 8
