"""The registry of base models: a signed transparency log of vendors' registrations and revocations.

A base is published by its vendor (``publish``): the vendor's signed statement (name, licence, release
date, description; kind ``registry-entry``) and its signed bundle. Only keys trusted as vendors may publish;
publishing the same manifest again with the same name and metadata is answered with the existing entry; a
name belongs to the vendor that first registered it; a new name confusable with another (one
``protocol.normalise_name`` skeleton: case, ``0/o``, ``1/l/I``, ``rn/m``, separators, trailing punctuation)
is refused; a vendor claims a namespace (``claim``: ``acme`` for ``acme/...``, first come) and from then on
only its key publishes under it; a registration sharing the weight commitment or a term digest of an earlier
one is linked to the earliest (recorded in its entry: ``BaseEntry.linked_to``); entries are never edited or
deleted, and a vendor withdraws one by appending a signed revocation (``revoke``). Each rule is
``protocol.LogRules``', which the log applies again at append and any auditor replays from the log alone.
``add_base`` is the administrator's local path: the statement is signed by the log's own key, the bundle is
still the vendor's. Anyone reads the log
(``entries``, ``find``, ``latest_checkpoint``) and asks for inclusion and consistency proofs.

The log records statements and manifests; the terms are kept as blobs and never published. The comparison
uses every unrevoked base of the latest checkpoint (``log_snapshot``), and receipts name that checkpoint and
each base's entry index; a large registry is screened first by the bases' sketches (``screen_candidates``).

Where it is kept: ``verifier._log`` is the log itself (entries, checkpoints, replay at start-up) and
``verifier._store`` the data directory (the database, the blobs, and the tables of accepted submissions,
issued challenges and sketches, which ``Registry`` passes through). Start-up checks the database, replays the
log and hashes every base's blob; a writable start-up then removes what a crash left. The log's signing key
is ``DATA/log.key`` (PKCS#8 PEM, mode 0600, created with the registry unless one is passed in) and its public
key ``DATA/log.pub``, which auditors need.

Accepted submissions leave their receipt (and the manifest digest, owner key id and nonce); their terms are
kept only if the owner asked (``keep_invariants``). A rejected submission never reaches this module.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocol import (
    BUNDLE_LIMITS,
    CLAIM,
    REGISTER,
    REVOKE,
    Bundle,
    Challenge,
    KeyFileError,
    LogEntry,
    Manifest,
    NameConflict,
    NamespaceDenied,
    PrivateKey,
    ProbeSpec,
    ProtocolError,
    PublicKey,
    Published,
    Receipt,
    RegistryState,
    RegistryStatement,
    Role,
    SignatureError,
    SignedMessage,
    Tensor,
    TrustStore,
    check_tensors,
    decode_map,
    normalise_name,
    open_statement,
    parse_checkpoint,
    parse_digest_hex,
)
from protocol.terms import InvariantSet, group_terms
from protocol.wire import MAX_LIST
from verifier._checks import check_bundle, require_trusted, terms_of
from verifier._compare import BaseModel
from verifier._log import (
    Appended,
    FaultHook,
    TransparencyLog,
    default_origin,
    initialise,
    read_meta,
)
from verifier._screen import ScreenIndex, Sketch, SketchSpec, sketch
from verifier._store import DB_NAME, Store, decode_terms, encode_terms
from verifier._witnessing import Witnessed, WitnessSet, witness_latest
from verifier.errors import (
    AlreadyExists,
    InvalidSubmission,
    NotFound,
    PermissionDenied,
    RegistryCorrupt,
    RegistryError,
    Unauthenticated,
    VerifierError,
)

LOG_KEY_NAME = "log.key"
LOG_PUB_NAME = "log.pub"
MAX_STATEMENT_BYTES = 64 * 1024

SKETCH_SPEC = SketchSpec()  # the screen's sketches (verifier._screen); its id names them in the table
log = logging.getLogger("pawprint.registry")


class _LazyTerms(dict[tuple[int, str], np.ndarray]):
    """A group's term arrays, read (through ``load``) on first use."""

    def __init__(self, load: Callable[[], Mapping[tuple[int, str], np.ndarray]]) -> None:
        super().__init__()
        self._load: Callable[[], Mapping[tuple[int, str], np.ndarray]] | None = load

    def _fill(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            super().update(load())

    def __getitem__(self, key: tuple[int, str]) -> np.ndarray:
        self._fill()
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def get(self, key: tuple[int, str], default: Any = None) -> Any:
        self._fill()
        return super().get(key, default)

    def keys(self) -> Any:
        self._fill()
        return super().keys()

    def values(self) -> Any:
        self._fill()
        return super().values()

    def items(self) -> Any:
        self._fill()
        return super().items()


@dataclass(frozen=True)
class BaseEntry:
    """One registered base, without its terms: its log entry, the manifest's facts and the statement's."""

    index: int
    name: str
    vendor_key_id: str
    manifest_sha256: bytes
    manifest: bytes = field(repr=False)
    weight_commitment: bytes
    probe_set_ids: tuple[str, ...]
    method_ids: tuple[str, ...]
    model: dict[str, object]
    metadata: dict[str, str]
    terms_blob: str
    registered_at: int
    revoked_by: int | None = None  # the index of the revocation entry, if revoked
    linked_to: int | None = None  # the earliest registration sharing its weight commitment or a term digest


@dataclass(frozen=True)
class LogSnapshot:
    """What a comparison used: the checkpoint, the registry state it names, every unrevoked base in it
    (``entries``; with their terms in ``bases`` unless the snapshot was taken without) and each base's entry
    index (by manifest digest)."""

    checkpoint: str
    state: RegistryState
    bases: list[BaseModel]
    indices: dict[bytes, int]
    entries: list[BaseEntry] = field(default_factory=list)


DEFAULT_MAX_PROBE_SETS = 16  # probe sets one registry may hold (each is in every challenge: 16 x 4096 tokens)


class Registry:
    """The registry and submission record in one data directory (``store``); safe to share between threads,
    and between processes (SQLite's writer lock orders the appends).

    ``log_key`` signs checkpoints (and administrators' statements); by default it is ``DATA/log.key``,
    created with the registry. ``create=False`` refuses a directory that holds no registry yet; ``checked=False``
    opens a possibly broken registry read-only without replaying it (what a local auditor wants: the audit then
    says what is wrong). ``fault`` is called at each step of an append (fault-injection tests only).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        log_key: PrivateKey | None = None,
        origin: str | None = None,
        create: bool = True,
        checked: bool = True,
        fault: FaultHook | None = None,
        cache_bases: int = 32,
        cache_bytes: int = 1 << 30,
        max_probe_sets: int = DEFAULT_MAX_PROBE_SETS,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._fault = fault or (lambda _point: None)
        # Decoded terms of the most recently compared bases (a base's terms are 6 n^2 floats: 384 MiB at
        # n = 4096, so they are not all kept), and the screen over every base's sketch.
        # Bounded by count and by bytes (1 GiB: two bases' terms at n = 4096, or thousands at small n).
        self._cache: OrderedDict[str, tuple[tuple[InvariantSet, ...], int]] = OrderedDict()
        self._cached_bytes = 0
        self.cache_bases = cache_bases
        self.cache_bytes = cache_bytes
        if max_probe_sets < 1:
            raise ValueError("max_probe_sets must be at least 1")
        self.max_probe_sets = max_probe_sets
        self.witnesses: WitnessSet | None = None  # when set, each new checkpoint is sent to them (``witness``)
        self.last_witnessed: Witnessed | None = None
        self.screen = ScreenIndex(SKETCH_SPEC)
        self._indexed: set[int] = set()
        self._probe_sets: tuple[int, tuple[ProbeSpec, ...]] | None = None
        self._entries: dict[int, BaseEntry] = {}
        self.store = Store(self.data_dir, create=create)
        self.blobs = self.store.blobs
        self._db = self.store.db  # the log's tables are read here; the store's through its methods
        self._lock = self.store.lock  # one connection: every use of it holds this lock
        try:
            self.log = self._open_log(log_key, origin, create=create, checked=checked)
            if checked:
                with self._lock:
                    self.log.sync()
                self.store.check_blobs()
                if create:
                    self.store.collect_orphans()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self.store.close()

    # -- opening -----------------------------------------------------------------------------------------
    def _open_log(self, log_key: PrivateKey | None, origin: str | None, *, create: bool,
                  checked: bool) -> TransparencyLog:
        key_path = self.data_dir / LOG_KEY_NAME
        key: PrivateKey | None
        try:
            meta = read_meta(self._db)
            if meta is None:
                if not create:
                    raise RegistryError(f"{self.data_dir}: the registry has no log yet")
                key = log_key or self._load_or_create_key(key_path)
                meta = initialise(self._db, key, origin or default_origin(key.public_key), int(self._clock()))
            else:
                key = log_key or (PrivateKey.load(key_path) if key_path.is_file() else None)
                if origin is not None and origin != meta.origin:
                    raise RegistryError(f"the log's origin is {meta.origin!r}, not {origin!r}")
            pub_path = self.data_dir / LOG_PUB_NAME
            if create and not pub_path.exists():
                meta.public_key.save(pub_path)  # what auditors are given; public, so always safe to write
            return TransparencyLog(self._db, meta, key, checked=checked, fault=self._fault)
        except KeyFileError as e:
            raise RegistryError(f"the log key: {e}") from e
        except sqlite3.DatabaseError as e:
            raise RegistryCorrupt(f"{self.data_dir / DB_NAME}: cannot read the log ({e})") from e

    def _load_or_create_key(self, key_path: Path) -> PrivateKey:
        if key_path.is_file():
            return PrivateKey.load(key_path)
        key = PrivateKey.generate()
        try:
            key.save(key_path)
        except KeyFileError:
            return PrivateKey.load(key_path)  # another process created it first
        return key

    @property
    def log_public_key(self) -> PublicKey:
        return self.log.meta.public_key

    @property
    def origin(self) -> str:
        return self.log.meta.origin

    # -- publishing --------------------------------------------------------------------------------------
    def check_statement(self, signed: SignedMessage, trust: TrustStore,
                        action: str | tuple[str, ...]) -> RegistryStatement:
        """A vendor's statement: signature, shape, one of the ``action``s, signed by the vendor it names, that key
        trusted as a vendor. (A statement sent without a bundle is a revocation or a claim: ``(REVOKE, CLAIM)``.)"""
        if len(signed.payload) > MAX_STATEMENT_BYTES:
            raise InvalidSubmission(f"the statement is larger than {MAX_STATEMENT_BYTES} bytes")
        try:
            statement = open_statement(signed)
        except SignatureError as e:
            raise Unauthenticated("signature verification failed") from e
        except ProtocolError as e:
            raise InvalidSubmission(f"malformed statement: {e}") from e
        actions = (action,) if isinstance(action, str) else action
        if statement.action not in actions:
            raise InvalidSubmission(f"expected a {' or '.join(map(repr, actions))} statement, got "
                                    f"{statement.action!r}")
        if signed.public_key.key_id != statement.vendor_key_id:
            raise InvalidSubmission("the statement names another vendor key than the one that signed it")
        require_trusted(trust, statement.vendor_key_id, Role.VENDOR)
        return statement

    def publish(self, signed_statement: SignedMessage, bundle: Bundle, trust: TrustStore) -> Published:
        """Append the vendor's registration of ``bundle`` (idempotent: the same manifest, name and metadata
        again is answered with the existing entry)."""
        statement = self.check_statement(signed_statement, trust, REGISTER)
        manifest = check_bundle(bundle, trust, (Role.VENDOR,))
        if manifest.owner_key_id != statement.vendor_key_id:
            raise InvalidSubmission("the bundle is signed by another key than the statement")
        if bundle.manifest_digest != statement.manifest_sha256:
            raise InvalidSubmission("the statement names another manifest than the bundle's")
        return self._register(statement, signed_statement, bundle, manifest, idempotent=True)

    def add_base(self, name: str, bundle: Bundle, trust: TrustStore, *, licence: str = "", release_date: str = "",
                 description: str = "") -> BaseEntry:
        """The administrator's path: register a vendor-signed ``bundle`` as ``name``, the statement signed by
        the log's key. Unlike ``publish``, a bundle already registered is an error, not an answer."""
        manifest = check_bundle(bundle, trust, (Role.VENDOR,))
        try:
            statement = RegistryStatement(REGISTER, name, manifest.owner_key_id, bundle.manifest_digest,
                                          int(self._clock()), licence, release_date, description)
        except ProtocolError as e:
            raise InvalidSubmission(str(e)) from e
        published = self._register(statement, self.log.sign_statement(statement), bundle, manifest,
                                   idempotent=False)
        entry = self._base_at(published.index)
        if entry is None:
            raise RegistryCorrupt(f"base {name!r} vanished right after it was registered")
        return entry

    def _register(self, statement: RegistryStatement, signed: SignedMessage, bundle: Bundle, manifest: Manifest,
                  *, idempotent: bool) -> Published:
        with self._lock:
            index = self._existing_registration(statement, idempotent)
        if index is not None:
            return self._published(index, existing=True)
        data = encode_terms(terms_of(manifest, bundle.terms))
        blob_id = self.blobs.put(data)
        self._fault("blob-written")
        with self._lock:
            with self.log.writing():
                index = self._existing_registration(statement, idempotent)
                if index is None:
                    self._check_probe_sets(manifest)
                    if not self.blobs.path(blob_id).is_file():
                        self.blobs.put(data)  # collected as an orphan by another process's start-up meanwhile
                    index = self._append(signed, bundle.signed, blob_id).index
                    existing = False
                else:
                    existing = True
            if not existing:
                self._witness_locked()
            published = self._published(index, existing=existing)
        if not existing:
            try:
                sets = group_terms(manifest, bundle.terms)
                self._store_sketches(index, [sketch(inv, SKETCH_SPEC) for inv in sets])
            except (ProtocolError, VerifierError, ValueError) as e:  # made again from the blob when first needed
                log.warning("base %s: no sketch stored (%s)", statement.name, e)
        return published

    def _existing_registration(self, statement: RegistryStatement, idempotent: bool) -> int | None:
        """The index of the same registration if it is already in the log; refuses a conflicting one."""
        rules = self.log.rules
        index = rules.manifests.get(statement.manifest_sha256)
        if index is not None:
            prior = self._statement_at(index)
            if not idempotent:
                raise AlreadyExists(f"this bundle is already registered (as {prior.name!r}, entry {index})")
            if (prior.name, prior.vendor_key_id, prior.metadata) != (
                    statement.name, statement.vendor_key_id, statement.metadata):
                raise AlreadyExists(f"this manifest is already registered as {prior.name!r} (entry {index}) with "
                                    "other metadata; entries are never edited")
            if index in rules.revoked:
                raise AlreadyExists(f"this manifest was registered as entry {index} and revoked by entry "
                                    f"{rules.revoked[index]}; it cannot be registered again")
            return index
        holder = rules.names.get(statement.name)
        if holder is not None and holder != statement.vendor_key_id:
            raise AlreadyExists(f"the name {statement.name!r} is held by another vendor")
        try:  # the rules the log applies again at append, and the audit replays (protocol.LogRules)
            rules.check_name(statement.name, statement.vendor_key_id)
        except NamespaceDenied as e:
            raise PermissionDenied(str(e)) from e
        except NameConflict as e:
            raise AlreadyExists(str(e)) from e
        active = rules.active.get(statement.name)
        if active is not None:
            raise AlreadyExists(f"a base named {statement.name!r} is already registered (entry {active}); revoke "
                                "it before registering another manifest under that name")
        return None

    def claim(self, signed_statement: SignedMessage, trust: TrustStore) -> Published:
        """Append the vendor's claim of a namespace (``acme`` for the names ``acme/...``): first come, and not
        over names another vendor already holds in it; from then on only the claiming key publishes under it.
        Idempotent: claiming again with the same key answers with the claim already in the log."""
        statement = self.check_statement(signed_statement, trust, CLAIM)
        with self._lock:
            with self.log.writing():
                rules = self.log.rules
                held = rules.namespaces.get(normalise_name(statement.name))
                if held is not None and held[0] == statement.vendor_key_id:
                    index, existing = held[1], True
                else:
                    try:
                        rules.check_claim(statement)
                    except NameConflict as e:
                        raise AlreadyExists(str(e)) from e
                    index, existing = self._append(signed_statement, None, None).index, False
            if not existing:
                self._witness_locked()
            return self._published(index, existing=existing)

    def revoke(self, signed_statement: SignedMessage, trust: TrustStore) -> Published:
        """Append the vendor's revocation of one of its entries (idempotent: revoking again answers with the
        revocation already in the log). A namespace claim, the other statement sent without a bundle, is
        passed to ``claim``."""
        if _action_of(signed_statement) == CLAIM:
            return self.claim(signed_statement, trust)
        statement = self.check_statement(signed_statement, trust, REVOKE)
        with self._lock:
            with self.log.writing():
                rules = self.log.rules
                target = rules.manifests.get(statement.manifest_sha256)
                if target is None:
                    raise NotFound("no entry registers that manifest")
                prior = self._statement_at(target)
                if prior.vendor_key_id != statement.vendor_key_id:
                    raise PermissionDenied("only the vendor that registered an entry may revoke it")
                if prior.name != statement.name:
                    raise InvalidSubmission(f"entry {target} registers that manifest as {prior.name!r}, "
                                            f"not {statement.name!r}")
                index = rules.revoked.get(target)
                existing = index is not None
                if index is None:
                    index = self._append(signed_statement, None, None).index
            if not existing:
                self._witness_locked()
            return self._published(index, existing=existing)

    def _append(self, statement: SignedMessage, manifest: SignedMessage | None, blob_id: str | None) -> Appended:
        try:
            return self.log.append(statement, manifest, terms_blob=blob_id, now=int(self._clock()))
        except ProtocolError as e:  # the rules, checked again where it cannot race: a bug if reached
            raise RegistryError(f"the entry breaks the registry's rules: {e}") from e

    def witness(self) -> Witnessed:
        """Send the latest checkpoint to the witnesses (``witnesses``) and keep their valid cosignatures."""
        if self.witnesses is None:
            raise RegistryError("no witnesses are configured for this registry")
        with self._lock:
            self._witness_locked()
        assert self.last_witnessed is not None
        return self.last_witnessed

    def _witness_locked(self) -> None:
        if self.witnesses is not None:
            self.last_witnessed = witness_latest(self.log, self.witnesses)

    def _published(self, index: int, *, existing: bool) -> Published:
        with self._lock:
            size, note = self.log.latest()
            return Published(index, self.log.leaf(index), existing, note,
                             tuple(self.log.inclusion_proof(index, size)))

    def _statement_at(self, index: int) -> RegistryStatement:
        return open_statement(LogEntry.from_bytes(self.log.leaf(index)).statement)

    # -- reading the log -----------------------------------------------------------------------------------
    def latest_checkpoint(self) -> str:
        """The signed note of the latest checkpoint."""
        with self._lock:
            return self.log.latest()[1]

    def size(self) -> int:
        with self._lock:
            return self.log.latest()[0]

    def entries(self, start: int, end: int | None = None) -> list[bytes]:
        """The entries ``start`` .. ``end - 1`` (at most ``MAX_LIST``) of the latest checkpoint, as logged."""
        with self._lock:
            size = self.log.latest()[0]
            stop = min(size if end is None else end, size, start + MAX_LIST)
            return self.log.leaves(start, stop) if start < stop else []

    def find(self, key: str) -> tuple[int, bytes]:
        """An entry by index, by manifest digest (hex; its registration) or by name (its latest entry)."""
        with self._lock:
            size = self.log.latest()[0]
            if re.fullmatch(r"[0-9]{1,20}", key):
                index = int(key)
                if index >= size:
                    raise NotFound(f"the log has no entry {index} (it has {size})")
                return index, self.log.leaf(index)
            row = None
            if re.fullmatch(r"[0-9a-f]{64}", key):
                row = self._db.execute("SELECT idx FROM entries WHERE manifest_sha256 = ? AND action = ? AND idx < ?",
                                       (parse_digest_hex(key), REGISTER, size)).fetchone()
            if row is None:
                row = self._db.execute("SELECT idx FROM entries WHERE name = ? AND idx < ? ORDER BY idx DESC LIMIT 1",
                                       (key, size)).fetchone()
            if row is None:
                raise NotFound(f"no entry is named {key!r:.80}")
            return int(row[0]), self.log.leaf(int(row[0]))

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        """Entry ``index`` and its inclusion proof in the tree of the first ``tree_size`` entries."""
        with self._lock:
            proof = self.log.inclusion_proof(index, tree_size)
            return self.log.leaf(index), proof

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self._lock:
            return self.log.consistency_proof(old_size, new_size)

    # -- bases ---------------------------------------------------------------------------------------------
    def bases(self, *, include_revoked: bool = False, tree_size: int | None = None) -> list[BaseEntry]:
        """The bases registered in the first ``tree_size`` entries (the latest checkpoint's by default), in log
        order; unrevoked ones only (revoked within those entries), unless ``include_revoked``."""
        with self._lock:
            size = self.log.latest()[0] if tree_size is None else tree_size
            revoked = {t: r for t, r in self.log.rules.revoked.items() if r < size}
            rows = self._db.execute("SELECT idx, terms_blob FROM entries WHERE action = ? AND idx < ? ORDER BY idx",
                                    (REGISTER, size)).fetchall()
            entries = []
            for index, blob in rows:
                entry = self._entries.get(int(index))
                if entry is None:  # entries never change: each is parsed once
                    entry = self._entries[int(index)] = _base_entry(int(index), str(blob), self.log.leaf(int(index)))
                entries.append(dataclasses.replace(entry, revoked_by=revoked.get(entry.index),
                                                   linked_to=self.log.rules.links.get(entry.index)))
        return [e for e in entries if include_revoked or e.revoked_by is None]

    def base(self, name: str) -> BaseEntry | None:
        """The unrevoked base named ``name``."""
        return next((e for e in self.bases() if e.name == name), None)

    def _base_at(self, index: int) -> BaseEntry | None:
        """The registration at ``index`` (revoked or not), without reading every entry."""
        with self._lock:
            row = self._db.execute("SELECT terms_blob FROM entries WHERE idx = ? AND action = ?",
                                   (index, REGISTER)).fetchone()
            if row is None:
                return None
            entry = self._entries.get(index)
            if entry is None:
                entry = self._entries[index] = _base_entry(index, str(row[0]), self.log.leaf(index))
            return dataclasses.replace(entry, revoked_by=self.log.rules.revoked.get(index),
                                       linked_to=self.log.rules.links.get(index))

    def state(self) -> RegistryState:
        """The size and root of the latest checkpoint."""
        cp = parse_checkpoint(self.latest_checkpoint()).checkpoint
        return RegistryState(size=cp.size, root=cp.root)

    def _check_probe_sets(self, manifest: Manifest) -> None:
        """Every challenge names every probe set of the registry, and an owner computes terms on each: a base
        may bring a new probe set only while there are fewer than ``max_probe_sets``."""
        known = [p.id for p in self.probe_sets()]
        new = sorted({g.probe_set.id for g in manifest.groups} - set(known))
        if new and len(known) + len(new) > self.max_probe_sets:
            raise RegistryError(
                f"the registry holds {len(known)} probe sets and takes at most {self.max_probe_sets} (every "
                f"challenge asks owners for terms on each); this base brings {len(new)} more ({', '.join(new)}). "
                f"Compute its terms on a registered probe set ({', '.join(known)}), or raise --max-probe-sets")

    def probe_sets(self) -> tuple[ProbeSpec, ...]:
        """The probe sets of every unrevoked base's groups, first registered first, each once (worked out
        once per log size: every challenge asks)."""
        with self._lock:
            size = self.log.latest()[0]
            if self._probe_sets is not None and self._probe_sets[0] == size:
                return self._probe_sets[1]
        seen: dict[str, ProbeSpec] = {}
        for entry in self.bases(tree_size=size):
            manifest = Manifest.decode(entry.manifest, BUNDLE_LIMITS)
            for g in manifest.groups:
                seen.setdefault(g.probe_set.id, g.probe_set)
        found = tuple(seen.values())
        with self._lock:
            self._probe_sets = (size, found)
        return found

    def log_snapshot(self, *, terms: bool = True) -> LogSnapshot:
        """The latest checkpoint and every unrevoked base in it, read together, so that a receipt names
        exactly the entries its comparison used; with every base's terms unless ``terms=False`` (then load
        the ones needed with ``base_models``)."""
        with self._lock:
            note = self.latest_checkpoint()
            cp = parse_checkpoint(note).checkpoint
            entries = self.bases(tree_size=cp.size)
        bases = self.base_models(entries) if terms else []
        return LogSnapshot(note, RegistryState(cp.size, cp.root), bases, {e.manifest_sha256: e.index for e in entries},
                           entries)

    def base_models(self, entries: list[BaseEntry], *, lazy: bool = False) -> list[BaseModel]:
        """``entries`` with their invariant sets, as the comparison takes them. ``lazy``: each set's groups and
        model facts from the manifest, its terms read from the blob only when first used (a sketched submission
        compares with the bases' stored sketches and never needs them)."""
        if not lazy:
            return [BaseModel(e.name, e.manifest_sha256, e.vendor_key_id, self._invariants(e)) for e in entries]
        out = []
        for e in entries:
            manifest = Manifest.decode(e.manifest, BUNDLE_LIMITS)
            sets = tuple(InvariantSet(g, dict(manifest.model), _LazyTerms(self._group_loader(e, i)))
                         for i, g in enumerate(manifest.groups))
            out.append(BaseModel(e.name, e.manifest_sha256, e.vendor_key_id, sets))
        return out

    def _group_loader(self, entry: BaseEntry, index: int) -> Callable[[], Mapping[tuple[int, str], np.ndarray]]:
        return lambda: self._invariants(entry)[index].terms

    # -- the screen ----------------------------------------------------------------------------------------
    def screen_candidates(self, suspect: list[InvariantSet], entries: list[BaseEntry], k: int,
                          floor: float) -> list[BaseEntry]:
        """The entries to compare exactly: the ``k`` with the best screen estimate of ICS against ``suspect``,
        and every other whose estimate reaches ``floor`` (so that a related base the ranking pushed down is
        still compared). Entries on no probe set of the suspect's cannot be compared and are not returned."""
        self._ensure_indexed(entries)
        wanted = {e.index: e for e in entries}
        ranked = [c for c in self.screen.query(suspect, len(self._indexed)) if c.key in wanted]
        chosen = ranked[:k] + [c for c in ranked[k:] if c.estimate >= floor]
        return [wanted[int(c.key)] for c in chosen]  # type: ignore[call-overload]

    def _ensure_indexed(self, entries: list[BaseEntry]) -> None:
        """Put every entry's sketch in the screen: read from the sketches table, or made from its terms (and
        stored) for a base registered by another process or before sketches were kept."""
        missing = [e for e in entries if e.index not in self._indexed]
        if not missing:
            return
        stored = self.store.sketches(SKETCH_SPEC, [e.index for e in missing])
        for e in missing:
            sketches = stored.get(e.index)
            if sketches is None:
                sketches = [sketch(inv, SKETCH_SPEC) for inv in self._invariants(e, keep=False)]
                self._store_sketches(e.index, sketches)
            with self._lock:
                if e.index in self._indexed:
                    continue
                for s in sketches:
                    self.screen.add_sketch(e.index, s)
                self._indexed.add(e.index)

    def _store_sketches(self, index: int, sketches: list[Sketch]) -> None:
        """Keep a base's sketches (derived data: losing them costs a recomputation, never a wrong answer)."""
        if not self.log.writable:
            return
        self.store.save_sketches(index, SKETCH_SPEC, sketches)

    def snapshot(self) -> tuple[RegistryState, list[BaseModel]]:
        """The registry state and every unrevoked base with its invariant sets (see ``log_snapshot``)."""
        snap = self.log_snapshot()
        return snap.state, snap.bases

    def _invariants(self, entry: BaseEntry, *, keep: bool = True) -> tuple[InvariantSet, ...]:
        with self._lock:
            cached = self._cache.get(entry.terms_blob)
            if cached is not None:
                self._cache.move_to_end(entry.terms_blob)
                return cached[0]
        manifest = Manifest.decode(entry.manifest, BUNDLE_LIMITS)
        terms = decode_terms(self.blobs.get(entry.terms_blob))
        try:
            check_tensors(manifest, terms)
            sets = tuple(group_terms(manifest, terms))
        except (ProtocolError, KeyError) as e:
            raise RegistryCorrupt(f"base {entry.name!r}: stored terms do not match its manifest ({e})") from e
        size = sum(t.nbytes for s in sets for t in s.terms.values())
        if keep and self.cache_bases > 0 and size <= self.cache_bytes:
            with self._lock:
                if entry.terms_blob not in self._cache:
                    self._cache[entry.terms_blob] = (sets, size)
                    self._cached_bytes += size
                while len(self._cache) > self.cache_bases or self._cached_bytes > self.cache_bytes:
                    _, (_, evicted) = self._cache.popitem(last=False)
                    self._cached_bytes -= evicted
        return sets

    # -- submissions and challenges (kept by the store) -------------------------------------------------------
    def record_submission(
        self, manifest: Manifest, signed_receipt: SignedMessage, receipt: Receipt, terms: Mapping[str, Tensor] | None
    ) -> None:
        """Keep the receipt of an accepted submission, and its terms only if ``terms`` is given. A second
        receipt for the same nonce is ``NonceUsed`` (the first one stays)."""
        data = encode_terms(terms_of(manifest, terms)) if terms is not None else None
        self.store.record_submission(signed_receipt, receipt, data)

    def receipt_for(self, nonce: bytes) -> tuple[bytes, bytes, bytes] | None:
        """(manifest digest, receipt payload, receipt signature) of the submission that used ``nonce``."""
        return self.store.receipt_for(nonce)

    def submissions(self) -> list[tuple[bytes, str, bytes, str | None]]:
        """(manifest digest, owner key id, receipt bytes, terms blob id or None) of each accepted submission."""
        return self.store.submissions()

    def counts(self) -> dict[str, int]:
        """Registrations, submissions and blobs held: what the hostile-input tests check is unchanged by a
        rejected submission."""
        return self.store.counts()

    def budget_events(self, key_id: str, since: float) -> list[tuple[float, bool]]:
        """The submissions of owner key ``key_id`` counted against its budget since ``since`` (every process)."""
        return self.store.budget_events(key_id, since)

    def add_budget_event(self, key_id: str, at: float, suspicious: bool, *, forget_before: float) -> None:
        """Count one submission of ``key_id`` against its budget, durably (``SubmissionGuard``)."""
        self.store.add_budget_event(key_id, at, suspicious, forget_before=forget_before)

    def save_challenge(self, challenge: Challenge) -> None:
        """Record an issued challenge (so that a restarted verifier still honours its nonce)."""
        self.store.save_challenge(challenge)

    def challenges(self, verifier_key_id: str) -> list[tuple[Challenge, bool]]:
        """Every recorded challenge ``verifier_key_id`` issued, with whether a submission used its nonce."""
        return self.store.challenges(verifier_key_id)

    def challenge(self, nonce: bytes, verifier_key_id: str) -> tuple[Challenge, bool] | None:
        """The recorded challenge of ``nonce`` if ``verifier_key_id`` issued it (in this process or another
        serving the same data directory), with whether a submission used its nonce."""
        return self.store.challenge(nonce, verifier_key_id)


def _action_of(signed: SignedMessage) -> str | None:
    """The action a statement names, read before its checks (which ``check_statement`` makes)."""
    try:
        value = decode_map(signed.payload)
    except ProtocolError:
        return None
    action = value.get("action")
    return action if isinstance(action, str) else None


def _base_entry(index: int, blob: str, leaf: bytes) -> BaseEntry:
    """A registration's row, from its log entry (whose signatures the log checked when it read it)."""
    record = LogEntry.from_bytes(leaf)
    if record.manifest is None:
        raise RegistryCorrupt(f"entry {index} is a registration without a manifest")
    statement = RegistryStatement.from_map(decode_map(record.statement.payload))
    manifest = Manifest.decode(record.manifest.payload, BUNDLE_LIMITS)
    return BaseEntry(
        index=index, name=statement.name, vendor_key_id=statement.vendor_key_id,
        manifest_sha256=statement.manifest_sha256, manifest=record.manifest.payload,
        weight_commitment=manifest.weight_commitment.root,
        probe_set_ids=tuple(g.probe_set.id for g in manifest.groups),
        method_ids=tuple(sorted({g.method_id for g in manifest.groups})), model=dict(manifest.model),
        metadata=statement.metadata, terms_blob=blob, registered_at=record.logged_at,
    )
