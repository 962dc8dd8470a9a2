"""Faults of the real server process (``pawprint verifier serve``): kill -9 mid-submit and mid-publish, then
restart; SIGTERM with a submission in flight; a corrupt data directory at start-up.

What must hold after each: the registry and its log are consistent (the next start-up replays and checks
them, and a local audit passes), nothing half-written remains (no orphan blob, no temp file), the interrupted
client got a clear status, and a retry of the same signed stream succeeds exactly once (one receipt row; the
same receipt bytes every time).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from owner._client import request_challenge, submission_requests
from owner._fingerprint import Fingerprint, build_bundle
from protocol import REGISTER, Bundle, Manifest, RegistryStatement, SignedMessage, audit, sha256
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from tests.verifier.fixtures import NOW, Keys, Models
from verifier import LocalRegistry, Registry

pytest_plugins = ["tests.verifier.fixtures"]
REPO = Path(__file__).resolve().parents[2]
Code = grpc.StatusCode
CHUNK = 2048  # small chunks: many messages, so a stream can be cut in its middle


class Server:
    """``pawprint verifier serve`` as its own process on 127.0.0.1 (plaintext loopback)."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home, self.extra = home, extra
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.failed: tuple[int, str] | None = None

    def start(self, port: int = 0) -> Server:
        h = self.home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pawprint", "verifier", "serve", "--data", str(h / "data"), "--listen",
             f"127.0.0.1:{port}", "--key", str(h / "verifier.key"), "--trust", str(h / "trust.json"),
             "--insecure-loopback", "--log-level", "WARNING", *self.extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            _, err = self.proc.communicate(timeout=60)
            self.failed = (self.proc.returncode, err)
            raise AssertionError(f"the server did not start: {line!r} {err}")
        self.port = int(line.rpartition(":")[2])
        return self

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # A hung server: SIGABRT makes faulthandler print every thread's stack, which the failure shows.
            self.proc.send_signal(signal.SIGABRT)
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the server did not exit within 60 s of SIGTERM; its threads:\n{err}") from None
        return self.proc.returncode, err


@pytest.fixture()
def home(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> Path:
    """Keys, trust store and a data directory whose registry holds the base."""
    keys.verifier.save(tmp_path / "verifier.key")
    keys.trust().save(tmp_path / "trust.json")
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    (tmp_path / "first.note").write_text(registry.latest_checkpoint())
    registry.close()
    return tmp_path


def submission(channel: grpc.Channel, keys: Keys, fp: Fingerprint) -> tuple[SignedMessage, list[Any]]:
    """A fresh challenge from the server and the whole request stream answering it."""
    stub = pawprint_pb2_grpc.VerifierStub(channel)
    ch = request_challenge(stub, keys.verifier.public_key, keys.owner.key_id, 30)
    manifest = dataclasses.replace(fp.manifest, nonce=ch.nonce)
    payload = manifest.encode()
    signed = SignedMessage(payload, keys.owner.sign("manifest", payload), keys.owner.public_key)
    return signed, list(submission_requests(signed, manifest, fp.terms, CHUNK))


def gated(requests: Sequence[Any], pause_after: int, gate: threading.Event) -> Iterator[Any]:
    for i, r in enumerate(requests):
        if i == pause_after:
            gate.wait(60)
        yield r


def call_in_background(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["reply"] = fn(*args)
        except grpc.RpcError as e:
            out["code"], out["details"] = e.code(), e.details()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def check_consistent(home: Path) -> Registry:
    """Open the data directory as the next start-up would (replay, blob hashes, orphans collected) and audit
    the log from its first entry; no temp file may remain."""
    registry = Registry(home / "data")
    report = audit(LocalRegistry(registry), (home / "first.note").read_text(), registry.log_public_key)
    assert report.ok, report.problems
    assert not list((home / "data" / "blobs").glob("*/.*.tmp")), "a temp file was left behind"
    counts = registry.counts()
    assert counts["blobs"] == counts["bases"], counts  # no orphan blob (no submission kept terms here)
    return registry


def assert_one_receipt(home: Path, signed: SignedMessage, payload: bytes) -> None:
    """The data directory is consistent and holds exactly one receipt for ``signed``: ``payload``."""
    registry = check_consistent(home)
    try:
        digest = sha256(signed.payload)
        assert [r for m, _, r, _ in registry.submissions() if m == digest] == [payload]
    finally:
        registry.close()


# ---------------------------------------------------------------------------------------------- submit
@pytest.mark.parametrize("where", ["mid-stream", "after-stream"])
def test_kill_9_during_a_submit_then_a_retry_succeeds_exactly_once(
    home: Path, keys: Keys, derived_fingerprint: Fingerprint, where: str
) -> None:
    server = Server(home).start()
    with server.channel() as channel:
        signed, requests = submission(channel, keys, derived_fingerprint)
        assert len(requests) > 10
        gate = threading.Event()
        stub = pawprint_pb2_grpc.VerifierStub(channel)
        if where == "mid-stream":
            thread, out = call_in_background(
                lambda: stub.Submit(gated(requests, len(requests) // 2, gate), timeout=60))
            time.sleep(1.0)  # the first half is on the server, which waits for the rest
        else:
            thread, out = call_in_background(lambda: stub.Submit(iter(requests), timeout=60))
            time.sleep(0.05)  # somewhere in reading, comparing, signing or recording
        server.kill9()
        gate.set()
        thread.join(30)
    # The interrupted client got a clear status (or, after the stream, possibly its receipt already).
    assert out.get("code") in (Code.UNAVAILABLE, None), out
    first = out.get("reply")
    if where == "mid-stream":
        assert first is None

    restarted = Server(home).start()
    try:
        with restarted.channel() as channel:
            stub = pawprint_pb2_grpc.VerifierStub(channel)
            a = stub.Submit(iter(requests), timeout=60)  # the same signed stream, as it was
            b = stub.Submit(iter(requests), timeout=60)
        assert (a.payload, a.signature) == (b.payload, b.signature)
        if first is not None:
            assert (a.payload, a.signature) == (first.payload, first.signature)
    finally:
        code, err = restarted.stop()
    assert code == 0, err
    assert_one_receipt(home, signed, bytes(a.payload))


def test_a_client_that_disconnects_mid_stream_leaves_nothing_and_may_send_again(
    home: Path, keys: Keys, derived_fingerprint: Fingerprint
) -> None:
    server = Server(home).start()
    try:
        with server.channel() as channel:
            signed, requests = submission(channel, keys, derived_fingerprint)
            stub = pawprint_pb2_grpc.VerifierStub(channel)
            gate = threading.Event()
            future = stub.Submit.future(gated(requests, len(requests) // 2, gate), timeout=60)
            time.sleep(0.5)
            future.cancel()
            gate.set()
            with pytest.raises(grpc.FutureCancelledError):
                future.result()
            reply = stub.Submit(iter(requests), timeout=60)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        code, err = server.stop()
    assert code == 0, err
    assert_one_receipt(home, signed, bytes(reply.payload))


def test_the_owner_client_sends_the_same_submission_again_after_a_verifier_restart(
    home: Path, keys: Keys, models: Models
) -> None:
    """``owner submit``'s own retry: the verifier is killed after it handed out the challenge; the client's
    first stream fails UNAVAILABLE, the verifier comes back on the same port, and the same signed stream is
    answered, once."""
    from owner._client import submit

    server = Server(home).start()
    port = server.port
    killed: list[bool] = []

    def progress(stage: str, done: int, total: int) -> None:  # fingerprinting: the challenge is out
        if not killed:
            server.kill9()
            killed.append(True)

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            server.start(port)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        result = submit(models.derived, keys.owner, channel, keys.verifier.public_key, progress=progress,
                        retries=3, retry_wait_s=0.01, sleep=sleep)
    code, err = server.stop()
    assert code == 0, err
    assert killed and waits, "the verifier was not restarted during the submission"
    assert result.receipt.verdict == "derived"
    registry = check_consistent(home)
    try:
        signed_manifest_digest = result.receipt.submission
        assert [r for m, _, r, _ in registry.submissions() if m == signed_manifest_digest] == [
            result.signed_receipt.payload]
    finally:
        registry.close()


# --------------------------------------------------------------------------------------------- publish
def publish_requests(statement: SignedMessage, bundle: Bundle) -> list[Any]:
    manifest = bundle.open()
    out: list[Any] = [pawprint_pb2.PublishRequest(header=pawprint_pb2.PublishHeader(
        statement=pawprint_pb2.SignedPayload(payload=statement.payload, signature=statement.signature,
                                             public_key=statement.public_key.raw),
        manifest=pawprint_pb2.SignedPayload(payload=bundle.signed.payload, signature=bundle.signed.signature,
                                            public_key=bundle.signed.public_key.raw)))]
    for index, entry in enumerate(manifest.tensors):
        data = bundle.terms[entry.name].data
        for offset in range(0, len(data), CHUNK):
            out.append(pawprint_pb2.PublishRequest(chunk=pawprint_pb2.TensorChunk(
                tensor_index=index, offset=offset, data=bytes(data[offset : offset + CHUNK]))))
    return out


def test_kill_9_during_a_publish_then_a_retry_appends_exactly_once(home: Path, keys: Keys, models: Models) -> None:
    bundle = build_bundle(models.independent, keys.vendor, now=NOW)
    statement = RegistryStatement(REGISTER, "llama-other", keys.vendor.key_id, bundle.manifest_digest, NOW,
                                  "apache-2.0").sign(keys.vendor)
    requests = publish_requests(statement, bundle)
    assert len(requests) > 10
    server = Server(home).start()
    gate = threading.Event()
    with server.channel() as channel:
        stub = pawprint_pb2_grpc.RegistryStub(channel)
        thread, out = call_in_background(lambda: stub.Publish(gated(requests, len(requests) // 2, gate), timeout=60))
        time.sleep(1.0)
        server.kill9()
        gate.set()
        thread.join(30)
    assert out.get("code") == Code.UNAVAILABLE, out
    registry = check_consistent(home)
    assert registry.size() == 1  # the base only: the interrupted publish left no entry
    registry.close()

    restarted = Server(home).start()
    try:
        with restarted.channel() as channel:
            stub = pawprint_pb2_grpc.RegistryStub(channel)
            a = stub.Publish(iter(requests), timeout=60)
            b = stub.Publish(iter(requests), timeout=60)
        assert not a.existing and b.existing and a.entry.index == b.entry.index == 1
    finally:
        code, err = restarted.stop()
    assert code == 0, err
    registry = check_consistent(home)
    try:
        assert registry.size() == 2 and [e.name for e in registry.bases()] == ["llama-base", "llama-other"]
    finally:
        registry.close()


# -------------------------------------------------------------------------------------------- life cycle
def test_sigterm_drains_an_in_flight_submission_and_reports_not_serving(
    home: Path, keys: Keys, derived_fingerprint: Fingerprint
) -> None:
    server = Server(home, "--drain-grace", "30").start()
    with server.channel() as channel:
        signed, requests = submission(channel, keys, derived_fingerprint)
        stub = pawprint_pb2_grpc.VerifierStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        gate = threading.Event()
        thread, out = call_in_background(lambda: stub.Submit(gated(requests, len(requests) // 2, gate), timeout=60))
        time.sleep(1.0)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:  # no new work while draining
            stub.GetChallenge(pawprint_pb2.ChallengeRequest(owner_key_id=keys.owner.key_id), timeout=10)
        assert refused.value.code() == Code.UNAVAILABLE
        gate.set()  # the in-flight submission completes within the grace period
        thread.join(30)
    assert "reply" in out, out
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)  # a second SIGTERM while it closes changes nothing
    code, err = server.stop()
    assert code == 0, err
    assert_one_receipt(home, signed, bytes(out["reply"].payload))


def test_a_corrupt_data_directory_refuses_to_start_with_a_clear_message(home: Path, base_bundle: Bundle) -> None:
    blob = next(p for p in (home / "data" / "blobs").glob("*/*") if not p.name.startswith("."))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    server = Server(home)
    with pytest.raises(AssertionError, match="did not start"):
        server.start()
    assert server.failed is not None
    code, err = server.failed
    assert code == 2 and "pawprint: error:" in err and "corrupt" in err and "Traceback" not in err, err
    blob.write_bytes(bytes(data[: len(data) // 2]))
    (home / "data" / "registry.sqlite3").write_bytes(b"not a database" * 100)
    server = Server(home)
    with pytest.raises(AssertionError, match="did not start"):
        server.start()
    assert server.failed is not None
    code, err = server.failed
    assert code == 2 and "SQLite database" in err and "Traceback" not in err, err


def test_challenges_survive_a_restart(home: Path, keys: Keys, derived_fingerprint: Fingerprint) -> None:
    """A challenge handed out before kill -9 is still answered after the restart, once."""
    server = Server(home).start()
    with server.channel() as channel:
        signed, requests = submission(channel, keys, derived_fingerprint)
    server.kill9()
    restarted = Server(home).start()
    try:
        with restarted.channel() as channel:
            stub = pawprint_pb2_grpc.VerifierStub(channel)
            reply = stub.Submit(iter(requests), timeout=60)
            # Another manifest answering the same, now used, challenge is refused.
            other = dataclasses.replace(Manifest.decode(signed.payload), created_at=1)
            payload = other.encode()
            resigned = SignedMessage(payload, keys.owner.sign("manifest", payload), keys.owner.public_key)
            with pytest.raises(grpc.RpcError) as e:
                stub.Submit(iter(submission_requests(resigned, other, derived_fingerprint.terms, CHUNK)), timeout=60)
            assert e.value.code() == Code.FAILED_PRECONDITION
    finally:
        code, err = restarted.stop()
    assert code == 0, err
    assert_one_receipt(home, signed, bytes(reply.payload))


def test_two_verifier_processes_on_one_data_directory_honour_each_others_challenges(
    home: Path, keys: Keys, derived_fingerprint: Fingerprint
) -> None:
    """Several processes may serve one data directory (behind one address): a challenge handed out by one is
    answered at another, once; the same signed stream sent to the first then gets the same receipt, and
    another manifest on the used nonce is refused there too."""
    first, second = Server(home).start(), None
    try:
        second = Server(home).start()
        with first.channel() as a, second.channel() as b:
            signed, requests = submission(a, keys, derived_fingerprint)
            reply = pawprint_pb2_grpc.VerifierStub(b).Submit(iter(requests), timeout=60)
            stub_a = pawprint_pb2_grpc.VerifierStub(a)
            again = stub_a.Submit(iter(requests), timeout=60)
            assert bytes(again.payload) == bytes(reply.payload)
            other = dataclasses.replace(Manifest.decode(signed.payload), created_at=1)
            payload = other.encode()
            resigned = SignedMessage(payload, keys.owner.sign("manifest", payload), keys.owner.public_key)
            with pytest.raises(grpc.RpcError) as e:
                stub_a.Submit(iter(submission_requests(resigned, other, derived_fingerprint.terms, CHUNK)), timeout=60)
            assert e.value.code() == Code.FAILED_PRECONDITION and "used" in (e.value.details() or "")
    finally:
        results = [s.stop() for s in (first, second) if s is not None]
    assert all(code == 0 for code, _ in results), results
    assert_one_receipt(home, signed, bytes(reply.payload))
