"""The verifier's parts on their own: challenge store, registry, verdict rule, bundle checks, health, stubs."""

from __future__ import annotations

import filecmp
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from owner._fingerprint import bundle_invariants
from protocol import (
    Bundle,
    ProbeSpec,
    RegistryState,
    SubmissionLimits,
    Tensor,
    merkle_root,
)
from tests.verifier.fixtures import NOW, Env, FakeClock, Keys, Models
from verifier import (
    SERVICE_NAME,
    ChallengeExpired,
    ChallengeRejected,
    ChallengeStore,
    InProgress,
    InvalidSubmission,
    LimitExceeded,
    NonceUsed,
    PermissionDenied,
    Registry,
    RegistryError,
    Unauthenticated,
    check_bundle,
)

pytest_plugins = ["tests.verifier.fixtures"]

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ challenges
def _issue(store: ChallengeStore) -> bytes:
    ch = store.issue(verifier_key_id="a" * 64, probe_sets=(), layers="last2", method="pawprint",
                     limits=SubmissionLimits(), registry=RegistryState(0, b"\0" * 32))
    return ch.nonce


def test_challenge_nonces_are_single_use_and_expire() -> None:
    clock = FakeClock()
    counter = iter(range(1, 1000))
    store = ChallengeStore(ttl_s=60, clock=clock, rng=lambda n: next(counter).to_bytes(n, "big"))
    nonce = _issue(store)
    assert nonce == (1).to_bytes(32, "big")
    assert store.peek(nonce).nonce == nonce  # peeking does not use it
    store.redeem(nonce)
    with pytest.raises(InProgress):  # a second stream while the first is being answered
        store.redeem(nonce)
    store.release(nonce)  # the first failed before its receipt was recorded: the same stream may come again
    store.redeem(nonce)
    store.settle(nonce)  # recorded: used for ever
    with pytest.raises(NonceUsed, match="already used"):
        store.redeem(nonce)
    store.release(nonce)  # a late release cannot bring a used nonce back
    with pytest.raises(NonceUsed):
        store.peek(nonce)
    with pytest.raises(ChallengeRejected, match="unknown"):
        store.peek(b"\xff" * 32)
    with pytest.raises(ChallengeRejected):
        store.peek(None)
    late = _issue(store)
    clock.advance(60)
    with pytest.raises(ChallengeExpired):
        store.redeem(late)
    clock.advance(61)
    _issue(store)  # forgets challenges expired more than a TTL ago
    with pytest.raises(ChallengeRejected, match="unknown"):
        store.peek(late)


def test_challenge_store_is_bounded_and_refuses_a_broken_random_source() -> None:
    store = ChallengeStore(max_outstanding=2)
    _issue(store), _issue(store)
    with pytest.raises(LimitExceeded):
        _issue(store)
    stuck = ChallengeStore(rng=lambda n: b"\0" * n)
    _issue(stuck)
    with pytest.raises(RuntimeError):
        _issue(stuck)


# -------------------------------------------------------------------------------------------- registry
def test_registry_keeps_bases_durably(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> None:
    trust = keys.trust()
    registry = Registry(tmp_path, clock=FakeClock())
    assert registry.state() == RegistryState(0, merkle_root([]))
    entry = registry.add_base("llama-base", base_bundle, trust)
    assert entry.vendor_key_id == keys.vendor.key_id and entry.registered_at == NOW
    assert entry.manifest_sha256 == base_bundle.manifest_digest
    with pytest.raises(RegistryError, match="already registered"):
        registry.add_base("llama-base", base_bundle, trust)
    with pytest.raises(RegistryError, match="already registered"):
        registry.add_base("other-name", base_bundle, trust)
    state = registry.state()
    registry.close()

    again = Registry(tmp_path)
    assert again.state() == state and state.size == 1
    [loaded] = again.snapshot()[1]
    [original] = bundle_invariants(base_bundle)
    assert loaded.invariants[0].probes.id == original.probes.id
    assert all((loaded.invariants[0].terms[k] == v).all() for k, v in original.terms.items())
    assert sqlite3.connect(tmp_path / "registry.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_registry_refuses_a_base_not_signed_by_a_vendor(tmp_path: Path, keys: Keys, models: Models) -> None:
    from owner._fingerprint import build_bundle

    registry = Registry(tmp_path)
    owner_bundle = build_bundle(models.base, keys.owner, now=NOW)
    with pytest.raises(PermissionDenied):
        registry.add_base("x", owner_bundle, keys.trust())
    stranger_bundle = build_bundle(models.base, keys.stranger, now=NOW)
    with pytest.raises(Unauthenticated):
        registry.add_base("x", stranger_bundle, keys.trust())
    assert registry.counts() == {"bases": 0, "submissions": 0, "blobs": 0}
    registry.close()


def test_corrupt_blob_is_detected(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> None:
    registry = Registry(tmp_path)
    entry = registry.add_base("b", base_bundle, keys.trust())
    path = registry.blobs.path(entry.terms_blob)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="corrupt"):
        Registry(tmp_path).snapshot()
    registry.close()


def test_bundle_checks(keys: Keys, base_bundle: Bundle) -> None:
    from protocol import Role

    trust = keys.trust()
    manifest = check_bundle(base_bundle, trust, (Role.VENDOR,))
    with pytest.raises(PermissionDenied):
        check_bundle(base_bundle, trust, (Role.OWNER,))
    name = manifest.tensors[0].name
    nan = bytearray(base_bundle.terms[name].data)
    nan[0:4] = b"\x00\x00\xc0\x7f"
    bad = dict(base_bundle.terms)
    bad[name] = Tensor("F32", manifest.tensors[0].shape, bytes(nan))
    with pytest.raises(InvalidSubmission):
        check_bundle(Bundle(base_bundle.signed, bad), trust, (Role.VENDOR,))


# ------------------------------------------------------------------------------------------- the server
def test_health_service_reports_serving(env: Env) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(env.channel)
    for service in ("", SERVICE_NAME):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_challenge_names_the_registry_and_its_probe_sets(env: Env, base_bundle: Bundle) -> None:
    from owner._client import request_challenge

    ch = request_challenge(env.stub, env.keys.verifier.public_key, env.keys.owner.key_id, 5)
    assert ch.registry == env.registry.state()
    assert ch.probe_sets == tuple(g.probe_set for g in base_bundle.open().groups)
    assert isinstance(ch.probe_sets[0], ProbeSpec)
    assert ch.limits.max_chunk_bytes < env.service.config.max_message_bytes
    assert ch.expires_at - ch.issued_at == env.service.config.challenge_ttl_s


def test_unexpected_failure_is_internal_without_details(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from protocol._pb import pawprint_pb2

    def broken() -> object:
        raise KeyError("secret path /etc/x")

    monkeypatch.setattr(env.service, "challenge", broken)
    with pytest.raises(grpc.RpcError) as info:
        env.stub.GetChallenge(pawprint_pb2.ChallengeRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL and "secret" not in (info.value.details() or "")


# ---------------------------------------------------------------------------------------------- stubs
def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    committed = REPO / "protocol" / "_pb"
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    stale = [n for n in names if not filecmp.cmp(tmp_path / n, committed / n, shallow=False)]
    assert not stale, f"protocol/_pb is stale ({stale}): run python scripts/gen_proto.py"


# ----------------------------------------------------------------------------------- weight commitment
def test_weight_commitment_streams_every_tensor_whatever_the_format(models: Models, tmp_path: Path) -> None:
    import hashlib

    import torch
    from safetensors.torch import load_file

    from owner import open_model
    from owner._fingerprint import commit_checkpoint
    from protocol import weight_commitment

    state = load_file(str(models.base / "model.safetensors"))
    expected = weight_commitment(
        (name, "F32", tuple(t.shape), hashlib.sha256(t.numpy().tobytes()).digest()) for name, t in state.items()
    )
    streamed = commit_checkpoint(open_model(models.base), workers=2)
    assert streamed.root == expected and streamed.tensors == len(state)
    assert streamed.total_bytes == sum(t.numel() * 4 for t in state.values())

    as_bin = tmp_path / "bin"
    as_bin.mkdir()
    for f in models.base.iterdir():
        if f.name != "model.safetensors":
            (as_bin / f.name).write_bytes(f.read_bytes())
    torch.save(state, as_bin / "pytorch_model.bin")
    assert commit_checkpoint(open_model(as_bin)).root == expected


# ------------------------------------------------------------------------------------------- receiving
def test_large_tensors_are_spooled_to_unlinked_files_and_checked_the_same(tmp_path: Path) -> None:
    from protocol import Manifest as _Manifest
    from tests.verifier.registry_kit import tiny_bundle
    from verifier._checks import TensorReceiver

    bundle = tiny_bundle(3)
    manifest: _Manifest = bundle.open()
    limits = SubmissionLimits()
    spool = tmp_path / "spool"
    receiver = TensorReceiver(manifest, limits, spool_dir=spool, spool_over=8)  # every 16-byte term spools
    for i, t in enumerate(manifest.tensors):
        data = bundle.terms[t.name].data
        receiver.add(i, 0, data[:5])
        receiver.add(i, 5, data[5:])
    terms = receiver.finish()
    assert receiver.spooled == sum(len(bundle.terms[t.name].data) for t in manifest.tensors)
    assert all(isinstance(terms[t.name].data, memoryview) for t in manifest.tensors)
    assert terms == dict(bundle.terms)  # the same bytes, mapped read-only from the spool
    assert list(spool.iterdir()) == []  # the files were unlinked from the start: nothing outlives the process
    with pytest.raises(TypeError):
        terms[manifest.tensors[0].name].data[0] = 1  # type: ignore[index]

    # A spooled tensor that does not match its digest is refused like any other.
    bad = TensorReceiver(manifest, limits, spool_dir=spool, spool_over=8)
    first = bytearray(bundle.terms[manifest.tensors[0].name].data)
    first[0] ^= 1
    with pytest.raises(InvalidSubmission, match="SHA-256"):
        bad.add(0, 0, bytes(first))
    truncated = TensorReceiver(manifest, limits, spool_dir=spool, spool_over=8)
    truncated.add(0, 0, bundle.terms[manifest.tensors[0].name].data[:4])
    with pytest.raises(InvalidSubmission, match="truncated"):
        truncated.finish()


def test_one_client_cannot_use_up_the_challenges_of_everyone() -> None:
    clock = FakeClock()
    store = ChallengeStore(ttl_s=60, clock=clock, max_per_client=2)

    def issue(client: str) -> bytes:
        return store.issue(verifier_key_id="a" * 64, probe_sets=(), layers="last2", method="pawprint",
                           limits=SubmissionLimits(), registry=RegistryState(0, b"\0" * 32), client=client).nonce

    first = issue("greedy")
    issue("greedy")
    with pytest.raises(LimitExceeded, match="unanswered challenges"):
        issue("greedy")
    issue("someone else")  # others are not affected
    store.redeem(first)
    store.settle(first)  # an answered challenge no longer counts
    issue("greedy")
    clock.advance(61)  # expired ones neither
    issue("greedy")
    issue("greedy")
