"""The verifier's error hierarchy: every refusal is a ``VerifierError`` whose class fixes the gRPC status.

The class names the status as a string (``status``) so that the checks, the registry and the CLI need not
import grpc; only ``verifier._server`` turns it into a gRPC status (``protocol.wire.abort``). Messages go to an
untrusted peer: they say what was wrong with the submission, never anything about the verifier's keys, files or
registry beyond what the challenge already announced, and signature failures stay opaque.
"""

from __future__ import annotations

from typing import ClassVar


class VerifierError(Exception):
    """Base class of every error the verifier raises on bad input or bad configuration."""

    status: ClassVar[str] = "INTERNAL"


class InvalidSubmission(VerifierError):
    """Malformed input: undecodable, inconsistent, a tensor that does not match its digest, dtype, shape or
    finiteness, chunks out of order, a truncated stream."""

    status = "INVALID_ARGUMENT"


class Unauthenticated(VerifierError):
    """The signature does not verify, or the key is unknown (or revoked)."""

    status = "UNAUTHENTICATED"


class PermissionDenied(VerifierError):
    """The key is known but not trusted for what it signed (e.g. a vendor key signing a submission)."""

    status = "PERMISSION_DENIED"


class ChallengeRejected(VerifierError):
    """The nonce was not issued by this verifier, or was already used: ask for a new challenge."""

    status = "FAILED_PRECONDITION"


class NonceUsed(ChallengeRejected):
    """The nonce answered a submission already (the service then looks for that submission's receipt)."""


class InProgress(VerifierError):
    """Another stream answering the same challenge is being processed: retry once it has finished."""

    status = "ABORTED"


class Unavailable(VerifierError):
    """The verifier is shutting down and takes no new work: retry against it later (or another replica)."""

    status = "UNAVAILABLE"


class ChallengeExpired(VerifierError):
    """The challenge expired, or the stream ran past its deadline: ask for a new challenge, submit sooner."""

    status = "DEADLINE_EXCEEDED"


class LimitExceeded(VerifierError):
    """The submission is larger than the challenge's limits allow, or the verifier is at capacity.

    ``retry_after_s``: when waiting helps (a rate limit), how long; it travels to the client as a
    ``google.rpc.RetryInfo`` status detail (``protocol.wire.abort``), so no client parses the message.
    """

    status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageFull(LimitExceeded):
    """The verifier's disk is full: nothing was stored; retry later."""


class RegistryError(VerifierError):
    """The registry refused an operation (an unrevoked entry already has the name, the log key is missing)."""

    status = "FAILED_PRECONDITION"


class AlreadyExists(RegistryError):
    """The name is held by another vendor, or the manifest is already registered under other terms (another
    name or other metadata): entries are never edited."""

    status = "ALREADY_EXISTS"


class NotFound(RegistryError):
    """No entry has that index, name or manifest digest (or there is nothing to revoke)."""

    status = "NOT_FOUND"


class OutOfRange(RegistryError):
    """A proof was asked for an index or tree size the log does not have (yet)."""

    status = "OUT_OF_RANGE"


class RegistryCorrupt(RegistryError):
    """The database or a blob does not hold what the log says: refuse to serve rather than serve it."""

    status = "DATA_LOSS"


class ConfigError(VerifierError):
    """The server cannot start as configured (plaintext off loopback, missing TLS material, bad address)."""


class IncomparableError(VerifierError):
    """Two invariant sets cannot be compared: different methods, too few common probe tokens, no layers."""

    status = "FAILED_PRECONDITION"
