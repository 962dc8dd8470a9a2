"""The weight commitment: one 32-byte root that pins every tensor of a checkpoint.

Each tensor contributes a leaf, the canonical msgpack of ``{"dtype", "name", "sha256", "shape"}`` (sha256 as
32 raw bytes, shape as a list of ints), and the commitment is the RFC 6962 root over the leaves sorted by the
UTF-8 bytes of the name. Sorting makes the root independent of how the checkpoint is sharded or ordered on
disk; the Merkle tree lets one tensor's entry later be shown against the root without the rest. A neutral
party settles a decoy dispute by recomputing this from the real checkpoint.

This module only combines digests: hashing the tensor bytes is the owner agent's job (it streams files).

**Version 2, chunked** (``weights-v2``, ``chunked_weight_commitment``): the same tree over the tensors, but each
tensor's leaf is ``{"chunk_root", "dtype", "name", "nbytes", "shape"}``, where ``chunk_root`` is the RFC 6962 root
over the tensor's bytes cut into ``chunk_size``-byte chunks (the last one shorter; an empty tensor is one empty
chunk). ``chunk_size`` is a power of two between 16 and 65536 and is part of the id
(``weight_commitment_id(chunk_size)``), so one chunk of one tensor can be shown against the root with two
inclusion proofs and nothing else of the checkpoint: what ``protocol._possession`` asks an owner to do. A v1
root and a v2 root of the same checkpoint differ; ``commitment_chunk_size`` tells them apart by id (``None``
for v1), and a v1 id stays readable everywhere.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocol._canonical import encode
from protocol._errors import CommitmentError
from protocol._hashing import DIGEST_SIZE
from protocol._merkle import MerkleTree, leaf_hash, node_hash

# Records every choice that changes the root, so manifests can say which commitment they carry.
WEIGHT_COMMITMENT_ID = "weights-v1:rfc6962-sha256:leaf=msgpack{dtype,name,sha256,shape}:order=utf8-name"

# Version 2: each tensor leaf carries the root of a Merkle tree over its bytes in fixed-size chunks.
_V2_PREFIX = "weights-v2:rfc6962-sha256:leaf=msgpack{chunk_root,dtype,name,nbytes,shape}:chunks=rfc6962-sha256/"
_V2_SUFFIX = "B:order=utf8-name"
DEFAULT_CHUNK_SIZE = 64
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 16, 65536
_V2_ID = re.compile(re.escape(_V2_PREFIX) + r"([1-9][0-9]{1,5})" + re.escape(_V2_SUFFIX))

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


# ------------------------------------------------------------------------------------- v2: chunked
def weight_commitment_id(chunk_size: int | None = None) -> str:
    """The id of a commitment: v1 for ``None``, else v2 with ``chunk_size``-byte chunks."""
    if chunk_size is None:
        return WEIGHT_COMMITMENT_ID
    check_chunk_size(chunk_size)
    return f"{_V2_PREFIX}{chunk_size}{_V2_SUFFIX}"


def commitment_chunk_size(commitment_id: str) -> int | None:
    """``None`` for a v1 id, the chunk size for a v2 id; ``CommitmentError`` for any other id."""
    if commitment_id == WEIGHT_COMMITMENT_ID:
        return None
    m = _V2_ID.fullmatch(commitment_id) if isinstance(commitment_id, str) else None
    if m is None:
        raise CommitmentError(f"unknown weight commitment id {commitment_id!r:.120}")
    size = int(m.group(1))
    check_chunk_size(size)
    return size


def check_chunk_size(chunk_size: int) -> int:
    if (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size & (chunk_size - 1)
            or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE):
        raise CommitmentError(f"chunk size must be a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}], "
                              f"got {chunk_size!r:.20}")
    return chunk_size


def chunk_count(nbytes: int, chunk_size: int) -> int:
    """How many chunks a tensor of ``nbytes`` has (an empty tensor is one empty chunk)."""
    return max(1, -(-nbytes // chunk_size))


@dataclass(frozen=True)
class ChunkedTensorDigest:
    """What a v2 commitment records about one tensor: name, dtype, shape, byte length and chunk-tree root."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    chunk_root: bytes

    def __post_init__(self) -> None:
        TensorDigest(self.name, self.dtype, self.shape, self.chunk_root)  # the same checks on the shared fields
        if not isinstance(self.nbytes, int) or isinstance(self.nbytes, bool) or self.nbytes < 0:
            raise CommitmentError(f"{self.name}: nbytes must be a non-negative integer")

    def leaf(self) -> bytes:
        return encode({"chunk_root": self.chunk_root, "dtype": self.dtype, "name": self.name,
                       "nbytes": self.nbytes, "shape": list(self.shape)})

    def to_map(self) -> dict[str, object]:
        return {"chunk_root": self.chunk_root, "dtype": self.dtype, "name": self.name, "nbytes": self.nbytes,
                "shape": list(self.shape)}


def sorted_chunked(entries: Iterable[ChunkedTensorDigest]) -> list[ChunkedTensorDigest]:
    """The v2 entries in commitment order; refuses an empty list or a repeated name."""
    digests = sorted(entries, key=lambda d: d.name.encode("utf-8"))
    if not digests:
        raise CommitmentError("a weight commitment needs at least one tensor")
    for a, b in itertools.pairwise(digests):
        if a.name == b.name:
            raise CommitmentError(f"tensor {a.name!r} appears more than once")
    return digests


def chunked_commitment_tree(entries: Iterable[ChunkedTensorDigest]) -> MerkleTree:
    """The v2 tree over the tensors (leaf i = i-th in commitment order)."""
    return MerkleTree(leaf_hash(d.leaf()) for d in sorted_chunked(entries))


def chunked_weight_commitment(entries: Iterable[ChunkedTensorDigest]) -> bytes:
    """The 32-byte v2 weight commitment."""
    return chunked_commitment_tree(entries).root()


def _level_root(hashes: list[bytes]) -> bytes:
    """RFC 6962 root over already hashed leaves, level by level (an unpaired last node moves up unchanged,
    which gives the same root as RFC 6962's split at the largest power of two)."""
    sha = hashlib.sha256
    while len(hashes) > 1:
        nxt = [sha(b"\x01" + hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes) - 1, 2)]
        if len(hashes) % 2:
            nxt.append(hashes[-1])
        hashes = nxt
    return hashes[0]


def _chunk_leaves(data: bytes | memoryview, chunk_size: int) -> list[bytes]:
    mv = memoryview(data).cast("B")
    if not len(mv):
        return [leaf_hash(b"")]
    pre = hashlib.sha256(b"\x00")
    out = []
    for i in range(0, len(mv), chunk_size):
        h = pre.copy()
        h.update(mv[i : i + chunk_size])
        out.append(h.digest())
    return out


class ChunkHasher:
    """The chunk-tree root of a byte stream fed in pieces (``update``), in memory of a few hashes.

    The stream is cut into blocks of ``block_chunks`` chunks (a power of two); each full block is an aligned
    complete subtree of the RFC 6962 tree, so its root is pushed on a stack of complete subtrees merged like a
    binary counter, and the root is the right fold of the stack (the partial last block last).
    """

    def __init__(self, chunk_size: int, block_bytes: int = 1 << 20) -> None:
        self.chunk_size = check_chunk_size(chunk_size)
        self.block_bytes = max(chunk_size, block_bytes)
        if self.block_bytes & (self.block_bytes - 1):
            raise CommitmentError("block size must be a power of two")
        self._pending = bytearray()
        self._stack: list[tuple[int, bytes]] = []  # (number of chunks, subtree root), sizes decreasing
        self.nbytes = 0

    def update(self, data: bytes | memoryview) -> None:
        mv = memoryview(data).cast("B")
        self.nbytes += len(mv)
        if self._pending:
            take = min(len(mv), self.block_bytes - len(self._pending))
            self._pending += mv[:take]
            mv = mv[take:]
            if len(self._pending) == self.block_bytes:
                self._push(bytes(self._pending))
                self._pending = bytearray()
        while len(mv) >= self.block_bytes:
            self._push(mv[: self.block_bytes])
            mv = mv[self.block_bytes :]
        if len(mv):
            self._pending += mv

    def _push(self, block: bytes | memoryview) -> None:
        size, root = self.block_bytes // self.chunk_size, _level_root(_chunk_leaves(block, self.chunk_size))
        while self._stack and self._stack[-1][0] == size:
            left = self._stack.pop()[1]
            root, size = node_hash(left, root), size * 2
        self._stack.append((size, root))

    def root(self) -> bytes:
        """The chunk-tree root of everything fed so far (the hasher can go on being fed)."""
        parts = [root for _, root in self._stack]
        if self._pending or not parts:
            parts.append(_level_root(_chunk_leaves(bytes(self._pending), self.chunk_size)))
        root = parts[-1]
        for left in reversed(parts[:-1]):
            root = node_hash(left, root)
        return root


def chunk_tree_root(data: bytes | memoryview, chunk_size: int) -> bytes:
    """The RFC 6962 root over ``data`` cut into ``chunk_size``-byte chunks."""
    h = ChunkHasher(chunk_size)
    h.update(data)
    return h.root()


def chunk_inclusion(data: bytes | memoryview, chunk_size: int, index: int,
                    block_bytes: int = 1 << 20) -> tuple[bytes, list[bytes]]:
    """Chunk ``index`` of ``data`` and its RFC 6962 inclusion proof in the chunk tree (leaf to root). The tree
    is built a block at a time: the path inside the chunk's block, then the path among the block roots."""
    check_chunk_size(chunk_size)
    mv = memoryview(data).cast("B")
    n = chunk_count(len(mv), chunk_size)
    if not 0 <= index < n:
        raise CommitmentError(f"chunk {index} out of range ({n} chunks)")
    per_block = max(1, block_bytes // chunk_size)
    block_bytes = per_block * chunk_size
    starts = range(0, max(1, len(mv)), block_bytes)
    roots: list[bytes] = []
    inner: list[bytes] = []
    target = index // per_block
    for b, start in enumerate(starts):
        leaves = _chunk_leaves(mv[start : start + block_bytes], chunk_size)
        if b == target:
            tree = MerkleTree(leaves)
            inner = tree.inclusion_proof(index - b * per_block)
            roots.append(tree.root())
        else:
            roots.append(_level_root(leaves))
    outer = MerkleTree(roots).inclusion_proof(target) if len(roots) > 1 else []
    chunk = bytes(mv[index * chunk_size : (index + 1) * chunk_size])
    return chunk, inner + outer

