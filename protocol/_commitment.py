"""The weight commitment: one 32-byte root that pins every tensor of a checkpoint.

Each tensor contributes a leaf, the canonical msgpack of ``{"dtype", "name", "sha256", "shape"}`` (sha256 as
32 raw bytes, shape as a list of ints), and the commitment is the RFC 6962 root over the leaves sorted by the
UTF-8 bytes of the name. Sorting makes the root independent of how the checkpoint is sharded or ordered on
disk; the Merkle tree lets one tensor's entry later be shown against the root without the rest. A neutral
party settles a decoy dispute by recomputing this from the real checkpoint.

This module only combines digests: hashing the tensor bytes is the owner agent's job (it streams files).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocol._canonical import encode
from protocol._errors import CommitmentError
from protocol._hashing import DIGEST_SIZE
from protocol._merkle import MerkleTree, leaf_hash

# Records every choice that changes the root, so manifests can say which commitment they carry.
WEIGHT_COMMITMENT_ID = "weights-v1:rfc6962-sha256:leaf=msgpack{dtype,name,sha256,shape}:order=utf8-name"

# A dtype is recorded, not interpreted, so any safetensors-style name is accepted (new float formats
# appear faster than this package changes).
_DTYPE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


@dataclass(frozen=True)
class TensorDigest:
    """What the commitment records about one tensor: its name, dtype, shape and the SHA-256 of its bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not _is_utf8(self.name):
            raise CommitmentError(f"tensor name must be a non-empty UTF-8 string, got {self.name!r:.80}")
        if not isinstance(self.dtype, str) or _DTYPE.fullmatch(self.dtype) is None:
            raise CommitmentError(f"{self.name}: bad dtype {self.dtype!r:.40}")
        if not isinstance(self.shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape
        ):
            raise CommitmentError(f"{self.name}: shape must be a tuple of non-negative ints")
        if not isinstance(self.sha256, bytes) or len(self.sha256) != DIGEST_SIZE:
            raise CommitmentError(f"{self.name}: sha256 must be {DIGEST_SIZE} raw bytes")

    def leaf(self) -> bytes:
        """The canonical bytes of this entry, the data of its Merkle leaf."""
        return encode({"dtype": self.dtype, "name": self.name, "sha256": self.sha256, "shape": list(self.shape)})


EntryLike = TensorDigest | tuple[str, str, Sequence[int], bytes]


def commitment_leaf(name: str, dtype: str, shape: Sequence[int], sha256: bytes) -> bytes:
    """The canonical msgpack leaf data for one tensor (hash it with ``leaf_hash`` for the tree)."""
    return TensorDigest(name, dtype, tuple(shape), sha256).leaf()


def sorted_entries(entries: Iterable[EntryLike]) -> list[TensorDigest]:
    """The entries as ``TensorDigest``, in commitment order; refuses an empty list or a repeated name."""
    digests = [e if isinstance(e, TensorDigest) else TensorDigest(e[0], e[1], tuple(e[2]), e[3]) for e in entries]
    if not digests:
        raise CommitmentError("a weight commitment needs at least one tensor")
    digests.sort(key=lambda d: d.name.encode("utf-8"))
    for a, b in itertools.pairwise(digests):
        if a.name == b.name:
            # Two tensors of one name (say in two shards) leave the checkpoint ambiguous: refuse to guess.
            raise CommitmentError(f"tensor {a.name!r} appears more than once")
    return digests


def commitment_tree(entries: Iterable[EntryLike]) -> MerkleTree:
    """The Merkle tree of the commitment, for inclusion proofs of single tensors (leaf i = i-th sorted)."""
    return MerkleTree(leaf_hash(d.leaf()) for d in sorted_entries(entries))


def weight_commitment(entries: Iterable[EntryLike]) -> bytes:
    """The 32-byte weight commitment over ``(name, dtype, shape, sha256)`` entries, in any order."""
    return commitment_tree(entries).root()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True
