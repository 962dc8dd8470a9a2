"""Access and supply chain: client certificates mapped to roles over mutual TLS, revoked and duplicated keys,
per-key rate and byte limits, names that could mislead, the pinned data files, a full disk, and the drain.

Servers here run in this process on 127.0.0.1:0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from owner._client import request_challenge, submission_requests
from owner._fingerprint import Fingerprint
from protocol import (
    REGISTER,
    Bundle,
    EntryError,
    PrivateKey,
    RegistryStatement,
    Role,
    SignedMessage,
    TrustStore,
    check_base_name,
    name_skeleton,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import open_channel
from tests.verifier.fixtures import NOW, FakeClock, Keys
from tests.verifier.registry_kit import OTHER_VENDOR, VENDOR, register, tiny_bundle
from tests.verifier.registry_kit import trust as kit_trust
from verifier import (
    AlreadyExists,
    ClientRoles,
    ConfigError,
    LimitExceeded,
    RateLimiter,
    RateLimits,
    Registry,
    ServerConfig,
    TlsConfig,
    VerifierService,
    cert_fingerprint,
    issue_cert,
    make_ca,
    start,
)
from verifier import _pins as pins
from verifier._tls import CertKey

pytest_plugins = ["tests.verifier.fixtures"]
Code = grpc.StatusCode


def _signed_manifest(keys: Keys, key: PrivateKey, fp: Fingerprint, nonce: bytes) -> tuple[SignedMessage, Any]:
    manifest = dataclasses.replace(fp.manifest, nonce=nonce, owner_key_id=key.key_id)
    payload = manifest.encode()
    return SignedMessage(payload, key.sign("manifest", payload), key.public_key), manifest


def submit(channel: grpc.Channel, keys: Keys, fp: Fingerprint, key: PrivateKey | None = None) -> Code:
    """One whole submission over ``channel``; its status code."""
    key = key or keys.owner
    stub = pawprint_pb2_grpc.VerifierStub(channel)
    try:
        ch = request_challenge(stub, keys.verifier.public_key, key.key_id, 10)
    except Exception as e:  # the owner client wraps the status; recover it
        return getattr(Code, str(getattr(e, "code", "UNKNOWN")))  # type: ignore[no-any-return]
    signed, manifest = _signed_manifest(keys, key, fp, ch.nonce)
    try:
        stub.Submit(submission_requests(signed, manifest, fp.terms, 64 * 1024), timeout=30)
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return Code.OK


# ------------------------------------------------------------------------------------------ mutual TLS
@dataclasses.dataclass
class Pki:
    ca: CertKey
    server: CertKey
    clients: dict[str, CertKey]


@pytest.fixture(scope="module")
def pki() -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("test CA", now=now)
    server = issue_cert(ca, "verifier", now=now, hosts=("127.0.0.1",))
    clients = {n: issue_cert(ca, n, now=now, client=True) for n in ("owner", "vendor", "bound", "stranger")}
    return Pki(ca, server, clients)


def roles_file(pki: Pki, keys: Keys, tmp: Path, *, duplicate: bool = False) -> Path:
    fp = {n: cert_fingerprint(c.cert_pem) for n, c in pki.clients.items()}
    clients = [
        {"name": "owner", "cert_sha256": fp["owner"], "roles": ["owner"]},
        {"name": "vendor", "cert_sha256": fp["vendor"], "roles": ["vendor"]},
        # An owner machine that may use only the vendor's key (so not the owner key it will try).
        {"name": "bound", "cert_sha256": fp["bound"], "roles": ["owner"], "keys": [keys.vendor.key_id]},
    ]
    if duplicate:
        clients.append({"name": "owner again", "cert_sha256": fp["owner"], "roles": ["vendor"]})
    path = tmp / "roles.json"
    path.write_text(json.dumps({"format": "pawprint-client-roles/1", "clients": clients}))
    return path


@pytest.fixture()
def mtls(tmp_path: Path, keys: Keys, base_bundle: Bundle, pki: Pki) -> Iterator[tuple[Any, Registry]]:
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    config = ServerConfig(
        tls=TlsConfig(pki.server.cert_pem, pki.server.key_pem, pki.ca.cert_pem),
        client_roles=ClientRoles.load(roles_file(pki, keys, tmp_path)),
    )
    running = start(VerifierService(keys.verifier, keys.trust(), registry, config, clock=FakeClock()))
    yield running, registry
    running.server.stop(None)
    registry.close()


def channel_as(running: Any, pki: Pki, who: str) -> grpc.Channel:
    c = pki.clients[who]
    return open_channel(f"127.0.0.1:{running.port}", ca=pki.ca.cert_pem, cert=c.cert_pem, key=c.key_pem)


def test_client_certificates_are_mapped_to_roles(mtls: Any, pki: Pki, keys: Keys,
                                                 derived_fingerprint: Fingerprint) -> None:
    running, registry = mtls
    with channel_as(running, pki, "owner") as ch:
        assert submit(ch, keys, derived_fingerprint) == Code.OK
        # An owner's certificate may read the registry but not write to it.
        reg = pawprint_pb2_grpc.RegistryStub(ch)
        assert reg.LatestCheckpoint(pawprint_pb2.CheckpointRequest(), timeout=10).note
        with pytest.raises(grpc.RpcError) as e:
            reg.Revoke(pawprint_pb2.SignedPayload(payload=b"x", signature=b"y" * 64,
                                                  public_key=keys.vendor.public_key.raw), timeout=10)
        assert e.value.code() == Code.PERMISSION_DENIED
    with channel_as(running, pki, "vendor") as ch:  # a vendor's certificate may not submit
        assert submit(ch, keys, derived_fingerprint) == Code.PERMISSION_DENIED
    with channel_as(running, pki, "bound") as ch:  # right role, but bound to another signing key
        assert submit(ch, keys, derived_fingerprint) == Code.PERMISSION_DENIED
    with channel_as(running, pki, "stranger") as ch:  # signed by the CA, but not listed: not even reads
        assert submit(ch, keys, derived_fingerprint) == Code.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as e:
            pawprint_pb2_grpc.RegistryStub(ch).LatestCheckpoint(pawprint_pb2.CheckpointRequest(), timeout=10)
        assert e.value.code() == Code.PERMISSION_DENIED
    assert registry.counts()["submissions"] == 1


def test_a_vendor_certificate_may_publish_an_owner_certificate_may_not(mtls: Any, pki: Pki, keys: Keys,
                                                                       models: Any) -> None:
    from owner._fingerprint import build_bundle
    from tests.verifier.test_faults import publish_requests

    running, registry = mtls
    bundle = build_bundle(models.independent, keys.vendor, now=NOW)
    statement = RegistryStatement(REGISTER, "llama-other", keys.vendor.key_id, bundle.manifest_digest, NOW,
                                  "apache-2.0").sign(keys.vendor)
    with channel_as(running, pki, "owner") as ch:
        with pytest.raises(grpc.RpcError) as e:
            pawprint_pb2_grpc.RegistryStub(ch).Publish(iter(publish_requests(statement, bundle)), timeout=30)
        assert e.value.code() == Code.PERMISSION_DENIED
    assert registry.size() == 1
    with channel_as(running, pki, "vendor") as ch:
        reply = pawprint_pb2_grpc.RegistryStub(ch).Publish(iter(publish_requests(statement, bundle)), timeout=30)
    assert reply.entry.index == 1 and registry.size() == 2


def test_client_roles_file_refuses_a_certificate_listed_twice_and_needs_mutual_tls(
    pki: Pki, keys: Keys, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        ClientRoles.load(roles_file(pki, keys, tmp_path, duplicate=True))
    for bad in ('{"format": "pawprint-client-roles/1", "clients": [{"name": "x", "cert_sha256": "AB", '
                '"roles": ["owner"]}]}', '{"format": "x", "clients": []}', "[", '{"format": '
                '"pawprint-client-roles/1", "clients": [{"name": "x", "cert_sha256": "' + "a" * 64 +
                '", "roles": ["admin"]}]}'):
        with pytest.raises(ConfigError):
            ClientRoles.from_json(bad.encode())
    roles = ClientRoles.load(roles_file(pki, keys, tmp_path))
    with pytest.raises(ConfigError, match="mutual TLS"):
        ServerConfig(tls=TlsConfig(pki.server.cert_pem, pki.server.key_pem), client_roles=roles).check()


# -------------------------------------------------------------------------------------------- keys
def test_a_revoked_key_is_refused(tmp_path: Path, keys: Keys, base_bundle: Bundle,
                                  derived_fingerprint: Fingerprint) -> None:
    trust = keys.trust()
    trust.revoke(keys.owner.key_id)
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    running = start(VerifierService(keys.verifier, trust, registry, ServerConfig(insecure_loopback=True),
                                    clock=FakeClock()))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            assert submit(ch, keys, derived_fingerprint) == Code.UNAUTHENTICATED
        assert registry.counts()["submissions"] == 0
    finally:
        running.server.stop(None)
        registry.close()


def test_a_key_listed_twice_is_one_key_and_revoked_if_either_listing_says_so(keys: Keys) -> None:
    entry = {"key_id": keys.owner.key_id, "public_key": keys.owner.public_key.raw.hex(), "roles": ["owner"]}
    doc = {"format": json.loads(TrustStore().to_json())["format"],
           "keys": [entry, {**entry, "roles": ["vendor"]}, {**entry, "revoked": True}]}
    trust = TrustStore.from_json(json.dumps(doc).encode())
    assert len(trust) == 1
    listed = trust.get(keys.owner.key_id)
    assert listed is not None and listed.revoked and listed.roles == {Role.OWNER, Role.VENDOR}
    # Under another id: the id must be the key's own digest.
    with pytest.raises(Exception, match="does not match its public key"):
        TrustStore.from_json(json.dumps({**doc, "keys": [{**entry, "key_id": "0" * 64}]}).encode())


# ----------------------------------------------------------------------------------------- rate limits
def test_rate_limiter_counts_requests_and_bytes_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=60, burst=2, bytes_per_hour=3600), clock)
    limiter.charge("a", nbytes=1000)
    limiter.charge("a", nbytes=1000)
    with pytest.raises(LimitExceeded, match="too many requests"):
        limiter.charge("a")
    limiter.charge("b")  # another key has its own budget
    clock.advance(1.0)  # one request per second comes back
    with pytest.raises(LimitExceeded, match="too many bytes"):
        limiter.charge("a", nbytes=2000)  # 1601 bytes are back, not 2000; nothing is taken
    limiter.charge("a", nbytes=1500)
    with pytest.raises(LimitExceeded, match="per key per hour"):
        limiter.charge("c", nbytes=3601)


def test_per_key_limits_refuse_with_resource_exhausted_and_store_nothing(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint
) -> None:
    term_bytes = derived_fingerprint.manifest.term_bytes
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    # The same key listed twice in the trust store still has one budget: two submissions' worth of bytes.
    trust = keys.trust()
    trust.add(keys.owner.public_key, Role.OWNER, name="owner")
    config = ServerConfig(insecure_loopback=True,
                          rate_limits=RateLimits(requests_per_minute=1, burst=100, bytes_per_hour=2 * term_bytes))
    running = start(VerifierService(keys.verifier, trust, registry, config, clock=FakeClock()))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            assert submit(ch, keys, derived_fingerprint) == Code.OK
            assert submit(ch, keys, derived_fingerprint) == Code.OK
            assert submit(ch, keys, derived_fingerprint) == Code.RESOURCE_EXHAUSTED
        assert registry.counts()["submissions"] == 2
    finally:
        running.server.stop(None)
        registry.close()


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", [
    "../etc/passwd", "a/../b", "..", "/abs", "org/", "a/b/c", ".hidden", "nul\0byte", "bell\a", "tab\tname",
    "new\nline", "llаma-7b",  # Cyrillic а
    "ｌｌａｍａ", "llama\u200b7b", "llama 7b", "",
])
def test_names_that_could_mislead_are_refused(name: str) -> None:
    with pytest.raises(EntryError):
        check_base_name(name)


def test_good_names_and_confusable_skeletons() -> None:
    for good in ("llama-3.1-8b", "meta-llama/Llama-3.1-8B", "qwen2.5_7b+instruct", "a"):
        assert check_base_name(good) == good
    assert name_skeleton("Llama-7B") == name_skeleton("llama_7b") == name_skeleton("LIama-7b") == name_skeleton(
        "l1ama.7b")
    assert name_skeleton("modern") == name_skeleton("modem")
    assert name_skeleton("llama-7b") != name_skeleton("llama-8b")


def test_the_registry_refuses_a_name_confusable_with_a_registered_one(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "data")
    trust = kit_trust()
    try:
        first = tiny_bundle(1)
        registry.publish(register(first, "llama-7b"), first, trust)
        for i, look_alike in enumerate(("Llama-7B", "llama_7b", "LIama-7b"), 2):
            b = tiny_bundle(i, OTHER_VENDOR)
            with pytest.raises(AlreadyExists, match="confusable"):
                registry.publish(register(b, look_alike, OTHER_VENDOR), b, trust)
        same_vendor = tiny_bundle(9)
        with pytest.raises(AlreadyExists, match="confusable"):
            registry.publish(register(same_vendor, "llama.7b", VENDOR), same_vendor, trust)
        assert registry.size() == 1
    finally:
        registry.close()


# --------------------------------------------------------------------------------------- supply chain
def test_the_shipped_data_files_match_their_pins() -> None:
    digests = pins.check_data_files(["null-zoo-v1.json"])
    assert set(digests) == set(pins.PINNED)  # every pinned file ships


def test_a_modified_data_file_refuses_to_start(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    shutil.copytree(pins.DATA_DIR, data)
    null = data / "null-zoo-v1.json"
    null.write_bytes(null.read_bytes().replace(b'"mean"', b' "mean"', 1))
    with pytest.raises(ConfigError, match="does not match its pinned digest"):
        pins.check_data_files(data_dir=data)
    monkeypatch.setattr(pins, "DATA_DIR", data)
    registry = Registry(tmp_path / "registry")
    try:
        with pytest.raises(ConfigError, match=r"null-zoo-v1\.json does not match its pinned digest"):
            VerifierService(keys.verifier, keys.trust(), registry, ServerConfig(insecure_loopback=True))
        (data / "null-zoo-v1.json").unlink()
        with pytest.raises(ConfigError, match="missing"):
            VerifierService(keys.verifier, keys.trust(), registry, ServerConfig(insecure_loopback=True))
    finally:
        registry.close()


def test_an_operators_null_file_and_probe_sets_can_be_pinned(tmp_path: Path, keys: Keys,
                                                              base_bundle: Bundle) -> None:
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    own = tmp_path / "null.json"
    shutil.copy(pins.DATA_DIR / "null-zoo-v1.json", own)
    try:
        ok = pins.PINNED["null-zoo-v1.json"]
        VerifierService(keys.verifier, keys.trust(), registry,
                        ServerConfig(insecure_loopback=True, null_path=str(own), null_sha256=ok))
        with pytest.raises(ConfigError, match="does not match the pinned digest"):
            VerifierService(keys.verifier, keys.trust(), registry,
                            ServerConfig(insecure_loopback=True, null_path=str(own), null_sha256="0" * 64))
        offered = {p.id for p in registry.probe_sets()}
        VerifierService(keys.verifier, keys.trust(), registry,
                        ServerConfig(insecure_loopback=True, probe_set_pins=frozenset(offered)))
        with pytest.raises(ConfigError, match="not pinned"):
            VerifierService(keys.verifier, keys.trust(), registry,
                            ServerConfig(insecure_loopback=True, probe_set_pins=frozenset({"0" * 64})))
    finally:
        registry.close()


# ------------------------------------------------------------------------------------------ disk full
def test_a_full_disk_while_writing_a_blob_stores_nothing_and_the_retry_succeeds(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner asked the verifier to keep its terms, so the receipt needs a blob: the disk fills up while it
    is written (half of the temp file is on disk when ENOSPC comes); the real clean-up path runs."""
    import verifier._store as store_mod

    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    running = start(VerifierService(keys.verifier, keys.trust(), registry, ServerConfig(insecure_loopback=True),
                                    clock=FakeClock()))
    real_fdopen = os.fdopen
    full = {"on": True}

    class Filling:
        """The blob's temp file: half of it fits, then the device is full."""

        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Filling:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd: int, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_fdopen(fd, mode, *args, **kw)
        return Filling(f) if full["on"] and "w" in mode else f

    monkeypatch.setattr(store_mod.os, "fdopen", fdopen)
    fp = dataclasses.replace(derived_fingerprint,
                             manifest=dataclasses.replace(derived_fingerprint.manifest, keep_invariants=True))
    try:
        before = registry.counts()
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pawprint_pb2_grpc.VerifierStub(ch)
            challenge = request_challenge(stub, keys.verifier.public_key, keys.owner.key_id, 10)
            signed, manifest = _signed_manifest(keys, keys.owner, fp, challenge.nonce)
            requests = list(submission_requests(signed, manifest, fp.terms, 64 * 1024))
            with pytest.raises(grpc.RpcError) as e:
                stub.Submit(iter(requests), timeout=30)
            assert e.value.code() == Code.RESOURCE_EXHAUSTED and "storage is full" in (e.value.details() or "")
            assert registry.counts() == before
            assert not list((tmp_path / "data" / "blobs").glob("*/.*"))
            full["on"] = False  # space freed: the same stream goes through, once
            reply = stub.Submit(iter(requests), timeout=30)
        assert registry.counts() == {**before, "submissions": 1, "blobs": before["blobs"] + 1}
        assert registry.submissions()[0][2] == bytes(reply.payload)
    finally:
        running.server.stop(None)
        registry.close()


# ------------------------------------------------------------------------------------------ life cycle
def test_shutdown_cuts_off_what_does_not_finish_within_the_grace_period(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint
) -> None:
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    running = start(VerifierService(keys.verifier, keys.trust(), registry, ServerConfig(insecure_loopback=True),
                                    clock=FakeClock()))
    stalled = threading.Event()
    out: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = pawprint_pb2_grpc.VerifierStub(ch)
        challenge = request_challenge(stub, keys.verifier.public_key, keys.owner.key_id, 10)
        signed, manifest = _signed_manifest(keys, keys.owner, derived_fingerprint, challenge.nonce)
        requests = list(submission_requests(signed, manifest, derived_fingerprint.terms, 4096))

        def stream() -> Iterator[Any]:
            yield from requests[:3]
            stalled.wait(30)  # never finishes within the grace period

        def run() -> None:
            try:
                stub.Submit(stream(), timeout=30)
            except grpc.RpcError as e:
                out["code"] = e.code()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(0.5)
        assert running.service.lifecycle.in_flight == 1
        health = health_pb2_grpc.HealthStub(ch)
        began = time.monotonic()
        stopper = threading.Thread(target=lambda: out.setdefault("drained", running.shutdown(grace_s=1.0)))
        stopper.start()
        time.sleep(0.3)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        stopper.join(30)
        stalled.set()
        t.join(30)
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert out["drained"] is False and time.monotonic() - began < 10
    assert out["code"] in (Code.CANCELLED, Code.UNAVAILABLE, Code.ABORTED)
    assert registry.counts()["submissions"] == 0
    registry.close()


def test_start_up_removes_abandoned_temp_files_but_not_one_being_written(tmp_path: Path) -> None:
    import fcntl

    Registry(tmp_path / "data").close()
    blobs = tmp_path / "data" / "blobs" / "ab"
    blobs.mkdir(parents=True)
    abandoned, live = blobs / ".ab12.dead.tmp", blobs / ".ab34.live.tmp"
    abandoned.write_bytes(b"half a blob")
    live.write_bytes(b"a blob being written")
    with live.open("rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # its writer is alive and holds the lock
        Registry(tmp_path / "data").close()
        assert not abandoned.exists() and live.exists()
    Registry(tmp_path / "data").close()  # the writer is gone
    assert not live.exists()


# -------------------------------------------------------------------------------------------- streams
def test_the_stream_limits_bound_the_client_not_the_verifiers_own_work(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A silent stream is cut off at the idle limit, long before the stream deadline; a stream read to its
    end is not cancelled however long the comparison then takes (it was, and the receipt was stored for a
    client that had been told CANCELLED)."""
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    config = ServerConfig(insecure_loopback=True, stream_timeout_s=1.0, stream_idle_timeout_s=0.5)
    service = VerifierService(keys.verifier, keys.trust(), registry, config, clock=FakeClock())
    answer = service._answer

    def slow_answer(*args: Any) -> Any:
        time.sleep(1.5)  # past the stream deadline, after the stream has been read
        return answer(*args)

    monkeypatch.setattr(service, "_answer", slow_answer)
    running = start(service)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pawprint_pb2_grpc.VerifierStub(ch)
            silent = threading.Event()

            def nothing() -> Iterator[Any]:
                silent.wait(20)
                yield from ()

            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                stub.Submit(nothing(), timeout=20)
            silent.set()
            assert e.value.code() == Code.CANCELLED and time.monotonic() - began < 5
            assert submit(ch, keys, derived_fingerprint) == Code.OK
        assert registry.counts()["submissions"] == 1
    finally:
        running.server.stop(None)
        registry.close()
