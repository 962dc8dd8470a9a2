"""The weight commitment: leaf layout, order independence, and refusal of ambiguous entries."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    CommitmentError,
    TensorDigest,
    commitment_leaf,
    commitment_tree,
    leaf_hash,
    merkle_root,
    verify_inclusion,
    weight_commitment,
)


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


ENTRIES = [
    ("model.layers.0.mlp.up_proj.weight", "BF16", (11008, 4096), digest("up")),
    ("lm_head.weight", "F32", (32000, 4096), digest("head")),
    ("model.embed_tokens.weight", "F16", (32000, 4096), digest("embed")),
    ("model.norm.weight", "F32", (4096,), digest("norm")),
]


def test_leaf_layout() -> None:
    name, dtype, shape, sha = ENTRIES[0]
    expected = msgpack.packb({"dtype": dtype, "name": name, "sha256": sha, "shape": list(shape)}, use_bin_type=True)
    assert commitment_leaf(name, dtype, shape, sha) == expected


def test_root_over_name_sorted_leaves() -> None:
    ordered = sorted(ENTRIES, key=lambda e: e[0].encode())
    expected = merkle_root([leaf_hash(commitment_leaf(*e)) for e in ordered])
    assert weight_commitment(ENTRIES) == expected
    assert weight_commitment([TensorDigest(*e) for e in ENTRIES]) == expected


@given(st.permutations(ENTRIES))
def test_order_does_not_matter(entries: list[tuple[str, str, tuple[int, ...], bytes]]) -> None:
    assert weight_commitment(entries) == weight_commitment(ENTRIES)


def test_every_field_is_committed() -> None:
    base = weight_commitment(ENTRIES)
    name, dtype, shape, sha = ENTRIES[0]
    for changed in [
        (name + "x", dtype, shape, sha),
        (name, "F16", shape, sha),
        (name, dtype, (4096, 11008), sha),
        (name, dtype, shape, digest("other")),
    ]:
        assert weight_commitment([changed, *ENTRIES[1:]]) != base
    assert weight_commitment(ENTRIES[1:]) != base


def test_one_tensor_can_be_shown_against_the_root() -> None:
    tree = commitment_tree(ENTRIES)
    ordered = sorted(ENTRIES, key=lambda e: e[0].encode())
    i = ordered.index(ENTRIES[3])
    verify_inclusion(leaf_hash(commitment_leaf(*ENTRIES[3])), i, len(tree), tree.inclusion_proof(i), tree.root())


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [ENTRIES[0], ENTRIES[0]],
        [ENTRIES[0], (ENTRIES[0][0], "F32", (1,), digest("dup"))],
        [("", "F32", (1,), digest("x"))],
        [("x", "f32", (1,), digest("x"))],
        [("x", "F32", (-1,), digest("x"))],
        [("x", "F32", (1,), digest("x")[:31])],
        [("x", "F32", (1,), digest("x").hex())],
        [("\ud800", "F32", (1,), digest("x"))],
    ],
)
def test_malformed_entries_are_refused(entries: list[tuple[str, str, tuple[int, ...], bytes]]) -> None:
    with pytest.raises(CommitmentError):
        weight_commitment(entries)
