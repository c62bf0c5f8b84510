"""Checkpoints: C2SP tlog-checkpoint bodies in the signed-note format.

The body is three lines, each ending in a newline:

    <origin>
    <tree size, ASCII decimal without leading zeros>
    <base64 of the 32-byte root hash>

followed (in a signed checkpoint) by a blank line and note signature lines.
mreg signs a checkpoint with the operator's Ed25519 key under the key name
``<origin>`` (note key type 0x01), so the log's verifier key for an operator
is ``<origin>+<hex id>+<base64(0x01 ‖ public key)>`` and several operators can
sign checkpoints of one shared log. Witnesses add ``cosignature/v1`` lines.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import LedgerError
from ledger.note import ALG_ED25519, NoteSigner, Verifier, key_id, parse, verify_detail

_SIZE = re.compile(r"^(0|[1-9][0-9]*)$")


class CheckpointError(LedgerError):
    """A checkpoint body is malformed, or its signatures do not satisfy the policy."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    @property
    def body(self) -> str:
        return body(self.origin, self.size, self.root, self.extensions)


def body(origin: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    """The checkpoint's note text."""
    if not origin or "\n" in origin:
        raise CheckpointError(f"bad origin {origin!r}", hint="an origin is one non-empty line")
    lines = [origin, str(size), base64.b64encode(root).decode()] + list(extensions)
    return "".join(line + "\n" for line in lines)


def parse_body(text: str) -> Checkpoint:
    """Parse a checkpoint's note text (signatures already split off)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint body needs origin, size and root lines",
                              found=text[:80], hint="the checkpoint is truncated or malformed")
    origin, size, root64 = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin is empty", field="origin", hint="the checkpoint is malformed")
    if not _SIZE.match(size):
        raise CheckpointError(f"checkpoint size {size!r} is not a decimal", field="size", found=size,
                              hint="the checkpoint is malformed")
    try:
        root = base64.b64decode(root64, validate=True)
    except (binascii.Error, ValueError):
        root = b""
    if len(root) != 32 or base64.b64encode(root).decode() != root64:
        raise CheckpointError("checkpoint root is not base64 of 32 bytes", field="root", found=root64,
                              hint="the checkpoint is malformed")
    ext = tuple(lines[3:-1])
    if any(not e for e in ext):
        raise CheckpointError("empty extension line in checkpoint", field="extensions",
                              hint="the checkpoint is malformed")
    return Checkpoint(origin, int(size), root, ext)


def parse_checkpoint(note_text: str) -> Checkpoint:
    """Parse a signed checkpoint (signatures are not checked here)."""
    return parse_body(parse(note_text).text)


def log_verifier(origin: str, public: bytes) -> Verifier:
    """The note verifier for an operator key signing checkpoints of ``origin``."""
    return Verifier(origin, key_id(origin, ALG_ED25519, public), ALG_ED25519, public)


def _private(signer) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(signer.seed)


def sign_checkpoint(origin: str, size: int, root: bytes, signer) -> str:
    """Sign a checkpoint with a ``ledger.keys.Signer`` under the key name ``origin``."""
    ns = NoteSigner(origin, _private(signer))
    text = body(origin, size, root)
    return text + "\n" + ns.signature_line(text)


def cosign(note_text: str, name: str, private: Ed25519PrivateKey, timestamp: int) -> str:
    """Add a witness ``cosignature/v1`` line to a signed checkpoint."""
    from ledger.note import ALG_COSIGNATURE_V1

    note = parse(note_text)
    parse_body(note.text)
    ns = NoteSigner(name, private, ALG_COSIGNATURE_V1)
    return note_text + ns.signature_line(note.text, timestamp)


@dataclass(frozen=True)
class VerifiedCheckpoint:
    checkpoint: Checkpoint
    log_keys: tuple[str, ...]  # names+ids of the log keys that signed
    witnesses: tuple[str, ...]  # names of witnesses whose cosignatures verified


def verify_checkpoint(note_text: str, log_keys: list[bytes], witness_keys: list[str] = (),
                      quorum: int = 0, origin: str | None = None) -> VerifiedCheckpoint:
    """Verify a checkpoint: a signature by one of ``log_keys`` (raw Ed25519 keys) under its
    origin's name, and cosignatures from at least ``quorum`` of ``witness_keys`` (vkeys, 0x04)."""
    note = parse(note_text)
    cp = parse_body(note.text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint is for {cp.origin!r}, not {origin!r}", field="origin",
                              expected=origin, found=cp.origin, hint="a checkpoint of another log")
    verifiers: list[Verifier | str] = [log_verifier(cp.origin, k) for k in log_keys]
    verifiers += list(witness_keys)
    from ledger.note import NoteError

    try:
        _, verified = verify_detail(note_text, verifiers)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint of {cp.origin} size {cp.size}: {exc.message}",
                              field="signature", hint=exc.hint or "sign it with a trusted log key",
                              found=exc.data.get("found")) from None
    logs = tuple(f"{v.name}+{v.id.hex()}" for v, _ in verified if v.alg == ALG_ED25519
                 and v.name == cp.origin)
    wits = tuple(sorted({v.name for v, _ in verified if v.alg != ALG_ED25519}))
    if not logs:
        raise CheckpointError(f"checkpoint of {cp.origin} size {cp.size} has no signature by a "
                              "trusted log key", field="signature", expected="a log key in the policy",
                              found=", ".join(s.name for s in note.signatures),
                              hint="sign checkpoints with a key listed in allowed_signers/policy")
    if len(wits) < quorum:
        raise CheckpointError(f"checkpoint of {cp.origin} size {cp.size} has {len(wits)} witness "
                              f"cosignatures, policy needs {quorum}", field="cosignature",
                              expected=quorum, found=len(wits),
                              hint="ask the policy's witnesses to cosign (witness state)")
    return VerifiedCheckpoint(cp, logs, wits)
