"""A bounded load run as tests (issue #9, item 1; the full run is ``python -m benchmarks.load``).

An in-process verifier on 127.0.0.1 (plaintext loopback) with a registry holding one base. Concurrent owners,
readers and a publisher: no receipt lost, duplicated or mismatched, and the data directory audits against what
the clients saw. Excess concurrency, made deterministic by stalled streams occupying a tiny
``max_concurrent_rpcs``, is refused with RESOURCE_EXHAUSTED at once rather than queued. Stalled, silent and slow
streams, more of them than there are workers, are cut off at the stream timeout and free their workers for the
submissions queued behind them. Time enters only as generous bounds.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from benchmarks.load import (
    VERIFIER,
    Ledger,
    OwnerModel,
    ReaderState,
    Recorder,
    Stall,
    audit_run,
    open_stalled,
    owner_key,
    owner_model,
    publish_once,
    read_once,
    submit_once,
    trust_store,
    vendor_key,
    wait_saturated,
)
from owner._client import SubmissionError
from protocol import Bundle, Role
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import RemoteRegistry
from tests.verifier.fixtures import Keys, Models
from verifier import Registry, ServerConfig, VerifierService, create_server

pytest_plugins = ["tests.verifier.fixtures"]

OWNERS = 8
CUT_OFF = {"CANCELLED", "DEADLINE_EXCEEDED"}  # how a stream cut off at the server's deadline ends for its client


@dataclass
class Server:
    server: grpc.Server
    registry: Registry
    target: str
    initial_note: str

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture(scope="module")
def owner_models(models: Models, base_bundle: Bundle) -> list[OwnerModel]:
    probes = [g.probe_set for g in base_bundle.open().groups]
    return [owner_model(models.derived, "derived", "llama-base", probes),
            owner_model(models.independent, "independent", None, probes)]


@pytest.fixture
def start(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> Iterator[object]:
    started: list[Server] = []

    def run(**config: object) -> Server:
        trust = trust_store(OWNERS, 2)
        trust.add(keys.vendor.public_key, Role.VENDOR, name="fixture vendor")
        registry = Registry(tmp_path / f"data-{len(started)}")
        registry.add_base("llama-base", base_bundle, trust)
        service = VerifierService(VERIFIER, trust, registry,
                                  ServerConfig(insecure_loopback=True, **config))  # type: ignore[arg-type]
        server, port = create_server(service)
        s = Server(server, registry, f"127.0.0.1:{port}", registry.latest_checkpoint())
        started.append(s)
        return s

    yield run
    for s in started:
        s.stop()
        s.registry.close()


def _channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target)


def test_concurrent_owners_readers_and_a_publisher_lose_nothing(start: object, owner_models: list[OwnerModel]) -> None:
    srv = start()  # type: ignore[operator]
    log_pub = srv.registry.log_public_key
    rec, ledger, seen = Recorder(), Ledger(), {}  # type: ignore[var-annotated]
    failures: list[BaseException] = []
    owners_done = threading.Event()

    def guarded(fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except BaseException as e:
            failures.append(e)

    def owner(i: int) -> None:
        with _channel(srv.target) as channel:
            for _ in range(3):
                submit_once(channel, owner_key(i), owner_models[i % 2], VERIFIER.public_key, rec, ledger, seen,
                            timeout_s=60)

    def reader(i: int) -> None:
        remote = RemoteRegistry(_channel(srv.target), timeout_s=60)
        state = ReaderState(rng=random.Random(i))
        try:
            while not owners_done.is_set():
                read_once(remote, log_pub, state, rec, ledger)
                owners_done.wait(0.1)
        finally:
            remote.close()

    def publisher() -> None:
        remote = RemoteRegistry(_channel(srv.target), timeout_s=60)
        try:
            for n in range(3):
                publish_once(remote, vendor_key(1), 500 + n, f"load-test-{n}", log_pub, rec, ledger)
        finally:
            remote.close()

    with _channel(srv.target) as channel:  # one first: the base's picture is then computed once, not by every owner
        submit_once(channel, owner_key(0), owner_models[0], VERIFIER.public_key, rec, ledger, seen, timeout_s=60)
    owner_threads = [threading.Thread(target=guarded, args=(owner, i)) for i in range(OWNERS)]
    others = [threading.Thread(target=guarded, args=(reader, i)) for i in range(2)]
    others.append(threading.Thread(target=guarded, args=(publisher,)))
    for t in owner_threads + others:
        t.start()
    for t in owner_threads:
        t.join(120)
    owners_done.set()
    for t in others:
        t.join(60)
    srv.stop()

    assert not failures, failures
    assert not ledger.violations, ledger.violations
    total = OWNERS * 3 + 1
    assert len(ledger.receipts) == total
    assert len({g.receipt.nonce for g in ledger.receipts}) == total
    derived = [g for g in ledger.receipts if g.model == "derived"]
    assert derived and all(g.receipt.verdict == "derived" and g.receipt.matches[0].name == "llama-base"
                           for g in derived)
    kinds = {c.kind for c in rec.calls if c.code == "OK"}
    assert {"LatestCheckpoint", "List", "Get", "InclusionProof", "Publish", "Submit", "GetChallenge"} <= kinds
    assert {c.code for c in rec.calls} == {"OK"}

    audit = audit_run(srv.registry, ledger, srv.initial_note, log_pub)
    assert audit["ok"], audit
    assert audit["stored_submissions"] == total and audit["missing"] == 0
    assert audit["duplicated_stored"] == 0 and audit["stored_not_received"] == 0
    assert audit["log_size"] == audit["log_size_initial"] + 3 and audit["log_audit_ok"]
    # one base: one matched entry per receipt that states scores (an insufficient-evidence receipt states none)
    assert audit["receipt_entries_proven"] == sum(1 for g in ledger.receipts if g.receipt.matches) >= len(derived)
    assert srv.registry.counts()["submissions"] == total

    # The audit bites: a receipt no client reported, a receipt reported twice, a publish it never answered.
    dropped = dataclasses.replace(ledger, receipts=ledger.receipts[1:], violations=[])
    assert audit_run(srv.registry, dropped, srv.initial_note, log_pub, prove_receipts=False)["problems"]
    doubled = dataclasses.replace(ledger, receipts=[*ledger.receipts, ledger.receipts[0]], violations=[])
    assert not audit_run(srv.registry, doubled, srv.initial_note, log_pub, prove_receipts=False)["ok"]
    lost_publish = dataclasses.replace(ledger, published=ledger.published[1:], violations=[])
    assert not audit_run(srv.registry, lost_publish, srv.initial_note, log_pub, prove_receipts=False)["ok"]


def test_excess_concurrency_is_refused_with_resource_exhausted(start: object,
                                                              owner_models: list[OwnerModel]) -> None:
    srv = start(max_workers=2, max_concurrent_rpcs=3, stream_timeout_s=120.0)  # type: ignore[operator]
    rec, ledger, seen = Recorder(), Ledger(), {}  # type: ignore[var-annotated]
    with _channel(srv.target) as control:
        stalled = open_stalled(control, [Stall(owner_key(i)) for i in range(3)], owner_models[0],
                               VERIFIER.public_key)
        try:
            assert wait_saturated(control), "three stalled streams should occupy all three slots"
            before = srv.registry.counts()
            vstub, rstub = pawprint_pb2_grpc.VerifierStub(control), pawprint_pb2_grpc.RegistryStub(control)
            calls = [lambda: vstub.GetChallenge(pawprint_pb2.ChallengeRequest(owner_key_id=owner_key(0).key_id),
                                                timeout=30),
                     lambda: rstub.LatestCheckpoint(pawprint_pb2.CheckpointRequest(), timeout=30),
                     lambda: rstub.Get(pawprint_pb2.GetRequest(entry="0"), timeout=30)]
            for n in range(12):
                t = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    calls[n % 3]()
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
                assert time.monotonic() - t < 10  # refused, not queued until the deadline (30 s)
            with pytest.raises(SubmissionError) as refused:
                submit_once(control, owner_key(4), owner_models[0], VERIFIER.public_key, rec, ledger, seen,
                            timeout_s=30)
            assert refused.value.code == "RESOURCE_EXHAUSTED"
            assert not any(s.future.done() for s in stalled)  # the stalled streams are still open
        finally:
            for s in stalled:
                s.cancel()
        assert {s.result(timeout=30)[0] for s in stalled} == {"CANCELLED"}
        # Their slots come back: a normal submission goes through (retrying while the cancellations land).
        deadline = time.monotonic() + 30
        while True:
            try:
                submit_once(control, owner_key(5), owner_models[0], VERIFIER.public_key, rec, ledger, seen,
                            timeout_s=60)
                break
            except SubmissionError as e:
                assert e.code == "RESOURCE_EXHAUSTED" and time.monotonic() < deadline, e
                time.sleep(0.1)
    srv.stop()
    assert srv.registry.counts()["submissions"] == before["submissions"] + 1  # nothing from the stalled streams
    audit = audit_run(srv.registry, ledger, srv.initial_note, srv.registry.log_public_key)
    assert audit["ok"], audit


def test_stalled_streams_are_cut_off_and_free_their_workers(start: object, owner_models: list[OwnerModel]) -> None:
    timeout = 5.0
    srv = start(max_workers=2, max_concurrent_rpcs=16, stream_timeout_s=timeout)  # type: ignore[operator]
    rec, ledger, seen = Recorder(), Ledger(), {}  # type: ignore[var-annotated]
    with _channel(srv.target) as control:
        # A first submission warms the server (the base's picture), so that later ones are quick.
        submit_once(control, owner_key(0), owner_models[0], VERIFIER.public_key, rec, ledger, seen, timeout_s=60)
        # As many stalled streams as workers (one after its manifest, one that sends nothing), and a slow one.
        plan = [Stall(owner_key(1)), Stall(owner_key(2), silent=True), Stall(owner_key(3), trickle_s=0.5)]
        t0 = time.monotonic()
        streams = open_stalled(control, plan, owner_models[0], VERIFIER.public_key)
        time.sleep(0.3)
        results: list[tuple[str, float]] = []

        def normal(i: int) -> None:
            try:
                with _channel(srv.target) as ch:
                    submit_once(ch, owner_key(4 + i), owner_models[i % 2], VERIFIER.public_key, rec, ledger, seen,
                                timeout_s=120)
                results.append(("OK", time.monotonic() - t0))
            except SubmissionError as e:
                results.append((str(e.code), time.monotonic() - t0))

        threads = [threading.Thread(target=normal, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        ends = [(s.result(timeout=120)[0], (s.ended or time.monotonic()) - s.started) for s in streams]
        for s in streams:
            s.release()
    srv.stop()

    assert [code for code, _ in results] == ["OK", "OK"], results
    for code, after in ends:
        assert code in CUT_OFF, ends
        # Cut off by the server (at its stream deadline, or sooner should it gain an idle timeout), long before
        # the client's own deadline (120 s).
        assert 0.5 < after < 60, ends
    assert srv.registry.counts()["submissions"] == 3  # the warm-up and the two normal ones; none of the stalled
    audit = audit_run(srv.registry, ledger, srv.initial_note, srv.registry.log_public_key)
    assert audit["ok"], audit
