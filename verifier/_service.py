"""The verifier service: the submission logic (``VerifierService``) and the gRPC adapter and server around it.

``VerifierService`` takes domain values (signed messages, chunks) and returns signed messages; it issues
challenges, runs every check of ``verifier._checks`` before computing anything, compares the submission
with every registered base, signs the receipt and records it. The gRPC servicer only converts protobuf
messages to those values and ``VerifierError`` classes to status codes; ``serve`` builds the server:
thread pool (a slow stream holds one thread; ``max_concurrent_rpcs`` refuses more with RESOURCE_EXHAUSTED),
explicit message size limit, a per-stream deadline, the standard gRPC health service, and TLS (mutual TLS
when a client CA is given). Plaintext is refused unless explicitly allowed, and then only on 127.0.0.1/::1.

The service never keeps a submission's terms after the verdict unless the owner asked for it
(``keep_invariants``), and stores nothing at all for a submission it rejects.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from owner._fingerprint import invariants_from_group
from protocol import (
    PrivateKey,
    ProtocolError,
    PublicKey,
    Receipt,
    SignedMessage,
    SubmissionLimits,
    TrustStore,
    sha256,
    sign_message,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from verifier._challenges import ChallengeStore, Clock, Random
from verifier._checks import TensorReceiver, check_header
from verifier._compare import VERDICT_RULE, compare_with_bases, overall_verdict
from verifier._registry import Registry
from verifier.errors import ChallengeExpired, ConfigError, InvalidSubmission, VerifierError

SERVICE_NAME = "pawprint.v1.Verifier"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
# Room for protobuf framing around the largest manifest or chunk the limits allow.
_MESSAGE_OVERHEAD = 64 * 1024

log = logging.getLogger("pawprint.verifier")


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS material (PEM); with ``client_ca`` clients must present a certificate it signed."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: Path | str, key: Path | str, client_ca: Path | str | None = None) -> TlsConfig:
        def read(path: Path | str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as e:
                raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e

        return cls(read(cert), read(key), read(client_ca) if client_ca is not None else None)


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and what it accepts. ``stream_timeout_s`` bounds one submission stream."""

    listen: str = "127.0.0.1:0"
    tls: TlsConfig | None = None
    insecure_loopback: bool = False
    limits: SubmissionLimits = field(default_factory=lambda: SubmissionLimits(max_manifest_bytes=3 * 1024 * 1024))
    max_message_bytes: int = 4 * 1024 * 1024
    challenge_ttl_s: int = 900
    stream_timeout_s: float = 900.0
    max_workers: int = 16
    max_concurrent_rpcs: int = 64
    layers: str = "last2"
    method: str = "pawprint"
    allow_keep_invariants: bool = True

    def check(self) -> None:
        host, _ = split_host_port(self.listen)
        if self.tls is None:
            if not self.insecure_loopback:
                raise ConfigError("no TLS certificate and key given (plaintext needs --insecure-loopback)")
            if host not in LOOPBACK_HOSTS:
                raise ConfigError(f"plaintext is allowed only on 127.0.0.1 or ::1, not on {host!r}")
        elif self.insecure_loopback:
            raise ConfigError("--insecure-loopback and TLS are exclusive")
        room = self.max_message_bytes - _MESSAGE_OVERHEAD
        if self.limits.max_chunk_bytes > room or self.limits.max_manifest_bytes > room:
            raise ConfigError("chunks and manifests must be well below the gRPC message limit")


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True)
class Chunk:
    """One piece of one term tensor, as the stream carries it."""

    index: int
    offset: int
    data: bytes


class VerifierService:
    """The verifier's logic, free of gRPC: challenges in, signed receipts out."""

    def __init__(
        self,
        key: PrivateKey,
        trust: TrustStore,
        registry: Registry,
        config: ServerConfig | None = None,
        *,
        clock: Clock = time.time,
        rng: Random = secrets.token_bytes,
    ) -> None:
        self.key = key
        self.trust = trust
        self.registry = registry
        self.config = config or ServerConfig()
        self.clock = clock
        self.challenges = ChallengeStore(ttl_s=self.config.challenge_ttl_s, clock=clock, rng=rng)

    def challenge(self) -> SignedMessage:
        challenge = self.challenges.issue(
            verifier_key_id=self.key.key_id, probe_sets=self.registry.probe_sets(), layers=self.config.layers,
            method=self.config.method, limits=self.config.limits, registry=self.registry.state(),
        )
        return sign_message(challenge, self.key)

    def submit(self, header: SignedMessage, chunks: Iterable[Chunk]) -> SignedMessage:
        """Check everything, compare, sign and record the receipt. Raises ``VerifierError`` on any refusal,
        having stored nothing."""
        started = self.clock()
        checked = check_header(header, trust=self.trust, challenges=self.challenges, limits=self.config.limits)
        manifest, challenge = checked.manifest, checked.challenge
        receiver = TensorReceiver(manifest, challenge.limits)
        for chunk in chunks:
            if self.clock() - started > self.config.stream_timeout_s:
                raise ChallengeExpired("the submission stream ran past its deadline")
            receiver.add(chunk.index, chunk.offset, chunk.data)
        terms = receiver.finish()
        self.challenges.redeem(checked.nonce)  # atomic: a racing replay of the same nonce fails here
        suspect = [invariants_from_group(manifest, i, terms) for i in range(len(manifest.groups))]
        state, bases = self.registry.snapshot()
        matches = compare_with_bases(suspect, bases)
        keep = manifest.keep_invariants and self.config.allow_keep_invariants
        receipt = Receipt(
            verifier_key_id=self.key.key_id, owner_key_id=manifest.owner_key_id, nonce=checked.nonce,
            submission=sha256(header.payload), weight_commitment=manifest.weight_commitment.root, registry=state,
            compared=len(matches), matches=tuple(matches), verdict=overall_verdict(matches),
            verdict_rule=VERDICT_RULE, method_ids=tuple(sorted({g.method_id for g in manifest.groups})),
            issued_at=int(self.clock()), kept_invariants=keep,
        )
        signed = sign_message(receipt, self.key)
        self.registry.record_submission(manifest, signed, receipt, terms if keep else None)
        return signed


# ----------------------------------------------------------------------------------------- gRPC adapter
def _to_pb(signed: SignedMessage) -> pawprint_pb2.SignedPayload:
    return pawprint_pb2.SignedPayload(
        payload=signed.payload, signature=signed.signature, public_key=signed.public_key.raw
    )


def _from_pb(message: pawprint_pb2.SignedPayload) -> SignedMessage:
    try:
        key = PublicKey(bytes(message.public_key))
    except ProtocolError as e:
        raise InvalidSubmission("the signer's public key is not 32 raw bytes") from e
    return SignedMessage(bytes(message.payload), bytes(message.signature), key)


def _chunks(requests: Iterator[pawprint_pb2.SubmitRequest]) -> Iterator[Chunk]:
    for request in requests:
        if request.WhichOneof("item") != "chunk":
            raise InvalidSubmission("after the manifest, a submission carries only tensor chunks")
        yield Chunk(request.chunk.tensor_index, request.chunk.offset, bytes(request.chunk.data))


class _Servicer(pawprint_pb2_grpc.VerifierServicer):
    def __init__(self, service: VerifierService) -> None:
        self._service = service

    def GetChallenge(self, request: pawprint_pb2.ChallengeRequest, context: grpc.ServicerContext) -> Any:
        return self._run(context, "challenge", lambda: _to_pb(self._service.challenge()))

    def Submit(self, request_iterator: Iterator[pawprint_pb2.SubmitRequest], context: grpc.ServicerContext) -> Any:
        # A stalled client must not hold a worker thread for ever: cancel the RPC at the stream deadline.
        watchdog = threading.Timer(self._service.config.stream_timeout_s, context.cancel)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._run(context, "submit", lambda: self._submit(request_iterator))
        finally:
            watchdog.cancel()

    def _submit(self, requests: Iterator[pawprint_pb2.SubmitRequest]) -> pawprint_pb2.SignedPayload:
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "manifest":
            raise InvalidSubmission("a submission starts with the signed manifest")
        return _to_pb(self._service.submit(_from_pb(first.manifest), _chunks(requests)))

    @staticmethod
    def _run(context: grpc.ServicerContext, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except VerifierError as e:
            failure: tuple[grpc.StatusCode, str] = (getattr(grpc.StatusCode, e.status), str(e))
        except grpc.RpcError:
            # The client went away (cancelled, or the deadline passed): nothing was stored, nothing to say.
            log.info("%s: stream ended by the client or its deadline", what)
            raise
        except Exception:  # an unexpected failure must not leak details to the peer
            log.exception("%s: internal error", what)
            failure = (grpc.StatusCode.INTERNAL, "internal error")
        log.info("%s refused: %s %s", what, failure[0].name, failure[1])
        context.abort(*failure)


def create_server(service: VerifierService) -> tuple[grpc.Server, int]:
    """Start a gRPC server for ``service`` as its config says; returns it and the port it is bound to."""
    config = service.config
    config.check()
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="pawprint-verifier"),
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    pawprint_pb2_grpc.add_VerifierServicer_to_server(_Servicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if config.tls is None:
            port = server.add_insecure_port(config.listen)
        else:
            credentials = grpc.ssl_server_credentials(
                [(config.tls.private_key, config.tls.cert_chain)],
                root_certificates=config.tls.client_ca,
                require_client_auth=config.tls.client_ca is not None,
            )
            port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on {config.listen}: {e}") from e
    if not port:
        raise ConfigError(f"cannot listen on {config.listen}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def serve(
    key: PrivateKey,
    trust: TrustStore,
    registry: Registry,
    config: ServerConfig | None = None,
    *,
    clock: Clock = time.time,
    rng: Random = secrets.token_bytes,
) -> tuple[grpc.Server, int]:
    """Build the service and start its server (bind to port 0 in tests); returns ``(server, port)``."""
    return create_server(VerifierService(key, trust, registry, config, clock=clock, rng=rng))
