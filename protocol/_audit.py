"""The auditor's checks: what anyone can verify of a registry log, a receipt or a bundle with ``protocol`` alone.

Pure: every function takes values (and, for what must be fetched, a ``LogReader``) and returns values or raises
``LogCheckFailed``. Nothing here opens a database, a socket or a file; where the entries come from is the
caller's: a verifier's data directory (``verifier.LocalRegistry``), a registry server (``protocol.wire.RemoteLog``)
or an in-memory ``LogCopy`` (a log exported to a file, a test's simulated registry).

- ``open_note``, ``check_inclusion``, ``check_published``: a checkpoint note's signature, an entry's inclusion
  proof, and a publish/revoke answer (the entry asked for, included in a signed checkpoint);
- ``prove``, ``check_receipt_entries``: fetch inclusion proofs and check them (one entry; every match of a
  receipt against the receipt's checkpoint);
- ``audit``: fetch what ``audit_log`` needs (the current checkpoint, every entry, the consistency proof from
  a saved checkpoint) and run it; a log that cannot be read because it is corrupt fails the audit;
- ``verify_bundle``: an offline bundle's signature (kind ``bundle``) by a key trusted for one of the given
  roles, no challenge nonce, every term matching its digest and finite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol._canonical import decode_map
from protocol._checkpoint import Checkpoint, parse_checkpoint
from protocol._errors import FormatError, ProofError, ProtocolError
from protocol._json import loads_strict
from protocol._keys import PublicKey
from protocol._log import REGISTER, AuditReport, LogEntry, RegistryStatement, audit_log
from protocol._merkle import consistency_proof, inclusion_proof, leaf_hash, verify_inclusion
from protocol._messages import Bundle, Manifest, MessageError, Receipt, SignedMessage
from protocol._trust import Role, TrustStore
from protocol._witness import WitnessPolicy


class LogCheckFailed(ProtocolError):
    """What a registry served does not check: a checkpoint signature, an inclusion or consistency proof, an
    entry that is not the one asked for."""


class LogUnreadable(ProtocolError):
    """A ``LogReader`` could not read the log because the log itself is corrupt (entries missing, a blob that
    does not match): an audit reports this as a failure instead of raising."""


@dataclass(frozen=True)
class Published:
    """The answer to a publish or revoke: the entry, whether it was already there, a checkpoint that includes
    it and the entry's inclusion proof in that checkpoint."""

    index: int
    entry: bytes
    existing: bool
    checkpoint: str
    proof: tuple[bytes, ...]


class LogReader(Protocol):
    """Read access to a registry log, wherever it is kept."""

    def checkpoint(self) -> str: ...

    def entries(self, start: int, end: int) -> list[bytes]: ...

    def get(self, key: str) -> tuple[int, bytes]: ...

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]: ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...


LOG_COPY_FORMAT = "pawprint-log-copy/1"


class LogCopy:
    """A ``LogReader`` over a copy of a log held in memory: its latest checkpoint note and its entries. Proofs
    are computed from the entries; nothing is believed until the checks above verify it.

    Its file form (``to_json``/``from_json``, written by ``pawprint registry export``) is the strict JSON object
    ``{"format": "pawprint-log-copy/1", "checkpoint": <note text>, "entries": [<hex>, ...]}``: an auditor can
    take a log away and audit it with no server and no store. Reading one checks its shape only.
    """

    def __init__(self, checkpoint: str, entries: Sequence[bytes]) -> None:
        self._note = checkpoint
        self._entries = [bytes(e) for e in entries]
        self._leaves = [leaf_hash(e) for e in self._entries]

    def to_json(self) -> bytes:
        doc = {"format": LOG_COPY_FORMAT, "checkpoint": self._note, "entries": [e.hex() for e in self._entries]}
        return (json.dumps(doc, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> LogCopy:
        """A log copy file's contents; ``FormatError`` (a ``JsonError`` for bad JSON) if it is not one."""
        doc = loads_strict(data)
        if not isinstance(doc, dict) or doc.get("format") != LOG_COPY_FORMAT:
            raise FormatError(f"not a log copy (expected format {LOG_COPY_FORMAT!r})")
        if set(doc) != {"format", "checkpoint", "entries"}:
            raise FormatError("a log copy has exactly the keys format, checkpoint and entries")
        note, entries = doc["checkpoint"], doc["entries"]
        if not isinstance(note, str) or not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise FormatError("a log copy's checkpoint is a note (text) and its entries hex strings")
        try:
            data_ = [bytes.fromhex(e) for e in entries]
        except ValueError as e:
            raise FormatError(f"an entry of the log copy is not hex ({e})") from e
        return cls(note, data_)

    def checkpoint(self) -> str:
        return self._note

    def entries(self, start: int, end: int) -> list[bytes]:
        return self._entries[start:end]

    def get(self, key: str) -> tuple[int, bytes]:
        """An entry by index, manifest digest (hex) or base name (its latest registration)."""
        if key.isdigit() and int(key) < len(self._entries):
            return int(key), self._entries[int(key)]
        for index in range(len(self._entries) - 1, -1, -1):
            s = statement_of(self._entries[index])
            if s.action == REGISTER and key in (s.name, s.manifest_sha256.hex()):
                return index, self._entries[index]
        raise LogCheckFailed(f"no entry {key!r:.80} in the log")

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        if not 0 <= index < tree_size <= len(self._entries):
            raise LogCheckFailed(f"no entry {index} in a tree of size {tree_size}")
        return self._entries[index], inclusion_proof(self._leaves, index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        if not 0 <= old_size <= new_size <= len(self._entries):
            raise LogCheckFailed(f"no consistency proof from {old_size} to {new_size} entries")
        return consistency_proof(self._leaves, old_size, new_size)


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


def prove(source: LogReader, key: str, checkpoint: Checkpoint) -> Proven:
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


def check_receipt_entries(source: LogReader, receipt: Receipt) -> list[Proven]:
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


def audit(source: LogReader, saved_note: str | bytes, log_key: PublicKey, *,
          trust: TrustStore | None = None, witnesses: WitnessPolicy | None = None) -> AuditReport:
    """Fetch what ``audit_log`` needs from ``source`` and run it. A log that cannot be read because it is
    corrupt (``LogUnreadable``) fails the audit; any other failure to fetch (a registry that cannot be
    reached) raises."""
    try:
        return _audit(source, saved_note, log_key, trust, witnesses)
    except LogUnreadable as e:
        return AuditReport(None, None, 0, 0, 0, 0, (f"the log cannot be read: {e}",))


class ProofUnavailable(ProtocolError):
    """A ``LogReader`` has no consistency proof for the sizes asked (the audit reports the failed proof)."""


def _audit(source: LogReader, saved_note: str | bytes, log_key: PublicKey,
           trust: TrustStore | None, witnesses: WitnessPolicy | None) -> AuditReport:
    current_note = source.checkpoint()
    proof: list[bytes] = []
    entries: list[bytes] = []
    # Malformed checkpoints are reported by the audit itself; here they only mean there is less to fetch.
    try:
        current = parse_checkpoint(current_note).checkpoint
    except ProtocolError:
        return audit_log(saved_note, current_note, proof, entries, log_key, trust=trust, witnesses=witnesses)
    entries = source.entries(0, current.size)
    try:
        saved = parse_checkpoint(saved_note).checkpoint
    except ProtocolError:
        return audit_log(saved_note, current_note, proof, entries, log_key, trust=trust, witnesses=witnesses)
    if saved.size <= current.size:
        try:
            proof = source.consistency_proof(saved.size, current.size)
        except (ProofUnavailable, LogCheckFailed):
            proof = []  # the audit reports the failed proof
    return audit_log(saved_note, current_note, proof, entries, log_key, trust=trust, witnesses=witnesses)


# ----------------------------------------------------------------------------------------------- bundles
def check_finite(name: str, dtype: str, data: bytes | memoryview) -> None:
    """``MessageError`` unless the tensor is F32 (the protocol's term dtype) and holds no NaN or infinity.

    numpy is imported here, not at module level: ``import protocol`` stays light for what needs no arrays.
    """
    import numpy as np

    if dtype != "F32":
        raise MessageError(f"tensor {name}: dtype {dtype}, expected F32")
    if not np.isfinite(np.frombuffer(data, dtype="<f4")).all():
        raise MessageError(f"tensor {name}: contains NaN or infinity")


def verify_bundle(bundle: Bundle, trust: TrustStore, roles: Sequence[Role]) -> Manifest:
    """An offline bundle, checked: signed (kind ``bundle``) by a key the trust store holds for one of
    ``roles``, no challenge nonce, every term matching its digest, dtype and shape, every term finite."""
    manifest = bundle.open()
    if manifest.nonce is not None:
        raise MessageError("a bundle file must not carry a challenge nonce")
    last: ProtocolError | None = None
    for role in roles:
        try:
            trust.require(manifest.owner_key_id, role)
            last = None
            break
        except ProtocolError as e:
            last = e
    if last is not None:
        raise last
    for entry in manifest.tensors:
        check_finite(entry.name, entry.dtype, bundle.terms[entry.name].data)
    return manifest
