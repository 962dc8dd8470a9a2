"""Retry hints travel as structured gRPC status details (``google.rpc.RetryInfo``), not as prose.

The verifier's rate limiter says how long to wait; ``protocol.wire.abort`` attaches it to the status, and the
owner's client reads it back with ``protocol.wire.failure_of`` (no message is parsed). A refusal that waiting
does not cure (a size limit) carries no hint and is not retried.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from owner._client import retry_wait
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import failure_of
from tests.verifier.fixtures import FakeClock, Keys
from verifier import RateLimits, Registry, ServerConfig, VerifierService, start

pytest_plugins = ["tests.verifier.fixtures"]


def _challenge_error(stub: pawprint_pb2_grpc.VerifierStub, keys: Keys) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.GetChallenge(pawprint_pb2.ChallengeRequest(owner_key_id=keys.owner.key_id), timeout=10)
    return info.value


def test_a_rate_limit_names_its_wait_in_retry_info_and_the_client_waits_that_long(
    tmp_path: Path, keys: Keys
) -> None:
    registry = Registry(tmp_path / "data")
    config = ServerConfig(insecure_loopback=True,
                          rate_limits=RateLimits(requests_per_minute=2, burst=1, bytes_per_hour=1 << 30))
    clock = FakeClock()
    running = start(VerifierService(keys.verifier, keys.trust(), registry, config, clock=clock))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pawprint_pb2_grpc.VerifierStub(channel)
            stub.GetChallenge(pawprint_pb2.ChallengeRequest(owner_key_id=keys.owner.key_id), timeout=10)
            error = _challenge_error(stub, keys)  # the bucket is empty: one request back in 30 s
            failure = failure_of(error, "challenge", "the verifier")
            assert failure.code == "RESOURCE_EXHAUSTED"
            assert failure.retry_after_s == pytest.approx(30.0, abs=1e-6)
            assert retry_wait(error, attempt=0, base_wait_s=1.0) == pytest.approx(30.0, abs=1e-6)
            # The doubling back-off wins when it is longer than the hint.
            assert retry_wait(error, attempt=6, base_wait_s=1.0) == pytest.approx(64.0)
            clock.advance(10.0)  # 10 s later, 20 s are left
            later = failure_of(_challenge_error(stub, keys), "challenge")
            assert later.retry_after_s == pytest.approx(20.0, abs=1e-6)
    finally:
        running.server.stop(None)
        registry.close()


def test_a_refusal_without_a_hint_is_not_retried(tmp_path: Path, keys: Keys) -> None:
    registry = Registry(tmp_path / "data")
    running = start(VerifierService(keys.verifier, keys.trust(), registry, ServerConfig(insecure_loopback=True),
                                    clock=FakeClock()))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pawprint_pb2_grpc.VerifierStub(channel)
            # A submission that does not start with its manifest: INVALID_ARGUMENT, no RetryInfo.
            with pytest.raises(grpc.RpcError) as info:
                stub.Submit(iter([pawprint_pb2.SubmitRequest(chunk=pawprint_pb2.TensorChunk())]), timeout=10)
            failure = failure_of(info.value, "submission")
            assert failure.code == "INVALID_ARGUMENT" and failure.retry_after_s is None
            assert retry_wait(info.value, attempt=0, base_wait_s=1.0) is None
    finally:
        running.server.stop(None)
        registry.close()
