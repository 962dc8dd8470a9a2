"""The verifier's logic, free of gRPC: signed values and chunks in, signed values out.

``VerifierService`` takes domain values (signed messages, chunks) and returns signed messages; it issues
challenges, runs every check of ``verifier._checks`` before computing anything, compares the submission
with every unrevoked base of the registry's latest checkpoint, signs the receipt (naming that checkpoint
and each match's entry index) and records it. ``RegistryService`` serves the registry's transparency log:
vendors publish (statement and manifest checked before the terms are read) and revoke; anyone lists and
gets entries and asks for the latest checkpoint and for inclusion and consistency proofs. Both authorize
the caller (``verifier._access``) and charge its rate limits. The gRPC servicers and the server around them
are ``verifier._server``; the configuration both read is ``verifier._config``.

Retries are safe: the signed manifest is its own idempotency key. Challenges are stateless (a MAC-protected
nonce that rebuilds the challenge, ``verifier._challenges``), so a verifier restarted mid-submission, or
another process on the same data directory, still honours the nonce; a stream whose nonce already has
a receipt is answered with that receipt (byte for byte) without reading the terms, and a nonce is used only
when its receipt is recorded, so a submission that failed half-way may be sent again as it was.

``Lifecycle`` counts the work in flight (submissions, publishes, revocations, challenges): once draining,
new work is refused with ``Unavailable`` (see ``verifier._server.RunningServer.shutdown``). Start-up recovers
what a crash left: the registry removes orphan blobs and temp files and replays its log, and the challenges
issued before the crash are loaded again.

The service never keeps a submission's terms after the verdict unless the owner asked for it
(``keep_invariants``), and stores nothing at all for a submission it rejects. It never serves a base's
terms: the registry's read calls return log entries (statements and manifests) and proofs only.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from protocol import (
    CLAIM,
    INSUFFICIENT_EVIDENCE,
    MAX_EVIDENCE_FINDINGS,
    MAX_FINDING_CHARS,
    OFFLINE_MANIFEST_KIND,
    ONLINE_MANIFEST_KIND,
    OWNER_ATTESTED,
    REGISTER,
    REVOKE,
    Bundle,
    Challenge,
    Manifest,
    Match,
    Picture,
    PrivateKey,
    ProtocolError,
    Published,
    Receipt,
    SignedMessage,
    Tensor,
    TrustStore,
    sha256,
    sign_message,
)
from protocol.terms import InvariantSet, group_terms
from protocol.wire import MAX_LIST
from verifier._access import OWNER, READER, VENDOR, Caller, RateLimiter, SubmissionGuard, authorize, terms_sketch
from verifier._calibration import NullError, NullModel, load_null, sketch_null_file
from verifier._challenges import ChallengeMac, ChallengeStore, Clock, Random
from verifier._checks import Header, TensorReceiver, check_header, check_terms_table, open_signed_manifest
from verifier._compare import BaseModel, BaseSketches, compare_with_bases, verdict_of
from verifier._config import ServerConfig
from verifier._encoder import load_encoder
from verifier._evidence import check_matches, evidence_findings
from verifier._pictures import picture_of
from verifier._pins import PINNED, check_data_files, check_file, check_probe_sets
from verifier._possession import check_possession
from verifier._registry import SKETCH_SPEC, Registry
from verifier.errors import (
    ChallengeExpired,
    ConfigError,
    InvalidSubmission,
    NonceUsed,
    OutOfRange,
    Unavailable,
    VerifierError,
)

# Where large streamed tensors are spooled (anonymous temp files, see verifier._checks.TensorReceiver).
SPOOL_DIR = "spool"

log = logging.getLogger("pawprint.verifier")


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


@dataclass
class OpenSubmission:
    """A submission whose header passed every check, receiving its terms (``VerifierService.open_submission``)."""

    header: SignedMessage
    checked: Header
    receiver: TensorReceiver
    started: float


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
        self.rng = rng  # also draws the evidence checks' sketch vectors, after the terms arrived
        self.lifecycle = Lifecycle()
        config = self.config
        # Supply chain: the data files this verifier loads must be the ones it was released with.
        required = [] if config.null_path is not None else [
            "null-zoo-v1.json", "null-zoo-v2.json", "null-zoo-real-v3.json"]
        if config.sketch and config.sketch_null_path is None:
            required.append(sketch_null_file(config.sketch).name)
            if required[-1] not in PINNED:
                shipped = sorted(n for n in PINNED if n.startswith("null-zoo-sketch"))
                raise ConfigError(f"no null is shipped for sketches of size {config.sketch} (shipped: "
                                  f"{', '.join(shipped) or 'none'}); give --sketch-null FILE")
        self.data_digests = check_data_files(required)
        if config.null_sha256 is not None:
            if config.null_path is None:
                raise ConfigError("--null-sha256 pins an operator's own --null file")
            check_file(config.null_path, config.null_sha256)
        check_probe_sets((p.id for p in registry.probe_sets()), config.probe_set_pins)
        try:
            self.null: NullModel = load_null(config.null_path)
            # the null of sketched submissions (issue 16): fitted on sketch scores of the same size
            self.sketch_null: NullModel | None = None
            if config.sketch:
                self.sketch_null = load_null(config.sketch_null_path or sketch_null_file(config.sketch))
        except NullError as e:
            raise ConfigError(str(e)) from None
        if self.sketch_null is not None and not self.sketch_null.method_id.endswith(f"+sketch/{config.sketch}"):
            raise ConfigError(f"the sketch null was fitted for {self.sketch_null.method_id!r}, not for sketches of "
                              f"size {config.sketch}")
        # kept in the data directory (derived data) so that a restart, or another process, need not sketch again
        self._base_sketches = BaseSketches(load=registry.store.term_sketch, save=self._save_term_sketch)
        try:
            self.encoder = load_encoder(config.encoder)
        except (ValueError, OSError) as e:
            raise ConfigError(f"encoder {config.encoder!r}: {e}") from None
        # Stateless challenges (verifier._challenges): issuing stores nothing; the receipt row marks a nonce used.
        # Challenges stored by earlier versions are still looked up and honoured.
        self.challenges = ChallengeStore(ttl_s=config.challenge_ttl_s, clock=clock, rng=rng,
                                         persist=registry.save_challenge,
                                         lookup=lambda nonce: registry.challenge(nonce, key.key_id),
                                         mac=ChallengeMac(registry.data_dir, key.key_id),
                                         answered=lambda nonce: registry.receipt_for(nonce) is not None)
        restored = self.challenges.restore(registry.challenges(key.key_id))
        if restored:
            log.info("start-up: %d challenges issued before the restart are honoured again", restored)
        self.limiter = RateLimiter(config.rate_limits, clock) if config.rate_limits is not None else None
        self.guard = (SubmissionGuard(config.submission_budget, clock, registry)
                      if config.submission_budget is not None else None)
        self._base_pictures: dict[tuple[bytes, str, int], Picture | None] = {}
        self._picture_locks: dict[tuple[bytes, str, int], threading.Lock] = {}
        self._pictures_lock = threading.Lock()
        # Comparing and drawing are CPU-bound: more at once than cores only slows everything, the cheap calls
        # (challenges, reads) included.
        self._computing = threading.BoundedSemaphore(config.max_concurrent_compares)

    def challenge(self, caller: Caller | None = None) -> SignedMessage:
        with self.lifecycle.work():
            authorize(caller, self.config.client_roles, OWNER)
            if caller is not None and self.limiter is not None and self.limiter.limits.per_caller:
                _charge(self.limiter, caller.identity)
            probe_sets = self.registry.probe_sets()
            if self.config.probe_set_pins is not None:
                probe_sets = tuple(p for p in probe_sets if p.id in self.config.probe_set_pins)
            challenge = self.challenges.issue(
                verifier_key_id=self.key.key_id, probe_sets=probe_sets, layers=self.config.layers,
                method=self.config.method, limits=self.config.limits, registry=self.registry.state(),
                client=caller.identity if caller is not None else None, sketch=self.config.sketch,
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
        opened = self.open_submission(header, caller)
        if isinstance(opened, SignedMessage):
            return opened
        try:
            for chunk in chunks:
                self.receive(opened, chunk)
        except BaseException:
            opened.receiver.close()
            raise
        return self.close_submission(opened, caller)

    # The three steps of a submission, each short, so that the gRPC server can run them on its executor as the
    # stream arrives instead of holding a thread while a slow client sends (``submit`` runs all three).
    # The caller holds ``lifecycle.work()`` and has authorized ``caller`` as an owner, as ``submit`` does.

    def open_submission(self, header: SignedMessage, caller: Caller | None) -> SignedMessage | OpenSubmission:
        """Every check of the header, then a receiver for the terms; for a retry of an answered submission,
        its receipt instead."""
        started = self.clock()
        try:
            checked = check_header(header, trust=self.trust, challenges=self.challenges, limits=self.config.limits)
        except NonceUsed as e:
            return self._answered(header, caller, e)
        manifest, challenge = checked.manifest, checked.challenge
        authorize(caller, self.config.client_roles, OWNER, manifest.owner_key_id)
        _charge(self.limiter, manifest.owner_key_id, manifest.term_bytes)
        if self.guard is not None:
            self.guard.admit(manifest.owner_key_id)  # the key's submission budget (issue 16), before any term
        # Possession of the committed weights (verifier._possession) before a term is read.
        check_possession(manifest, checked.nonce, required=self.config.require_possession)
        receiver = TensorReceiver(manifest, challenge.limits, spool_dir=self.registry.data_dir / SPOOL_DIR)
        return OpenSubmission(header, checked, receiver, started)

    def receive(self, opened: OpenSubmission, chunk: Chunk) -> None:
        """One chunk of an open submission (the caller closes ``opened.receiver`` if this raises)."""
        if self.clock() - opened.started > self.config.stream_timeout_s:
            raise ChallengeExpired("the submission stream ran past its deadline")
        opened.receiver.add(chunk.index, chunk.offset, chunk.data)

    def close_submission(self, opened: OpenSubmission, caller: Caller | None) -> SignedMessage:
        """After the last chunk: the terms complete, the nonce redeemed, compared, signed and recorded."""
        header, checked, receiver = opened.header, opened.checked, opened.receiver
        manifest = checked.manifest
        try:
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
                signed = self._answer(header, checked.nonce, manifest, terms, checked.challenge)
        except NonceUsed as e:  # another process recorded a receipt for the nonce while this one computed
            self.challenges.settle(checked.nonce)
            return self._answered(header, caller, e)
        except BaseException:
            self.challenges.release(checked.nonce)  # nothing recorded: the same stream may be sent again
            raise
        self.challenges.settle(checked.nonce)
        return signed

    def _answer(self, header: SignedMessage, nonce: bytes, manifest: Manifest,
                terms: dict[str, Tensor], challenge: Challenge) -> SignedMessage:
        """Check the evidence, compare, sign and record the receipt of a checked submission."""
        suspect = group_terms(manifest, terms)
        # The verifier decides what counts as evidence (verifier._evidence): any finding makes the verdict
        # insufficient-evidence, never independent. The sketches are drawn now, after the terms arrived.
        findings = evidence_findings(manifest, challenge, suspect, self.rng(16))
        if self.guard is not None:  # count it (degenerate, near-duplicate); past the budget, refused uncompared
            self.guard.record(manifest.owner_key_id,
                              terms_sketch((str(k), inv.terms[k]) for inv in suspect for k in sorted(inv.terms)),
                              degenerate=bool(findings))
        snap = self.registry.log_snapshot(terms=False)
        entries, screened, screen_rule = snap.entries, None, None
        k = self.config.screen_k
        # Sketches are compared with every base (k x k per term: cheap); the screen reads full terms.
        sketched = challenge.sketch
        null = self.sketch_null if sketched and self.sketch_null is not None else self.null
        if k and len(entries) > k and not sketched:
            # A large registry: rank every base on its sketch, compare the candidates exactly. Bonferroni
            # still counts every base screened.
            screened, screen_rule = len(entries), f"{SKETCH_SPEC.id};k={k};floor={self.config.screen_floor}"
            entries = self.registry.screen_candidates(suspect, entries, k, self.config.screen_floor)
        # a sketched submission is compared with the bases' stored sketches: their terms are read only to sketch
        # a base the first time
        bases = self.registry.base_models(entries, lazy=bool(sketched))
        # Each match names its base's entry in the log, so the receipt can be checked against the checkpoint.
        # (compare_with_bases sets it, and orders equally strong matches by it: the earliest entry first.)
        matches = [dataclasses.replace(m, picture=self._base_picture(bases, m, sketched))
                   for m in compare_with_bases(suspect, bases, null, self.config.thresholds, screened,
                                               log_indices=snap.indices, sketches=self._base_sketches)]
        findings += check_matches(matches, {b.entry: (b.name, {g.probes.id: g.group.rows for g in b.invariants})
                                            for b in bases})
        evidence = _findings(findings)
        verdict = INSUFFICIENT_EVIDENCE if evidence else verdict_of(matches)
        compared = len(matches)
        if evidence:
            # insufficient-evidence: the verdict needs no score, so the receipt states none (issue 16: a chosen,
            # implausible submission must not read the registered bases' terms back through the scores)
            matches, compared = [], 0
        elif sketched:
            # An independent match needs no score either: a sketching verifier states only the matches that are
            # not independent (``compared`` still counts every base), so that chosen sketches cannot read the
            # registered bases' sketches back (issue 16; docs/results/privacy.md).
            matches = [m for m in matches if m.verdict != "independent"]
        keep = manifest.keep_invariants and self.config.allow_keep_invariants
        receipt = Receipt(
            verifier_key_id=self.key.key_id, owner_key_id=manifest.owner_key_id, nonce=nonce,
            submission=sha256(header.payload), weight_commitment=manifest.weight_commitment.root,
            registry=snap.state, compared=compared, matches=tuple(matches), verdict=verdict,
            verdict_rule=self.config.thresholds.rule,
            method_ids=tuple(sorted({g.comparison_id for g in manifest.groups})),
            issued_at=int(self.clock()), kept_invariants=keep, checkpoint=snap.checkpoint, null_id=null.null_id,
            picture=self._picture(suspect[0]) if suspect else None, screened=screened, screen_rule=screen_rule,
            model_name=manifest.display_name,  # as the owner signed it: named by the owner, not verified
            # as the owner signed it: verified by the owner's agent over the files, which the verifier never sees
            publisher_signature=manifest.publisher_signature,
            # checked before the terms were read (open_submission): what the owner opened of its weights
            possession=check_possession(manifest, nonce),
            # what the owner's agent sent; the verifier never sees the weights (docs/threat-model.md)
            assurance=OWNER_ATTESTED, evidence=evidence,
        )
        signed = sign_message(receipt, self.key)
        self.registry.record_submission(manifest, signed, receipt, terms if keep else None)
        return signed


    def _save_term_sketch(self, entry: bytes, probe_set_id: str, k: int, data: bytes) -> None:
        if self.registry.log.writable:
            self.registry.store.save_term_sketch(entry, probe_set_id, k, data)

    def _picture(self, inv: InvariantSet) -> Picture | None:
        """The encoded vector and dog of ``inv``; ``None`` where its terms cannot be encoded (too few layers or
        probe tokens), which leaves the receipt without a picture rather than failing the submission."""
        try:
            return picture_of(inv, self.encoder)[0]
        except (ValueError, VerifierError) as e:  # EncoderInputError, PictureMismatch, the renderer's ValueError
            log.warning("no picture: %s", e)
            return None

    def _base_picture(self, bases: list[BaseModel], match: Match, sketch: int = 0) -> Picture | None:
        """The matched base's picture (the group compared: sketched as the submission was), computed once per
        base entry, probe set and sketch size (a second submission asking for it meanwhile waits for the first
        rather than computing it again)."""
        key = (match.entry, match.probe_set_id, sketch)
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
            if group is not None and sketch:
                assert base is not None
                group = self._base_sketches.get(base, group, sketch)
            picture = self._picture(group) if group is not None else None
            with self._pictures_lock:
                self._base_pictures[key] = picture
                self._picture_locks.pop(key, None)
            return picture


def _findings(findings: list[str]) -> tuple[str, ...]:
    """The findings as the receipt carries them: each cut to the protocol's length, at most its count."""
    cut = [f if len(f) <= MAX_FINDING_CHARS else f[:MAX_FINDING_CHARS - 3] + "..." for f in findings]
    if len(cut) > MAX_EVIDENCE_FINDINGS:
        cut = [*cut[:MAX_EVIDENCE_FINDINGS - 1], f"... and {len(cut) - MAX_EVIDENCE_FINDINGS + 1} more findings"]
    return tuple(cut)


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
        if caller is not None and self.limiter is not None and self.limiter.limits.per_caller:
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
            checked = self.registry.check_statement(statement, self.trust, (REVOKE, CLAIM))
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
