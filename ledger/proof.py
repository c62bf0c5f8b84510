"""Proof texts: C2SP tlog-proof (inclusion) and mreg's consistency proof text.

Inclusion (c2sp.org/tlog-proof@v1)::

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <n>
    <base64 hash>            (zero or more, leaf's sibling first)

    <signed checkpoint, verbatim>

Consistency (mreg's, same spirit)::

    mreg/tlog-consistency@v1
    old <size1>
    new <size2>
    <base64 hash>            (zero or more, RFC 9162 PROOF order)

The verifying functions take the tree sizes and roots from checkpoints they
verify first (signatures per policy), never from the proof text.
"""

from __future__ import annotations

import base64
import binascii

from ledger.checkpoint import VerifiedCheckpoint, verify_checkpoint
from ledger.errors import LedgerError
from ledger.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from ledger.policy import Policy

INCLUSION_HEADER = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER = "mreg/tlog-consistency@v1"


class ProofTextError(LedgerError):
    """A proof text is malformed."""


def _b64_hash(line: str) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ProofTextError(f"proof line {line[:50]!r} is not base64 of a 32-byte hash",
                             hint="the proof is malformed")
    return raw


def inclusion_text(index: int, proof: list[bytes], checkpoint_note: str, extra: bytes | None = None) -> str:
    lines = [INCLUSION_HEADER]
    if extra is not None:
        lines.append("extra " + base64.b64encode(extra).decode())
    lines.append(f"index {index}")
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_inclusion(text: str) -> tuple[int, list[bytes], str, bytes | None]:
    """(index, proof hashes, checkpoint note, extra)."""
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines or lines[0] != INCLUSION_HEADER:
        raise ProofTextError("not a c2sp.org/tlog-proof@v1 text", hint="the first line must be the header")
    i, extra = 1, None
    if i < len(lines) and lines[i].startswith("extra "):
        extra = base64.b64decode(lines[i][6:])
        i += 1
    if i >= len(lines) or not lines[i].startswith("index "):
        raise ProofTextError("tlog-proof lacks its index line", hint="the proof is malformed")
    num = lines[i][6:]
    if not num.isdigit() or (len(num) > 1 and num[0] == "0"):
        raise ProofTextError(f"bad index {num!r}", hint="the proof is malformed")
    return int(num), [_b64_hash(x) for x in lines[i + 1:]], note, extra


def verify_inclusion_text(text: str, leaf: bytes, policy: Policy, origin: str) -> VerifiedCheckpoint:
    """Verify the checkpoint in a tlog-proof against ``policy``, then ``leaf``'s inclusion in it."""
    index, proof, note, _ = parse_inclusion(text)
    vc = verify_checkpoint(note, policy.keys_for(origin), policy.witnesses, policy.quorum, origin)
    verify_inclusion(leaf_hash(leaf), index, vc.checkpoint.size, proof, vc.checkpoint.root)
    return vc


def consistency_text(size1: int, size2: int, proof: list[bytes]) -> str:
    lines = [CONSISTENCY_HEADER, f"old {size1}", f"new {size2}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n"


def parse_consistency(text: str) -> tuple[int, int, list[bytes]]:
    lines = text.rstrip("\n").split("\n")
    if len(lines) < 3 or lines[0] != CONSISTENCY_HEADER or not lines[1].startswith("old ") \
            or not lines[2].startswith("new ") or not lines[1][4:].isdigit() or not lines[2][4:].isdigit():
        raise ProofTextError("not a mreg/tlog-consistency@v1 text", hint="the proof is malformed")
    return int(lines[1][4:]), int(lines[2][4:]), [_b64_hash(x) for x in lines[3:]]


def verify_consistency_text(text: str, old_note: str, new_note: str, policy: Policy, origin: str) -> None:
    """Verify both checkpoints, then that the proof links their sizes and roots."""
    size1, size2, proof = parse_consistency(text)
    old = verify_checkpoint(old_note, policy.keys_for(origin), policy.witnesses, policy.quorum, origin)
    new = verify_checkpoint(new_note, policy.keys_for(origin), policy.witnesses, policy.quorum, origin)
    if (old.checkpoint.size, new.checkpoint.size) != (size1, size2):
        raise ProofError("proof sizes differ from the checkpoints' sizes", field="size",
                         expected=f"{old.checkpoint.size}->{new.checkpoint.size}", found=f"{size1}->{size2}",
                         hint="use the proof made for these two checkpoints")
    verify_consistency(size1, size2, proof, old.checkpoint.root, new.checkpoint.root)
