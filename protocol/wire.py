"""gRPC at the party boundary, in one place: opening a channel, the protobuf converters of signed messages,
the mapping of failures to gRPC statuses (with retry hints as structured ``google.rpc.RetryInfo`` details),
and the registry reached over a channel (``RemoteRegistry``, a ``protocol.LogReader``).

Both parties and every auditor use it: the owner's agent to submit, vendors to publish, auditors to fetch
proofs, the verifier to answer. It imports grpc (a core dependency) but ``import protocol`` does not load it:
import ``protocol.wire`` where a channel is wanted. The generated stubs (``protocol._pb``) stay behind it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from protocol._audit import LogCheckFailed, LogUnreadable, ProofUnavailable, Published
from protocol._errors import ProtocolError
from protocol._keys import PUBLIC_KEY_SIZE, PublicKey
from protocol._messages import Bundle, MessageError, SignedMessage
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc

__all__ = [
    "DEFAULT_REGISTRY_TIMEOUT_S",
    "LOOPBACK_HOSTS",
    "MAX_LIST",
    "MAX_MESSAGE_BYTES",
    "NO_PROXY_OPTION",
    "PUBLISH_CHUNK_BYTES",
    "ChannelError",
    "RegistryClientError",
    "RemoteFailure",
    "RemoteRegistry",
    "abort",
    "failure_of",
    "open_channel",
    "published_to_pb",
    "read_pem",
    "signed_from_pb",
    "signed_to_pb",
    "split_host",
]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_LIST = 1000  # entries per List page, the server's cap
PUBLISH_CHUNK_BYTES = 512 * 1024  # below the server's default chunk limit
DEFAULT_REGISTRY_TIMEOUT_S = 60.0
NO_PROXY_OPTION: tuple[str, object] = ("grpc.enable_http_proxy", 0)  # a channel option: connect directly


class ChannelError(ProtocolError):
    """A channel cannot be opened as asked: a malformed target, TLS options that do not fit, an unreadable
    certificate file, plaintext to a host that is not loopback."""


class RemoteFailure(ProtocolError):
    """The peer answered with a gRPC error status: ``code`` its name, ``retry_after_s`` the wait it named in
    a ``google.rpc.RetryInfo`` detail (``None`` if it named none); ``unreachable`` when no server answered at
    all (nothing listening, no route, a name that does not resolve: ``code`` is then UNAVAILABLE)."""

    unreachable: bool = False  # the call reached no server (``failure_of`` sets it; ``code`` is UNAVAILABLE)

    def __init__(self, message: str, code: str = "UNKNOWN", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


class RegistryClientError(RemoteFailure):
    """A registry call failed (the registry's status and message are in the text and ``code``)."""


class _RegistryDataLoss(RegistryClientError, LogUnreadable):
    """The registry refused to serve its log because the log is corrupt (DATA_LOSS): an audit fails on it."""


class _RegistryOutOfRange(RegistryClientError, ProofUnavailable):
    """The registry has no proof for the sizes asked (OUT_OF_RANGE)."""


# ---------------------------------------------------------------------------------------------- channels
def split_host(target: str) -> str:
    """The host of ``HOST:PORT`` (brackets of an IPv6 literal removed)."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ChannelError(f"expected HOST:PORT, got {target!r:.200}")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def open_channel(
    target: str,
    *,
    ca: bytes | None = None,
    cert: bytes | None = None,
    key: bytes | None = None,
    insecure_loopback: bool = False,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to ``target`` (``HOST:PORT``): TLS, trusting ``ca`` (the system roots when ``None``), with a
    client certificate when ``cert`` and ``key`` are given; plaintext only with ``insecure_loopback`` to a
    loopback address, and then never through a proxy (``NO_PROXY_OPTION``). A TLS channel honours the proxy
    variables (``grpc_proxy``, ``https_proxy``, ``http_proxy``, ``no_grpc_proxy``, ``no_proxy``) as the
    user's network asks: what crosses the proxy is encrypted end to end."""
    host = split_host(target)
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if insecure_loopback:
        if ca is not None or cert is not None or key is not None:
            raise ChannelError("--insecure-loopback excludes TLS options")
        if host not in LOOPBACK_HOSTS:
            raise ChannelError(f"plaintext is allowed only to 127.0.0.1 or ::1, not to {host!r}")
        # Never through a proxy: with grpc_proxy, https_proxy or http_proxy set, grpc would otherwise send
        # ``CONNECT 127.0.0.1:PORT`` to the proxy, and the plaintext would leave the machine.
        options.append(NO_PROXY_OPTION)
        return grpc.insecure_channel(target, options=options)
    if (cert is None) != (key is None):
        raise ChannelError("a client certificate needs both --cert and --key")
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(target, credentials, options=options)


def read_pem(path: Path | str | None, what: str) -> bytes | None:
    """The bytes of a PEM file named on a command line (``None`` for no file)."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ChannelError(f"cannot read {what} {path}: {e.strerror or e}") from e


# -------------------------------------------------------------------------------------------- converters
def signed_to_pb(signed: SignedMessage) -> pawprint_pb2.SignedPayload:
    return pawprint_pb2.SignedPayload(payload=signed.payload, signature=signed.signature,
                                      public_key=signed.public_key.raw)


def signed_from_pb(message: pawprint_pb2.SignedPayload) -> SignedMessage:
    """A signed message as it arrived (``MessageError`` for a key of the wrong size; ``SignatureError`` for
    bytes that are no Ed25519 point). The signature itself is the receiver's to check."""
    raw = bytes(message.public_key)
    if len(raw) != PUBLIC_KEY_SIZE:
        raise MessageError(f"the signer's public key is not {PUBLIC_KEY_SIZE} raw bytes")
    return SignedMessage(bytes(message.payload), bytes(message.signature), PublicKey(raw))


def _published(reply: Any) -> Published:
    return Published(int(reply.entry.index), bytes(reply.entry.data), bool(reply.existing), str(reply.checkpoint),
                     tuple(bytes(p) for p in reply.inclusion_proof))


def published_to_pb(published: Published) -> pawprint_pb2.PublishReply:
    return pawprint_pb2.PublishReply(
        entry=pawprint_pb2.LogEntry(index=published.index, data=published.entry), existing=published.existing,
        checkpoint=published.checkpoint, inclusion_proof=list(published.proof),
    )


# ------------------------------------------------------------------------------------------------ status
def abort(context: grpc.ServicerContext, code: str, message: str, retry_after_s: float | None = None) -> NoReturn:
    """End the call with status ``code`` (a ``grpc.StatusCode`` name) and ``message``; a ``retry_after_s``
    travels as a ``google.rpc.RetryInfo`` detail that ``failure_of`` reads back (no prose to parse)."""
    status_code = getattr(grpc.StatusCode, code)
    if retry_after_s is None:
        context.abort(status_code, message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover
    wait = max(0.0, float(retry_after_s))
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(wait), nanos=min(999_999_999, round((wait % 1) * 1e9))))
    detail = status_pb2.Status().details.add()
    detail.Pack(info)
    status = status_pb2.Status(code=getattr(code_pb2, code), message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


_E = TypeVar("_E", bound=RemoteFailure)


def failure_of(e: grpc.RpcError, what: str, peer: str = "the peer",
               kind: Callable[[str, str, float | None], _E] | None = None, *,
               target: str | None = None) -> RemoteFailure:
    """A failed call as a ``RemoteFailure`` (or ``kind``): its status name, its message, and the retry delay
    of its ``RetryInfo`` detail if it carries one.

    A call that never reached a server (UNAVAILABLE with grpc's own connect failure: connection refused, no
    route, a name that does not resolve, a TLS handshake that failed) says so: "nothing is listening at
    HOST:PORT (connection refused)" or "cannot reach HOST:PORT: REASON", naming ``target`` (the ``HOST:PORT``
    the channel was opened to; without it, the address grpc names, else ``peer``). Its ``code`` stays
    UNAVAILABLE and its ``unreachable`` is true. A server's own UNAVAILABLE (a verifier draining) keeps its
    words: "``peer`` answered UNAVAILABLE: ..."."""
    code = e.code() if callable(getattr(e, "code", None)) else None
    details = e.details() if callable(getattr(e, "details", None)) else None
    name = code.name if code is not None else "UNKNOWN"
    retry = _retry_after(e)
    unreachable = _connect_failure(details) if name == "UNAVAILABLE" else None
    if unreachable is None:
        message = f"{what}: {peer} answered {name}: {details or 'no details'}"
    else:
        where, reason = unreachable
        where = target or where or peer
        message = (f"{what}: nothing is listening at {where} (connection refused)"
                   if "connection refused" in reason.lower() else f"{what}: cannot reach {where}: {reason}")
    failure = (kind or RemoteFailure)(message, name, retry)
    failure.unreachable = unreachable is not None
    return failure


# grpc's words (in the status details) for a call that found no server, as grpc 1.62 to 1.85 write them:
# "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote
# host: Connection refused", "errors resolving HOST:PORT: ...", "DNS resolution failed for HOST:PORT: ...".
_CONNECT_FAILED = re.compile(
    r"(?:failed to connect to all addresses|connections to all backends failing); last error: "
    r"(?:[A-Z_]+: )?(?:(?:ipv4|ipv6|unix|unix-abstract):(?P<address>\S+?): )?(?P<reason>.+)", re.DOTALL)
_RESOLVE_FAILED = re.compile(r"(?:errors resolving|DNS resolution failed for) (?P<address>[^\s:]*(?::\d+)?)",
                             re.IGNORECASE)


def _connect_failure(details: str | None) -> tuple[str | None, str] | None:
    """``(address, reason)`` when ``details`` are grpc's own words for a connection that could not be made
    (the address as grpc names it, if it does), else ``None`` (a server's own UNAVAILABLE)."""
    if not details:
        return None
    if (m := _CONNECT_FAILED.match(details)) is not None:
        address = urllib.parse.unquote(m["address"]) if m["address"] else None
        return address, m["reason"].strip()
    if (m := _RESOLVE_FAILED.match(details)) is not None:
        return m["address"] or None, f"the host name does not resolve ({details})"
    return None


def _retry_after(e: grpc.RpcError) -> float | None:
    try:
        status = rpc_status.from_call(e)  # an RpcError raised by a call is also its grpc.Call
    except (ValueError, AttributeError):  # a status and details that disagree, or no trailing metadata
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def _registry_error(message: str, code: str, retry_after_s: float | None) -> RegistryClientError:
    if code == "DATA_LOSS":
        return _RegistryDataLoss(message, code, retry_after_s)
    if code == "OUT_OF_RANGE":
        return _RegistryOutOfRange(message, code, retry_after_s)
    return RegistryClientError(message, code, retry_after_s)


# ---------------------------------------------------------------------------------------------- registry
class RemoteRegistry:
    """The registry over a gRPC channel (``open_channel`` makes one): a ``protocol.LogReader``, and the
    vendor's publish and revoke. What it serves is believed only once ``protocol``'s checks verify it."""

    def __init__(self, channel: grpc.Channel, *, timeout_s: float = DEFAULT_REGISTRY_TIMEOUT_S,
                 chunk_bytes: int = PUBLISH_CHUNK_BYTES, target: str | None = None) -> None:
        """``target``: the ``HOST:PORT`` the channel was opened to, named when nothing answers there."""
        self._channel = channel
        self._target = target
        self._stub = pawprint_pb2_grpc.RegistryStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
        self._timeout = timeout_s
        self._chunk = chunk_bytes

    def close(self) -> None:
        self._channel.close()

    def _call(self, what: str, fn: Any, request: Any) -> Any:
        try:
            return fn(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise failure_of(e, what, "the registry", _registry_error, target=self._target) from e

    def checkpoint(self) -> str:
        return str(self._call("checkpoint", self._stub.LatestCheckpoint, pawprint_pb2.CheckpointRequest()).note)

    def entries(self, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        while start + len(out) < end:
            at = start + len(out)
            reply = self._call("list", self._stub.List,
                               pawprint_pb2.ListRequest(start=at, limit=min(MAX_LIST, end - at)))
            if not reply.entries:
                break
            for e in reply.entries:
                if e.index != start + len(out):
                    raise LogCheckFailed(f"the registry listed entry {e.index} where {start + len(out)} was due")
                out.append(bytes(e.data))
        return out[: end - start]

    def get(self, key: str) -> tuple[int, bytes]:
        reply = self._call("get", self._stub.Get, pawprint_pb2.GetRequest(entry=key))
        return int(reply.index), bytes(reply.data)

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        reply = self._call("inclusion proof", self._stub.InclusionProof,
                           pawprint_pb2.InclusionProofRequest(index=index, tree_size=tree_size))
        return bytes(reply.entry.data), [bytes(p) for p in reply.proof]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        reply = self._call("consistency proof", self._stub.ConsistencyProof,
                           pawprint_pb2.ConsistencyProofRequest(old_size=old_size, new_size=new_size))
        return [bytes(p) for p in reply.proof]

    def publish(self, statement: SignedMessage, bundle: Bundle) -> Published:
        manifest = bundle.open()
        header = pawprint_pb2.PublishRequest(header=pawprint_pb2.PublishHeader(
            statement=signed_to_pb(statement), manifest=signed_to_pb(bundle.signed)))

        def requests() -> Iterator[pawprint_pb2.PublishRequest]:
            yield header
            for index, entry in enumerate(manifest.tensors):  # as a submission streams them: table order
                data = memoryview(bundle.terms[entry.name].data)
                for offset in range(0, len(data), self._chunk):
                    yield pawprint_pb2.PublishRequest(chunk=pawprint_pb2.TensorChunk(
                        tensor_index=index, offset=offset, data=bytes(data[offset : offset + self._chunk])))

        return _published(self._call("publish", self._stub.Publish, requests()))

    def revoke(self, statement: SignedMessage) -> Published:
        return _published(self._call("revoke", self._stub.Revoke, signed_to_pb(statement)))
