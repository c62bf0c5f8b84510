"""Checking and converting metadata values (header fields, module object fields).

Every converter takes ``(path, value, line, field)`` and raises ParseError with
the fix in its hint; every format shares them so the rules are the same everywhere.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from registry.model import DATABASES, MIGRATION_TYPES
from registry.parse.errors import ParseError

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
DATABASE_ALIASES = {
    "postgresql": "postgresql", "postgres": "postgresql", "pg": "postgresql", "psql": "postgresql",
    "timescale": "timescale", "timescaledb": "timescale", "neo4j": "neo4j", "cypher": "neo4j",
    "redis": "redis",
}
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def version(path: str, value: object, line: int | None, field: str = "Version") -> str:
    text = str(value).strip()
    if text[:1] in "vV" and SEMVER.match(text[1:]):
        text = text[1:]
    if not SEMVER.match(text):
        raise ParseError(path, f"version {text!r} is not semantic (MAJOR.MINOR.PATCH)", line=line, field=field,
                         hint="write a version such as 2.1.0")
    return text


def database(path: str, value: object, line: int | None, field: str = "Database") -> str:
    text = str(value).strip().lower()
    if text not in DATABASE_ALIASES:
        raise ParseError(path, f"unknown database {str(value).strip()!r}", line=line, field=field,
                         hint=f"use one of {', '.join(DATABASES)}")
    return DATABASE_ALIASES[text]


def boolean(path: str, value: object, line: int | None, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ParseError(path, f"{field} must be true or false, not {str(value).strip()!r}", line=line, field=field,
                     hint=f"write `{field}: true` or `{field}: false`")


def integer(path: str, value: object, line: int | None, field: str) -> int:
    if isinstance(value, bool):
        raise ParseError(path, f"{field} must be a whole number", line=line, field=field, hint="e.g. 1000")
    try:
        number = int(str(value).strip().replace("_", ""))
    except ValueError:
        raise ParseError(path, f"{field} must be a whole number, not {str(value).strip()!r}", line=line,
                         field=field, hint="e.g. 1000") from None
    if number < 0:
        raise ParseError(path, f"{field} must not be negative", line=line, field=field, hint="e.g. 1000")
    return number


def duty_cycle(path: str, value: object, line: int | None, field: str) -> int:
    """A backfill's duty cycle: a whole percentage from 1 to 100."""
    number = integer(path, value, line, field)
    if not 1 <= number <= 100:
        raise ParseError(path, f"{field} is a percentage from 1 to 100, not {number}", line=line, field=field,
                         hint="e.g. 75: batches run 75% of the time, pauses fill the rest")
    return number


def migration_id(path: str, value: object, line: int | None, field: str = "ID") -> str:
    text = str(value).strip()
    if not _ID.match(text):
        raise ParseError(path, f"id {text!r} is not a valid migration id", line=line, field=field,
                         hint="use the canonical form YYYYMMDD_HHMMSS_<type>_<description> "
                              "(letters, digits, _ . : - only)")
    return text


def dependencies(path: str, value: object, line: int | None, field: str = "Dependencies") -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        text = str(value).strip()
        if text.startswith("[") != text.endswith("]"):
            raise ParseError(path, "unbalanced brackets in the dependency list", line=line, field=field,
                             hint="write `Dependencies: [id1, id2]` or `Dependencies: []`")
        text = text.strip("[]").strip()
        if text.lower() in ("", "none", "-"):
            return []
        items = [part.strip().strip("'\"") for part in re.split(r"[,\s]+", text) if part.strip()]
    return [migration_id(path, item, line, field) for item in items]


def created(path: str, value: object, line: int | None, field: str = "Created") -> str:
    text = str(value).strip()
    try:
        if len(text) == 10:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(path, f"date {text!r} is not ISO 8601", line=line, field=field,
                         hint="write YYYY-MM-DD (or a full ISO 8601 timestamp)") from None
    return text


def migration_type(path: str, value: object, line: int | None, field: str = "Type") -> str:
    text = str(value).strip().lower()
    if text not in MIGRATION_TYPES:
        raise ParseError(path, f"unknown migration type {str(value).strip()!r}", line=line, field=field,
                         hint=f"use one of {', '.join(MIGRATION_TYPES)}")
    return text


def txmode(path: str, value: object, line: int | None, field: str = "txmode") -> str:
    text = str(value).strip().lower()
    if text in ("none", "off", "autocommit"):
        return "none"
    if text in ("transaction", "tx", "on", "default"):
        return "transaction"
    raise ParseError(path, f"txmode {str(value).strip()!r} is not understood", line=line, field=field,
                     hint="write `txmode: none` to run the file outside a transaction (or omit the line)")
