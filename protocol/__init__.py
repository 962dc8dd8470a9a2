"""pawprint's shared protocol layer: what both parties need to build, sign and check messages.

No torch, no numpy, no I/O beyond reading and writing key and trust-store files: an auditor can check
receipts and registry proofs with this package alone.

The pieces, in the order a signed message goes through them:

- **Canonical msgpack** (``encode``/``decode``): a value has exactly one byte string; decoding refuses any
  other (unsorted or duplicate keys, long-form ints, floats, ext types, trailing bytes). Tensors travel as
  ``tensor_map(dtype, shape, data)`` with raw little-endian bytes.
- **Domain-separated hashing** (``domain_digest``): every signature covers
  ``SHA-256("pawprint/v1/<kind>\\0" || canonical bytes)`` with ``kind`` from ``SIGNATURE_KINDS``.
- **Ed25519 keys** (``PrivateKey``, ``PublicKey``, ``verify``): key id = hex SHA-256 of the raw public key;
  PKCS#8 / SubjectPublicKeyInfo PEM files, written atomically. ``verify`` fails with one opaque
  ``SignatureError``.
- **Trust store** (``TrustStore``): which key ids are trusted as owner, vendor, verifier or registry;
  ``require(key_id, role)`` or ``verify(...)`` before believing a signature.
- **Merkle trees** (RFC 6962/9162): the transparency log's hashing; ``verify_inclusion`` and
  ``verify_consistency`` are pure and need only bytes and ints.
- **Weight commitment** (``weight_commitment``): the Merkle root over every tensor's
  (name, dtype, shape, SHA-256), pinning a checkpoint without revealing it.

Every error is a ``ProtocolError``.
"""

from protocol._canonical import (
    DEFAULT_LIMITS,
    DTYPE_ITEMSIZE,
    Limits,
    Tensor,
    decode,
    decode_map,
    dtype_itemsize,
    encode,
    tensor_map,
)
from protocol._commitment import (
    WEIGHT_COMMITMENT_ID,
    TensorDigest,
    commitment_leaf,
    commitment_tree,
    sorted_entries,
    weight_commitment,
)
from protocol._errors import (
    CanonicalError,
    CommitmentError,
    FormatError,
    KeyFileError,
    MerkleError,
    ProofError,
    ProtocolError,
    SignatureError,
    TrustStoreError,
    UnknownKindError,
    UntrustedKeyError,
)
from protocol._files import atomic_write
from protocol._hashing import (
    DIGEST_SIZE,
    DOMAIN_PREFIX,
    SIGNATURE_KINDS,
    domain_digest,
    from_hex,
    parse_digest_hex,
    sha256,
    sha256_hex,
    to_hex,
)
from protocol._keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, PublicKey, key_id, verify
from protocol._merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from protocol._trust import Role, TrustedKey, TrustStore

__all__ = [
    "DEFAULT_LIMITS",
    "DIGEST_SIZE",
    "DOMAIN_PREFIX",
    "DTYPE_ITEMSIZE",
    "EMPTY_ROOT",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_KINDS",
    "SIGNATURE_SIZE",
    "WEIGHT_COMMITMENT_ID",
    "CanonicalError",
    "CommitmentError",
    "FormatError",
    "KeyFileError",
    "Limits",
    "MerkleError",
    "MerkleTree",
    "PrivateKey",
    "ProofError",
    "ProtocolError",
    "PublicKey",
    "Role",
    "SignatureError",
    "Tensor",
    "TensorDigest",
    "TrustStore",
    "TrustStoreError",
    "TrustedKey",
    "UnknownKindError",
    "UntrustedKeyError",
    "atomic_write",
    "commitment_leaf",
    "commitment_tree",
    "consistency_proof",
    "decode",
    "decode_map",
    "domain_digest",
    "dtype_itemsize",
    "encode",
    "from_hex",
    "inclusion_proof",
    "key_id",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "parse_digest_hex",
    "root_from_inclusion_proof",
    "sha256",
    "sha256_hex",
    "sorted_entries",
    "tensor_map",
    "to_hex",
    "verify",
    "verify_consistency",
    "verify_inclusion",
    "weight_commitment",
]
