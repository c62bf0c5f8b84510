"""The PostgreSQL adapter (psycopg 3, imported lazily).

Connections: one *main* connection (auto-commit) carries sessions, mirror reads
and writes; a second, dedicated connection holds the target's lock, so the lock
is a **session-level** advisory lock that survives every transaction, commit,
rollback and ``CREATE INDEX CONCURRENTLY`` on the main connection, and is
released by the server the moment the holder's connection ends (crash, kill -9,
``pg_terminate_backend``).

Target options (``[targets.<name>.options]`` in mreg.toml):

- ``mirror_schema`` (default ``public``): where ``schema_versions``,
  ``schema_checkpoints`` and ``mreg_lock_owner`` live;
- ``connect_timeout`` (seconds, default 10).
- ``group_commit`` (default true): consecutive phases that only create new objects share one
  transaction (``registry.apply.group``).
- ``backfill_sparse_wal`` (default true): backfill batches set ``wal_init_zero = off`` for their own
  transaction where allowed (``PostgresAdapter.backfill_settings``): a new WAL file the backfill
  needs is not zero-filled under the WAL write lock. Measured on a freshly started server (first
  round of the zero-downtime benchmark): p99 11.3x the baseline without it (a 15–20 ms stall of
  the application's commits every ~0.3 s), 2.1x with it.
- ``backfill_wal_compression`` (default false): backfill batches set ``wal_compression`` for their
  own transaction where allowed. Measured on the zero-downtime benchmark it slowed the backfill by
  a third (the compression's CPU; pglz, this server has no lz4) without lowering the
  application's p99, so it is off unless asked for.
- ``cancel_blocking_autovacuum`` (default true): a statement held up by autovacuum workers alone
  cancels them at once instead of after ``deadlock_timeout`` (``_wait_watching``).

Tenants are schemas: ``session(tenant="acme")`` sets ``search_path`` to
``acme, public`` for the session (mirror rows are schema-qualified and unaffected).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import select
import socket
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from registry.config import Target, redact_url
from registry.errors import DatabaseError
from registry.model import Settings, Step
from registry.targets.base import LockTimeout, MirrorRow
from registry.targets.sqlcommon import (
    MIRROR_DDL,
    MIRROR_FORMAT,
    MIRROR_OBJECTS_QUERY,
    MIRROR_TRIGGERS,
    SELECT_MIRROR,
    SQLSTATE_CHECKPOINT_DOWN,
    SQLSTATE_NOT_LINEAR,
    UPSERT_CHECKPOINT,
    CheckpointRegression,
    ForeignVersionTable,
    LockHandle,
    LockLost,
    MirrorConflict,
    Pipeline,
    ShadowUnavailable,
    UnknownTenant,
    RAW_MIRROR_FORMATS,
    bind_range,
    inline_range,
    is_int_key,
    check_result,
    db_error,
    insert_mirror_sql,
    lock_key,
    raw_mirror_params,
    row_from_record,
    server_errors,
    step_failed,
)

LOCK_POLL_S = 0.2
_COPY = re.compile(r"\bcopy\b", re.IGNORECASE)
FATAL_ERROR = 7  # psycopg.pq.ExecStatus.FATAL_ERROR (psycopg is imported lazily)
SHADOW_PREFIX = "mreg_shadow_"
AUTOVACUUM_GRACE_S = 0.01  # a statement waiting this long is checked for an autovacuum in its way
AUTOVACUUM_POLL_S = 0.1  # and again this often while it waits
BACKFILL_FLUSH_AFTER = 32  # pages (256 kB): a backfill batch's backend_flush_after
MIRROR_CHUNKS = (16, 2, 1)  # rows per prepared mirror INSERT (the largest that fits goes first)
# sent after a backfill batch in its query: the server's own time on the query (the statements
# before it run in the same message, so statement_timestamp() is its arrival)
ELAPSED = "extract(epoch FROM clock_timestamp() - statement_timestamp())::float8"
SERVER_TIME = "\n;SELECT " + ELAPSED


class PgSession:
    """Work on the main connection: one transaction, or auto-commit statements.

    Transactional: ``BEGIN`` on entry (with ``SET LOCAL`` timeouts and tenant
    ``search_path``), ``COMMIT`` on ``commit()``, ``ROLLBACK`` when left without
    commit. Non-transactional: every ``execute`` commits on its own (what
    ``CREATE INDEX CONCURRENTLY`` and ``txmode: none`` need); ``commit()`` and
    ``rollback()`` do nothing, and the timeouts are reset when the session ends.

    Round trips (docs/performance.md): a transactional session holds its ``BEGIN``/``SET
    LOCAL`` set-up back and sends it in one simple query with its first step (PostgreSQL 13
    and later apply ``statement_timeout`` to each statement of such a query). Mirror rows go
    out at once as prepared INSERTs in a libpq pipeline (the server inserts them while the
    engine signs the next event) and ``COMMIT`` joins them: their results are read with the
    commit's, one round trip. Anything else (a query with parameters, a read, a savepoint)
    first finishes what is in flight and sends what is held back, so statements always reach
    the server in the order they were issued and a refused row raises before anything else
    runs. Steps without parameters go through libpq's ``PQexec`` (``psycopg.pq``), the rest
    through psycopg.
    """

    def __init__(self, adapter: "PostgresAdapter", conn, transactional: bool,
                 setup: list[str] | None = None) -> None:
        self.adapter = adapter
        self.conn = conn
        self.transactional = transactional
        self.done = False
        self.path: str | None = None  # the migration file, for error messages
        self.setup = setup  # [BEGIN, SET LOCAL ...]: not sent yet (they travel with the first statement)
        self.rows: list[MirrorRow] = []  # mirror rows held back (adapters without pipelines)
        self.pipe: Pipeline | None = None  # mirror INSERTs in flight, results not read yet
        self.server_s: float | None = None  # the server's time on the last execute(timed=True), when known

    def _finish_pipe(self, *, ignore_errors: bool = False) -> None:
        """Read the results of the statements in flight; raise the first error (``MirrorConflict``
        for a refused row)."""
        pipe, self.pipe = self.pipe, None
        if pipe is None:
            return
        error = pipe.finish()
        if error is None or ignore_errors:
            return
        result, row = error
        try:
            check_result(self.conn, result)
        except self.adapter.psycopg.Error as exc:
            mapped = self.adapter._mirror_error(exc, row) if row is not None else exc
            if mapped is exc:
                mapped = db_error(exc, self.adapter.target.name, "appending to the mirror")
            raise mapped from None

    def _with_held(self, text: str) -> str:
        """``text`` (statements without parameters) preceded by the held ``BEGIN``/``SET LOCAL``, if
        still held: they travel in one simple query."""
        if self.setup is None:
            return text
        setup, self.setup = self.setup, None
        return "; ".join(setup) + ";\n" + text

    def _send_held(self) -> None:
        """Finish what is in flight and send what is held back (before a statement that cannot go
        with them)."""
        self._finish_pipe()
        if self.setup is not None:
            setup, self.setup = self.setup, None
            try:
                self.adapter.run_simple(self.conn, "; ".join(setup))
            except self.adapter.psycopg.Error as exc:
                raise db_error(exc, self.adapter.target.name, "starting a session") from None
        if self.rows:
            rows, self.rows = self.rows, []
            self.adapter._insert_mirror(self.conn, rows[0], more=rows[1:])

    # -- running steps ------------------------------------------------------
    overlaps = True  # execute(meanwhile=...) runs client work while the server runs the step

    def execute(self, step: Step, *, path: str | None = None, params: dict | None = None,
                savepoint: bool = False, meanwhile=None, timed: bool = False) -> int:
        """Run one step exactly as written; return the affected row count (-1 if none).

        ``savepoint=True`` (transactional sessions) wraps the step in a savepoint,
        so after a ``LockNotAvailable`` the session is still usable and the
        engine may run the step again. ``meanwhile()`` runs after the step is sent and
        before its result is read (before the step, when it goes through psycopg).
        ``timed=True`` sets ``server_s`` to the server's own time on the step (with the held
        ``BEGIN``/``SET LOCAL`` sent with it; ``run_timed``), or to None where it is not measured
        (a step with parameters).
        """
        self.server_s = None
        step = self.adapter.prepare_step(step, self, path or self.path)
        use_sp = savepoint and self.transactional
        simple = not params and not use_sp and self.adapter.simple_ok(step.content)
        if self.pipe is not None or self.rows or not simple:
            self._send_held()
        if meanwhile is not None and not simple:
            meanwhile()
            meanwhile = None
        try:
            if simple:  # one round trip: BEGIN; SET LOCAL ...; the step
                text = self._with_held(step.content)
                if not timed:
                    return self.adapter.run_simple(self.conn, text, meanwhile)
                count, self.server_s = self.adapter.run_timed(self.conn, text, meanwhile)
                return count
            if use_sp:
                self.conn.execute("SAVEPOINT mreg_step")
            cur = self.conn.execute(step.content, params) if params else self.conn.execute(step.content)
            if use_sp:
                self.conn.execute("RELEASE SAVEPOINT mreg_step")
            return cur.rowcount
        except self.adapter.psycopg.Error as exc:
            if use_sp and not self.conn.broken:
                self.conn.execute("ROLLBACK TO SAVEPOINT mreg_step")
            raise step_failed(exc, step, target=self.adapter.target.name, path=path or self.path) from None

    def run_batch(self, update: str, lo: object, hi: object, *, path: str | None = None,
                  line: int = 0) -> int:
        """Run a backfill ``update`` for the key range ``[lo, hi)``; return its row count.

        Integer bounds are written into the statement (``inline_range``), so the batch goes with the
        transaction's held ``BEGIN``/``SET LOCAL`` in one round trip; other bounds are bound as
        parameters, never formatted.
        """
        name = f"batch [{lo}, {hi})"
        if is_int_key(lo) and is_int_key(hi):
            return self.execute(Step(content=inline_range(update, lo, hi), name=name, line=line), path=path,
                                timed=True)
        return self.execute(Step(content=bind_range(update), name=name, line=line), path=path,
                            params={"lo": lo, "hi": hi}, timed=True)

    def run_batch_committing(self, update: str, lo: int, hi: int, call, *, path: str | None = None,
                             line: int = 0) -> tuple[int, float, float]:
        """Run a backfill batch over the integer range ``[lo, hi)`` and commit it, in one round trip:
        the held ``BEGIN``/``SET LOCAL``, ``SELECT call(batch)`` (``call`` wraps the batch's statement
        in a call of a function that runs it, moves the progress row on and returns the row count),
        ``COMMIT``. Return (row count, the server's seconds up to the end of the batch, its seconds on
        the ``COMMIT``), both timed by the server in the same query. On an error nothing is committed
        and the session rolls back as it ends."""
        step = self.adapter.prepare_step(Step(content=inline_range(update, lo, hi), name=f"batch [{lo}, {hi})",
                                              line=line), self, path or self.path)
        if self.pipe is not None or self.rows:
            self._send_held()
        text = self._with_held(f"SELECT {call(step.content)}, {ELAPSED};\nCOMMIT;\nSELECT {ELAPSED}")
        try:
            *_, ran, _, total = self.adapter._simple(self.conn, text, every=True)
        except self.adapter.psycopg.Error as exc:
            raise step_failed(exc, step, target=self.adapter.target.name, path=path or self.path) from None
        self.done = True
        work = float(ran.get_value(0, 1))
        return int(ran.get_value(0, 0)), work, max(0.0, float(total.get_value(0, 0)) - work)

    def hold(self, statements: list[str]) -> None:
        """``SET LOCAL`` statements for this transaction, sent with its first statement."""
        if not statements:
            return
        if self.setup is not None:
            self.setup.extend(statements)
        else:
            self._send_held()
            self.adapter.run_simple(self.conn, "; ".join(statements))

    def query(self, text: str, params: dict | tuple | None = None) -> list[dict]:
        """Rows of a read query as dicts (validation rules, checks)."""
        from psycopg.rows import dict_row

        self._send_held()
        try:
            with self.conn.cursor(row_factory=dict_row) as cur:
                cur.execute(text, params)
                return cur.fetchall() if cur.description else []
        except self.adapter.psycopg.Error as exc:
            raise step_failed(exc, Step(content=text, name="query"), target=self.adapter.target.name,
                              path=self.path) from None

    @server_errors("setting timeouts")
    def set_timeouts(self, lock_timeout_ms: int | None = None, statement_timeout_ms: int | None = None) -> None:
        """Change ``lock_timeout``/``statement_timeout`` for the rest of the session (0 = none)."""
        sets = self.adapter.timeout_sql(lock_timeout_ms, statement_timeout_ms, local=self.transactional)
        if sets:
            self._send_held()
            self.conn.execute("; ".join(sets))

    # -- the mirror ---------------------------------------------------------
    @server_errors("appending to the mirror")
    def append_mirror(self, row: MirrorRow) -> None:
        """Insert ``row`` into ``schema_versions`` (in this transaction when transactional)."""
        self.append_mirrors([row])

    @server_errors("appending to the mirror")
    def append_mirrors(self, rows: list[MirrorRow]) -> None:
        """Insert consecutive rows; the BEFORE INSERT trigger checks each in order.

        In a transactional session the INSERT goes out at once in a libpq pipeline and its
        result is read with the next statement's or the ``COMMIT``'s: a refused row raises
        ``MirrorConflict`` there.
        """
        if not rows:
            return
        if not self.transactional or self.done:
            self.adapter._insert_mirror(self.conn, rows[0], more=rows[1:])
            return
        if not self.adapter.pipeline_ok:
            self.rows.extend(rows)
            return
        if self.pipe is None:
            for n in MIRROR_CHUNKS:  # prepared before pipeline mode (PQprepare waits for its answer)
                self.adapter._mirror_statement(self.conn, n)
            self.pipe = Pipeline(self.conn)
            for statement in self.setup or ():
                self.pipe.send(statement)
            self.setup = None
        i = 0
        while i < len(rows):  # INSERTs of 16 rows, then 2, then 1 (a group commit's many rows)
            n = next(k for k in MIRROR_CHUNKS if k <= len(rows) - i)
            chunk = rows[i:i + n]
            self.pipe.send(self.adapter._mirror_item(self.conn, chunk), tag=chunk[0])
            i += n
        self.pipe.push()

    @server_errors("committing")
    def commit(self, last: str | None = None) -> None:
        """``COMMIT``; ``last`` (one statement without parameters, e.g. a backfill's progress row)
        runs just before it in the same round trip."""
        if not self.transactional or self.done:
            return
        if self.pipe is not None:  # the rows in flight, then COMMIT: their results in one round trip
            if last:
                self.pipe.send(last)
            self.pipe.send("COMMIT")
            self._finish_pipe()
        elif self.setup is not None and not self.rows and not last:  # nothing was sent: nothing to commit
            self.setup = None
        else:
            if self.rows:  # held-back mirror rows first (they follow the held set-up)
                self._send_held()
            self.adapter.run_simple(self.conn, self._with_held(f"{last};\nCOMMIT" if last else "COMMIT"))
        self.done = True

    def literal(self, value: object) -> str:
        """``value`` as an SQL literal for this connection (for statements sent without parameters)."""
        from psycopg import sql

        return sql.Literal(value).as_string(self.conn)

    @server_errors("rolling back")
    def rollback(self) -> None:
        if self.transactional and not self.done:
            self.rows = []
            self._finish_pipe(ignore_errors=True)
            if self.setup is not None:  # nothing was sent: nothing to roll back
                self.setup = None
            elif not self.conn.broken:
                self.adapter.run_simple(self.conn, "ROLLBACK")
            self.done = True


class PostgresAdapter:
    """A PostgreSQL target."""

    kind = "postgresql"
    transactional_ddl = True
    supports_concurrent_index = True
    supports_batches = True
    shared_lock_connection = False  # the lock has its own connection
    pipeline_ok = True  # a phase's mirror rows and COMMIT travel in one libpq pipeline

    def __init__(self, target: Target, url: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.target = target
        self.url = url
        self.schema = str(target.options.get("mirror_schema", "public"))
        self.connect_timeout = int(target.options.get("connect_timeout", 10))
        self._conn = None
        self._lock_conn = None
        self.notices: list[str] = []
        self.cancel_autovacuum = target.flag("cancel_blocking_autovacuum", True)
        self._lock: LockHandle | None = None
        self._mirror_ready = False
        self._in_session = False
        self._prepared_on = None  # the connection whose prepared mirror INSERTs _prepared names
        self._backfill_settings: list[tuple[str, str]] | None = None  # backfill_values(), read once
        self._prepared: dict[int, bytes] = {}

    # -- connections --------------------------------------------------------
    def _connect(self, purpose: str):
        try:
            return self.psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout,
                                        application_name=f"mreg {purpose}"[:63], **self.connect_kwargs())
        except self.psycopg.Error as exc:
            raise DatabaseError(
                f"cannot connect to target {self.target.name} ({redact_url(self.url)}): {str(exc).strip()}",
                hint=self.unreachable_hint(), target=self.target.name, url=redact_url(self.url),
                error_class=type(exc).__name__, server_message=str(exc).strip(),
            ) from None

    def connect_kwargs(self) -> dict:
        """No automatic preparation by psycopg: after preparing a statement it has run five times (a
        backfill's UPDATE), psycopg answers every ``ROLLBACK`` with ``DEALLOCATE ALL``, which would also
        drop the mirror INSERTs this adapter prepares itself; the next ledger event (the failure's own
        ``apply_failed``) then fails with "prepared statement … does not exist"."""
        return {"prepare_threshold": None}

    def unreachable_hint(self) -> str:
        if self.target.is_dev:
            return "start the development servers with `mreg dev up`"
        return (f"check that the server is running and that targets.{self.target.name}.url "
                "(or MREG_TARGET_<NAME>_URL) names the right host, port, database and user")

    def connect(self) -> None:
        """Open the main connection; ``DatabaseError`` naming the target if unreachable."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None and self._lock is not None and self.shared_lock_connection:
                self._lock_lost()  # the lock lived on this connection: never reconnect silently
            self._conn = self._connect("main")
            self._mirror_ready = False
            self.after_connect(self._conn)

    def after_connect(self, conn) -> None:
        """Hook run on every new main connection (TimescaleDB resets pglite's shared session).

        From PostgreSQL 14 the server checks every second, during a long statement, that the
        client is still there: a killed operator's ``CREATE INDEX`` or backfill is cancelled
        (and its locks freed) at once instead of running to the end.
        """
        if conn.info.server_version >= 140000:
            conn.execute("SET client_connection_check_interval = 1000")

    @property
    def conn(self):
        self.connect()
        return self._conn

    def close(self) -> None:
        """Close every connection (releases the lock if still held)."""
        for c in (self._conn, self._lock_conn):
            if c is not None and not c.closed:
                c.close()
        self._conn = self._lock_conn = None
        self._lock = None

    @server_errors("reading the server version")
    def server_version(self) -> str:
        return str(self.conn.execute("SHOW server_version").fetchone()[0])

    def ident(self, name: str) -> str:
        from psycopg import sql

        return sql.Identifier(name).as_string(self.conn)

    @property
    def mirror_schema(self) -> str:
        return self.ident(self.schema)

    # -- locks --------------------------------------------------------------
    def _lock_ids(self) -> tuple[int, int]:
        return lock_key(f"mreg:{self.schema}")

    def _lock_connection(self):
        if self.shared_lock_connection:
            return self.conn
        if self._lock_conn is None or self._lock_conn.closed or self._lock_conn.broken:
            self._lock_conn = self._connect("lock")
            # If the operator's machine vanishes (no FIN ever comes), the server notices within
            # about a minute instead of two hours, and the lock is released (ignored on Unix sockets).
            self._lock_conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; "
                                    "SET tcp_keepalives_count = 3")
        return self._lock_conn

    @server_errors("taking the lock")
    def acquire_lock(self, owner: str, timeout_s: float) -> LockHandle:
        """Take the target's session-level advisory lock, polling until ``timeout_s``.

        Raises ``LockTimeout`` naming the holder. The lock lives as long as the
        lock connection: a crashed holder's lock is released by the server.
        """
        k1, k2 = self._lock_ids()
        conn = self._lock_connection()
        deadline = time.monotonic() + max(timeout_s, 0)
        while True:
            got = conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (k1, k2)).fetchone()[0]
            if got:
                break
            if time.monotonic() >= deadline:
                holder = self.lock_holder() or "an unknown session"
                raise LockTimeout(
                    f"target {self.target.name} is locked by {holder}; gave up after {timeout_s:g}s",
                    hint="wait for that operator to finish (or raise --lock-timeout); if it crashed, its "
                         "connection ends and the lock is released by the server",
                    target=self.target.name, holder=holder,
                )
            time.sleep(LOCK_POLL_S)
        pid = conn.info.backend_pid
        conn.execute(f"SET application_name = {self._literal(('mreg lock: ' + owner)[:63])}")
        self._record_owner(conn, k2, owner, pid)
        self._lock = LockHandle(owner=owner, key=k2, pid=pid)
        return self._lock

    def _literal(self, text: str) -> str:
        from psycopg import sql

        return sql.Literal(text).as_string(self.conn)

    def _record_owner(self, conn, key: int, owner: str, pid: int) -> None:
        s = self.mirror_schema
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.mreg_lock_owner (lock_key BIGINT PRIMARY KEY, "
                     "owner TEXT NOT NULL, pid INTEGER NOT NULL, acquired_at TIMESTAMP WITH TIME ZONE "
                     "NOT NULL DEFAULT NOW(), lease_until TIMESTAMP WITH TIME ZONE)")
        conn.execute(f"INSERT INTO {s}.mreg_lock_owner (lock_key, owner, pid) VALUES (%s, %s, %s) "
                     "ON CONFLICT (lock_key) DO UPDATE SET owner = EXCLUDED.owner, pid = EXCLUDED.pid, "
                     "acquired_at = NOW()", (key, owner, pid))

    @server_errors("releasing the lock")
    def release_lock(self, handle: LockHandle) -> None:
        """Release the lock (idempotent; a lost lock connection has released it already)."""
        conn = self._lock_conn if not self.shared_lock_connection else self._conn
        if conn is None or conn.closed or conn.broken:
            self._lock = None
            return
        k1, k2 = self._lock_ids()
        conn.execute(f"DELETE FROM {self.mirror_schema}.mreg_lock_owner WHERE lock_key = %s AND pid = %s",
                     (k2, handle.pid))
        conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", (k1, k2))
        conn.execute("SET application_name = 'mreg lock'")
        self._lock = None

    @property
    def lock_pid(self) -> int | None:
        """The server process of the connection holding this adapter's lock: work the server runs
        on its own (a backfill's run of batches) stops once that process ends. None without the lock,
        or when the main connection holds it (``shared_lock_connection``: that work runs on the lock's
        own connection)."""
        return self._lock.pid if self._lock is not None and not self.shared_lock_connection else None

    def lock_alive(self) -> bool:
        """True while this adapter still holds its lock (its lock connection answers)."""
        conn = self._lock_conn if not self.shared_lock_connection else self._conn
        if self._lock is None or conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except self.psycopg.OperationalError:
            return False

    def check_lock(self) -> None:
        """Raise ``LockLost`` if this adapter took the lock and its lock connection has since ended.

        Cheap: a zero-timeout poll of the lock connection's socket; only when the server has sent
        something unprompted (a termination notice) is the connection probed with a query.
        """
        if self._lock is None:
            return
        if self.shared_lock_connection:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._lock_lost()
            return
        conn = self._lock_conn
        lost = conn is None or conn.closed or conn.broken
        if not lost:
            try:
                readable, _, _ = select.select([conn.fileno()], [], [], 0)
            except (OSError, ValueError):
                readable = [True]
            lost = bool(readable) and not self.lock_alive()
        if lost:
            self._lock_lost()

    def _lock_lost(self) -> None:
        owner = self._lock.owner if self._lock else "this operator"
        self._lock = None
        raise LockLost(
            f"target {self.target.name}: the connection holding the lock for {owner} ended; "
            "the lock is gone and another operator may have taken it",
            hint="nothing more was run; run the command again (it takes the lock anew)",
            target=self.target.name, owner=owner,
        )

    @server_errors("reading the lock holder")
    def lock_holder(self) -> str | None:
        """Who holds the lock: ``owner (pid N, since T)``, or None when it is free."""
        k1, k2 = self._lock_ids()
        rows = self.conn.execute(
            "SELECT l.pid, a.application_name, a.backend_start FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (k1, k2),
        ).fetchall()
        if not rows:
            return None
        pid, app, started = rows[0]
        owner, since = None, started
        exists = self.conn.execute("SELECT to_regclass(%s)", (f"{self.mirror_schema}.mreg_lock_owner",)).fetchone()[0]
        if exists:
            rec = self.conn.execute(f"SELECT owner, acquired_at FROM {self.mirror_schema}.mreg_lock_owner "
                                    "WHERE lock_key = %s AND pid = %s", (k2, pid)).fetchone()
            if rec:
                owner, since = rec
        if owner is None:
            owner = (app or "").removeprefix("mreg lock: ") or "a session"
        when = f", since {since:%Y-%m-%d %H:%M:%S %Z}" if since else ""
        return f"{owner} (pid {pid}{when})"

    # -- the mirror ---------------------------------------------------------
    @server_errors("creating the mirror tables")
    def ensure_mirror(self) -> None:
        """Create the mirror tables, functions and triggers if missing (idempotent, concurrency-safe)."""
        if self._mirror_ready:
            return
        conn = self.conn
        names = [t[0] for t in MIRROR_TRIGGERS]
        state = conn.execute(MIRROR_OBJECTS_QUERY, {"s": self.schema, "triggers": names,
                                                    "format": MIRROR_FORMAT}).fetchone()
        triggers, columns, lock_table, current = state
        if columns and "leaf" not in columns:
            raise ForeignVersionTable(
                f"target {self.target.name}: {self.schema}.schema_versions exists but is not an mreg mirror "
                "(it has no origin/seq/leaf columns)",
                hint=f"import it with `mreg baseline --target {self.target.name} --from schema_versions`, "
                     "or set options.mirror_schema to another schema",
                target=self.target.name, schema=self.schema,
            )
        if triggers == len(names) and columns and lock_table and current:
            self._mirror_ready = True
            return
        s = self.mirror_schema
        k1, _ = self._lock_ids()
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s::int4, 0)", (k1,))
            conn.execute(MIRROR_DDL.format(s=s, format=MIRROR_FORMAT))
            for name, table, events, level, func in MIRROR_TRIGGERS:
                exists = conn.execute(
                    "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND t.tgname = %s",
                    (self.schema, name)).fetchone()
                if not exists:
                    conn.execute(f"CREATE TRIGGER {name} {events} ON {s}.{table} "
                                 f"FOR EACH {level} EXECUTE FUNCTION {s}.{func}()")
            conn.execute("COMMIT")
        except BaseException:
            if not conn.broken:
                conn.execute("ROLLBACK")
            raise
        self._mirror_ready = True

    def _insert_mirror(self, conn, row: MirrorRow, more: list[MirrorRow] = ()) -> None:
        """INSERT ``row`` (and ``more``) as one prepared statement; the trigger checks each row in order."""
        try:
            check_result(conn, conn.pgconn.exec_prepared(*self._mirror_item(conn, [row, *more])))
        except self.psycopg.Error as exc:
            raise self._mirror_error(exc, row) from None

    def _mirror_item(self, conn, rows: list[MirrorRow]) -> tuple:
        """(prepared statement, parameters, formats) inserting ``rows``."""
        enc = conn.info.encoding
        return (self._mirror_statement(conn, len(rows)), [p for r in rows for p in raw_mirror_params(r, enc)],
                RAW_MIRROR_FORMATS * len(rows))

    def _mirror_error(self, exc, row: MirrorRow) -> Exception:
        """``MirrorConflict`` for a row the mirror's unique key or trigger refused; else ``exc``."""
        if exc.sqlstate not in ("23505", SQLSTATE_NOT_LINEAR):
            return exc
        msg = (exc.diag.message_primary or str(exc)).removeprefix("mreg: ")
        return MirrorConflict(
            f"target {self.target.name}: mirror row {row.origin} seq {row.seq} refused: {msg}",
            hint="another operator appended to this log; run `mreg sync` and try again",
            target=self.target.name, origin=row.origin, seq=row.seq, sqlstate=exc.sqlstate,
        )

    def _mirror_statement(self, conn, n: int) -> bytes:
        """The name of the prepared INSERT of ``n`` mirror rows on ``conn`` (prepared on first use)."""
        if self._prepared_on is not conn:
            self._prepared_on, self._prepared = conn, {}
        name = self._prepared.get(n)
        if name is None:
            text = insert_mirror_sql(self.mirror_schema, n)
            name = f"mreg_mirror_{n}_{hashlib.sha256(text.encode()).hexdigest()[:12]}".encode()
            try:
                check_result(conn, conn.pgconn.prepare(name, text.encode(conn.info.encoding)))
            except self.psycopg.errors.DuplicatePreparedStatement:
                pass  # the same text under the same name (a shared pglite session)
            self._prepared[n] = name
        return name

    def simple_ok(self, text: str) -> bool:
        """Whether a step may go through libpq's ``PQexec`` (not ``COPY``, which needs psycopg's copy())."""
        return not _COPY.search(text)

    def run_simple(self, conn, text: str, meanwhile=None) -> int:
        """Run ``text`` (statements without parameters) in one simple query; the last row count, or -1.

        ``meanwhile()`` runs once the query is sent, while the server works; the results are
        read after it (also when it raises), so the connection is always left idle.
        """
        return check_result(conn, self._simple(conn, text, meanwhile)[-1])

    def run_timed(self, conn, text: str, meanwhile=None) -> tuple[int, float]:
        """``run_simple``, and the seconds the server spent on ``text``: from the query's arrival to
        the end of its last statement (``clock_timestamp() - statement_timestamp()``, read by a
        ``SELECT`` sent in the same query), without the round trip and the client's own delays."""
        *_, counted, timing = self._simple(conn, text + SERVER_TIME, meanwhile, every=True)
        return check_result(conn, counted), float(timing.get_value(0, 0))

    def _simple(self, conn, text: str, meanwhile=None, every: bool = False) -> list:
        """Send ``text`` in one simple query; its results (the last one only unless ``every``). The
        first error raises, except in the one result of ``PQexec`` (``run_simple`` checks it)."""
        pg = conn.pgconn
        data = text.encode(conn.info.encoding)
        watch = self._autovacuum_watch(conn)
        if meanwhile is None and watch is None and not every:
            return [pg.exec_(data)]
        pg.send_query(data)
        while pg.flush():  # non-blocking connection: wait until the query is on its way
            select.select([], [pg.socket], [], 1.0)
        try:
            if meanwhile is not None:
                meanwhile()
            if watch is not None:
                self._wait_watching(pg, watch)
        finally:
            results, error = [], None
            while (res := pg.get_result()) is not None:
                results.append(res)
                if error is None and res.status == FATAL_ERROR:
                    error = res
        if not results:
            raise self.psycopg.OperationalError(pg.get_error_message(conn.info.encoding) or "no result")
        if error is not None:
            check_result(conn, error)  # raises
        return results if every else results[-1:]

    # -- autovacuum in the way ------------------------------------------------
    def _autovacuum_watch(self, conn):
        """The connection to look from when a statement on ``conn`` waits for a lock: the lock's own
        connection (idle between its checks), when there is one and the option allows; else None."""
        if not self.cancel_autovacuum or self.shared_lock_connection or conn is not self._conn:
            return None
        lc = self._lock_conn
        return None if lc is None or lc.closed or lc.broken else lc

    def _wait_watching(self, pg, watch) -> None:
        """Wait for the statement in flight; after ``AUTOVACUUM_GRACE_S`` of waiting, and then every
        ``AUTOVACUUM_POLL_S``, ask who blocks it and cancel an autovacuum that alone does.

        A statement that wants a strong lock (``ALTER TABLE``) behind an autovacuum of the table
        waits, and every session that wants the table after it queues behind it: PostgreSQL itself
        cancels such an autovacuum, but only after ``deadlock_timeout`` (1 s by default), a second
        in which the application's queries on the table wait. Not an autovacuum that prevents
        transaction-id wraparound (PostgreSQL does not cancel those either), and nothing when any other
        session blocks too. Cancelling needs a superuser (or, on PostgreSQL 18, the role
        ``pg_signal_autovacuum_worker``); without it PostgreSQL's own cancellation remains.
        """
        pid = None
        step = AUTOVACUUM_GRACE_S
        while pg.is_busy():
            ready, _, _ = select.select([pg.socket], [], [], step)
            if ready:
                pg.consume_input()
                continue
            step = AUTOVACUUM_POLL_S
            if pid is None:
                pid = pg.backend_pid
            if not self._cancel_blocking_autovacuum(watch, pid):
                return  # cannot cancel (no privilege, the lock connection failed): just wait

    def _cancel_blocking_autovacuum(self, watch, pid: int) -> bool:
        """Cancel the autovacuum workers that alone block backend ``pid``; False when this role may not
        (then the engine stops asking)."""
        try:
            rows = watch.execute(
                "SELECT a.pid, a.backend_type, a.query FROM pg_stat_activity a "
                "WHERE a.pid = ANY(pg_blocking_pids(%s))", (pid,)).fetchall()
            if not rows or any(bt != "autovacuum worker" or "wraparound" in (q or "") for _, bt, q in rows):
                return True
            for av_pid, _, query in rows:
                if watch.execute("SELECT pg_cancel_backend(%s)", (av_pid,)).fetchone()[0]:
                    self.notices.append(f"cancelled {query.strip() or 'an autovacuum'} (pid {av_pid}): it "
                                        f"held up a statement of the migration, and every query queued "
                                        f"behind that")
            return True
        except self.psycopg.errors.InsufficientPrivilege:
            self.cancel_autovacuum = False
            return False
        except self.psycopg.Error:
            return False

    def take_notices(self) -> list[str]:
        """What the adapter did on its own since the last call (e.g. an autovacuum it cancelled)."""
        out, self.notices = self.notices, []
        return out

    @server_errors("appending to the mirror")
    def append_mirror(self, row: MirrorRow) -> None:
        """Append ``row`` in its own transaction (sessions have their own ``append_mirror``)."""
        self.ensure_mirror()
        self._insert_mirror(self.conn, row)

    @server_errors("reading the mirror")
    def mirror_rows(self, origin: str, start: int = 0) -> list[MirrorRow]:
        """Rows of ``origin`` with ``seq >= start`` in ``seq`` order, every column read from the table."""
        self.ensure_mirror()
        recs = self.conn.execute(SELECT_MIRROR.format(s=self.mirror_schema), (origin, start)).fetchall()
        return [row_from_record(r) for r in recs]

    @server_errors("reading the mirror")
    def mirror_origins(self) -> list[str]:
        """Every origin that has rows in this target's mirror."""
        self.ensure_mirror()
        return [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT origin FROM {self.mirror_schema}.schema_versions ORDER BY origin").fetchall()]

    @server_errors("reading the checkpoint")
    def mirror_checkpoint(self, origin: str) -> str | None:
        self.ensure_mirror()
        rec = self.conn.execute(f"SELECT note FROM {self.mirror_schema}.schema_checkpoints WHERE origin = %s",
                                (origin,)).fetchone()
        return rec[0] if rec else None

    @server_errors("writing the checkpoint")
    def write_checkpoint(self, origin: str, size: int, note: str) -> None:
        """Store the checkpoint for ``origin``; a size below the stored one raises ``CheckpointRegression``."""
        self.ensure_mirror()
        try:
            self.conn.execute(UPSERT_CHECKPOINT.format(s=self.mirror_schema), (origin, size, note))
        except self.psycopg.Error as exc:
            if exc.sqlstate != SQLSTATE_CHECKPOINT_DOWN:
                raise
            stored = self.conn.execute(f"SELECT size FROM {self.mirror_schema}.schema_checkpoints "
                                       "WHERE origin = %s", (origin,)).fetchone()
            raise CheckpointRegression(
                f"target {self.target.name}: checkpoint of {origin} may not go down "
                f"(stored size {stored[0] if stored else '?'}, offered {size})",
                hint="the catalog is behind the target; run `mreg sync` before checkpointing",
                target=self.target.name, origin=origin, expected=stored[0] if stored else None, found=size,
            ) from exc

    # -- sessions -----------------------------------------------------------
    def timeout_sql(self, lock_timeout_ms: int | None, statement_timeout_ms: int | None, *, local: bool) -> list[str]:
        scope = "SET LOCAL" if local else "SET"
        out = []
        if lock_timeout_ms is not None:
            out.append(f"{scope} lock_timeout = {int(lock_timeout_ms)}")
        if statement_timeout_ms is not None:
            out.append(f"{scope} statement_timeout = {int(statement_timeout_ms)}")
        return out

    def prepare_step(self, step: Step, session: PgSession, path: str | None) -> Step:
        """The step to send: PostgreSQL runs every step as written (TimescaleDB refuses some)."""
        return step

    def _tenant_sql(self, tenant: str, local: bool) -> str:
        found = self.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (tenant,)).fetchone()
        if not found:
            raise UnknownTenant(
                f"target {self.target.name} has no schema for tenant {tenant!r}",
                hint=f"create it (CREATE SCHEMA {self.ident(tenant)}) or remove the tenant from "
                     f"targets.{self.target.name}.tenants", target=self.target.name, tenant=tenant,
            )
        scope = "SET LOCAL" if local else "SET"
        return f"{scope} search_path = {self.ident(tenant)}, public"

    @contextmanager
    def session(self, transactional: bool = True, *, tenant: str | None = None,
                settings: Settings | None = None, lock_timeout_ms: int | None = None,
                statement_timeout_ms: int | None = None) -> Iterator[PgSession]:
        """A session on the main connection.

        ``settings`` supplies ``lock_timeout``/``timeout`` (ms) unless given
        explicitly; ``tenant`` sets ``search_path`` to that schema first.
        """
        if self._in_session:
            raise DatabaseError(f"target {self.target.name}: a session is already open on this adapter",
                                hint="finish (commit or leave) the open session first")
        if settings is not None:
            lock_timeout_ms = settings.lock_timeout if lock_timeout_ms is None else lock_timeout_ms
            statement_timeout_ms = settings.timeout if statement_timeout_ms is None else statement_timeout_ms
        self.check_lock()
        conn = self.conn  # reconnects after a lost connection
        setup = self.timeout_sql(lock_timeout_ms, statement_timeout_ms, local=transactional)
        if tenant:
            setup.append(self._tenant_sql(tenant, local=transactional))
        if transactional:
            setup.insert(0, "BEGIN")
        # Held back and sent with the first statement: PostgreSQL 13 and later apply a SET LOCAL
        # statement_timeout to the later statements of the same simple query (12 did not).
        hold = transactional and conn.info.server_version >= 130000
        sess = PgSession(self, conn, transactional, setup if hold else None)
        self._in_session = True
        saved = None
        try:
            if setup and not transactional:  # SET is session-wide: put the old values back afterwards
                saved = conn.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
                                     "current_setting('search_path')").fetchone()
            if setup and not hold:
                try:
                    conn.execute("; ".join(setup))
                except self.psycopg.Error as exc:
                    raise db_error(exc, self.target.name, "starting a session") from None
            yield sess
        except BaseException:
            if transactional and not sess.done:
                try:
                    sess._finish_pipe(ignore_errors=True)
                except self.psycopg.Error:
                    pass  # the connection is gone: the server rolls the transaction back
                if sess.setup is None and not conn.broken and not conn.closed:  # else nothing was sent
                    conn.execute("ROLLBACK")
                sess.done = True
            raise
        else:
            if transactional and not sess.done:
                sess.rollback()
        finally:
            self._in_session = False
            if saved is not None and not conn.broken and not conn.closed:
                conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false),"
                             " set_config('search_path', %s, false)", saved)

    # -- batched backfill ---------------------------------------------------
    def _table(self, table: str) -> str:
        return ".".join(self.ident(part) for part in table.split("."))

    def backfill_settings(self) -> list[str]:
        """``SET LOCAL`` statements for a backfill batch's transaction (``backfill_values``)."""
        return [f"SET LOCAL {name} = {value}" for name, value in self.backfill_values()]

    def backfill_values(self) -> list[tuple[str, str]]:
        """The settings of a backfill batch's transaction as (name, value), each where this role may set
        it (a superuser, or ``GRANT SET ON PARAMETER`` on PostgreSQL 15+); read once per adapter, an
        error or no privilege gives none.

        - ``wal_init_zero = off`` (target option ``backfill_sparse_wal``, default true), when the
          server zero-fills: a backfill writes WAL faster than a server that has been quiet keeps
          16 MB WAL files ready (``min_wal_size``, the last checkpoints' distance), and each new file
          is then written whole with zeros and flushed while its creator holds the WAL write lock —
          15–20 ms in which every commit of the application waits, once per 16 MB (every ~0.3 s
          of a full-speed backfill on the benchmark). The batch that reaches a new file creates it
          sparse instead; WAL correctness does not rest on the zeros (PostgreSQL reads a file's
          records by their headers and checksums). Files already there are recycled as before.
        - ``wal_compression`` (option ``backfill_wal_compression``, default false; lz4 where the
          server has it, else pglz), when the server does not compress already: a batch rewrites
          whole pages, and the first change of a page after a checkpoint logs the page whole.
        - ``backend_flush_after = 32`` (option ``backfill_flush_writes``, default true; any role may
          set it), when the server's is 0 (its default): the pages this backend writes out of
          shared buffers (a backfill evicts the table's and the index's pages by the thousand) are
          handed to the kernel's writeback every 256 kB, instead of staying dirty in the page cache
          until the kernel writes a file's dirty pages all at once (``vm.dirty_expire_centisecs``
          after the first) — on the benchmark ~200 MB in 0.3 s, a stall of every commit of the
          application.
        """
        if self._backfill_settings is None:
            self._backfill_settings = []
            wanted = {"wal_init_zero": self.target.flag("backfill_sparse_wal", True),
                      "wal_compression": self.target.flag("backfill_wal_compression", False),
                      "backend_flush_after": self.target.flag("backfill_flush_writes", True)}
            names = [n for n, on in wanted.items() if on]
            if not names:
                return self._backfill_settings
            try:
                with self.conn.transaction():
                    rows = self.conn.execute(
                        "SELECT name, setting, enumvals, context = 'user' OR (SELECT rolsuper FROM pg_roles "
                        "WHERE rolname = current_user) FROM pg_settings WHERE name = ANY(%s) ORDER BY name DESC",
                        (names,)).fetchall()
                    allowed = {name: bool(may) for name, _, _, may in rows}
                    if self.conn.info.server_version >= 150000:
                        for name in allowed:
                            allowed[name] = allowed[name] or self.conn.execute(
                                "SELECT has_parameter_privilege(%s, 'SET')", (name,)).fetchone()[0]
            except self.psycopg.Error:
                return self._backfill_settings
            for name, setting, values, _ in rows:
                if not allowed[name]:
                    continue
                if name == "wal_init_zero" and setting == "on":
                    self._backfill_settings.append(("wal_init_zero", "off"))
                elif name == "wal_compression" and setting == "off":
                    method = "lz4" if values and "lz4" in values else "pglz"
                    self._backfill_settings.append(("wal_compression", method))
                elif name == "backend_flush_after" and setting == "0":
                    self._backfill_settings.append(("backend_flush_after", str(BACKFILL_FLUSH_AFTER)))
        return self._backfill_settings

    @server_errors("reading the backfill range")
    def backfill_range(self, table: str, key: str) -> tuple[object, object] | None:
        """``(min, max)`` of ``key`` in ``table``, or None when the table is empty."""
        lo, hi = self.conn.execute(f"SELECT min({self.ident(key)}), max({self.ident(key)}) "
                                   f"FROM {self._table(table)}").fetchone()
        return None if lo is None else (lo, hi)

    # -- shadow databases (dry-run, drift) ------------------------------------
    def create_shadow(self, tag: str = "") -> str:
        """Create an empty throw-away database beside the target's; return its URL.

        Its name is ``mreg_shadow_[<tag>_]<hex>`` (``tag``: lower-case letters and digits).
        """
        name = SHADOW_PREFIX + (f"{tag}_" if tag else "") + secrets.token_hex(6)
        try:
            self.conn.execute(f"CREATE DATABASE {self.ident(name)}")
        except self.psycopg.Error as exc:
            raise ShadowUnavailable(
                f"target {self.target.name}: cannot create a shadow database: {str(exc).strip()}",
                hint="grant the target's user CREATEDB, or run the dry run on a server where it has it",
                target=self.target.name,
            ) from None
        return with_dbname(self.url, name)

    @server_errors("dropping the shadow database")
    def drop_shadow(self, url: str) -> None:
        """Drop a shadow database made by ``create_shadow`` (refuses any other database)."""
        name = dbname_of(url)
        if not name.startswith(SHADOW_PREFIX):
            raise ShadowUnavailable(f"refusing to drop {name!r}: not an mreg shadow database",
                                    hint=f"shadow databases are named {SHADOW_PREFIX}<hex>", database=name)
        self.conn.execute(f"DROP DATABASE IF EXISTS {self.ident(name)} WITH (FORCE)")


def with_dbname(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (URL or key=value conninfo)."""
    if "://" in url:
        p = urlsplit(url)
        return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=name)


def dbname_of(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(url).get("dbname") or "")


def default_owner() -> str:
    """``user@host pid N``: how an operator is named in lock messages."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"
