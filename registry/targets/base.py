"""The adapter Protocol every kind of target implements, and the mirror row.

An *adapter* is the code that speaks to one kind of target (PostgreSQL,
TimescaleDB, Neo4j, Redis). Adapters are registered in the explicit dict in
``registry/targets/__init__.py``; drivers are imported lazily inside them.
Capabilities are attributes, so the planner and executor ask rather than guess.

A *mirror row* is one leaf of a target's log as stored in the target's own
version table (``schema_versions`` / ``(:SchemaVersion)`` / the Redis stream).
Every column is derived from the leaf bytes by :func:`mirror_row_from_leaf`,
so ``mreg verify`` can prove each column agrees with its leaf.
"""

from __future__ import annotations

import base64
import hashlib
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from registry.errors import DatabaseError, MregError
from registry.model import Step


class LockTimeout(MregError):
    """Another operator holds the target's lock and did not release it in time."""

    exit_code = 3


class StepFailed(DatabaseError):
    """A step failed on the server; ``data`` holds path, line and the server's message."""


class LockNotAvailable(StepFailed):
    """A step gave up waiting for a lock (PostgreSQL SQLSTATE 55P03 ``lock_timeout``, a Neo4j lock wait).

    The engine retries such a step per the migration's ``max_retries``; every
    other ``StepFailed`` is final. ``data['sqlstate'] == '55P03'`` on PostgreSQL.
    """

    retryable = True


class ConnectionLost(StepFailed):
    """The server closed the connection during a step (backend terminated, server stopped).

    The transaction, if any, is rolled back by the server; the adapter reconnects
    on the next ``session()``.
    """


class StepRefused(StepFailed):
    """mreg refused to run a step that cannot work on this target (nothing was sent)."""

    exit_code = 2


class LockLost(DatabaseError):
    """The target's lock is no longer this operator's: its connection ended (PostgreSQL, TimescaleDB)
    or its lease expired and another took it (Neo4j, Redis).

    Raised before the next session, or when a mirror write is refused (fencing), so nothing
    more runs without the lock.
    """


class MirrorConflict(DatabaseError):
    """A mirror row was refused: its seq is taken, leaves a gap, or its leaf does not chain."""


class CheckpointRegression(DatabaseError):
    """A checkpoint smaller than the one stored in the target was offered."""


@dataclass
class MirrorRow:
    """One leaf of a target's log as its version table stores it.

    ``version``..``metadata`` are the seed's ``schema_versions`` columns with
    their meanings kept; ``origin``, ``seq``, ``event_type``, ``leaf`` (exact
    bytes) and ``leaf_hash`` (RFC 9162 leaf hash) make the row a log entry.
    """

    origin: str
    seq: int
    event_type: str
    leaf: bytes
    leaf_hash: bytes
    version: str
    database_type: str
    applied_at: str
    applied_by: str
    migration_id: str
    checksum: str
    execution_time_ms: int | None = None
    rollback_available: bool = True
    metadata: dict = field(default_factory=dict)


def mirror_row_from_leaf(leaf: bytes) -> MirrorRow:
    """Derive every mirror column from a leaf's bytes (see docs/ledger-format.md)."""
    doc = json.loads(leaf)
    envelope = doc["envelope"]
    statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
    return mirror_row(leaf, doc["seq"], statement)


def mirror_row(leaf: bytes, seq: int, statement: dict, leaf_hash: bytes | None = None) -> MirrorRow:
    """The mirror row of ``leaf`` from its ``seq`` and the statement it carries (as
    ``mirror_row_from_leaf`` reads them back), for a writer that holds both already."""
    migration = statement.get("migration") or {}
    target = statement.get("target") or {}
    details = statement.get("details") or {}
    checksum = migration.get("checksum") or ""
    return MirrorRow(
        origin=statement["ledger"],
        seq=seq,
        event_type=statement["type"],
        leaf=leaf,
        leaf_hash=leaf_hash if leaf_hash is not None else hashlib.sha256(b"\x00" + leaf).digest(),
        version=migration.get("version") or "0.0.0",
        database_type=target.get("engine") or "",
        applied_at=statement["time"],
        applied_by=statement["actor"],
        migration_id=migration.get("id") or "",
        checksum=checksum.removeprefix("sha256:"),
        execution_time_ms=details.get("execution_time_ms"),
        rollback_available=bool(details.get("rollback_available", True)),
        metadata=details,
    )


@runtime_checkable
class Session(Protocol):
    """Work on a target inside one transaction (or in auto-commit where ``transactional`` is False).

    ``execute`` runs a step; ``append_mirror`` writes a mirror row in the same
    transaction, so a transactional migration and its ``apply_succeeded`` row
    commit together. Leaving the context without ``commit()`` rolls back.
    """

    transactional: bool

    def execute(self, step: Step) -> object: ...

    def query(self, text: str) -> list[dict]: ...

    def append_mirror(self, row: MirrorRow) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@runtime_checkable
class Adapter(Protocol):
    """What the executor needs from a kind of target.

    Capabilities:
    - ``transactional_ddl``: schema changes roll back with the transaction.
    - ``supports_concurrent_index``: ``CREATE INDEX CONCURRENTLY`` (must run outside a transaction).
    - ``supports_batches``: the migrate phase can walk key ranges (``Backfill``).
    """

    kind: str
    transactional_ddl: bool
    supports_concurrent_index: bool
    supports_batches: bool

    def connect(self) -> None:
        """Open the connection(s); raises ``DatabaseError`` naming the target if unreachable."""

    def close(self) -> None: ...

    def server_version(self) -> str: ...

    # Locks: one operator at a time per target; a crashed holder never blocks forever.
    def acquire_lock(self, owner: str, timeout_s: float) -> object:
        """Take the target's lock for ``owner``; raise ``LockTimeout`` naming the holder."""

    def release_lock(self, handle: object) -> None: ...

    def lock_holder(self) -> str | None: ...

    # The mirror: the target's own copy of its log (authoritative for that log).
    def ensure_mirror(self) -> None:
        """Create the version table, checkpoint table and their guards if missing (idempotent)."""

    def mirror_rows(self, origin: str, start: int = 0) -> list[MirrorRow]:
        """Rows of ``origin`` with ``seq >= start``, in order of ``seq``."""

    def mirror_checkpoint(self, origin: str) -> str | None:
        """The latest checkpoint note stored in the target, or None."""

    def write_checkpoint(self, origin: str, size: int, note: str) -> None:
        """Store a checkpoint; a smaller size than the stored one is refused."""

    def session(self, transactional: bool = True) -> AbstractContextManager[Session]:
        """A session for running steps and appending mirror rows."""
