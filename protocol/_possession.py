"""Proof of possession: an owner shows it holds the weights behind the commitment it claims.

A weight commitment is 32 bytes anyone can copy from a receipt. To keep an owner from claiming another
owner's commitment (framing), a submission may open a few small chunks of the committed weights against a
chunk-level (``weights-v2``) commitment, chosen so that the owner cannot pick them:

- ``seed = SHA-256("pawprint/v1/possession\\0" || nonce || root)``: the verifier's fresh challenge nonce and the
  claimed root, nothing the owner chooses after seeing the nonce (Fiat-Shamir: the challenge message needs no
  field of its own);
- opening ``j`` (``0 <= j < k``) opens tensor ``t_j = H(seed || "T" || j) mod n`` (``n`` tensors, commitment
  order), and in it chunk ``c_j = H(seed || "C" || j) mod chunks(t_j)``, where ``H`` is SHA-256 read as a
  big-endian integer (the modulo bias is below 2^-200);
- each opening carries the tensor's v2 leaf with its inclusion proof in the tensor tree (size ``n``) and the
  chunk's bytes with their inclusion proof in the tensor's chunk tree.

Someone holding only the root cannot produce one opening. What it reveals is ``k`` chunks of at most
``chunk_size`` bytes each (``PossessionProof.revealed_bytes``; 3 x 64 = 192 bytes with the defaults), plus the
names, dtypes, shapes and byte lengths of the opened tensors and 32-byte hashes. Over N submissions the
openings are independent, so at most ``N * k * chunk_size`` bytes of the checkpoint are revealed.

The proof travels in the signed manifest (``Manifest.possession``); ``verify_possession`` is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol._canonical import DTYPE_ITEMSIZE
from protocol._commitment import (
    ChunkedTensorDigest,
    chunk_count,
    chunk_inclusion,
    commitment_chunk_size,
)
from protocol._errors import CommitmentError, FormatError, ProofError
from protocol._hashing import DIGEST_SIZE, sha256
from protocol._merkle import MerkleTree, leaf_hash, verify_inclusion

DEFAULT_OPENINGS = 3
MAX_OPENINGS = 64
# Records every choice that changes which chunks are opened or how they are checked.
POSSESSION_ID = "possession-v1:seed=sha256(pawprint/v1/possession\\0||nonce||root):tensor,chunk=sha256-mod"
_DOMAIN = b"pawprint/v1/possession\x00"
_MAX_PATH = 64


class PossessionError(FormatError):
    """A possession proof is malformed or does not open the claimed commitment."""


def possession_seed(nonce: bytes, root: bytes) -> bytes:
    return sha256(_DOMAIN + bytes(nonce) + bytes(root))


def _pick(seed: bytes, tag: bytes, j: int, modulus: int) -> int:
    return int.from_bytes(sha256(seed + tag + j.to_bytes(4, "big")), "big") % modulus


def tensor_picks(nonce: bytes, root: bytes, n_tensors: int, openings: int = DEFAULT_OPENINGS) -> list[int]:
    """The tensor (commitment order) each opening must open."""
    seed = possession_seed(nonce, root)
    return [_pick(seed, b"T", j, n_tensors) for j in range(openings)]


def chunk_pick(nonce: bytes, root: bytes, j: int, n_chunks: int) -> int:
    """The chunk opening ``j`` must open in a tensor of ``n_chunks`` chunks."""
    return _pick(possession_seed(nonce, root), b"C", j, n_chunks)


def _digests(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > _MAX_PATH or not all(
            isinstance(h, bytes) and len(h) == DIGEST_SIZE for h in value):
        raise PossessionError(f"{what}: expected a list of at most {_MAX_PATH} 32-byte hashes")
    return tuple(value)


def _fields(value: object, what: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(keys):
        raise PossessionError(f"{what}: expected a map with exactly the fields {', '.join(sorted(keys))}")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PossessionError(f"{what}: expected a non-negative integer")
    return value


@dataclass(frozen=True)
class Opening:
    """One opened chunk: the tensor's v2 leaf and its proof in the tensor tree, the chunk and its proof."""

    tensor_index: int
    tensor: ChunkedTensorDigest
    tensor_proof: tuple[bytes, ...]
    chunk_index: int
    chunk: bytes
    chunk_proof: tuple[bytes, ...]

    def to_map(self) -> dict[str, object]:
        return {"chunk": self.chunk, "chunk_index": self.chunk_index, "chunk_proof": list(self.chunk_proof),
                "tensor": self.tensor.to_map(), "tensor_index": self.tensor_index,
                "tensor_proof": list(self.tensor_proof)}

    @classmethod
    def from_map(cls, value: object, what: str = "opening") -> Opening:
        f = _fields(value, what, ("chunk", "chunk_index", "chunk_proof", "tensor", "tensor_index", "tensor_proof"))
        t = _fields(f["tensor"], f"{what}.tensor", ("chunk_root", "dtype", "name", "nbytes", "shape"))
        shape = t["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise PossessionError(f"{what}.tensor.shape: expected a list of integers")
        if not isinstance(f["chunk"], bytes):
            raise PossessionError(f"{what}.chunk: expected bytes")
        try:
            tensor = ChunkedTensorDigest(t["name"], t["dtype"], tuple(shape), _int(t["nbytes"], f"{what}.nbytes"),
                                         t["chunk_root"])
        except CommitmentError as e:
            raise PossessionError(f"{what}.tensor: {e}") from e
        return cls(_int(f["tensor_index"], f"{what}.tensor_index"), tensor,
                   _digests(f["tensor_proof"], f"{what}.tensor_proof"), _int(f["chunk_index"], f"{what}.chunk_index"),
                   f["chunk"], _digests(f["chunk_proof"], f"{what}.chunk_proof"))


@dataclass(frozen=True)
class PossessionProof:
    """The openings a submission makes against its v2 weight commitment (``verify_possession`` checks them)."""

    openings: tuple[Opening, ...]
    id: str = POSSESSION_ID

    @property
    def revealed_bytes(self) -> int:
        """Bytes of weights the proof reveals."""
        return sum(len(o.chunk) for o in self.openings)

    def to_map(self) -> dict[str, object]:
        return {"id": self.id, "openings": [o.to_map() for o in self.openings]}

    @classmethod
    def from_map(cls, value: object, what: str = "possession") -> PossessionProof:
        f = _fields(value, what, ("id", "openings"))
        if not isinstance(f["id"], str) or not isinstance(f["openings"], list):
            raise PossessionError(f"{what}: id must be a string and openings a list")
        if len(f["openings"]) > MAX_OPENINGS:
            raise PossessionError(f"{what}: more than {MAX_OPENINGS} openings")
        return cls(tuple(Opening.from_map(o, f"{what}.openings[{i}]") for i, o in enumerate(f["openings"])), f["id"])


def verify_possession(proof: PossessionProof, *, nonce: bytes, root: bytes, commitment_id: str, tensors: int,
                      openings: int = DEFAULT_OPENINGS) -> None:
    """``PossessionError`` unless ``proof`` opens exactly the chunks ``nonce`` and ``root`` select, each against
    ``root`` (a v2 commitment over ``tensors`` tensors)."""
    if proof.id != POSSESSION_ID:
        raise PossessionError(f"unknown possession proof id {proof.id!r:.80}")
    try:
        chunk_size = commitment_chunk_size(commitment_id)
    except CommitmentError as e:
        raise PossessionError(str(e)) from e
    if chunk_size is None:
        raise PossessionError("possession needs a chunked (weights-v2) commitment; this one is v1")
    if tensors < 1:
        raise PossessionError("the commitment names no tensor")
    if len(proof.openings) != openings:
        raise PossessionError(f"{len(proof.openings)} openings, {openings} required")
    picks = tensor_picks(nonce, root, tensors, openings)
    for j, (o, t) in enumerate(zip(proof.openings, picks, strict=True)):
        where = f"opening {j} (tensor {o.tensor.name!r:.60}, chunk {o.chunk_index})"
        if o.tensor_index != t:
            raise PossessionError(f"opening {j} opens tensor {o.tensor_index}, the challenge selects tensor {t}")
        itemsize = DTYPE_ITEMSIZE.get(o.tensor.dtype)
        if itemsize is not None:
            count = 1
            for d in o.tensor.shape:
                count *= d
            if count * itemsize != o.tensor.nbytes:
                raise PossessionError(f"{where}: {o.tensor.nbytes} bytes for {o.tensor.dtype} {list(o.tensor.shape)}")
        n_chunks = chunk_count(o.tensor.nbytes, chunk_size)
        want = chunk_pick(nonce, root, j, n_chunks)
        if o.chunk_index != want:
            raise PossessionError(f"opening {j} opens chunk {o.chunk_index}, the challenge selects chunk {want}")
        length = min(chunk_size, o.tensor.nbytes - want * chunk_size) if o.tensor.nbytes else 0
        if len(o.chunk) != length:
            raise PossessionError(f"{where}: {len(o.chunk)} bytes, the chunk has {length}")
        try:
            verify_inclusion(leaf_hash(o.tensor.leaf()), t, tensors, o.tensor_proof, root)
        except ProofError as e:
            raise PossessionError(f"{where}: the tensor is not in the claimed commitment ({e})") from e
        try:
            verify_inclusion(leaf_hash(o.chunk), want, n_chunks, o.chunk_proof, o.tensor.chunk_root)
        except ProofError as e:
            raise PossessionError(f"{where}: the chunk is not the committed bytes ({e})") from e


def prove_possession(nonce: bytes, entries: Sequence[ChunkedTensorDigest], chunk_size: int,
                     read: Callable[[ChunkedTensorDigest], bytes | memoryview],
                     openings: int = DEFAULT_OPENINGS) -> PossessionProof:
    """The openings for ``nonce`` over ``entries`` (in commitment order); ``read`` gives a tensor's bytes (it
    is called once per opened tensor, only for the tensors the challenge selects)."""
    tree = MerkleTree(leaf_hash(e.leaf()) for e in entries)
    root = tree.root()
    out: list[Opening] = []
    for j, t in enumerate(tensor_picks(nonce, root, len(entries), openings)):
        entry = entries[t]
        data = read(entry)
        if len(memoryview(data).cast("B")) != entry.nbytes:
            raise CommitmentError(f"{entry.name}: read {len(data)} bytes, committed {entry.nbytes}")
        c = chunk_pick(nonce, root, j, chunk_count(entry.nbytes, chunk_size))
        chunk, path = chunk_inclusion(data, chunk_size, c)
        out.append(Opening(t, entry, tuple(tree.inclusion_proof(t)), c, chunk, tuple(path)))
    return PossessionProof(tuple(out))
