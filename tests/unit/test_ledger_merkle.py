"""RFC 9162 tree: roots, inclusion and consistency proofs, against a naive recursive definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import ProofError

N = 64


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written as the RFC writes it."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return naive_path(m, leaves[:k]) + [naive_mth(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [naive_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return naive_subproof(m, leaves[:k], b) + [naive_mth(leaves[k:])]
    return naive_subproof(m - k, leaves[k:], False) + [naive_mth(leaves[:k])]


LEAVES = [f"leaf {i}".encode() for i in range(N)]
HASHES = [merkle.leaf_hash(x) for x in LEAVES]
TREE = merkle.MemoryTree(HASHES)
ROOTS = [naive_mth(LEAVES[:n]) for n in range(N + 1)]


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def test_hashes_are_domain_separated():
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert merkle.root([]) == hashlib.sha256(b"").digest()


def test_rfc6962_known_root():
    # The CT test vector: MTH of the 8 standard leaves (RFC 6962 reference implementation tests).
    leaves = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                          "606162636465666768696a6b6c6d6e6f"]]
    assert merkle.root([merkle.leaf_hash(x) for x in leaves]).hex() == \
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize("n", range(N + 1))
def test_root_matches_naive(n):
    assert merkle.root(HASHES[:n]) == ROOTS[n]
    assert TREE.root(n) == ROOTS[n]


def test_inclusion_every_leaf_every_size():
    for n in range(1, N + 1):
        for m in range(n):
            proof = TREE.inclusion_proof(m, n)
            assert proof == naive_path(m, LEAVES[:n])
            merkle.verify_inclusion(HASHES[m], m, n, proof, ROOTS[n])
            # mutations: every proof element, the leaf, the index, the size, the root
            for i in range(len(proof)):
                bad = proof[:i] + [flip(proof[i])] + proof[i + 1:]
                with pytest.raises(ProofError):
                    merkle.verify_inclusion(HASHES[m], m, n, bad, ROOTS[n])
            with pytest.raises(ProofError):
                merkle.verify_inclusion(flip(HASHES[m]), m, n, proof, ROOTS[n])
            with pytest.raises(ProofError):
                merkle.verify_inclusion(HASHES[m], m, n, proof, flip(ROOTS[n]))
            for other in (m - 1, m + 1, n):
                if other >= 0 and (other != m):
                    with pytest.raises(ProofError):
                        merkle.verify_inclusion(HASHES[m], other, n, proof, ROOTS[n])
            for size in (n - 1, n + 1, 2 * n):
                if size != n and m < size <= N:
                    # another size, with that size's real root: this proof does not fit it
                    with pytest.raises(ProofError):
                        merkle.verify_inclusion(HASHES[m], m, size, proof, ROOTS[size])
            with pytest.raises(ProofError):
                merkle.verify_inclusion(HASHES[m], m, n, proof + [HASHES[0]], ROOTS[n])
            if proof:
                with pytest.raises(ProofError):
                    merkle.verify_inclusion(HASHES[m], m, n, proof[:-1], ROOTS[n])


def test_inclusion_trivial_cases():
    merkle.verify_inclusion(HASHES[0], 0, 1, [], ROOTS[1])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(HASHES[0], 0, 1, [HASHES[1]], ROOTS[1])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(HASHES[0], 0, 0, [], ROOTS[0])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(HASHES[0], -1, 4, [], ROOTS[4])
    with pytest.raises(ProofError):
        TREE.inclusion_proof(5, 5)


def test_consistency_every_pair():
    for n in range(0, N + 1):
        for m in range(0, n + 1):
            proof = TREE.consistency_proof(m, n)
            expected = [] if m in (0, n) else naive_subproof(m, LEAVES[:n], True)
            assert proof == expected, (m, n)
            merkle.verify_consistency(m, n, proof, ROOTS[m], ROOTS[n])
            for i in range(len(proof)):
                bad = proof[:i] + [flip(proof[i])] + proof[i + 1:]
                with pytest.raises(ProofError):
                    merkle.verify_consistency(m, n, bad, ROOTS[m], ROOTS[n])
            if m < n:
                with pytest.raises(ProofError):
                    merkle.verify_consistency(m, n, proof, flip(ROOTS[m]), ROOTS[n])
            if m > 0:  # every tree extends the empty tree, whatever its root
                with pytest.raises(ProofError):
                    merkle.verify_consistency(m, n, proof, ROOTS[m], flip(ROOTS[n]))
            with pytest.raises(ProofError):
                merkle.verify_consistency(m, n, proof + [HASHES[0]], ROOTS[m], ROOTS[n])
            if proof:
                with pytest.raises(ProofError):
                    merkle.verify_consistency(m, n, proof[:-1], ROOTS[m], ROOTS[n])
            # other sizes, with those sizes' real roots: this proof does not fit them
            for m2, n2 in ((m + 1, n), (m - 1, n), (m, n + 1), (m, n - 1)):
                if 0 <= m2 <= n2 <= N and (m2, n2) != (m, n) and TREE.consistency_proof(m2, n2) != proof:
                    with pytest.raises(ProofError):
                        merkle.verify_consistency(m2, n2, proof, ROOTS[m2], ROOTS[n2])
            if m < n:  # a shrinking log
                with pytest.raises(ProofError):
                    merkle.verify_consistency(n, m, proof, ROOTS[n], ROOTS[m])


def test_consistency_trivial_cases():
    merkle.verify_consistency(0, 0, [], ROOTS[0], ROOTS[0])
    merkle.verify_consistency(0, 7, [], ROOTS[0], ROOTS[7])
    merkle.verify_consistency(5, 5, [], ROOTS[5], ROOTS[5])
    with pytest.raises(ProofError, match="forked"):
        merkle.verify_consistency(5, 5, [], ROOTS[5], ROOTS[6])
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 5, [HASHES[0]], ROOTS[5], ROOTS[5])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 7, [HASHES[0]], ROOTS[0], ROOTS[7])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 7, [], ROOTS[1], ROOTS[7])
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 7, [], ROOTS[3], ROOTS[7])


def test_malformed_proof_elements_are_refused():
    proof = TREE.inclusion_proof(3, 10)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(HASHES[3], 3, 10, [proof[0][:31]] + proof[1:], ROOTS[10])


def test_frontier_creates_fewer_nodes_than_leaves():
    f = merkle.Frontier()
    created = sum(len(f.append(h)) for h in HASHES)
    assert created == N - 1  # a perfect tree of 64 leaves has 63 inner nodes
    g = merkle.Frontier.load(37, TREE.get)
    assert g.root() == ROOTS[37]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=150), st.data())
def test_property_proofs_match_naive(leaves, data):
    hashes = [merkle.leaf_hash(x) for x in leaves]
    tree = merkle.MemoryTree(hashes)
    n = len(leaves)
    assert tree.root() == naive_mth(leaves) == merkle.root(hashes)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m)
    assert proof == naive_path(m, leaves)
    merkle.verify_inclusion(hashes[m], m, n, proof, tree.root())
    size1 = data.draw(st.integers(0, n))
    cproof = tree.consistency_proof(size1)
    merkle.verify_consistency(size1, n, cproof, naive_mth(leaves[:size1]), tree.root())
