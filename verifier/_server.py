"""The verifier's gRPC server: the servicers around ``verifier._service`` and the server's life cycle.

The servicers only convert protobuf messages to domain values and ``VerifierError`` classes to status codes
(``protocol.wire.abort``, with a RetryInfo detail where the error carries a retry hint). ``start`` builds the
server (both services on one port): thread pool (a slow stream holds one thread; ``max_concurrent_rpcs``
refuses more with RESOURCE_EXHAUSTED), explicit message size limit, a per-stream deadline and idle limit (one
watch thread cancels a stalled stream), the standard gRPC health service, gRPC server reflection (both
services, health and reflection itself), no port sharing (a port in use is a ``ConfigError``, not a second
server silently sharing it), and TLS (mutual TLS when a client CA is given, with client certificates mapped
to roles by ``verifier._access``). Plaintext is refused unless explicitly allowed, and then only on
127.0.0.1/::1 (``ServerConfig.check``).

Life cycle (``start`` / ``RunningServer.shutdown``): on shutdown health turns NOT_SERVING, new work is
refused with UNAVAILABLE, in-flight submissions and publishes get a grace period to finish, then the server
stops.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protocol import MessageError, PrivateKey, ProtocolError, SignedMessage, TrustStore
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import abort, published_to_pb, signed_from_pb, signed_to_pb
from verifier._access import Caller, ClientRoles, cert_fingerprint
from verifier._challenges import Clock, Random
from verifier._config import ServerConfig, split_host_port
from verifier._registry import Registry
from verifier._service import Chunk, RegistryService, VerifierService
from verifier.errors import ConfigError, InvalidSubmission, Unauthenticated, VerifierError

SERVICE_NAME = "pawprint.v1.Verifier"
REGISTRY_SERVICE_NAME = "pawprint.v1.Registry"
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name  # grpc.health.v1.Health
# What gRPC server reflection lists (grpcurl, grpc_cli, Postman): the two services, health and reflection.
REFLECTED_SERVICES = (SERVICE_NAME, REGISTRY_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME)

log = logging.getLogger("pawprint.verifier")


def _from_pb(message: pawprint_pb2.SignedPayload) -> SignedMessage:
    """A signed message from the wire; a malformed key is INVALID_ARGUMENT, a key that is no Ed25519 point is
    as opaque as any other signature failure."""
    try:
        return signed_from_pb(message)
    except MessageError as e:
        raise InvalidSubmission(str(e)) from e
    except ProtocolError as e:
        raise Unauthenticated("signature verification failed") from e


def caller_of(context: grpc.ServicerContext, roles: ClientRoles | None) -> Caller:
    """Who is calling: the client certificate's fingerprint and roles-file entry under mutual TLS, else
    the peer's address (for counting only)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if pems:
        fp = cert_fingerprint(pems[0])
        return Caller(f"cert:{fp}", fp, roles.get(fp) if roles is not None else None)
    peer = context.peer() or "unknown"
    host = peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer
    return Caller(f"peer:{host}")


def _chunks(requests: Iterator[Any], after: str) -> Iterator[Chunk]:
    """The tensor chunks of a Submit or Publish stream (both carry ``chunk`` items after their first message)."""
    for request in requests:
        if request.WhichOneof("item") != "chunk":
            raise InvalidSubmission(f"after the {after}, the stream carries only tensor chunks")
        yield Chunk(request.chunk.tensor_index, request.chunk.offset, bytes(request.chunk.data))


class _StreamWatch:
    """One thread watching every client stream: a stream is cancelled when it has taken longer than its
    deadline to arrive, or been silent longer than its idle limit (before its first message too), so a
    stalled or silent client cannot hold a worker thread. Watching stops once the stream has been read to
    its end: the verifier's own computing is bounded by the client's deadline, not by these."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, list[Any]] = {}  # id -> [context, deadline, idle_s, last activity]
        self._next = 0
        self._thread: threading.Thread | None = None

    def watch(self, context: grpc.ServicerContext, total_s: float, idle_s: float) -> int:
        now = time.monotonic()
        with self._lock:
            self._next += 1
            self._streams[self._next] = [context, now + total_s, idle_s, now]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pawprint-stream-watch", daemon=True)
                self._thread.start()
            return self._next

    def touch(self, token: int) -> None:
        with self._lock:
            if token in self._streams:
                self._streams[token][3] = time.monotonic()

    def forget(self, token: int) -> None:
        with self._lock:
            self._streams.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self._lock:
                late = [t for t, (_, deadline, idle, last) in self._streams.items()
                        if now > deadline or now - last > idle]
                contexts = [self._streams.pop(t)[0] for t in late]
                if not self._streams and not contexts:
                    self._thread = None
                    return
            for context in contexts:
                log.info("a client stream stalled or ran past its deadline: cancelled")
                context.cancel()


_WATCH = _StreamWatch()


def _watched(requests: Iterator[Any], token: int) -> Iterator[Any]:
    for request in requests:
        _WATCH.touch(token)
        yield request
    _WATCH.forget(token)  # read to its end: the rest is the verifier's own work


def _client_stream(context: grpc.ServicerContext, config: ServerConfig, what: str,
                   fn: Callable[[Iterator[Any]], Any], requests: Iterator[Any]) -> Any:
    """Run a client-streaming handler over ``requests`` under the stream deadline and idle limit."""
    token = _WATCH.watch(context, config.stream_timeout_s, config.stream_idle_timeout_s)
    try:
        return _run(context, what, lambda: fn(_watched(requests, token)))
    finally:
        _WATCH.forget(token)


class _Servicer(pawprint_pb2_grpc.VerifierServicer):
    def __init__(self, service: VerifierService) -> None:
        self._service = service

    def GetChallenge(self, request: pawprint_pb2.ChallengeRequest, context: grpc.ServicerContext) -> Any:
        return self._run(context, "challenge", lambda: signed_to_pb(self._service.challenge(self._caller(context))))

    def Submit(self, request_iterator: Iterator[pawprint_pb2.SubmitRequest], context: grpc.ServicerContext) -> Any:
        return _client_stream(context, self._service.config, "submit",
                              lambda requests: self._submit(requests, self._caller(context)), request_iterator)

    def _caller(self, context: grpc.ServicerContext) -> Caller:
        return caller_of(context, self._service.config.client_roles)

    def _submit(self, requests: Iterator[pawprint_pb2.SubmitRequest], caller: Caller) -> pawprint_pb2.SignedPayload:
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "manifest":
            raise InvalidSubmission("a submission starts with the signed manifest")
        return signed_to_pb(self._service.submit(_from_pb(first.manifest), _chunks(requests, "manifest"), caller))

    @staticmethod
    def _run(context: grpc.ServicerContext, what: str, fn: Callable[[], Any]) -> Any:
        return _run(context, what, fn)


def _run(context: grpc.ServicerContext, what: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a ``VerifierError`` becomes its status and message, anything else an opaque INTERNAL."""
    retry_after_s: float | None = None
    try:
        return fn()
    except VerifierError as e:
        failure: tuple[str, str] = (e.status, str(e))
        retry_after_s = getattr(e, "retry_after_s", None)
    except grpc.RpcError:
        # The client went away (cancelled, or the deadline passed): nothing was stored, nothing to say.
        log.info("%s: stream ended by the client or its deadline", what)
        raise
    except Exception:  # an unexpected failure must not leak details to the peer
        log.exception("%s: internal error", what)
        failure = ("INTERNAL", "internal error")
    log.info("%s refused: %s %s", what, failure[0], failure[1])
    abort(context, failure[0], failure[1], retry_after_s)


class _RegistryServicer(pawprint_pb2_grpc.RegistryServicer):
    def __init__(self, service: RegistryService) -> None:
        self._service = service

    def Publish(self, request_iterator: Iterator[pawprint_pb2.PublishRequest], context: grpc.ServicerContext) -> Any:
        return _client_stream(context, self._service.config, "publish",
                              lambda requests: self._publish(requests, self._caller(context)), request_iterator)

    def _caller(self, context: grpc.ServicerContext) -> Caller:
        return caller_of(context, self._service.config.client_roles)

    def _read(self, context: grpc.ServicerContext) -> None:
        self._service.read(self._caller(context))

    def _publish(self, requests: Iterator[pawprint_pb2.PublishRequest], caller: Caller) -> pawprint_pb2.PublishReply:
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "header":
            raise InvalidSubmission("a publish stream starts with the header (statement and manifest)")
        header = first.header
        published = self._service.publish(_from_pb(header.statement), _from_pb(header.manifest),
                                          _chunks(requests, "header"), caller)
        return published_to_pb(published)

    def Revoke(self, request: pawprint_pb2.SignedPayload, context: grpc.ServicerContext) -> Any:
        return _run(context, "revoke",
                    lambda: published_to_pb(self._service.revoke(_from_pb(request), self._caller(context))))

    def List(self, request: pawprint_pb2.ListRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pawprint_pb2.ListReply:
            self._read(context)
            size, entries = self._service.list_entries(request.start, request.limit)
            return pawprint_pb2.ListReply(
                entries=[pawprint_pb2.LogEntry(index=i, data=d) for i, d in entries], size=size)

        return _run(context, "list", run)

    def Get(self, request: pawprint_pb2.GetRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pawprint_pb2.LogEntry:
            self._read(context)
            index, data = self._service.get(request.entry)
            return pawprint_pb2.LogEntry(index=index, data=data)

        return _run(context, "get", run)

    def LatestCheckpoint(self, request: pawprint_pb2.CheckpointRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pawprint_pb2.CheckpointReply:
            self._read(context)
            return pawprint_pb2.CheckpointReply(note=self._service.checkpoint())

        return _run(context, "checkpoint", run)

    def InclusionProof(self, request: pawprint_pb2.InclusionProofRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pawprint_pb2.InclusionProofReply:
            self._read(context)
            data, proof = self._service.inclusion_proof(request.index, request.tree_size)
            return pawprint_pb2.InclusionProofReply(entry=pawprint_pb2.LogEntry(index=request.index, data=data),
                                                    proof=proof)

        return _run(context, "inclusion proof", run)

    def ConsistencyProof(self, request: pawprint_pb2.ConsistencyProofRequest,
                         context: grpc.ServicerContext) -> Any:
        def run() -> pawprint_pb2.ConsistencyProofReply:
            self._read(context)
            return pawprint_pb2.ConsistencyProofReply(
                proof=self._service.consistency_proof(request.old_size, request.new_size))

        return _run(context, "consistency proof", run)


@dataclass
class RunningServer:
    """A started server with what its shutdown needs."""

    server: grpc.Server
    port: int
    service: VerifierService
    health: health.HealthServicer

    def shutdown(self, grace_s: float | None = None) -> bool:
        """Health NOT_SERVING, refuse new work, let in-flight submissions and publishes finish within
        ``grace_s`` (default: the config's ``drain_grace_s``), then stop. True if nothing was cut off."""
        grace = self.service.config.drain_grace_s if grace_s is None else grace_s
        self.health.enter_graceful_shutdown()
        drained = self.service.lifecycle.drain(grace)
        if not drained:
            log.warning("shutdown: %d calls still running after %.0f s are cancelled",
                        self.service.lifecycle.in_flight, grace)
        if not self.server.stop(grace=1.0).wait(timeout=30.0):
            log.warning("shutdown: the gRPC server had not stopped 30 s after its calls were cancelled")
        return drained


def start(service: VerifierService) -> RunningServer:
    """Start a gRPC server for ``service`` as its config says (bind to port 0 in tests)."""
    config = service.config
    config.check()
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # No port sharing: a second server on a port in use must fail to start, not share the connections.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="pawprint-verifier"),
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    pawprint_pb2_grpc.add_VerifierServicer_to_server(_Servicer(service), server)  # type: ignore[no-untyped-call]
    registry = RegistryService(service.registry, service.trust, config, clock=service.clock,
                               lifecycle=service.lifecycle, limiter=service.limiter)
    pawprint_pb2_grpc.add_RegistryServicer_to_server(_RegistryServicer(registry), server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(REFLECTED_SERVICES, server)
    port = _listen(server, config)
    server.start()
    for name in ("", SERVICE_NAME, REGISTRY_SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, service, health_servicer)


def _listen(server: grpc.Server, config: ServerConfig) -> int:
    """Bind ``config.listen`` (TLS as configured) and return the port; a ``ConfigError`` naming the address
    when it cannot be bound (grpc returns 0 or raises ``RuntimeError``, depending on its version)."""
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
    except RuntimeError:
        port = 0
    if port:
        return int(port)
    server.stop(None)
    if config.tls is not None and _bindable(config.listen):
        # grpc says the same for TLS material it cannot use as for an address it cannot bind.
        raise ConfigError(f"cannot listen on {config.listen}: the TLS certificate chain and private key were "
                          "refused (not PEM, or not a pair)")
    raise ConfigError(f"cannot listen on {config.listen}: the address is in use or not available")


def _bindable(listen: str) -> bool:
    """Whether ``listen`` can be bound now (as grpc binds: ``SO_REUSEADDR``, no port sharing)."""
    host, port = split_host_port(listen)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError:
            return False
    return bool(infos)


def create_server(service: VerifierService) -> tuple[grpc.Server, int]:
    """``start``, returning only the server and its port."""
    running = start(service)
    return running.server, running.port


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
