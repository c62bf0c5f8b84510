"""The migration model shared by parsers, the graph, the planner and the adapters.

A *migration* has up to three *phases* (expand, migrate, contract), each a list
of *steps*; rollback steps per phase; *validation* rules; and *settings*. Every
parser (``.sql``, ``.cypher``, ``.redis``, ``.py``, TypeScript/JavaScript
modules) produces this one shape, so nothing downstream cares where a
migration came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

PHASES = ("expand", "migrate", "contract")
MIGRATION_TYPES = ("schema", "data", "security", "perf")
DATABASES = ("postgresql", "timescale", "neo4j", "redis")

Phase = Literal["expand", "migrate", "contract"]
Database = Literal["postgresql", "timescale", "neo4j", "redis"]


def checksum_bytes(data: bytes) -> str:
    """SHA-256 of a file's bytes after removing a UTF-8 BOM and turning CRLF into LF.

    Returned as ``sha256:<hex>`` (the form the ledger's statements carry).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.replace(b"\r\n", b"\n")
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Step:
    """One unit of work in a phase.

    ``kind`` is the language of ``content``: ``sql``, ``cypher`` or ``redis``.
    ``line`` is where the step starts in its file (1-based), for error messages.
    ``transactional`` is False for steps that must run outside a transaction
    (``txmode: none`` files, ``CREATE INDEX CONCURRENTLY``, continuous aggregates).
    """

    content: str
    kind: str = "sql"
    name: str = ""
    line: int = 0
    transactional: bool = True
    retryable: bool = True
    # what the step's statements create and which relations they name, when none of them takes a
    # lock a concurrent session could wait for (registry.parse.sql.lock_summary): a tuple of
    # (creates, names) pairs; False when one does; None when not worked out (see registry.apply.group)
    locks: object = field(default=None, compare=False, repr=False)


@dataclass
class ValidationRule:
    """A pre or post check: ``check`` is ``sql:…`` or ``cypher:…``; ``expected`` its result."""

    name: str
    type: Literal["pre", "post"] = "post"
    check: str = ""
    expected: object = None
    critical: bool = True


@dataclass
class Settings:
    """How the migrate phase runs (the seed's ``settings``). Durations in milliseconds."""

    batch_size: int = 1000
    pause_between_batches: int = 0
    max_batch_ms: int = 0           # a backfill batch's target duration; 0: every batch is batch_size keys
    duty_cycle: int = 100           # percent of a backfill's time spent in batches (the rest: pauses)
    checkpoint_interval: int = 1000  # ms between a backfill's ledgered batch_checkpoints; 0: every batch
    commit_backoff: int = 4         # after a backfill batch's congested commit, pause this many times its time; 0: off
    max_retries: int = 3
    timeout: int = 60_000
    lock_timeout: int = 5_000
    requires_maintenance_window: bool = False


@dataclass
class Backfill:
    """A batched data migration: ``update`` runs once per key range of ``table``.

    ``update`` holds the placeholders ``:lo`` and ``:hi`` (inclusive-exclusive key
    bounds); the engine walks ``key`` from its minimum to its maximum in ranges of at
    most ``batch_size`` keys (``registry.apply.backfill``).
    """

    table: str
    key: str
    update: str


@dataclass
class Migration:
    """One migration as parsed from its file (or extracted from a module)."""

    id: str
    name: str
    database: str
    path: str
    checksum: str
    version: str = "0.0.0"
    type: str = "schema"
    description: str = ""
    author: str = ""
    created: str = ""
    breaking: bool = False
    dependencies: list[str] = field(default_factory=list)
    phases: dict[str, list[Step]] = field(default_factory=dict)
    rollback: dict[str, list[Step]] = field(default_factory=dict)
    validation: list[ValidationRule] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    backfill: Backfill | None = None
    txmode: str = "transaction"  # or "none"
    tenant_scoped: bool = False
    metadata: dict = field(default_factory=dict)
    scheme: str = "canonical"

    @property
    def phase_names(self) -> list[str]:
        """The phases this migration has, in order."""
        return [p for p in PHASES if self.phases.get(p) or (p == "migrate" and self.backfill)]

    @property
    def has_rollback(self) -> bool:
        return any(self.rollback.get(p) for p in PHASES)
