"""DSSE: the shared vectors (tests/unit/vectors/dsse) and mreg's envelopes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.dsse import PAYLOAD_TYPE, DsseError, b64_decode_any, pae, sign_envelope, verify_envelope
from ledger.keys import Signer

VECTORS = json.loads((Path(__file__).parent / "vectors" / "dsse" / "vectors.json").read_text())


def _key(name):
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["keys"][name]["seed"])).public_key()


def test_vector_keys_match_their_seeds():
    for name, k in VECTORS["keys"].items():
        from cryptography.hazmat.primitives import serialization
        raw = _key(name).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert raw.hex() == k["public"]


@pytest.mark.parametrize("vec", VECTORS["vectors"], ids=[v["id"] for v in VECTORS["vectors"]])
def test_dsse_vector(vec):
    env = vec["envelope"]
    if "pae" in vec:
        assert pae(env["payloadType"], b64_decode_any(env["payload"])).hex() == vec["pae"] or \
            vec["expect"] == "reject"
    trusted = {name: _key(name) for name in vec["trustedKeys"]}
    if vec["expect"] == "accept":
        verified = verify_envelope(env, trusted, threshold=vec["threshold"],
                                   payload_types=vec["supportedPayloadTypes"])
        assert len(set(verified.keyids)) >= vec["threshold"]
    else:
        with pytest.raises(DsseError):
            verify_envelope(env, trusted, threshold=vec["threshold"], payload_types=vec["supportedPayloadTypes"])


def test_pae_matches_the_vectors_exactly():
    for vec in VECTORS["vectors"]:
        if "pae" in vec and vec["id"] != "payload-type-swapped":
            env = vec["envelope"]
            assert pae(env["payloadType"], b64_decode_any(env["payload"])).hex() == vec["pae"], vec["id"]


def test_mreg_envelope_round_trip_and_tamper():
    signer = Signer.from_seed(bytes.fromhex(VECTORS["keys"]["A"]["seed"]))
    env = sign_envelope({"v": 1, "x": "y"}, signer)
    assert env["payloadType"] == PAYLOAD_TYPE and env["signatures"][0]["keyid"] == signer.keyid
    verify_envelope(env, {signer.keyid: signer.public_key})
    env["payload"] = env["payload"][:-4] + "fQ=="
    with pytest.raises(DsseError):
        verify_envelope(env, {signer.keyid: signer.public_key})
