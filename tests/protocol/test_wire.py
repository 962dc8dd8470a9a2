"""``protocol.wire`` on its own (core install: grpc, no verifier): a call that reaches no server says
"nothing is listening at HOST:PORT" or "cannot reach HOST:PORT", keeping its UNAVAILABLE code, while a
server's own UNAVAILABLE keeps its words; plaintext channels are opened without a proxy."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from protocol._pb import pawprint_pb2
from protocol.wire import (
    NO_PROXY_OPTION,
    RegistryClientError,
    RemoteFailure,
    RemoteRegistry,
    failure_of,
    open_channel,
)

DRAINING = "the verifier is shutting down; retry shortly"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call_error(channel: grpc.Channel) -> grpc.RpcError:
    call = channel.unary_unary("/pawprint.v1.Registry/LatestCheckpoint",
                               request_serializer=pawprint_pb2.CheckpointRequest.SerializeToString,
                               response_deserializer=pawprint_pb2.CheckpointReply.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(pawprint_pb2.CheckpointRequest(), timeout=10)
    return info.value


class FakeError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


# --------------------------------------------------------------------------------- nothing is listening
def test_a_closed_port_is_nothing_listening() -> None:
    target = f"127.0.0.1:{closed_port()}"
    with open_channel(target, insecure_loopback=True) as channel:
        error = call_error(channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    failure = failure_of(error, "checkpoint", "the verifier", target=target)
    assert str(failure) == f"checkpoint: nothing is listening at {target} (connection refused)"
    assert (failure.code, failure.unreachable, failure.retry_after_s) == ("UNAVAILABLE", True, None)
    # Without the target, the address grpc names (the same here).
    assert str(failure_of(error, "checkpoint")) == f"checkpoint: nothing is listening at {target} (connection refused)"


def test_a_closed_ipv6_port_names_the_bracketed_address() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no ::1")
    with open_channel(f"[::1]:{port}", insecure_loopback=True) as channel:
        error = call_error(channel)
    assert str(failure_of(error, "get")) == f"get: nothing is listening at [::1]:{port} (connection refused)"


def test_the_remote_registry_names_its_target() -> None:
    target = f"127.0.0.1:{closed_port()}"
    with open_channel(target, insecure_loopback=True) as channel:
        with pytest.raises(RegistryClientError) as info:
            RemoteRegistry(channel, timeout_s=10, target=target).checkpoint()
        assert str(info.value) == f"checkpoint: nothing is listening at {target} (connection refused)"
        assert info.value.code == "UNAVAILABLE" and info.value.unreachable
        # The old signature still works (and names the address grpc names).
        with pytest.raises(RegistryClientError, match="nothing is listening at"):
            RemoteRegistry(channel, timeout_s=10).checkpoint()


@pytest.mark.parametrize(("details", "expected"), [
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.9:443: Failed to connect to remote "
     "host: No route to host", "x: cannot reach verifier.example:443: Failed to connect to remote host: No route "
                               "to host"),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Tls handshake failed "
     "(TSI_PROTOCOL_FAILURE): WRONG_VERSION_NUMBER", "x: cannot reach verifier.example:443: Tls handshake failed "
                                                     "(TSI_PROTOCOL_FAILURE): WRONG_VERSION_NUMBER"),
    ("errors resolving verifier.example:443: [field:hostname lookup error:Domain name not found]",
     "x: cannot reach verifier.example:443: the host name does not resolve (errors resolving verifier.example:443: "
     "[field:hostname lookup error:Domain name not found])"),
    ("DNS resolution failed for verifier.example:443: C-ares status is not ARES_SUCCESS",
     "x: cannot reach verifier.example:443: the host name does not resolve (DNS resolution failed for "
     "verifier.example:443: C-ares status is not ARES_SUCCESS)"),
])
def test_grpc_connect_failures_are_named(details: str, expected: str) -> None:
    failure = failure_of(FakeError(grpc.StatusCode.UNAVAILABLE, details), "x", target="verifier.example:443")
    assert (str(failure), failure.code, failure.unreachable) == (expected, "UNAVAILABLE", True)


def test_without_a_target_the_address_grpc_names_is_used() -> None:
    error = FakeError(grpc.StatusCode.UNAVAILABLE, "errors resolving verifier.example:443: [lookup failed]")
    assert str(failure_of(error, "x")).startswith("x: cannot reach verifier.example:443: ")
    error = FakeError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: "
                                                   "Connection refused")
    assert str(failure_of(error, "x", "the verifier")) == \
        "x: nothing is listening at the verifier (connection refused)"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_a_servers_own_refusal_keeps_its_words(code: grpc.StatusCode) -> None:
    failure = failure_of(FakeError(code, DRAINING), "submission", "the verifier", target="127.0.0.1:1")
    assert str(failure) == f"submission: the verifier answered {code.name}: {DRAINING}"
    assert (failure.code, failure.unreachable) == (code.name, False)
    # grpc's words under another code are the server's, not a connect failure.
    text = "failed to connect to all addresses; last error: UNKNOWN: Connection refused"
    assert not failure_of(FakeError(grpc.StatusCode.INTERNAL, text), "x").unreachable


@contextlib.contextmanager
def draining_registry() -> Iterator[str]:
    """A server whose registry answers every checkpoint with the verifier's own UNAVAILABLE."""
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING)

    handler = grpc.method_handlers_generic_handler("pawprint.v1.Registry", {
        "LatestCheckpoint": grpc.unary_unary_rpc_method_handler(
            refuse, request_deserializer=pawprint_pb2.CheckpointRequest.FromString,
            response_serializer=pawprint_pb2.CheckpointReply.SerializeToString)})
    server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_a_real_servers_unavailable_is_not_a_connect_failure() -> None:
    with draining_registry() as target, open_channel(target, insecure_loopback=True) as channel, \
            pytest.raises(RegistryClientError) as info:
        RemoteRegistry(channel, timeout_s=10, target=target).checkpoint()
    assert str(info.value) == f"checkpoint: the registry answered UNAVAILABLE: {DRAINING}"
    assert info.value.code == "UNAVAILABLE" and not info.value.unreachable
    assert isinstance(info.value, RemoteFailure)


# ---------------------------------------------------------------------------------------------- proxies
def test_the_no_proxy_option_is_grpcs() -> None:
    """The option ``open_channel`` sets on plaintext channels (``tests/verifier/test_server_ops.py`` shows a
    proxy set in the environment sees nothing)."""
    assert NO_PROXY_OPTION == ("grpc.enable_http_proxy", 0)
