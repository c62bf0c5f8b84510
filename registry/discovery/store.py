"""The scan's memory in catalog.db: what Git held at the last scan (plain sqlite3, lean).

Tables (all prefixed ``scan_``; a cache of Git, rebuilt by ``mreg scan --full``):
``scan_refs`` (ref -> last scanned commit), ``scan_commits`` (every scanned commit),
``scan_lineages`` (one row per migration file followed through history, JSON),
``scan_files`` (per scanned ref: the candidate paths present at its tip and their lineage),
``scan_migration_refs`` (per migration: the refs whose tip holds it, for ``mreg list``/``show``),
``scan_parsed`` (blob id -> what the file is, so no object is read twice across runs) and
``scan_errors`` (unsafe paths met in history).

A catalog written before ``scan_files`` had its ``ref`` column forgets the scan's memory
(except parsed blobs) once: the next scan walks the whole history again.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from registry.discovery.lineage import State

SCHEMA = """
CREATE TABLE IF NOT EXISTS scan_refs (ref TEXT PRIMARY KEY, sha TEXT NOT NULL, scanned_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scan_commits (sha TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_lineages (key INTEGER PRIMARY KEY, id TEXT NOT NULL, path TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scan_files (ref TEXT NOT NULL, path TEXT NOT NULL, lineage INTEGER NOT NULL,
    PRIMARY KEY (ref, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_migration_refs (id TEXT NOT NULL, ref TEXT NOT NULL, PRIMARY KEY (id, ref))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_parsed (key TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_errors (path TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
TABLES = ("scan_refs", "scan_commits", "scan_lineages", "scan_files", "scan_migration_refs", "scan_parsed",
          "scan_errors", "scan_meta")


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(scan_files)")]
    if columns and "ref" not in columns:  # one file set for all refs: an older scan's memory
        with conn:
            conn.execute("DROP TABLE scan_files")
            for t in ("scan_refs", "scan_commits", "scan_lineages", "scan_errors"):
                conn.execute(f"DELETE FROM {t}")
    conn.executescript(SCHEMA)
    return conn


def _dumps(value) -> str:
    """JSON text (orjson; Python's json for what orjson refuses, e.g. a file name that is not UTF-8)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _loads(text: str):
    try:
        return orjson.loads(text)
    except ValueError:  # escapes orjson refuses (lone surrogates of a non-UTF-8 file name)
        return json.loads(text)


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def migration_refs(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """``{migration id: refs whose tip holds it}`` as of the last scan (empty before any scan)."""
    out: dict[str, list[str]] = {}
    if _exists(conn, "scan_migration_refs"):
        for mid, ref in conn.execute("SELECT id, ref FROM scan_migration_refs ORDER BY id, ref"):
            out.setdefault(mid, []).append(ref)
    return out


class ParsedCache(dict):
    """Parsed blobs, read from ``scan_parsed`` only when asked for (a re-scan needs few)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn
        # A first scan finds the table empty: its misses need no query.
        self._stored = conn.execute("SELECT 1 FROM scan_parsed LIMIT 1").fetchone() is not None

    def get(self, key, default=None):
        if key in self:
            return self[key]
        if not self._stored:
            return default
        row = self._conn.execute("SELECT data FROM scan_parsed WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        value = self[key] = _loads(row[0])
        return value


class ScannedCommits(set):
    """The commits scanned before (asked one by one: a re-scan's walk asks about few), plus the
    ones added in this run."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn
        self._stored = conn.execute("SELECT 1 FROM scan_commits LIMIT 1").fetchone() is not None

    def __contains__(self, sha) -> bool:
        if set.__contains__(self, sha):
            return True
        return self._stored and self._conn.execute(
            "SELECT 1 FROM scan_commits WHERE sha = ?", (sha,)).fetchone() is not None


def load(conn: sqlite3.Connection) -> State:
    from registry.discovery.lineage import Lineage, State  # (list/show read migration_refs without them)

    state = State()
    state.refs = dict(conn.execute("SELECT ref, sha FROM scan_refs"))
    state.commits = ScannedCommits(conn)
    for key, data in conn.execute("SELECT key, data FROM scan_lineages"):
        lin = Lineage(**_loads(data))
        state.lineages[key] = lin
        state.ids.add(lin.id)
    for ref, path, key in conn.execute("SELECT ref, path, lineage FROM scan_files"):
        state.tips.setdefault(ref, {})[path] = key
    state.parsed = ParsedCache(conn)
    state.bad_paths = {p: _loads(d) for p, d in conn.execute("SELECT path, data FROM scan_errors")}
    return state


def save(conn: sqlite3.Connection, state: State, heads: dict[str, str], migrations: list[dict] | None = None) -> None:
    """Write what changed since ``load``: lineages, parsed blobs, commits, the file sets of the refs
    that moved (and forget refs no longer scanned), and each migration's refs."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with conn:
        conn.executemany("INSERT OR IGNORE INTO scan_commits(sha) VALUES (?)",
                         ((s,) for s in state.new_commits))
        conn.executemany(
            "INSERT OR REPLACE INTO scan_lineages(key, id, path, data) VALUES (?, ?, ?, ?)",
            ((k, state.lineages[k].id, state.lineages[k].path, _dumps(state.lineages[k].to_json()))
             for k in sorted(state.dirty_lineages)))
        conn.executemany("INSERT OR REPLACE INTO scan_parsed(key, data) VALUES (?, ?)",
                         ((k, _dumps(state.parsed[k])) for k in sorted(state.new_parsed)))
        for ref in sorted(state.dirty_tips):
            conn.execute("DELETE FROM scan_files WHERE ref = ?", (ref,))
            conn.executemany("INSERT INTO scan_files(ref, path, lineage) VALUES (?, ?, ?)",
                             ((ref, p, k) for p, k in state.tips.get(ref, {}).items()))
        conn.execute("DELETE FROM scan_errors")
        conn.executemany("INSERT INTO scan_errors(path, data) VALUES (?, ?)",
                         ((p, _dumps(d)) for p, d in state.bad_paths.items()))
        conn.executemany("DELETE FROM scan_refs WHERE ref = ?", ((r,) for r in state.dirty_tips if r not in state.tips))
        conn.executemany("INSERT OR REPLACE INTO scan_refs(ref, sha, scanned_at) VALUES (?, ?, ?)",
                         ((r, s, now) for r, s in heads.items()))
        if migrations is not None:
            conn.execute("DELETE FROM scan_migration_refs")
            conn.executemany("INSERT OR IGNORE INTO scan_migration_refs(id, ref) VALUES (?, ?)",
                             ((m["id"], r) for m in migrations for r in m.get("refs") or ()))
    state.dirty_lineages.clear()
    state.new_parsed.clear()
    state.new_commits.clear()
    state.dirty_tips.clear()


def ensure_root(conn: sqlite3.Connection, root: Path) -> bool:
    """Tie the scan's memory to one repository; forget it (return True) when ``root`` differs."""
    row = conn.execute("SELECT value FROM scan_meta WHERE key = 'root'").fetchone()
    here = str(Path(root).resolve())
    if row is not None and row[0] == here:
        return False
    forgot = row is not None
    if forgot:
        reset(conn)
    with conn:
        conn.execute("INSERT OR REPLACE INTO scan_meta (key, value) VALUES ('root', ?)", (here,))
    return forgot


def reset(conn: sqlite3.Connection) -> None:
    with conn:
        for t in TABLES:
            conn.execute(f"DELETE FROM {t}")
