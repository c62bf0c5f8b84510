"""Leaves: what a log assigns to a signed envelope.

    leaf = rfc8785({"v": 1, "seq": n, "prev": b64(leaf_hash(leaf n-1) or 32 zero bytes),
                    "envelope": {...DSSE envelope...}})

The stored leaf bytes are the only thing hashed (``leaf_hash = SHA-256(0x00 ‖
leaf)``). ``parse_leaf`` is strict: the leaf and the statement inside must be
canonical RFC 8785 bytes, every base64 field standard padded base64 (RFC 4648
§4; URL-safe or unpadded base64 is refused even though generic DSSE
verification would accept it), the payload type mreg's. Each refusal raises
``LeafError`` naming the field, what was expected and what was found.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from ledger.canonical import (MAX_SAFE_INT, CanonicalError, _check, _no_constant, _no_float, _orjson,
                              canonical_json, dumps_ascii_keys, loads_canonical)
from ledger.dsse import PAYLOAD_TYPE
from ledger.errors import LedgerError
from ledger.merkle import leaf_hash

LEAF_VERSION = 1
ZERO_HASH = bytes(32)

_str = json.JSONEncoder(ensure_ascii=False).encode
# Floats and out-of-range integers are caught after parsing (schema and details checks);
# the re-serialisation comparison catches everything else that is not canonical.
if _orjson is not None:
    _loads_fast = _orjson.loads
else:  # pragma: no cover
    _plain = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant).decode

    def _loads_fast(data: bytes) -> object:
        return _plain(data.decode("ascii"))


class LeafError(LedgerError):
    """A leaf is malformed: not canonical, bad base64, wrong version, type or shape."""

    def __init__(self, message: str, *, field: str, expected: object = None, found: object = None,
                 kind: str = "leaf", hint: str | None = None, **data: object) -> None:
        super().__init__(message, hint=hint or "the leaf bytes were altered or written by another tool",
                         field=field, expected=expected, found=found, **data)
        self.field = field
        self.expected = expected
        self.found = found
        self.kind = kind


def b64_strict(text: object, field: str) -> bytes:
    """Decode standard padded base64 and insist it is the canonical encoding of its bytes."""
    if not isinstance(text, str):
        raise LeafError(f"{field} is not a base64 string", field=field, found=repr(text)[:40],
                        expected="standard base64", kind="base64")
    try:
        raw = _b64d(text)
    except (binascii.Error, ValueError):
        raise LeafError(f"{field} is not standard padded base64", field=field, found=text[:40],
                        expected="RFC 4648 §4 base64 with padding", kind="base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise LeafError(f"{field} is not the canonical base64 of its bytes", field=field,
                        found=text[:40], expected=base64.b64encode(raw).decode()[:40], kind="base64")
    return raw


def build_leaf(seq: int, prev: bytes, envelope: dict) -> bytes:
    """The canonical leaf bytes for ``envelope`` at position ``seq`` after ``prev``."""
    if len(prev) != 32:
        raise LeafError("prev must be a 32-byte hash", field="prev", found=len(prev), expected=32)
    prev64 = base64.b64encode(prev).decode("ascii")
    sigs = envelope.get("signatures")
    # Fast path for the shape sign_envelope makes; identical to rfc8785 on these values.
    if (len(envelope) == 3 and type(sigs) is list and len(sigs) == 1 and type(sigs[0]) is dict
            and len(sigs[0]) == 2 and "keyid" in sigs[0] and "sig" in sigs[0]
            and all(type(v) is str and v.isascii() for v in (envelope.get("payload"),
                    envelope.get("payloadType"), sigs[0]["keyid"], sigs[0]["sig"]))
            and type(seq) is int and 0 <= seq <= 2**53 - 1):
        return ('{"envelope":{"payload":%s,"payloadType":%s,"signatures":[{"keyid":%s,"sig":%s}]},'
                '"prev":"%s","seq":%d,"v":1}' % (
                    _str(envelope["payload"]), _str(envelope["payloadType"]),
                    _str(sigs[0]["keyid"]), _str(sigs[0]["sig"]), prev64, seq)).encode("utf-8")
    try:
        return canonical_json({"v": LEAF_VERSION, "seq": seq, "prev": prev64, "envelope": envelope})
    except CanonicalError as exc:
        raise LeafError(f"envelope: {exc.message}", field="envelope", kind="canonical") from None


_SAFE_KEYID = re.compile(r"[A-Za-z0-9+/:=_.@-]*")
_LEAF_FMT = ('{"envelope":{"payload":"%s","payloadType":"' + PAYLOAD_TYPE + '","signatures":[{"keyid":"%s",'
             '"sig":"%s"}]},"prev":"%s","seq":%d,"v":1}')


def signed_leaf(seq: int, prev: bytes, payload64: str, keyid: str, sig64: str) -> bytes:
    """``build_leaf(seq, prev, envelope)`` for the one-signature envelope of mreg's payload type
    (``payload64``/``sig64``: standard base64 as ``sign_payload`` writes it). The same bytes,
    formatted directly when the key id needs no JSON escape (base64 never does)."""
    if _SAFE_KEYID.fullmatch(keyid) and type(seq) is int and 0 <= seq <= MAX_SAFE_INT and len(prev) == 32:
        return (_LEAF_FMT % (payload64, keyid, sig64, base64.b64encode(prev).decode("ascii"), seq)).encode("ascii")
    return build_leaf(seq, prev, {"payload": payload64, "payloadType": PAYLOAD_TYPE,
                                  "signatures": [{"keyid": keyid, "sig": sig64}]})


class Leaf:
    """A parsed leaf: position, chain link, envelope and the statement it carries.

    ``signatures`` holds the decoded signature bytes and ``keyids`` their key ids, in
    the envelope's order. ``envelope`` is the DSSE envelope as a dict (built on first use).
    """

    __slots__ = ("seq", "prev", "statement", "payload", "raw", "signatures", "keyids", "_envelope", "_parts")

    def __init__(self, seq: int, prev: bytes, envelope: dict | None, statement: dict, payload: bytes,
                 raw: bytes, signatures: tuple[bytes, ...] = (), keyids: tuple[str, ...] | None = None,
                 parts: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.seq, self.prev, self.statement, self.payload, self.raw = seq, prev, statement, payload, raw
        self.signatures = signatures
        self._envelope, self._parts = envelope, parts
        if keyids is None:
            keyids = tuple(sig.get("keyid", "") for sig in envelope["signatures"])
        self.keyids = keyids

    @property
    def envelope(self) -> dict:
        if self._envelope is None:
            payload64, keyid, sig64 = self._parts
            self._envelope = {"payload": payload64.decode(), "payloadType": PAYLOAD_TYPE,
                              "signatures": [{"keyid": keyid.decode(), "sig": sig64.decode()}]}
        return self._envelope

    @property
    def hash(self) -> bytes:
        return leaf_hash(self.raw)

    def __repr__(self) -> str:
        return f"Leaf(seq={self.seq}, event_id={self.statement.get('event_id')!r})"


_b64e = base64.b64encode


def _b64d(text) -> bytes:
    """Strict standard base64 (alphabet, padding) in C: ``binascii.a2b_base64(strict_mode=True)``."""
    return binascii.a2b_base64(text, strict_mode=True)


# A leaf of the shape mreg writes, in canonical form, is these fixed pieces around base64 and
# key-id text (none of which needs escaping), so slicing it is parsing it.
_HEAD = b'{"envelope":{"payload":"'
_MID = b'","payloadType":"' + PAYLOAD_TYPE.encode() + b'","signatures":[{"keyid":"'
_SIG = b'","sig":"'
_PREV = b'"}]},"prev":"'
_SEQ = b'","seq":'
_TAIL = b',"v":1}'
_KEYID_RE = re.compile(rb"[A-Za-z0-9+/:=_.@-]*")


def _fast_leaf(leaf: bytes) -> Leaf | None:
    """The common case in one pass: a leaf of the shape mreg writes, every check of
    ``parse_leaf`` included. Returns None to let the general path decide (and explain)."""
    if not (leaf.startswith(_HEAD) and leaf.endswith(_TAIL)):
        return None
    mid = leaf.find(_MID, len(_HEAD))
    if mid < 0:
        return None
    start_keyid = mid + len(_MID)
    end_keyid = leaf.find(_SIG, start_keyid)
    if end_keyid < 0:
        return None
    at = end_keyid + len(_SIG)
    payload64, keyid, sig64 = leaf[len(_HEAD):mid], leaf[start_keyid:end_keyid], leaf[at:at + 88]
    at += 88
    if leaf[at:at + len(_PREV)] != _PREV:
        return None
    at += len(_PREV)
    prev64 = leaf[at:at + 44]
    at += 44
    if leaf[at:at + len(_SEQ)] != _SEQ:
        return None
    seq_text = leaf[at + len(_SEQ):-len(_TAIL)]
    if (not seq_text.isdigit() or len(seq_text) > 16 or (seq_text[0] == 48 and len(seq_text) > 1)
            or not _KEYID_RE.fullmatch(keyid)):
        return None
    seq = int(seq_text)
    if seq > MAX_SAFE_INT or not (_tail_ok(prev64) and _tail_ok(payload64) and _tail_ok(sig64)):
        return None
    try:
        prev = _b64d(prev64)
        payload = _b64d(payload64)
        sig = _b64d(sig64)
        if len(prev) != 32 or len(sig) != 64 or not payload.isascii():
            return None
        statement = _loads_fast(payload)
        if type(statement) is not dict or dumps_ascii_keys(statement) != payload:
            return None
        details = statement.get("details")
        if details is not None:
            _check(details, "details")  # integers within ±(2**53-1), no float
    except (ValueError, TypeError, binascii.Error, CanonicalError):
        return None
    return Leaf(seq, prev, None, statement, payload, leaf, (sig,), (keyid.decode(),), (payload64, keyid, sig64))


# Canonical base64 leaves the unused low bits of the last character zero: 2 bits before "=",
# 4 bits before "==". These are the characters whose value has those bits clear.
_ZERO2 = frozenset(b"AEIMQUYcgkosw048")
_ZERO4 = frozenset(b"AQgw")


def _tail_ok(text64: bytes) -> bool:
    if text64.endswith(b"=="):
        return len(text64) >= 4 and text64[-3] in _ZERO4
    if text64.endswith(b"="):
        return len(text64) >= 4 and text64[-2] in _ZERO2
    return True


def parse_leaf(leaf: bytes) -> Leaf:
    """Parse and check a leaf's bytes strictly (see the module docstring)."""
    fast = _fast_leaf(leaf)
    if fast is not None:
        return fast
    return _parse_leaf_general(leaf)


def _parse_leaf_general(leaf: bytes) -> Leaf:
    """Every check, one field at a time, each refusal explained (the reference path)."""
    try:
        doc = loads_canonical(leaf, "leaf")
    except CanonicalError as exc:
        raise LeafError(exc.message, field="leaf", kind="canonical", expected=exc.data.get("expected"),
                        found=exc.data.get("found")) from None
    if not isinstance(doc, dict) or set(doc) != {"v", "seq", "prev", "envelope"}:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise LeafError("leaf must have exactly v, seq, prev, envelope", field="leaf",
                        expected="envelope,prev,seq,v", found=found)
    if doc["v"] != LEAF_VERSION or type(doc["v"]) is not int:
        raise LeafError(f"leaf version must be {LEAF_VERSION}", field="v", expected=1, found=doc["v"])
    seq = doc["seq"]
    if type(seq) is not int or seq < 0:
        raise LeafError("seq must be a non-negative integer", field="seq", found=seq,
                        expected="integer >= 0")
    prev = b64_strict(doc["prev"], "prev")
    if len(prev) != 32:
        raise LeafError("prev must encode 32 bytes", field="prev", found=len(prev), expected=32)
    env = doc["envelope"]
    if not isinstance(env, dict) or set(env) != {"payload", "payloadType", "signatures"}:
        raise LeafError("envelope must have exactly payload, payloadType, signatures",
                        field="envelope", expected="payload,payloadType,signatures",
                        found=sorted(env) if isinstance(env, dict) else type(env).__name__)
    if env["payloadType"] != PAYLOAD_TYPE:
        raise LeafError("envelope payloadType is not mreg's", field="envelope.payloadType",
                        expected=PAYLOAD_TYPE, found=env["payloadType"])
    payload = b64_strict(env["payload"], "envelope.payload")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise LeafError("envelope has no signatures", field="envelope.signatures",
                        expected="at least one", found=0)
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or set(s) != {"keyid", "sig"} or not isinstance(s["keyid"], str):
            raise LeafError("signature must have exactly keyid and sig", field=f"envelope.signatures[{i}]",
                            expected="keyid,sig", found=sorted(s) if isinstance(s, dict) else repr(s))
        if len(b64_strict(s["sig"], f"envelope.signatures[{i}].sig")) != 64:
            raise LeafError("an Ed25519 signature is 64 bytes", field=f"envelope.signatures[{i}].sig",
                            expected=64, found="other length")
    try:
        statement = loads_canonical(payload, "statement")
    except CanonicalError as exc:
        raise LeafError(exc.message, field="statement", kind="canonical",
                        expected=exc.data.get("expected"), found=exc.data.get("found")) from None
    if not isinstance(statement, dict):
        raise LeafError("statement is not a JSON object", field="statement", found=type(statement).__name__,
                        expected="object")
    return Leaf(seq, prev, env, statement, payload, leaf,
                tuple(_b64d(x["sig"]) for x in sigs))
