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
- **Transparency log** (``Checkpoint``, ``parse_checkpoint``, ``open_checkpoint``; ``RegistryStatement``,
  ``LogEntry``, ``audit_log``): the registry log's signed checkpoint notes (C2SP signed-note style, pawprint
  signatures), the vendor's signed statements and the log's entries, and the audit of a log between a
  checkpoint saved earlier and the current one; all pure.
- **Weight commitment** (``weight_commitment``): the Merkle root over every tensor's
  (name, dtype, shape, SHA-256), pinning a checkpoint without revealing it.
- **Messages** (``Challenge``, ``Manifest``, ``Bundle``, ``Receipt``): the signed structures of the
  owner-verifier exchange and the offline bundle and receipt files; no floats (scores are decimal strings,
  ``format_score``). The gRPC stubs that carry them live apart, in ``protocol._pb``, and are imported only by
  the gRPC adapters.

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
from protocol._checkpoint import (
    CHECKPOINT_KIND,
    Checkpoint,
    CheckpointError,
    NoteSignature,
    SignedCheckpoint,
    key_hash,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
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
from protocol._log import (
    ENTRY_FORMAT,
    REGISTER,
    REVOKE,
    STATEMENT_KIND,
    AuditReport,
    EntryError,
    LogEntry,
    LogRules,
    RegistryEntry,
    RegistryStatement,
    audit_log,
    check_base_name,
    name_skeleton,
    open_statement,
)
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
from protocol._messages import (
    BUNDLE_FORMAT,
    BUNDLE_LIMITS,
    MESSAGE_VERSION,
    NONCE_SIZE,
    OFFLINE_MANIFEST_KIND,
    ONLINE_MANIFEST_KIND,
    PICTURE_DIM,
    RECEIPT_FORMAT,
    SCORE_PLACES,
    VERDICTS,
    Bundle,
    Challenge,
    Manifest,
    Match,
    MessageError,
    Picture,
    ProbeSpec,
    Receipt,
    RegistryState,
    SignedMessage,
    SubmissionLimits,
    TermGroup,
    TermScoreRecord,
    WeightCommitment,
    check_p,
    check_tensors,
    check_z,
    format_score,
    open_challenge,
    open_manifest,
    open_receipt,
    parse_score,
    sign_message,
    tensor_name,
)
from protocol._trust import Role, TrustedKey, TrustStore

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_LIMITS",
    "CHECKPOINT_KIND",
    "DEFAULT_LIMITS",
    "DIGEST_SIZE",
    "DOMAIN_PREFIX",
    "DTYPE_ITEMSIZE",
    "EMPTY_ROOT",
    "ENTRY_FORMAT",
    "MESSAGE_VERSION",
    "NONCE_SIZE",
    "OFFLINE_MANIFEST_KIND",
    "ONLINE_MANIFEST_KIND",
    "PICTURE_DIM",
    "PUBLIC_KEY_SIZE",
    "RECEIPT_FORMAT",
    "REGISTER",
    "REVOKE",
    "SCORE_PLACES",
    "SIGNATURE_KINDS",
    "SIGNATURE_SIZE",
    "STATEMENT_KIND",
    "VERDICTS",
    "WEIGHT_COMMITMENT_ID",
    "AuditReport",
    "Bundle",
    "CanonicalError",
    "Challenge",
    "Checkpoint",
    "CheckpointError",
    "CommitmentError",
    "EntryError",
    "FormatError",
    "KeyFileError",
    "Limits",
    "LogEntry",
    "LogRules",
    "Manifest",
    "Match",
    "MerkleError",
    "MerkleTree",
    "MessageError",
    "NoteSignature",
    "Picture",
    "PrivateKey",
    "ProbeSpec",
    "ProofError",
    "ProtocolError",
    "PublicKey",
    "Receipt",
    "RegistryEntry",
    "RegistryState",
    "RegistryStatement",
    "Role",
    "SignatureError",
    "SignedCheckpoint",
    "SignedMessage",
    "SubmissionLimits",
    "Tensor",
    "TensorDigest",
    "TermGroup",
    "TermScoreRecord",
    "TrustStore",
    "TrustStoreError",
    "TrustedKey",
    "UnknownKindError",
    "UntrustedKeyError",
    "WeightCommitment",
    "atomic_write",
    "audit_log",
    "check_base_name",
    "check_p",
    "check_tensors",
    "check_z",
    "commitment_leaf",
    "commitment_tree",
    "consistency_proof",
    "decode",
    "decode_map",
    "domain_digest",
    "dtype_itemsize",
    "encode",
    "format_score",
    "from_hex",
    "inclusion_proof",
    "key_hash",
    "key_id",
    "leaf_hash",
    "merkle_root",
    "name_skeleton",
    "node_hash",
    "open_challenge",
    "open_checkpoint",
    "open_manifest",
    "open_receipt",
    "open_statement",
    "parse_checkpoint",
    "parse_digest_hex",
    "parse_score",
    "root_from_inclusion_proof",
    "sha256",
    "sha256_hex",
    "sign_checkpoint",
    "sign_message",
    "sorted_entries",
    "tensor_map",
    "tensor_name",
    "to_hex",
    "verify",
    "verify_consistency",
    "verify_inclusion",
    "weight_commitment",
]
