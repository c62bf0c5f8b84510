"""A target's log as the engine appends to it: the mirror protocol of CONTRACTS.md.

Under the target's lock the engine first pulls what the mirror (the target's own
version table, authoritative for this log) holds beyond catalog.db's replica
(``sync``), then builds each new leaf on the replica's head, writes its mirror row
in the session that carries the migration's steps (``stage``) and, once that
session committed, stores the leaf in catalog.db (``committed``). A leaf whose
session rolled back is forgotten (``discard``). If the process dies between the
mirror's commit and catalog.db, the next ``sync`` copies the leaf from the mirror:
the mirror commit is the one point where an event happens.

catalog.db is written in batches: committed leaves are kept in memory and stored in
one SQLite transaction (one fsync) at least once a second, before any read of the
replica, before a checkpoint and when the command ends. A crash loses at most the
batch's copy in catalog.db, never an event: the next command's ``sync`` (or ``mreg
sync``) pulls the leaves from the mirror and checks that they chain.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from ledger.dsse import PAYLOAD_TYPE, b64_std, pae
from ledger.log import signed_leaf
from ledger.merkle import leaf_hash
from ledger.statement import new_statement_bytes, utc_now
from registry.errors import DatabaseError
from registry.targets.base import mirror_row


FLUSH_EVERY_S = 1.0  # how often committed leaves are copied into catalog.db (see the module's doc)


class MirrorBehind(DatabaseError):
    """catalog.db holds more of a target's log than the target's mirror (or a different history).

    ``data``: target, origin, catalog (size in catalog.db), mirror (size in the target).
    """


def actor() -> str:
    """Who acts: ``$MREG_ACTOR``, else ``user@host``."""
    return os.environ.get("MREG_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def origin_of(cfg, target_name: str) -> str:
    return f"{cfg.project.value}/{target_name}"


def migration_ref(m) -> dict:
    """The ``migration`` object of a statement."""
    return {"id": m.id, "version": m.version, "checksum": m.checksum, "path": m.path}


def clean(details: dict) -> dict:
    """Details without None values (statements omit absent fields) and with only JSON-safe ints."""
    out = {}
    for k, v in details.items():
        if v is None:
            continue
        if isinstance(v, float):
            v = int(v)
        if isinstance(v, dict):
            v = clean(v)
        out[k] = v
    return out


@dataclass
class TargetLog:
    """One target's log: its catalog.db replica, its mirror, and the leaves staged in an open session."""

    store: object
    origin: str
    adapter: object
    signer: object
    target: object  # registry.config.Target
    actor: str = field(default_factory=actor)
    size: int = 0
    prev: bytes = b"\x00" * 32
    staged: list = field(default_factory=list)
    deferred: list = field(default_factory=list)
    pending: list = field(default_factory=list)  # deferred events not signed yet
    appended: int = 0
    defer_catalog: bool = True
    unflushed: list = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)
    registrations: dict = field(default_factory=dict)  # migration id -> event id of its `register`
    known: list = field(default_factory=list)  # the statements of the log's first len(known) leaves (statements())

    def registration(self, migration_id: str) -> list[str] | None:
        """``refs`` of an ``apply_started``: the registration it applies (SPEC §5), when the registry has one."""
        event = self.registrations.get(migration_id)
        return [event] if event else None

    # -- replica <- mirror ------------------------------------------------------
    def sync(self) -> int:
        """Pull the mirror's rows beyond catalog.db's head into catalog.db; return how many."""
        self.flush()
        self.adapter.ensure_mirror()
        size, _ = self.store.head(self.origin)
        start = max(size - 1, 0)
        rows = self.adapter.mirror_rows(self.origin, start=start)
        if size and (not rows or rows[0].seq != size - 1):
            raise MirrorBehind(
                f"target {self.target.name}: catalog.db holds {size} entries of {self.origin} "
                f"but the target's mirror has fewer",
                hint="the target's schema_versions was reset or this catalog.db belongs to another "
                     "database; point MREG_CATALOG at a fresh catalog (the mirror is authoritative) "
                     "or restore the target's mirror",
                target=self.target.name, origin=self.origin, catalog=size)
        leaves = [bytes(r.leaf) for r in rows]
        if leaves:
            self.store.add_leaves(self.origin, leaves)  # checks the chain; an identical re-add is a no-op
        new_size, new_prev = self.store.head(self.origin)
        pulled = new_size - size
        self.size, self.prev = new_size, new_prev
        return pulled

    def statements(self) -> list[dict]:
        """The log's statements in order, as catalog.db holds it. Leaves are parsed once: the events
        this process committed are known as it built them (``committed``), and only leaves added
        otherwise (``sync``) are read and parsed, from the first one not known."""
        from ledger.log import parse_leaf

        self.flush()
        size, _ = self.store.head(self.origin)
        if len(self.known) > size:  # never, for an append-only replica: start again
            self.known = []
        if len(self.known) < size:
            added = self.store.leaves(self.origin, start=len(self.known))
            self.known += [parse_leaf(leaf).statement for leaf in added]
        return list(self.known)

    # -- appending --------------------------------------------------------------
    def _build(self, type: str, migration, details, refs, when: str | None = None,
               event_id: str | None = None) -> tuple[bytes, int, dict, bytes]:
        """Sign the next event and build its leaf on the head (staged: it counts once its session
        commits); return (leaf, seq, statement, leaf hash). The head moves past it."""
        stmt, payload = new_statement_bytes(
            ledger=self.origin, type=type, actor=self.actor,
            migration=migration_ref(migration) if migration is not None else None,
            target=self._target_ref, refs=refs, details=clean(details or {}), time=when, event_id=event_id,
        )
        seq, prev = self.size, self.prev
        sig = self.signer.sign(pae(PAYLOAD_TYPE, payload))
        leaf = signed_leaf(seq, prev, b64_std(payload), self.signer.keyid, b64_std(sig))
        self.size += 1
        self.prev = lh = leaf_hash(leaf)
        self.staged.append((leaf, seq, prev, stmt, self.signer.keyid))
        return leaf, seq, stmt, lh

    @property
    def _target_ref(self) -> dict:
        return {"engine": self.target.type, "id": self.target.name}

    def stage(self, session, type: str, migration=None, details: dict | None = None,
              refs: list[str] | None = None, *, defer: bool = False) -> str:
        """Append an event's mirror row in ``session``; it counts once the session commits.

        ``defer=True`` keeps the row until :meth:`write_deferred` (or the next non-deferred stage),
        so the rows of one transaction travel together (one round trip where the adapter allows).
        A deferred event's time and id are fixed now; it is signed by :meth:`sign_pending`, which
        the engine lets a session run while the server works on a step, or by ``write_deferred``.
        """
        if defer:
            event_id = str(uuid.uuid4())
            self.pending.append((type, migration, details, refs, utc_now(), event_id))
            return event_id
        self.sign_pending()
        built = self._build(type, migration, details, refs)
        self.deferred.append(built)
        self.write_deferred(session)
        return built[2]["event_id"]

    def sign_pending(self) -> None:
        """Sign the deferred events not signed yet and build their leaves, in order."""
        pending, self.pending = self.pending, []
        for type, migration, details, refs, when, event_id in pending:
            self.deferred.append(self._build(type, migration, details, refs, when, event_id))

    def write_deferred(self, session) -> None:
        self.sign_pending()
        if not self.deferred:
            return
        rows = [mirror_row(leaf, seq, stmt, lh) for leaf, seq, stmt, lh in self.deferred]
        self.deferred = []
        many = getattr(session, "append_mirrors", None)
        if many is not None and len(rows) > 1:
            many(rows)
        else:
            for row in rows:
                session.append_mirror(row)

    def committed(self) -> None:
        """The session holding the staged rows committed: the events happened."""
        if not self.staged:
            return
        self.appended += len(self.staged)
        for _, seq, _, stmt, _ in self.staged:
            if seq == len(self.known):  # the next statement after those known: no need to parse it again
                self.known.append(stmt)
        self.unflushed.extend(self.staged)
        self.staged = []
        if not self.defer_catalog or time.monotonic() - self.flushed_at >= FLUSH_EVERY_S:
            self.flush()

    def discard(self) -> None:
        """The session rolled back: forget its staged rows and rewind to the last committed head."""
        self.staged = []
        self.deferred = []
        self.pending = []
        self.flush()
        self.size, self.prev = self.store.head(self.origin)

    def flush(self) -> None:
        """Copy committed leaves into catalog.db (the mirror already holds them)."""
        self.flushed_at = time.monotonic()
        if self.unflushed:
            built, self.unflushed = self.unflushed, []
            self.store.add_built_leaves(self.origin, built)

    def record(self, type: str, migration=None, details: dict | None = None,
               refs: list[str] | None = None, *, tenant: str | None = None) -> str:
        """Append one event in its own transaction (non-transactional work, outcomes after failures)."""
        with self.adapter.session(True) as s:
            event_id = self.stage(s, type, migration, details, refs)
            s.commit()
        self.committed()
        return event_id

    def checkpoint(self) -> str | None:
        """Sign a checkpoint of the replica and store it in the target; return the note."""
        self.flush()
        size, _ = self.store.head(self.origin)
        if size == 0:
            return None
        note = self.store.checkpoint(self.origin, self.signer)
        self.adapter.write_checkpoint(self.origin, size, note)
        return note
