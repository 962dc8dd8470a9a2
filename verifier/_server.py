"""The verifier's gRPC server: the servicers around ``verifier._service`` and the server's life cycle.

The servicers only convert protobuf messages to domain values and ``VerifierError`` classes to status codes
(with a ``google.rpc.RetryInfo`` detail where the error carries a retry hint, as ``protocol.wire.abort``).

**A connection costs memory, not a thread.** The server is a ``grpc.aio`` server on an event loop of its own
(``_Loop``, one thread). A call waiting for its client (a silent stream, a trickling one, a slow reader)
holds a coroutine and grpc's buffers (measured: about 110 KiB of resident memory per idle TLS connection with
one open stream, most of it grpc's and TLS's: ``docs/results/load_hostile.md``), and no thread. Every piece
of blocking work (the header checks, each chunk's checks and spooling, the comparison, signing, encoding,
drawing, the store's writes, the registry reads) runs on a bounded thread pool (``max_workers`` threads)
through a ``FairPool``, which takes turns between callers and, behind one caller, between the trusted signing
keys they name (``_Calls.turn``), so a flood queued under one caller or key delays another's next job by one
job, not by the flood. A submission is run in its service's three steps (``open_submission``, ``receive``
per chunk, ``close_submission``), each a short job on the pool, so a slow stream holds no thread between its
chunks. A publish (vendors only) reads its stream from a pool thread, within the same idle and stream limits.

**Identity before resources.** At call start, before anything is read or any thread is given, the caller is
known from the connection's auth context (its client certificate under mutual TLS, else its address) and,
under a roles file, an unknown certificate or one without the call's role is refused (PERMISSION_DENIED).
Then the call is admitted (``_Admission``): a stream must deliver its first message within
``first_message_timeout_s`` (and later ones within the idle limit, the whole within the stream deadline) or
is cancelled; one client (certificate, else address) may have at most ``max_waiting_per_client`` streams
waiting for their first message (beyond that its *oldest* waiting stream is cancelled, so a crowd of silent
streams from one address cannot keep out a new stream from it that sends at once), at most
``max_streams_per_client`` streams past their first message (RESOURCE_EXHAUSTED beyond, with a retry hint),
and each signing key at most ``max_streams_per_key`` submissions in progress. ``max_concurrent_rpcs`` bounds
the calls of all clients together (RESOURCE_EXHAUSTED beyond). A refusal by one of the stream caps is sent only
after ``BUSY_HOLD_S`` (a timer, no thread), so that a client retrying at once cannot fill grpc's queue of calls
not yet started; at most ``max_connections`` connections are open at once (``start``).

The rest is as before: explicit message size limit, the standard gRPC health service, gRPC server reflection
(both services, health and reflection itself), no port sharing (a port in use is a ``ConfigError``, not a
second server silently sharing it), and TLS (mutual TLS when a client CA is given, with client certificates
mapped to roles by ``verifier._access``). Plaintext is refused unless explicitly allowed, and then only on
127.0.0.1/::1 (``ServerConfig.check``).

Life cycle (``start`` / ``RunningServer.shutdown``): on shutdown health turns NOT_SERVING, new work is
refused with UNAVAILABLE, in-flight submissions and publishes get a grace period to finish, then the server
stops. ``RunningServer.server`` keeps the synchronous ``stop(grace)`` of a ``grpc.Server`` (an event that
is set once stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from protocol import MessageError, PrivateKey, ProtocolError, SignedMessage, TrustStore
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import published_to_pb, signed_from_pb, signed_to_pb
from verifier._access import OWNER, READER, VENDOR, Caller, ClientRoles, authorize, cert_fingerprint
from verifier._challenges import Clock, Random
from verifier._config import ServerConfig, split_host_port
from verifier._registry import Registry
from verifier._service import Chunk, OpenSubmission, RegistryService, VerifierService
from verifier.errors import ConfigError, InvalidSubmission, LimitExceeded, Unauthenticated, VerifierError

SERVICE_NAME = "pawprint.v1.Verifier"
REGISTRY_SERVICE_NAME = "pawprint.v1.Registry"
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name  # grpc.health.v1.Health
# What gRPC server reflection lists (grpcurl, grpc_cli, Postman): the two services, health and reflection.
REFLECTED_SERVICES = (SERVICE_NAME, REGISTRY_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME)
BUSY_RETRY_S = 1.0  # the retry hint of a call refused by a per-client or per-key cap
# How long a call refused by a per-client, per-address or per-key cap is held (a timer and grpc's call state: no
# thread, no pool turn, nothing it sent) before its refusal is sent, capped by ``first_message_timeout_s``. A
# client that retries at once otherwise turns each refusal into two new calls (a challenge and a stream) and
# keeps grpc's queue of calls not yet started full (one FIFO for every client, which grpc.aio's server loop drains
# one ``request_call`` at a time through the event loop, before any fair queuing here can act). Measured:
# docs/results/load_hostile.md, trickle phase.
BUSY_HOLD_S = 10.0
# Each held refusal waits BUSY_HOLD_S times a factor drawn uniformly from this range: refusals of a crowd that
# arrived together (a reconnect, a flood started at once) then end spread over seconds, so their retries do not
# arrive again as one burst in front of honest calls.
BUSY_HOLD_JITTER = (0.5, 1.5)
# Connections open at once, all clients together: grpc closes any beyond as it accepts them
# (``grpc.max_allowed_incoming_connections``). With the per-connection cost measured (about 110 KiB with a stream
# open) this bounds what a crowd of connections can hold; the hostile benchmark's crowd is 1,000 connections.
MAX_CONNECTIONS = 2048
# A connection with no call open for this long is closed (GOAWAY; a client's channel reconnects on its next call).
CONNECTION_IDLE_MS = 120_000
# The server pings a connection silent for this long and closes it if no answer comes within the timeout: a peer
# that vanished (no FIN, no RST) does not keep its connection, and with it a slot of ``MAX_CONNECTIONS``.
KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS = 60_000, 20_000

log = logging.getLogger("pawprint.verifier")
T = TypeVar("T")


def _from_pb(message: pawprint_pb2.SignedPayload) -> SignedMessage:
    """A signed message from the wire; a malformed key is INVALID_ARGUMENT, a key that is no Ed25519 point is
    as opaque as any other signature failure."""
    try:
        return signed_from_pb(message)
    except MessageError as e:
        raise InvalidSubmission(str(e)) from e
    except ProtocolError as e:
        raise Unauthenticated("signature verification failed") from e


def _address(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> str:
    peer = context.peer() or "unknown"
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


def caller_of(context: grpc.ServicerContext | grpc.aio.ServicerContext, roles: ClientRoles | None) -> Caller:
    """Who is calling: the client certificate's fingerprint and roles-file entry under mutual TLS, else
    the peer's address (for counting only)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if pems:
        fp = cert_fingerprint(pems[0])
        return Caller(f"cert:{fp}", fp, roles.get(fp) if roles is not None else None)
    return Caller(f"peer:{_address(context)}")


async def _abort(context: grpc.aio.ServicerContext, code: str, message: str,
                 retry_after_s: float | None = None) -> NoReturn:
    """``protocol.wire.abort`` for an aio call: status ``code`` and ``message``, and a ``RetryInfo`` detail
    carrying ``retry_after_s`` where given."""
    if retry_after_s is None:
        await context.abort(getattr(grpc.StatusCode, code), message)
    else:
        wait = max(0.0, float(retry_after_s))
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(wait), nanos=min(999_999_999, round((wait % 1) * 1e9))))
        detail = status_pb2.Status().details.add()
        detail.Pack(info)
        status = status_pb2.Status(code=getattr(code_pb2, code), message=message, details=[detail])
        await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class _Busy(LimitExceeded):
    """A refusal by a per-client, per-address or per-key stream cap: sent after ``BUSY_HOLD_S``."""


class _CutOff(Exception):
    """A stream that ran past its first-message deadline, idle limit or stream deadline."""


# ---------------------------------------------------------------------------------------------- the event loop


class _Loop:
    """An asyncio event loop on a daemon thread of its own: the aio server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pawprint-verifier-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class FairPool:
    """Runs blocking functions on ``executor`` (``size`` threads), at most ``size`` at once, taking turns
    between keys: a free thread goes to the key that has waited longest since its last turn (round robin over
    the keys with work queued), so a key with a thousand jobs queued delays another key's job by at most one
    job per other key. Lives on the event loop (no locks). A job whose caller is cancelled keeps its thread
    until the function returns (a thread cannot be stopped), so the pool never runs more than ``size``."""

    def __init__(self, executor: ThreadPoolExecutor, size: int) -> None:
        self._executor = executor
        self._free = size
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        await self._turn(key)
        future = asyncio.wrap_future(self._executor.submit(fn, *args))
        try:
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(future)  # hold the thread's turn until it is really free
                raise
        finally:
            self._release()

    async def _turn(self, key: str) -> None:
        if self._free > 0 and not self._queues:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the turn was given as the caller went away: pass it on
            else:
                queue = self._queues.get(key)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._queues[key]
            raise

    def _release(self) -> None:
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            waiter = queue.popleft()
            if queue:
                self._queues.move_to_end(key)  # this key's next job waits for every other key's turn
            else:
                del self._queues[key]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


@dataclass
class _Waiting:
    """A stream waiting for its first message, cancellable to make room."""

    task: asyncio.Task[Any] | None
    evicted: bool = False


@dataclass
class _Admission:
    """Per-client and per-key counts of the streams in progress (on the event loop: no locks)."""

    config: ServerConfig
    waiting: dict[str, OrderedDict[int, _Waiting]] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    _next: int = 0

    def wait(self, client: str) -> tuple[int, _Waiting]:
        """Register a stream of ``client`` waiting for its first message; its oldest waiting stream is
        cancelled if ``client`` already has ``max_waiting_per_client``."""
        self._next += 1
        mine = self.waiting.setdefault(client, OrderedDict())
        while len(mine) >= self.config.max_waiting_per_client:
            _, oldest = mine.popitem(last=False)
            oldest.evicted = True
            if oldest.task is not None:
                oldest.task.cancel()
        entry = _Waiting(asyncio.current_task())
        mine[self._next] = entry
        return self._next, entry

    def arrived(self, client: str, token: int) -> None:
        mine = self.waiting.get(client)
        if mine is not None:
            mine.pop(token, None)
            if not mine:
                del self.waiting[client]

    def enter(self, counts: dict[str, int], name: str, cap: int, what: str) -> None:
        if counts.get(name, 0) >= cap:
            raise _Busy(f"{what} has {cap} streams in progress; retry when one ends", BUSY_RETRY_S)
        counts[name] = counts.get(name, 0) + 1

    @staticmethod
    def leave(counts: dict[str, int], name: str) -> None:
        left = counts.get(name, 0) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)


# ----------------------------------------------------------------------------------------------- the servicers


class _Calls:
    """What both servicers share: the pool, the admission counts and how a call is run."""

    def __init__(self, config: ServerConfig, trust: TrustStore, pool: FairPool,
                 loop: asyncio.AbstractEventLoop, rng: random.Random | None = None) -> None:
        self.config = config
        self.trust = trust
        self.pool = pool
        self.loop = loop
        self.admission = _Admission(config)
        self.rng = rng or random.Random()  # only for the jitter of held refusals (a parameter for tests)

    def hold_s(self) -> float:
        """How long this refusal by a cap is held: ``BUSY_HOLD_S`` jittered, at most the first-message deadline."""
        low, high = BUSY_HOLD_JITTER
        return min(BUSY_HOLD_S * self.rng.uniform(low, high), self.config.first_message_timeout_s)

    def turn(self, caller: Caller, claimed_key_id: str | None) -> str:
        """Whose turn a job takes in the pool: the caller and the signing key it names, if the trust store has
        that key (unknown keys share one turn per caller). Behind one address (or one certificate) each trusted
        key has its turn, so a flood under one key, or under made-up keys, delays another key's job by one job,
        not by the flood; a flood naming other owners' keys only shares their turns."""
        trusted = claimed_key_id is not None and self.trust.get(claimed_key_id) is not None
        return f"{caller.identity}|{claimed_key_id if trusted else '-'}"

    def caller(self, context: grpc.aio.ServicerContext, role: str) -> Caller:
        """The caller, refused at once (before anything is read or a thread is given) under a roles file if its
        certificate is unknown or lacks ``role``."""
        caller = caller_of(context, self.config.client_roles)
        authorize(caller, self.config.client_roles, role)
        return caller

    async def unary(self, context: grpc.aio.ServicerContext, what: str, role: str,
                    fn: Callable[[Caller], T], claimed_key_id: str | None = None) -> T:
        """A unary call: the caller checked at call start, then ``fn`` on the pool in the caller's turn."""
        async def run() -> T:
            caller = self.caller(context, role)
            return await self.pool.run(self.turn(caller, claimed_key_id), fn, caller)

        return await self.guard(context, what, run)

    async def guard(self, context: grpc.aio.ServicerContext, what: str,
                    fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn``; a ``VerifierError`` becomes its status and message, a stream cut off is CANCELLED,
        anything else an opaque INTERNAL."""
        retry_after_s: float | None = None
        hold = 0.0
        try:
            return await fn()
        except VerifierError as e:
            failure: tuple[str, str] = (e.status, str(e))
            retry_after_s = getattr(e, "retry_after_s", None)
            if isinstance(e, _Busy):
                hold = self.hold_s()
        except _CutOff as e:
            log.info("%s: %s: cancelled", what, e)
            failure = ("CANCELLED", str(e))
        except asyncio.CancelledError:
            # The client went away (cancelled, or its deadline passed), or the stream was evicted to make room.
            log.info("%s: stream ended by the client, its deadline or eviction", what)
            raise
        except Exception:  # an unexpected failure must not leak details to the peer
            log.exception("%s: internal error", what)
            failure = ("INTERNAL", "internal error")
        log.info("%s refused: %s %s", what, failure[0], failure[1])
        if hold > 0:
            await asyncio.sleep(hold)  # the call's frames (its header, its chunks) are gone: a timer is left
        await _abort(context, failure[0], failure[1], retry_after_s)

    async def first(self, context: grpc.aio.ServicerContext, client: str, started: float) -> Any:
        """The stream's first message, within the first-message deadline; the stream counts as waiting (and may
        be evicted to make room for a newer one of the same client) until then."""
        token, entry = self.admission.wait(client)
        try:
            timeout = min(self.config.first_message_timeout_s, self.config.stream_idle_timeout_s,
                          self.config.stream_timeout_s - (time.monotonic() - started))
            try:
                message = await asyncio.wait_for(context.read(), max(0.0, timeout))
            except TimeoutError:
                raise _CutOff("no first message in time") from None
            except asyncio.CancelledError:
                if entry.evicted:
                    raise LimitExceeded("too many streams from this client are waiting for their first message; "
                                        "this one, the oldest, was dropped", BUSY_RETRY_S) from None
                raise
        finally:
            self.admission.arrived(client, token)
        return message

    async def next(self, context: grpc.aio.ServicerContext, started: float) -> Any:
        """The stream's next message (``grpc.aio.EOF`` at its end), within the idle limit and the deadline."""
        left = self.config.stream_timeout_s - (time.monotonic() - started)
        if left <= 0:
            raise _CutOff("the stream ran past its deadline")
        try:
            return await asyncio.wait_for(context.read(), min(self.config.stream_idle_timeout_s, left))
        except TimeoutError:
            raise _CutOff("the stream stalled or ran past its deadline") from None

    def key_free(self, claimed_key_id: str | None) -> None:
        """Refuse, before any work, a stream naming a key already at its cap (counted once verified); the
        refusal is held for ``BUSY_HOLD_S`` like every cap's."""
        if claimed_key_id is not None and \
                self.admission.keys.get(claimed_key_id, 0) >= self.config.max_streams_per_key:
            raise _Busy(f"this signing key has {self.config.max_streams_per_key} streams in progress; "
                        "retry when one ends", BUSY_RETRY_S)

    @contextlib.contextmanager
    def streaming(self, caller: Caller, address: str) -> Iterator[None]:
        """A stream past its first message: counted against its client (and its address, where that differs)."""
        names = [caller.identity] + ([f"peer:{address}"] if f"peer:{address}" != caller.identity else [])
        entered: list[str] = []
        try:
            for name in names:
                self.admission.enter(self.admission.active, name, self.config.max_streams_per_client,
                                     "this client" if name == caller.identity else "this address")
                entered.append(name)
            yield
        finally:
            for name in entered:
                self.admission.leave(self.admission.active, name)


def _chunk(request: Any, after: str) -> Chunk:
    if request.WhichOneof("item") != "chunk":
        raise InvalidSubmission(f"after the {after}, the stream carries only tensor chunks")
    return Chunk(request.chunk.tensor_index, request.chunk.offset, bytes(request.chunk.data))


class _Servicer(pawprint_pb2_grpc.VerifierServicer):
    def __init__(self, service: VerifierService, calls: _Calls) -> None:
        self._service = service
        self._calls = calls

    async def GetChallenge(self, request: pawprint_pb2.ChallengeRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._calls.unary(context, "challenge", OWNER,
                                       lambda caller: signed_to_pb(self._service.challenge(caller)),
                                       request.owner_key_id or None)

    async def Submit(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._calls.guard(context, "submit", lambda: self._submit(context))

    async def _submit(self, context: grpc.aio.ServicerContext) -> pawprint_pb2.SignedPayload:
        calls, service, started = self._calls, self._service, time.monotonic()
        caller = calls.caller(context, OWNER)
        first = await calls.first(context, caller.identity, started)
        if first is grpc.aio.EOF or first.WhichOneof("item") != "manifest":
            raise InvalidSubmission("a submission starts with the signed manifest")
        header = _from_pb(first.manifest)
        claimed = header.public_key.key_id
        calls.key_free(claimed)
        turn = calls.turn(caller, claimed)
        with service.lifecycle.work():
            opened = await calls.pool.run(turn, service.open_submission, header, caller)
            if isinstance(opened, SignedMessage):
                return signed_to_pb(opened)  # a retry of an answered submission
            try:
                owner = opened.checked.manifest.owner_key_id
                calls.admission.enter(calls.admission.keys, owner, service.config.max_streams_per_key,
                                      "this signing key")
            except BaseException:
                opened.receiver.close()
                raise
            try:
                with calls.streaming(caller, _address(context)):
                    return signed_to_pb(await self._receive(context, opened, caller, started, turn))
            except BaseException:
                opened.receiver.close()
                raise
            finally:
                calls.admission.leave(calls.admission.keys, owner)

    async def _receive(self, context: grpc.aio.ServicerContext, opened: OpenSubmission, caller: Caller,
                       started: float, key: str) -> SignedMessage:
        calls, service = self._calls, self._service
        try:
            while (request := await calls.next(context, started)) is not grpc.aio.EOF:
                await calls.pool.run(key, service.receive, opened, _chunk(request, "manifest"))
        except BaseException:
            opened.receiver.close()
            raise
        return await calls.pool.run(key, service.close_submission, opened, caller)


class _RegistryServicer(pawprint_pb2_grpc.RegistryServicer):
    def __init__(self, service: RegistryService, calls: _Calls) -> None:
        self._service = service
        self._calls = calls

    async def Publish(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._calls.guard(context, "publish", lambda: self._publish(context))

    async def _publish(self, context: grpc.aio.ServicerContext) -> pawprint_pb2.PublishReply:
        calls, started = self._calls, time.monotonic()
        caller = calls.caller(context, VENDOR)
        first = await calls.first(context, caller.identity, started)
        if first is grpc.aio.EOF or first.WhichOneof("item") != "header":
            raise InvalidSubmission("a publish stream starts with the header (statement and manifest)")
        statement, manifest = _from_pb(first.header.statement), _from_pb(first.header.manifest)
        loop = calls.loop

        def chunks() -> Iterator[Chunk]:
            # Read on the loop, from the pool thread that checks and spools the terms as they come.
            while (request := asyncio.run_coroutine_threadsafe(calls.next(context, started), loop).result()) \
                    is not grpc.aio.EOF:
                yield _chunk(request, "header")

        with calls.streaming(caller, _address(context)):
            published = await calls.pool.run(caller.identity, self._service.publish, statement, manifest,
                                              chunks(), caller)
        return published_to_pb(published)

    async def Revoke(self, request: pawprint_pb2.SignedPayload, context: grpc.aio.ServicerContext) -> Any:
        return await self._calls.unary(
            context, "revoke", VENDOR,
            lambda caller: published_to_pb(self._service.revoke(_from_pb(request), caller)))

    def _read(self, caller: Caller) -> None:
        self._service.read(caller)

    async def List(self, request: pawprint_pb2.ListRequest, context: grpc.aio.ServicerContext) -> Any:
        def run(caller: Caller) -> pawprint_pb2.ListReply:
            self._read(caller)
            size, entries = self._service.list_entries(request.start, request.limit)
            return pawprint_pb2.ListReply(
                entries=[pawprint_pb2.LogEntry(index=i, data=d) for i, d in entries], size=size)

        return await self._calls.unary(context, "list", READER, run)

    async def Get(self, request: pawprint_pb2.GetRequest, context: grpc.aio.ServicerContext) -> Any:
        def run(caller: Caller) -> pawprint_pb2.LogEntry:
            self._read(caller)
            index, data = self._service.get(request.entry)
            return pawprint_pb2.LogEntry(index=index, data=data)

        return await self._calls.unary(context, "get", READER, run)

    async def LatestCheckpoint(self, request: pawprint_pb2.CheckpointRequest,
                               context: grpc.aio.ServicerContext) -> Any:
        def run(caller: Caller) -> pawprint_pb2.CheckpointReply:
            self._read(caller)
            return pawprint_pb2.CheckpointReply(note=self._service.checkpoint())

        return await self._calls.unary(context, "checkpoint", READER, run)

    async def InclusionProof(self, request: pawprint_pb2.InclusionProofRequest,
                             context: grpc.aio.ServicerContext) -> Any:
        def run(caller: Caller) -> pawprint_pb2.InclusionProofReply:
            self._read(caller)
            data, proof = self._service.inclusion_proof(request.index, request.tree_size)
            return pawprint_pb2.InclusionProofReply(entry=pawprint_pb2.LogEntry(index=request.index, data=data),
                                                    proof=proof)

        return await self._calls.unary(context, "inclusion proof", READER, run)

    async def ConsistencyProof(self, request: pawprint_pb2.ConsistencyProofRequest,
                               context: grpc.aio.ServicerContext) -> Any:
        def run(caller: Caller) -> pawprint_pb2.ConsistencyProofReply:
            self._read(caller)
            return pawprint_pb2.ConsistencyProofReply(
                proof=self._service.consistency_proof(request.old_size, request.new_size))

        return await self._calls.unary(context, "consistency proof", READER, run)


# ------------------------------------------------------------------------------------------- the server itself


class AioServer:
    """The aio server seen from other threads: ``stop(grace)`` as a ``grpc.Server`` has it (returns an event
    set once the server has stopped; ``None``: at once), and ``wait_for_termination``."""

    def __init__(self, loop: _Loop, server: grpc.aio.Server, executor: ThreadPoolExecutor) -> None:
        self._loop = loop
        self._server = server
        self._executor = executor
        self._stopped = threading.Event()
        self._stopping = threading.Lock()

    def stop(self, grace: float | None) -> threading.Event:
        with self._stopping:
            if not self._stopped.is_set() and self._loop.loop.is_running():
                future = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop.loop)
                future.add_done_callback(lambda _: self._finish())
        return self._stopped

    def _finish(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loop.loop.call_soon_threadsafe(self._loop.loop.stop)  # its thread ends; the loop is not needed
        self._stopped.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


class Health:
    """The server's health service seen from other threads: ``set`` and ``enter_graceful_shutdown`` as the
    synchronous ``grpc_health`` servicer has them, run on the server's loop."""

    def __init__(self, servicer: health.aio.HealthServicer, loop: _Loop) -> None:
        self.servicer = servicer
        self._loop = loop

    def set(self, service: str, status: Any) -> None:
        self._loop.call(self.servicer.set(service, status), timeout=30.0)

    def enter_graceful_shutdown(self) -> None:
        self._loop.call(self.servicer.enter_graceful_shutdown(), timeout=30.0)


@dataclass
class RunningServer:
    """A started server with what its shutdown needs."""

    server: AioServer
    port: int
    service: VerifierService
    health: Health
    loop: _Loop

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


def start(service: VerifierService, *, max_connections: int = MAX_CONNECTIONS) -> RunningServer:
    """Start a gRPC server for ``service`` as its config says (bind to port 0 in tests), accepting at most
    ``max_connections`` connections at once."""
    config = service.config
    config.check()
    if max_connections < 1:
        raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
    loop = _Loop()
    try:
        return loop.call(_start(service, loop, max_connections), timeout=60.0)
    except BaseException:
        loop.loop.call_soon_threadsafe(loop.loop.stop)
        raise


async def _start(service: VerifierService, loop: _Loop, max_connections: int) -> RunningServer:
    config = service.config
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # No port sharing: a second server on a port in use must fail to start, not share the connections.
        ("grpc.so_reuseport", 0),
        # What bounds the memory a crowd of connections holds (docs/hardening.md, section 8).
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_connection_idle_ms", CONNECTION_IDLE_MS),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]
    executor = ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="pawprint-verifier")
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs)
    calls = _Calls(config, service.trust, FairPool(executor, config.max_workers), loop.loop)
    pawprint_pb2_grpc.add_VerifierServicer_to_server(_Servicer(service, calls), server)  # type: ignore[no-untyped-call]
    registry = RegistryService(service.registry, service.trust, config, clock=service.clock,
                               lifecycle=service.lifecycle, limiter=service.limiter)
    pawprint_pb2_grpc.add_RegistryServicer_to_server(_RegistryServicer(registry, calls), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(REFLECTED_SERVICES, server)
    port = await _listen(server, config, executor)
    await server.start()
    for name in ("", SERVICE_NAME, REGISTRY_SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(AioServer(loop, server, executor), port, service, Health(health_servicer, loop), loop)


async def _listen(server: grpc.aio.Server, config: ServerConfig, executor: ThreadPoolExecutor) -> int:
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
    await server.stop(None)
    executor.shutdown(wait=False)
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


def create_server(service: VerifierService) -> tuple[AioServer, int]:
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
) -> tuple[AioServer, int]:
    """Build the service and start its server (bind to port 0 in tests); returns ``(server, port)``."""
    return create_server(VerifierService(key, trust, registry, config, clock=clock, rng=rng))
