"""Parsed migrations cached in catalog.db, keyed by the file's bytes and the parser's own source.

Parsing a thousand SQL files with pglast costs more than applying them; an engine command
parses the same unchanged files every time. ``parsed_migrations`` maps a key — the SHA-256 of
the parser's source files (``registry/parse/*.py``, ``registry/model.py``), the file's path,
the folder's database hint and the file's bytes — to the ``Migration`` as JSON. Any change to
the file or to the parser gives a new key, so a cached entry is always what parsing would
return now. Files that fail to parse are never cached (the error is raised each time).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from registry.model import Backfill, Migration, Settings, Step, ValidationRule

SCHEMA = "CREATE TABLE IF NOT EXISTS parsed_migrations (key TEXT PRIMARY KEY, record TEXT NOT NULL)"
_PARSER_DIGEST: list[bytes] = []


def parser_digest() -> bytes:
    """SHA-256 over the parser's source files (computed once per process)."""
    if not _PARSER_DIGEST:
        here = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for f in sorted((here / "parse").glob("*.py")) + [here / "model.py"]:
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        _PARSER_DIGEST.append(h.digest())
    return _PARSER_DIGEST[0]


def cache_key(shown: str, database: str | None, data: bytes) -> str:
    h = hashlib.sha256(parser_digest())
    h.update(f"{shown}\0{database or ''}\0".encode())
    h.update(data)
    return h.hexdigest()


def _plain(m: Migration) -> dict:
    """``dataclasses.asdict(m)`` without its deep copies (the fields are built from these types only)."""
    d = dict(vars(m))
    d["phases"] = {k: [vars(s) for s in v] for k, v in m.phases.items()}
    d["rollback"] = {k: [vars(s) for s in v] for k, v in m.rollback.items()}
    d["validation"] = [vars(r) for r in m.validation]
    d["settings"] = vars(m.settings)
    d["backfill"] = vars(m.backfill) if m.backfill is not None else None
    return d


def to_json(m: Migration) -> str | None:
    try:
        return json.dumps(_plain(m), separators=(",", ":"))
    except (TypeError, ValueError):  # a value JSON cannot hold: parse this file each time
        return None


def _step(fields: dict) -> Step:
    locks = fields.get("locks")
    if locks:  # JSON lists back to the tuples of registry.parse.sql.lock_summary
        fields["locks"] = tuple((tuple(map(tuple, creates)), tuple(map(tuple, names))) for creates, names in locks)
    return Step(**fields)


def from_json(text: str) -> Migration:
    d = json.loads(text)
    d["phases"] = {k: [_step(s) for s in v] for k, v in d["phases"].items()}
    d["rollback"] = {k: [_step(s) for s in v] for k, v in d["rollback"].items()}
    d["validation"] = [ValidationRule(**r) for r in d["validation"]]
    d["settings"] = Settings(**d["settings"])
    if d["backfill"] is not None:
        d["backfill"] = Backfill(**d["backfill"])
    return Migration(**d)


class ParseCache:
    """The ``parsed_migrations`` table of one catalog.db (plain sqlite3, one transaction per command)."""

    def __init__(self, catalog: Path) -> None:
        self.db = sqlite3.connect(catalog, timeout=60)
        self.db.execute("PRAGMA journal_mode = WAL")  # as ledger.store opens it
        self.db.execute("PRAGMA synchronous = NORMAL")  # a cache: the ledger's next FULL commit syncs it too
        self.db.execute(SCHEMA)
        self.new: list[tuple[str, str]] = []

    def get_many(self, keys: list[str]) -> dict[str, Migration]:
        found: dict[str, Migration] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self.db.execute(f"SELECT key, record FROM parsed_migrations WHERE key IN "
                                   f"({', '.join('?' * len(chunk))})", chunk).fetchall()
            found.update((k, from_json(r)) for k, r in rows)
        return found

    def put(self, key: str, m: Migration) -> None:
        text = to_json(m)
        if text is not None:
            self.new.append((key, text))

    def close(self) -> None:
        if self.new:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO parsed_migrations (key, record) VALUES (?, ?)",
                                    self.new)
        self.db.close()
