"""pawprint's verifier: checks signed submissions of invariant terms and answers with signed receipts.

The pipeline, one module each:

- ``_challenges``: fresh 32-byte nonces, single use, with expiry (time and randomness injected);
- ``_checks``: every check before any computation (signature, key and role, nonce, terms table, limits,
  then each chunk's order and each tensor's digest, dtype, shape and finiteness);
- ``_calibration``: the measured null, z-scores, p-values and the verdict rule;
- ``_compare``: ICS against every registered base (layers matched) and the calibrated verdict;
- ``_encoder``, ``_render``, ``_pictures``: terms -> a 512-d N(0, I) vector -> a dog, as receipts carry them;
- ``_report``: the self-contained HTML dispute report;
- ``_log``: the registry's transparency log on disk (entries, signed checkpoints, proofs; append is one
  SQLite transaction under the writer lock, start-up replays and checks everything);
- ``_registry``: the registry of base models over that log (vendors publish and revoke, administrators add),
  accepted submissions, content-addressed blobs;
- ``_service``: ``VerifierService`` and ``RegistryService`` (the logic) and their gRPC adapters and server
  (``serve``);
- ``_registry_client``: the registry as vendors and auditors reach it (gRPC or a local data directory) and
  the checks they make of what it serves (inclusion, publish answers, receipts' entries, the audit);
- ``_access``: client certificates mapped to roles, per-key rate and byte limits;
- ``_pins``: the pinned SHA-256 of the data files the verifier loads, checked at start-up;
- ``_tls``: throwaway certificates for loopback tests and the demo.

The verifier never stores anything for a rejected submission, and keeps a submission's terms after the
verdict only when the owner asked. Every refusal is a ``VerifierError`` (``verifier.errors``).
"""

from verifier._access import Caller, Client, ClientRoles, RateLimiter, RateLimits, cert_fingerprint
from verifier._calibration import (
    DEFAULT_THRESHOLDS,
    NullError,
    NullModel,
    Thresholds,
    assess,
    base_verdict,
    fit_null,
    load_null,
    overall_verdict,
)
from verifier._challenges import ChallengeStore
from verifier._checks import check_bundle, check_header
from verifier._compare import BaseModel, compare_with_bases, decide, recheck_verdict, verdict_of
from verifier._encoder import ENCODER_DIM, Encoder, EncoderInputError, load_encoder, vector_digest
from verifier._log import TransparencyLog
from verifier._registry import BaseEntry, BlobStore, LogSnapshot, Published, Registry
from verifier._registry_client import (
    LocalRegistry,
    LogCheckFailed,
    LogSource,
    Proven,
    RegistryClientError,
    RemoteRegistry,
    audit,
    check_inclusion,
    check_published,
    check_receipt_entries,
    open_note,
    prove,
    statement_of,
)
from verifier._render import RENDERER_ID, dog_attributes, image_distance, render_png, render_sheet, render_svg
from verifier._service import (
    REGISTRY_SERVICE_NAME,
    SERVICE_NAME,
    Chunk,
    Lifecycle,
    RegistryService,
    RunningServer,
    ServerConfig,
    TlsConfig,
    VerifierService,
    create_server,
    serve,
    split_host_port,
    start,
)
from verifier._tls import LoopbackPki, issue_cert, make_ca, write_test_pki
from verifier.errors import (
    AlreadyExists,
    ChallengeExpired,
    ChallengeRejected,
    ConfigError,
    InProgress,
    InvalidSubmission,
    LimitExceeded,
    NonceUsed,
    NotFound,
    OutOfRange,
    PermissionDenied,
    RegistryCorrupt,
    RegistryError,
    StorageFull,
    Unauthenticated,
    Unavailable,
    VerifierError,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ENCODER_DIM",
    "REGISTRY_SERVICE_NAME",
    "RENDERER_ID",
    "SERVICE_NAME",
    "AlreadyExists",
    "BaseEntry",
    "BaseModel",
    "BlobStore",
    "Caller",
    "ChallengeExpired",
    "ChallengeRejected",
    "ChallengeStore",
    "Chunk",
    "Client",
    "ClientRoles",
    "ConfigError",
    "Encoder",
    "EncoderInputError",
    "InProgress",
    "InvalidSubmission",
    "Lifecycle",
    "LimitExceeded",
    "LocalRegistry",
    "LogCheckFailed",
    "LogSnapshot",
    "LogSource",
    "LoopbackPki",
    "NonceUsed",
    "NotFound",
    "NullError",
    "NullModel",
    "OutOfRange",
    "PermissionDenied",
    "Proven",
    "Published",
    "RateLimiter",
    "RateLimits",
    "Registry",
    "RegistryClientError",
    "RegistryCorrupt",
    "RegistryError",
    "RegistryService",
    "RemoteRegistry",
    "RunningServer",
    "ServerConfig",
    "StorageFull",
    "Thresholds",
    "TlsConfig",
    "TransparencyLog",
    "Unauthenticated",
    "Unavailable",
    "VerifierError",
    "VerifierService",
    "assess",
    "audit",
    "base_verdict",
    "cert_fingerprint",
    "check_bundle",
    "check_header",
    "check_inclusion",
    "check_published",
    "check_receipt_entries",
    "compare_with_bases",
    "create_server",
    "decide",
    "dog_attributes",
    "fit_null",
    "image_distance",
    "issue_cert",
    "load_encoder",
    "load_null",
    "make_ca",
    "open_note",
    "overall_verdict",
    "prove",
    "recheck_verdict",
    "render_png",
    "render_sheet",
    "render_svg",
    "serve",
    "split_host_port",
    "start",
    "statement_of",
    "vector_digest",
    "verdict_of",
    "write_test_pki",
]
