"""pawprint's verifier: checks signed submissions of invariant terms and answers with signed receipts.

The pipeline, one module each:

- ``_challenges``: fresh 32-byte nonces, single use, with expiry (time and randomness injected);
- ``_checks``: every check before any computation (signature, key and role, nonce, terms table, limits,
  then each chunk's order and each tensor's digest, dtype, shape and finiteness);
- ``_calibration``: the measured null, z-scores, p-values and the verdict rule;
- ``_ics``: ICS, the comparison of two models' terms (``compare``), and the matching of their layers;
- ``_compare``: ICS against every registered base (layers matched) and the calibrated verdict;
- ``_encoder``, ``_render``, ``_pictures``: terms -> a 512-d N(0, I) vector -> a dog, as receipts carry them;
- ``_report``: the self-contained HTML dispute report (its sample and browser check: ``benchmarks.report_sample``);
- ``_log``: the registry's transparency log on disk (entries, signed checkpoints, proofs; append is one
  SQLite transaction under the writer lock, start-up replays and checks everything);
- ``_store``: the data directory under it (SQLite database, content-addressed blobs; the tables of accepted
  submissions, issued challenges and the screen's sketches);
- ``_registry``: the registry of base models over that log and store (vendors publish and revoke,
  administrators add; reads, proofs, the bases a comparison uses);
- ``_config``: ``ServerConfig`` and ``TlsConfig``, what the services and the server accept;
- ``_service``: ``VerifierService`` and ``RegistryService``, the logic (signed values in, signed values out);
- ``_server``: their gRPC servicers and the server's life cycle (``start``, ``serve``, ``RunningServer``);
- ``_registry_client``: the registry's log on a local data directory as a ``LogSource`` (over gRPC it is
  ``protocol.wire.RemoteRegistry``; the auditor's checks of what either serves are ``protocol``'s);
- ``_access``: client certificates mapped to roles, per-key rate and byte limits;
- ``_pins``: the pinned SHA-256 of the data files the verifier loads, checked at start-up;
- ``_tls``: throwaway certificates for loopback tests and the demo.

The verifier never stores anything for a rejected submission, and keeps a submission's terms after the
verdict only when the owner asked. Every refusal is a ``VerifierError`` (``verifier.errors``).
"""

from verifier._access import (
    Caller,
    Client,
    ClientRoles,
    RateLimiter,
    RateLimits,
    SubmissionBudget,
    cert_fingerprint,
)
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
    shipped_nulls,
)
from verifier._challenges import ChallengeStore
from verifier._checks import check_bundle, check_header
from verifier._compare import BaseModel, compare_with_bases, decide, recheck_verdict, verdict_of
from verifier._config import ServerConfig, TlsConfig, split_host_port
from verifier._encoder import ENCODER_DIM, Encoder, EncoderInputError, load_encoder, vector_digest
from verifier._ics import (
    Comparison,
    TermScore,
    compare,
    default_layer_pairs,
    layer_similarity,
    match_layers,
    standardise,
    term_cosine,
)
from verifier._lifecycle import run_until_signalled
from verifier._log import TransparencyLog
from verifier._pictures import PictureMismatch, receipt_sheet, redraw
from verifier._registry import BaseEntry, LogSnapshot, Registry
from verifier._registry_client import LocalRegistry, LogSource
from verifier._render import RENDERER_ID, dog_attributes, image_distance, render_png, render_sheet, render_svg
from verifier._report import (
    FindingItem,
    ReportError,
    ReportItem,
    check_findings,
    check_receipts,
    write_report,
    write_report_page,
)
from verifier._server import REGISTRY_SERVICE_NAME, SERVICE_NAME, RunningServer, create_server, serve, start
from verifier._service import Chunk, Lifecycle, RegistryService, VerifierService
from verifier._store import BlobStore
from verifier._tls import LoopbackPki, issue_cert, make_ca, write_test_pki
from verifier.errors import (
    AlreadyExists,
    ChallengeExpired,
    ChallengeRejected,
    ConfigError,
    IncomparableError,
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
    "Comparison",
    "ConfigError",
    "Encoder",
    "EncoderInputError",
    "FindingItem",
    "InProgress",
    "IncomparableError",
    "InvalidSubmission",
    "Lifecycle",
    "LimitExceeded",
    "LocalRegistry",
    "LogSnapshot",
    "LogSource",
    "LoopbackPki",
    "NonceUsed",
    "NotFound",
    "NullError",
    "NullModel",
    "OutOfRange",
    "PermissionDenied",
    "PictureMismatch",
    "RateLimiter",
    "RateLimits",
    "Registry",
    "RegistryCorrupt",
    "RegistryError",
    "RegistryService",
    "ReportError",
    "ReportItem",
    "RunningServer",
    "ServerConfig",
    "StorageFull",
    "SubmissionBudget",
    "TermScore",
    "Thresholds",
    "TlsConfig",
    "TransparencyLog",
    "Unauthenticated",
    "Unavailable",
    "VerifierError",
    "VerifierService",
    "assess",
    "base_verdict",
    "cert_fingerprint",
    "check_bundle",
    "check_findings",
    "check_header",
    "check_receipts",
    "compare",
    "compare_with_bases",
    "create_server",
    "decide",
    "default_layer_pairs",
    "dog_attributes",
    "fit_null",
    "image_distance",
    "issue_cert",
    "layer_similarity",
    "load_encoder",
    "load_null",
    "make_ca",
    "match_layers",
    "overall_verdict",
    "receipt_sheet",
    "recheck_verdict",
    "redraw",
    "render_png",
    "render_sheet",
    "render_svg",
    "run_until_signalled",
    "serve",
    "shipped_nulls",
    "split_host_port",
    "standardise",
    "start",
    "term_cosine",
    "vector_digest",
    "verdict_of",
    "write_report",
    "write_report_page",
    "write_test_pki",
]
