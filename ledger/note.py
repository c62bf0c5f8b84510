"""Signed notes (Go's golang.org/x/mod/sumdb/note, C2SP signed-note) and cosignature/v1.

A note is UTF-8 text ending in a newline, a blank line, then signature lines

    — <name> <base64(key id (4 bytes, big-endian) ‖ signature)>

(U+2014 em dash, space, name, space, base64, newline). The key id is the first
four bytes of ``SHA-256(name ‖ "\\n" ‖ type ‖ public key)``: type 0x01 for an
Ed25519 note signature over the text, 0x04 for a C2SP ``cosignature/v1``
whose signature field is ``timestamp (8 bytes, big-endian) ‖ Ed25519 sig`` over

    "cosignature/v1\\n" "time <timestamp>\\n" <note text>

Verifier keys are written ``<name>+<8 hex id>+<base64(type ‖ public key)>``,
signer keys ``PRIVATE+KEY+<name>+<8 hex id>+<base64(0x01 ‖ seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerError

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
EM_DASH = "\u2014"
SIG_PREFIX = EM_DASH + " "
MAX_SIGNATURES = 100


class NoteError(LedgerError):
    """A note is malformed, a known key's signature is invalid, or no trusted key signed it."""


def key_id(name: str, alg: int, public: bytes) -> bytes:
    """The 4-byte key id: ``SHA-256(name ‖ 0x0A ‖ alg ‖ public)[:4]``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public).digest()[:4]


def valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def verifier_key(name: str, public: bytes, alg: int = ALG_ED25519) -> str:
    """``<name>+<hex id>+<base64(alg ‖ public)>``."""
    if not valid_name(name):
        raise NoteError(f"invalid key name {name!r}", hint="names may not be empty or contain spaces or +")
    kid = key_id(name, alg, public).hex()
    return f"{name}+{kid}+{base64.b64encode(bytes([alg]) + public).decode()}"


@dataclass(frozen=True)
class Verifier:
    """A parsed verifier key."""

    name: str
    id: bytes
    alg: int
    public: bytes

    @property
    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)

    def __str__(self) -> str:
        return verifier_key(self.name, self.public, self.alg)


def parse_verifier(vkey: str) -> Verifier:
    """Parse ``<name>+<hex8>+<base64>``; the hex id must match the key."""
    name, _, rest = vkey.strip().partition("+")
    hex8, _, b64 = rest.partition("+")
    try:
        raw = base64.b64decode(b64, validate=True)
        kid = bytes.fromhex(hex8)
    except (binascii.Error, ValueError):
        raise NoteError(f"malformed verifier key {vkey!r}", hint="expected <name>+<hex8>+<base64>") from None
    if len(hex8) != 8 or not valid_name(name) or len(raw) != 33:
        raise NoteError(f"malformed verifier key {vkey!r}", hint="expected <name>+<hex8>+<base64(type||key)>")
    alg, public = raw[0], raw[1:]
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError(f"verifier key {name} has unknown type 0x{alg:02x}",
                        hint="supported: 0x01 Ed25519, 0x04 cosignature/v1")
    if key_id(name, alg, public) != kid:
        raise NoteError(f"verifier key {name}: id {hex8} does not match the key", found=hex8,
                        expected=key_id(name, alg, public).hex(), hint="the key was altered")
    return Verifier(name, kid, alg, public)


class NoteSigner:
    """Signs note text as ``name`` with an Ed25519 key (type 0x01) or as a cosigner (0x04)."""

    def __init__(self, name: str, private: Ed25519PrivateKey, alg: int = ALG_ED25519) -> None:
        if not valid_name(name):
            raise NoteError(f"invalid signer name {name!r}", hint="no spaces, no +, not empty")
        self.name = name
        self.alg = alg
        self._key = private
        from cryptography.hazmat.primitives import serialization

        self.public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw)
        self.id = key_id(name, alg, self.public)

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse Go's ``PRIVATE+KEY+<name>+<hex8>+<base64(0x01 ‖ seed)>``."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("malformed signer key", hint="expected PRIVATE+KEY+<name>+<hex8>+<base64>")
        raw = base64.b64decode(parts[4], validate=True)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signer key is not an Ed25519 seed", hint="type byte must be 0x01")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.id.hex() != parts[3]:
            raise NoteError("signer key id does not match its key", found=parts[3],
                            expected=signer.id.hex(), hint="the key was altered")
        return signer

    @property
    def vkey(self) -> str:
        return verifier_key(self.name, self.public, self.alg)

    def signature_line(self, text: str, timestamp: int | None = None) -> str:
        msg = text.encode("utf-8")
        if self.alg == ALG_COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp < 2**63:
                raise NoteError("a cosignature needs a timestamp", hint="pass the POSIX time")
            sig = struct.pack(">Q", timestamp) + self._key.sign(cosigned_message(text, timestamp))
        else:
            sig = self._key.sign(msg)
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.id + sig).decode()}\n"


def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode("utf-8")


def sign(text: str, *signers: NoteSigner, timestamp: int | None = None) -> str:
    """The signed note: ``text``, a blank line and one signature line per signer."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline", hint="append \\n to the text")
    return text + "\n" + "".join(s.signature_line(text, timestamp) for s in signers)


@dataclass(frozen=True)
class Signature:
    name: str
    id: bytes
    b64: str
    line: str


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]


def parse(msg: str) -> Note:
    """Split a signed note into its text and signature lines (checks syntax only)."""
    if not isinstance(msg, str):
        raise NoteError("note must be text", hint="decode the bytes as UTF-8")
    for ch in msg:
        if ch < " " and ch != "\n":
            raise NoteError("note contains a control character", hint="the note was altered")
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures", hint="the note is malformed")
    text, block = msg[:split + 1], msg[split + 2:]
    if not block or not block.endswith("\n"):
        raise NoteError("note has no signature lines", hint="the note is unsigned or truncated")
    sigs = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {line[:40]!r}", hint="lines start with '— '")
        name, _, b64 = line[len(SIG_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError(f"signature of {name} is not base64", hint="the note was altered") from None
        if not valid_name(name) or not b64 or len(raw) < 5:
            raise NoteError(f"malformed signature line {line[:40]!r}", hint="the note was altered")
        sigs.append(Signature(name, raw[:4], b64, line))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteError("note has more than 100 signatures", hint="the note is malformed")
    return Note(text, tuple(sigs))


def verify_detail(msg: str, verifier_keys: list[str] | list[Verifier]
                  ) -> tuple[Note, list[tuple[Verifier, int | None]]]:
    """Verify; return the note and each verifying key with its cosignature timestamp (or None)."""
    if isinstance(msg, (bytes, bytearray)):
        try:
            msg = bytes(msg).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("note is not UTF-8", hint="the note was altered") from None
    note = parse(msg)
    known: dict[tuple[str, bytes], Verifier] = {}
    ambiguous: set[tuple[str, bytes]] = set()
    for k in verifier_keys:
        v = k if isinstance(k, Verifier) else parse_verifier(k)
        if (v.name, v.id) in known:
            ambiguous.add((v.name, v.id))  # as Go's VerifierList: an error only if a signature uses it
        known[(v.name, v.id)] = v
    verified: list[tuple[Verifier, int | None]] = []
    seen: set[tuple[str, bytes]] = set()
    text = note.text.encode("utf-8")
    for sig in note.signatures:
        v = known.get((sig.name, sig.id))
        if v is None or (sig.name, sig.id) in seen:
            continue
        if (sig.name, sig.id) in ambiguous:
            raise NoteError(f"ambiguous key {sig.name}+{sig.id.hex()}", hint="list each verifier key once")
        seen.add((sig.name, sig.id))
        raw = base64.b64decode(sig.b64)[4:]
        stamp = None
        try:
            if v.alg == ALG_COSIGNATURE_V1:
                if len(raw) != 72:
                    raise InvalidSignature
                stamp = struct.unpack(">Q", raw[:8])[0]
                v.key.verify(raw[8:], cosigned_message(note.text, stamp))
            else:
                v.key.verify(raw, text)
        except InvalidSignature:
            raise NoteError(f"invalid signature for key {sig.name}+{sig.id.hex()}", field="signature",
                            found=sig.name, hint="the note text was altered after signing") from None
        verified.append((v, stamp))
    if not verified:
        raise NoteError("note has no verifiable signatures", field="signature",
                        found=", ".join(s.name for s in note.signatures),
                        hint="none of its signers is a trusted key")
    return note, verified


def verify(text: str, verifier_keys: list[str]) -> list[str]:
    """Names of the keys in ``verifier_keys`` that signed ``text``; raise ``NoteError`` if none did."""
    return [v.name for v, _ in verify_detail(text, verifier_keys)[1]]
