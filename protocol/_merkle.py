"""RFC 6962 / RFC 9162 Merkle trees: the transparency log's hashing, and proofs checkable offline.

Leaf hash ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``; a tree of n > 1 leaves
splits at the largest power of two smaller than n; the empty tree's hash is ``SHA-256(b"")``.

Verification (``verify_inclusion``, ``verify_consistency``) follows RFC 9162 sections 2.1.3.2 and 2.1.4.2
step by step, takes only bytes and ints, and does no I/O: an auditor needs nothing else. A proof binds a
leaf to a *root*; the tree size is bound to that root only by the signed checkpoint that carries both, so
callers must take size and root from the same checkpoint.

Generation (``MerkleTree``) works over an in-memory list of leaf hashes; a storage-backed log can follow the
same recursion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from protocol._errors import MerkleError, ProofError
from protocol._hashing import DIGEST_SIZE

EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_TREE_SIZE = 2**64 - 1  # RFC 9162 tree sizes are uint64


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the prefixes keep a leaf from posing as an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only list of leaf hashes with root and proof generation for any prefix of it.

    Hashes of complete power-of-two subtrees are cached: they never change once their leaves exist, and
    every root and proof is built from O(log n) of them plus the ragged right edge. Memory is at most one
    hash per leaf.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._leaves: list[bytes] = []
        self._cache: dict[tuple[int, int], bytes] = {}
        for h in leaf_hashes:
            self.append(h)

    def __len__(self) -> int:
        return len(self._leaves)

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash (``leaf_hash(data)``, not the data); returns its index."""
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != DIGEST_SIZE:
            raise MerkleError(f"a leaf hash is {DIGEST_SIZE} bytes")
        self._leaves.append(leaf_hash)
        return len(self._leaves) - 1

    def root(self, tree_size: int | None = None) -> bytes:
        """MTH of the first ``tree_size`` leaves (all of them by default)."""
        size = self._size(tree_size)
        return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:tree_size]): the audit path for leaf ``index``."""
        size = self._size(tree_size)
        if not 0 <= index < size:
            raise MerkleError(f"leaf index {index} is outside a tree of size {size}")
        proof: list[bytes] = []
        lo, hi, m = 0, size, index
        # Walk down from the root, collecting the sibling at each level; the RFC lists them leaf first.
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m = lo + k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(old_size, D[0:new_size]); empty when old_size is 0 or equals new_size."""
        new = self._size(new_size)
        if not 0 <= old_size <= new:
            raise MerkleError(f"old size {old_size} is not between 0 and the new size {new}")
        if old_size in (0, new):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new, old_size, True
        # SUBPROOF(m, D[lo:hi], complete), unrolled; again collected root first and reversed at the end.
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._hash(lo, hi))
        proof.reverse()
        return proof

    def _size(self, tree_size: int | None) -> int:
        if tree_size is None:
            return len(self._leaves)
        if not 0 <= tree_size <= len(self._leaves):
            raise MerkleError(f"tree size {tree_size} is outside 0..{len(self._leaves)}")
        return tree_size

    def _hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for 0 <= lo < hi <= len."""
        n = hi - lo
        if n == 1:
            return self._leaves[lo]
        complete = n & (n - 1) == 0
        if complete:
            cached = self._cache.get((lo, hi))
            if cached is not None:
                return cached
        k = _split(n)
        h = node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))
        if complete:
            self._cache[(lo, hi)] = h
        return h


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over ``leaf_hashes`` (already hashed with ``leaf_hash``)."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int | None = None) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of the first ``tree_size`` leaf hashes."""
    return MerkleTree(leaf_hashes).inclusion_proof(index, tree_size)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int | None = None) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size`` leaves."""
    return MerkleTree(leaf_hashes).consistency_proof(old_size, new_size)


def root_from_inclusion_proof(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf_hash`` at ``index`` (RFC 9162 2.1.3.2, steps 1-4).

    Raises ``ProofError`` if the proof is malformed for that index and size (too long, too short).
    """
    _check_size(tree_size)
    _check_hash(leaf_hash, "leaf hash")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < tree_size:
        raise ProofError(f"leaf index {index!r:.40} is outside a tree of size {tree_size}")
    fn, sn, r = index, tree_size - 1, leaf_hash
    for p in proof:
        _check_hash(p, "proof element")
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Skip the levels where this node has no right sibling (the ragged right edge of the tree).
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``ProofError`` unless ``proof`` shows ``leaf_hash`` at ``index`` in the tree with ``root``.

    Raising rather than returning a bool: an ignored ``False`` would be a silent acceptance.
    """
    _check_hash(root, "root")
    if root_from_inclusion_proof(leaf_hash, index, tree_size, proof) != root:
        raise ProofError("inclusion proof does not lead to the given root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``ProofError`` unless ``proof`` shows the tree (old_size, old_root) is a prefix of the tree
    (new_size, new_root) (RFC 9162 2.1.4.2)."""
    _check_size(old_size)
    _check_size(new_size)
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for c in proof:
        _check_hash(c, "proof element")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    # The RFC algorithm starts at 0 < old < new; the edge cases need no proof at all.
    if old_size == new_size:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal tree sizes with different roots")
        return
    if old_size == 0:
        # Every tree extends the empty one; but an "empty" tree claiming another root is not empty.
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("a tree of size 0 must have the empty root")
        return
    # 1.
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    # 2. A power-of-two old tree is a complete subtree of the new one, so the proof omits its root.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3., 4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if fr != old_root or sr != new_root:
        raise ProofError("consistency proof does not lead to the given roots")


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError(f"tree size {size!r:.40} is not a uint64")


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
        raise ProofError(f"{what} must be {DIGEST_SIZE} bytes")
