"""Statements: the facts an actor signs (SPEC §5).

A statement is a JSON object, canonicalised with RFC 8785 before signing:

- ``v`` (int, 1): the statement format version.
- ``ledger`` (str): the origin of the log the statement is meant for,
  ``<project>/<target>`` or ``<project>/registry``. A statement found in any
  other log is a replay.
- ``event_id`` (str): unique id of the event (a random UUID by default).
- ``type`` (str): one of ``EVENT_TYPES``.
- ``migration`` (object, optional): ``id``, ``version``, ``checksum``
  (``sha256:<64 hex>``), ``path``.
- ``target`` (object, optional): ``engine`` (postgresql|timescale|neo4j|redis|…)
  and ``id`` (the target's name).
- ``refs`` (list of str, optional): event ids this event follows from (an
  apply names the registration it applies; ``*_succeeded`` names its
  ``*_started``).
- ``actor`` (str): who acted (e.g. ``alice@example.com``).
- ``time`` (str): RFC 3339 UTC, ``YYYY-MM-DDTHH:MM:SS[.fraction]Z``.
- ``details`` (object, optional): event-specific data.

Absent optional fields are omitted, never ``null``.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

from ledger.canonical import CanonicalError, _check, canonical_json, dumps_ascii_keys
from ledger.errors import LedgerError

STATEMENT_VERSION = 1

EVENT_TYPES = (
    "register",
    "apply_started",
    "apply_succeeded",
    "apply_failed",
    "rollback_started",
    "rollback_succeeded",
    "rollback_failed",
    "validation_failed",
    "batch_checkpoint",
    "baseline",
    "consolidate",
    "repair",
    "drift_detected",
    "key_add",
    "key_revoke",
)

FIELDS = ("v", "ledger", "event_id", "type", "migration", "target", "refs", "actor", "time", "details")
REQUIRED = ("v", "ledger", "event_id", "type", "actor", "time")
MIGRATION_FIELDS = ("id", "version", "checksum", "path")
TARGET_FIELDS = ("engine", "id")

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
CHECKSUM_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class StatementError(LedgerError):
    """A statement does not follow the schema of SPEC §5."""

    exit_code = 2


def utc_now() -> str:
    """The current time as RFC 3339 UTC with microseconds, e.g. ``2026-11-24T01:02:03.456789Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 UTC time written with ``Z``; raise ``StatementError`` otherwise."""
    if not isinstance(text, str) or not TIME_RE.match(text):
        raise StatementError(f"time {text!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.fff]Z)",
                             hint="write times in UTC with a trailing Z", field="time", found=text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise StatementError(f"time {text!r} is not a real date", field="time", found=text,
                             hint="check month, day, hour and minute ranges") from None


def _string(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise StatementError(f"statement field {field} must be a non-empty string",
                             hint="see docs/ledger-format.md#statement", field=field, found=repr(value))
    return value


def _object(value: object, field: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise StatementError(f"statement field {field} must be an object", field=field,
                             found=repr(value), hint="see docs/ledger-format.md#statement")
    for key in value:
        if key not in allowed:
            raise StatementError(f"unknown field {field}.{key}", field=f"{field}.{key}",
                                 hint=f"{field} allows only: {', '.join(allowed)}")
    for key in required:
        if key not in value:
            raise StatementError(f"missing field {field}.{key}", field=f"{field}.{key}",
                                 hint=f"{field} needs: {', '.join(required)}")
    for key, item in value.items():
        _string(item, f"{field}.{key}")
    return value


_FIELD_SET = frozenset(FIELDS)
_REQUIRED_SET = frozenset(REQUIRED)
_TYPE_SET = frozenset(EVENT_TYPES)
_MIGRATION_SET = frozenset(MIGRATION_FIELDS)
_MIGRATION_REQUIRED = frozenset(("id", "checksum"))
_TARGET_SET = frozenset(TARGET_FIELDS)


def _strings(values) -> bool:
    for v in values:
        if type(v) is not str or not v:
            return False
    return True


def _valid_fast(stmt: object) -> bool:
    """True when ``stmt`` is valid; False means "let the detailed checks explain"."""
    if type(stmt) is not dict or not stmt.keys() <= _FIELD_SET or not _REQUIRED_SET <= stmt.keys():
        return False
    v, ledger, event_id, actor, time = stmt["v"], stmt["ledger"], stmt["event_id"], stmt["actor"], stmt["time"]
    if (type(v) is not int or v != STATEMENT_VERSION or stmt["type"] not in _TYPE_SET
            or type(ledger) is not str or not ledger or type(event_id) is not str or not event_id
            or type(actor) is not str or not actor or type(time) is not str or not TIME_RE.match(time)):
        return False
    try:
        datetime.fromisoformat(time)
    except ValueError:
        return False
    if "migration" in stmt:
        mig = stmt["migration"]
        if (type(mig) is not dict or not mig.keys() <= _MIGRATION_SET or not _MIGRATION_REQUIRED <= mig.keys()
                or not _strings(mig.values()) or not CHECKSUM_RE.match(mig["checksum"])):
            return False
    if "target" in stmt:
        tgt = stmt["target"]
        if type(tgt) is not dict or tgt.keys() != _TARGET_SET or not _strings(tgt.values()):
            return False
    if "refs" in stmt and (type(stmt["refs"]) is not list or not _strings(stmt["refs"])):
        return False
    if "details" in stmt and type(stmt["details"]) is not dict:
        return False
    return True


def statement_bytes(stmt: dict) -> bytes:
    """Validate ``stmt`` and return its RFC 8785 bytes (what a DSSE envelope carries)."""
    validate_statement(stmt, canonical=False)
    details = stmt.get("details")
    try:
        ascii_keys = _check(details, "details") if details else True
    except CanonicalError as exc:
        raise StatementError(f"statement: {exc.message}", hint=exc.hint, **exc.data) from None
    try:
        if ascii_keys:  # every other key is one of the schema's ASCII names
            return dumps_ascii_keys(stmt)
        return canonical_json(stmt)
    except CanonicalError as exc:
        raise StatementError(f"statement: {exc.message}", hint=exc.hint, **exc.data) from None


def validate_statement(stmt: object, *, canonical: bool = True) -> dict:
    """Check ``stmt`` against the schema; return it unchanged or raise ``StatementError``.

    ``canonical=False`` skips the canonical-JSON check (for statements just parsed
    from bytes already proven canonical)."""
    if _valid_fast(stmt):
        if canonical:
            statement_bytes(stmt)
        return stmt
    if not isinstance(stmt, dict):
        raise StatementError("a statement must be a JSON object", found=type(stmt).__name__,
                             hint="see docs/ledger-format.md#statement")
    for key in stmt:
        if key not in FIELDS:
            raise StatementError(f"unknown statement field {key!r}", field=key,
                                 hint=f"allowed fields: {', '.join(FIELDS)}")
    for key in REQUIRED:
        if key not in stmt:
            raise StatementError(f"statement lacks the field {key!r}", field=key,
                                 hint=f"required fields: {', '.join(REQUIRED)}")
    if stmt["v"] != STATEMENT_VERSION or type(stmt["v"]) is not int:
        raise StatementError(f"statement v must be {STATEMENT_VERSION}", field="v", found=stmt["v"],
                             expected=STATEMENT_VERSION, hint="this mreg writes version 1 statements")
    _string(stmt["ledger"], "ledger")
    _string(stmt["event_id"], "event_id")
    _string(stmt["actor"], "actor")
    if stmt["type"] not in EVENT_TYPES:
        raise StatementError(f"unknown event type {stmt['type']!r}", field="type", found=stmt["type"],
                             hint=f"use one of: {', '.join(EVENT_TYPES)}")
    parse_time(stmt["time"])
    if "migration" in stmt:
        mig = _object(stmt["migration"], "migration", MIGRATION_FIELDS, ("id", "checksum"))
        if not CHECKSUM_RE.match(mig["checksum"]):
            raise StatementError("migration.checksum must be sha256:<64 lower-case hex>",
                                 field="migration.checksum", found=mig["checksum"],
                                 hint="compute it with registry.model.checksum_bytes")
    if "target" in stmt:
        _object(stmt["target"], "target", TARGET_FIELDS, TARGET_FIELDS)
    if "refs" in stmt:
        refs = stmt["refs"]
        if not isinstance(refs, list):
            raise StatementError("refs must be a list of event ids", field="refs", found=repr(refs),
                                 hint="write refs as a list of strings")
        for i, ref in enumerate(refs):
            _string(ref, f"refs[{i}]")
    if "details" in stmt and not isinstance(stmt["details"], dict):
        raise StatementError("details must be an object", field="details",
                             found=repr(stmt["details"]), hint="put event data in an object")
    try:
        if canonical:
            canonical_json(stmt)
    except CanonicalError as exc:
        raise StatementError(f"statement: {exc.message}", hint=exc.hint, **exc.data) from None
    return stmt


def new_statement(*, ledger: str, type: str, actor: str, migration: dict | None = None,
                  target: dict | None = None, refs: list[str] | None = None,
                  details: dict | None = None, time: str | None = None,
                  event_id: str | None = None) -> dict:
    """Build and validate a statement; ``time`` defaults to now (UTC), ``event_id`` to a fresh UUID."""
    return validate_statement(_assemble(ledger, type, actor, migration, target, refs, details, time, event_id))


def new_statement_bytes(*, ledger: str, type: str, actor: str, migration: dict | None = None,
                        target: dict | None = None, refs: list[str] | None = None,
                        details: dict | None = None, time: str | None = None,
                        event_id: str | None = None) -> tuple[dict, bytes]:
    """``new_statement`` and its RFC 8785 bytes (what ``sign_payload`` signs), validated once."""
    stmt = _assemble(ledger, type, actor, migration, target, refs, details, time, event_id)
    return stmt, statement_bytes(stmt)


def _assemble(ledger, type, actor, migration, target, refs, details, time, event_id) -> dict:
    stmt: dict = {
        "v": STATEMENT_VERSION,
        "ledger": ledger,
        "event_id": event_id or str(uuid.uuid4()),
        "type": type,
        "actor": actor,
        "time": time or utc_now(),
    }
    if migration is not None:
        stmt["migration"] = {k: v for k, v in migration.items() if v is not None}
    if target is not None:
        stmt["target"] = dict(target)
    if refs is not None:
        stmt["refs"] = refs if isinstance(refs, str) else list(refs)
    if details is not None:
        stmt["details"] = dict(details)
    return stmt
