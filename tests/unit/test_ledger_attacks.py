"""Attacks on a log, each caught by verification and named in the verdict (kind, log, seq, field)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ledger.checkpoint import sign_checkpoint
from ledger.dsse import sign_envelope, sign_payload
from ledger.keys import Signer, Trust, parse_allowed_signers, parse_revoked_signers
from ledger.log import ZERO_HASH, build_leaf
from ledger.merkle import leaf_hash, root
from ledger.policy import default_policy
from ledger.statement import new_statement
from ledger.store import ForkError, LedgerStore, StoreError
from ledger.verify import verify_log

O = "demo/postgres"
A = Signer.from_seed(bytes(range(32)), "alice@example.com")
B = Signer.from_seed(bytes(range(1, 33)), "bob@example.com")
ALLOWED = (f"alice@example.com {A.public_line}\n"
           f'bob@example.com valid-after="20260101",valid-before="20260201" {B.public_line}\n')


def stmt(i: int, ledger: str = O, time: str | None = None, **kw) -> dict:
    return new_statement(ledger=ledger, type="apply_started", actor="alice@example.com",
                         time=time or f"2026-01-10T00:00:{i % 60:02d}Z", event_id=f"event-{i}",
                         details={"i": i}, **kw)


@pytest.fixture
def log(tmp_path):
    store = LedgerStore(tmp_path / "catalog.db")
    store.append_many(O, [stmt(i) for i in range(6)], A)
    store.checkpoint(O, A)
    yield store
    store.close()


def trust(revoked: str = "") -> Trust:
    return Trust(parse_allowed_signers(ALLOWED), parse_revoked_signers(revoked))


def verdicts(store, tr=None, extra=()):
    tr = tr or trust()
    report = verify_log(O, store.leaves(O), list(store.checkpoints(O)) + list(extra), tr, default_policy(tr))
    return report, {(f.kind, f.seq) for f in report.errors}


def raw(store, sql: str, *args) -> None:
    """An attacker with write access to the file: drop the guard triggers, then write."""
    conn = sqlite3.connect(store.path)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def replace_leaf(store, seq: int, leaf: bytes) -> None:
    raw(store, "UPDATE ledger_leaves SET leaf = ?, leaf_hash = ? WHERE origin = ? AND seq = ?",
        leaf, leaf_hash(leaf), O, seq)


def rebuild(store, envelopes: list[dict], start: int = 0) -> None:
    """Rewrite leaves from ``start`` with a correct chain (what a careful attacker does)."""
    leaves = store.leaves(O)
    prev = leaf_hash(leaves[start - 1]) if start else ZERO_HASH
    for seq in range(start, len(envelopes)):
        leaf = build_leaf(seq, prev, envelopes[seq])
        replace_leaf(store, seq, leaf)
        prev = leaf_hash(leaf)


def envelopes(store) -> list[dict]:
    return [json.loads(x)["envelope"] for x in store.leaves(O)]


def test_untouched_log_verifies(log):
    report, found = verdicts(log)
    assert report.ok and found == set() and report.size == 6 and report.checkpoint_size == 6
    assert [f.kind for f in report.findings] == []


def test_byte_edited(log):
    leaf = bytearray(log.leaves(O)[2])
    at = leaf.index(b'"sig":"') + 20
    leaf[at] = ord("A") if leaf[at] != ord("A") else ord("B")
    replace_leaf(log, 2, bytes(leaf))
    report, found = verdicts(log)
    assert ("signature", 2) in found and ("chain", 3) in found and ("rewritten", 5) in found
    line = next(f for f in report.errors if f.kind == "signature").line()
    assert "log=demo/postgres seq=2 field=envelope.signatures[0]" in line


def test_event_rewritten_and_resigned_with_a_valid_key(log):
    envs = envelopes(log)
    forged = stmt(3)
    forged["details"] = {"i": 3, "note": "nothing happened here"}
    envs[3] = sign_envelope(forged, A)
    rebuild(log, envs, start=3)
    report, found = verdicts(log)
    assert found == {("rewritten", 5)}
    f = report.errors[0]
    assert f.field == "root" and f.expected != f.found


def test_truncated_and_recheckpointed(log):
    raw(log, "DELETE FROM ledger_leaves WHERE origin = ? AND seq >= 4", O)
    raw(log, "DELETE FROM ledger_nodes WHERE origin = ?", O)
    log._frontiers.clear()
    # re-checkpoint with a valid key at the shorter size (nodes recomputed by a careful attacker)
    hashes = [leaf_hash(x) for x in log.leaves(O)]
    log.add_checkpoint(sign_checkpoint(O, 4, root(hashes), A))
    report, found = verdicts(log)
    assert ("truncated", 4) in found
    f = next(f for f in report.errors if f.kind == "truncated")
    assert f.field == "size" and f.expected == ">= 6" and f.found == 4


def test_truncated_with_checkpoints_deleted_is_caught_by_an_anchor(log):
    anchor = log.latest_checkpoint(O)  # e.g. the target's mirror, refs/notes/mreg, or an earlier bundle
    raw(log, "DELETE FROM ledger_leaves WHERE origin = ? AND seq >= 4", O)
    raw(log, "DELETE FROM ledger_checkpoints WHERE origin = ?", O)
    log.add_checkpoint(sign_checkpoint(O, 4, root([leaf_hash(x) for x in log.leaves(O)]), A))
    assert verdicts(log)[0].ok  # on its own the shortened catalog is self-consistent...
    _, found = verdicts(log, extra=[anchor])
    assert ("truncated", 4) in found  # ...but not with any earlier anchored checkpoint


def test_two_events_swapped(log):
    leaves = log.leaves(O)
    replace_leaf(log, 1, leaves[2])
    replace_leaf(log, 2, leaves[1])
    _, found = verdicts(log)
    assert ("reordered", 1) in found and ("reordered", 2) in found


def test_two_events_swapped_and_rechained(log):
    envs = envelopes(log)
    envs[1], envs[2] = envs[2], envs[1]
    rebuild(log, envs, start=1)
    _, found = verdicts(log)
    assert found == {("rewritten", 5)}


def test_envelope_replayed(log):
    envs = envelopes(log)
    size, prev = log.head(O)
    log.add_leaves(O, [build_leaf(size, prev, envs[1])])
    _, found = verdicts(log)
    assert ("replay", 6) in found


def test_fork_two_checkpoints_of_one_size(log):
    other = root([leaf_hash(b"x")] * 6)
    log.add_checkpoint(sign_checkpoint(O, 6, other, A))
    report, found = verdicts(log)
    assert ("fork", 5) in found
    assert ("rewritten", 5) in found


def test_statement_for_another_ledger(log):
    size, prev = log.head(O)
    leaf = build_leaf(size, prev, sign_envelope(stmt(9, ledger="demo/redis"), A))
    with pytest.raises(StoreError, match="demo/redis"):
        log.add_leaves(O, [leaf])
    with pytest.raises(Exception, match="demo/redis"):
        log.append(O, stmt(9, ledger="demo/redis"), A)
    raw(log, "INSERT INTO ledger_leaves (origin, seq, leaf, leaf_hash) VALUES (?, ?, ?, ?)",
        O, size, leaf, leaf_hash(leaf))
    report, found = verdicts(log)
    assert ("wrong-ledger", 6) in found
    f = next(f for f in report.errors if f.kind == "wrong-ledger")
    assert (f.field, f.expected, f.found) == ("statement.ledger", O, "demo/redis")


def test_non_canonical_leaf_json(log):
    doc = json.loads(log.leaves(O)[2])
    replace_leaf(log, 2, json.dumps(doc, indent=1).encode())
    report, found = verdicts(log)
    assert ("canonical", 2) in found


def test_non_canonical_statement_signed_validly(log):
    body = json.dumps(stmt(2), indent=2).encode()  # valid JSON, valid signature, not RFC 8785
    envs = envelopes(log)
    envs[2] = sign_payload(body, A)
    rebuild(log, envs, start=2)
    report, found = verdicts(log)
    assert ("canonical", 2) in found
    assert next(f for f in report.errors if f.kind == "canonical").field == "statement"


def test_url_safe_base64(log):
    for _ in range(50):  # find an envelope whose base64 differs in URL-safe form
        env = sign_envelope(stmt(2, time=None), A)
        if set(env["signatures"][0]["sig"]) & set("+/"):
            break
    env["signatures"][0]["sig"] = env["signatures"][0]["sig"].replace("+", "-").replace("/", "_")
    envs = envelopes(log)
    envs[2] = env
    rebuild(log, envs, start=2)
    report, found = verdicts(log)
    assert ("base64", 2) in found
    assert next(f for f in report.errors if f.kind == "base64").field == "envelope.signatures[0].sig"


def test_revoked_key(log):
    log.append(O, stmt(20, time="2026-01-20T00:00:00Z"), B)
    _, found = verdicts(log)
    assert ("revoked-key", 6) not in found
    revoked = f'revoked-after="20260115000000Z" {B.public_line}\n'
    report, found = verdicts(log, trust(revoked))
    assert ("revoked-key", 6) in found
    f = next(f for f in report.errors if f.kind == "revoked-key")
    assert f.found == B.keyid and f.field == "envelope.signatures[0]"


def test_key_outside_its_validity_window(log):
    log.append(O, stmt(21, time="2026-02-02T00:00:00Z"), B)   # after valid-before
    log.append(O, stmt(22, time="2025-12-31T23:59:59Z"), B)   # before valid-after
    log.append(O, stmt(23, time="2026-01-15T00:00:00Z"), B)   # inside
    _, found = verdicts(log)
    assert ("key-validity", 6) in found and ("key-validity", 7) in found
    assert not any(seq == 8 for _, seq in found)


def test_unknown_key_and_unanchored_leaves(log):
    log.append(O, stmt(30), Signer.generate())
    report, found = verdicts(log)
    assert ("unknown-key", 6) in found
    assert any(f.kind == "unanchored" and f.severity == "warning" for f in report.findings)


def test_store_refuses_forks_gaps_and_bad_links(log):
    leaves = log.leaves(O)
    log.add_leaves(O, leaves[:3])  # identical re-adds are no-ops
    size, prev = log.head(O)
    other = build_leaf(2, leaf_hash(leaves[1]), sign_envelope(stmt(77), A))
    with pytest.raises(ForkError):
        log.add_leaves(O, [other])
    with pytest.raises(StoreError, match="gap"):
        log.add_leaves(O, [build_leaf(size + 1, prev, sign_envelope(stmt(78), A))])
    with pytest.raises(StoreError, match="prev"):
        log.add_leaves(O, [build_leaf(size, ZERO_HASH, sign_envelope(stmt(79), A))])
    assert log.size(O) == 6


def test_parallel_verification_finds_what_one_process_finds(tmp_path):
    """Above 4,000 leaves verification splits across worker processes; the verdicts must not change."""
    store = LedgerStore(tmp_path / "big.db")
    store.append_many(O, [stmt(i) for i in range(4500)], A)
    store.checkpoint(O, A)
    leaves = store.leaves(O)
    doc = json.loads(leaves[4321])
    doc["envelope"]["signatures"][0]["sig"] = doc["envelope"]["signatures"][0]["sig"][:-4] + "AAA="
    leaves[4321] = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    tr = trust()
    one = verify_log(O, leaves, list(store.checkpoints(O)), tr, default_policy(tr), processes=1)
    two = verify_log(O, leaves, list(store.checkpoints(O)), tr, default_policy(tr), processes=2)
    store.close()
    assert {(f.kind, f.seq) for f in one.errors} == {(f.kind, f.seq) for f in two.errors}
    assert any(f.seq == 4321 for f in two.errors)
