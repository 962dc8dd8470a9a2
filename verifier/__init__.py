"""pawprint's verifier: checks signed submissions of invariant terms and answers with signed receipts.

The pipeline, one module each:

- ``_challenges``: fresh 32-byte nonces, single use, with expiry (time and randomness injected);
- ``_checks``: every check before any computation (signature, key and role, nonce, terms table, limits,
  then each chunk's order and each tensor's digest, dtype, shape and finiteness);
- ``_compare``: ICS against every registered base and the provisional verdict rule;
- ``_registry``: SQLite (WAL) entries for bases and accepted submissions, content-addressed blobs;
- ``_service``: ``VerifierService`` (the logic) and the gRPC adapter and server (``serve``);
- ``_tls``: throwaway certificates for loopback tests and the demo.

The verifier never stores anything for a rejected submission, and keeps a submission's terms after the
verdict only when the owner asked. Every refusal is a ``VerifierError`` (``verifier.errors``).
"""

from verifier._challenges import ChallengeStore
from verifier._checks import check_bundle, check_header
from verifier._compare import (
    VERDICT_RULE,
    BaseModel,
    base_verdict,
    compare_with_bases,
    overall_verdict,
    recheck_verdict,
)
from verifier._registry import BaseEntry, BlobStore, Registry
from verifier._service import (
    SERVICE_NAME,
    Chunk,
    ServerConfig,
    TlsConfig,
    VerifierService,
    create_server,
    serve,
    split_host_port,
)
from verifier._tls import LoopbackPki, issue_cert, make_ca, write_test_pki
from verifier.errors import (
    ChallengeExpired,
    ChallengeRejected,
    ConfigError,
    InvalidSubmission,
    LimitExceeded,
    PermissionDenied,
    RegistryError,
    Unauthenticated,
    VerifierError,
)

__all__ = [
    "SERVICE_NAME",
    "VERDICT_RULE",
    "BaseEntry",
    "BaseModel",
    "BlobStore",
    "ChallengeExpired",
    "ChallengeRejected",
    "ChallengeStore",
    "Chunk",
    "ConfigError",
    "InvalidSubmission",
    "LimitExceeded",
    "LoopbackPki",
    "PermissionDenied",
    "Registry",
    "RegistryError",
    "ServerConfig",
    "TlsConfig",
    "Unauthenticated",
    "VerifierError",
    "VerifierService",
    "base_verdict",
    "check_bundle",
    "check_header",
    "compare_with_bases",
    "create_server",
    "issue_cert",
    "make_ca",
    "overall_verdict",
    "recheck_verdict",
    "serve",
    "split_host_port",
    "write_test_pki",
]
