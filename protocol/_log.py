"""The registry's transparency log as an auditor sees it: vendor statements, log entries, and the audit.

- ``RegistryStatement`` (kind ``registry-entry``): what a vendor signs to publish a base model (action
  ``register``: name, manifest digest, licence, release date, description), to withdraw one (action
  ``revoke``: name, manifest digest, reason) or to claim a namespace (action ``claim``: the name is the
  namespace, ``acme`` for the names ``acme/...``; the manifest digest is 32 zero bytes). The vendor's bundle
  signature covers the terms; this one covers the name and metadata, so the log operator cannot rename or
  relabel a vendor's model. A release date is the vendor's claim: nothing checks it.
- ``LogEntry``: one leaf of the log, the canonical msgpack of ``{"format", "linked_to", "logged_at",
  "manifest", "statement"}`` (format ``pawprint-log-entry/2``): the signed statement, the vendor-signed
  manifest (kind ``bundle``; absent for a revocation or a claim), the index of the earliest registration
  that shares this one's weight commitment or a term digest (``linked_to``, set by the log, re-derived by the
  audit) and the time the log appended it. Its leaf hash is ``SHA-256(0x00 || bytes)`` (RFC 9162). The terms
  themselves are not in the log: their digests are, in the manifest. Entries of the first format
  (``pawprint-log-entry/1``: no ``linked_to``) still open and audit; see ``LogRules`` for what they are
  spared.
- ``LogEntry.open`` checks both signatures and that they agree (same vendor, the statement names this
  manifest). A statement is signed by the vendor, or, for an entry a registry administrator added from a
  vendor's bundle (``pawprint registry add``), by the log's own key; the manifest is always the vendor's.
- ``audit_log``: given a checkpoint an auditor saved earlier, the current one, the consistency proof between
  them and every entry, says whether all of it holds: both checkpoints signed by the log, the log never
  shrank, the proof verifies, the entries hash to both roots, every entry's signatures verify, and the rules
  of the registry hold over the whole history (a name belongs to the vendor that first registered it, a
  manifest is registered once, a revocation withdraws an earlier registration by the same vendor, no new
  name is confusable with another, only keys bound to a claimed namespace publish under it, every link is
  the earliest one) and its time runs forward: an entry is never dated before the one before it, nor before
  a checkpoint that does not include it, nor after one that does.

Everything here is pure: bytes and values in, values out, no clock, file or network. It must never accept
an entry whose signatures it has not checked.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from protocol._canonical import Limits, decode_map, encode
from protocol._checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from protocol._errors import ProofError, ProtocolError, SignatureError
from protocol._hashing import DIGEST_SIZE, sha256
from protocol._keys import PrivateKey, PublicKey
from protocol._merkle import MerkleTree, leaf_hash, verify_consistency
from protocol._messages import (
    MESSAGE_VERSION,
    OFFLINE_MANIFEST_KIND,
    Manifest,
    MessageError,
    SignedMessage,
    _Fields,
    _parse,
)
from protocol._names import namespace_of, normalise_name
from protocol._trust import Role, TrustStore
from protocol._witness import WitnessPolicy

ENTRY_FORMAT = "pawprint-log-entry/2"  # what the log appends
LEGACY_ENTRY_FORMAT = "pawprint-log-entry/1"  # what it appended before links and namespaces (still read)
ENTRY_FORMATS: dict[str, int] = {LEGACY_ENTRY_FORMAT: 1, ENTRY_FORMAT: 2}
STATEMENT_KIND = "registry-entry"
REGISTER = "register"
REVOKE = "revoke"
CLAIM = "claim"
ACTIONS: tuple[str, ...] = (REGISTER, REVOKE, CLAIM)
NO_MANIFEST = bytes(DIGEST_SIZE)  # a claim's manifest digest: it names no manifest

MAX_NAME_CHARS = 128
MAX_LICENCE_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
# An entry holds a manifest (probe-set tokens, the terms table): generous, but bounded.
ENTRY_LIMITS = Limits(max_bytes=16 * 1024 * 1024)
MAX_AUDIT_PROBLEMS = 50

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class EntryError(MessageError):
    """A statement or log entry is malformed or inconsistent (its signatures are ``SignatureError``)."""


class NameConflict(EntryError):
    """A registration's name is held by another vendor, names an unrevoked entry, or is confusable with
    another name (``protocol._names.normalise_name``); or a namespace is already claimed."""


class NamespaceDenied(EntryError):
    """A name under a claimed namespace, by a vendor key not bound to it."""


_NAME_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_base_name(name: object) -> str:
    """A base model's name: 1..128 ASCII letters, digits and ``. _ + -``, optionally one ``/`` between an
    organisation and a model (``meta-llama/Llama-3.1-8B``); each part starts with a letter or digit, so no
    ``..`` or hidden part, no space, control, NUL or look-alike Unicode character. Neither all digits (that
    reads as an entry index) nor 64 hex characters (that reads as a manifest digest)."""
    if not isinstance(name, str) or not name:
        raise EntryError("a base model needs a non-empty name")
    if len(name) > MAX_NAME_CHARS:
        raise EntryError(f"a base name is at most {MAX_NAME_CHARS} characters")
    parts = name.split("/")
    if len(parts) > 2 or not all(_NAME_SEGMENT.fullmatch(p) for p in parts) or ".." in name:
        raise EntryError(
            f"{name!r:.80} is not a valid base name: use ASCII letters, digits and . _ + - (each part starting "
            "with a letter or digit, no '..'), with at most one '/' between organisation and model")
    if name.isdigit() or _HEX64.fullmatch(name):
        raise EntryError(f"{name!r:.80} reads as an entry index or a manifest digest: choose another name")
    return name


def name_skeleton(name: str) -> str:
    """What ``name`` looks like to a reader: two names with one skeleton are confusable (``Llama-7B``,
    ``llama_7b``, ``LIama-7b``, ``l1ama-7b``, ``llama-7b.``); see ``protocol._names.normalise_name``."""
    return normalise_name(name)


def _check_text(what: str, value: object, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit:
        raise EntryError(f"{what} must be a string of at most {limit} characters")
    if any(not (c.isprintable() or c == "\n") for c in value):
        raise EntryError(f"{what} must be printable text")


@dataclass(frozen=True)
class RegistryStatement:
    """A vendor's signed statement about one of its base models (see the module docstring)."""

    KIND: ClassVar[str] = STATEMENT_KIND

    action: str
    name: str
    vendor_key_id: str
    manifest_sha256: bytes
    signed_at: int
    licence: str = ""
    release_date: str = ""
    description: str = ""
    reason: str = ""
    version: int = MESSAGE_VERSION

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise EntryError(f"statement.action must be one of {', '.join(ACTIONS)}, got {self.action!r:.40}")
        check_base_name(self.name)
        if not isinstance(self.vendor_key_id, str) or _HEX64.fullmatch(self.vendor_key_id) is None:
            raise EntryError("statement.vendor_key_id: not a key id (64 lowercase hex characters)")
        if not isinstance(self.manifest_sha256, bytes) or len(self.manifest_sha256) != DIGEST_SIZE:
            raise EntryError(f"statement.manifest_sha256 must be {DIGEST_SIZE} bytes")
        if not isinstance(self.signed_at, int) or isinstance(self.signed_at, bool) or self.signed_at < 0:
            raise EntryError("statement.signed_at must be a non-negative integer")
        _check_text("statement.licence", self.licence, MAX_LICENCE_CHARS)
        _check_text("statement.description", self.description, MAX_DESCRIPTION_CHARS)
        _check_text("statement.reason", self.reason, MAX_DESCRIPTION_CHARS)
        if not isinstance(self.release_date, str):
            raise EntryError("statement.release_date must be a string")
        if self.release_date:
            try:
                if _DATE.fullmatch(self.release_date) is None:
                    raise ValueError("not YYYY-MM-DD")
                dt.date.fromisoformat(self.release_date)
            except ValueError as e:
                raise EntryError(f"statement.release_date {self.release_date!r:.20} is not a date YYYY-MM-DD") from e
        if self.action == REVOKE and (self.licence or self.release_date or self.description):
            raise EntryError("a revocation carries a reason, not a licence, release date or description")
        if self.action == REGISTER and self.reason:
            raise EntryError("a registration carries no revocation reason")
        if self.action == CLAIM:
            if "/" in self.name:
                raise EntryError(f"a claim names a namespace (the part before '/'), not {self.name!r:.80}")
            if self.manifest_sha256 != NO_MANIFEST:
                raise EntryError("a claim names no manifest: its manifest digest is 32 zero bytes")
            if self.licence or self.release_date or self.reason:
                raise EntryError("a namespace claim carries a description only")
        if self.version != MESSAGE_VERSION:
            raise EntryError(f"unsupported statement version {self.version!r:.20}")

    @property
    def metadata(self) -> dict[str, str]:
        return {"licence": self.licence, "release_date": self.release_date, "description": self.description}

    def to_map(self) -> dict[str, object]:
        return {
            "action": self.action,
            "description": self.description,
            "licence": self.licence,
            "manifest_sha256": self.manifest_sha256,
            "name": self.name,
            "reason": self.reason,
            "release_date": self.release_date,
            "signed_at": self.signed_at,
            "vendor_key_id": self.vendor_key_id,
            "version": self.version,
        }

    @classmethod
    def from_map(cls, value: object) -> RegistryStatement:
        what = "statement"
        f = _Fields(value, what, ("action", "description", "licence", "manifest_sha256", "name", "reason",
                                  "release_date", "signed_at", "vendor_key_id", "version"), versioned=True)
        return _parse(what, cls,
            f.text("action"), f.text("name"), f.key_id("vendor_key_id"), f.raw("manifest_sha256", DIGEST_SIZE),
            f.integer("signed_at"), f.text("licence", nonempty=False), f.text("release_date", nonempty=False),
            f.text("description", nonempty=False), f.text("reason", nonempty=False),
        )

    def sign(self, key: PrivateKey) -> SignedMessage:
        payload = encode(self.to_map())
        return SignedMessage(payload, key.sign(STATEMENT_KIND, payload), key.public_key)


def open_statement(signed: SignedMessage) -> RegistryStatement:
    """The statement, once its signature (kind ``registry-entry``) by the key sent with it verifies.
    Whether that key may make the statement is the caller's question (``LogEntry.open``, the registry)."""
    signed.check(STATEMENT_KIND)
    try:
        return RegistryStatement.from_map(decode_map(signed.payload))
    except EntryError:
        raise
    except ProtocolError as e:
        raise EntryError(f"malformed statement: {e}") from e


def _signed_map(signed: SignedMessage) -> dict[str, object]:
    return {"payload": signed.payload, "public_key": signed.public_key.raw, "signature": signed.signature}


def _signed_from_map(value: object, what: str) -> SignedMessage:
    f = _Fields(value, what, ("payload", "public_key", "signature"))
    return SignedMessage(f.raw("payload"), f.raw("signature"), _parse(what, PublicKey, f.raw("public_key")))


@dataclass(frozen=True)
class LogEntry:
    """One leaf of the log: a signed statement, the vendor-signed manifest (none for a revocation or a
    claim), the time the log appended it and the earliest registration it is linked to (``linked_to``; see
    ``LogRules.link_for``). ``format`` is 2 for what the log appends now; 1 reads and writes an entry of the
    first format byte for byte (it has no ``linked_to``). Signatures are unchecked until ``open``."""

    statement: SignedMessage
    manifest: SignedMessage | None
    logged_at: int
    linked_to: int | None = None
    format: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.logged_at, int) or isinstance(self.logged_at, bool) or self.logged_at < 0:
            raise EntryError("entry.logged_at must be a non-negative integer")
        if self.format not in ENTRY_FORMATS.values():
            raise EntryError(f"unknown entry format {self.format!r:.20}")
        if self.linked_to is not None:
            if self.format == 1:
                raise EntryError(f"an entry of format {LEGACY_ENTRY_FORMAT} has no link")
            if not isinstance(self.linked_to, int) or isinstance(self.linked_to, bool) or self.linked_to < 0:
                raise EntryError("entry.linked_to must be an entry index")

    def to_bytes(self) -> bytes:
        value: dict[str, object] = {
            "format": LEGACY_ENTRY_FORMAT if self.format == 1 else ENTRY_FORMAT,
            "logged_at": self.logged_at,
            "manifest": None if self.manifest is None else _signed_map(self.manifest),
            "statement": _signed_map(self.statement),
        }
        if self.format >= 2:
            value["linked_to"] = self.linked_to
        return encode(value)

    @classmethod
    def from_bytes(cls, data: bytes) -> LogEntry:
        try:
            value = decode_map(data, limits=ENTRY_LIMITS)
        except ProtocolError as e:
            raise EntryError(f"a log entry is not canonical msgpack: {e}") from e
        name = value.get("format")
        version = ENTRY_FORMATS.get(name) if isinstance(name, str) else None
        if version is None:
            raise EntryError(f"not a log entry (format {value.get('format')!r:.40}, expected {ENTRY_FORMAT} or "
                             f"{LEGACY_ENTRY_FORMAT})")
        keys = ("format", "logged_at", "manifest", "statement") + (("linked_to",) if version >= 2 else ())
        try:
            f = _Fields(value, "entry", keys)
        except MessageError as e:
            raise EntryError(f"not a log entry of format {value['format']}: {e}") from e
        manifest = None if value["manifest"] is None else _signed_from_map(value["manifest"], "entry.manifest")
        linked = value.get("linked_to")
        if linked is not None:
            linked = f.integer("linked_to")
        return _parse("entry", cls, _signed_from_map(value["statement"], "entry.statement"), manifest,
                      f.integer("logged_at"), linked, version)

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.to_bytes())

    def open(self, log_key: PublicKey | None = None) -> RegistryEntry:
        """Check the statement's signature (by the vendor, or by ``log_key`` for an administrator's entry)
        and the manifest's (by the vendor, kind ``bundle``), and that they name each other."""
        try:
            statement = open_statement(self.statement)
        except SignatureError as e:
            raise SignatureError("the statement's signature does not verify") from e
        signer = self.statement.public_key
        by_log = signer.key_id != statement.vendor_key_id
        if by_log and (log_key is None or signer.raw != log_key.raw):
            raise EntryError("the statement is signed by neither the vendor it names nor the log's key")
        if statement.action in (REVOKE, CLAIM):
            what = "a revocation" if statement.action == REVOKE else "a namespace claim"
            if self.manifest is not None:
                raise EntryError(f"{what} entry carries no manifest")
            if by_log:
                raise EntryError(f"{what} must be signed by the vendor")
            if self.format == 1 and statement.action == CLAIM:
                raise EntryError(f"a namespace claim is an entry of format {ENTRY_FORMAT}")
            if self.linked_to is not None:
                raise EntryError(f"{what} links to no registration")
            return RegistryEntry(statement, None, signer, by_log, self.logged_at, self)
        if self.manifest is None:
            raise EntryError("a registration entry carries the vendor's signed manifest")
        try:
            self.manifest.check(OFFLINE_MANIFEST_KIND)
        except SignatureError as e:
            raise SignatureError("the manifest's signature does not verify") from e
        try:
            manifest = Manifest.decode(self.manifest.payload, ENTRY_LIMITS)
        except ProtocolError as e:
            raise EntryError(f"malformed manifest: {e}") from e
        if manifest.owner_key_id != self.manifest.public_key.key_id or manifest.owner_key_id != statement.vendor_key_id:
            raise EntryError("the manifest and the statement name different vendor keys")
        if sha256(self.manifest.payload) != statement.manifest_sha256:
            raise EntryError("the statement names another manifest than the one in the entry")
        if manifest.nonce is not None:
            raise EntryError("a registered manifest answers no challenge: its nonce must be absent")
        return RegistryEntry(statement, manifest, self.manifest.public_key, by_log, self.logged_at, self)


@dataclass(frozen=True)
class RegistryEntry:
    """A log entry whose signatures were checked: the statement, the manifest (registrations), the vendor's
    key, whether the log's key (an administrator) signed the statement, and when it was logged."""

    statement: RegistryStatement
    manifest: Manifest | None
    vendor_key: PublicKey
    admitted_by_log: bool
    logged_at: int
    record: LogEntry = field(repr=False)

    @property
    def action(self) -> str:
        return self.statement.action

    @property
    def name(self) -> str:
        return self.statement.name

    @property
    def vendor_key_id(self) -> str:
        return self.statement.vendor_key_id

    @property
    def manifest_sha256(self) -> bytes:
        return self.statement.manifest_sha256

    def as_dict(self, index: int) -> dict[str, Any]:
        """A JSON-friendly view."""
        view: dict[str, Any] = {
            "index": index,
            "action": self.action,
            "name": self.name,
            "vendor_key_id": self.vendor_key_id,
            "manifest_sha256": self.manifest_sha256.hex(),
            "signed_by": "log" if self.admitted_by_log else "vendor",
            "signed_at": self.statement.signed_at,
            "logged_at": self.logged_at,
            "leaf_hash": self.record.leaf_hash.hex(),
        }
        view["format"] = self.record.format
        if self.action == REVOKE:
            view["reason"] = self.statement.reason
        if self.action == CLAIM:
            view["namespace"] = f"{self.name}/"
            view["description"] = self.statement.description
        if self.manifest is not None:
            m = self.manifest
            view.update(self.statement.metadata)
            # Nothing checks these: they are what the vendor says (the log's own time is logged_at).
            view["vendor_claims"] = ["licence", "release_date", "description"]
            if self.record.format >= 2:
                view["linked_to"] = self.record.linked_to
            view["weight_commitment"] = m.weight_commitment.root.hex()
            view["model"] = dict(m.model)
            view["probe_set_ids"] = [g.probe_set.id for g in m.groups]
            view["method_ids"] = sorted({g.method_id for g in m.groups})
        return view


# ----------------------------------------------------------------------------------------------- rules
def _term_keys(manifest: Manifest) -> list[bytes]:
    """What links two registrations: the weight commitment's root and every term digest."""
    return [b"w" + manifest.weight_commitment.root] + [b"t" + t.sha256 for t in manifest.tensors]


@dataclass
class LogRules:
    """The registry's rules, applied entry by entry in log order: what a name, a manifest, a revocation, a
    namespace claim, a link and a time may be given everything before. The registry applies it before
    appending; the audit replays it.

    Every entry: a name belongs to the vendor that first registered it; a manifest is registered once; a
    revocation withdraws an unrevoked registration by the same vendor; an entry is never logged before the
    one before it. Entries of format 2 (what the log appends now), also: a new name (or claimed namespace)
    whose ``normalise_name`` skeleton is another's is refused; a name under a claimed namespace needs a key
    bound to it; a namespace is claimed first-come, and not over the names another vendor already holds in
    it; ``linked_to`` is the earliest registration sharing the weight commitment or a term digest (or none).
    Entries of format 1 were appended before those rules and are not held to them (links are still derived
    for them, and their names still take skeletons and namespaces that later entries cannot take); once an
    entry of format 2 is in the log, an entry of format 1 may not follow it.
    """

    names: dict[str, str] = field(default_factory=dict)  # name -> vendor key id of its first registration
    active: dict[str, int] = field(default_factory=dict)  # name -> index of its unrevoked registration
    manifests: dict[bytes, int] = field(default_factory=dict)  # manifest digest -> index of its registration
    revoked: dict[int, int] = field(default_factory=dict)  # registration index -> index of its revocation
    skeletons: dict[str, str] = field(default_factory=dict)  # normalised name -> the first name that has it
    namespaces: dict[str, tuple[str, int]] = field(default_factory=dict)  # normalised namespace -> (key, index)
    namespace_users: dict[str, set[str]] = field(default_factory=dict)  # normalised namespace -> vendor keys
    linked: dict[bytes, int] = field(default_factory=dict)  # weight commitment / term digest -> earliest index
    links: dict[int, int] = field(default_factory=dict)  # registration index -> index it is linked to
    last_time: int = 0
    format: int = 0  # the newest entry format applied

    def check(self, entry: RegistryEntry) -> None:
        """``EntryError`` (``NameConflict``, ``NamespaceDenied``) if ``entry`` may not follow the entries
        applied so far."""
        s = entry.statement
        if entry.logged_at < self.last_time:
            raise EntryError(f"the entry is logged at {entry.logged_at}, before the entry before it "
                             f"({self.last_time}): time went backwards")
        if entry.record.format < self.format:
            raise EntryError(f"an entry of format {LEGACY_ENTRY_FORMAT} after one of format {ENTRY_FORMAT}")
        current = entry.record.format >= 2
        if s.action == CLAIM:
            self.check_claim(s)
            return
        holder = self.names.get(s.name)
        if holder is not None and holder != s.vendor_key_id:
            raise NameConflict(f"the name {s.name!r} is held by another vendor ({holder})")
        if s.action == REGISTER:
            if s.manifest_sha256 in self.manifests:
                raise NameConflict(f"manifest {s.manifest_sha256.hex()} is already registered "
                                   f"(entry {self.manifests[s.manifest_sha256]})")
            if s.name in self.active:
                raise NameConflict(f"{s.name!r} already names an unrevoked entry ({self.active[s.name]})")
            if current:
                self.check_name(s.name, s.vendor_key_id)
                expected = None if entry.manifest is None else self.link_for(entry.manifest)
                if entry.record.linked_to != expected:
                    raise EntryError(f"the entry is linked to {entry.record.linked_to}, but the earliest "
                                     f"registration with its weight commitment or terms is {expected}")
            return
        target = self.manifests.get(s.manifest_sha256)
        if target is None:
            raise EntryError(f"the revocation names manifest {s.manifest_sha256.hex()}, which is not registered")
        if self.active.get(s.name) != target:
            raise EntryError(f"entry {target} is not the unrevoked registration of {s.name!r}")

    def check_name(self, name: str, vendor_key_id: str) -> None:
        """``NameConflict`` if ``name`` is new and confusable with another name; ``NamespaceDenied`` if it
        is under a namespace claimed by a key other than ``vendor_key_id``."""
        twin = self.skeletons.get(normalise_name(name))
        if twin is not None and twin != name:
            raise NameConflict(f"the name {name!r} is confusable with the registered name {twin!r} (both read "
                               f"as {normalise_name(name)!r})")
        namespace = namespace_of(name)
        if namespace is not None:
            claim = self.namespaces.get(normalise_name(namespace))
            if claim is not None and claim[0] != vendor_key_id:
                raise NamespaceDenied(f"the namespace {namespace!r}/ is claimed (entry {claim[1]}) by another "
                                      f"vendor key ({claim[0]}): only keys bound to it publish under it")

    def check_claim(self, statement: RegistryStatement) -> None:
        """``NameConflict`` unless ``statement`` may claim its namespace: unclaimed (under every spelling)
        and no other vendor already holds a name in it."""
        key = normalise_name(statement.name)
        claim = self.namespaces.get(key)
        if claim is not None:
            raise NameConflict(f"the namespace {statement.name!r}/ is already claimed (entry {claim[1]}, key "
                               f"{claim[0]})")
        others = sorted(self.namespace_users.get(key, set()) - {statement.vendor_key_id})
        if others:
            raise NameConflict(f"vendor key {others[0]} already holds names in {statement.name!r}/: the "
                               "namespace cannot be claimed over them")

    def link_for(self, manifest: Manifest) -> int | None:
        """The earliest registration sharing ``manifest``'s weight commitment or one of its term digests."""
        found = [self.linked[k] for k in _term_keys(manifest) if k in self.linked]
        return min(found) if found else None

    def apply(self, index: int, entry: RegistryEntry) -> None:
        s = entry.statement
        self.last_time = max(self.last_time, entry.logged_at)
        self.format = max(self.format, entry.record.format)
        if s.action == CLAIM:
            self.namespaces[normalise_name(s.name)] = (s.vendor_key_id, index)
            return
        self.names.setdefault(s.name, s.vendor_key_id)
        if s.action == REGISTER:
            self.manifests[s.manifest_sha256] = index
            self.active[s.name] = index
            self.skeletons.setdefault(normalise_name(s.name), s.name)
            namespace = namespace_of(s.name)
            if namespace is not None:
                self.namespace_users.setdefault(normalise_name(namespace), set()).add(s.vendor_key_id)
            if entry.manifest is not None:
                link = self.link_for(entry.manifest)
                if link is not None:
                    self.links[index] = link
                for k in _term_keys(entry.manifest):
                    self.linked.setdefault(k, index)
        else:
            target = self.manifests[s.manifest_sha256]
            self.revoked[target] = index
            del self.active[s.name]


# ----------------------------------------------------------------------------------------------- audit
@dataclass(frozen=True)
class AuditReport:
    """What ``audit_log`` found. ``ok`` only if ``problems`` is empty."""

    saved: Checkpoint | None
    current: Checkpoint | None
    entries: int
    registrations: int
    revocations: int
    vendors: int
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        def cp(c: Checkpoint | None) -> dict[str, Any] | None:
            return None if c is None else {"origin": c.origin, "size": c.size, "root": c.root.hex(), "time": c.time}

        return {"ok": self.ok, "saved": cp(self.saved), "current": cp(self.current), "entries": self.entries,
                "registrations": self.registrations, "revocations": self.revocations, "vendors": self.vendors,
                "problems": list(self.problems), "notes": list(self.notes)}


def _open_note(note: str | bytes, log_key: PublicKey, what: str, problems: list[str]) -> Checkpoint | None:
    try:
        return parse_checkpoint(note).verify(log_key)
    except SignatureError:
        problems.append(f"the {what} checkpoint's signature does not verify with the log key {log_key.key_id}")
    except CheckpointError as e:
        problems.append(f"the {what} checkpoint is not valid: {e}")
    return None


def audit_log(
    saved_note: str | bytes,
    current_note: str | bytes,
    consistency: Sequence[bytes],
    entries: Sequence[bytes],
    log_key: PublicKey,
    *,
    trust: TrustStore | None = None,
    witnesses: WitnessPolicy | None = None,
) -> AuditReport:
    """Audit a log from a checkpoint saved earlier to the current one; see the module docstring.

    ``entries`` must be the first ``current.size`` entries, in order, as the log serves them. ``trust``, if
    given, must list every vendor key (role vendor); a key revoked since is only noted. ``witnesses``, if
    given, is the policy the current checkpoint's cosignatures must meet (a split view is otherwise possible).
    """
    problems: list[str] = []
    notes: list[str] = []
    saved = _open_note(saved_note, log_key, "saved", problems)
    current = _open_note(current_note, log_key, "current", problems)
    if witnesses is not None and current is not None:
        try:
            cosigned = witnesses.check(current_note)
            notes.append("the current checkpoint is cosigned by " + ", ".join(
                f"{c.name} (at {c.time})" for c in cosigned) + f" ({witnesses.describe()} required)")
        except SignatureError as e:  # WitnessPolicyError is one
            problems.append(str(e))
    if saved is not None and current is not None:
        if saved.origin != current.origin:
            problems.append(f"the checkpoints are of different logs ({saved.origin!r} and {current.origin!r})")
        elif current.size < saved.size:
            problems.append(f"the log shrank: the saved checkpoint has {saved.size} entries, the current one "
                            f"{current.size}")
        else:
            try:
                verify_consistency(saved.size, current.size, saved.root, current.root, consistency)
            except ProofError as e:
                problems.append(f"the current checkpoint is not an extension of the saved one: the consistency "
                                f"proof from size {saved.size} to {current.size} does not verify ({e})")
            if current.size == saved.size and current.time < saved.time:
                notes.append("the current checkpoint is older than the saved one (same tree)")
    counts = {REGISTER: 0, REVOKE: 0, CLAIM: 0}
    vendors: set[str] = set()
    if current is not None:
        if len(entries) != current.size:
            problems.append(f"the log served {len(entries)} entries for a checkpoint of {current.size}")
        tree = MerkleTree()
        rules = LogRules()
        legacy = 0
        for index, data in enumerate(entries):
            tree.append(leaf_hash(data))
            entry = _audit_entry(index, data, log_key, rules, problems)
            if entry is None:
                continue
            counts[entry.action] += 1
            vendors.add(entry.vendor_key_id)
            legacy += entry.record.format == 1
            _audit_time(index, entry.logged_at, saved, current, problems)
            if trust is not None:
                _audit_trust(index, entry, trust, problems, notes)
        if legacy:
            notes.append(f"{legacy} entries are of the first format ({LEGACY_ENTRY_FORMAT}), appended before "
                         "namespaces, name normalisation and links: those rules were not applied to them")
        if len(entries) == current.size:
            if saved is not None and saved.size <= current.size and tree.root(saved.size) != saved.root:
                problems.append(
                    f"history was rewritten: the first {saved.size} entries the log serves now do not hash to "
                    f"the root of the saved checkpoint ({saved.root.hex()}); an entry before index {saved.size} "
                    "was changed, removed or reordered"
                )
            if tree.root() != current.root:
                problems.append("the entries the log serves do not hash to the root of its current checkpoint")
    return AuditReport(saved, current, len(entries), counts[REGISTER], counts[REVOKE], len(vendors),
                       tuple(problems[:MAX_AUDIT_PROBLEMS]), tuple(notes[:MAX_AUDIT_PROBLEMS]))


def _audit_time(index: int, logged_at: int, saved: Checkpoint | None, current: Checkpoint,
                problems: list[str]) -> None:
    """An entry's time is bounded by the checkpoints around it: not after a checkpoint that includes it, not
    before one that does not (an entry appended later but dated before a checkpoint already published is
    backdated). Entries' order in time is the rules' (``LogRules.check``)."""
    if logged_at > current.time:
        problems.append(f"entry {index} was logged after the current checkpoint's time ({logged_at} > "
                        f"{current.time})")
    if saved is None or saved.origin != current.origin:
        return
    if index < saved.size and logged_at > saved.time:
        problems.append(f"entry {index} was logged after the saved checkpoint that includes it ({logged_at} > "
                        f"{saved.time})")
    if index >= saved.size and logged_at < saved.time:
        problems.append(f"entry {index} is backdated: it was appended after the saved checkpoint (size "
                        f"{saved.size}, time {saved.time}) but is dated {logged_at}, before it")


def _audit_entry(index: int, data: bytes, log_key: PublicKey, rules: LogRules,
                 problems: list[str]) -> RegistryEntry | None:
    try:
        entry = LogEntry.from_bytes(data).open(log_key)
        rules.check(entry)
    except SignatureError as e:
        problems.append(f"entry {index}: {e}")
        return None
    except ProtocolError as e:
        problems.append(f"entry {index}: {e}")
        return None
    rules.apply(index, entry)
    return entry


def _audit_trust(index: int, entry: RegistryEntry, trust: TrustStore, problems: list[str],
                 notes: list[str]) -> None:
    known = trust.get(entry.vendor_key_id)
    if known is None or Role.VENDOR not in known.roles:
        problems.append(f"entry {index}: vendor key {entry.vendor_key_id} is not trusted as a vendor")
    elif known.revoked:
        notes.append(f"entry {index}: vendor key {entry.vendor_key_id} has been revoked since")
