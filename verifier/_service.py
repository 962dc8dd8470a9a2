"""The verifier service: the submission and registry logic and the gRPC adapters and server around them.

``VerifierService`` takes domain values (signed messages, chunks) and returns signed messages; it issues
challenges, runs every check of ``verifier._checks`` before computing anything, compares the submission
with every unrevoked base of the registry's latest checkpoint, signs the receipt (naming that checkpoint
and each match's entry index) and records it. ``RegistryService`` serves the registry's transparency log:
vendors publish (statement and manifest checked before the terms are read) and revoke; anyone lists and
gets entries and asks for the latest checkpoint and for inclusion and consistency proofs. The gRPC
servicers only convert protobuf messages to those values and ``VerifierError`` classes to status codes;
``serve`` builds the server (both services on one port):
thread pool (a slow stream holds one thread; ``max_concurrent_rpcs`` refuses more with RESOURCE_EXHAUSTED),
explicit message size limit, a per-stream deadline, the standard gRPC health service, and TLS (mutual TLS
when a client CA is given, with client certificates mapped to roles by ``verifier._access``). Plaintext is
refused unless explicitly allowed, and then only on 127.0.0.1/::1.

Retries are safe: the signed manifest is its own idempotency key. Challenges are recorded before they are
handed out, so a verifier restarted mid-submission still honours the nonce; a stream whose nonce already has
a receipt is answered with that receipt (byte for byte) without reading the terms, and a nonce is used only
when its receipt is recorded, so a submission that failed half-way may be sent again as it was.

Life cycle (``start`` / ``RunningServer.shutdown``): on shutdown health turns NOT_SERVING, new work is
refused with UNAVAILABLE, in-flight submissions and publishes get a grace period to finish, then the server
stops. Start-up recovers what a crash left: the registry removes orphan blobs and temp files and replays its
log, and the challenges issued before the crash are loaded again.

The service never keeps a submission's terms after the verdict unless the owner asked for it
(``keep_invariants``), and stores nothing at all for a submission it rejects. It never serves a base's
terms: the registry's read RPCs return log entries (statements and manifests) and proofs only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from owner import InvariantSet
from owner._fingerprint import invariants_from_group
from protocol import (
    OFFLINE_MANIFEST_KIND,
    ONLINE_MANIFEST_KIND,
    PUBLIC_KEY_SIZE,
    REGISTER,
    REVOKE,
    Bundle,
    Manifest,
    Match,
    Picture,
    PrivateKey,
    ProtocolError,
    PublicKey,
    Receipt,
    SignedMessage,
    SubmissionLimits,
    Tensor,
    TrustStore,
    sha256,
    sign_message,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from verifier._access import (
    OWNER,
    READER,
    VENDOR,
    Caller,
    ClientRoles,
    RateLimiter,
    RateLimits,
    authorize,
    cert_fingerprint,
)
from verifier._calibration import DEFAULT_THRESHOLDS, NullError, NullModel, Thresholds, load_null
from verifier._challenges import ChallengeStore, Clock, Random
from verifier._checks import TensorReceiver, check_header, check_terms_table, open_signed_manifest
from verifier._compare import BaseModel, compare_with_bases, verdict_of
from verifier._encoder import CNN_WEIGHTS, DEFAULT_ENCODER, load_encoder
from verifier._pictures import picture_of
from verifier._pins import check_data_files, check_file, check_probe_sets
from verifier._registry import MAX_LIST, SKETCH_SPEC, Published, Registry
from verifier.errors import (
    ChallengeExpired,
    ConfigError,
    InvalidSubmission,
    NonceUsed,
    OutOfRange,
    Unauthenticated,
    Unavailable,
    VerifierError,
)

SERVICE_NAME = "pawprint.v1.Verifier"
REGISTRY_SERVICE_NAME = "pawprint.v1.Registry"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
# Where large streamed tensors are spooled (anonymous temp files, see verifier._checks.TensorReceiver).
SPOOL_DIR = "spool"
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
    stream_idle_timeout_s: float = 60.0  # the longest silence a stream may keep, its first message included
    max_concurrent_compares: int = max(1, os.cpu_count() or 1)  # comparisons and pictures at once (CPU-bound)
    max_workers: int = 16
    max_concurrent_rpcs: int = 64
    layers: str = "last2"
    method: str = "pawprint"
    allow_keep_invariants: bool = True
    null_path: str | None = None  # the measured null (default: the one shipped, verifier/data/null-zoo-v1.json)
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    encoder: str = "default"  # verifier._encoder.load_encoder name; receipts carry its id
    null_sha256: str | None = None  # pin an operator's own null file (the shipped ones are pinned in code)
    probe_set_pins: frozenset[str] | None = None  # offer only these probe set ids; refuse to start otherwise
    client_roles: ClientRoles | None = None  # client certificate -> roles (needs mutual TLS)
    rate_limits: RateLimits | None = None  # per signing key (and per client for challenges and reads)
    drain_grace_s: float = 30.0  # how long shutdown waits for in-flight submissions and publishes
    # Registries with more than screen_k bases are screened (verifier._screen): the screen_k best by sketch,
    # and every base whose estimated ICS reaches screen_floor, are compared exactly. 0: compare every base.
    screen_k: int = 16
    screen_floor: float = 0.05

    def check(self) -> None:
        host, _ = split_host_port(self.listen)
        if self.tls is None:
            if not self.insecure_loopback:
                raise ConfigError("no TLS certificate and key given (plaintext needs --insecure-loopback)")
            if host not in LOOPBACK_HOSTS:
                raise ConfigError(f"plaintext is allowed only on 127.0.0.1 or ::1, not on {host!r}")
        elif self.insecure_loopback:
            raise ConfigError("--insecure-loopback and TLS are exclusive")
        if self.client_roles is not None and (self.tls is None or self.tls.client_ca is None):
            raise ConfigError("client roles need mutual TLS (--client-ca)")
        if self.drain_grace_s < 0:
            raise ConfigError("the drain grace period cannot be negative")
        if self.stream_idle_timeout_s <= 0 or self.stream_timeout_s <= 0 or self.max_concurrent_compares < 1:
            raise ConfigError("stream timeouts and the compare limit must be positive")
        if self.screen_k < 0 or not -1.0 <= self.screen_floor <= 1.0:
            raise ConfigError("--screen-k must be >= 0 and --screen-floor an ICS in [-1, 1]")
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


def _charge(limiter: RateLimiter | None, identity: str, nbytes: int = 0) -> None:
    """One request (and ``nbytes``) against ``identity``'s rate limits, if any are configured (both services)."""
    if limiter is not None:
        limiter.charge(identity, nbytes=nbytes)


class Lifecycle:
    """Counts work in flight and refuses new work once draining (shared by both services)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_flight = 0
        self.draining = False

    @contextmanager
    def work(self) -> Iterator[None]:
        with self._cond:
            if self.draining:
                raise Unavailable("the verifier is shutting down; retry shortly")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait up to ``timeout_s`` for the work in flight; True if none is left."""
        with self._cond:
            self.draining = True
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)


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
        self.lifecycle = Lifecycle()
        config = self.config
        # Supply chain: the data files this verifier loads must be the ones it was released with.
        encoder_name = DEFAULT_ENCODER if config.encoder == "default" else config.encoder
        required = ([] if config.null_path is not None else ["null-zoo-v1.json"]) + (
            [CNN_WEIGHTS] if encoder_name == "cnn-v1" else [])
        self.data_digests = check_data_files(required)
        if config.null_sha256 is not None:
            if config.null_path is None:
                raise ConfigError("--null-sha256 pins an operator's own --null file")
            check_file(config.null_path, config.null_sha256)
        check_probe_sets((p.id for p in registry.probe_sets()), config.probe_set_pins)
        try:
            self.null: NullModel = load_null(config.null_path)
        except NullError as e:
            raise ConfigError(str(e)) from None
        try:
            self.encoder = load_encoder(config.encoder)
        except (ValueError, OSError) as e:
            raise ConfigError(f"encoder {config.encoder!r}: {e}") from None
        self.challenges = ChallengeStore(ttl_s=config.challenge_ttl_s, clock=clock, rng=rng,
                                         persist=registry.save_challenge,
                                         lookup=lambda nonce: registry.challenge(nonce, key.key_id))
        restored = self.challenges.restore(registry.challenges(key.key_id))
        if restored:
            log.info("start-up: %d challenges issued before the restart are honoured again", restored)
        self.limiter = RateLimiter(config.rate_limits, clock) if config.rate_limits is not None else None
        self._base_pictures: dict[tuple[bytes, str], Picture | None] = {}
        self._picture_locks: dict[tuple[bytes, str], threading.Lock] = {}
        self._pictures_lock = threading.Lock()
        # Comparing and drawing are CPU-bound: more at once than cores only slows everything, the cheap calls
        # (challenges, reads) included.
        self._computing = threading.BoundedSemaphore(config.max_concurrent_compares)

    def challenge(self, caller: Caller | None = None) -> SignedMessage:
        with self.lifecycle.work():
            authorize(caller, self.config.client_roles, OWNER)
            if caller is not None:
                _charge(self.limiter, caller.identity)
            probe_sets = self.registry.probe_sets()
            if self.config.probe_set_pins is not None:
                probe_sets = tuple(p for p in probe_sets if p.id in self.config.probe_set_pins)
            challenge = self.challenges.issue(
                verifier_key_id=self.key.key_id, probe_sets=probe_sets, layers=self.config.layers,
                method=self.config.method, limits=self.config.limits, registry=self.registry.state(),
                client=caller.identity if caller is not None else None,
            )
            return sign_message(challenge, self.key)

    def submit(self, header: SignedMessage, chunks: Iterable[Chunk], caller: Caller | None = None) -> SignedMessage:
        """Check everything, compare, sign and record the receipt. Raises ``VerifierError`` on any refusal,
        having stored nothing. The same signed manifest again is answered with its receipt."""
        with self.lifecycle.work():
            authorize(caller, self.config.client_roles, OWNER)
            return self._submit(header, chunks, caller)

    def _replay(self, header: SignedMessage, caller: Caller | None) -> SignedMessage | None:
        """The receipt already recorded for exactly this signed manifest, if any (a retry)."""
        manifest = open_signed_manifest(header, ONLINE_MANIFEST_KIND, self.config.limits)
        found = self.registry.receipt_for(manifest.nonce) if manifest.nonce is not None else None
        if found is None or found[0] != sha256(header.payload):
            return None
        authorize(caller, self.config.client_roles, OWNER, manifest.owner_key_id)
        _charge(self.limiter, manifest.owner_key_id)
        signed = SignedMessage(found[1], found[2], self.key.public_key)
        try:
            signed.check(Receipt.KIND)
        except ProtocolError:
            return None  # signed by an earlier verifier key: not ours to repeat
        log.info("submit: a retry of an answered submission; its receipt is sent again")
        return signed

    def _answered(self, header: SignedMessage, caller: Caller | None, error: NonceUsed) -> SignedMessage:
        """The recorded receipt of this very signed manifest; ``error`` if the nonce was used by another."""
        replay = self._replay(header, caller)
        if replay is None:
            raise error
        return replay

    def _submit(self, header: SignedMessage, chunks: Iterable[Chunk], caller: Caller | None) -> SignedMessage:
        started = self.clock()
        try:
            checked = check_header(header, trust=self.trust, challenges=self.challenges, limits=self.config.limits)
        except NonceUsed as e:
            return self._answered(header, caller, e)
        manifest, challenge = checked.manifest, checked.challenge
        authorize(caller, self.config.client_roles, OWNER, manifest.owner_key_id)
        _charge(self.limiter, manifest.owner_key_id, manifest.term_bytes)
        receiver = TensorReceiver(manifest, challenge.limits, spool_dir=self.registry.data_dir / SPOOL_DIR)
        try:
            for chunk in chunks:
                if self.clock() - started > self.config.stream_timeout_s:
                    raise ChallengeExpired("the submission stream ran past its deadline")
                receiver.add(chunk.index, chunk.offset, chunk.data)
            terms = receiver.finish()
        except BaseException:
            receiver.close()
            raise
        try:
            self.challenges.redeem(checked.nonce)  # atomic: a racing stream with the same nonce fails here
        except NonceUsed as e:  # answered meanwhile, by this process or another serving this data directory
            return self._answered(header, caller, e)
        try:
            with self._computing:
                signed = self._answer(header, checked.nonce, manifest, terms)
        except NonceUsed as e:  # another process recorded a receipt for the nonce while this one computed
            self.challenges.settle(checked.nonce)
            return self._answered(header, caller, e)
        except BaseException:
            self.challenges.release(checked.nonce)  # nothing recorded: the same stream may be sent again
            raise
        self.challenges.settle(checked.nonce)
        return signed

    def _answer(self, header: SignedMessage, nonce: bytes, manifest: Manifest,
                terms: dict[str, Tensor]) -> SignedMessage:
        """Compare, sign and record the receipt of a checked submission."""
        suspect = [invariants_from_group(manifest, i, terms) for i in range(len(manifest.groups))]
        snap = self.registry.log_snapshot(terms=False)
        entries, screened, screen_rule = snap.entries, None, None
        k = self.config.screen_k
        if k and len(entries) > k:
            # A large registry: rank every base on its sketch, compare the candidates exactly. Bonferroni
            # still counts every base screened.
            screened, screen_rule = len(entries), f"{SKETCH_SPEC.id};k={k};floor={self.config.screen_floor}"
            entries = self.registry.screen_candidates(suspect, entries, k, self.config.screen_floor)
        bases = self.registry.base_models(entries)
        # Each match names its base's entry in the log, so the receipt can be checked against the checkpoint.
        matches = [dataclasses.replace(m, log_index=snap.indices[m.entry], picture=self._base_picture(bases, m))
                   for m in compare_with_bases(suspect, bases, self.null, self.config.thresholds, screened)]
        keep = manifest.keep_invariants and self.config.allow_keep_invariants
        receipt = Receipt(
            verifier_key_id=self.key.key_id, owner_key_id=manifest.owner_key_id, nonce=nonce,
            submission=sha256(header.payload), weight_commitment=manifest.weight_commitment.root,
            registry=snap.state, compared=len(matches), matches=tuple(matches), verdict=verdict_of(matches),
            verdict_rule=self.config.thresholds.rule, method_ids=tuple(sorted({g.method_id for g in manifest.groups})),
            issued_at=int(self.clock()), kept_invariants=keep, checkpoint=snap.checkpoint, null_id=self.null.null_id,
            picture=self._picture(suspect[0]) if suspect else None, screened=screened, screen_rule=screen_rule,
        )
        signed = sign_message(receipt, self.key)
        self.registry.record_submission(manifest, signed, receipt, terms if keep else None)
        return signed


    def _picture(self, inv: InvariantSet) -> Picture | None:
        """The encoded vector and dog of ``inv``; ``None`` where its terms cannot be encoded (too few layers or
        probe tokens), which leaves the receipt without a picture rather than failing the submission."""
        try:
            return picture_of(inv, self.encoder)[0]
        except ValueError as e:
            log.warning("no picture: %s", e)
            return None

    def _base_picture(self, bases: list[BaseModel], match: Match) -> Picture | None:
        """The matched base's picture (the group compared), computed once per base entry and probe set (a
        second submission asking for it meanwhile waits for the first rather than computing it again)."""
        key = (match.entry, match.probe_set_id)
        with self._pictures_lock:
            if key in self._base_pictures:
                return self._base_pictures[key]
            lock = self._picture_locks.setdefault(key, threading.Lock())
        with lock:
            with self._pictures_lock:
                if key in self._base_pictures:
                    return self._base_pictures[key]
            base = next((b for b in bases if b.entry == match.entry), None)
            group = next((g for g in base.invariants if g.probes.id == match.probe_set_id), None) if base else None
            picture = self._picture(group) if group is not None else None
            with self._pictures_lock:
                self._base_pictures[key] = picture
                self._picture_locks.pop(key, None)
            return picture


class RegistryService:
    """The registry's logic, free of gRPC: publish and revoke for vendors, reads and proofs for anyone."""

    def __init__(self, registry: Registry, trust: TrustStore, config: ServerConfig | None = None, *,
                 clock: Clock = time.time, lifecycle: Lifecycle | None = None,
                 limiter: RateLimiter | None = None) -> None:
        self.registry = registry
        self.trust = trust
        self.config = config or ServerConfig()
        self.clock = clock
        self.lifecycle = lifecycle or Lifecycle()
        self.limiter = limiter

    def read(self, caller: Caller | None) -> None:
        """The check before every read RPC: a listed client, within its rate."""
        authorize(caller, self.config.client_roles, READER)
        if caller is not None:
            _charge(self.limiter, caller.identity)

    def publish(self, statement: SignedMessage, manifest: SignedMessage, chunks: Iterable[Chunk],
                caller: Caller | None = None) -> Published:
        """Check the statement and manifest before reading a byte of the terms, then the terms as they come,
        then append (or answer with the existing entry)."""
        with self.lifecycle.work():
            authorize(caller, self.config.client_roles, VENDOR)
            return self._publish(statement, manifest, chunks, caller)

    def _publish(self, statement: SignedMessage, manifest: SignedMessage, chunks: Iterable[Chunk],
                 caller: Caller | None) -> Published:
        started = self.clock()
        limits = self.config.limits
        vendor = self.registry.check_statement(statement, self.trust, REGISTER)
        authorize(caller, self.config.client_roles, VENDOR, vendor.vendor_key_id)
        opened = open_signed_manifest(manifest, OFFLINE_MANIFEST_KIND, limits)
        if opened.owner_key_id != vendor.vendor_key_id:
            raise InvalidSubmission("the manifest is signed by another key than the statement")
        if sha256(manifest.payload) != vendor.manifest_sha256:
            raise InvalidSubmission("the statement names another manifest than the one sent")
        if opened.nonce is not None:
            raise InvalidSubmission("a published manifest answers no challenge: its nonce must be absent")
        check_terms_table(opened, limits)
        _charge(self.limiter, vendor.vendor_key_id, opened.term_bytes)
        receiver = TensorReceiver(opened, limits, spool_dir=self.registry.data_dir / SPOOL_DIR)
        try:
            for chunk in chunks:
                if self.clock() - started > self.config.stream_timeout_s:
                    raise ChallengeExpired("the publish stream ran past its deadline")
                receiver.add(chunk.index, chunk.offset, chunk.data)
            terms = receiver.finish()
        except BaseException:
            receiver.close()
            raise
        return self.registry.publish(statement, Bundle(manifest, terms), self.trust)

    def revoke(self, statement: SignedMessage, caller: Caller | None = None) -> Published:
        with self.lifecycle.work():
            authorize(caller, self.config.client_roles, VENDOR)
            checked = self.registry.check_statement(statement, self.trust, REVOKE)
            authorize(caller, self.config.client_roles, VENDOR, checked.vendor_key_id)
            _charge(self.limiter, checked.vendor_key_id)
            return self.registry.revoke(statement, self.trust)

    def list_entries(self, start: int, limit: int) -> tuple[int, list[tuple[int, bytes]]]:
        """The latest checkpoint's size and entries ``start``.. (at most ``limit``, at most ``MAX_LIST``),
        cut short so that the reply stays well inside the gRPC message limit."""
        size = self.registry.size()
        if start > size:
            raise OutOfRange(f"the log has {size} entries; there is no entry {start}")
        budget = self.config.max_message_bytes // 2
        entries: list[tuple[int, bytes]] = []
        for i, data in enumerate(self.registry.entries(start, start + max(1, min(limit or MAX_LIST, MAX_LIST))),
                                 start):
            budget -= len(data) + 16
            if entries and budget < 0:
                break
            entries.append((i, data))
        return size, entries

    def get(self, key: str) -> tuple[int, bytes]:
        if not key or len(key) > 256:
            raise InvalidSubmission("name an entry by index, manifest digest or name")
        return self.registry.find(key)

    def checkpoint(self) -> str:
        return self.registry.latest_checkpoint()

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        return self.registry.inclusion_proof(index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.registry.consistency_proof(old_size, new_size)


# ----------------------------------------------------------------------------------------- gRPC adapter
def _to_pb(signed: SignedMessage) -> pawprint_pb2.SignedPayload:
    return pawprint_pb2.SignedPayload(
        payload=signed.payload, signature=signed.signature, public_key=signed.public_key.raw
    )


def _from_pb(message: pawprint_pb2.SignedPayload) -> SignedMessage:
    raw = bytes(message.public_key)
    if len(raw) != PUBLIC_KEY_SIZE:
        raise InvalidSubmission(f"the signer's public key is not {PUBLIC_KEY_SIZE} raw bytes")
    try:
        key = PublicKey(raw)
    except ProtocolError as e:  # not a usable point: as opaque as any other signature failure
        raise Unauthenticated("signature verification failed") from e
    return SignedMessage(bytes(message.payload), bytes(message.signature), key)


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
        return self._run(context, "challenge", lambda: _to_pb(self._service.challenge(self._caller(context))))

    def Submit(self, request_iterator: Iterator[pawprint_pb2.SubmitRequest], context: grpc.ServicerContext) -> Any:
        return _client_stream(context, self._service.config, "submit",
                              lambda requests: self._submit(requests, self._caller(context)), request_iterator)

    def _caller(self, context: grpc.ServicerContext) -> Caller:
        return caller_of(context, self._service.config.client_roles)

    def _submit(self, requests: Iterator[pawprint_pb2.SubmitRequest], caller: Caller) -> pawprint_pb2.SignedPayload:
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "manifest":
            raise InvalidSubmission("a submission starts with the signed manifest")
        return _to_pb(self._service.submit(_from_pb(first.manifest), _chunks(requests, "manifest"), caller))

    @staticmethod
    def _run(context: grpc.ServicerContext, what: str, fn: Callable[[], Any]) -> Any:
        return _run(context, what, fn)


def _run(context: grpc.ServicerContext, what: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a ``VerifierError`` becomes its status and message, anything else an opaque INTERNAL."""
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


def _published_pb(published: Published) -> pawprint_pb2.PublishReply:
    return pawprint_pb2.PublishReply(
        entry=pawprint_pb2.LogEntry(index=published.index, data=published.entry), existing=published.existing,
        checkpoint=published.checkpoint, inclusion_proof=list(published.proof),
    )


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
        return _published_pb(published)

    def Revoke(self, request: pawprint_pb2.SignedPayload, context: grpc.ServicerContext) -> Any:
        return _run(context, "revoke",
                    lambda: _published_pb(self._service.revoke(_from_pb(request), self._caller(context))))

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
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="pawprint-verifier"),
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    pawprint_pb2_grpc.add_VerifierServicer_to_server(_Servicer(service), server)
    registry = RegistryService(service.registry, service.trust, config, clock=service.clock,
                               lifecycle=service.lifecycle, limiter=service.limiter)
    pawprint_pb2_grpc.add_RegistryServicer_to_server(_RegistryServicer(registry), server)
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
    for name in ("", SERVICE_NAME, REGISTRY_SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, service, health_servicer)


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
