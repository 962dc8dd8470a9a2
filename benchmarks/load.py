"""A bounded load run against one verifier (issue #9, item 1): correctness under concurrency, latency,
throughput, refusal of excess load and the freeing of stalled streams.

    python -m benchmarks.load [--owners 16 --readers 4 --publishers 2 --duration 120 --out docs/results/load.json]

The verifier runs as its own process, ``pawprint verifier serve`` over loopback TLS (certificates from
``verifier.write_test_pki``), with ``--max-workers``, ``--max-concurrent-rpcs`` and ``--stream-timeout`` where a
phase needs them. Its resident set, threads and CPU time are sampled from ``/proc`` every 0.2 s. Each phase starts
from a copy of one prepared data directory: a registry holding three bases, tiny LLaMA models of seeds 0-2
registered by the administrator.

Phases:

- **load**: ``--owners`` threads (one channel each), each in a closed loop: ``GetChallenge``, sign the manifest
  for the nonce, stream it and the terms (``owner._client.request_challenge`` / ``submission_requests`` /
  ``check_receipt``: the receipt is checked against the verifier key, this nonce, this manifest and this weight
  commitment), then the verdict: a model derived from a base must be matched to that base, an independent one
  must not be called derived, and every receipt of one model must carry the same scores. The terms are computed
  once per model (``owner._fingerprint.fingerprint``) and re-signed per challenge, so the owners' CPU goes to
  the protocol rather than to the agent (``--agent`` runs the whole ``owner._client.submit`` each time instead).
  ``--readers`` threads loop over ``LatestCheckpoint`` (signature checked), ``ConsistencyProof`` from the last
  checkpoint seen (checked), ``List``, ``Get`` and ``InclusionProof`` (checked against the checkpoint and the
  listed entry), pausing ``--read-interval`` between rounds. ``--publishers`` threads publish new tiny bases
  under distinct names (one every ``--publish-interval`` seconds each) and check each answer's checkpoint and
  inclusion proof. Afterwards the
  server is stopped and its data directory audited through ``verifier.Registry``: every receipt a client got is
  stored exactly once, nothing is stored that no client got (unless its reply was lost: counted), every publish
  is the entry at its index, the log audits from the initial checkpoint, and every receipt's matched entries
  are proven in its checkpoint.
- **overload**: a server with few workers and a small ``max_concurrent_rpcs``. First deterministic: as many
  stalled Submit streams as the limit occupy it, then a flood of calls must all be refused with
  RESOURCE_EXHAUSTED (how fast is measured), the server's memory must not grow, and once the stalled streams
  go, submissions succeed. Then a burst: ``--overload-clients`` owners in a closed loop with a short back-off on
  RESOURCE_EXHAUSTED; accepted submissions complete and audit as above; the resident set is reported.
- **stall**: a server with a short stream timeout and fewer workers than stalled streams (manifest sent, then
  silence, or chunks trickled): the server cuts them off, and submissions queued behind them succeed.
- **hostile** (not run by default): a hostile crowd (silent and trickling streams, challenge floods, oversized
  declared sizes, reconnect storms, 1,000 connections) while honest owners submit; ``benchmarks.hostile``
  describes it. Writes ``--hostile-out`` (and its ``.md``); ``--server-repo`` serves from another checkout,
  ``--hostile-before`` puts an earlier run (of the server before a change) beside this one in the table.

Writes ``--out`` (JSON) and the same name with ``.md``. Nothing here is asserted about time;
``tests/verifier/test_load.py`` runs a bounded version as tests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from owner._client import SubmissionError, check_receipt, request_challenge, submission_requests
from protocol import (
    ONLINE_MANIFEST_KIND,
    REGISTER,
    Bundle,
    Challenge,
    Checkpoint,
    Manifest,
    PrivateKey,
    ProbeSpec,
    ProtocolError,
    PublicKey,
    Receipt,
    RegistryStatement,
    Role,
    SignedMessage,
    Tensor,
    TensorDigest,
    TermGroup,
    TrustStore,
    WeightCommitment,
    decode_map,
    sign_message,
    verify_consistency,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import open_channel

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "load"
NOW = 1_700_000_000
TERMS = ("attn_qk", "attn_vo", "ffn")
CLIENT_TIMEOUT_S = 120.0
# Statuses after which a submission's outcome is unknown to the client (the server may have stored it).
UNKNOWN_OUTCOME = frozenset({"DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE", "UNKNOWN", "INTERNAL"})
T = TypeVar("T")


def _key(label: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"pawprint-load/" + label.encode()).digest())


VERIFIER = _key("verifier")


def owner_key(i: int) -> PrivateKey:
    return _key(f"owner-{i}")


def vendor_key(i: int) -> PrivateKey:
    return _key(f"vendor-{i}")


def trust_store(owners: int, vendors: int) -> TrustStore:
    store = TrustStore()
    store.add(VERIFIER.public_key, Role.VERIFIER, name="verifier")
    for i in range(owners):
        store.add(owner_key(i).public_key, Role.OWNER, name=f"owner-{i}")
    for i in range(vendors):
        store.add(vendor_key(i).public_key, Role.VENDOR, name=f"vendor-{i}")
    return store


# ------------------------------------------------------------------------------------------- recording
@dataclass(frozen=True)
class Call:
    kind: str
    start: float  # time.monotonic()
    latency: float
    code: str


def _code(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)):
        code = e.code()
        return code.name if code is not None else "UNKNOWN"
    code_attr = getattr(e, "code", None)
    if isinstance(code_attr, str):
        return code_attr
    if isinstance(e, SubmissionError):
        return "CLIENT_CHECK_FAILED"
    return type(e).__name__


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; ``None`` for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(np.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


class Recorder:
    """Every RPC's kind, start, latency and status, from all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []

    def add(self, kind: str, start: float, latency: float, code: str) -> None:
        with self._lock:
            self.calls.append(Call(kind, start, latency, code))

    def timed(self, kind: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        try:
            result = fn()
        except BaseException as e:
            self.add(kind, start, time.monotonic() - start, _code(e))
            raise
        self.add(kind, start, time.monotonic() - start, "OK")
        return result

    def slowest(self, origin: float, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` slowest calls: kind, start (seconds after ``origin``), latency (s), status."""
        with self._lock:
            calls = sorted(self.calls, key=lambda c: -c.latency)[:n]
        return [{"kind": c.kind, "start_s": round(c.start - origin, 2), "latency_s": round(c.latency, 2),
                 "code": c.code} for c in calls]

    def summary(self, elapsed: float, *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """Per kind: count, statuses, OK latency percentiles (ms) and OK calls per second over ``elapsed``, of the
        calls started in [``since``, ``until``)."""
        with self._lock:
            calls = [c for c in self.calls
                     if (since is None or c.start >= since) and (until is None or c.start < until)]
        out: dict[str, Any] = {}
        for kind in sorted({c.kind for c in calls}):
            mine = [c for c in calls if c.kind == kind]
            ok = [c.latency * 1000 for c in mine if c.code == "OK"]
            refused = [c.latency * 1000 for c in mine if c.code != "OK"]
            out[kind] = {
                "count": len(mine), "ok": len(ok), "codes": dict(Counter(c.code for c in mine)),
                "per_s": round(len(ok) / elapsed, 2) if elapsed > 0 else None,
                **{f"p{q}_ms": _r(percentile(ok, q)) for q in (50, 95, 99)},
                "max_ms": _r(max(ok) if ok else None),
                "refused_p50_ms": _r(percentile(refused, 50)), "refused_p95_ms": _r(percentile(refused, 95)),
                "refused_max_ms": _r(max(refused) if refused else None),
            }
        return out


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(float(x), nd)


# -------------------------------------------------------------------------------------------- ledger
@dataclass(frozen=True)
class Got:
    """A receipt a client received and checked."""

    model: str
    signed: SignedMessage
    receipt: Receipt


@dataclass(frozen=True)
class PublishedRecord:
    index: int
    entry: bytes
    name: str
    existing: bool


@dataclass
class Ledger:
    """What the clients saw, for the audit: receipts, submissions of unknown outcome, publishes, failed checks."""

    receipts: list[Got] = field(default_factory=list)
    unknown: list[bytes] = field(default_factory=list)  # nonces whose Submit ended without an answer
    published: list[PublishedRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violation(self, what: str) -> None:
        with self.lock:
            if len(self.violations) < 1000:
                self.violations.append(what)


# ------------------------------------------------------------------------------------- owners' models
@dataclass(frozen=True)
class OwnerModel:
    """A model's terms, computed once; each submission re-signs its manifest for the challenge's nonce.
    ``expect`` names the base it derives from (``None``: independent of every base)."""

    name: str
    manifest: Manifest
    terms: Mapping[str, Tensor]
    expect: str | None
    path: Path


def owner_model(path: Path, name: str, expect: str | None, probe_sets: Sequence[ProbeSpec],
                sketch: bool | int = True) -> OwnerModel:
    from owner._fingerprint import fingerprint, sketch_fingerprint
    from protocol import DEFAULT_SKETCH

    fp = fingerprint(path, owner_key(0).key_id, now=NOW, probe_sets=probe_sets, nonce=b"\0" * 32)
    if sketch:  # what a verifier of the default configuration asks for (issue 16)
        fp = sketch_fingerprint(fp, DEFAULT_SKETCH if sketch is True else sketch)
    return OwnerModel(name, fp.manifest, dict(fp.terms), expect, path)


def _check_verdict(model: OwnerModel, receipt: Receipt, seen: dict[str, tuple[object, ...]],
                   ledger: Ledger) -> None:
    """A derived model matched to its base, an independent one not called derived, and every receipt of one model
    with the same scores against the initial bases."""
    if receipt.verdict == "insufficient-evidence":
        # The owner's fingerprint was made before a vendor published a base on another probe set, so that base
        # was not compared and `independent` cannot be said (verifier._evidence); a derived model is still
        # derived. An owner answering a fresh challenge includes every probe set.
        if model.expect is not None or not receipt.evidence or not all(
                "not compared" in e for e in receipt.evidence):
            ledger.violation(f"{model.name}: insufficient-evidence: {'; '.join(receipt.evidence)[:200]}")
        return
    if model.expect is not None:
        if receipt.verdict != "derived" or not receipt.matches or receipt.matches[0].name != model.expect:
            best = receipt.matches[0].name if receipt.matches else None
            ledger.violation(f"{model.name}: verdict {receipt.verdict}, best match {best}, expected {model.expect}")
    elif receipt.verdict == "derived":
        ledger.violation(f"{model.name}: an independent model was called derived")
    scores = tuple(sorted((m.name, m.ics, m.p_value) for m in receipt.matches))
    with ledger.lock:
        first = seen.setdefault(model.name, scores)
    if first != scores:
        ledger.violation(f"{model.name}: scores differ between receipts of the same model")


def submit_once(channel: grpc.Channel, key: PrivateKey, model: OwnerModel, verifier_pub: PublicKey,
                rec: Recorder, ledger: Ledger, seen: dict[str, tuple[object, ...]], *,
                timeout_s: float = CLIENT_TIMEOUT_S, agent: bool = False,
                submit_channel: grpc.Channel | None = None) -> Receipt:
    """One submission, every step timed; raises ``SubmissionError`` (with the status ``code``) on a refusal.
    ``submit_channel``: send the stream there (another verifier process on the same data directory) rather than
    where the challenge came from."""
    if agent:
        from owner._client import submit

        result = rec.timed("Submission", lambda: submit(model.path, key, channel, verifier_pub, timeout_s=timeout_s))
        with ledger.lock:
            ledger.receipts.append(Got(model.name, result.signed_receipt, result.receipt))
        _check_verdict(model, result.receipt, seen, ledger)
        return result.receipt
    stub = pawprint_pb2_grpc.VerifierStub(channel)
    started = time.monotonic()
    challenge = rec.timed("GetChallenge", lambda: request_challenge(stub, verifier_pub, key.key_id, timeout_s))
    manifest = dataclasses.replace(model.manifest, owner_key_id=key.key_id, nonce=challenge.nonce,
                                   created_at=int(time.time()))
    signed = sign_message(manifest, key, ONLINE_MANIFEST_KIND)
    requests = submission_requests(signed, manifest, model.terms, challenge.limits.max_chunk_bytes)
    submit_stub = stub if submit_channel is None else pawprint_pb2_grpc.VerifierStub(submit_channel)
    try:
        reply = rec.timed("Submit", lambda: submit_stub.Submit(requests, timeout=timeout_s))
    except grpc.RpcError as e:
        code = _code(e)
        if code in UNKNOWN_OUTCOME:
            with ledger.lock:
                ledger.unknown.append(challenge.nonce)
        raise SubmissionError(f"submit: {code}: {e.details() if callable(getattr(e, 'details', None)) else ''}",
                              code) from e
    try:
        signed_receipt = SignedMessage(bytes(reply.payload), bytes(reply.signature), PublicKey(bytes(reply.public_key)))
        receipt = check_receipt(signed_receipt, verifier_pub, signed, manifest, challenge)
    except (ProtocolError, SubmissionError) as e:
        ledger.violation(f"{model.name}: a receipt failed its check: {e}")
        raise SubmissionError(str(e), "MISMATCH") from e
    rec.add("Submission", started, time.monotonic() - started, "OK")
    with ledger.lock:
        ledger.receipts.append(Got(model.name, signed_receipt, receipt))
    _check_verdict(model, receipt, seen, ledger)
    return receipt


# --------------------------------------------------------------------------------------- readers, vendors
def tiny_bundle(seed: int, key: PrivateKey) -> Bundle:
    """The smallest valid base (two probe tokens, one layer, three 2 x 2 terms) on its own probe set, so that
    published bases grow the log without changing what owners' submissions are compared with."""
    rng = np.random.default_rng(seed)
    group = TermGroup(ProbeSpec("load-tiny", 1, "r", ("a", "b")), (True, True), (0,), "pawprint", "m", TERMS)
    terms = {n: Tensor("F32", (2, 2), rng.standard_normal((2, 2)).astype("<f4").tobytes())
             for n in group.tensor_names(0)}
    table = tuple(TensorDigest(n, "F32", (2, 2), hashlib.sha256(t.data).digest()) for n, t in terms.items())
    manifest = Manifest(key.key_id, None, NOW, "load", {"family": "tiny"}, (group,), table,
                        WeightCommitment(hashlib.sha256(b"w%d" % seed).digest(), 1, 16, "w"))
    return Bundle.create(manifest, terms, key)


def publish_once(remote: Any, key: PrivateKey, seed: int, name: str, log_pub: PublicKey, rec: Recorder,
                 ledger: Ledger) -> None:
    from protocol import LogCheckFailed, check_published

    bundle = tiny_bundle(seed, key)
    statement = RegistryStatement(REGISTER, name, key.key_id, bundle.manifest_digest, int(time.time()),
                                  "apache-2.0").sign(key)
    published = rec.timed("Publish", lambda: remote.publish(statement, bundle))
    try:
        check_published(published, statement, log_pub)
    except LogCheckFailed as e:
        ledger.violation(f"publish {name}: {e}")
        return
    with ledger.lock:
        ledger.published.append(PublishedRecord(published.index, published.entry, name, published.existing))


@dataclass
class ReaderState:
    checkpoint: Checkpoint | None = None
    rng: random.Random = field(default_factory=random.Random)


def read_once(remote: Any, log_pub: PublicKey, state: ReaderState, rec: Recorder, ledger: Ledger) -> None:
    """One round of every read RPC, each answer checked: the checkpoint's signature, its consistency with the last
    one seen, a listed page, an entry by index and its inclusion proof (the same bytes as listed)."""
    from protocol import LogCheckFailed, check_inclusion, open_note

    try:
        cp = open_note(rec.timed("LatestCheckpoint", remote.checkpoint), log_pub)
        prev = state.checkpoint
        if prev is not None and cp.size < prev.size:
            ledger.violation(f"the log shrank from {prev.size} to {cp.size}")
        elif prev is not None and prev.size > 0 and cp.size > prev.size:
            old = prev
            proof = rec.timed("ConsistencyProof", lambda: remote.consistency_proof(old.size, cp.size))
            verify_consistency(old.size, cp.size, old.root, cp.root, proof)
        elif prev is not None and cp.size == prev.size and cp.root != prev.root:
            ledger.violation(f"two roots for a log of size {cp.size}")
        state.checkpoint = cp
        start = state.rng.randrange(cp.size)
        end = min(cp.size, start + 16)
        page = rec.timed("List", lambda: remote.entries(start, end))
        if len(page) != end - start:
            ledger.violation(f"List {start}..{end} returned {len(page)} entries")
            return
        i = state.rng.randrange(start, end)
        index, data = rec.timed("Get", lambda: remote.get(str(i)))
        if index != i or data != page[i - start]:
            ledger.violation(f"Get {i} answered entry {index}, or other bytes than List")
        served, proof = rec.timed("InclusionProof", lambda: remote.inclusion_proof(i, cp.size))
        if served != data:
            ledger.violation(f"InclusionProof {i} served other bytes than Get")
        check_inclusion(i, served, proof, cp)
    except (LogCheckFailed, ProtocolError) as e:
        ledger.violation(f"reader: {e}")


# ---------------------------------------------------------------------------------------- stalled streams
class StalledStream:
    """A Submit stream that sends a real signed manifest for ``challenge`` and then stalls (``trickle_s``: sends a
    4 KiB chunk every so often instead, never finishing in time); without a challenge it sends nothing at all.
    ``result()`` waits for its end."""

    def __init__(self, channel: grpc.Channel, key: PrivateKey, model: OwnerModel, challenge: Challenge | None, *,
                 trickle_s: float | None = None, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        stub = pawprint_pb2_grpc.VerifierStub(channel)
        self._release = threading.Event()
        self.ended: float | None = None
        all_requests: Iterator[pawprint_pb2.SubmitRequest] = iter(())
        if challenge is not None:
            manifest = dataclasses.replace(model.manifest, owner_key_id=key.key_id, nonce=challenge.nonce,
                                           created_at=int(time.time()))
            signed = sign_message(manifest, key, ONLINE_MANIFEST_KIND)
            all_requests = submission_requests(signed, manifest, model.terms, 4096)

        def requests() -> Iterator[pawprint_pb2.SubmitRequest]:
            first = next(all_requests, None)
            if first is not None:
                yield first
            if trickle_s is None:
                self._release.wait()
                return
            for r in all_requests:
                if self._release.wait(trickle_s):
                    return
                yield r

        self.started = time.monotonic()
        self.future = stub.Submit.future(requests(), timeout=timeout_s)
        self.future.add_done_callback(lambda _f: setattr(self, "ended", time.monotonic()))

    def result(self, timeout: float | None = None) -> tuple[str, float]:
        """(status name, seconds from start to end)."""
        try:
            self.future.result(timeout=timeout)
            code = "OK"
        except grpc.FutureTimeoutError:
            return "STILL_OPEN", time.monotonic() - self.started
        except grpc.FutureCancelledError:
            code = "CANCELLED"
        except grpc.RpcError as e:
            code = _code(e)
        ended = self.ended if self.ended is not None else time.monotonic()
        return code, ended - self.started

    def release(self) -> None:
        self._release.set()

    def cancel(self) -> None:
        self.future.cancel()
        self._release.set()


@dataclass(frozen=True)
class Stall:
    """How one stalled stream behaves: ``silent`` sends nothing at all (needing no key), ``trickle_s`` sends a
    4 KiB chunk that often, neither stalls after its manifest."""

    key: PrivateKey
    silent: bool = False
    trickle_s: float | None = None


def open_stalled(channel: grpc.Channel, stalls: Sequence[Stall], model: OwnerModel,
                 verifier_pub: PublicKey) -> list[StalledStream]:
    """The streams, opened in order. Every challenge is fetched before the first stream opens: once the streams
    hold every worker, a GetChallenge would wait behind them."""
    stub = pawprint_pb2_grpc.VerifierStub(channel)
    challenges = [None if st.silent else request_challenge(stub, verifier_pub, st.key.key_id, CLIENT_TIMEOUT_S)
                  for st in stalls]
    return [StalledStream(channel, st.key, model, c, trickle_s=st.trickle_s)
            for st, c in zip(stalls, challenges, strict=True)]


def wait_saturated(channel: grpc.Channel, limit_s: float = 10.0) -> bool:
    """Poll with a cheap call until the server refuses it with RESOURCE_EXHAUSTED."""
    stub = pawprint_pb2_grpc.RegistryStub(channel)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            stub.LatestCheckpoint(pawprint_pb2.CheckpointRequest(), timeout=5)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------------------ audit
def audit_data(ws: Workspace, data: Path, ledger: Ledger) -> dict[str, Any]:
    """``audit_run`` on the data directory ``data`` of a stopped server, opened as its next start-up would."""
    from verifier import Registry

    registry = Registry(data)
    try:
        return audit_run(registry, ledger, ws.initial_note, ws.log_pub)
    finally:
        registry.close()


def _receipt_nonce(payload: bytes) -> bytes:
    return Receipt.from_map(decode_map(payload)).nonce


def audit_run(registry: Any, ledger: Ledger, initial_note: str, log_pub: PublicKey, *,
              prove_receipts: bool = True) -> dict[str, Any]:
    """The data directory against what the clients saw. ``problems`` is empty when all holds."""
    from protocol import LogCheckFailed, audit, check_receipt_entries, open_note
    from verifier import LocalRegistry

    problems: list[str] = []
    rows = registry.submissions()
    stored = Counter(r[2] for r in rows)
    got = Counter(g.signed.payload for g in ledger.receipts)
    missing = [p for p in got if stored[p] == 0]
    dup_stored = [p for p, c in stored.items() if c > 1]
    dup_got = [p for p, c in got.items() if c > 1]
    unknown = set(ledger.unknown)
    extra = [p for p in stored if p not in got]
    extra_unexplained = [p for p in extra if _receipt_nonce(p) not in unknown]
    for digest, owner_id, payload, blob in rows:
        r = Receipt.from_map(decode_map(payload))
        if r.submission != digest or r.owner_key_id != owner_id or blob is not None:
            problems.append(f"stored row {digest.hex()[:12]} disagrees with its receipt or kept terms")
    if missing:
        problems.append(f"{len(missing)} receipts a client got are not stored")
    if dup_stored:
        problems.append(f"{len(dup_stored)} receipts stored more than once")
    if dup_got:
        problems.append(f"{len(dup_got)} receipts received twice")
    if extra_unexplained:
        problems.append(f"{len(extra_unexplained)} receipts stored that no client got (and no reply was lost)")
    nonces = Counter(g.receipt.nonce for g in ledger.receipts)
    if any(c > 1 for c in nonces.values()):
        problems.append("one nonce answered by two receipts")

    source = LocalRegistry(registry)  # not closed here: the caller owns the registry
    size = registry.size()
    for p in ledger.published:
        if registry.entries(p.index, p.index + 1) != [p.entry]:
            problems.append(f"publish {p.name}: entry {p.index} in the log is not the one answered")
    new = [p for p in ledger.published if not p.existing]
    if len({p.index for p in new}) != len(new) or len({p.name for p in new}) != len(new):
        problems.append("two publishes answered with one entry")
    initial_size = open_note(initial_note, log_pub).size
    if size != initial_size + len(new):
        problems.append(f"the log has {size} entries; {initial_size} + {len(new)} published expected")
    names = {b.name for b in registry.bases()}
    if not {p.name for p in new} <= names:
        problems.append("a published base is not among the registry's bases")
    report = audit(source, initial_note, log_pub)
    if not report.ok:
        problems.append(f"log audit failed: {report.problems[:3]}")
    proven = 0
    if prove_receipts:
        for g in ledger.receipts:
            try:
                if g.receipt.checkpoint is None:
                    raise LogCheckFailed("no checkpoint")
                open_note(g.receipt.checkpoint, log_pub)
                proven += len(check_receipt_entries(source, g.receipt))
            except (LogCheckFailed, ProtocolError) as e:
                problems.append(f"receipt {g.receipt.submission.hex()[:12]}: {e}")
                break
    counts = registry.counts()
    return {
        "stored_submissions": len(rows), "receipts_received": len(ledger.receipts),
        "missing": len(missing), "duplicated_stored": len(dup_stored), "duplicated_received": len(dup_got),
        "stored_not_received": len(extra), "stored_not_received_unexplained": len(extra_unexplained),
        "unknown_outcome": len(unknown), "publishes": len(ledger.published), "log_size": size,
        "log_size_initial": initial_size, "log_audit_ok": report.ok, "receipt_entries_proven": proven,
        "counts": counts, "client_check_violations": len(ledger.violations),
        "violations": ledger.violations[:20], "problems": problems,
        "ok": not problems and not ledger.violations,
    }


# -------------------------------------------------------------------------------------- server process
@dataclass
class Sample:
    t: float
    rss_kib: int
    threads: int
    cpu_s: float


class ServerProcess:
    """A verifier server subprocess: its address, and its RSS, thread count and CPU time sampled from /proc."""

    def __init__(self, argv: Sequence[str], log_path: Path, *, interval_s: float = 0.2,
                 repo: Path = REPO) -> None:
        """``repo``: the checkout whose code serves (another one measures the server before a change)."""
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
        self.proc = subprocess.Popen(self.argv, cwd=repo, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line!r}; see {log_path}: "
                               f"{log_path.read_text()[-2000:]}")
        self.target = line.removeprefix("listening on ")
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._interval = interval_s
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()

    def sample(self) -> Sample | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        after = stat.rpartition(")")[2].split()
        cpu = (int(after[11]) + int(after[12])) / self._ticks
        return Sample(time.monotonic(), int(fields["VmRSS"].split()[0]), int(fields["Threads"]), cpu)

    def _sample_loop(self) -> None:
        while not self._stop.wait(self._interval):
            s = self.sample()
            if s is not None:
                self.samples.append(s)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """RSS (MiB: first, peak, last), peak threads and CPU use (cores) between two monotonic times."""
        inside = [s for s in self.samples if start <= s.t <= end]
        if len(inside) < 2:
            return {}
        cpu = (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].t - inside[0].t)
        return {"rss_first_mib": round(inside[0].rss_kib / 1024, 1),
                "rss_peak_mib": round(max(s.rss_kib for s in inside) / 1024, 1),
                "rss_last_mib": round(inside[-1].rss_kib / 1024, 1),
                "threads_first": inside[0].threads, "threads_peak": max(s.threads for s in inside),
                "threads_last": inside[-1].threads, "cpu_cores": round(cpu, 2)}

    def stop(self) -> int:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


# -------------------------------------------------------------------------------------------- workspace
@dataclass
class Workspace:
    root: Path
    pristine: Path  # the prepared data directory; each phase serves a copy
    keys: Path
    trust: Path
    pki: Any
    owners: int
    vendors: int
    models: list[OwnerModel]
    log_pub: PublicKey
    initial_note: str

    def data_copy(self, name: str) -> Path:
        dst = self.root / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(self.pristine, dst)
        return dst

    def channel(self, target: str) -> grpc.Channel:
        return open_channel(target, ca=self.pki.ca.read_bytes())


def perturb(src: Path, dst: Path, scale: float = 0.05, seed: int = 5) -> Path:
    """A copy of ``src`` with Gaussian noise on every float tensor (a stand-in for fine-tuning)."""
    import torch
    from safetensors.torch import load_file, save_file

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    state = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    noisy = {k: (v + scale * v.std() * torch.randn(v.shape, generator=gen)) if v.is_floating_point() and v.numel() > 1
             else v for k, v in state.items()}
    save_file(noisy, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def prepare(root: Path, *, owners: int, vendors: int, bases: int = 3, independents: int = 2) -> Workspace:
    """Keys, trust store, TLS material, tiny models, and a registry holding ``bases`` bases."""
    from owner._fingerprint import build_bundle
    from verifier import Registry, write_test_pki
    from zoo.tiny import make_tiny

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    keys = root / "keys"
    keys.mkdir()
    VERIFIER.save(keys / "verifier.key")
    VERIFIER.public_key.save(keys / "verifier.pub")
    store = trust_store(owners, vendors)
    trust_path = root / "trust.json"
    store.save(trust_path)
    pki = write_test_pki(root / "pki", now=dt.datetime.now(dt.UTC))
    models_dir = root / "models"
    pristine = root / "data-pristine"
    registry = Registry(pristine)
    probe_sets: list[ProbeSpec] = []
    plan: list[tuple[str, Path, str | None]] = []
    try:
        for i in range(bases):
            base = make_tiny("llama", models_dir / f"base-{i}", seed=i)
            bundle = build_bundle(base, vendor_key(0), now=NOW)
            registry.add_base(f"llama-base-{i}", bundle, store, licence="apache-2.0")
            probe_sets.extend(g.probe_set for g in bundle.open().groups if g.probe_set not in probe_sets)
            plan.append((f"derived-{i}", perturb(base, models_dir / f"derived-{i}", seed=10 + i), f"llama-base-{i}"))
        for j in range(independents):
            plan.append((f"independent-{j}", make_tiny("llama", models_dir / f"independent-{j}", seed=100 + j), None))
        log_pub = registry.log_public_key
        note = registry.latest_checkpoint()
    finally:
        registry.close()
    models = [owner_model(path, name, expect, probe_sets) for name, path, expect in plan]
    return Workspace(root, pristine, keys, trust_path, pki, owners, vendors, models, log_pub, note)


def _serve_options() -> set[str]:
    """The option strings ``pawprint verifier serve`` accepts."""
    from pawprint.cli import build_parser

    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        raise KeyError(name)

    serve = sub(sub(build_parser(), "verifier"), "serve")
    return {s for a in serve._actions for s in a.option_strings}


KNOB_OPTIONS = {"max_workers": "--max-workers", "max_concurrent_rpcs": "--max-concurrent-rpcs",
                "submissions_per_day": "--submissions-per-day", "suspicious_per_day": "--suspicious-per-day",
                "stream_timeout": "--stream-timeout"}


def serve_argv(ws: Workspace, data: Path, **knobs: float | int | None) -> list[str]:
    """``pawprint verifier serve`` over loopback TLS on ``data``, with the ``ServerConfig`` knobs given."""
    opts = ["--data", str(data), "--listen", "127.0.0.1:0", "--key", str(ws.keys / "verifier.key"),
            "--trust", str(ws.trust), "--tls-cert", str(ws.pki.server_cert), "--tls-key", str(ws.pki.server_key),
            "--log-level", "WARNING"]
    wanted = {KNOB_OPTIONS[k]: v for k, v in knobs.items() if v is not None}
    missing = set(wanted) - _serve_options()
    if missing:
        raise SystemExit(f"pawprint verifier serve lacks {', '.join(sorted(missing))}")
    for option, value in wanted.items():
        opts += [option, str(value)]
    return [sys.executable, "-m", "pawprint", "verifier", "serve", *opts]


# --------------------------------------------------------------------------------------------- phases
def _join(threads: Sequence[threading.Thread], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def run_load(ws: Workspace, *, owners: int, readers: int, publishers: int, duration_s: float,
             publish_interval_s: float, read_interval_s: float = 0.1, agent: bool = False,
             servers: int = 1) -> dict[str, Any]:
    """The load phase against ``servers`` verifier processes serving one data directory: client ``i`` uses
    process ``i mod servers``; with several, half the owners (``i div servers`` odd) send their streams to the next
    process, not the one that handed out their challenges, so that the streams still spread evenly."""
    from protocol.wire import RemoteRegistry

    data = ws.data_copy(f"data-load-{servers}")
    argv = serve_argv(ws, data)
    procs: list[ServerProcess] = []
    try:
        for j in range(servers):
            procs.append(ServerProcess(argv, ws.root / f"server-load-{servers}-{j}.log"))
    except BaseException:
        for started in procs:
            started.stop()
        raise
    rec, ledger, seen = Recorder(), Ledger(), {}  # type: ignore[var-annotated]
    stop = threading.Event()
    errors: Counter[str] = Counter()
    err_lock = threading.Lock()

    def note_error(kind: str, e: BaseException) -> None:
        with err_lock:
            errors[f"{kind}: {_code(e)}"] += 1

    def owner(i: int) -> None:
        key, model = owner_key(i), ws.models[i % len(ws.models)]
        crossed = servers > 1 and (i // servers) % 2 == 1  # streams still spread evenly over the processes
        with ws.channel(procs[i % servers].target) as channel, \
                ws.channel(procs[(i + 1) % servers].target) as other:
            while not stop.is_set():
                try:
                    submit_once(channel, key, model, VERIFIER.public_key, rec, ledger, seen, agent=agent,
                                submit_channel=other if crossed else None)
                except (SubmissionError, grpc.RpcError) as e:
                    note_error("owner", e)
                    time.sleep(0.05)

    def reader(i: int) -> None:
        remote = RemoteRegistry(ws.channel(procs[i % servers].target), timeout_s=CLIENT_TIMEOUT_S)
        state = ReaderState(rng=random.Random(i))
        try:
            while not stop.is_set():
                try:
                    read_once(remote, ws.log_pub, state, rec, ledger)
                except Exception as e:
                    note_error("reader", e)
                stop.wait(read_interval_s)
        finally:
            remote.close()

    def publisher(i: int) -> None:
        remote = RemoteRegistry(ws.channel(procs[i % servers].target), timeout_s=CLIENT_TIMEOUT_S)
        key, n = vendor_key(1 + i), 0
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    publish_once(remote, key, 1_000_000 * (i + 1) + n, f"load-p{i}-{n}", ws.log_pub, rec, ledger)
                except Exception as e:
                    note_error("publisher", e)
                n += 1
                stop.wait(max(0.0, publish_interval_s - (time.monotonic() - t0)))
        finally:
            remote.close()

    threads = ([threading.Thread(target=owner, args=(i,)) for i in range(owners)]
               + [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
               + [threading.Thread(target=publisher, args=(i,)) for i in range(publishers)])
    load_before = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        time.sleep(duration_s)
    finally:
        stop.set()
        t_stop = time.monotonic()
        _join(threads, CLIENT_TIMEOUT_S + 30)
        t_end = time.monotonic()
        windows = [p.window(t0, t_end) for p in procs]
        codes = [p.stop() for p in procs]
    srv, code = windows[0], codes[0]
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    load_after = os.getloadavg()
    elapsed = t_end - t0
    # The first and the last fifth of the run, to show whether latency drifts as the log grows.
    fifth = duration_s / 5
    summary = rec.summary(elapsed)
    first = rec.summary(fifth, since=t0, until=t0 + fifth)
    last = rec.summary(fifth, since=t0 + 4 * fifth, until=t_stop)
    drift = {k: (first.get(k, {}).get("p50_ms"), last.get(k, {}).get("p50_ms")) for k in summary}
    audit_result = audit_data(ws, data, ledger)
    return {
        "server_argv": argv, "server_exit": code, "servers": servers, "server_exits": codes,
        "server_processes": windows,
        "server_cpu_cores": round(sum(w.get("cpu_cores", 0.0) for w in windows), 2),
        "server_rss_peak_mib_sum": round(sum(w.get("rss_peak_mib", 0.0) for w in windows), 1),
        "owners": owners, "readers": readers,
        "publishers": publishers, "duration_s": duration_s, "publish_interval_s": publish_interval_s,
        "read_interval_s": read_interval_s,
        "agent": agent, "elapsed_s": round(elapsed, 2), "drain_s": round(t_end - t_stop, 2),
        "submissions_per_s": round(len(ledger.receipts) / elapsed, 2), "rpcs": summary,
        "slowest_calls": rec.slowest(t0),
        "p50_first_vs_last_fifth_ms": drift, "errors": dict(errors), "server_process": srv,
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 1),
        "loadavg_before": load_before, "loadavg_after": load_after, "audit": audit_result,
    }


def run_overload(ws: Workspace, *, max_workers: int, max_concurrent_rpcs: int, flood_calls: int,
                 flood_threads: int, clients: int, duration_s: float) -> dict[str, Any]:
    from protocol.wire import RemoteRegistry

    data = ws.data_copy("data-overload")
    argv = serve_argv(ws, data, max_workers=max_workers, max_concurrent_rpcs=max_concurrent_rpcs,
                               stream_timeout=300)
    server = ServerProcess(argv, ws.root / "server-overload.log")
    rec, ledger, seen = Recorder(), Ledger(), {}  # type: ignore[var-annotated]
    out: dict[str, Any] = {"server_argv": argv, "max_workers": max_workers,
                           "max_concurrent_rpcs": max_concurrent_rpcs}
    model = ws.models[0]
    try:
        # 1. Occupy every slot with stalled streams, then flood.
        t_idle = time.monotonic()
        time.sleep(1.0)
        with ws.channel(server.target) as control:
            stalled = open_stalled(control, [Stall(owner_key(i % ws.owners)) for i in range(max_concurrent_rpcs)],
                                   model, VERIFIER.public_key)
            saturated = wait_saturated(control)
            before_flood = server.sample()
            t_flood = time.monotonic()
            codes: Counter[str] = Counter()
            lat: list[float] = []
            lock = threading.Lock()
            per_thread = flood_calls // flood_threads

            def flood(i: int) -> None:
                with ws.channel(server.target) as ch:
                    vstub, rstub = pawprint_pb2_grpc.VerifierStub(ch), pawprint_pb2_grpc.RegistryStub(ch)
                    for n in range(per_thread):
                        t = time.monotonic()
                        try:
                            if n % 2:
                                vstub.GetChallenge(pawprint_pb2.ChallengeRequest(owner_key_id=owner_key(0).key_id),
                                                   timeout=30)
                            else:
                                rstub.LatestCheckpoint(pawprint_pb2.CheckpointRequest(), timeout=30)
                            code = "OK"
                        except grpc.RpcError as e:
                            code = _code(e)
                        with lock:
                            codes[code] += 1
                            lat.append((time.monotonic() - t) * 1000)

            threads = [threading.Thread(target=flood, args=(i,)) for i in range(flood_threads)]
            for t in threads:
                t.start()
            _join(threads, 120)
            t_flood_end = time.monotonic()
            after_flood = server.sample()
            still_open = sum(1 for s in stalled if not s.future.done())
            for s in stalled:
                s.cancel()
            stalled_codes = Counter(s.result(timeout=30)[0] for s in stalled)
            time.sleep(0.5)
            after = []
            for i in range(4):
                try:
                    submit_once(control, owner_key(i % ws.owners), model, VERIFIER.public_key, rec, ledger, seen)
                    after.append("OK")
                except SubmissionError as e:
                    after.append(str(e.code))
        idle = server.window(t_idle, t_flood)
        out["occupied"] = {
            "stalled_streams": len(stalled), "saturated": saturated, "flood_calls": sum(codes.values()),
            "flood_threads": flood_threads, "codes": dict(codes),
            "refused_p50_ms": _r(percentile(lat, 50), 2), "refused_p95_ms": _r(percentile(lat, 95), 2),
            "refused_p99_ms": _r(percentile(lat, 99), 2), "refused_max_ms": _r(max(lat) if lat else None, 2),
            "flood_s": round(t_flood_end - t_flood, 2), "stalled_still_open_after_flood": still_open,
            "stalled_end_codes": dict(stalled_codes), "submissions_after_release": after,
            "server_idle": idle, "server_during_flood": server.window(t_flood, t_flood_end),
            "rss_before_flood_mib": round(before_flood.rss_kib / 1024, 1) if before_flood else None,
            "rss_after_flood_mib": round(after_flood.rss_kib / 1024, 1) if after_flood else None,
        }
        # 2. A burst of owners in a closed loop, backing off briefly when refused.
        stop = threading.Event()
        t0 = time.monotonic()

        def client(i: int) -> None:
            rng = random.Random(i)
            with ws.channel(server.target) as ch:
                while not stop.is_set():
                    try:
                        submit_once(ch, owner_key(i % ws.owners), ws.models[i % len(ws.models)], VERIFIER.public_key,
                                    rec, ledger, seen)
                    except (SubmissionError, grpc.RpcError):
                        time.sleep(rng.uniform(0.005, 0.05))

        def reads(i: int) -> None:
            remote = RemoteRegistry(ws.channel(server.target), timeout_s=CLIENT_TIMEOUT_S)
            state = ReaderState(rng=random.Random(1000 + i))
            try:
                while not stop.is_set():
                    try:
                        read_once(remote, ws.log_pub, state, rec, ledger)
                    except Exception:
                        time.sleep(0.02)
            finally:
                remote.close()

        burst_rec_start = t0
        threads = ([threading.Thread(target=client, args=(i,)) for i in range(clients)]
                   + [threading.Thread(target=reads, args=(i,)) for i in range(max(1, clients // 8))])
        for t in threads:
            t.start()
        time.sleep(duration_s)
        stop.set()
        _join(threads, CLIENT_TIMEOUT_S + 30)
        t_end = time.monotonic()
        out["burst"] = {
            "clients": clients, "readers": max(1, clients // 8), "duration_s": duration_s,
            "elapsed_s": round(t_end - t0, 2), "rpcs": rec.summary(t_end - t0, since=burst_rec_start),
            "submissions_per_s": round(sum(1 for c in rec.calls if c.kind == "Submission" and c.start >= t0
                                           and c.code == "OK") / (t_end - t0), 2),
            "server_process": server.window(t0, t_end),
        }
        out["server_whole_run"] = server.window(t_idle, t_end)
    finally:
        out["server_exit"] = server.stop()
    out["audit"] = audit_data(ws, data, ledger)
    return out


def run_stall(ws: Workspace, *, max_workers: int, stream_timeout_s: float, stalled: int, silent: int, slow: int,
              normal: int) -> dict[str, Any]:

    data = ws.data_copy("data-stall")
    argv = serve_argv(ws, data, max_workers=max_workers, max_concurrent_rpcs=64, stream_timeout=stream_timeout_s)
    server = ServerProcess(argv, ws.root / "server-stall.log")
    rec, ledger, seen = Recorder(), Ledger(), {}  # type: ignore[var-annotated]
    out: dict[str, Any] = {"server_argv": argv, "max_workers": max_workers, "stream_timeout_s": stream_timeout_s}
    model = ws.models[0]
    try:
        with ws.channel(server.target) as control:
            # One submission first, so that the first ones measured do not pay the base pictures' cold start.
            submit_once(control, owner_key(0), model, VERIFIER.public_key, rec, ledger, seen)
            time.sleep(0.5)
            before = server.sample()
            plan = ([Stall(owner_key(i % ws.owners)) for i in range(stalled)]
                    + [Stall(owner_key(0), silent=True) for _ in range(silent)]
                    + [Stall(owner_key(i % ws.owners), trickle_s=0.5) for i in range(slow)])
            t0 = time.monotonic()
            streams = open_stalled(control, plan, model, VERIFIER.public_key)
            time.sleep(0.3)
            results: list[tuple[str, float]] = []
            lock = threading.Lock()

            def one(i: int) -> None:
                try:
                    with ws.channel(server.target) as ch:
                        submit_once(ch, owner_key(i % ws.owners), ws.models[i % len(ws.models)],
                                    VERIFIER.public_key, rec, ledger, seen)
                    code = "OK"
                except SubmissionError as e:
                    code = str(e.code)
                with lock:
                    results.append((code, time.monotonic() - t0))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(normal)]
            for t in threads:
                t.start()
            _join(threads, CLIENT_TIMEOUT_S + 30)
            ends = [(s.result(timeout=CLIENT_TIMEOUT_S)[0], (s.ended or time.monotonic()) - t0) for s in streams]
            for s in streams:
                s.release()
        time.sleep(1.0)
        after = server.sample()

        def rows(part: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
            return [{"code": c, "after_s": round(t, 2)} for c, t in part]

        out.update({
            "stalled_streams": stalled, "silent_streams": silent, "slow_streams": slow, "normal_submissions": normal,
            "stalled_end": rows(ends[:stalled]), "silent_end": rows(ends[stalled:stalled + silent]),
            "slow_end": rows(ends[stalled + silent:]),
            "normal": rows(sorted(results, key=lambda x: x[1])),
            "server_threads_before": before.threads if before else None,
            "server_threads_after": after.threads if after else None,
            "server_rss_before_mib": round(before.rss_kib / 1024, 1) if before else None,
            "server_rss_after_mib": round(after.rss_kib / 1024, 1) if after else None,
        })
    finally:
        out["server_exit"] = server.stop()
    out["audit"] = audit_data(ws, data, ledger)
    return out


# ---------------------------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    return {"cpu": cpu, "nproc": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version(),
            "grpc": grpc.__version__, "kernel": platform.release()}


def _ends(rows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{r['code']} at {r['after_s']} s" for r in rows) or "-"


def _verdict(a: dict[str, Any]) -> str:
    return "all holds" if a["ok"] else "PROBLEMS: " + "; ".join(a["problems"] + a["violations"])


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x:g}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        ("# Load: one and several verifier processes under concurrent owners, readers and publishers (issue #9)"
         if result.get("scaling") else
         "# Load: one verifier under concurrent owners, readers and publishers (issue #9, item 1)"), "",
        f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
        f"Machine: {m['cpu']}, nproc {m['nproc']}, load average at start {', '.join(f'{x:.2f}' for x in m['loadavg'])}"
        f" (the machine is shared with other work); Python {m['python']}, grpcio {m['grpc']}, Linux {m['kernel']}.",
        "", "The verifier runs as its own process over loopback TLS; clients are threads of the benchmark process. "
        "See `benchmarks/load.py` for what each phase does and checks.", "",
    ]
    load = result.get("load")
    if load:
        a = load["audit"]
        srv = load["server_process"]
        lines += [
            "## Load", "",
            f"{load['owners']} owners (closed loop), {load['readers']} readers (a round of 5 reads, then "
            f"{load['read_interval_s']} s pause), {load['publishers']} publishers "
            f"(one publish per {load['publish_interval_s']} s each) for {load['duration_s']} s against "
            f"`pawprint verifier serve` (defaults: 16 workers, 64 concurrent RPCs); drain after the stop "
            f"{load['drain_s']} s.", "",
            f"**{a['receipts_received']} receipts received, {a['stored_submissions']} stored; "
            f"{load['submissions_per_s']} submissions/s.** Lost: {a['missing']}, duplicated: "
            f"{a['duplicated_stored']} stored / {a['duplicated_received']} received, stored without a reply: "
            f"{a['stored_not_received']} (unknown outcomes {a['unknown_outcome']}), mismatched or failed client "
            f"checks: {a['client_check_violations']}. {a['publishes']} publishes, each the entry at its index; "
            f"log {a['log_size_initial']} -> {a['log_size']} entries, audit from the initial checkpoint "
            f"{'passed' if a['log_audit_ok'] else 'FAILED'}; {a['receipt_entries_proven']} matched entries of "
            f"receipts proven in their checkpoints. Audit: **{_verdict(a)}**.",
            "", "| RPC | calls | OK | OK/s | p50 ms | p95 ms | p99 ms | max ms | other statuses |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for kind, s in load["rpcs"].items():
            other = ", ".join(f"{k} {v}" for k, v in s["codes"].items() if k != "OK") or "-"
            lines.append(f"| {kind} | {s['count']} | {s['ok']} | {s['per_s']} | {_ms(s['p50_ms'])} | "
                         f"{_ms(s['p95_ms'])} | {_ms(s['p99_ms'])} | {_ms(s['max_ms'])} | {other} |")
        drift = ", ".join(f"{k} {_ms(a0)} -> {_ms(a1)}" for k, (a0, a1) in load["p50_first_vs_last_fifth_ms"].items())
        lines += [
            "", "`Submission` is one owner's whole exchange (challenge, signing, stream, receipt checks); `Submit` the "
            "stream RPC alone.", "",
            f"p50 in the first vs the last fifth of the run (ms): {drift}.", "",
            "Slowest calls (start after the run began, latency): " + ", ".join(
                f"{c['kind']} at {c['start_s']} s {c['latency_s']} s" for c in load["slowest_calls"][:6]) + ".", "",
            f"Server process: RSS {srv.get('rss_first_mib')} -> peak {srv.get('rss_peak_mib')} -> "
            f"{srv.get('rss_last_mib')} MiB, threads peak {srv.get('threads_peak')}, CPU {srv.get('cpu_cores')} "
            f"cores on average; client process CPU {load['client_cpu_s']} s. Load average before/after: "
            f"{', '.join(f'{x:.2f}' for x in load['loadavg_before'])} / "
            f"{', '.join(f'{x:.2f}' for x in load['loadavg_after'])}. Client errors: {load['errors'] or 'none'}.", "",
        ]
    over = result.get("overload")
    if over:
        o, b = over["occupied"], over["burst"]
        lines += [
            "## Overload", "",
            f"`pawprint verifier serve` with {over['max_workers']} workers and max_concurrent_rpcs "
            f"{over['max_concurrent_rpcs']}.", "",
            f"**Occupied:** {o['stalled_streams']} stalled Submit streams hold every slot (saturation seen: "
            f"{o['saturated']}); then {o['flood_calls']} calls (GetChallenge and LatestCheckpoint) from "
            f"{o['flood_threads']} threads in {o['flood_s']} s: {o['codes']}. Refused in p50 {o['refused_p50_ms']} ms, "
            f"p95 {o['refused_p95_ms']} ms, p99 {o['refused_p99_ms']} ms, max {o['refused_max_ms']} ms. Server RSS "
            f"right before the flood {o['rss_before_flood_mib']} MiB, peak during it "
            f"{o['server_during_flood'].get('rss_peak_mib')} MiB, right after {o['rss_after_flood_mib']} MiB. "
            f"Stalled streams still open after the flood: {o['stalled_still_open_after_flood']}; cancelled by "
            f"their clients: {o['stalled_end_codes']}. Submissions right after: {o['submissions_after_release']}.",
            "",
            f"**Burst:** {b['clients']} owners in a closed loop (5-50 ms back-off when refused) and {b['readers']} "
            f"readers for {b['duration_s']} s; {b['submissions_per_s']} submissions/s accepted. Server RSS "
            f"{b['server_process'].get('rss_first_mib')} -> peak {b['server_process'].get('rss_peak_mib')} -> "
            f"{b['server_process'].get('rss_last_mib')} MiB, threads peak {b['server_process'].get('threads_peak')}.",
            "", "| RPC | calls | OK | RESOURCE_EXHAUSTED | OK p50 ms | OK p95 ms | refused p50 ms | refused p95 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for kind, s in b["rpcs"].items():
            lines.append(f"| {kind} | {s['count']} | {s['ok']} | {s['codes'].get('RESOURCE_EXHAUSTED', 0)} | "
                         f"{_ms(s['p50_ms'])} | {_ms(s['p95_ms'])} | {_ms(s['refused_p50_ms'])} | "
                         f"{_ms(s['refused_p95_ms'])} |")
        a = over["audit"]
        lines += ["", f"Audit of the overload run: {a['receipts_received']} receipts received, "
                  f"{a['stored_submissions']} stored, lost {a['missing']}, duplicated {a['duplicated_stored']}, "
                  f"stored without a reply {a['stored_not_received']}: "
                  f"**{_verdict(a)}**.", ""]
    scaling = result.get("scaling")
    if scaling:
        one = scaling[0]
        lines += [
            "## Several verifier processes on one data directory", "",
            "The load phase again, once per count of `pawprint verifier serve` processes sharing one data "
            "directory, in this run; client `i` uses process `i mod N`, and with several, half the owners (`i div N` "
            "odd) send their streams to the next process, not the one that handed out their challenges.", "",
            "| processes | submissions/s | vs first | Submission p50 / p95 ms | server CPU (cores) | "
            "server RSS peak, sum (MiB) | receipts received / stored | audit |",
            "|---:|---:|---:|---|---:|---:|---|---|",
        ]
        for r in scaling:
            sub = r["rpcs"].get("Submission", {})
            lines.append(
                f"| {r['servers']} | {r['submissions_per_s']} | "
                f"{r['submissions_per_s'] / max(one['submissions_per_s'], 1e-9):.2f}x | "
                f"{_ms(sub.get('p50_ms'))} / {_ms(sub.get('p95_ms'))} | {r['server_cpu_cores']} | "
                f"{r['server_rss_peak_mib_sum']} | {r['audit']['receipts_received']} / "
                f"{r['audit']['stored_submissions']} | **{_verdict(r['audit'])}** |")
        lines.append("")
    st = result.get("stall")
    if st:
        lines += [
            "## Stalled and slow streams", "",
            f"`pawprint verifier serve` with {st['max_workers']} workers and a {st['stream_timeout_s']} s stream "
            f"timeout, after one warm-up submission: {st['stalled_streams']} streams send their manifest and stall, "
            f"{st['silent_streams']} send nothing at all, {st['slow_streams']} trickle a 4 KiB chunk every 0.5 s; "
            f"0.3 s later {st['normal_submissions']} normal submissions start. Times are from the first stream's "
            "start.",
            "",
            f"- stalled streams ended: {_ends(st['stalled_end'])}",
            f"- silent streams ended: {_ends(st['silent_end'])}",
            f"- slow streams ended: {_ends(st['slow_end'])}",
            f"- normal submissions ended: {_ends(st['normal'])}",
            f"- server threads before/after: {st['server_threads_before']} / {st['server_threads_after']}; RSS "
            f"{st['server_rss_before_mib']} / {st['server_rss_after_mib']} MiB",
            f"- audit: {st['audit']['stored_submissions']} stored (the normal ones only): "
            f"**{_verdict(st['audit'])}**", "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0] if __doc__
                                else None)
    p.add_argument("--owners", type=int, default=16)
    p.add_argument("--readers", type=int, default=4)
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of the load phase")
    p.add_argument("--publish-interval", type=float, default=1.0, help="seconds between one publisher's publishes")
    p.add_argument("--read-interval", type=float, default=0.1, help="a reader's pause between rounds of reads")
    p.add_argument("--agent", action="store_true", help="run the whole owner agent (terms computed) per submission")
    p.add_argument("--servers", default="1", metavar="N[,N...]",
                   help="verifier processes on one data directory for the load phase; a list (1,2) runs the "
                        "phase once per count, in this run, and reports the scaling (default 1)")
    p.add_argument("--overload-clients", type=int, default=64)
    p.add_argument("--overload-duration", type=float, default=20.0)
    p.add_argument("--overload-workers", type=int, default=4)
    p.add_argument("--overload-max-rpcs", type=int, default=8)
    p.add_argument("--stall-timeout", type=float, default=5.0)
    p.add_argument("--phases", default="load,overload,stall", help="any of load, overload, stall, hostile")
    p.add_argument("--hostile-duration", type=float, default=20.0, help="seconds of honest load per hostile phase")
    p.add_argument("--hostile-owners", type=int, default=4, help="honest owners during the hostile phases")
    p.add_argument("--hostile-connections", type=int, default=1000,
                   help="the silent and trickling crowd's connections")
    p.add_argument("--hostile-phases", default=None, metavar="P[,P...]",
                   help="only these hostile phases (default: baseline, every attack, target)")
    p.add_argument("--server-repo", type=Path, default=None,
                   help="serve the hostile phases from this checkout (e.g. a git worktree of the old code)")
    p.add_argument("--hostile-before", type=Path, default=None,
                   help="a --hostile-out JSON of the server before, shown beside this run")
    p.add_argument("--hostile-out", type=Path, default=REPO / "docs" / "results" / "load_hostile.json")
    p.add_argument("--workdir", type=Path, default=OUT)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "load.json")
    args = p.parse_args(argv)
    try:
        counts = [int(x) for x in args.servers.split(",")]
    except ValueError:
        p.error(f"--servers: a comma-separated list of counts, got {args.servers!r}")
    if not counts or min(counts) < 1:
        p.error("--servers: each count must be at least 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the server processes are stopped too
    phases = set(args.phases.split(","))
    result: dict[str, Any] = {
        "command": "python -m benchmarks.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
    }
    t = time.monotonic()
    if "hostile" in phases:
        from benchmarks.hostile import raise_nofile

        raise_nofile()  # before the server starts: it inherits the limit (1,000 connections)
    ws = prepare(args.workdir, owners=max(args.owners, args.overload_clients), vendors=1 + args.publishers)
    result["prepare_s"] = round(time.monotonic() - t, 1)
    print(f"prepared in {result['prepare_s']} s: {len(ws.models)} owner models, 3 bases", file=sys.stderr)
    if "load" in phases:
        runs = []
        for n in counts:
            runs.append(run_load(ws, owners=args.owners, readers=args.readers, publishers=args.publishers,
                                 duration_s=args.duration, publish_interval_s=args.publish_interval,
                                 read_interval_s=args.read_interval, agent=args.agent, servers=n))
            print(f"load, {n} verifier process(es): {runs[-1]['submissions_per_s']} submissions/s, audit ok "
                  f"{runs[-1]['audit']['ok']}", file=sys.stderr)
        result["load"] = runs[0]
        if len(runs) > 1:
            result["scaling"] = runs
    if "overload" in phases:
        result["overload"] = run_overload(ws, max_workers=args.overload_workers,
                                          max_concurrent_rpcs=args.overload_max_rpcs, flood_calls=4000,
                                          flood_threads=16, clients=args.overload_clients,
                                          duration_s=args.overload_duration)
        print(f"overload: {result['overload']['occupied']['codes']}, audit ok {result['overload']['audit']['ok']}",
              file=sys.stderr)
    if "stall" in phases:
        result["stall"] = run_stall(ws, max_workers=4, stream_timeout_s=args.stall_timeout, stalled=3, silent=3,
                                    slow=2, normal=4)
        print(f"stall: normal {result['stall']['normal']}, stalled {result['stall']['stalled_end']}", file=sys.stderr)
    hostile_ok = True
    if "hostile" in phases:
        from benchmarks import hostile

        chosen = tuple(args.hostile_phases.split(",")) if args.hostile_phases else hostile.PHASES
        run = hostile.run_hostile(ws, duration_s=args.hostile_duration, owners=args.hostile_owners,
                                  connections=args.hostile_connections, server_repo=args.server_repo,
                                  phases=chosen)
        before = json.loads(args.hostile_before.read_text())["hostile"] if args.hostile_before else None
        doc = {"command": result["command"], "date": result["date"], "machine": result["machine"], "hostile": run,
               "before": before}
        args.hostile_out.parent.mkdir(parents=True, exist_ok=True)
        args.hostile_out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        args.hostile_out.with_suffix(".md").write_text(hostile.markdown(before, run, doc) + "\n")
        print(f"hostile: audit ok {run['audit']['ok']}; wrote {args.hostile_out}", file=sys.stderr)
        hostile_ok = bool(run["audit"]["ok"])
    result["machine"]["loadavg_end"] = os.getloadavg()
    if phases & {"load", "overload", "stall"}:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result) + "\n")
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    ok = all(result[k]["audit"]["ok"] for k in ("load", "overload", "stall") if k in result) and all(
        r["audit"]["ok"] for r in result.get("scaling", []))
    return 0 if ok and hostile_ok else 1


if __name__ == "__main__":
    sys.exit(main())
