"""Signed notes: Go's sumdb/note example byte for byte; cosignature/v1; checkpoints."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import note
from ledger.checkpoint import CheckpointError, body, cosign, parse_body, verify_checkpoint
from ledger.note import NoteError

# From the package documentation of golang.org/x/mod/sumdb/note (note.go).
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
SIGNED = TEXT + "\n" + "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"


def test_go_example_signed_byte_for_byte():
    signer = note.NoteSigner.from_skey(SKEY)
    assert signer.vkey == VKEY
    assert note.sign(TEXT, signer).encode("utf-8") == SIGNED.encode("utf-8")


def test_go_example_verifies_and_unknown_signers_are_ignored():
    assert note.verify(SIGNED, [VKEY]) == ["PeterNeumann"]
    assert note.verify(SIGNED + ENOCH, [VKEY]) == ["PeterNeumann"]


def test_tampered_text_and_untrusted_keys_are_refused():
    with pytest.raises(NoteError, match="invalid signature"):
        note.verify(SIGNED.replace("answer", "Answer"), [VKEY])
    other = note.NoteSigner("PeterNeumann", Ed25519PrivateKey.generate()).vkey
    with pytest.raises(NoteError, match="no verifiable"):
        note.verify(SIGNED, [other])
    for bad in (TEXT, SIGNED.replace("—", "-"), SIGNED[:-1], SIGNED.replace("\n\n", "\n\x01\n")):
        with pytest.raises(NoteError):
            note.verify(bad, [VKEY])


def test_verifier_key_id_must_match():
    bad = VKEY.replace("c74f20a3", "c74f20a4")
    with pytest.raises(NoteError):
        note.parse_verifier(bad)


def test_cosignature_v1_on_a_checkpoint():
    log = note.NoteSigner("example.com/log", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    cp = note.sign(body("example.com/log", 5, bytes(range(32))), log)
    wkey = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    cosigned = cosign(cp, "witness.example/w1", wkey, 1679315147)
    line = cosigned.splitlines()[-1]
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 8 + 64 and int.from_bytes(raw[4:12], "big") == 1679315147
    wv = note.NoteSigner("witness.example/w1", wkey, note.ALG_COSIGNATURE_V1).vkey
    assert base64.b64decode(wv.split("+")[2])[0] == 0x04
    # the cosignature signs "cosignature/v1\ntime <t>\n" + body
    msg = b"cosignature/v1\ntime 1679315147\n" + body("example.com/log", 5, bytes(range(32))).encode()
    wkey.public_key().verify(raw[12:], msg)
    vc = verify_checkpoint(cosigned, [log.public], [wv], quorum=1)
    assert vc.witnesses == ("witness.example/w1",)
    with pytest.raises(CheckpointError, match="witness"):
        verify_checkpoint(cp, [log.public], [wv], quorum=1)


def test_checkpoint_body_parsing():
    text = body("o/x", 12, bytes(32))
    assert text == "o/x\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    assert parse_body(text).size == 12
    for bad in ("o/x\n012\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", "o/x\n12\nAAAA\n", "o/x\n12\n"):
        with pytest.raises(CheckpointError):
            parse_body(bad)


# The cases of Go's note_test.go (TestNewVerifier, TestOpen), same inputs, same verdicts.
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_SIG = SIGNED[len(TEXT) + 1:]


def test_go_new_verifier_manglings_are_refused():
    note.parse_verifier(VKEY)
    b = VKEY.encode()
    bad = [b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1) if (i, j) != (0, len(b))]
    bad += [b[:i] + bytes([b[i] + 1]) + b[i + 1:] for i in range(len(b))]
    bad += [b"PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            b"PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"]
    for k in bad:
        with pytest.raises(NoteError):
            note.parse_verifier(k.decode("latin-1"))


def test_go_open_cases():
    both = TEXT + "\n" + PETER_SIG + ENOCH
    assert note.verify(both, [VKEY]) == ["PeterNeumann"]
    assert note.verify(both, [VKEY, ENOCH_VKEY]) == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(NoteError, match="no verifiable signatures"):
        note.verify(both, [])
    with pytest.raises(NoteError, match="ambiguous key EnochRoot\\+af0cfe78"):
        note.verify(TEXT + "\n" + ENOCH, [ENOCH_VKEY, VKEY, ENOCH_VKEY])
    assert note.verify(TEXT + "\n" + PETER_SIG, [ENOCH_VKEY, VKEY, ENOCH_VKEY]) == ["PeterNeumann"]
    with pytest.raises(NoteError, match="100 signatures"):
        note.verify(TEXT + "\n" + PETER_SIG * 101, [VKEY])
    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        note.verify(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [VKEY])
    dup = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH + ENOCH + ENOCH[:60] + "ABCD" + ENOCH[60:]
    assert note.verify(dup, [VKEY]) == ["PeterNeumann"]
    for bad in (TEXT, TEXT + "\n", TEXT + "\n" + PETER_SIG[:-1], "\x01" + TEXT + "\n" + PETER_SIG,
                TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
                TEXT + "\n" + PETER_SIG + "Unexpected line.\n"):
        with pytest.raises(NoteError):
            note.verify(bad, [VKEY])
    with pytest.raises(NoteError, match="UTF-8"):
        note.verify(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [VKEY])
