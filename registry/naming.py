"""Migration names: the canonical ``YYYYMMDD_HHMMSS_<type>_<description>`` and the legacy schemes.

Legacy schemes recognised by ``parse_legacy_name`` (SPEC §4):

========================  ==========================================  ===========
scheme                    example                                     kind
========================  ==========================================  ===========
``flyway``                ``V3__add_users.sql``, ``V1.2__x.sql``        versioned
``flyway``                ``U3__add_users.sql``                        undo
``flyway``                ``R__refresh_views.sql``                     repeatable
``neo4j-migrations``      ``V1_2_3__add_index.cypher``                 versioned
``knex``                  ``20231120143000_add_users.js`` (.ts)        versioned
``date``                  ``20231120_add_users.sql``, ``20231120_143000_x.sql``  versioned
``numbered``              ``001_add_users.sql``, ``12-init.sql``       versioned
========================  ==========================================  ===========

A ``.up``/``.down`` suffix before the extension (golang-migrate, dbmate) is
understood: ``.down`` makes the name an ``undo``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime
from typing import TYPE_CHECKING

from registry.errors import ConfigError
from registry.model import MIGRATION_TYPES
from registry.parse import EXTENSIONS

if TYPE_CHECKING:
    from registry.model import Migration

_EXT = "|".join(EXTENSIONS)  # the parser's: every file it reads can carry a migration's name
_CANONICAL = re.compile(
    rf"^(?P<date>\d{{8}})_(?P<time>\d{{6}})_(?P<type>{'|'.join(MIGRATION_TYPES)})_"
    rf"(?P<desc>[a-z0-9]+(?:_[a-z0-9]+)*)(?:\.(?P<ext>{_EXT}))?$")
_FLYWAY = re.compile(rf"^(?P<prefix>[VU])(?P<ver>\d+(?:[._]\d+)*)__(?P<desc>.+?)\.(?P<ext>{_EXT})$")
_REPEATABLE = re.compile(rf"^R__(?P<desc>.+?)\.(?P<ext>{_EXT})$")
_KNEX = re.compile(r"^(?P<ts>\d{14})_(?P<desc>.+?)\.(?P<ext>js|ts|cjs|mjs|mts|cts)$")
_DATE = re.compile(rf"^(?P<date>\d{{8}})(?:[_-]?(?P<time>\d{{4}}|\d{{6}}))?[_-](?P<desc>.+?)\.(?P<ext>{_EXT})$")
_STAMP = re.compile(rf"^(?P<date>\d{{8}})(?P<time>\d{{6}})[_-](?P<desc>.+?)\.(?P<ext>{_EXT})$")
_NUMBERED = re.compile(rf"^(?P<num>\d{{1,6}})[_-](?P<desc>.+?)\.(?P<ext>{_EXT})$")
_UPDOWN = re.compile(r"\.(up|down)(?=\.[a-z]+$)")
DESCRIPTION_MAX = 64


class NamingError(ConfigError):
    """A canonical id cannot be built from the given parts."""


@dataclass(frozen=True)
class CanonicalName:
    """The parts of a canonical file name ``YYYYMMDD_HHMMSS_<type>_<description>[.ext]``."""

    id: str
    timestamp: datetime
    type: str
    description: str
    ext: str | None


@dataclass(frozen=True)
class LegacyName:
    """A legacy file name understood: ``version`` orders (a tuple of ints), ``version_str`` shows."""

    scheme: str
    version: tuple[int, ...]
    version_str: str
    description: str
    kind: str          # versioned | undo | repeatable
    ext: str


def _basename(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def snake(text: str) -> str:
    """ASCII snake_case of ``text``: accents folded, camelCase split, anything else a single ``_``."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    text = text[:DESCRIPTION_MAX].rstrip("_")
    return text or "migration"


def canonical_id(when: datetime | date, type: str, description: str) -> str:
    """``YYYYMMDD_HHMMSS_<type>_<description>``; the description is made snake_case ASCII."""
    if type not in MIGRATION_TYPES:
        raise NamingError(f"unknown migration type {type!r}", hint=f"use one of {', '.join(MIGRATION_TYPES)}",
                          field="type", found=type)
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day)
    return f"{when:%Y%m%d_%H%M%S}_{type}_{snake(description)}"


def parse_canonical_name(filename: str) -> CanonicalName | None:
    """The parts of a canonical name (path or bare id accepted), or None if it is not one."""
    return _canonical_name(_basename(filename))


@lru_cache(maxsize=16384)  # a scan asks about each file name several times (results are frozen)
def _canonical_name(base: str) -> CanonicalName | None:
    m = _CANONICAL.match(base)
    if not m:
        return None
    d, t = m["date"], m["time"]
    try:  # the constructor refuses what strptime("%Y%m%d%H%M%S") would, at a tenth of its cost
        stamp = datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(t[:2]), int(t[2:4]), int(t[4:6]))
    except ValueError:
        return None
    ident = base[: -(len(m["ext"]) + 1)] if m["ext"] else base
    return CanonicalName(ident, stamp, m["type"], m["desc"], m["ext"])


def _valid_date(digits: str) -> bool:
    try:
        datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return False
    return len(digits) == 8 and digits.isdigit()


def parse_legacy_name(filename: str) -> LegacyName | None:
    """(scheme, version, description, kind) of a legacy migration file name, or None.

    Canonical names are not legacy: they give None (check ``parse_canonical_name`` first).
    """
    return _legacy_name(_basename(filename))


@lru_cache(maxsize=16384)
def _legacy_name(base: str) -> LegacyName | None:
    if _canonical_name(base):
        return None
    kind = "versioned"
    ud = _UPDOWN.search(base)
    if ud:
        kind = "undo" if ud.group(1) == "down" else kind
        base = base[:ud.start()] + base[ud.end():]
    if m := _REPEATABLE.match(base):
        return LegacyName("flyway", (), "", m["desc"], "repeatable", m["ext"])
    if m := _FLYWAY.match(base):
        parts = tuple(int(p) for p in re.split(r"[._]", m["ver"]))
        scheme = "neo4j-migrations" if m["ext"] in ("cypher", "cql") else "flyway"
        return LegacyName(scheme, parts, ".".join(str(p) for p in parts), m["desc"],
                          "undo" if m["prefix"] == "U" else kind, m["ext"])
    if (m := _KNEX.match(base)) and _valid_date(m["ts"][:8]):
        return LegacyName("knex", (int(m["ts"]),), m["ts"], m["desc"], kind, m["ext"])
    if (m := _STAMP.match(base)) and _valid_date(m["date"]):
        return LegacyName("date", (int(m["date"]), int(m["time"])), m["date"] + m["time"], m["desc"], kind, m["ext"])
    if (m := _DATE.match(base)) and _valid_date(m["date"]):
        time = (m["time"] or "").ljust(6, "0")
        version = (int(m["date"]), int(time)) if m["time"] else (int(m["date"]),)
        shown = m["date"] + (f"_{m['time']}" if m["time"] else "")
        return LegacyName("date", version, shown, m["desc"], kind, m["ext"])
    if m := _NUMBERED.match(base):
        return LegacyName("numbered", (int(m["num"]),), m["num"], m["desc"], kind, m["ext"])
    return None


def describe(filename: str) -> str:
    """A snake_case description for any file name: the legacy description, else the stem."""
    base = _basename(filename)
    canon = parse_canonical_name(base)
    if canon:
        return canon.description
    legacy = parse_legacy_name(base)
    if legacy:
        return snake(legacy.description)
    return snake(base.rsplit(".", 1)[0])


def infer_type(migration: "Migration") -> str:
    """schema | data | security | perf, from the statements of the migration's phases.

    Each statement is classed (SQL from pglast's parse tree; Cypher and Redis by
    their command words); the migration takes the first class present in the
    order schema, security, data, perf. So a table with its index is ``schema``,
    a file of only indexes ``perf``, grants with an INSERT ``security``.
    """
    from registry.parse.classify import classify_step

    found = set()
    for steps in migration.phases.values():
        for step in steps:
            found.add(classify_step(step))
    if migration.backfill is not None:
        found.add("data")
    for kind in ("schema", "security", "data", "perf"):
        if kind in found:
            return kind
    return "schema"
