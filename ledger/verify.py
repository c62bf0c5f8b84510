"""Verification of a log: leaves, chain, signatures, checkpoints. Verdicts name what and where.

``verify_log`` recomputes everything from the leaf bytes and never trusts
stored node hashes. Each problem is a ``Finding`` naming the log, seq, field,
expected and found values and its ``kind``:

- ``canonical``: leaf or statement bytes are not RFC 8785 canonical
- ``base64``: a base64 field is not standard padded base64 (URL-safe, unpadded, …)
- ``leaf``: the leaf's shape, version or payload type is wrong
- ``statement``: the statement breaks the schema (SPEC §5)
- ``reordered``: the leaf's ``seq`` differs from its position (events swapped or moved)
- ``chain``: ``prev`` differs from the hash of the previous leaf (a leaf edited, removed or inserted)
- ``wrong-ledger``: the statement was signed for another log
- ``replay``: an ``event_id`` appears twice (an envelope replayed)
- ``unknown-key`` / ``revoked-key`` / ``key-validity``: the signer was not trusted at the statement's time
- ``signature``: the DSSE signature does not verify (a byte of the statement or envelope edited)
- ``checkpoint-signature``: a checkpoint is not signed as the policy requires
- ``truncated``: a checkpoint covers more leaves than the log has
- ``rewritten``: the log's root at a checkpoint's size differs from the checkpoint's root
- ``fork``: two verified checkpoints of one size carry different roots
- ``unanchored`` (warning): leaves beyond the last checkpoint
"""

from __future__ import annotations

import base64
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature

from ledger.checkpoint import CheckpointError, parse_checkpoint, verify_checkpoint
from ledger.dsse import PAYLOAD_TYPE, pae
from ledger.keys import Trust
from ledger.log import ZERO_HASH, LeafError, parse_leaf
from ledger.merkle import EMPTY_ROOT, Frontier, leaf_hash
from ledger.note import NoteError
from ledger.policy import Policy
from ledger.statement import StatementError, validate_statement


@dataclass(frozen=True)
class Finding:
    """One verdict: what is wrong, where, and what was expected instead."""

    log: str
    seq: int | None
    field: str
    expected: object
    found: object
    kind: str
    message: str
    severity: str = "error"

    def line(self) -> str:
        seq = "-" if self.seq is None else self.seq
        return (f"{self.kind}: log={self.log} seq={seq} field={self.field} "
                f"expected={_short(self.expected)} found={_short(self.found)}: {self.message}")

    def as_dict(self) -> dict:
        return asdict(self)


def _short(value: object) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class LogReport:
    """The verdict on one log."""

    origin: str
    size: int
    root: bytes
    findings: list[Finding] = field(default_factory=list)
    checkpoints: int = 0
    checkpoint_size: int | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"origin": self.origin, "size": self.size, "root": base64.b64encode(self.root).decode(),
                "checkpoints": self.checkpoints, "checkpoint_size": self.checkpoint_size,
                "ok": self.ok, "findings": [f.as_dict() for f in self.findings]}


BLOCK = 512  # leaves parsed together, then their signatures verified together (cache locality)


def _scan(origin: str, start: int, leaves: Sequence[bytes], trust: Trust
          ) -> tuple[list[tuple[bytes, int | None, bytes | None, str | None]], list[Finding]]:
    """Per-leaf checks that need no neighbour: parse, schema, ledger, key validity, signature."""
    out: list[tuple[bytes, int | None, bytes | None, str | None]] = []
    findings: list[Finding] = []
    add = findings.append
    for first in range(0, len(leaves), BLOCK):
        pending = []
        for pos, raw in enumerate(leaves[first:first + BLOCK], start + first):
            lh = leaf_hash(raw)
            try:
                leaf = parse_leaf(raw)
            except LeafError as exc:
                add(Finding(origin, pos, exc.field, exc.expected, exc.found, exc.kind, exc.message))
                out.append((lh, None, None, None))
                continue
            stmt = leaf.statement
            try:
                validate_statement(stmt, canonical=False)
            except StatementError as exc:
                add(Finding(origin, pos, f"statement.{exc.data.get('field', '')}".rstrip("."),
                            exc.data.get("expected"), exc.data.get("found"), "statement", exc.message))
                out.append((lh, leaf.seq, leaf.prev, stmt.get("event_id") if isinstance(stmt, dict) else None))
                continue
            out.append((lh, leaf.seq, leaf.prev, stmt["event_id"]))
            if stmt["ledger"] != origin:
                add(Finding(origin, pos, "statement.ledger", origin, stmt["ledger"], "wrong-ledger",
                            "statement was signed for another log"))
            pending.append((pos, leaf, pae(PAYLOAD_TYPE, leaf.payload)))
        _check_signatures(origin, pending, trust, add)
    return out, findings


def _check_signatures(origin: str, pending: list, trust: Trust, add) -> None:
    keys = trust.public_keys
    judge = trust.judge
    always = trust.always_valid
    for pos, leaf, message in pending:
        stmt = leaf.statement
        moment = None
        problems = []
        for i, (keyid, raw_sig) in enumerate(zip(leaf.keyids, leaf.signatures)):
            if always(keyid):
                verdict = None
            else:
                moment = moment or datetime.fromisoformat(stmt["time"])
                verdict = judge(keyid, moment)
            if verdict is not None:
                problems.append((i, keyid, verdict))
                continue
            try:
                keys[keyid].verify(raw_sig, message)
                break
            except InvalidSignature:
                problems.append((i, keyid, "signature"))
        else:
            for i, keyid, verdict in problems:
                text = {"unknown-key": "signed by a key not in allowed_signers",
                        "revoked-key": f"key was revoked at {stmt['time']}",
                        "key-validity": f"key is outside its valid-after/valid-before window at {stmt['time']}",
                        "signature": "signature does not verify over PAE(payloadType, statement)"}[verdict]
                expected = "trusted key" if verdict != "signature" else "valid Ed25519 signature"
                add(Finding(origin, pos, f"envelope.signatures[{i}]", expected, keyid, verdict, text))


def _scan_job(job: tuple) -> tuple:
    origin, first, leaves, trust = job
    return _scan(origin, first, leaves, trust)


def scan_leaves(origin: str, leaves: Sequence[bytes], trust: Trust, processes: int = 1):
    """Run the per-leaf checks, in ``processes`` worker processes when > 1.

    Workers start as ``ledger.workers.context()`` says (fork only in a single-threaded
    process); each gets its slice of leaves pickled.
    """
    if processes <= 1 or len(leaves) < 4000:
        return _scan(origin, 0, leaves, trust)
    from ledger.workers import context, worker_signals

    chunk = -(-len(leaves) // (processes * 4))
    bounds = [(i, min(i + chunk, len(leaves))) for i in range(0, len(leaves), chunk)]
    jobs = [(origin, first, list(leaves[first:last]), trust) for first, last in bounds]
    with context().Pool(processes, initializer=worker_signals) as pool:
        parts = pool.map(_scan_job, jobs)
    rows: list = []
    findings: list[Finding] = []
    for r, f in parts:
        rows.extend(r)
        findings.extend(f)
    return rows, findings


def verify_log(origin: str, leaves: Sequence[bytes], checkpoints: Iterable[str], trust: Trust,
               policy: Policy, *, processes: int = 1) -> LogReport:
    """Verify one log: every leaf, the chain, and every checkpoint (stored or anchored elsewhere)."""
    notes = list(dict.fromkeys(checkpoints))
    wanted: set[int] = set()  # tree sizes whose root a checkpoint claims
    for note_text in notes:
        try:
            wanted.add(parse_checkpoint(note_text).size)
        except (CheckpointError, NoteError):
            continue
    rows, findings = scan_leaves(origin, leaves, trust, processes)
    add = findings.append
    frontier = Frontier()
    roots = {0: EMPTY_ROOT}
    prev = ZERO_HASH
    seen: dict[str, int] = {}
    for pos, (lh, seq, link, event_id) in enumerate(rows):
        if seq != pos and seq is not None:
            add(Finding(origin, pos, "seq", pos, seq, "reordered",
                        f"leaf at position {pos} says seq {seq}"))
        if link != prev and link is not None:
            add(Finding(origin, pos, "prev", base64.b64encode(prev).decode(),
                        base64.b64encode(link).decode(), "chain",
                        "prev is not the hash of the previous leaf"))
        if event_id is not None:
            first = seen.setdefault(event_id, pos)
            if first != pos:
                add(Finding(origin, pos, "statement.event_id", "a new event_id", event_id, "replay",
                            f"event already recorded at seq {first}"))
        frontier.append(lh)
        if pos + 1 in wanted:
            roots[pos + 1] = frontier.root()
        prev = lh
    findings.sort(key=lambda f: -1 if f.seq is None else f.seq)
    report = LogReport(origin, frontier.size, frontier.root(), findings)
    _check_checkpoints(report, roots, notes, policy)
    return report


def _check_checkpoints(report: LogReport, tree_roots: dict[int, bytes], notes: Iterable[str],
                       policy: Policy) -> None:
    """Check checkpoints against the roots the leaves give (``tree_roots``: size -> root)."""
    origin, add, size = report.origin, report.findings.append, report.size
    roots: dict[int, bytes] = {}
    best: int | None = None
    witnessed: set[int] = set()  # sizes with a checkpoint cosigned by the policy's quorum
    for note_text in notes:
        try:
            cp = parse_checkpoint(note_text)
        except (CheckpointError, NoteError) as exc:
            add(Finding(origin, None, "checkpoint", "a C2SP checkpoint", note_text[:60],
                        "checkpoint-signature", exc.message))
            continue
        last = cp.size - 1 if cp.size else None
        try:
            vc = verify_checkpoint(note_text, policy.keys_for(origin), policy.witnesses, 0, origin)
            if len(vc.witnesses) >= policy.quorum:
                witnessed.add(cp.size)
        except (CheckpointError, NoteError) as exc:
            add(Finding(origin, last, exc.data.get("field") or "checkpoint", exc.data.get("expected")
                        or "signature by a policy log key", exc.data.get("found"), "checkpoint-signature",
                        f"checkpoint size {cp.size}: {exc.message}"))
            continue
        report.checkpoints += 1
        if cp.size in roots and roots[cp.size] != cp.root:
            add(Finding(origin, last, "root", base64.b64encode(roots[cp.size]).decode(),
                        base64.b64encode(cp.root).decode(), "fork",
                        f"two signed checkpoints of size {cp.size} with different roots"))
        roots.setdefault(cp.size, cp.root)
        best = cp.size if best is None else max(best, cp.size)
        if cp.size > size:
            add(Finding(origin, size, "size", f">= {cp.size}", size, "truncated",
                        f"a signed checkpoint covers {cp.size} leaves but the log has {size}"))
            continue
        actual = tree_roots[cp.size]
        if actual != cp.root:
            add(Finding(origin, last, "root", base64.b64encode(cp.root).decode(),
                        base64.b64encode(actual).decode(), "rewritten",
                        f"the first {cp.size} leaves no longer hash to the checkpoint's root"))
    report.checkpoint_size = best
    if best is not None and policy.quorum and best not in witnessed:
        add(Finding(origin, best - 1 if best else None, "cosignature", f"{policy.quorum} witness cosignature(s)",
                    "fewer", "checkpoint-signature",
                    f"the latest checkpoint (size {best}) lacks the policy's witness quorum"))
    if size and (best is None or best < size):
        add(Finding(origin, size - 1, "checkpoint", size, best, "unanchored",
                    "leaves after the last signed checkpoint", severity="warning"))


def default_processes() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
