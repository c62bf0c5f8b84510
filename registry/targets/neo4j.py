"""The Neo4j adapter (the ``neo4j`` driver, imported lazily).

Steps (``Step.kind == "cypher"``, one statement each) run in one of three ways:

- a *schema command* (``CREATE``/``DROP`` ``CONSTRAINT``/``INDEX``, any index kind) runs
  alone in an auto-commit transaction on its own driver session: Neo4j refuses schema and
  data writes in one transaction, and schema changes never roll back;
- a *batched* statement (``CALL { … } IN [n] [CONCURRENT] TRANSACTIONS [OF n ROWS]``) runs
  alone in an implicit (auto-commit) transaction, which is the only place Neo4j allows it;
  each inner batch commits on its own;
- every other statement is a *data* step: in a transactional session it runs in the
  session's explicit transaction, together with the mirror node appended after it; in a
  non-transactional session each runs in its own managed transaction.

What mreg keeps in a Neo4j target (``<origin>`` is ``<project>/<target>``):

- ``(:SchemaVersion)`` nodes, the seed's properties kept (``version``, ``database_type``,
  ``applied_at`` as the statement's RFC 3339 text, ``applied_by``, ``migration_id``,
  ``checksum``, ``execution_time_ms``, ``rollback_available``, ``metadata`` as a JSON
  string) plus ``origin``, ``seq``, ``event_type``, ``leaf`` (the exact bytes, a byte
  array) and ``leaf_hash`` (32 bytes), and ``uid = origin + ':' + seq`` under the unique
  constraint ``mreg_schema_version_uid``; each node is linked from the previous one by
  ``[:NEXT]``, created in the same transaction;
- one ``(:SchemaCheckpoint {origin, size, note})`` per origin, replaced only by a larger
  (or equal) size;
- ``(:MregLock {name, owner, token, expires, acquired_at})``: the target's lock.

Neo4j Community has no triggers, so nothing stops a user with write access from editing or
deleting these nodes: tamper evidence comes from the leaf hashes, signatures and
checkpoints, and ``mreg verify`` compares every property with catalog.db.

Sessions live in ``neo4j_session.py``.

Lock: ``MERGE`` on the lock node (unique constraint ``mreg_lock_name``), then a write lock
on it, then take it over only if its lease (server time) has expired; a background
thread renews the lease while it is held; release deletes the node if the token is still
ours. A crashed holder stops renewing, so the next operator takes over after the lease.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from registry.config import Target
from registry.errors import ConfigError, DatabaseError
from registry.model import Settings, Step
from registry.targets.base import (  # noqa: F401  (LockLost re-exported: its old home)
    CheckpointRegression,
    ConnectionLost,
    LockLost,
    LockNotAvailable,
    MirrorConflict,
    MirrorRow,
    StepFailed,
)
from registry.targets.lease import DEFAULT_LEASE_MS, Lease, lease_options, wait_for_lease  # noqa: F401

ZERO_HASH = bytes(32)

_COMMENTS = re.compile(r"^(\s+|//[^\n]*(\n|$)|/\*.*?\*/)*", re.S)
_SCHEMA = re.compile(
    r"(CREATE|DROP)\s+(OR\s+REPLACE\s+)?((RANGE|TEXT|POINT|LOOKUP|FULLTEXT|VECTOR|BTREE)\s+)?(CONSTRAINT|INDEX)\b",
    re.I)
_BATCHED = re.compile(r"\}\s*IN\s+(\d+\s+)?(CONCURRENT\s+)?TRANSACTIONS\b", re.I)

MIRROR_SCHEMA = (
    "CREATE CONSTRAINT mreg_schema_version_uid IF NOT EXISTS FOR (v:SchemaVersion) REQUIRE v.uid IS UNIQUE",
    "CREATE CONSTRAINT mreg_schema_checkpoint_origin IF NOT EXISTS FOR (c:SchemaCheckpoint) REQUIRE c.origin IS UNIQUE",
    "CREATE INDEX mreg_schema_version_origin_seq IF NOT EXISTS FOR (v:SchemaVersion) ON (v.origin, v.seq)",
)
LOCK_SCHEMA = "CREATE CONSTRAINT mreg_lock_name IF NOT EXISTS FOR (l:MregLock) REQUIRE l.name IS UNIQUE"

APPEND_CHECK = """
OPTIONAL MATCH (v:SchemaVersion {origin: $origin})
WITH v ORDER BY v.seq DESC LIMIT 1
WITH v.seq AS last
OPTIONAL MATCH (p:SchemaVersion {uid: $prev_uid})
OPTIONAL MATCH (l:MregLock {name: $lock_name})
RETURN last, p.leaf_hash AS prev_hash, l.token AS lock_token, l.expires > datetime() AS lock_live
"""
APPEND_CREATE = """
CREATE (v:SchemaVersion)
SET v = $props
WITH v
OPTIONAL MATCH (p:SchemaVersion {uid: $prev_uid})
FOREACH (_ IN CASE WHEN p IS NULL THEN [] ELSE [1] END | CREATE (p)-[:NEXT]->(v))
"""
SELECT_ROWS = """
MATCH (v:SchemaVersion {origin: $origin}) WHERE v.seq >= $start
RETURN v ORDER BY v.seq
"""
CHECKPOINT_READ = """
MERGE (c:SchemaCheckpoint {origin: $origin})
ON CREATE SET c.size = -1, c.note = ''
SET c._mreg_lock = true REMOVE c._mreg_lock
RETURN c.size AS size
"""
CHECKPOINT_WRITE = "MATCH (c:SchemaCheckpoint {origin: $origin}) SET c.size = $size, c.note = $note"
LOCK_ACQUIRE = """
MERGE (l:MregLock {name: $name})
ON CREATE SET l.owner = $owner, l.token = $token,
              l.expires = datetime() + duration({milliseconds: $lease}), l.acquired_at = datetime()
SET l._mreg_lock = true REMOVE l._mreg_lock
WITH l
FOREACH (_ IN CASE WHEN l.token <> $token AND l.expires < datetime() THEN [1] ELSE [] END |
    SET l.owner = $owner, l.token = $token, l.acquired_at = datetime(),
        l.expires = datetime() + duration({milliseconds: $lease}))
RETURN l.token = $token AS mine
"""
LOCK_RENEW = """
MATCH (l:MregLock {name: $name}) WHERE l.token = $token
SET l.expires = datetime() + duration({milliseconds: $lease})
RETURN count(l) AS n
"""
LOCK_RELEASE = "MATCH (l:MregLock {name: $name}) WHERE l.token = $token DELETE l"
LOCK_HOLDER = """
MATCH (l:MregLock {name: $name}) WHERE l.expires > datetime()
RETURN l.owner AS owner, duration.inSeconds(datetime(), l.expires).milliseconds AS left_ms
"""


# ----------------------------------------------------------------------------- errors


class Neo4jUnavailable(DatabaseError):
    """The Neo4j server could not be reached or refused the credentials (``data``: target)."""


# ----------------------------------------------------------------------------- helpers


def statement_text(text: str) -> str:
    """The statement without leading whitespace and comments."""
    return text[_COMMENTS.match(text).end():]


def is_schema_command(text: str) -> bool:
    """``CREATE``/``DROP`` ``CONSTRAINT``/``INDEX`` (of any index kind)."""
    return _SCHEMA.match(statement_text(text)) is not None


def is_batched(text: str) -> bool:
    """A ``CALL { … } IN TRANSACTIONS`` statement (must run in an implicit transaction)."""
    return _BATCHED.search(text) is not None


def split_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """The driver URI without credentials, and the ``(user, password)`` it carried (or None)."""
    parts = urlsplit(url)
    if parts.scheme not in ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"):
        raise ConfigError(f"not a Neo4j URL: scheme {parts.scheme!r}", hint="use bolt://[user:password@]host:port")
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, "", parts.query, "")), auth


def counters(summary) -> dict:
    """The non-zero update counters of a result summary (``nodes_created``, ``indexes_added``, …)."""
    c = summary.counters
    names = ("nodes_created", "nodes_deleted", "relationships_created", "relationships_deleted",
             "properties_set", "labels_added", "labels_removed", "indexes_added", "indexes_removed",
             "constraints_added", "constraints_removed")
    return {name: getattr(c, name) for name in names if getattr(c, name)}


def row_props(row: MirrorRow) -> dict:
    """A mirror row as ``(:SchemaVersion)`` properties."""
    props = {
        "uid": f"{row.origin}:{row.seq}", "origin": row.origin, "seq": row.seq, "event_type": row.event_type,
        "leaf": bytes(row.leaf), "leaf_hash": bytes(row.leaf_hash), "version": row.version,
        "database_type": row.database_type, "applied_at": row.applied_at, "applied_by": row.applied_by,
        "migration_id": row.migration_id, "checksum": row.checksum,
        "rollback_available": row.rollback_available,
        "metadata": json.dumps(row.metadata, sort_keys=True, separators=(",", ":")),
    }
    if row.execution_time_ms is not None:
        props["execution_time_ms"] = row.execution_time_ms
    return props


def row_from_node(node) -> MirrorRow:
    """A ``MirrorRow`` from a ``(:SchemaVersion)`` node (properties read, not derived from the leaf)."""
    p = dict(node)
    ms = p.get("execution_time_ms")
    return MirrorRow(
        origin=p["origin"], seq=int(p["seq"]), event_type=p["event_type"], leaf=bytes(p["leaf"]),
        leaf_hash=bytes(p["leaf_hash"]), version=p.get("version", ""), database_type=p.get("database_type", ""),
        applied_at=p.get("applied_at", ""), applied_by=p.get("applied_by", ""),
        migration_id=p.get("migration_id", ""), checksum=p.get("checksum", ""),
        execution_time_ms=None if ms is None else int(ms),
        rollback_available=bool(p.get("rollback_available", True)),
        metadata=json.loads(p.get("metadata") or "{}"),
    )


def check_row(row: MirrorRow) -> bytes:
    """Check a row agrees with its own leaf before writing; return the prev hash its leaf names."""
    import base64
    import hashlib

    found = hashlib.sha256(b"\x00" + bytes(row.leaf)).digest()
    try:
        doc = json.loads(row.leaf)
        prev = base64.b64decode(doc["prev"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise MirrorConflict(f"{row.origin} seq {row.seq}: the leaf is not an mreg leaf",
                             hint="build leaves with ledger.log.build_leaf", origin=row.origin, seq=row.seq) from None
    if found != bytes(row.leaf_hash) or doc.get("seq") != row.seq:
        raise MirrorConflict(f"{row.origin} seq {row.seq}: the row does not agree with its leaf",
                             hint="derive rows with registry.targets.base.mirror_row_from_leaf",
                             origin=row.origin, seq=row.seq)
    return prev


@dataclass
class Neo4jLock(Lease):
    """A held lock: the node's name, our owner string and token (the lease: ``Lease``)."""

    name: str
    owner: str
    token: str


# ----------------------------------------------------------------------------- adapter


class Neo4jAdapter:
    """A Neo4j 5 target: ``bolt://[user:password@]host:port``; option ``database`` picks the database."""

    kind = "neo4j"
    transactional_ddl = False
    supports_concurrent_index = False
    supports_batches = True

    def __init__(self, target: Target, url: str) -> None:
        self.target = target
        self.url = url
        self.options = dict(target.options or {})
        # the database: option `database`, else the URL's path (bolt://host:7687/graphs), else the default
        self.database = self.options.get("database") or urlsplit(url).path.strip("/") or None
        self.lease_ms, self.lock_name = lease_options(self.options, target.name)
        self.driver = None
        self._lock: Neo4jLock | None = None
        self._lock_schema_done = False

    # -- connection

    def connect(self) -> None:
        if self.driver is not None:
            return
        try:
            import neo4j
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ConfigError("the neo4j adapter needs the neo4j driver", hint="pip install neo4j") from exc
        uri, auth = split_url(self.url)
        try:
            driver = neo4j.GraphDatabase.driver(uri, auth=auth, connection_timeout=float(
                self.options.get("connect_timeout", 5)), max_transaction_retry_time=5.0,
                notifications_min_severity="OFF")  # the library never prints; `mreg lint` reports syntax
            driver.verify_connectivity()
        except (neo4j.exceptions.DriverError, neo4j.exceptions.Neo4jError, OSError) as exc:
            raise Neo4jUnavailable(
                f"target {self.target.name}: cannot reach Neo4j at {self.target.safe_url}: {exc}",
                hint="start the server (`mreg dev up` for the dev one), or fix the target's url and credentials",
                target=self.target.name) from None
        self.driver = driver

    def close(self) -> None:
        if self._lock is not None:
            self._stop_renewal(self._lock)
        if self.driver is not None:
            self.driver.close()
            self.driver = None

    def _d(self):
        if self.driver is None:
            self.connect()
        return self.driver

    def _session(self):
        return self._d().session(database=self.database)

    @contextmanager
    def errors(self, what: str, step: Step | None = None, path: str | None = None):
        """Map driver errors: connection loss to ``ConnectionLost``, a refusal to ``StepFailed``."""
        import neo4j

        try:
            yield
        except neo4j.exceptions.Neo4jError as exc:
            raise self._step_failed(exc, what, step, path) from None
        except (neo4j.exceptions.DriverError, OSError) as exc:
            where = f"{path or '<step>'}:{step.line}: " if step and step.line else (f"{path}: " if path else "")
            raise ConnectionLost(
                f"{where}target {self.target.name}: the Neo4j server went away during {what}: {exc}",
                hint="the open transaction was rolled back by the server; check it, then run the command again",
                target=self.target.name, path=path, line=step.line if step else None,
                step=step.name if step else None, server_message=str(exc)) from None

    def _step_failed(self, exc, what: str, step: Step | None, path: str | None) -> StepFailed:
        import neo4j

        code = getattr(exc, "code", None) or ""
        msg = (getattr(exc, "message", None) or str(exc)).strip()
        line = step.line if step else None
        where = f"{path or '<step>'}:{line}" if line else (path or "<step>")
        data = dict(target=self.target.name, path=path, line=line, step=step.name if step else None,
                    code=code, server_message=msg)
        message = f"{where}: {what} failed on target {self.target.name}: {msg} [{code}]"
        if isinstance(exc, neo4j.exceptions.TransientError):
            return LockNotAvailable(message, hint="a transient failure (lock wait, deadlock); the step is "
                                    "retried per max_retries", **data)
        return StepFailed(message, hint=f"fix the statement at {where} and run again", **data)

    def run(self, text: str, **params) -> list[dict]:
        """One auto-commit statement; its records as dicts."""
        with self.errors("a statement"), self._session() as s:
            return s.run(text, params).data()

    def server_version(self) -> str:
        rows = self.run("CALL dbms.components() YIELD versions, edition RETURN versions[0] AS v, edition")
        return f"{rows[0]['v']} {rows[0]['edition']}" if rows else "unknown"

    # -- steps

    def run_alone(self, step: Step, path: str | None = None, params: dict | None = None,
                  timeout_s: float | None = None) -> dict:
        """A schema command or a ``CALL { … } IN TRANSACTIONS`` in its own implicit transaction."""
        import neo4j

        with self.errors("step", step, path), self._session() as s:
            return counters(s.run(neo4j.Query(step.content, timeout=timeout_s), params or {}).consume())

    # -- mirror

    def ensure_mirror(self) -> None:
        """Create the mirror's constraints and index if missing (idempotent, each in its own transaction)."""
        for text in MIRROR_SCHEMA:
            self._schema(text)

    def _schema(self, text: str) -> None:
        for attempt in range(20):
            try:
                with self.errors("mirror schema"), self._session() as s:
                    s.run(text).consume()
                return
            except LockNotAvailable:  # another operator changes the schema at the same moment
                if attempt == 19:
                    raise
                time.sleep(0.05 * (attempt + 1))
            except StepFailed as exc:  # ... or created this very constraint a moment ago
                if "AlreadyExists" not in str(exc.data.get("code")):
                    raise
                return

    def _append_tx(self, tx, row: MirrorRow) -> None:
        prev = check_row(row)
        lock = self._lock
        rec = tx.run(APPEND_CHECK, origin=row.origin, prev_uid=f"{row.origin}:{row.seq - 1}",
                     lock_name=lock.name if lock else "").single()
        if lock is not None and (rec["lock_token"] != lock.token or not rec["lock_live"]):
            raise LockLost(f"target {self.target.name}: the lock is no longer held by this operator; "
                           f"mirror append of {row.origin} seq {row.seq} refused",
                           hint="the lease expired while this command ran; run it again", target=self.target.name)
        last = rec["last"]
        expected = 0 if last is None else last + 1
        if row.seq != expected:
            raise MirrorConflict(f"target {self.target.name}: mirror append of {row.origin} seq {row.seq} refused: "
                                 f"the next entry is seq {expected}",
                                 hint="pull the log with `mreg sync` and append after its last entry",
                                 target=self.target.name, origin=row.origin, seq=row.seq, expected=expected)
        found = ZERO_HASH if row.seq == 0 else bytes(rec["prev_hash"] or b"")
        if prev != found:
            raise MirrorConflict(f"target {self.target.name}: {row.origin} seq {row.seq} does not chain to "
                                 f"the previous leaf", hint="pull the log with `mreg sync` and rebuild the leaf",
                                 target=self.target.name, origin=row.origin, seq=row.seq,
                                 expected=found.hex(), found=prev.hex())
        tx.run(APPEND_CREATE, props=row_props(row), prev_uid=f"{row.origin}:{row.seq - 1}").consume()

    def append_mirror(self, row: MirrorRow) -> None:
        """Append one row in its own managed transaction (a duplicate seq is refused by the constraint)."""
        with self.errors(f"mirror append of {row.origin} seq {row.seq}"), self._session() as s:
            s.execute_write(self._append_tx, row)

    def mirror_rows(self, origin: str, start: int = 0) -> list[MirrorRow]:
        with self.errors("mirror read"), self._session() as s:
            return [row_from_node(r["v"]) for r in s.run(SELECT_ROWS, origin=origin, start=start)]

    def mirror_origins(self) -> list[str]:
        rows = self.run("MATCH (v:SchemaVersion) WHERE v.origin IS NOT NULL RETURN DISTINCT v.origin AS o ORDER BY o")
        return [r["o"] for r in rows]

    def mirror_checkpoint(self, origin: str) -> str | None:
        rows = self.run("MATCH (c:SchemaCheckpoint {origin: $origin}) WHERE c.size >= 0 RETURN c.note AS note",
                        origin=origin)
        return rows[0]["note"] if rows else None

    def write_checkpoint(self, origin: str, size: int, note: str) -> None:
        """Store a checkpoint; a smaller size than the stored one raises ``CheckpointRegression``."""

        def work(tx) -> None:
            stored = tx.run(CHECKPOINT_READ, origin=origin).single()["size"]
            if stored > size:
                raise CheckpointRegression(
                    f"target {self.target.name}: the checkpoint of {origin} may not go down from {stored} to {size}",
                    hint="the target holds a newer checkpoint: run `mreg sync` first",
                    target=self.target.name, origin=origin, stored=stored, offered=size)
            tx.run(CHECKPOINT_WRITE, origin=origin, size=size, note=note).consume()

        with self.errors("checkpoint write"), self._session() as s:
            s.execute_write(work)

    def session(self, transactional: bool = True, *, tenant: str | None = None,
                settings: Settings | None = None, lock_timeout_ms: int | None = None,
                statement_timeout_ms: int | None = None):
        """A session; ``statement_timeout_ms`` (or ``settings.timeout``) becomes the transaction timeout."""
        if tenant:
            raise ConfigError(f"target {self.target.name}: Neo4j tenants are not supported ({tenant!r})",
                              hint="give each tenant its own target (option `database`)")
        if statement_timeout_ms is None and settings is not None:
            statement_timeout_ms = settings.timeout
        from registry.targets.neo4j_session import Neo4jSession

        return Neo4jSession(self, transactional, statement_timeout_ms)

    # -- lock

    def acquire_lock(self, owner: str, timeout_s: float) -> Neo4jLock:
        """Take the lock node (or take over an expired one), waiting up to ``timeout_s``."""
        if not self._lock_schema_done:
            self._schema(LOCK_SCHEMA)
            self._lock_schema_done = True
        token = uuid.uuid4().hex

        def take() -> Neo4jLock | None:
            with self.errors("lock acquire"), self._session() as s:
                mine = s.execute_write(lambda tx: tx.run(LOCK_ACQUIRE, name=self.lock_name, owner=owner,
                                                         token=token, lease=self.lease_ms).single()["mine"])
            return Neo4jLock(name=self.lock_name, owner=owner, token=token, lease_ms=self.lease_ms) if mine else None

        lock = wait_for_lease(take, target=self.target.name, lease_ms=self.lease_ms, timeout_s=timeout_s,
                              holder=self.lock_holder)
        lock.start_renewal(lambda: self.renew_lock(lock), (DatabaseError,), f"mreg-lock-{lock.name}")
        self._lock = lock
        return lock

    def renew_lock(self, lock: Neo4jLock) -> bool:
        """Extend the lease if the token is still ours; False (and ``lock.lost``) if not."""
        rows = self.run(LOCK_RENEW, name=lock.name, token=lock.token, lease=lock.lease_ms)
        ok = bool(rows and rows[0]["n"])
        if not ok:
            lock.lost = True
        return ok

    def release_lock(self, handle: Neo4jLock) -> None:
        """Delete the lock node if it is still ours (compare token, then delete)."""
        self._stop_renewal(handle)
        if self._lock is handle:
            self._lock = None
        self.run(LOCK_RELEASE, name=handle.name, token=handle.token)

    def lock_alive(self) -> bool:
        lock = self._lock
        if lock is None or lock.lost:
            return False
        try:
            rows = self.run("MATCH (l:MregLock {name: $name}) WHERE l.token = $token AND l.expires > datetime() "
                            "RETURN count(l) AS n", name=lock.name, token=lock.token)
        except DatabaseError:
            return False
        return bool(rows[0]["n"])

    def lock_holder(self) -> str | None:
        """``<owner> (lease ends in S s)`` of a live lock, or None."""
        rows = self.run(LOCK_HOLDER, name=self.lock_name)
        if not rows:
            return None
        return f"{rows[0]['owner']} (lease ends in {max(rows[0]['left_ms'], 0) / 1000:.1f}s)"

    def _stop_renewal(self, lock: Neo4jLock) -> None:
        lock.stop_renewal()
