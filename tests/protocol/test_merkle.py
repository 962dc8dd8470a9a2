"""RFC 6962/9162 Merkle trees: known answers, agreement with a naive reference, every proof verifies, and
every mutated proof fails."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache

import pytest

from protocol import (
    EMPTY_ROOT,
    MerkleError,
    MerkleTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

# The leaves of the certificate-transparency / trillian test tree and its roots for sizes 1..8.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def naive_root(entries: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, transcribed literally (on the data, not on leaf hashes)."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(entries[:k]) + naive_root(entries[k:])).digest()


def naive_path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH, transcribed literally."""
    n = len(entries)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, entries[:k]), naive_root(entries[k:])]
    return [*naive_path(m - k, entries[k:]), naive_root(entries[:k])]


def naive_subproof(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF, transcribed literally."""
    n = len(entries)
    if m == n:
        return [] if b else [naive_root(entries)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, entries[:k], b), naive_root(entries[k:])]
    return [*naive_subproof(m - k, entries[k:], False), naive_root(entries[:k])]


def entry(i: int) -> bytes:
    return b"entry-%d" % i


@cache
def big_tree() -> MerkleTree:
    return MerkleTree(leaf_hash(entry(i)) for i in range(555))


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# -- known answers and the reference -----------------------------------------------------------------------


def test_ct_known_answers() -> None:
    tree = MerkleTree(leaf_hash(x) for x in CT_LEAVES)
    for n, expected in enumerate(CT_ROOTS):
        assert tree.root(n).hex() == expected
        assert naive_root(CT_LEAVES[:n]).hex() == expected  # and the reference agrees, so it is one
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]


def test_leaf_and_node_hashes_are_prefixed() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        merkle_root([leaf_hash(b"a"), leaf_hash(b"b")])
        == hashlib.sha256(b"\x01" + leaf_hash(b"a") + leaf_hash(b"b")).digest()
    )


@pytest.mark.parametrize("n", range(9))
def test_roots_match_the_naive_reference(n: int) -> None:
    entries = [entry(i) for i in range(n)]
    assert merkle_root([leaf_hash(e) for e in entries]) == naive_root(entries)


@pytest.mark.parametrize("n", [9, 16, 17, 31, 33, 100, 555])
def test_larger_roots_and_proofs_match_the_reference(n: int) -> None:
    entries = [entry(i) for i in range(n)]
    tree = big_tree()
    assert tree.root(n) == naive_root(entries)
    for m in {0, 1, n // 3, n - 1}:
        assert tree.inclusion_proof(m, n) == naive_path(m, entries)
    for m in {1, n // 2, n - 1}:
        assert tree.consistency_proof(m, n) == naive_subproof(m, entries, True)


def test_module_functions_agree_with_the_tree() -> None:
    hashes = [leaf_hash(entry(i)) for i in range(13)]
    tree = MerkleTree(hashes)
    assert merkle_root(hashes) == tree.root()
    assert inclusion_proof(hashes, 5) == tree.inclusion_proof(5)
    assert inclusion_proof(hashes, 5, 9) == tree.inclusion_proof(5, 9)
    assert consistency_proof(hashes, 6) == tree.consistency_proof(6)
    assert consistency_proof(hashes, 3, 7) == tree.consistency_proof(3, 7)


def test_append_keeps_old_roots() -> None:
    tree = MerkleTree()
    roots = [tree.root()]
    for i in range(40):
        assert tree.append(leaf_hash(entry(i))) == i
        roots.append(tree.root())
    assert [tree.root(n) for n in range(41)] == roots


# -- every proof verifies ----------------------------------------------------------------------------------


def test_every_inclusion_proof_verifies_up_to_555() -> None:
    tree = big_tree()
    hashes = [leaf_hash(entry(i)) for i in range(555)]
    for n in range(1, 556):
        root = tree.root(n)
        for m in range(n):
            verify_inclusion(hashes[m], m, n, tree.inclusion_proof(m, n), root)


def test_every_consistency_proof_verifies_up_to_100() -> None:
    tree = big_tree()
    for n in range(101):
        new_root = tree.root(n)
        for m in range(n + 1):
            verify_consistency(m, n, tree.root(m), new_root, tree.consistency_proof(m, n))


# -- mutations: inclusion ----------------------------------------------------------------------------------

SMALL_CASES = [(n, m) for n in range(1, 34) for m in range(n)] + [(555, m) for m in (0, 1, 254, 255, 256, 553, 554)]


@pytest.mark.parametrize(("n", "m"), SMALL_CASES)
def test_mutated_inclusion_proofs_fail(n: int, m: int) -> None:
    tree = big_tree()
    leaf = leaf_hash(entry(m))
    root = tree.root(n)
    proof = tree.inclusion_proof(m, n)
    verify_inclusion(leaf, m, n, proof, root)

    def rejects(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, proof, root)

    for i in range(len(proof)):
        for bit in (0, 7, 100, 255):
            rejects(leaf, m, n, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]], root)
    rejects(flip(leaf, 3), m, n, proof, root)  # wrong leaf
    rejects(leaf_hash(entry(m + 1)), m, n, proof, root)
    rejects(leaf, m, n, proof, flip(root, 200))  # wrong root
    rejects(leaf, m + 1, n, proof, root)  # index off by one
    if m > 0:
        rejects(leaf, m - 1, n, proof, root)
    rejects(leaf, m, n, [*proof, proof[-1] if proof else root], root)  # extra element
    rejects(leaf, m, n, [root, *proof], root)
    if proof:
        rejects(leaf, m, n, proof[:-1], root)  # missing element
        rejects(leaf, m, n, proof[1:], root)
    if len(proof) > 1:
        rejects(leaf, m, n, proof[::-1], root)
    # A wrong size with the root of that size (both come from one signed checkpoint in real use).
    for other in (n - 1, n + 1):
        if 0 < other <= 555 and m < other and tree.inclusion_proof(m, other) != proof:
            rejects(leaf, m, other, proof, tree.root(other))
    rejects(leaf, m, m, proof, root)  # index == size
    rejects(leaf, m, n, [p + b"\x00" for p in proof] or [b"\x00" * 33], root)  # malformed elements


def test_size_is_bound_by_the_checkpoint_not_by_the_proof() -> None:
    """Documents an RFC 9162 property callers must respect: for leaf 0 the path in a tree of 4 has the
    same shape as in a tree of 3, so the size-4 proof also "verifies" under size 3 *against the size-4
    root*. Size and root must therefore come together from one signed checkpoint."""
    tree = big_tree()
    proof = tree.inclusion_proof(0, 4)
    verify_inclusion(leaf_hash(entry(0)), 0, 3, proof, tree.root(4))
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(entry(0)), 0, 3, proof, tree.root(3))


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, 0), (-1, 5), (5, 5), (0, -1), (0, 2**64)],
)
def test_inclusion_rejects_impossible_positions(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        root_from_inclusion_proof(leaf_hash(b"x"), index, size, [])


def test_inclusion_rejects_malformed_inputs() -> None:
    good = leaf_hash(b"x")
    with pytest.raises(ProofError):
        verify_inclusion(good[:31], 0, 1, [], good)
    with pytest.raises(ProofError):
        verify_inclusion(good, 0, 1, [], good + b"\x00")
    with pytest.raises(ProofError):
        verify_inclusion(good, 0, 1, ["00" * 32], good)  # type: ignore[list-item]
    verify_inclusion(good, 0, 1, [], good)  # a one-leaf tree's root is its leaf hash


# -- mutations: consistency --------------------------------------------------------------------------------

CONSISTENCY_CASES = [(m, n) for n in range(1, 34) for m in range(1, n)] + [(1, 555), (256, 555), (300, 555)]


@pytest.mark.parametrize(("m", "n"), CONSISTENCY_CASES)
def test_mutated_consistency_proofs_fail(m: int, n: int) -> None:
    tree = big_tree()
    old, new = tree.root(m), tree.root(n)
    proof = tree.consistency_proof(m, n)
    verify_consistency(m, n, old, new, proof)

    def rejects(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> None:
        with pytest.raises(ProofError):
            verify_consistency(m, n, old, new, proof)

    for i in range(len(proof)):
        for bit in (0, 9, 128, 255):
            rejects(m, n, old, new, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]])
    rejects(m, n, flip(old, 1), new, proof)  # wrong roots
    rejects(m, n, old, flip(new, 1), proof)
    rejects(m, n, new, old, proof)
    rejects(m, n, old, new, [*proof, proof[-1]])  # extra element
    rejects(m, n, old, new, [old, *proof])
    rejects(m, n, old, new, proof[:-1])  # missing element
    rejects(m, n, old, new, proof[1:])
    rejects(m, n, old, new, [])
    rejects(n, m, new, old, proof)  # sizes swapped
    if len(proof) > 1:
        rejects(m, n, old, new, proof[::-1])
    # Off-by-one sizes, each with its honest root (size and root come from one checkpoint).
    for m2, n2 in ((m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1)):
        if 0 < m2 < n2 <= 555 and tree.consistency_proof(m2, n2) != proof:
            rejects(m2, n2, tree.root(m2), tree.root(n2), proof)


def test_consistency_edge_sizes() -> None:
    tree = big_tree()
    r5 = tree.root(5)
    verify_consistency(5, 5, r5, r5, [])
    verify_consistency(0, 5, EMPTY_ROOT, r5, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        verify_consistency(5, 5, r5, tree.root(6), [])
    with pytest.raises(ProofError):
        verify_consistency(5, 5, r5, r5, [r5])
    with pytest.raises(ProofError):
        verify_consistency(0, 5, r5, r5, [])  # a size-0 tree claiming a non-empty root
    with pytest.raises(ProofError):
        verify_consistency(0, 5, EMPTY_ROOT, r5, [r5])
    with pytest.raises(ProofError):
        verify_consistency(6, 5, tree.root(6), r5, tree.consistency_proof(5, 6))
    with pytest.raises(ProofError):
        verify_consistency(-1, 5, EMPTY_ROOT, r5, [])


def test_generation_rejects_out_of_range_arguments() -> None:
    tree = MerkleTree(leaf_hash(entry(i)) for i in range(5))
    for bad in (
        lambda: tree.root(6),
        lambda: tree.inclusion_proof(5),
        lambda: tree.inclusion_proof(0, 0),
        lambda: tree.inclusion_proof(-1),
        lambda: tree.consistency_proof(6),
        lambda: tree.consistency_proof(3, 2),
        lambda: tree.append(b"short"),
    ):
        with pytest.raises(MerkleError):
            bad()


def test_all_small_proofs_match_the_reference() -> None:
    tree = big_tree()
    for n in range(1, 40):
        entries = [entry(i) for i in range(n)]
        for m in range(n):
            assert tree.inclusion_proof(m, n) == naive_path(m, entries)
        for m in range(1, n):
            assert tree.consistency_proof(m, n) == naive_subproof(m, entries, True)
