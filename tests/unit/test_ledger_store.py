"""The store: append-only tables, pragmas, node rows per append, proofs from stored subtrees, bundles."""

from __future__ import annotations

import sqlite3

import pytest

from ledger import merkle
from ledger.bundle import audit_bundle, export_bundle
from ledger.checkpoint import parse_checkpoint
from ledger.keys import Signer, Trust, parse_allowed_signers
from ledger.log import parse_leaf
from ledger.policy import default_policy
from ledger.proof import (consistency_text, inclusion_text, parse_inclusion, verify_consistency_text,
                          verify_inclusion_text)
from ledger.statement import new_statement
from ledger.store import LedgerStore, StoreError, sign_payloads

O = "demo/registry"
A = Signer.from_seed(bytes(range(32)), "alice@example.com")


def stmts(n, start=0):
    return [new_statement(ledger=O, type="register", actor="alice", event_id=f"e{i}",
                          time="2026-01-01T00:00:00Z") for i in range(start, start + n)]


@pytest.fixture
def store(tmp_path):
    s = LedgerStore(tmp_path / "catalog.db")
    yield s
    s.close()


def test_pragmas_and_append_only_triggers(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.append_many(O, stmts(3), A)
    store.checkpoint(O, A)
    for table in ("ledger_leaves", "ledger_nodes", "ledger_checkpoints"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute(f"DELETE FROM {table}")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute(f"UPDATE {table} SET origin = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="next of its origin"):
        store.conn.execute("INSERT INTO ledger_leaves (origin, seq, leaf, leaf_hash) VALUES (?, 7, x'00', x'00')",
                           (O,))


def test_fewer_than_two_node_rows_per_append_and_roots_match(store):
    total = 0
    for batch in (1, 2, 3, 50, 7, 137):
        store.append_many(O, stmts(batch, total), A)
        total += batch
        hashes = [merkle.leaf_hash(x) for x in store.leaves(O)]
        assert store.root(O) == merkle.root(hashes)
    nodes = store.db["ledger_nodes"].count
    assert nodes < total and nodes / total < 2
    hashes = [merkle.leaf_hash(x) for x in store.leaves(O)]
    mem = merkle.MemoryTree(hashes)
    for size in (1, 2, 5, 64, 100, total):
        assert store.root(O, size) == mem.root(size)
        for idx in {0, size // 2, size - 1}:
            assert store.inclusion_proof(O, idx, size) == mem.inclusion_proof(idx, size)
        assert store.consistency_proof(O, size // 3, size) == mem.consistency_proof(size // 3, size)


def test_a_second_store_on_the_same_file_continues_the_chain(tmp_path):
    s1, s2 = LedgerStore(tmp_path / "c.db"), LedgerStore(tmp_path / "c.db")
    s1.append_many(O, stmts(5), A)
    s2.append_many(O, stmts(3, 5), A)  # s2 has no cached frontier: it loads one
    s1.append_many(O, stmts(2, 8), A)  # s1's cached frontier is stale: it reloads
    hashes = [merkle.leaf_hash(x) for x in s1.leaves(O)]
    assert [parse_leaf(x).seq for x in s1.leaves(O)] == list(range(10))
    assert s1.root(O) == s2.root(O) == merkle.root(hashes)


def test_proof_texts_verify_against_verified_checkpoints(store):
    store.append_many(O, stmts(9), A)
    note9 = store.checkpoint(O, A)
    store.append_many(O, stmts(4, 9), A)
    note13 = store.checkpoint(O, A)
    tr = Trust(parse_allowed_signers(f"alice {A.public_line}"))
    pol = default_policy(tr)
    leaf = store.leaves(O)[4]
    text = inclusion_text(4, store.inclusion_proof(O, 4, 13), note13)
    assert text.startswith("c2sp.org/tlog-proof@v1\nindex 4\n")
    assert verify_inclusion_text(text, leaf, pol, O).checkpoint.size == 13
    with pytest.raises(Exception):
        verify_inclusion_text(text, store.leaves(O)[5], pol, O)
    # the proof's checkpoint must be signed by a policy key: a forged checkpoint is refused
    forged = text.replace(note13, store.checkpoint(O, Signer.generate()))
    with pytest.raises(Exception, match="trusted|verifiable"):
        verify_inclusion_text(forged, leaf, pol, O)
    assert parse_inclusion(text)[0] == 4
    ctext = consistency_text(9, 13, store.consistency_proof(O, 9, 13))
    verify_consistency_text(ctext, note9, note13, pol, O)
    with pytest.raises(Exception):
        verify_consistency_text(ctext, note13, note9, pol, O)


def test_export_and_audit_bundle(store, tmp_path):
    store.append_many(O, stmts(20), A)
    store.checkpoint(O, A)
    store.append_many(O, stmts(5, 20), A)
    store.checkpoint(O, A)
    tr = Trust(parse_allowed_signers(f"alice {A.public_line}"))
    out = tmp_path / "bundle"
    manifest = export_bundle(store, out, allowed_signers=f"alice {A.public_line}\n", revoked_signers="",
                             policy=default_policy(tr))
    assert manifest["origins"][O]["size"] == 25
    assert (out / "logs" / "demo%2Fregistry" / "proofs" / "consistency-20-25.txt").is_file()
    assert (out / "logs" / "demo%2Fregistry" / "proofs" / "inclusion-24.tlog-proof").is_file()
    report = audit_bundle(out)
    assert report.ok, [f.line() for f in report.all_findings()]
    # tamper with one leaf line in the bundle: the audit names it
    leaves = (out / "logs" / "demo%2Fregistry" / "leaves").read_bytes().split(b"\n")
    leaves[7] = leaves[7].replace(b'"seq":7', b'"seq":8')
    (out / "logs" / "demo%2Fregistry" / "leaves").write_bytes(b"\n".join(leaves))
    report = audit_bundle(out)
    kinds = {(f.kind, f.seq) for f in report.all_findings()}
    assert ("reordered", 7) in kinds and ("rewritten", 19) in kinds
    assert not report.ok
    assert parse_checkpoint(store.latest_checkpoint(O)).size == 25


def test_checkpoint_refuses_a_shorter_or_rewritten_log(store):
    from ledger.checkpoint import sign_checkpoint
    from ledger.store import StoreError

    store.append_many(O, stmts(4), A)
    store.checkpoint(O, A)
    store.add_checkpoint(sign_checkpoint(O, 6, bytes(32), A))  # claims more leaves than we hold
    with pytest.raises(StoreError, match="checkpoint of size 6 exists"):
        store.checkpoint(O, A)


def test_checkpoint_refuses_to_sign_over_a_rewritten_prefix(store):
    from ledger.checkpoint import sign_checkpoint
    from ledger.store import ForkError

    store.append_many(O, stmts(4), A)
    store.add_checkpoint(sign_checkpoint(O, 3, bytes(32), A))  # a checkpoint of another history
    with pytest.raises(ForkError, match="no longer match"):
        store.checkpoint(O, A)


def test_parallel_signing_gives_the_same_leaves(tmp_path):
    xs = stmts(1500)
    with LedgerStore(tmp_path / "a.db") as one, LedgerStore(tmp_path / "b.db") as two:
        assert one.append_many(O, xs, A) == two.append_many(O, xs, A, processes=2)
        assert one.root(O) == two.root(O)
        two.append_many(O, stmts(1200, 1500), A, processes=2)  # the pool is reused
        assert two.size(O) == 2700


def test_witness_cosigns_only_consistent_growth_and_quorum_counts(store):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.note import ALG_COSIGNATURE_V1, verifier_key
    from ledger.policy import Policy
    from ledger.verify import verify_log
    from ledger.witness import WitnessError, cosign_latest

    wkey = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    wpub = Signer.from_seed(bytes([9]) * 32).public
    tr = Trust(parse_allowed_signers(f"alice {A.public_line}"))
    from ledger.note import parse_verifier

    policy = Policy(log_keys=[A.public], witnesses=[parse_verifier(verifier_key("w.example/1", wpub,
                                                                               ALG_COSIGNATURE_V1))], quorum=1)
    store.append_many(O, stmts(5), A)
    store.checkpoint(O, A)
    report = verify_log(O, store.leaves(O), store.checkpoints(O), tr, policy)
    assert any(f.kind == "checkpoint-signature" and f.field == "cosignature" for f in report.errors)
    note = cosign_latest(store, O, "w.example/1", wkey, policy, now=1_800_000_000)
    assert note.count("\n\u2014 ") == 2
    report = verify_log(O, store.leaves(O), [note], tr, policy)
    assert report.ok, [f.line() for f in report.errors]
    store.append_many(O, stmts(3, 5), A)
    store.checkpoint(O, A)
    cosign_latest(store, O, "w.example/1", wkey, policy, now=1_800_000_100)  # consistent growth
    assert [w["size"] for w in store.witness_state(O)] == [5, 8]
    # a witness that saw another root at size 8 refuses
    store.conn.execute("INSERT INTO ledger_witness_state (origin, witness, size, root, timestamp, note) "
                       "VALUES (?, 'w.example/2', 8, ?, 0, '')", (O, bytes(32)))
    with pytest.raises(WitnessError, match="does not extend"):
        cosign_latest(store, O, "w.example/2", wkey, policy)


def test_workers_fork_only_when_no_other_thread_runs():
    import threading

    from ledger.workers import context

    assert context().get_start_method() == ("fork" if threading.active_count() == 1 else "forkserver")
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert context().get_start_method() == "forkserver"
    finally:
        stop.set()
        helper.join()


def test_parallel_signing_beside_another_thread_uses_the_fork_server(tmp_path):
    import threading

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        xs = stmts(1100)
        with LedgerStore(tmp_path / "a.db") as one, LedgerStore(tmp_path / "b.db") as two:
            assert one.append_many(O, xs, A) == two.append_many(O, xs, A, processes=2)
            assert two._pool._ctx.get_start_method() == "forkserver"
    finally:
        stop.set()
        helper.join()


def test_schema_statements_are_what_sqlite_utils_creates(tmp_path):
    """A fresh catalog is created from ledger.store.SCHEMA (no sqlite-utils import on the engine's
    path): the same tables and indexes, byte for byte, as the sqlite-utils calls they stand for."""
    import sqlite_utils

    from ledger.store import create_with_sqlite_utils

    reference = sqlite_utils.Database(tmp_path / "ref.db")
    create_with_sqlite_utils(reference)
    with LedgerStore(tmp_path / "store.db") as s:
        ours = s.conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                              "WHERE type IN ('table', 'index') ORDER BY name").fetchall()
    theirs = reference.conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                    "WHERE type IN ('table', 'index') ORDER BY name").fetchall()
    assert ours == theirs
    assert len(ours) == 4 + 4 + 2  # tables, named indexes, the two primary-key auto-indexes


@pytest.mark.parametrize("keyid", [A.keyid, 'a "quoted" key\\id', "ключ"])
def test_signed_leaf_is_build_leaf(keyid):
    """The direct formatting of a one-signature leaf gives build_leaf's bytes (and falls back to it)."""
    from ledger.dsse import sign_payload
    from ledger.log import build_leaf, signed_leaf
    from ledger.statement import new_statement_bytes

    _, payload = new_statement_bytes(ledger=O, type="register", actor="alice", time="2026-01-01T00:00:00Z")
    env = sign_payload(payload, A)
    env["signatures"][0]["keyid"] = keyid
    for seq, prev in ((0, bytes(32)), (7, bytes(range(32))), (2**53 - 1, b"\xff" * 32)):
        assert signed_leaf(seq, prev, env["payload"], keyid, env["signatures"][0]["sig"]) == \
            build_leaf(seq, prev, env)


def test_add_built_leaves_checks_the_chain_and_equals_add_leaves(tmp_path):
    from ledger.dsse import sign_payload
    from ledger.log import signed_leaf
    from ledger.merkle import leaf_hash
    from ledger.statement import new_statement_bytes

    items, prev = [], bytes(32)
    for seq in range(5):
        stmt, payload = new_statement_bytes(ledger=O, type="register", actor="alice", event_id=f"e{seq}",
                                            time="2026-01-01T00:00:00Z")
        env = sign_payload(payload, A)
        leaf = signed_leaf(seq, prev, env["payload"], A.keyid, env["signatures"][0]["sig"])
        items.append((leaf, seq, prev, stmt, A.keyid))
        prev = leaf_hash(leaf)
    with LedgerStore(tmp_path / "a.db") as one, LedgerStore(tmp_path / "b.db") as two:
        one.add_built_leaves(O, items[:2])
        one.add_built_leaves(O, items[2:])
        two.add_leaves(O, [i[0] for i in items])
        assert one.conn.execute("SELECT * FROM ledger_leaves").fetchall() == \
            two.conn.execute("SELECT * FROM ledger_leaves").fetchall()
        assert one.root(O) == two.root(O)
        with pytest.raises(StoreError):  # a leaf that does not chain (seq 4 again after seq 4)
            one.add_built_leaves(O, [items[4][:1] + (5, leaf_hash(items[4][0])) + items[4][3:], items[4]])
        assert one.size(O) == 5


def test_payloads_made_with_the_statements_give_the_same_leaves(tmp_path):
    from ledger.statement import new_statement_bytes

    made = [new_statement_bytes(ledger=O, type="register", actor="ci", time="2025-01-01T00:00:00Z",
                                event_id=f"e{i}", migration={"id": f"m{i}", "checksum": "sha256:" + "ab" * 32},
                                details={"record": {"path": f"p/{i}.sql", "revisions": [{"n": i}]}})
            for i in range(5)]
    one, two = LedgerStore(tmp_path / "a.db"), LedgerStore(tmp_path / "b.db")
    try:
        plain = one.append_many(O, [s for s, _ in made], A)
        fast = two.append_many(O, [s for s, _ in made], A, payloads=[p for _, p in made])
        assert fast == plain  # Ed25519 signatures are deterministic: the same bytes
        three = LedgerStore(tmp_path / "c.db")
        try:
            payloads = [p for _, p in made]
            signed = three.append_many(O, [s for s, _ in made], A, payloads=payloads,
                                       signatures=sign_payloads(payloads, A))
            assert signed == plain
        finally:
            three.close()
        with pytest.raises(ValueError):
            two.append_many(O, [s for s, _ in made], A, payloads=[])
    finally:
        one.close()
        two.close()
