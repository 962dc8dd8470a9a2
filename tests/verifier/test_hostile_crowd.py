"""A hostile crowd against a real server on 127.0.0.1 (issue 19): silent streams, unknown certificates,
challenge floods and forged, expired or replayed stateless challenges. Each test states the attack, runs it
against a verifier with few worker threads, and checks that honest callers are still served and that
nothing was stored for the attacker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import verifier._server
from owner._client import request_challenge, submission_requests
from owner._fingerprint import Fingerprint
from protocol import Bundle, Challenge, PrivateKey, RegistryState, Role, SignedMessage, SubmissionLimits, TrustStore
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import open_channel
from tests.verifier.fixtures import FakeClock, Keys
from verifier import ClientRoles, Registry, ServerConfig, TlsConfig, VerifierService, issue_cert, make_ca, start
from verifier._access import cert_fingerprint
from verifier._challenges import MAC_KEY_FILE, ChallengeMac, ChallengeStore
from verifier._lifecycle import HeapTrimmer, limit_malloc_arenas
from verifier._server import FairPool, RunningServer
from verifier.errors import ChallengeExpired, ChallengeRejected, ConfigError, InProgress, NonceUsed

pytest_plugins = ["tests.verifier.fixtures"]

Code = grpc.StatusCode
SECOND_OWNER = PrivateKey.from_seed(b"\x21" * 32)


@dataclasses.dataclass
class Server:
    running: RunningServer
    registry: Registry
    clock: FakeClock
    channel: grpc.Channel
    stub: pawprint_pb2_grpc.VerifierStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def stop(self) -> None:
        self.channel.close()
        self.running.server.stop(None).wait(10)
        self.registry.close()


def trust(keys: Keys) -> TrustStore:
    store = keys.trust()
    store.add(SECOND_OWNER.public_key, Role.OWNER, name="second owner")
    return store


@pytest.fixture()
def serving(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> Iterator[Any]:
    """``serving(**config)``: a plaintext loopback verifier holding the base, with few worker threads."""
    started: list[Server] = []

    def make(max_connections: int = 2048, **overrides: Any) -> Server:
        clock = FakeClock()
        registry = Registry(tmp_path / f"data{len(started)}", clock=clock)
        registry.add_base("llama-base", base_bundle, trust(keys))
        config = ServerConfig(insecure_loopback=True, **{"max_workers": 2, **overrides})
        running = start(VerifierService(keys.verifier, trust(keys), registry, config, clock=clock),
                        max_connections=max_connections)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        server = Server(running, registry, clock, channel, pawprint_pb2_grpc.VerifierStub(channel))
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


def challenge(stub: pawprint_pb2_grpc.VerifierStub, keys: Keys, key: PrivateKey | None = None) -> Challenge:
    return request_challenge(stub, keys.verifier.public_key, (key or keys.owner).key_id, 10)


def requests_for(fp: Fingerprint, key: PrivateKey, nonce: bytes, created_at: int | None = None) -> list[Any]:
    manifest = dataclasses.replace(fp.manifest, nonce=nonce, owner_key_id=key.key_id,
                                   created_at=created_at or fp.manifest.created_at)
    payload = manifest.encode()
    signed = SignedMessage(payload, key.sign("manifest", payload), key.public_key)
    return list(submission_requests(signed, manifest, dict(fp.terms), 16 * 1024))


def submit(stub: pawprint_pb2_grpc.VerifierStub, keys: Keys, fp: Fingerprint, key: PrivateKey | None = None,
           timeout: float = 60) -> Code:
    key = key or keys.owner
    try:
        stub.Submit(iter(requests_for(fp, key, challenge(stub, keys, key).nonce)), timeout=timeout)
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return Code.OK


class Silent:
    """``n`` Submit streams on ``channel`` that send nothing (or only ``first``) until released."""

    def __init__(self, channel: grpc.Channel, n: int, first: list[Any] | None = None) -> None:
        self._release = threading.Event()
        stub = pawprint_pb2_grpc.VerifierStub(channel)

        def nothing(sent: list[Any]) -> Iterator[Any]:
            yield from sent
            self._release.wait(120)

        self.calls = [stub.Submit.future(nothing(first or []), timeout=120) for _ in range(n)]

    def codes(self) -> list[Code]:
        self._release.set()
        out = []
        for c in self.calls:
            try:
                c.result(timeout=60)
                out.append(Code.OK)
            except grpc.RpcError as e:
                out.append(e.code())
        return out

    def close(self) -> None:
        self._release.set()
        for c in self.calls:
            c.cancel()


def test_a_crowd_of_silent_streams_blocks_neither_challenges_nor_health_nor_submissions(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint) -> None:
    """64 silent Submit streams against 2 worker threads: each used to hold a thread (issue 19: 16 silent
    streams held all 16 workers; GetChallenge timed out at 30 s). Now they hold none."""
    server = serving(max_workers=2, first_message_timeout_s=60.0, stream_idle_timeout_s=60.0)
    attacker = grpc.insecure_channel(server.target)
    crowd = Silent(attacker, 64)
    try:
        time.sleep(1.0)  # let every stream open
        assert not any(c.done() for c in crowd.calls)
        health = health_pb2_grpc.HealthStub(server.channel)
        for _ in range(5):
            t = time.monotonic()
            challenge(server.stub, keys)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - t < 2.0
        assert submit(server.stub, keys, derived_fingerprint) == Code.OK
        assert not any(c.done() for c in crowd.calls), "the crowd is still open: it was not simply cut off"
    finally:
        crowd.close()
        attacker.close()
    assert server.registry.counts()["submissions"] == 1


def test_a_silent_stream_is_cut_off_at_the_first_message_deadline(serving: Any) -> None:
    server = serving(first_message_timeout_s=0.5)
    crowd = Silent(server.channel, 3)
    started = time.monotonic()
    for c in crowd.calls:
        with pytest.raises(grpc.RpcError) as info:
            c.result(timeout=30)
        assert info.value.code() == Code.CANCELLED  # type: ignore[attr-defined]
    assert time.monotonic() - started < 10
    crowd.close()


def test_the_oldest_waiting_streams_of_a_client_make_room_for_its_new_ones(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint) -> None:
    """One address may keep only so many streams waiting for a first message: beyond that its oldest is
    dropped (RESOURCE_EXHAUSTED), so a crowd from an address cannot keep out an owner behind the same one."""
    server = serving(max_waiting_per_client=4, first_message_timeout_s=60.0)
    crowd = Silent(server.channel, 4)
    time.sleep(0.5)
    assert submit(server.stub, keys, derived_fingerprint) == Code.OK  # from the same address
    codes = crowd.codes()
    assert codes.count(Code.RESOURCE_EXHAUSTED) >= 1, codes


@pytest.fixture(scope="module")
def pki() -> Any:
    now = dt_now()
    ca = make_ca("test CA", now=now)
    server = issue_cert(ca, "verifier", now=now, hosts=("127.0.0.1",))
    clients = {n: issue_cert(ca, n, now=now, client=True) for n in ("owner", "stranger")}
    return ca, server, clients


def dt_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)  # the TLS handshake checks validity against the real clock


def test_an_unknown_certificate_is_refused_at_call_start_before_it_sends_anything(
        tmp_path: Path, keys: Keys, base_bundle: Bundle, pki: Any, derived_fingerprint: Fingerprint) -> None:
    """Under mutual TLS a certificate the CA signed but the roles file does not list used to hold a worker until
    its first message. Now it is refused when the call starts, while its stream has sent nothing."""
    ca, server_cert, clients = pki
    roles = tmp_path / "roles.json"
    roles.write_text(json.dumps({"format": "pawprint-client-roles/1", "clients": [
        {"name": "owner", "cert_sha256": cert_fingerprint(clients["owner"].cert_pem), "roles": ["owner"]}]}))
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    config = ServerConfig(tls=TlsConfig(server_cert.cert_pem, server_cert.key_pem, ca.cert_pem),
                          client_roles=ClientRoles.load(roles), max_workers=2,
                          first_message_timeout_s=60.0, stream_idle_timeout_s=60.0)
    running = start(VerifierService(keys.verifier, keys.trust(), registry, config, clock=FakeClock()))

    def channel(who: str) -> grpc.Channel:
        c = clients[who]
        return open_channel(f"127.0.0.1:{running.port}", ca=ca.cert_pem, cert=c.cert_pem, key=c.key_pem)

    stranger, owner = channel("stranger"), channel("owner")
    try:
        crowd = Silent(stranger, 16)
        started = time.monotonic()
        for c in crowd.calls:
            with pytest.raises(grpc.RpcError) as info:
                c.result(timeout=30)
            assert info.value.code() == Code.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert time.monotonic() - started < 10  # long before the first-message deadline (60 s)
        crowd.close()
        with pytest.raises(grpc.RpcError) as info:
            pawprint_pb2_grpc.VerifierStub(stranger).GetChallenge(pawprint_pb2.ChallengeRequest(), timeout=10)
        assert info.value.code() == Code.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert submit(pawprint_pb2_grpc.VerifierStub(owner), keys, derived_fingerprint) == Code.OK
    finally:
        stranger.close()
        owner.close()
        running.server.stop(None).wait(10)
        registry.close()


def test_a_challenge_flood_from_one_address_locks_out_nobody_and_stores_nothing(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint) -> None:
    """Issue 19: 997 challenges from one address filled its cap (and one stored row each), locking out every
    owner behind it for 15 minutes. Stateless challenges are never stored until answered."""
    server = serving(max_workers=2)
    flood = grpc.insecure_channel(server.target)
    stub = pawprint_pb2_grpc.VerifierStub(flood)
    request = pawprint_pb2.ChallengeRequest(owner_key_id=keys.owner.key_id)
    for _ in range(12):  # 100 at a time: grpc's client itself cancels some calls of a burst of thousands
        futures = [stub.GetChallenge.future(request, timeout=60) for _ in range(100)]
        assert all(f.result().payload for f in futures)
    flood.close()
    assert server.registry.challenges(keys.verifier.key_id) == []  # nothing stored for 1,200 challenges
    assert submit(server.stub, keys, derived_fingerprint) == Code.OK  # the same address
    assert submit(server.stub, keys, derived_fingerprint, SECOND_OWNER) == Code.OK
    assert server.registry.counts()["submissions"] == 2


def test_forged_expired_and_replayed_challenges_are_refused_over_the_wire(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint) -> None:
    server = serving(challenge_ttl_s=60)
    fp = derived_fingerprint

    def send(requests: list[Any]) -> Code:
        try:
            server.stub.Submit(iter(requests), timeout=30)
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
        return Code.OK

    nonce = challenge(server.stub, keys).nonce
    for i in (0, 7, 12, 20, 31):  # time, template id, random bits, tag
        forged = bytearray(nonce)
        forged[i] ^= 1
        assert send(requests_for(fp, keys.owner, bytes(forged))) == Code.FAILED_PRECONDITION
    first = requests_for(fp, keys.owner, nonce)
    reply = server.stub.Submit(iter(first), timeout=30)
    assert server.stub.Submit(iter(first), timeout=30) == reply  # the same signed manifest: the same receipt
    replay = requests_for(fp, keys.owner, nonce, created_at=fp.manifest.created_at + 1)
    assert send(replay) == Code.FAILED_PRECONDITION  # the nonce is used
    late = challenge(server.stub, keys).nonce
    server.clock.advance(61)
    assert send(requests_for(fp, keys.owner, late)) == Code.DEADLINE_EXCEEDED
    assert server.registry.counts()["submissions"] == 1


def test_the_signing_key_cap_refuses_a_second_stream_of_one_key_but_not_another_key(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verifier._server, "BUSY_HOLD_S", 0.2)  # its own test below
    server = serving(max_streams_per_key=1, first_message_timeout_s=60.0, stream_idle_timeout_s=60.0)
    held = Silent(server.channel, 1, first=requests_for(derived_fingerprint, keys.owner,
                                                       challenge(server.stub, keys).nonce)[:1])
    try:
        deadline = time.monotonic() + 10
        while (code := submit(server.stub, keys, derived_fingerprint)) != Code.RESOURCE_EXHAUSTED:
            assert time.monotonic() < deadline, code  # the held stream may take a moment to be admitted
            time.sleep(0.1)
        assert submit(server.stub, keys, derived_fingerprint, SECOND_OWNER) == Code.OK
    finally:
        held.close()
    assert server.registry.counts()["submissions"] == 1


def test_a_refusal_by_a_stream_cap_is_held_for_the_hold_and_holds_no_thread(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trusted key trickling at its cap, retrying each refusal at once, kept grpc's queue of calls not yet
    started full (honest GetChallenge p99 1.3-2.4 s, docs/results/load_hostile.md): a refusal by a stream cap is
    now sent only after ``BUSY_HOLD_S`` (capped by the first-message deadline), and while held it holds no
    worker: with 2 workers and 6 refusals held, another key's challenge and submission go through at once."""
    hold = 20.0  # jittered to 10-30 s: far longer than a submission takes, even on a busy machine
    monkeypatch.setattr(verifier._server, "BUSY_HOLD_S", 0.05)
    server = serving(max_workers=2, max_streams_per_key=1, first_message_timeout_s=60.0)
    held = Silent(server.channel, 1, first=requests_for(derived_fingerprint, keys.owner,
                                                       challenge(server.stub, keys).nonce)[:1])
    try:
        deadline = time.monotonic() + 10
        while (code := submit(server.stub, keys, derived_fingerprint)) != Code.RESOURCE_EXHAUSTED:
            assert time.monotonic() < deadline, code  # until the held stream is admitted and counted
            time.sleep(0.1)
        monkeypatch.setattr(verifier._server, "BUSY_HOLD_S", hold)
        started = time.monotonic()
        refused = [server.stub.Submit.future(iter(requests_for(derived_fingerprint, keys.owner,
                                                               challenge(server.stub, keys).nonce)), timeout=60)
                   for _ in range(6)]
        assert submit(server.stub, keys, derived_fingerprint, SECOND_OWNER) == Code.OK  # while they are held
        assert not any(f.done() for f in refused), "refused before the hold"
        for f in refused:
            with pytest.raises(grpc.RpcError) as info:
                f.result(timeout=60)
            assert info.value.code() == Code.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            assert "streams in progress" in (info.value.details() or "")  # type: ignore[attr-defined]
        assert time.monotonic() - started >= hold * verifier._server.BUSY_HOLD_JITTER[0]
    finally:
        held.close()
    assert server.registry.counts()["submissions"] == 1


def test_the_hold_is_capped_by_the_first_message_deadline(
        serving: Any, keys: Keys, derived_fingerprint: Fingerprint) -> None:
    server = serving(max_streams_per_key=1, first_message_timeout_s=0.5, stream_idle_timeout_s=60.0)
    # The first stream sends its manifest and no more: admitted, it holds the key's only slot until idle.
    held = Silent(server.channel, 1, first=requests_for(derived_fingerprint, keys.owner,
                                                       challenge(server.stub, keys).nonce)[:1])
    try:
        deadline = time.monotonic() + 10
        while (code := submit(server.stub, keys, derived_fingerprint, timeout=30)) != Code.RESOURCE_EXHAUSTED:
            assert time.monotonic() < deadline, code  # until the held stream is admitted and counted
            time.sleep(0.1)
        started = time.monotonic()
        assert submit(server.stub, keys, derived_fingerprint, timeout=30) == Code.RESOURCE_EXHAUSTED
        took = time.monotonic() - started
        assert 0.5 <= took < verifier._server.BUSY_HOLD_S, took  # held 0.5 s, not BUSY_HOLD_S (10 s)
    finally:
        held.close()


def test_connections_beyond_the_cap_are_closed_at_accept_and_a_freed_slot_is_reused(serving: Any,
                                                                                   keys: Keys) -> None:
    """``max_connections`` bounds the connections (and so the memory) a crowd can hold: the third connection
    to a server capped at 2 is closed (UNAVAILABLE), and once one closes a new one is served."""
    server = serving(max_connections=2)  # the fixture's own channel is the first connection
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own each

    def ask(channel: grpc.Channel) -> None:
        pawprint_pb2_grpc.VerifierStub(channel).GetChallenge(
            pawprint_pb2.ChallengeRequest(owner_key_id=keys.owner.key_id), timeout=5)

    ask(server.channel)
    second = grpc.insecure_channel(server.target, options=options)
    third = grpc.insecure_channel(server.target, options=options)
    try:
        ask(second)
        with pytest.raises(grpc.RpcError) as info:
            ask(third)
        assert info.value.code() == Code.UNAVAILABLE  # type: ignore[attr-defined]
        ask(server.channel)  # the connections within the cap are still served
        second.close()
        deadline = time.monotonic() + 20
        while True:  # the server notices the closed connection (its slot comes back) within moments
            fresh = grpc.insecure_channel(server.target, options=options)
            try:
                ask(fresh)
                break
            except grpc.RpcError as e:
                assert e.code() == Code.UNAVAILABLE and time.monotonic() < deadline, e
                time.sleep(0.2)
            finally:
                fresh.close()
    finally:
        second.close()
        third.close()


def test_a_server_with_no_connection_allowed_is_a_config_error(serving: Any) -> None:
    with pytest.raises(ConfigError, match="max_connections"):
        serving(max_connections=0)


# ------------------------------------------------------------------------------------------------- the parts


def test_the_allocator_limits_keep_an_operators_setting_and_the_trimmer_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``verifier serve`` limits glibc's malloc arenas and trims the heap periodically (the bound on memory under
    reconnect storms, docs/hardening.md section 8); an operator's ``MALLOC_ARENA_MAX`` is kept."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() == "MALLOC_ARENA_MAX=4 from the environment"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    glibc = platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas().startswith("malloc arenas limited to 2" if glibc else "malloc arenas not limited")
    with pytest.raises(ValueError):
        HeapTrimmer(0)
    trimmer = HeapTrimmer(0.01)
    assert trimmer.start() == glibc
    try:
        deadline = time.monotonic() + 10
        while glibc and trimmer.trims < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        trimmer.stop()



def _issue(store: ChallengeStore, size: int = 0) -> Challenge:
    return store.issue(verifier_key_id="a" * 64, probe_sets=(), layers="last2", method="pawprint",
                       limits=SubmissionLimits(), registry=RegistryState(size, b"\0" * 32))


def test_stateless_challenges_are_honoured_by_every_store_on_the_directory_and_refused_elsewhere(
        tmp_path: Path) -> None:
    clock = [1_000.0]
    answered: set[bytes] = set()
    a = ChallengeStore(ttl_s=60, clock=lambda: clock[0], mac=ChallengeMac(tmp_path), answered=answered.__contains__)
    b = ChallengeStore(ttl_s=60, clock=lambda: clock[0], mac=ChallengeMac(tmp_path), answered=answered.__contains__)
    elsewhere = ChallengeStore(ttl_s=60, clock=lambda: clock[0], mac=ChallengeMac(tmp_path / "other"
                                                                                   if (tmp_path / "other").mkdir()
                                                                                   is None else tmp_path))
    assert (tmp_path / MAC_KEY_FILE).stat().st_mode & 0o777 == 0o600
    issued = _issue(a)
    assert len(a) == 0  # nothing held
    assert b.peek(issued.nonce) == issued  # rebuilt from the nonce alone, by another process
    with pytest.raises(ChallengeRejected, match="unknown"):
        elsewhere.peek(issued.nonce)  # another key: unknown
    assert b.redeem(issued.nonce) == issued
    with pytest.raises(InProgress):
        b.peek(issued.nonce)
    b.release(issued.nonce)
    b.redeem(issued.nonce)
    answered.add(issued.nonce)  # its receipt is recorded
    b.settle(issued.nonce)
    for store in (a, b):
        with pytest.raises(NonceUsed):
            store.peek(issued.nonce)
    later = _issue(a, size=1)  # another registry state: another template
    assert later.registry.size == 1 and b.peek(later.nonce) == later
    clock[0] += 60
    with pytest.raises(ChallengeExpired):
        b.peek(later.nonce)


def test_the_fair_pool_gives_a_newcomer_the_next_turn_not_the_last() -> None:
    from concurrent.futures import ThreadPoolExecutor

    order: list[str] = []

    async def main() -> None:
        pool = FairPool(ThreadPoolExecutor(1), 1)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run("crowd", gate.wait, 10))
        await asyncio.sleep(0.05)
        crowd = [asyncio.ensure_future(pool.run("crowd", order.append, "crowd")) for _ in range(20)]
        await asyncio.sleep(0.05)
        honest = asyncio.ensure_future(pool.run("honest", order.append, "honest"))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, honest, *crowd)

    asyncio.run(main())
    assert order.index("honest") <= 1, order  # one crowd job at most before it, not twenty


def test_held_refusals_end_spread_out_not_together() -> None:
    """Refusals of a crowd that arrived at once used to end at once, and their retries came back as one burst in
    front of honest calls (trickle p99 562-1,377 ms, docs/results/load_hostile.md): each hold is now jittered."""
    import random
    import types

    calls = verifier._server._Calls.__new__(verifier._server._Calls)
    calls.config = types.SimpleNamespace(first_message_timeout_s=60.0)  # type: ignore[assignment]
    calls.rng = random.Random(7)
    holds = [calls.hold_s() for _ in range(1000)]
    low, high = verifier._server.BUSY_HOLD_JITTER
    base = verifier._server.BUSY_HOLD_S
    assert base * low <= min(holds) and max(holds) <= base * high
    # spread over the whole range: no second of it holds more than a fifth of the refusals
    buckets = [sum(1 for h in holds if b <= h < b + 1) for b in range(int(base * low), int(base * high))]
    assert max(buckets) < 200 and min(buckets) > 50, buckets
    calls.config = types.SimpleNamespace(first_message_timeout_s=0.5)  # type: ignore[assignment]
    assert calls.hold_s() == 0.5  # still capped by the first-message deadline
