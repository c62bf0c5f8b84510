"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1) signed with Ed25519.

An envelope is ``{"payload": b64(statement bytes), "payloadType": PAYLOAD_TYPE,
"signatures": [{"keyid": "SHA256:…", "sig": b64(Ed25519(PAE))}]}`` where

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the ASCII decimal byte length. ``verify_envelope`` follows the DSSE
verification rules: the payload type must be one the caller supports; each
signature is checked against the trusted key its ``keyid`` names, or, without
a usable keyid, against every trusted key; the envelope is accepted when
distinct trusted keys reaching ``threshold`` verified. As the DSSE protocol
allows, generic verification decodes standard or URL-safe base64, padded or
not. mreg's own leaves are stricter (standard padded base64 only): that check
lives in ``ledger.log``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.canonical import canonical_json
from ledger.errors import LedgerError

PAYLOAD_TYPE = "application/vnd.mreg.statement+json"


class DsseError(LedgerError):
    """An envelope is malformed or its signatures do not reach the threshold."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64_std(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64_decode_any(text: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding (DSSE's leniency)."""
    if not isinstance(text, str):
        raise DsseError("base64 field is not a string", found=repr(text), hint="the envelope is malformed")
    s = text.strip().replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise DsseError(f"not base64: {text[:40]!r}", found=text[:40],
                        hint="the envelope is malformed") from None


def sign_envelope(statement: dict, signer, payload_type: str = PAYLOAD_TYPE) -> dict:
    """Sign ``statement`` (canonicalised with RFC 8785) into a DSSE envelope."""
    payload = canonical_json(statement)
    return sign_payload(payload, signer, payload_type)


def sign_payload(payload: bytes, signer, payload_type: str = PAYLOAD_TYPE) -> dict:
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payload": b64_std(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": signer.keyid, "sig": b64_std(sig)}],
    }


@dataclass(frozen=True)
class Verified:
    """An accepted envelope: its payload bytes, type and the key ids that verified."""

    payload: bytes
    payload_type: str
    keyids: tuple[str, ...]


def verify_envelope(envelope: dict, trusted: dict[str, Ed25519PublicKey], *, threshold: int = 1,
                    payload_types: tuple[str, ...] | list[str] = (PAYLOAD_TYPE,)) -> Verified:
    """Verify ``envelope`` against ``trusted`` (keyid -> public key); raise ``DsseError``."""
    if threshold < 1:
        raise DsseError("threshold must be at least 1", hint="a threshold of 0 accepts anything")
    if not isinstance(envelope, dict):
        raise DsseError("envelope is not a JSON object", hint="the envelope is malformed")
    ptype = envelope.get("payloadType")
    if not isinstance(ptype, str) or not ptype:
        raise DsseError("envelope has no payloadType", field="payloadType", found=repr(ptype),
                        hint="the envelope is malformed")
    if ptype not in payload_types:
        raise DsseError(f"unsupported payloadType {ptype!r}", field="payloadType", found=ptype,
                        expected=", ".join(payload_types), hint="this verifier does not accept that type")
    payload = b64_decode_any(envelope.get("payload", None) if "payload" in envelope else None)
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise DsseError("envelope has no signatures", field="signatures",
                        hint="an envelope needs at least one signature")
    message = pae(ptype, payload)
    accepted: list[str] = []
    for entry in sigs:
        if not isinstance(entry, dict) or "sig" not in entry:
            raise DsseError("signature entry without sig", field="signatures", hint="the envelope is malformed")
        sig = b64_decode_any(entry["sig"])
        keyid = entry.get("keyid")
        candidates = [keyid] if isinstance(keyid, str) and keyid in trusted else list(trusted)
        for kid in candidates:
            if kid in accepted:
                continue
            try:
                trusted[kid].verify(sig, message)
            except InvalidSignature:
                continue
            accepted.append(kid)
            break
    if len(accepted) < threshold:
        raise DsseError(f"{len(accepted)} of the required {threshold} trusted signatures verified",
                        field="signatures", expected=threshold, found=len(accepted),
                        hint="the payload or payloadType changed after signing, or the key is not trusted")
    return Verified(payload, ptype, tuple(accepted))
