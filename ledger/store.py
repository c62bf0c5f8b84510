"""The ledger's tables in catalog.db: leaves, perfect-subtree nodes, checkpoints, witness state.

Tables (as sqlite-utils creates them, see ``SCHEMA`` and docs/ledger-format.md#store):

- ``ledger_leaves(origin, seq, leaf, leaf_hash, event_type, event_id, actor, time, keyid)``:
  one row per leaf; ``leaf`` is the exact bytes, the other columns are
  projections for browsing. An insert trigger refuses a ``seq`` that is not
  the next one of its origin.
- ``ledger_nodes(origin, level, idx, hash)``: hashes of complete perfect
  subtrees of level ≥ 1 (level 0 is ``ledger_leaves.leaf_hash``); an append
  adds one row on average (exactly the number of trailing zero bits of the
  new size), so ``n`` appends leave fewer than ``n`` rows.
- ``ledger_checkpoints(id, origin, size, root, note, created)``: every signed
  checkpoint written or received.
- ``ledger_witness_state(id, origin, witness, size, root, timestamp, note)``:
  cosignatures observed, per witness.

Every table refuses UPDATE and DELETE through triggers (a guard rail against
bugs: tamper evidence comes from hashes, signatures and checkpoints). Appends
run under ``BEGIN IMMEDIATE``; the database uses WAL with ``synchronous=FULL``.
"""

from __future__ import annotations

import sqlite3
from base64 import b64encode as _b64e
from pathlib import Path
from typing import Iterable


from ledger.checkpoint import parse_body, parse_checkpoint, sign_checkpoint
from ledger.dsse import PAYLOAD_TYPE
from ledger.errors import LedgerError
from ledger.log import ZERO_HASH, LeafError, parse_leaf, signed_leaf
from ledger.merkle import EMPTY_ROOT, Frontier, ProofError, consistency_path, inclusion_path, \
    leaf_hash, subtree_root
from ledger.note import parse as parse_note
from ledger.statement import StatementError, statement_bytes, utc_now

TABLES = ("ledger_leaves", "ledger_nodes", "ledger_checkpoints", "ledger_witness_state")


# The tables and indexes as sqlite-utils creates them (``create_with_sqlite_utils`` below is that
# code; tests/unit/test_ledger_store.py holds the two equal). A fresh catalog is created from these
# statements so that engine commands need not import sqlite-utils (docs/performance.md).
SCHEMA = {
    "ledger_leaves": (
        'CREATE TABLE "ledger_leaves" (\n   "origin" TEXT NOT NULL,\n   "seq" INTEGER NOT NULL,\n'
        '   "leaf" BLOB NOT NULL,\n   "leaf_hash" BLOB NOT NULL,\n   "event_type" TEXT,\n   "event_id" TEXT,\n'
        '   "actor" TEXT,\n   "time" TEXT,\n   "keyid" TEXT,\n   PRIMARY KEY ("origin", "seq")\n)',
        'CREATE INDEX "idx_ledger_leaves_event_id"\n    ON "ledger_leaves" ("event_id")',
    ),
    "ledger_nodes": (
        'CREATE TABLE "ledger_nodes" (\n   "origin" TEXT NOT NULL,\n   "level" INTEGER NOT NULL,\n'
        '   "idx" INTEGER NOT NULL,\n   "hash" BLOB NOT NULL,\n   PRIMARY KEY ("origin", "level", "idx")\n)',
    ),
    "ledger_checkpoints": (
        'CREATE TABLE "ledger_checkpoints" (\n   "id" INTEGER PRIMARY KEY,\n   "origin" TEXT NOT NULL,\n'
        '   "size" INTEGER NOT NULL,\n   "root" BLOB NOT NULL,\n   "note" TEXT NOT NULL,\n   "created" TEXT\n)',
        'CREATE UNIQUE INDEX "idx_ledger_checkpoints_origin_note"\n    ON "ledger_checkpoints" ("origin", "note")',
        'CREATE INDEX "idx_ledger_checkpoints_origin_size"\n    ON "ledger_checkpoints" ("origin", "size")',
    ),
    "ledger_witness_state": (
        'CREATE TABLE "ledger_witness_state" (\n   "id" INTEGER PRIMARY KEY,\n   "origin" TEXT,\n'
        '   "witness" TEXT,\n   "size" INTEGER,\n   "root" BLOB,\n   "timestamp" INTEGER,\n   "note" TEXT\n)',
        'CREATE UNIQUE INDEX "idx_ledger_witness_state_origin_witness_size_root"\n'
        '    ON "ledger_witness_state" ("origin", "witness", "size", "root")',
    ),
}


def create_with_sqlite_utils(db) -> None:
    """The ledger tables created with sqlite-utils (``db``: a ``sqlite_utils.Database``): the
    reference ``SCHEMA`` is checked against."""
    db["ledger_leaves"].create(
        {"origin": str, "seq": int, "leaf": bytes, "leaf_hash": bytes, "event_type": str,
         "event_id": str, "actor": str, "time": str, "keyid": str},
        pk=("origin", "seq"), not_null={"origin", "seq", "leaf", "leaf_hash"})
    db["ledger_leaves"].create_index(["event_id"])
    db["ledger_nodes"].create({"origin": str, "level": int, "idx": int, "hash": bytes},
                              pk=("origin", "level", "idx"), not_null={"origin", "level", "idx", "hash"})
    db["ledger_checkpoints"].create(
        {"id": int, "origin": str, "size": int, "root": bytes, "note": str, "created": str},
        pk="id", not_null={"origin", "size", "root", "note"})
    db["ledger_checkpoints"].create_index(["origin", "note"], unique=True)
    db["ledger_checkpoints"].create_index(["origin", "size"])
    db["ledger_witness_state"].create(
        {"id": int, "origin": str, "witness": str, "size": int, "root": bytes, "timestamp": int, "note": str},
        pk="id")
    db["ledger_witness_state"].create_index(["origin", "witness", "size", "root"], unique=True)


class StoreError(LedgerError):
    """The ledger store refused a write (a gap, a wrong chain link, a statement for another log)."""


class ForkError(StoreError):
    """A leaf differs from the stored leaf at the same position: two histories of one log."""


class LedgerStore:
    """A ledger in an SQLite file (normally catalog.db). One log per origin."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=60,
                               check_same_thread=False)
        self.conn = conn
        self._db = None
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        self._frontiers: dict[str, Frontier] = {}
        self._ensure_schema()

    def close(self) -> None:
        self._close_pool()
        self.conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self):
        """The sqlite-utils view of the file, imported on first use (hooks append without it)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    # --- schema ------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        present = {name for (name,) in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        if all(t in present for t in TABLES):
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            present = {name for (name,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
            for table in TABLES:
                if table not in present:
                    for statement in SCHEMA[table]:
                        self.conn.execute(statement)
            for table in TABLES:
                for op in ("UPDATE", "DELETE"):
                    self.conn.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")
            self.conn.execute(
                "CREATE TRIGGER IF NOT EXISTS ledger_leaves_next_seq BEFORE INSERT ON ledger_leaves "
                "WHEN NEW.seq != (SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_leaves "
                "WHERE origin = NEW.origin) "
                "BEGIN SELECT RAISE(ABORT, 'ledger_leaves: seq is not the next of its origin'); END")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # --- reading -------------------------------------------------------------------------

    def origins(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT origin FROM ledger_leaves UNION "
                                 "SELECT DISTINCT origin FROM ledger_checkpoints ORDER BY 1")
        return [r[0] for r in rows]

    def head(self, origin: str) -> tuple[int, bytes]:
        """(size, leaf hash of the last leaf or 32 zero bytes)."""
        row = self.conn.execute("SELECT seq, leaf_hash FROM ledger_leaves WHERE origin = ? "
                                "ORDER BY seq DESC LIMIT 1", (origin,)).fetchone()
        return (0, ZERO_HASH) if row is None else (row[0] + 1, bytes(row[1]))

    def size(self, origin: str) -> int:
        return self.head(origin)[0]

    def leaves(self, origin: str, start: int = 0, end: int | None = None) -> list[bytes]:
        end = end if end is not None else 2**62
        rows = self.conn.execute("SELECT leaf FROM ledger_leaves WHERE origin = ? AND seq >= ? AND seq < ? "
                                 "ORDER BY seq", (origin, start, end))
        return [bytes(r[0]) for r in rows]

    def events(self, origin: str, start: int = 0, limit: int | None = None) -> list[dict]:
        """The browsing projection of a log's leaves (seq, type, event id, actor, time, key id)."""
        rows = self.conn.execute(
            "SELECT seq, event_type, event_id, actor, time, keyid, leaf_hash FROM ledger_leaves "
            "WHERE origin = ? AND seq >= ? ORDER BY seq LIMIT ?", (origin, start, limit or -1))
        return [{"seq": r[0], "type": r[1], "event_id": r[2], "actor": r[3], "time": r[4], "keyid": r[5],
                 "leaf_hash": bytes(r[6]).hex()} for r in rows]

    def leaf_hashes(self, origin: str) -> list[bytes]:
        rows = self.conn.execute("SELECT leaf_hash FROM ledger_leaves WHERE origin = ? ORDER BY seq",
                                 (origin,))
        return [bytes(r[0]) for r in rows]

    def _get(self, origin: str):
        def get(level: int, index: int) -> bytes:
            if level == 0:
                row = self.conn.execute("SELECT leaf_hash FROM ledger_leaves WHERE origin = ? AND seq = ?",
                                        (origin, index)).fetchone()
            else:
                row = self.conn.execute("SELECT hash FROM ledger_nodes WHERE origin = ? AND level = ? "
                                        "AND idx = ?", (origin, level, index)).fetchone()
            if row is None:
                raise ProofError(f"{origin}: no stored hash for level {level} index {index}",
                                 hint="the store is incomplete; run `mreg verify`")
            return bytes(row[0])
        return get

    def _frontier(self, origin: str, size: int) -> Frontier:
        f = self._frontiers.get(origin)
        if f is None or f.size != size:
            f = Frontier.load(size, self._get(origin))
            self._frontiers[origin] = f
        return f

    def root(self, origin: str, size: int | None = None) -> bytes:
        """The tree root of ``origin`` at ``size`` (default: now) from stored subtree hashes."""
        current = self.size(origin)
        size = current if size is None else size
        if not 0 <= size <= current:
            raise ProofError(f"{origin} has {current} leaves, not {size}", found=current, expected=size,
                             hint="ask for a size the log has reached")
        if size == 0:
            return EMPTY_ROOT
        return subtree_root(0, size, self._get(origin))

    def inclusion_proof(self, origin: str, index: int, size: int) -> list[bytes]:
        self._check_size(origin, size)
        return inclusion_path(index, size, self._get(origin))

    def consistency_proof(self, origin: str, size1: int, size2: int) -> list[bytes]:
        self._check_size(origin, size2)
        return consistency_path(size1, size2, self._get(origin))

    def _check_size(self, origin: str, size: int) -> None:
        current = self.size(origin)
        if size > current:
            raise ProofError(f"{origin} has {current} leaves, not {size}", found=current, expected=size,
                             hint="ask for a size the log has reached")

    # --- appending -------------------------------------------------------------------------

    def _insert(self, origin: str, rows: list[tuple], nodes: list[tuple]) -> None:
        self.conn.executemany(
            "INSERT INTO ledger_leaves (origin, seq, leaf, leaf_hash, event_type, event_id, actor, time, "
            "keyid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self.conn.executemany("INSERT INTO ledger_nodes (origin, level, idx, hash) VALUES (?, ?, ?, ?)",
                              nodes)

    def append(self, origin: str, statement: dict, signer) -> bytes:
        """Sign ``statement``, build the next leaf of ``origin`` and store it; return the leaf bytes."""
        return self.append_many(origin, [statement], signer)[0]

    def append_many(self, origin: str, statements: Iterable[dict], signer, *, processes: int = 1,
                    payloads: list[bytes] | None = None, signatures: list[str] | None = None) -> list[bytes]:
        """Append several statements in one transaction (one fsync).

        With ``processes`` = 1 the statements are validated, canonicalised and signed
        before the write lock is taken (an envelope does not depend on its position).
        With ``processes`` > 1 and a batch of 1,000 or more, signing runs in a pool of
        worker processes (kept for the store's lifetime) while this process builds and
        inserts the leaves chunk by chunk, under the write lock.

        ``payloads``: each statement's canonical bytes as ``new_statement_bytes`` returned them
        with it (validated there): they are signed as they are, not validated and serialised again.
        ``signatures``: with ``payloads``, each payload's base64 DSSE signature made by ``signer``
        in a worker process of this one (``sign_payloads``); they are stored as given.
        """
        statements = list(statements)
        if payloads is not None and processes == 1:
            if len(payloads) != len(statements) or (signatures is not None and len(signatures) != len(payloads)):
                raise ValueError("one payload (and signature) per statement")
            if signatures is None:
                signed = [_sign_payload(origin, stmt, payload, signer) for stmt, payload in zip(statements, payloads)]
            else:
                signed = []
                for stmt, payload, sig64 in zip(statements, payloads, signatures):
                    _check_origin(origin, stmt)
                    signed.append((_b64e(payload).decode(), sig64))
            self.conn.execute("BEGIN IMMEDIATE")
            return self._append_signed(origin, signer.keyid, [(statements, signed)])
        if processes > 1 and len(statements) >= 1000:
            pool = self._signing_pool(signer, processes)
            size = max(100, -(-len(statements) // (processes * 8)))
            chunks = [(origin, statements[i:i + size]) for i in range(0, len(statements), size)]
            self.conn.execute("BEGIN IMMEDIATE")
            return self._append_signed(origin, signer.keyid, (
                (chunk, signed) for (_, chunk), signed in zip(chunks, pool.imap(_sign_chunk, chunks))))
        signed = [_sign_one(origin, stmt, signer) for stmt in statements]
        self.conn.execute("BEGIN IMMEDIATE")
        return self._append_signed(origin, signer.keyid, [(statements, signed)])

    def _append_signed(self, origin: str, keyid: str, parts) -> list[bytes]:
        """Inside BEGIN IMMEDIATE: chain, hash and insert signed statements; commit."""
        out: list[bytes] = []
        try:
            seq, prev = self.head(origin)
            frontier = self._frontier(origin, seq)
            for stmts, signed in parts:
                rows, nodes = [], []
                for stmt, (payload64, sig64) in zip(stmts, signed):
                    leaf = signed_leaf(seq, prev, payload64, keyid, sig64)
                    lh = _stage(origin, frontier, rows, nodes, seq, leaf, stmt, keyid)
                    out.append(leaf)
                    seq, prev = seq + 1, lh
                self._insert(origin, rows, nodes)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._frontiers.pop(origin, None)
            raise
        return out

    def _signing_pool(self, signer, processes: int):
        key = (signer.seed, signer.comment, processes)
        if getattr(self, "_pool_key", None) != key:
            self._close_pool()
            from ledger.workers import context

            ctx = context()
            self._pool = ctx.Pool(processes, initializer=_init_worker, initargs=(signer.seed, signer.comment))
            self._pool_key = key
        return self._pool

    def _close_pool(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.terminate()
            pool.join()
        self._pool, self._pool_key = None, None

    def add_leaves(self, origin: str, leaves: list[bytes]) -> None:
        """Store leaves built elsewhere (a target's mirror): contiguous, chained, canonical.

        A leaf equal to the stored one at its seq is a no-op; a different one raises ``ForkError``.
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            size, prev = self.head(origin)
            frontier = self._frontier(origin, size)
            rows, nodes = [], []
            for raw in leaves:
                raw = bytes(raw)
                leaf = parse_leaf(raw)
                if leaf.seq < size:
                    stored = self.conn.execute("SELECT leaf FROM ledger_leaves WHERE origin = ? AND seq = ?",
                                               (origin, leaf.seq)).fetchone()
                    if stored is not None and bytes(stored[0]) == raw:
                        continue
                    raise ForkError(f"{origin} seq {leaf.seq}: leaf differs from the stored one (fork)",
                                    log=origin, seq=leaf.seq, field="leaf",
                                    expected=leaf_hash(bytes(stored[0])).hex() if stored else None,
                                    found=leaf_hash(raw).hex(),
                                    hint="two histories of one log exist; run `mreg verify` and "
                                         "compare the target's mirror with catalog.db")
                if leaf.seq != size:
                    raise StoreError(f"{origin}: leaf seq {leaf.seq} leaves a gap after {size - 1}",
                                     log=origin, seq=leaf.seq, field="seq", expected=size, found=leaf.seq,
                                     hint="pull the missing leaves first (`mreg sync`)")
                if leaf.prev != prev:
                    raise StoreError(f"{origin} seq {leaf.seq}: prev does not match the last leaf hash",
                                     log=origin, seq=leaf.seq, field="prev", expected=prev.hex(),
                                     found=leaf.prev.hex(), hint="the leaf belongs to another history")
                stmt = leaf.statement
                if stmt.get("ledger") != origin:
                    raise StoreError(f"{origin} seq {leaf.seq}: statement is for {stmt.get('ledger')!r}",
                                     log=origin, seq=leaf.seq, field="ledger", expected=origin,
                                     found=stmt.get("ledger"), hint="a statement of another log (replay)")
                lh = _stage(origin, frontier, rows, nodes, leaf.seq, raw, stmt, leaf.keyids[0])
                size, prev = size + 1, lh
            self._insert(origin, rows, nodes)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._frontiers.pop(origin, None)
            raise

    def add_built_leaves(self, origin: str, items: list[tuple[bytes, int, bytes, dict, str]]) -> None:
        """Store leaves this process built and a target's mirror accepted: ``(leaf, seq, prev,
        statement, keyid)`` each, the leaf made by ``signed_leaf``/``build_leaf`` from that statement
        (validated by ``new_statement_bytes``). The chain is checked as ``add_leaves`` checks it;
        the bytes are not parsed again. Anything unexpected goes through ``add_leaves``."""
        if not items:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            size, prev = self.head(origin)
            if items[0][1] != size or items[0][2] != prev:
                self.conn.execute("ROLLBACK")
                return self.add_leaves(origin, [item[0] for item in items])
            frontier = self._frontier(origin, size)
            rows, nodes = [], []
            for leaf, seq, leaf_prev, stmt, keyid in items:
                if seq != size or leaf_prev != prev or stmt.get("ledger") != origin:
                    raise StoreError(f"{origin} seq {seq}: not the next leaf of this log", log=origin, seq=seq,
                                     field="seq", expected=size, found=seq,
                                     hint="pull the missing leaves first (`mreg sync`)")
                lh = _stage(origin, frontier, rows, nodes, seq, leaf, stmt, keyid)
                size, prev = size + 1, lh
            self._insert(origin, rows, nodes)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._frontiers.pop(origin, None)
            raise

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, origin: str, signer) -> str:
        """Sign and store a checkpoint of ``origin`` at its current size; return the note text."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            size, _ = self.head(origin)
            root = self._frontier(origin, size).root()
            self._check_extends_last_checkpoint(origin, size)
            text = sign_checkpoint(origin, size, root, signer)
            self.conn.execute("INSERT OR IGNORE INTO ledger_checkpoints (origin, size, root, note, created) "
                              "VALUES (?, ?, ?, ?, ?)", (origin, size, root, text, utc_now()))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return text

    def _check_extends_last_checkpoint(self, origin: str, size: int) -> None:
        """Refuse to sign a tree that does not extend the largest stored checkpoint."""
        row = self.conn.execute("SELECT size, root FROM ledger_checkpoints WHERE origin = ? "
                                "ORDER BY size DESC, id DESC LIMIT 1", (origin,)).fetchone()
        if row is None:
            return
        last, last_root = row[0], bytes(row[1])
        if last > size:
            raise StoreError(f"{origin} has {size} leaves but a checkpoint of size {last} exists",
                             log=origin, seq=size, field="size", expected=f">= {last}", found=size,
                             hint="the log was truncated; restore it from a mirror or bundle "
                                  "(`mreg verify` names what is missing)")
        if last and subtree_root(0, last, self._get(origin)) != last_root:
            raise ForkError(f"{origin}: the first {last} leaves no longer match the checkpoint of size {last}",
                            log=origin, seq=last - 1, field="root", expected=last_root.hex(),
                            hint="the log was rewritten; run `mreg verify` before signing anything")

    def add_checkpoint(self, note_text: str) -> None:
        """Store a checkpoint received from elsewhere (a mirror, a witness); signatures unchecked."""
        cp = parse_checkpoint(note_text)
        self.conn.execute("INSERT OR IGNORE INTO ledger_checkpoints (origin, size, root, note, created) "
                          "VALUES (?, ?, ?, ?, ?)", (cp.origin, cp.size, cp.root, note_text, utc_now()))

    def checkpoints(self, origin: str) -> list[str]:
        rows = self.conn.execute("SELECT note FROM ledger_checkpoints WHERE origin = ? ORDER BY size, id",
                                 (origin,))
        return [r[0] for r in rows]

    def latest_checkpoint(self, origin: str) -> str | None:
        row = self.conn.execute("SELECT note FROM ledger_checkpoints WHERE origin = ? "
                                "ORDER BY size DESC, id DESC LIMIT 1", (origin,)).fetchone()
        return row[0] if row else None

    def record_witness(self, origin: str, witness: str, note_text: str, timestamp: int) -> None:
        """Remember that ``witness`` cosigned the checkpoint in ``note_text``."""
        cp = parse_body(parse_note(note_text).text)
        if cp.origin != origin:
            raise StoreError(f"checkpoint is for {cp.origin}, not {origin}", field="origin",
                             expected=origin, found=cp.origin, hint="record it under its own origin")
        self.conn.execute("INSERT OR IGNORE INTO ledger_witness_state (origin, witness, size, root, "
                          "timestamp, note) VALUES (?, ?, ?, ?, ?, ?)",
                          (origin, witness, cp.size, cp.root, timestamp, note_text))

    def witness_state(self, origin: str) -> list[dict]:
        rows = self.conn.execute("SELECT witness, size, root, timestamp, note FROM ledger_witness_state "
                                 "WHERE origin = ? ORDER BY witness, size", (origin,))
        return [{"witness": w, "size": s, "root": bytes(r), "timestamp": t, "note": n}
                for w, s, r, t, n in rows]


def _sign_one(origin: str, stmt: dict, signer) -> tuple[str, str]:
    """Validate, canonicalise and sign a statement: (base64 payload, base64 signature)."""
    return _sign_payload(origin, stmt, statement_bytes(stmt), signer)


def _sign_payload(origin: str, stmt: dict, payload: bytes, signer) -> tuple[str, str]:
    """Sign a statement's canonical bytes ``payload``: (base64 payload, base64 signature)."""
    _check_origin(origin, stmt)
    return _b64e(payload).decode(), sign_payloads([payload], signer)[0]


def _check_origin(origin: str, stmt: dict) -> None:
    if stmt["ledger"] != origin:
        raise StatementError(f"statement is for ledger {stmt['ledger']!r}, not {origin!r}",
                             field="ledger", expected=origin, found=stmt["ledger"],
                             hint="build the statement with ledger=<the log's origin>")


def sign_payloads(payloads: list[bytes], signer) -> list[str]:
    """The base64 DSSE signatures of statements' canonical bytes (``append_many(signatures=...)``)."""
    return [_b64e(signer.sign(b"DSSEv1 %d %s %d %s" % (len(_PTYPE), _PTYPE, len(p), p))).decode()
            for p in payloads]


_PTYPE = PAYLOAD_TYPE.encode()


_worker: dict = {}


def _stage(origin: str, frontier, rows: list, nodes: list, seq: int, leaf: bytes, stmt: dict, keyid: str) -> bytes:
    """Queue one leaf's row and the tree nodes it completes for ``_insert``; return its leaf hash."""
    lh = leaf_hash(leaf)
    rows.append((origin, seq, leaf, lh, stmt.get("type"), stmt.get("event_id"), stmt.get("actor"), stmt.get("time"),
                 keyid))
    nodes.extend((origin, level, idx, h) for level, idx, h in frontier.append(lh))
    return lh


def _init_worker(seed: bytes, comment: str) -> None:
    from ledger.keys import Signer
    from ledger.workers import worker_signals

    worker_signals()
    _worker["signer"] = Signer.from_seed(seed, comment)


def _sign_chunk(args: tuple[str, list[dict]]) -> list[tuple[str, str]]:
    origin, chunk = args
    return [_sign_one(origin, stmt, _worker["signer"]) for stmt in chunk]


__all__ = ["LedgerStore", "StoreError", "ForkError", "LeafError"]
