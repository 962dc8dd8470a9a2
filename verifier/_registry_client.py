"""Clients of the registry's transparency log, for vendors and auditors: over gRPC, or on a local data directory.

``RemoteRegistry`` speaks the ``Registry`` gRPC service; ``LocalRegistry`` goes through ``verifier.Registry``
on a data directory (an administrator's or an auditor's copy). Both offer the same calls (``LogSource``), so
the CLI's ``registry`` commands and ``receipt verify`` work either way.

Nothing a log source returns is believed: ``check_published``, ``prove``, ``check_receipt_entries`` and
``audit`` check signatures and proofs with ``protocol`` alone, against checkpoints verified with the log's
public key (which the caller gets from somewhere it trusts, never from the log it is checking). A failed
check is a ``LogCheckFailed``; a refusal or an unreachable server a ``RegistryClientError`` carrying the
gRPC status name. This module never sends a base's terms anywhere but to the registry it publishes to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from protocol import (
    REGISTER,
    AuditReport,
    Bundle,
    Checkpoint,
    LogEntry,
    ProofError,
    ProtocolError,
    PublicKey,
    Receipt,
    RegistryStatement,
    SignedMessage,
    TrustStore,
    audit_log,
    decode_map,
    leaf_hash,
    parse_checkpoint,
    verify_inclusion,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from verifier._registry import MAX_LIST, Published, Registry
from verifier.errors import OutOfRange, RegistryCorrupt, VerifierError

DEFAULT_TIMEOUT_S = 60.0
PUBLISH_CHUNK_BYTES = 512 * 1024  # below the server's default chunk limit


class RegistryClientError(VerifierError):
    """The registry refused a request or could not be reached; ``code`` is the gRPC status name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class LogCheckFailed(VerifierError):
    """What a log served does not check out: a proof, a signature, or an entry that is not what was asked."""

    status = "DATA_LOSS"


class LogSource(Protocol):
    """What the CLI needs from a registry, wherever it is."""

    def checkpoint(self) -> str: ...

    def entries(self, start: int, end: int) -> list[bytes]: ...

    def get(self, key: str) -> tuple[int, bytes]: ...

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]: ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    def publish(self, statement: SignedMessage, bundle: Bundle) -> Published: ...

    def revoke(self, statement: SignedMessage) -> Published: ...

    def close(self) -> None: ...


class RemoteRegistry:
    """A ``LogSource`` over a gRPC channel (``owner._client.open_channel`` makes one)."""

    def __init__(self, channel: grpc.Channel, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 chunk_bytes: int = PUBLISH_CHUNK_BYTES) -> None:
        self._channel = channel
        self._stub = pawprint_pb2_grpc.RegistryStub(channel)
        self._timeout = timeout_s
        self._chunk = chunk_bytes

    def close(self) -> None:
        self._channel.close()

    def _call(self, what: str, fn: Any, request: Any) -> Any:
        try:
            return fn(request, timeout=self._timeout)
        except grpc.RpcError as e:
            code = e.code() if callable(getattr(e, "code", None)) else None
            details = e.details() if callable(getattr(e, "details", None)) else None
            name = code.name if code is not None else "UNKNOWN"
            raise RegistryClientError(f"{what}: the registry answered {name}: {details or 'no details'}", name) from e

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
            statement=_signed_pb(statement), manifest=_signed_pb(bundle.signed)))

        def requests() -> Iterator[pawprint_pb2.PublishRequest]:
            yield header
            for index, entry in enumerate(manifest.tensors):  # as a submission streams them: table order
                data = memoryview(bundle.terms[entry.name].data)
                for offset in range(0, len(data), self._chunk):
                    yield pawprint_pb2.PublishRequest(chunk=pawprint_pb2.TensorChunk(
                        tensor_index=index, offset=offset, data=bytes(data[offset : offset + self._chunk])))

        return _published(self._call("publish", self._stub.Publish, requests()))

    def revoke(self, statement: SignedMessage) -> Published:
        return _published(self._call("revoke", self._stub.Revoke, _signed_pb(statement)))


class LocalRegistry:
    """A ``LogSource`` on a data directory; ``trust`` is needed only to publish or revoke."""

    def __init__(self, registry: Registry, trust: TrustStore | None = None) -> None:
        self.registry = registry
        self._trust = trust

    def close(self) -> None:
        self.registry.close()

    def checkpoint(self) -> str:
        return self.registry.latest_checkpoint()

    def entries(self, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        while start + len(out) < end:
            page = self.registry.entries(start + len(out), end)
            if not page:
                break
            out.extend(page)
        return out

    def get(self, key: str) -> tuple[int, bytes]:
        return self.registry.find(key)

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        return self.registry.inclusion_proof(index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.registry.consistency_proof(old_size, new_size)

    def publish(self, statement: SignedMessage, bundle: Bundle) -> Published:
        return self.registry.publish(statement, bundle, self._require_trust())

    def revoke(self, statement: SignedMessage) -> Published:
        return self.registry.revoke(statement, self._require_trust())

    def _require_trust(self) -> TrustStore:
        if self._trust is None:
            raise RegistryClientError("publishing to a local registry needs its trust store (--trust)",
                                      "FAILED_PRECONDITION")
        return self._trust


def _signed_pb(signed: SignedMessage) -> pawprint_pb2.SignedPayload:
    return pawprint_pb2.SignedPayload(payload=signed.payload, signature=signed.signature,
                                      public_key=signed.public_key.raw)


def _published(reply: Any) -> Published:
    return Published(int(reply.entry.index), bytes(reply.entry.data), bool(reply.existing), str(reply.checkpoint),
                     tuple(bytes(p) for p in reply.inclusion_proof))


# ----------------------------------------------------------------------------------------------- checks
def open_note(note: str | bytes, log_key: PublicKey | None) -> Checkpoint:
    """A checkpoint note, its signature checked when ``log_key`` is given (``LogCheckFailed`` otherwise)."""
    try:
        parsed = parse_checkpoint(note)
        return parsed.checkpoint if log_key is None else parsed.verify(log_key)
    except ProtocolError as e:
        raise LogCheckFailed(f"the checkpoint does not verify: {e}") from e


def statement_of(data: bytes) -> RegistryStatement:
    """The statement in an entry, parsed but not checked (for display, and for matching what was asked)."""
    try:
        return RegistryStatement.from_map(decode_map(LogEntry.from_bytes(data).statement.payload))
    except ProtocolError as e:
        raise LogCheckFailed(f"the registry served something that is not a log entry ({e})") from e


def check_inclusion(index: int, data: bytes, proof: Sequence[bytes], checkpoint: Checkpoint) -> None:
    """``LogCheckFailed`` unless ``proof`` shows ``data`` as entry ``index`` of ``checkpoint``'s tree."""
    try:
        verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)
    except ProofError as e:
        raise LogCheckFailed(f"entry {index} is not in the log at the checkpoint of size {checkpoint.size}: "
                             f"its inclusion proof does not verify ({e})") from e


def check_published(published: Published, statement: SignedMessage, log_key: PublicKey | None) -> Checkpoint:
    """The checkpoint of a publish or revoke answer, once it (with ``log_key``) and the entry's inclusion proof
    verify, and the entry is the one asked for (the same statement, or, when it already existed, one with
    the same action, name, vendor and manifest)."""
    checkpoint = open_note(published.checkpoint, log_key)
    check_inclusion(published.index, published.entry, published.proof, checkpoint)
    entry = LogEntry.from_bytes(published.entry)
    if entry.statement.payload != statement.payload:
        got, sent = statement_of(published.entry), RegistryStatement.from_map(decode_map(statement.payload))
        if not published.existing or (got.action, got.name, got.vendor_key_id, got.manifest_sha256) != (
                sent.action, sent.name, sent.vendor_key_id, sent.manifest_sha256):
            raise LogCheckFailed(f"the registry answered with entry {published.index}, which is not the one sent")
    return checkpoint


@dataclass(frozen=True)
class Proven:
    """An entry shown to be in the log at a checkpoint."""

    index: int
    data: bytes
    proof: tuple[bytes, ...]
    checkpoint: Checkpoint


def prove(source: LogSource, key: str, checkpoint: Checkpoint) -> Proven:
    """Find the entry ``key`` (index, manifest digest or name) and check its inclusion in ``checkpoint``."""
    index, data = source.get(key)
    if index >= checkpoint.size:
        raise LogCheckFailed(f"entry {index} was appended after the checkpoint (which has {checkpoint.size} "
                             "entries): save a newer checkpoint")
    served, proof = source.inclusion_proof(index, checkpoint.size)
    if served != data:
        raise LogCheckFailed(f"the registry served two different entries {index}")
    check_inclusion(index, data, proof, checkpoint)
    return Proven(index, data, tuple(proof), checkpoint)


def check_receipt_entries(source: LogSource, receipt: Receipt) -> list[Proven]:
    """Each match's entry, checked to be in the receipt's checkpoint and to be the registration the match
    names (name, vendor, manifest digest). The checkpoint's own signature is the caller's to check."""
    if receipt.checkpoint is None:
        raise LogCheckFailed("the receipt names no log checkpoint: there is nothing to prove against")
    checkpoint = parse_checkpoint(receipt.checkpoint).checkpoint
    proven = []
    for m in receipt.matches:
        if m.log_index is None:
            raise LogCheckFailed(f"match {m.name!r} names no log entry")
        data, proof = source.inclusion_proof(m.log_index, checkpoint.size)
        check_inclusion(m.log_index, data, proof, checkpoint)
        s = statement_of(data)
        if (s.action, s.name, s.vendor_key_id, s.manifest_sha256) != (REGISTER, m.name, m.vendor_key_id, m.entry):
            raise LogCheckFailed(f"entry {m.log_index} is not the registration of {m.name!r} the receipt names")
        proven.append(Proven(m.log_index, data, tuple(proof), checkpoint))
    return proven


def audit(source: LogSource, saved_note: str | bytes, log_key: PublicKey, *,
          trust: TrustStore | None = None) -> AuditReport:
    """Fetch what ``protocol.audit_log`` needs from ``source`` and run it. A log that cannot be read because
    it is corrupt (entries missing, say) fails the audit; a registry that cannot be reached raises."""
    try:
        return _audit(source, saved_note, log_key, trust)
    except (RegistryCorrupt, RegistryClientError) as e:
        if isinstance(e, RegistryClientError) and e.code != RegistryCorrupt.status:
            raise
        return AuditReport(None, None, 0, 0, 0, 0, (f"the log cannot be read: {e}",))


def _audit(source: LogSource, saved_note: str | bytes, log_key: PublicKey,
           trust: TrustStore | None) -> AuditReport:
    current_note = source.checkpoint()
    proof: list[bytes] = []
    entries: list[bytes] = []
    # Malformed checkpoints are reported by the audit itself; here they only mean there is less to fetch.
    try:
        current = parse_checkpoint(current_note).checkpoint
    except ProtocolError:
        return audit_log(saved_note, current_note, proof, entries, log_key, trust=trust)
    entries = source.entries(0, current.size)
    try:
        saved = parse_checkpoint(saved_note).checkpoint
    except ProtocolError:
        return audit_log(saved_note, current_note, proof, entries, log_key, trust=trust)
    if saved.size <= current.size:
        try:
            proof = source.consistency_proof(saved.size, current.size)
        except (RegistryClientError, OutOfRange):
            proof = []  # the audit reports the failed proof
    return audit_log(saved_note, current_note, proof, entries, log_key, trust=trust)
