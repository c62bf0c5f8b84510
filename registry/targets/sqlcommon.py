"""What the PostgreSQL and TimescaleDB adapters share: the mirror's SQL, sessions, their own errors.

The mirror (SPEC §5) lives in the target's *mirror schema* (target option
``mirror_schema``, default ``public``):

- ``schema_versions``: the seed's columns with their meanings kept (``version``
  no longer unique: a version has several events) plus ``origin``, ``seq``,
  ``event_type``, ``leaf`` (exact bytes) and ``leaf_hash``; ``UNIQUE(origin, seq)``.
  A BEFORE INSERT trigger keeps each origin's history linear (the row's ``seq``
  is the next one, its leaf names the previous leaf's hash, its ``leaf_hash`` is
  ``SHA-256(0x00 || leaf)``); UPDATE, DELETE and TRUNCATE are refused by triggers.
- ``schema_checkpoints``: the latest checkpoint note per origin; its size may never go down.
- ``mreg_lock_owner``: who holds the target's lock (written by the holder, read by waiters).

psycopg is imported lazily by the adapters; nothing here imports it at module level.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass

from registry.errors import ConfigError, DatabaseError
from registry.model import Step
from registry.targets.base import (  # noqa: F401  (re-exported: the adapters' shared errors)
    CheckpointRegression,
    ConnectionLost,
    LockLost,
    LockNotAvailable,
    MirrorConflict,
    MirrorRow,
    StepFailed,
    StepRefused,
)

# ----------------------------------------------------------------------------- errors


class StatementTimeout(StepFailed):
    """A step ran longer than ``statement_timeout`` (SQLSTATE 57014)."""


class ForeignVersionTable(ConfigError):
    """A ``schema_versions`` table exists in the mirror schema but is not an mreg mirror."""


class UnknownTenant(ConfigError):
    """A tenant-scoped session named a schema that does not exist."""


class BackfillKeyError(ConfigError):
    """A backfill's key is not an integer column (or its batch size is not positive)."""


class ShadowUnavailable(DatabaseError):
    """A throw-away shadow database could not be created or dropped."""


# ----------------------------------------------------------------------------- mirror SQL

# SQLSTATEs raised by the mirror's triggers (class "MR" is mreg's own).
SQLSTATE_APPEND_ONLY = "MR001"   # UPDATE/DELETE/TRUNCATE of the mirror or a checkpoint
SQLSTATE_NOT_LINEAR = "MR002"    # a row that leaves a gap, does not chain, or disagrees with its leaf
SQLSTATE_CHECKPOINT_DOWN = "MR003"  # a checkpoint smaller than the stored one

MIRROR_COLUMNS = (
    "origin", "seq", "event_type", "leaf", "leaf_hash", "version", "database_type",
    "applied_at", "applied_by", "migration_id", "checksum", "execution_time_ms",
    "rollback_available", "metadata",
)

# {s} is the quoted mirror schema. Idempotent, run under a transaction-level advisory lock.
MIRROR_DDL = r"""
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.schema_versions (
    id SERIAL PRIMARY KEY,
    version VARCHAR(20) NOT NULL,            -- semantic version of the migration, e.g. "2.1.0"
    database_type VARCHAR(20) NOT NULL,      -- 'postgresql', 'timescale', ...
    applied_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    applied_by VARCHAR(255) NOT NULL,        -- the actor of the event
    migration_id VARCHAR(255) NOT NULL,      -- the migration's id ('' for events of no migration)
    checksum VARCHAR(64) NOT NULL,           -- SHA-256 (hex) of the migration file
    execution_time_ms INTEGER,
    rollback_available BOOLEAN DEFAULT TRUE,
    metadata JSONB DEFAULT '{{}}',           -- the statement's details
    origin TEXT NOT NULL,                    -- the log: <project>/<target>
    seq BIGINT NOT NULL CHECK (seq >= 0),    -- position in the log
    event_type VARCHAR(40) NOT NULL,         -- apply_started, apply_succeeded, ...
    leaf BYTEA NOT NULL,                     -- the leaf's exact bytes
    leaf_hash BYTEA NOT NULL CHECK (octet_length(leaf_hash) = 32),
    CONSTRAINT valid_semver CHECK (version ~ '^\d+\.\d+\.\d+$'),
    CONSTRAINT schema_versions_origin_seq UNIQUE (origin, seq)
);
CREATE INDEX IF NOT EXISTS idx_schema_versions_version ON {s}.schema_versions(version);
CREATE INDEX IF NOT EXISTS idx_schema_versions_database_type ON {s}.schema_versions(database_type);

CREATE TABLE IF NOT EXISTS {s}.schema_checkpoints (
    origin TEXT PRIMARY KEY,
    size BIGINT NOT NULL CHECK (size >= 0),
    note TEXT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

CREATE OR REPLACE FUNCTION {s}.mreg_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mreg: % on %.% refused: the mirror is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'MR001',
              HINT = 'the mirror is the authoritative copy of the log; append a new event instead';
END $$;

CREATE OR REPLACE FUNCTION {s}.mreg_check_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    doc jsonb;
    last_seq bigint;
    last_hash bytea;
BEGIN
    IF NEW.leaf_hash <> sha256('\x00'::bytea || NEW.leaf) THEN
        RAISE EXCEPTION 'mreg: leaf_hash of %/% is not SHA-256(0x00 || leaf)', NEW.origin, NEW.seq
            USING ERRCODE = 'MR002';
    END IF;
    doc := convert_from(NEW.leaf, 'UTF8')::jsonb;
    IF (doc->>'seq')::bigint IS DISTINCT FROM NEW.seq THEN
        RAISE EXCEPTION 'mreg: row seq % of % differs from its leaf''s seq %', NEW.seq, NEW.origin, doc->>'seq'
            USING ERRCODE = 'MR002';
    END IF;
    SELECT v.seq, v.leaf_hash INTO last_seq, last_hash
      FROM {s}.schema_versions v WHERE v.origin = NEW.origin ORDER BY v.seq DESC LIMIT 1;
    IF NEW.seq <> coalesce(last_seq + 1, 0) THEN
        RAISE EXCEPTION 'mreg: % seq % is not the next entry (the log holds % entries)',
            NEW.origin, NEW.seq, coalesce(last_seq + 1, 0)
            USING ERRCODE = CASE WHEN NEW.seq <= last_seq THEN '23505' ELSE 'MR002' END;
    END IF;
    IF decode(doc->>'prev', 'base64') <> coalesce(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) THEN
        RAISE EXCEPTION 'mreg: % seq % does not chain to the previous leaf', NEW.origin, NEW.seq
            USING ERRCODE = 'MR002';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION {s}.mreg_checkpoint_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'mreg: % on %.% refused: checkpoints are never removed', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'MR001';
    END IF;
    IF NEW.size < OLD.size OR NEW.origin <> OLD.origin THEN
        RAISE EXCEPTION 'mreg: checkpoint of % may not go down from % to %', OLD.origin, OLD.size, NEW.size
            USING ERRCODE = 'MR003';
    END IF;
    RETURN NEW;
END $$;

CREATE TABLE IF NOT EXISTS {s}.mreg_lock_owner (
    lock_key BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    lease_until TIMESTAMP WITH TIME ZONE
);
ALTER TABLE {s}.mreg_lock_owner ADD COLUMN IF NOT EXISTS token TEXT;

COMMENT ON TABLE {s}.schema_versions IS '{format}: the mirror of mreg''s target logs (one row per leaf; append-only)';
"""

# Bumped whenever MIRROR_DDL changes, so ensure_mirror re-runs it on a mirror made by an older mreg.
MIRROR_FORMAT = "mreg mirror v1"

# (trigger name, table, timing/events, level, function)
MIRROR_TRIGGERS = (
    ("schema_versions_append_only", "schema_versions", "BEFORE UPDATE OR DELETE", "ROW", "mreg_refuse_change"),
    ("schema_versions_no_truncate", "schema_versions", "BEFORE TRUNCATE", "STATEMENT", "mreg_refuse_change"),
    ("schema_versions_linear", "schema_versions", "BEFORE INSERT", "ROW", "mreg_check_append"),
    ("schema_checkpoints_monotonic", "schema_checkpoints", "BEFORE UPDATE OR DELETE", "ROW", "mreg_checkpoint_guard"),
    ("schema_checkpoints_no_truncate", "schema_checkpoints", "BEFORE TRUNCATE", "STATEMENT", "mreg_checkpoint_guard"),
)

MIRROR_OBJECTS_QUERY = """
SELECT (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %(s)s AND t.tgname = ANY(%(triggers)s)) AS triggers,
       (SELECT array_agg(column_name::text) FROM information_schema.columns
         WHERE table_schema = %(s)s AND table_name = 'schema_versions') AS columns,
       to_regclass(quote_ident(%(s)s) || '.mreg_lock_owner') IS NOT NULL AS lock_table,
       coalesce(obj_description(to_regclass(quote_ident(%(s)s) || '.schema_versions'), 'pg_class'), '')
           LIKE %(format)s || ':%%' AS current
"""

def insert_mirror_sql(schema: str, n: int) -> str:
    """The INSERT of ``n`` mirror rows into ``{schema}.schema_versions`` with ``$1``… parameters
    (``raw_mirror_params`` of each row in turn)."""
    width = len(MIRROR_COLUMNS)
    values = ", ".join("(" + ", ".join(f"${i * width + j + 1}" for j in range(width)) + ")" for i in range(n))
    return f"INSERT INTO {schema}.schema_versions ({', '.join(MIRROR_COLUMNS)}) VALUES {values}"


SELECT_MIRROR = (
    "SELECT " + ", ".join(MIRROR_COLUMNS) + " FROM {s}.schema_versions"
    " WHERE origin = %s AND seq >= %s ORDER BY seq"
)

UPSERT_CHECKPOINT = (
    "INSERT INTO {s}.schema_checkpoints (origin, size, note) VALUES (%s, %s, %s)"
    " ON CONFLICT (origin) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note, updated_at = NOW()"
)


# libpq format codes of raw_mirror_params: leaf and leaf_hash binary, everything else text.
RAW_MIRROR_FORMATS = [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def raw_mirror_params(row: MirrorRow, encoding: str = "utf-8") -> list[bytes | None]:
    """The INSERT parameters of a mirror row, in ``MIRROR_COLUMNS`` order, as libpq takes them
    (``RAW_MIRROR_FORMATS``): text parameters take their column's type on the server, ``metadata``
    is the details as JSON text (the server stores it as ``jsonb``).
    """
    ms = row.execution_time_ms
    return [
        row.origin.encode(encoding), b"%d" % row.seq, row.event_type.encode(encoding), bytes(row.leaf),
        bytes(row.leaf_hash), row.version.encode(encoding), row.database_type.encode(encoding),
        row.applied_at.encode(encoding), row.applied_by.encode(encoding), row.migration_id.encode(encoding),
        row.checksum.encode(encoding), None if ms is None else b"%d" % ms,
        b"t" if row.rollback_available else b"f", _json(row.metadata),
    ]


def _json(value) -> bytes:
    """JSON text of a mirror row's ``metadata`` (orjson; Python's json for what orjson refuses)."""
    import orjson

    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


_RESULT_OK = (1, 2, 0)  # pq.ExecStatus COMMAND_OK, TUPLES_OK, EMPTY_QUERY (psycopg is imported lazily)


def check_result(conn, res) -> int:
    """Raise the psycopg error a libpq result carries (as ``conn.execute`` would); else its row count or -1."""
    status = res.status
    if status in _RESULT_OK:  # the common case first: a backfill checks two results a millisecond
        n = res.command_tuples
        return -1 if n is None else n
    from psycopg import errors, pq

    if status == pq.ExecStatus.FATAL_ERROR:
        if conn.pgconn.status != pq.ConnStatus.OK and not res.error_field(pq.DiagnosticField.SQLSTATE):
            raise errors.OperationalError(res.get_error_message(conn.info.encoding) or "the connection was lost")
        raise errors.error_from_result(res, encoding=conn.info.encoding)
    if status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH):
        raise errors.NotSupportedError("COPY cannot be used here")  # simple_ok keeps COPY away
    if status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY):
        raise errors.InternalError(f"unexpected result status {pq.ExecStatus(status).name}")
    n = res.command_tuples
    return -1 if n is None else n


class Pipeline:
    """Statements sent in libpq pipeline mode and read back at ``finish()`` (one Sync: one round trip).

    The server executes each statement as soon as it arrives (``push()`` sends what is queued),
    so the caller can go on working meanwhile; after an error the server skips the rest.
    Items are SQL text without parameters or ``(prepared name, params, formats)``.
    """

    def __init__(self, conn) -> None:
        self.conn, self.pg, self.enc = conn, conn.pgconn, conn.info.encoding
        self.tags: list = []
        self.pg.enter_pipeline_mode()

    def send(self, item, tag=None) -> None:
        if isinstance(item, str):
            self.pg.send_query_params(item.encode(self.enc), None)
        else:
            self.pg.send_query_prepared(*item)
        self.tags.append(tag)

    def push(self) -> None:
        """Put the queued statements on the wire now (the connection is non-blocking)."""
        import select

        while self.pg.flush():
            select.select([], [self.pg.socket], [], 1.0)

    def finish(self):
        """Sync, read every result and leave pipeline mode; return (first error result, its tag) or None."""
        from psycopg import OperationalError, pq

        pg = self.pg
        error = None
        try:
            pg.pipeline_sync()
            n = idle = 0
            while True:
                res = pg.get_result()
                if res is None:
                    idle += 1
                    if pg.status != pq.ConnStatus.OK or idle > 2:  # lost, or nothing more will come
                        raise OperationalError(pg.get_error_message(self.enc) or "the connection was lost")
                    continue
                idle = 0
                if res.status == pq.ExecStatus.PIPELINE_SYNC:
                    break
                if res.status == pq.ExecStatus.FATAL_ERROR and error is None:
                    error = (res, self.tags[n] if n < len(self.tags) else None)
                n += 1
        finally:
            try:
                pg.exit_pipeline_mode()
            except OperationalError:
                pass  # results left after a lost connection: the connection is unusable anyway
        return error


def _parse_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def render_time(value: dt.datetime, spelled: str | None = None) -> str:
    """``applied_at`` as RFC 3339 UTC text (the ledger's ``YYYY-MM-DDTHH:MM:SS.ffffffZ``).

    The column stores an instant; the leaf spells it. When ``spelled`` (the
    leaf's own spelling) names the same instant, that spelling is returned, so a
    faithful row compares equal string for string; a changed instant never does.
    """
    if spelled is not None:
        parsed = _parse_time(spelled)
        if parsed is not None and parsed.tzinfo is not None and parsed == value:
            return spelled
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_from_record(rec: tuple) -> MirrorRow:
    """A ``MirrorRow`` from a ``SELECT_MIRROR`` record (columns read from the table, not the leaf)."""
    (origin, seq, event_type, leaf, leaf_hash, version, database_type, applied_at, applied_by,
     migration_id, checksum, execution_time_ms, rollback_available, metadata) = rec
    leaf = bytes(leaf)
    spelled = None
    try:  # only the spelling of the time is borrowed from the leaf, never the instant
        envelope = json.loads(leaf)["envelope"]
        import base64

        spelled = json.loads(base64.b64decode(envelope["payload"]))["time"]
    except (ValueError, KeyError, TypeError):
        spelled = None
    return MirrorRow(
        origin=origin, seq=int(seq), event_type=event_type, leaf=leaf, leaf_hash=bytes(leaf_hash),
        version=version, database_type=database_type,
        applied_at=render_time(applied_at, spelled) if applied_at is not None else "",
        applied_by=applied_by, migration_id=migration_id, checksum=checksum,
        execution_time_ms=execution_time_ms, rollback_available=bool(rollback_available),
        metadata=metadata if metadata is not None else {},
    )


# ----------------------------------------------------------------------------- steps

_PLACEHOLDER = re.compile(r"(?<![:\w]):(lo|hi)\b")


def bind_range(update: str) -> str:
    """A backfill ``update`` with ``:lo``/``:hi`` turned into psycopg parameters.

    ``::type`` casts are left alone; ``%`` is doubled so psycopg reads it literally.
    """
    return _PLACEHOLDER.sub(r"%(\1)s", update.replace("%", "%%"))


def number_range(update: str) -> str:
    """A backfill ``update`` with ``:lo``/``:hi`` as PostgreSQL's positional parameters ``$1``/``$2``
    (for PL/pgSQL's ``EXECUTE … USING lo, hi``); ``::type`` casts are left alone."""
    return _PLACEHOLDER.sub(lambda m: "$1" if m.group(1) == "lo" else "$2", update)


def inline_range(update: str, lo: int, hi: int) -> str:
    """A backfill ``update`` with ``:lo``/``:hi`` written as integer literals (a negative one in
    parentheses, so ``id-:lo`` cannot turn into a ``--`` comment); ``::type`` casts are left alone.

    The batch then needs no parameters and travels in one simple query with its transaction's
    ``BEGIN``/``SET LOCAL`` (one round trip). Integer keys only: ``batches`` refuses others.
    """
    def literal(m: re.Match) -> str:
        value = int(lo if m.group(1) == "lo" else hi)
        return f"({value})" if value < 0 else str(value)

    return _PLACEHOLDER.sub(literal, update)


def is_int_key(value: object) -> bool:
    """Whether a backfill key value is an integer (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def batches(lo: int, hi: int, size: int, start: int | None = None):
    """Inclusive-exclusive key ranges ``[a, b)`` covering ``lo..hi`` (both inclusive) in ``size`` steps.

    ``start`` resumes after a crash: ranges begin at the last checkpointed bound.
    """
    if size <= 0:
        raise BackfillKeyError(f"batch_size must be positive (found {size})", hint="set batch_size to 1 or more",
                               field="batch_size", found=size)
    for value in (lo, hi, start):
        if value is not None and not is_int_key(value):
            raise BackfillKeyError(
                f"a backfill walks an integer key in ranges; this key holds {type(value).__name__} values "
                f"({value!r})", hint="use an integer key (an id or a bigserial column) for `Backfill: key=`",
                field="key", found=repr(value))
    a = lo if start is None else max(lo, start)
    while a <= hi:
        b = min(a + size, hi + 1)
        yield a, b
        a = b


@dataclass
class LockHandle:
    """A held target lock: release it with ``adapter.release_lock(handle)``."""

    owner: str
    key: int
    pid: int


def lock_key(name: str) -> tuple[int, int]:
    """The two-int advisory lock key for ``name`` (``classid`` 'mreg', ``objid`` from SHA-256)."""
    import hashlib

    digest = hashlib.sha256(name.encode()).digest()
    return 0x6D726567, int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def step_failed(exc: Exception, step: Step, *, target: str, path: str | None) -> StepFailed:
    """Map a psycopg error raised by ``step`` to the ``StepFailed`` family, keeping the server's words."""
    import psycopg

    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    server_msg = (diag.message_primary if diag is not None and diag.message_primary else str(exc)).strip()
    where = f"{path or '<step>'}:{step.line}" if step.line else (path or "<step>")
    label = f" ({step.name})" if step.name else ""
    data = dict(target=target, path=path, line=step.line, step=step.name, sqlstate=sqlstate,
                server_message=server_msg, detail=getattr(diag, "message_detail", None))
    message = f"{where}: step{label} failed on target {target}: {server_msg}"
    if sqlstate:
        message += f" [SQLSTATE {sqlstate}]"
    if sqlstate == "55P03":
        return LockNotAvailable(message, hint="another session holds a conflicting lock; the step is retried "
                                "per max_retries, or raise the migration's lock_timeout", **data)
    if sqlstate == "57014":
        return StatementTimeout(message, hint="the step exceeded statement_timeout; raise the migration's "
                                "timeout or split the step", **data)
    if isinstance(exc, psycopg.OperationalError) and (sqlstate is None or sqlstate.startswith(("57P", "08"))):
        return ConnectionLost(message, hint="the server ended the connection; the transaction was rolled back. "
                              "Check the server, then run the command again", **data)
    server_hint = getattr(diag, "message_hint", None)
    return StepFailed(message, hint=server_hint or f"fix the statement at {where} and run again", **data)


def db_error(exc: Exception, target: str, what: str) -> DatabaseError:
    """A psycopg error raised outside a step (mirror, lock, checkpoint, session set-up) as an mreg error.

    A lost connection is ``ConnectionLost`` (the engine re-reads the mirror before going on: a
    ``COMMIT`` whose answer was lost may or may not have happened); anything else ``DatabaseError``.
    """
    import psycopg

    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    msg = (diag.message_primary if diag is not None and diag.message_primary else str(exc)).strip()
    data = dict(target=target, sqlstate=sqlstate, server_message=msg, path=None, line=0, step=what)
    if isinstance(exc, psycopg.OperationalError) and (sqlstate is None or sqlstate.startswith(("57P", "08"))):
        return ConnectionLost(f"target {target}: connection lost while {what}: {msg}",
                              hint="check the server, then run the command again; mreg re-reads the "
                                   "target's log before appending", **data)
    suffix = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
    return DatabaseError(f"target {target}: {what} failed: {msg}{suffix}",
                         hint=getattr(diag, "message_hint", None) or "see the server's message; "
                         "`mreg status` shows the target's state", **data)


def server_errors(what: str):
    """Decorate an adapter (or session) method: psycopg errors become ``db_error(...)``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            import psycopg

            try:
                return fn(self, *args, **kwargs)
            except psycopg.Error as exc:
                target = getattr(getattr(self, "adapter", self), "target").name
                raise db_error(exc, target, what) from None
        return inner
    return wrap
