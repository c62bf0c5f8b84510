"""Golden bytes: a statement, its leaf and a checkpoint under the fixed key A of the DSSE vectors.

Ed25519 is deterministic, so these bytes never change; docs/ledger-format.md walks
through the same example by hand. Each step is also recomputed from first
principles (hashlib, base64, the Ed25519 key) so the test fails if any layer drifts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from ledger.checkpoint import sign_checkpoint, verify_checkpoint
from ledger.dsse import pae, sign_envelope
from ledger.keys import Signer
from ledger.log import ZERO_HASH, build_leaf, parse_leaf
from ledger.merkle import leaf_hash, node_hash, root
from ledger.statement import new_statement

SEED_A = json.loads((Path(__file__).parent / "vectors" / "dsse" / "vectors.json").read_text())["keys"]["A"]["seed"]
SIGNER = Signer.from_seed(bytes.fromhex(SEED_A), "alice@example.com")
MIGRATION = {"id": "20240115_120000_schema_add_email_verified", "version": "1.0.0",
             "checksum": "sha256:" + "ab" * 32,
             "path": "migrations/postgresql/20240115_120000_schema_add_email_verified.sql"}
TARGET = {"engine": "postgresql", "id": "postgres"}

STATEMENT = (
    '{"actor":"alice@example.com","event_id":"0190f1a2-0000-7000-8000-000000000001",'
    '"ledger":"demo/postgres","migration":{"checksum":"sha256:' + "ab" * 32 + '",'
    '"id":"20240115_120000_schema_add_email_verified",'
    '"path":"migrations/postgresql/20240115_120000_schema_add_email_verified.sql","version":"1.0.0"},'
    '"target":{"engine":"postgresql","id":"postgres"},"time":"2026-01-15T12:00:00Z","type":"register","v":1}')
SIG0 = "T5O6Fq/Drwre/IpN+k5eEQrDeOC0S1XZsAU5/M0Qlw1qd8rAErGo7CQApB6mfbk58c0ajD4hrIu9Unlj/+UKCw=="
LEAF0_HASH = "5aa8ee07b73f93219c27c060fff396e487d8da288d87ae8de1d9ab913d1505ac"
ROOT2 = "xm2FtOKcaE3FUCK/6DEmLPBwmk1jPItiZ4w9mt7fLVI="
CHECKPOINT = ("demo/postgres\n2\nxm2FtOKcaE3FUCK/6DEmLPBwmk1jPItiZ4w9mt7fLVI=\n\n"
              "— demo/postgres NpRDKuZilbuphAf5w9kkDBrySH6NcaxmabkkTug+G8ZC9Pe4g5Tg9FyjTlmpHVJ1okTklgVsyVSAAHmK/QWBclLc+Qs=\n")


def statements():
    s0 = new_statement(ledger="demo/postgres", type="register", actor="alice@example.com", migration=MIGRATION,
                       target=TARGET, time="2026-01-15T12:00:00Z", event_id="0190f1a2-0000-7000-8000-000000000001")
    s1 = new_statement(ledger="demo/postgres", type="apply_started", actor="alice@example.com",
                       refs=[s0["event_id"]], target=TARGET, migration=MIGRATION, time="2026-01-15T12:05:00Z",
                       event_id="0190f1a2-0000-7000-8000-000000000002")
    return s0, s1


def test_key_identity():
    assert SIGNER.keyid == "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8"
    assert SIGNER.public_line == ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea "
                                  "alice@example.com")


def test_golden_leaf():
    s0, _ = statements()
    env = sign_envelope(s0, SIGNER)
    assert base64.b64decode(env["payload"]).decode() == STATEMENT
    assert env["signatures"][0]["sig"] == SIG0
    # the signature is Ed25519 over PAE(type, statement bytes)
    SIGNER.public_key.verify(base64.b64decode(SIG0), pae(env["payloadType"], STATEMENT.encode()))
    leaf = build_leaf(0, ZERO_HASH, env)
    expected = ('{"envelope":{"payload":"' + base64.b64encode(STATEMENT.encode()).decode() + '",'
                '"payloadType":"application/vnd.mreg.statement+json","signatures":[{"keyid":"' + SIGNER.keyid
                + '","sig":"' + SIG0 + '"}]},"prev":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","seq":0,"v":1}')
    assert leaf == expected.encode()
    assert leaf_hash(leaf).hex() == LEAF0_HASH == hashlib.sha256(b"\x00" + leaf).hexdigest()
    assert parse_leaf(leaf).statement == s0


def test_golden_checkpoint():
    s0, s1 = statements()
    leaf0 = build_leaf(0, ZERO_HASH, sign_envelope(s0, SIGNER))
    leaf1 = build_leaf(1, leaf_hash(leaf0), sign_envelope(s1, SIGNER))
    r = root([leaf_hash(leaf0), leaf_hash(leaf1)])
    assert r == node_hash(leaf_hash(leaf0), leaf_hash(leaf1))
    assert base64.b64encode(r).decode() == ROOT2
    text = sign_checkpoint("demo/postgres", 2, r, SIGNER)
    assert text == CHECKPOINT
    # note key id: SHA-256("demo/postgres" || 0x0A || 0x01 || public key)[:4]
    kid = hashlib.sha256(b"demo/postgres\n\x01" + SIGNER.public).digest()[:4]
    assert base64.b64decode(text.splitlines()[-1].split(" ")[2])[:4] == kid
    assert verify_checkpoint(text, [SIGNER.public]).checkpoint.size == 2


def test_fast_leaf_parser_agrees_with_the_general_one():
    """Differential: for many mutations of a real leaf, the one-pass parser accepts exactly
    what the field-by-field parser accepts, with the same values."""
    import random

    from ledger.log import LeafError, _fast_leaf, _parse_leaf_general

    s0, _ = statements()
    leaf = build_leaf(0, ZERO_HASH, sign_envelope(s0, SIGNER))
    rng = random.Random(7)
    alphabet = b'AQgwB/+=-_ "\\0123{}[],:e.'
    variants = [leaf, leaf.replace(b'"seq":0', b'"seq":00'), leaf.replace(b'"v":1', b'"v":1.0'),
                leaf.replace(b'"seq":0', b'"seq":9007199254740992'), leaf + b" ", leaf.replace(b"==", b"")]
    for _ in range(3000):
        b = bytearray(leaf)
        for _ in range(rng.randint(1, 2)):
            b[rng.randrange(len(b))] = rng.choice(alphabet)
        variants.append(bytes(b))
    for v in variants:
        fast = _fast_leaf(v)
        try:
            general = _parse_leaf_general(v)
        except LeafError:
            general = None
        if fast is not None:
            assert general is not None, v
            assert (fast.seq, fast.prev, fast.envelope, fast.statement, fast.payload, fast.signatures) == \
                (general.seq, general.prev, general.envelope, general.statement, general.payload,
                 general.signatures)
