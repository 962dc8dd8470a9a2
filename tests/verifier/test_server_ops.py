"""Operating the server, with real verifiers in this process on 127.0.0.1: plaintext to loopback never goes
through a proxy (while TLS channels still honour the user's proxy), a port already in use is refused with a
clear ``ConfigError`` (no silent port sharing), and gRPC server reflection lists the services."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from protocol import PrivateKey
from protocol.wire import RemoteRegistry, open_channel
from tests.verifier.registry_kit import LOG_KEY, NOW, trust
from verifier import ConfigError, Registry, ServerConfig, TlsConfig, VerifierService, issue_cert, make_ca, start
from verifier._server import HEALTH_SERVICE_NAME, REGISTRY_SERVICE_NAME, SERVICE_NAME, RunningServer

VERIFIER = PrivateKey.from_seed(b"\x17" * 32)
PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy", "GRPC_PROXY", "HTTPS_PROXY", "HTTP_PROXY")
NO_PROXY_VARIABLES = ("no_grpc_proxy", "no_proxy", "NO_GRPC_PROXY", "NO_PROXY")


@contextlib.contextmanager
def verifier(data: Path, config: ServerConfig | None = None) -> Iterator[RunningServer]:
    registry = Registry(data, log_key=LOG_KEY, clock=lambda: NOW)
    running: RunningServer | None = None
    try:
        running = start(VerifierService(VERIFIER, trust(), registry,
                                        config or ServerConfig(insecure_loopback=True)))
        yield running
    finally:
        if running is not None:
            running.server.stop(None)
        registry.close()


def serving_status(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


# ---------------------------------------------------------------------------------------------- proxies
class FakeProxy:
    """A TCP listener on 127.0.0.1 that records every connection and the first bytes sent, then hangs up."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture()
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProxy]:
    """Every proxy variable grpc reads points at a fake proxy; no exemption for loopback."""
    fake = FakeProxy()
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://127.0.0.1:{fake.port}")
    for name in NO_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield fake
    fake.close()


def test_insecure_loopback_never_goes_through_a_proxy(tmp_path: Path, proxy: FakeProxy) -> None:
    with verifier(tmp_path) as running:
        target = f"127.0.0.1:{running.port}"
        with open_channel(target, insecure_loopback=True) as channel:
            assert serving_status(channel) == health_pb2.HealthCheckResponse.SERVING
            remote = RemoteRegistry(channel, timeout_s=10, target=target)
            assert remote.checkpoint()  # the registry answers too, directly
    assert proxy.received == []  # the proxy never saw a connection: the plaintext stayed on the machine


def test_tls_channels_still_honour_the_proxy(tmp_path: Path, proxy: FakeProxy) -> None:
    """The user's proxy is their network's business: TLS (end to end encrypted) goes through it."""
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("test CA", now=now)
    server = issue_cert(ca, "verifier", now=now, hosts=("127.0.0.1",))
    with verifier(tmp_path, ServerConfig(tls=TlsConfig(server.cert_pem, server.key_pem))) as running, \
            open_channel(f"127.0.0.1:{running.port}", ca=ca.cert_pem) as channel, \
            pytest.raises(grpc.RpcError):  # the fake proxy hangs up
        serving_status(channel)
    assert proxy.received and proxy.received[0].startswith(f"CONNECT 127.0.0.1:{running.port}".encode())


# ------------------------------------------------------------------------------------------------ ports
def test_a_port_in_use_is_refused_and_the_first_server_keeps_serving(tmp_path: Path) -> None:
    with verifier(tmp_path / "a") as first:
        listen = f"127.0.0.1:{first.port}"
        with pytest.raises(ConfigError) as info, \
                verifier(tmp_path / "b", ServerConfig(listen=listen, insecure_loopback=True)):
            pass
        assert str(info.value) == f"cannot listen on {listen}: the address is in use or not available"
        # Twice more: nothing of the refused servers is left holding anything.
        with pytest.raises(ConfigError), verifier(tmp_path / "b", ServerConfig(listen=listen, insecure_loopback=True)):
            pass
        with open_channel(listen, insecure_loopback=True) as channel:
            for _ in range(5):  # every connection still reaches the first server
                assert serving_status(channel) == health_pb2.HealthCheckResponse.SERVING
            assert RemoteRegistry(channel, timeout_s=10).checkpoint()


def test_a_port_in_use_is_refused_under_tls_too(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("test CA", now=now)
    server = issue_cert(ca, "verifier", now=now, hosts=("127.0.0.1",))
    tls = TlsConfig(server.cert_pem, server.key_pem)
    with verifier(tmp_path / "a", ServerConfig(tls=tls)) as first:
        listen = f"127.0.0.1:{first.port}"
        with pytest.raises(ConfigError, match="the address is in use or not available"), \
                verifier(tmp_path / "b", ServerConfig(listen=listen, tls=tls)):
            pass
    # A free port with TLS material grpc cannot use is not blamed on the address.
    with pytest.raises(ConfigError, match="TLS certificate chain and private key were refused"), \
            verifier(tmp_path / "c", ServerConfig(tls=TlsConfig(b"not a certificate", b"not a key"))):
        pass


# ------------------------------------------------------------------------------------------- reflection
def test_reflection_lists_the_services(tmp_path: Path) -> None:
    with verifier(tmp_path) as running, \
            open_channel(f"127.0.0.1:{running.port}", insecure_loopback=True) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
        listed = {s.name for s in replies[0].list_services_response.service}
        assert {SERVICE_NAME, REGISTRY_SERVICE_NAME, HEALTH_SERVICE_NAME} <= listed
        assert HEALTH_SERVICE_NAME == "grpc.health.v1.Health"
        # A reflection client (grpcurl does the same) can describe the methods from the server alone.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        assert "GetChallenge" in pool.FindServiceByName(SERVICE_NAME).methods_by_name
        assert "InclusionProof" in pool.FindServiceByName(REGISTRY_SERVICE_NAME).methods_by_name
        assert "Check" in pool.FindServiceByName(HEALTH_SERVICE_NAME).methods_by_name
