"""The TimescaleDB adapter: PostgreSQL plus hypertable awareness.

On a real TimescaleDB server it behaves like the PostgreSQL adapter (advisory
lock on its own connection, the same mirror), and adds the TimescaleDB rules:

- ``CREATE INDEX CONCURRENTLY`` on a hypertable is refused before it is sent
  (TimescaleDB does not support it): write
  ``CREATE INDEX … WITH (timescaledb.transaction_per_chunk)`` in a ``txmode: none`` file;
- ``transaction_per_chunk`` indexes, continuous aggregates ``WITH DATA`` and
  ``CALL refresh_continuous_aggregate(…)`` are refused inside a transactional
  session with a hint (the server would refuse them too, with less help);
- ``CREATE EXTENSION IF NOT EXISTS timescaledb`` is ensured on connect.

On the development server (pglite with TimescaleDB, served one connection at a
time by pglite-socket, detected by its Emscripten ``version()`` or forced with the
target option ``single_connection``), everything shares ONE connection and:

- every client inherits the one backend session: on connect the adapter rolls
  back a transaction a crashed client left open and runs ``DISCARD ALL``, then
  sets ``search_path`` to ``"$user", public`` (pglite starts with ``pg_catalog``);
- the lock is an owner row in ``mreg_lock_owner`` (owner, token, lease), not an
  advisory lock (which every client would share). A row whose token is not ours
  belonged to a client whose connection has ended (only one connection exists),
  so it is taken over at once; a row with an unexpired lease would otherwise be
  honoured. A second client waits in pglite-socket's queue; when its connect
  times out it gets ``ServerBusy`` (a ``LockTimeout``);
- multi-transaction utility commands (``CONCURRENTLY``, ``transaction_per_chunk``)
  break pglite ("tuple concurrently updated"): with a single connection there is
  nobody to protect, so they run in their plain form (same index, built at once);
  hypertables still refuse ``CONCURRENTLY`` as on any server;
- there is no second database, so ``create_shadow`` raises ``ShadowUnavailable``.
"""

from __future__ import annotations

import gc
import os
import re
import secrets
import time
from urllib.parse import urlsplit

from registry.config import Target, redact_url
from registry.errors import DatabaseError
from registry.model import Step
from registry.targets.base import LockTimeout
from registry.targets.postgres import PgSession, PostgresAdapter
from registry.targets.sqlcommon import LockHandle, ShadowUnavailable, StepRefused, server_errors

LOOPBACK = ("127.0.0.1", "localhost", "::1", "")
_TOUCHY = re.compile(r"concurrently|transaction_per_chunk|timescaledb\.continuous|refresh_continuous_aggregate",
                     re.IGNORECASE)


class ServerBusy(LockTimeout):
    """The single-connection TimescaleDB server is serving another client (it may hold the lock)."""


class TimescaleAdapter(PostgresAdapter):
    """A TimescaleDB target (a real server, or pglite's single-connection dev server)."""

    kind = "timescale"
    transactional_ddl = True
    supports_concurrent_index = False  # not on hypertables; plain tables still take CONCURRENTLY
    supports_batches = True

    def __init__(self, target: Target, url: str) -> None:
        super().__init__(target, url)
        forced = target.options.get("single_connection")
        self.single_connection: bool | None = None if forced is None else bool(forced)
        self.lease_s = float(target.options.get("lock_lease_s", 60))
        self._token = secrets.token_hex(8)
        self.recovered_from: str | None = None  # owner of a dead client's lock row we took over

    @property
    def shared_lock_connection(self) -> bool:  # type: ignore[override]
        if self.single_connection is None:
            self.connect()
        return bool(self.single_connection)

    # -- connections --------------------------------------------------------
    def connect_kwargs(self) -> dict:
        kw: dict = {"prepare_threshold": None}  # pglite shares one session: no named prepared statements
        if "sslmode" not in self.url and (urlsplit(self.url).hostname or "") in LOOPBACK:
            kw["sslmode"] = "disable"  # pglite-socket answers SSL negotiation with garbage
        return kw

    def _connect(self, purpose: str, timeout: float | None = None):
        saved = self.connect_timeout
        if timeout is not None:
            self.connect_timeout = max(2, int(timeout + 0.999))
        started = time.monotonic()
        try:
            return super()._connect(purpose)
        except DatabaseError as exc:
            text = str(exc.data.get("server_message", "")).lower()
            waited = time.monotonic() - started
            if exc.data.get("error_class") == "ConnectionTimeout" or ("closed the connection" in text and waited >= 1):
                # psycopg keeps the abandoned socket open until its connection object is collected;
                # close it now, or pglite-socket would later hand its only connection to a dead client
                cause, exc.__context__ = exc.__context__, None
                if cause is not None:
                    cause.__traceback__ = None
                del cause
                gc.collect()
                raise ServerBusy(
                    f"target {self.target.name} ({redact_url(self.url)}) did not accept a connection within "
                    f"{waited:.0f}s: the TimescaleDB dev server serves one connection at a time and another "
                    "client (an operator holding the lock, a test, a psql session) holds it",
                    hint="wait for the other mreg command to finish or close the other client; "
                         "`mreg status` shows the holder once the server is free",
                    target=self.target.name, holder="the client holding the only connection",
                ) from None
            raise
        finally:
            self.connect_timeout = saved

    def after_connect(self, conn) -> None:
        if self.single_connection is None:
            version = conn.execute("SELECT version()").fetchone()[0]
            self.single_connection = "emscripten" in version.lower()
        if self.single_connection:
            if conn.info.transaction_status != 0:  # a crashed client's open transaction
                conn.execute("ROLLBACK")
            conn.execute("DISCARD ALL")
            conn.execute('SET search_path TO "$user", public')
        super().after_connect(conn)
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except self.psycopg.Error as exc:
            raise DatabaseError(
                f"target {self.target.name}: the timescaledb extension is not available: {str(exc).strip()}",
                hint="install TimescaleDB on the server (shared_preload_libraries = 'timescaledb') or "
                     "declare the target as type postgresql", target=self.target.name,
            ) from None

    # -- the lock on the single-connection server -----------------------------
    @server_errors("taking the lock")
    def acquire_lock(self, owner: str, timeout_s: float) -> LockHandle:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect("main", timeout=timeout_s)
            self._mirror_ready = False
            self.after_connect(self._conn)
        if not self.single_connection:
            return super().acquire_lock(owner, timeout_s)
        conn, s = self._conn, self.mirror_schema
        _, key = self._lock_ids()
        conn.execute("BEGIN")
        try:
            self._owner_table(conn)
            row = conn.execute(f"SELECT owner, token, lease_until > NOW() FROM {s}.mreg_lock_owner "
                               "WHERE lock_key = %s FOR UPDATE", (key,)).fetchone()
            recovered = row[0] if row and row[1] != self._token else None
            conn.execute(
                f"INSERT INTO {s}.mreg_lock_owner (lock_key, owner, pid, token, lease_until) "
                "VALUES (%s, %s, %s, %s, NOW() + make_interval(secs => %s)) ON CONFLICT (lock_key) DO UPDATE "
                "SET owner = EXCLUDED.owner, pid = EXCLUDED.pid, token = EXCLUDED.token, "
                "lease_until = EXCLUDED.lease_until, acquired_at = NOW()",
                (key, owner, os.getpid(), self._token, self.lease_s))
            conn.execute("COMMIT")
        except BaseException:
            if not conn.broken:
                conn.execute("ROLLBACK")
            raise
        self._lock = LockHandle(owner=owner, key=key, pid=os.getpid())
        self.recovered_from = recovered  # a crashed holder's row we took over, for the record
        return self._lock

    def _owner_table(self, conn) -> None:
        s = self.mirror_schema
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.mreg_lock_owner (lock_key BIGINT PRIMARY KEY, "
                     "owner TEXT NOT NULL, pid INTEGER NOT NULL, acquired_at TIMESTAMP WITH TIME ZONE "
                     "NOT NULL DEFAULT NOW(), lease_until TIMESTAMP WITH TIME ZONE)")
        conn.execute(f"ALTER TABLE {s}.mreg_lock_owner ADD COLUMN IF NOT EXISTS token TEXT")

    @server_errors("renewing the lock's lease")
    def renew_lease(self) -> None:
        """Push the lock's lease forward (the engine may call it between migrations)."""
        if self.single_connection and self._lock is not None and self.conn.info.transaction_status == 0:
            self.conn.execute(f"UPDATE {self.mirror_schema}.mreg_lock_owner SET lease_until = NOW() + "
                              "make_interval(secs => %s) WHERE lock_key = %s AND token = %s",
                              (self.lease_s, self._lock.key, self._token))

    @server_errors("releasing the lock")
    def release_lock(self, handle: LockHandle) -> None:
        if not self.single_connection:
            return super().release_lock(handle)
        conn = self._conn
        self._lock = None
        if conn is None or conn.closed or conn.broken:
            return
        if conn.info.transaction_status != 0:
            conn.execute("ROLLBACK")
        conn.execute(f"DELETE FROM {self.mirror_schema}.mreg_lock_owner WHERE lock_key = %s AND token = %s",
                     (handle.key, self._token))

    def lock_alive(self) -> bool:
        if not self.single_connection:
            return super().lock_alive()
        return self._lock is not None and self._conn is not None and not self._conn.closed \
            and not self._conn.broken

    @server_errors("reading the lock holder")
    def lock_holder(self) -> str | None:
        if not self.single_connection:
            return super().lock_holder()
        s = self.mirror_schema
        if not self.conn.execute("SELECT to_regclass(%s)", (f"{s}.mreg_lock_owner",)).fetchone()[0]:
            return None
        self._owner_table(self.conn)
        row = self.conn.execute(f"SELECT owner, pid, acquired_at, lease_until, token FROM {s}.mreg_lock_owner "
                                "WHERE lock_key = %s", (self._lock_ids()[1],)).fetchone()
        if not row or row[4] != self._token:
            return None  # free, or left by a client whose connection has ended
        return f"{row[0]} (pid {row[1]}, since {row[2]:%Y-%m-%d %H:%M:%S %Z}, lease until {row[3]:%H:%M:%S})"

    # -- steps ----------------------------------------------------------------
    def is_hypertable(self, schema: str | None, name: str) -> bool:
        qualified = f"{self.ident(schema)}.{self.ident(name)}" if schema else self.ident(name)
        return bool(self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h "
            "WHERE to_regclass(format('%%I.%%I', h.hypertable_schema, h.hypertable_name)) = to_regclass(%s))",
            (qualified,)).fetchone()[0])

    @server_errors("listing hypertables")
    def hypertables(self) -> list[str]:
        """``schema.table`` of every hypertable (drift, status)."""
        return [f"{a}.{b}" for a, b in self.conn.execute(
            "SELECT hypertable_schema, hypertable_name FROM timescaledb_information.hypertables "
            "ORDER BY 1, 2").fetchall()]

    def prepare_step(self, step: Step, session: PgSession, path: str | None) -> Step:
        """Refuse what TimescaleDB cannot run; on pglite, run multi-transaction commands in plain form."""
        if step.kind != "sql" or not _TOUCHY.search(step.content):
            return step
        from pglast import ast, parse_sql
        from pglast.parser import ParseError

        try:
            stmts = parse_sql(step.content)
        except ParseError:
            return step  # let the server report it with its own words
        where = f"{path or '<step>'}:{step.line}" if step.line else (path or "<step>")
        changed = False
        for raw in stmts:
            node = raw.stmt
            per_chunk = isinstance(node, ast.IndexStmt) and any(
                o.defnamespace == "timescaledb" and o.defname == "transaction_per_chunk" for o in node.options or ())
            if isinstance(node, ast.IndexStmt) and node.concurrent and \
                    self.is_hypertable(node.relation.schemaname, node.relation.relname):
                raise StepRefused(
                    f"{where}: CREATE INDEX CONCURRENTLY on hypertable {node.relation.relname} is not supported "
                    f"by TimescaleDB (target {self.target.name})",
                    hint="write CREATE INDEX ... WITH (timescaledb.transaction_per_chunk) in a `txmode: none` "
                         "migration instead", target=self.target.name, path=path, line=step.line, sqlstate=None)
            outside = per_chunk or self._cagg_with_data(node) or self._refresh_call(node)
            if outside and session.transactional:
                raise StepRefused(
                    f"{where}: this statement cannot run inside a transaction on TimescaleDB "
                    f"(target {self.target.name}): {step.content.strip().splitlines()[0][:80]}",
                    hint="put it in a migration with the header directive `txmode: none`",
                    target=self.target.name, path=path, line=step.line, sqlstate=None)
            if self.single_connection:
                changed |= self._plain_form(node, ast)
        if not changed:
            return step
        from pglast.stream import RawStream

        text = "; ".join(RawStream()(raw.stmt) for raw in stmts)
        return Step(content=text, kind=step.kind, name=step.name, line=step.line,
                    transactional=step.transactional, retryable=step.retryable)

    @staticmethod
    def _cagg_with_data(node) -> bool:
        from pglast import ast

        return isinstance(node, ast.CreateTableAsStmt) and not node.into.skipData and any(
            o.defnamespace == "timescaledb" and o.defname == "continuous" for o in node.into.options or ())

    @staticmethod
    def _refresh_call(node) -> bool:
        from pglast import ast

        return isinstance(node, ast.CallStmt) and \
            node.funccall.funcname[-1].sval == "refresh_continuous_aggregate"

    @staticmethod
    def _plain_form(node, ast) -> bool:
        """Strip CONCURRENTLY / transaction_per_chunk in place (pglite only); True if anything changed."""
        changed = False
        if isinstance(node, (ast.IndexStmt, ast.DropStmt)) and node.concurrent:
            node.concurrent = False
            changed = True
        if isinstance(node, ast.IndexStmt) and node.options:
            kept = tuple(o for o in node.options
                         if not (o.defnamespace == "timescaledb" and o.defname == "transaction_per_chunk"))
            if len(kept) != len(node.options):
                node.options = kept or None
                changed = True
        if isinstance(node, ast.ReindexStmt) and node.params:
            kept = tuple(p for p in node.params if p.defname != "concurrently")
            if len(kept) != len(node.params):
                node.params = kept or None
                changed = True
        return changed

    # -- shadows ----------------------------------------------------------------
    def create_shadow(self, tag: str = "") -> str:
        self.connect()
        if self.single_connection:
            raise ShadowUnavailable(
                f"target {self.target.name}: the pglite TimescaleDB dev server has a single database, "
                "so no shadow database can be made",
                hint="dry runs on it use a rolled-back transaction; for drift against a shadow, point the "
                     "target at a real TimescaleDB server", target=self.target.name)
        return super().create_shadow(tag)
