"""The verifier's storage: a minimal registry of base models and the record of accepted submissions.

Layout of a data directory::

    registry.sqlite3        SQLite in WAL mode: bases, submissions
    blobs/ab/abcdef...      content-addressed files (name = hex SHA-256 of the contents), written atomically

A base entry keeps the name, the vendor's key id, the manifest digest and bytes with the vendor's signature
and key, the weight commitment, the probe set and method ids, the model metadata and the id of the blob that
holds its invariant terms (canonical msgpack ``{name: tensor}``). Invariants of bases are kept here and
never published. The registry state (``RegistryState``) is the number of bases and the RFC 6962 root over
their entry records in registration order; the next issue turns this into a signed transparency log.

Accepted submissions leave their receipt (and the manifest digest, owner key id and nonce); their terms are
kept only if the owner asked (``keep_invariants``). A rejected submission never reaches this module.

Writes are crash-safe: a blob is written (temp, fsync, rename) before the row that names it is committed, so
a crash leaves at worst an unreferenced blob, never a row without its blob.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owner import InvariantSet
from owner._fingerprint import FingerprintError, invariants_from_group
from protocol import (
    BUNDLE_LIMITS,
    Bundle,
    Manifest,
    ProbeSpec,
    ProtocolError,
    Receipt,
    RegistryState,
    Role,
    SignedMessage,
    Tensor,
    TrustStore,
    atomic_write,
    decode_map,
    encode,
    leaf_hash,
    merkle_root,
    sha256_hex,
)
from verifier._checks import check_bundle, terms_of
from verifier._compare import BaseModel
from verifier.errors import RegistryError

DB_NAME = "registry.sqlite3"
BLOB_DIR = "blobs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    vendor_key_id TEXT NOT NULL,
    manifest_sha256 BLOB NOT NULL UNIQUE,
    manifest BLOB NOT NULL,
    signature BLOB NOT NULL,
    public_key BLOB NOT NULL,
    weight_commitment BLOB NOT NULL,
    probe_set_ids TEXT NOT NULL,
    method_ids TEXT NOT NULL,
    metadata TEXT NOT NULL,
    terms_blob TEXT NOT NULL,
    leaf BLOB NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    manifest_sha256 BLOB NOT NULL,
    owner_key_id TEXT NOT NULL,
    nonce BLOB NOT NULL UNIQUE,
    receipt BLOB NOT NULL,
    receipt_signature BLOB NOT NULL,
    terms_blob TEXT,
    received_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class BaseEntry:
    """One registered base, without its terms."""

    id: int
    name: str
    vendor_key_id: str
    manifest_sha256: bytes
    manifest: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    public_key: bytes = field(repr=False)
    weight_commitment: bytes
    probe_set_ids: tuple[str, ...]
    method_ids: tuple[str, ...]
    metadata: dict[str, object]
    terms_blob: str
    registered_at: int


class BlobStore:
    """Content-addressed files: ``put`` returns the hex SHA-256; ``get`` checks it on the way back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    def put(self, data: bytes) -> str:
        blob_id = sha256_hex(data)
        target = self.path(blob_id)
        if target.exists():
            return blob_id
        target.parent.mkdir(exist_ok=True)
        # Written meanwhile by another thread: same name, so the same contents.
        with contextlib.suppress(FileExistsError):
            atomic_write(target, data, mode=0o600, overwrite=False)
        return blob_id

    def get(self, blob_id: str) -> bytes:
        try:
            data = self.path(blob_id).read_bytes()
        except OSError as e:
            raise RegistryError(f"blob {blob_id} is missing ({e.strerror or e})") from e
        if sha256_hex(data) != blob_id:
            raise RegistryError(f"blob {blob_id} is corrupt (its contents do not hash to its name)")
        return data

    def count(self) -> int:
        return sum(1 for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith("."))


def encode_terms(terms: Mapping[str, Tensor]) -> bytes:
    return encode({name: t.to_map() for name, t in terms.items()})


def decode_terms(data: bytes) -> dict[str, Tensor]:
    try:
        value = decode_map(data, limits=BUNDLE_LIMITS)
        return {name: Tensor.from_map(t) for name, t in value.items()}
    except ProtocolError as e:
        raise RegistryError(f"a terms blob is malformed: {e}") from e


class Registry:
    """The registry and submission record in one data directory; safe to share between threads."""

    def __init__(self, data_dir: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.blobs = BlobStore(self.data_dir / BLOB_DIR)
            self._db = sqlite3.connect(self.data_dir / DB_NAME, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise RegistryError(f"{self.data_dir}: cannot open the registry ({e})") from e
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[InvariantSet, ...]] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- bases -------------------------------------------------------------------------------------------
    def add_base(self, name: str, bundle: Bundle, trust: TrustStore) -> BaseEntry:
        """Register ``bundle`` as the base ``name``; its key must be trusted as a vendor."""
        if not name or not name.isprintable():
            raise RegistryError("a base needs a non-empty, printable name")
        manifest = check_bundle(bundle, trust, (Role.VENDOR,))
        digest = bundle.manifest_digest
        with self._lock:
            if self._db.execute("SELECT 1 FROM bases WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"a base named {name!r} is already registered")
            if self._db.execute("SELECT 1 FROM bases WHERE manifest_sha256 = ?", (digest,)).fetchone():
                raise RegistryError("this bundle is already registered (under another name)")
            blob_id = self.blobs.put(encode_terms(terms_of(manifest, bundle.terms)))
            now = int(self._clock())
            leaf = _entry_leaf(name, manifest, digest, now)
            with self._db:
                cursor = self._db.execute(
                    "INSERT INTO bases (name, vendor_key_id, manifest_sha256, manifest, signature, public_key, "
                    "weight_commitment, probe_set_ids, method_ids, metadata, terms_blob, leaf, registered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name, manifest.owner_key_id, digest, bundle.signed.payload, bundle.signed.signature,
                        bundle.signed.public_key.raw, manifest.weight_commitment.root,
                        json.dumps([g.probe_set.id for g in manifest.groups]),
                        json.dumps(sorted({g.method_id for g in manifest.groups})),
                        json.dumps(dict(manifest.model), sort_keys=True), blob_id, leaf, now,
                    ),
                )
            row_id = cursor.lastrowid
        entry = self.base(name)
        if entry is None or entry.id != row_id:
            raise RegistryError(f"base {name!r} vanished right after it was registered")
        return entry

    def bases(self) -> list[BaseEntry]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_BASE_COLUMNS} FROM bases ORDER BY id").fetchall()
        return [_base_entry(r) for r in rows]

    def base(self, name: str) -> BaseEntry | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_BASE_COLUMNS} FROM bases WHERE name = ?", (name,)).fetchone()
        return None if row is None else _base_entry(row)

    def state(self) -> RegistryState:
        """Number of bases and the Merkle root over their entry records, in registration order."""
        with self._lock:
            leaves = [bytes(r[0]) for r in self._db.execute("SELECT leaf FROM bases ORDER BY id")]
        return RegistryState(size=len(leaves), root=merkle_root([leaf_hash(x) for x in leaves]))

    def probe_sets(self) -> tuple[ProbeSpec, ...]:
        """The probe sets of every registered base's groups, first registered first, each once."""
        seen: dict[str, ProbeSpec] = {}
        for entry in self.bases():
            manifest = Manifest.decode(entry.manifest, BUNDLE_LIMITS)
            for g in manifest.groups:
                seen.setdefault(g.probe_set.id, g.probe_set)
        return tuple(seen.values())

    def snapshot(self) -> tuple[RegistryState, list[BaseModel]]:
        """The registry state and every base with its invariant sets, read together (one query), so that a
        receipt names exactly the entries its comparison used. Invariant sets are decoded once, then cached."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_BASE_COLUMNS}, leaf FROM bases ORDER BY id").fetchall()
        state = RegistryState(size=len(rows), root=merkle_root([leaf_hash(bytes(r[-1])) for r in rows]))
        bases = []
        for row in rows:
            entry = _base_entry(row[:-1])
            bases.append(BaseModel(entry.name, entry.manifest_sha256, entry.vendor_key_id, self._invariants(entry)))
        return state, bases

    def _invariants(self, entry: BaseEntry) -> tuple[InvariantSet, ...]:
        cached = self._cache.get(entry.terms_blob)
        if cached is not None:
            return cached
        manifest = Manifest.decode(entry.manifest, BUNDLE_LIMITS)
        terms = decode_terms(self.blobs.get(entry.terms_blob))
        try:
            sets = tuple(invariants_from_group(manifest, i, terms) for i in range(len(manifest.groups)))
        except (FingerprintError, KeyError) as e:
            raise RegistryError(f"base {entry.name!r}: stored terms do not match its manifest ({e})") from e
        self._cache[entry.terms_blob] = sets
        return sets

    # -- submissions -------------------------------------------------------------------------------------
    def record_submission(
        self, manifest: Manifest, signed_receipt: SignedMessage, receipt: Receipt, terms: Mapping[str, Tensor] | None
    ) -> None:
        """Keep the receipt of an accepted submission, and its terms only if ``terms`` is given."""
        blob_id = self.blobs.put(encode_terms(terms_of(manifest, terms))) if terms is not None else None
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO submissions (manifest_sha256, owner_key_id, nonce, receipt, receipt_signature, "
                "terms_blob, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (receipt.submission, receipt.owner_key_id, receipt.nonce, signed_receipt.payload,
                 signed_receipt.signature, blob_id, receipt.issued_at),
            )

    def submissions(self) -> list[tuple[bytes, str, bytes, str | None]]:
        """(manifest digest, owner key id, receipt bytes, terms blob id or None) of each accepted submission."""
        with self._lock:
            rows = self._db.execute(
                "SELECT manifest_sha256, owner_key_id, receipt, terms_blob FROM submissions ORDER BY id"
            ).fetchall()
        return [(bytes(a), str(b), bytes(c), d) for a, b, c, d in rows]

    def counts(self) -> dict[str, int]:
        """Rows and blobs held: what the hostile-input tests check is unchanged by a rejected submission."""
        with self._lock:
            bases = self._db.execute("SELECT COUNT(*) FROM bases").fetchone()[0]
            subs = self._db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
        return {"bases": int(bases), "submissions": int(subs), "blobs": self.blobs.count()}


_BASE_COLUMNS = (
    "id, name, vendor_key_id, manifest_sha256, manifest, signature, public_key, weight_commitment, "
    "probe_set_ids, method_ids, metadata, terms_blob, registered_at"
)


def _base_entry(row: tuple[Any, ...]) -> BaseEntry:
    (id_, name, vendor, digest, manifest, signature, public_key, commitment, probe_ids, method_ids, metadata,
     blob, registered_at) = row
    return BaseEntry(
        id=int(id_), name=str(name), vendor_key_id=str(vendor), manifest_sha256=bytes(digest),
        manifest=bytes(manifest), signature=bytes(signature), public_key=bytes(public_key),
        weight_commitment=bytes(commitment), probe_set_ids=tuple(json.loads(probe_ids)),
        method_ids=tuple(json.loads(method_ids)), metadata=dict(json.loads(metadata)), terms_blob=str(blob),
        registered_at=int(registered_at),
    )


def _entry_leaf(name: str, manifest: Manifest, digest: bytes, registered_at: int) -> bytes:
    """The canonical record of one entry: the data of its leaf in the registry state's Merkle tree."""
    return encode({
        "manifest_sha256": digest,
        "name": name,
        "registered_at": registered_at,
        "vendor_key_id": manifest.owner_key_id,
        "weight_commitment": manifest.weight_commitment.root,
    })
