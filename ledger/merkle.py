"""The RFC 9162 Merkle tree: hashes, roots, inclusion and consistency proofs.

Definitions (RFC 9162 §2.1): ``MTH({}) = SHA-256()``, ``MTH({d}) =
SHA-256(0x00 ‖ d)``, and for n > 1 with k the largest power of two smaller
than n, ``MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))``.

Every split the RFC makes leaves a *perfect subtree* on the left, aligned on
its own size, so any root or proof can be computed from the hashes of perfect
subtrees alone: ``get(level, index)`` returns the hash of leaves
``[index·2^level, (index+1)·2^level)`` (level 0 is the leaf hashes). That is
what the store keeps (docs/ledger-format.md#tree). ``Frontier`` is the compact
range of a growing tree: the perfect subtrees of its binary decomposition,
from which appends produce new node hashes incrementally.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step. Trivial
cases, which the RFC's algorithms leave to the caller: inclusion in a tree of
size 1 needs an empty proof and ``leaf_hash == root``; consistency of a size
with itself needs an empty proof and equal roots; consistency from size 0
needs an empty proof and ``root1`` equal to the empty tree's hash.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from ledger.errors import LedgerError

EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha = hashlib.sha256
Getter = Callable[[int, int], bytes]


class ProofError(LedgerError):
    """A proof does not verify, or was asked for sizes/indexes it cannot cover."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 ‖ data)``."""
    return _sha(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``."""
    return _sha(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- trees from perfect-subtree hashes ---------------------------------------------------

def subtree_root(start: int, end: int, get: Getter) -> bytes:
    """``MTH(D[start:end])`` where the range is one the RFC's recursion produces."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return get(level, start >> level)
    k = _split(n)
    return node_hash(subtree_root(start, start + k, get), subtree_root(start + k, end, get))


def inclusion_path(index: int, size: int, get: Getter) -> list[bytes]:
    """RFC 9162 ``PATH(index, D[size])``: sibling of the leaf first, child of the root last."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}",
                         hint="pick an index below the tree size", found=index, expected=f"< {size}")
    out: list[bytes] = []

    def path(m: int, start: int, end: int) -> None:
        n = end - start
        if n <= 1:
            return
        k = _split(n)
        if m < k:
            path(m, start, start + k)
            out.append(subtree_root(start + k, end, get))
        else:
            path(m - k, start + k, end)
            out.append(subtree_root(start, start + k, get))

    path(index, 0, size)
    return out


def consistency_path(size1: int, size2: int, get: Getter) -> list[bytes]:
    """RFC 9162 ``PROOF(size1, D[size2])``; empty for the trivial cases 0 and size1 == size2."""
    if not 0 <= size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}",
                         hint="the first size must not exceed the second", found=size1,
                         expected=f"<= {size2}")
    if size1 == 0 or size1 == size2:
        return []
    out: list[bytes] = []

    def sub(m: int, start: int, end: int, b: bool) -> None:
        n = end - start
        if m == n:
            if not b:
                out.append(subtree_root(start, end, get))
            return
        k = _split(n)
        if m <= k:
            sub(m, start, start + k, b)
            out.append(subtree_root(start + k, end, get))
        else:
            sub(m - k, start + k, end, False)
            out.append(subtree_root(start, start + k, get))

    sub(size1, 0, size2, True)
    return out


class Frontier:
    """The compact range of a tree: perfect subtrees ``(level, index, hash)`` left to right."""

    __slots__ = ("size", "nodes")

    def __init__(self) -> None:
        self.size = 0
        self.nodes: list[tuple[int, int, bytes]] = []

    @classmethod
    def load(cls, size: int, get: Getter) -> Frontier:
        f = cls()
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                f.nodes.append((level, start >> level, get(level, start >> level)))
                start += 1 << level
        f.size = size
        return f

    def append(self, lh: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the perfect subtrees (level ≥ 1) it completed."""
        level, index, h = 0, self.size, lh
        created = []
        nodes = self.nodes
        while nodes and nodes[-1][0] == level:
            left = nodes.pop()[2]
            h = _sha(b"\x01" + left + h).digest()
            level += 1
            index >>= 1
            created.append((level, index, h))
        nodes.append((level, index, h))
        self.size += 1
        return created

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1][2]
        for _, _, left in reversed(self.nodes[:-1]):
            h = node_hash(left, h)
        return h


class MemoryTree:
    """All perfect-subtree hashes of a list of leaf hashes, kept in memory."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        self._frontier = Frontier()
        for h in leaf_hashes:
            self.append(h)

    def append(self, lh: bytes) -> None:
        self.levels[0].append(lh)
        for level, index, h in self._frontier.append(lh):
            if len(self.levels) <= level:
                self.levels.append([])
            self.levels[level].append(h)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def get(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if size > self.size:
            raise ProofError(f"tree has {self.size} leaves, not {size}", found=self.size, expected=size,
                             hint="ask for a size the log has reached")
        return self._frontier.root() if size == self.size else subtree_root(0, size, self.get)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_path(index, self.size if size is None else size, self.get)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_path(size1, self.size if size2 is None else size2, self.get)


def root(leaf_hashes: list[bytes]) -> bytes:
    """``MTH`` of a list of leaf hashes (each already ``leaf_hash(leaf)``)."""
    f = Frontier()
    for h in leaf_hashes:
        f.append(h)
    return f.root()


# --- verification (RFC 9162 §2.1.3.2, §2.1.4.2) --------------------------------------------

def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if not isinstance(p, (bytes, bytearray)) or len(p) != 32:
            raise ProofError(f"proof element {i} is not a 32-byte hash", field=f"proof[{i}]",
                             hint="the proof is malformed")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    ``size`` and ``root`` must come from a verified checkpoint, never from the proof.
    """
    _check_hashes(proof)
    if index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}", field="index",
                         found=index, expected=f"< {size}", hint="the proof is for another tree")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep", field="proof",
                             found=len(proof), hint="the proof is for another tree size")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep", field="proof",
                         found=len(proof), hint="the proof is for another tree size")
    if r != root:
        raise ProofError("inclusion proof does not lead to the checkpoint's root", field="root",
                         expected=root.hex(), found=r.hex(),
                         hint="the leaf, its index or the proof differ from what the log signed")


def verify_consistency(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of ``size2``/``root2`` extends the tree of ``size1``/``root1``."""
    _check_hashes(proof)
    if size1 < 0 or size2 < size1:
        raise ProofError(f"size {size2} is smaller than size {size1}: the log shrank", field="size",
                         expected=f">= {size1}", found=size2, hint="a log may never get shorter")
    if size1 == size2:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty", field="proof",
                             found=len(proof), hint="the proof is malformed")
        if root1 != root2:
            raise ProofError(f"two different roots for size {size1}: the log forked", field="root",
                             expected=root1.hex(), found=root2.hex(),
                             hint="someone rewrote the log; compare the checkpoints' signers")
        return
    if size1 == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty", field="proof",
                             found=len(proof), hint="the proof is malformed")
        if root1 != EMPTY_ROOT:
            raise ProofError("root of the empty tree is not SHA-256 of nothing", field="root1",
                             expected=EMPTY_ROOT.hex(), found=root1.hex(), hint="the first root is wrong")
        return
    if not proof:
        raise ProofError("consistency proof is empty", field="proof", found=0,
                         hint="a proof between different sizes has at least one hash")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long", field="proof", found=len(proof),
                             hint="the proof is for other sizes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short", field="proof", found=len(proof),
                         hint="the proof is for other sizes")
    if fr != root1:
        raise ProofError(f"log of size {size2} does not contain the tree of size {size1}",
                         field="root1", expected=root1.hex(), found=fr.hex(),
                         hint="the log was rewritten after the first checkpoint")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}",
                         field="root2", expected=root2.hex(), found=sr.hex(),
                         hint="the second root or the proof is wrong")
