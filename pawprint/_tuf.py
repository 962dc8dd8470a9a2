"""Trust roots distributed with TUF (The Update Framework): the glue between pawprint's trust store and
python-tuf. Nothing of TUF is reimplemented here: metadata is built and signed with ``tuf.api.metadata``, and
clients fetch and verify it with ``tuf.ngclient.Updater``.

The repository (a directory, served as it is by any static HTTP server) has one target, the trust store
(``trust.json``: the verifier, registry, witness, vendor ... keys and their roles)::

    REPO/metadata/1.root.json, 2.root.json, ...   root: the keys of the four roles, a threshold each
    REPO/metadata/N.targets.json                   targets: the trust store's length and SHA-256
    REPO/metadata/N.snapshot.json                  snapshot: the targets metadata's version
    REPO/metadata/timestamp.json                   timestamp: the snapshot's version (short expiry)
    REPO/targets/<sha256>.trust.json               the trust store (consistent snapshots: never overwritten)

Every file is written atomically, and ``timestamp.json`` last: a client fetching during a publication sees the
old repository or the new one. Before anything is written the new metadata is verified as a client would
(``Root.verify_delegate``: the threshold of the role's keys in the root that delegates it), so the repository
tool never publishes what clients would refuse.

Keys: the TUF roles' keys are pawprint's own Ed25519 key files (``pawprint keys generate``), signed with through
securesystemslib's ``CryptoSigner``. TUF signs the canonical JSON of the metadata itself, while every pawprint
signature is over a 32-byte domain-separated digest (``protocol.domain_digest``), so a signature made for one
can never be taken for the other; still, give the TUF roles keys of their own (the root keys offline).

Time is a parameter (``now``) on the repository side. On the client side ngclient reads the clock itself: that
is what bounds the freshness of what it accepts.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import http.server
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import Updater

from protocol import PrivateKey, PublicKey, TrustedKey, TrustStore, TrustStoreError
from protocol._files import atomic_write

TARGET_NAME = "trust.json"
METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
SPEC_VERSION = "1.0.31"
_SERIALIZER = JSONSerializer(compact=False)
_T = TypeVar("_T", Root, Timestamp, Snapshot, Targets)  # as tuf.api.metadata's own


class TufRepositoryError(Exception):
    """The repository tool cannot do what it was asked (a missing or wrong key, a repository in a bad state):
    nothing was written."""


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's metadata stays valid after it is signed. The timestamp's is the freshness bound:
    a client accepts a stale trust store for at most this long after the last ``refresh-timestamp``."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)


# ------------------------------------------------------------------------------------------------- keys
def signer(key: PrivateKey) -> CryptoSigner:
    """A securesystemslib signer over a pawprint Ed25519 key (the same key, moved through its PKCS#8 form)."""
    crypto_key = serialization.load_pem_private_key(key.to_pem(), password=None)
    if not isinstance(crypto_key, Ed25519PrivateKey):  # PrivateKey only ever holds Ed25519
        raise TufRepositoryError("TUF role keys must be Ed25519")
    return CryptoSigner(crypto_key)


def tuf_key(key: PublicKey) -> SSlibKey:
    """The TUF form (keytype ed25519, scheme ed25519, TUF key id) of a pawprint public key."""
    return SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(key.raw))


# ------------------------------------------------------------------------------------------- repository
@dataclass(frozen=True)
class RepositoryState:
    """The versions a repository stands at after a command (what the CLI prints)."""

    root_version: int
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    timestamp_expires: datetime
    target_sha256: str
    target_length: int

    def as_dict(self) -> dict[str, Any]:
        return {"root_version": self.root_version, "targets_version": self.targets_version,
                "snapshot_version": self.snapshot_version, "timestamp_version": self.timestamp_version,
                "timestamp_expires": _iso(self.timestamp_expires), "target": TARGET_NAME,
                "target_sha256": self.target_sha256, "target_length": self.target_length}


@dataclass(frozen=True)
class OnlineKeys:
    """The keys of the three online roles (they sign every publication and timestamp)."""

    targets: PrivateKey
    snapshot: PrivateKey
    timestamp: PrivateKey

    def by_role(self) -> list[tuple[str, PrivateKey]]:
        return [(Targets.type, self.targets), (Snapshot.type, self.snapshot), (Timestamp.type, self.timestamp)]


class TrustRepository:
    """A TUF repository in a directory whose single target is a pawprint trust store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata_dir = self.path / METADATA_DIR
        self.targets_dir = self.path / TARGETS_DIR

    # -- commands ---------------------------------------------------------------------------------------
    def init(self, store: TrustStore, *, root_keys: Sequence[PrivateKey], root_threshold: int,
             targets_key: PrivateKey, snapshot_key: PrivateKey, timestamp_key: PrivateKey, now: datetime,
             extra_root_keys: Sequence[PublicKey] = (), lifetimes: Lifetimes = Lifetimes()) -> RepositoryState:
        """A new repository: root version 1 (``root_threshold`` of the root keys, ``root_keys`` and the
        public ``extra_root_keys``, must sign it; all of ``root_keys`` do), and version 1 of the others."""
        if self.metadata_dir.exists() and any(self.metadata_dir.iterdir()):
            raise TufRepositoryError(f"{self.metadata_dir} already holds metadata (use publish or rotate-root)")
        root = Root(version=1, spec_version=SPEC_VERSION, expires=_expiry(now, lifetimes.root),
                    consistent_snapshot=True)
        for pub in _unique_public([k.public_key for k in root_keys], extra_root_keys):
            root.add_key(tuf_key(pub), Root.type)
        root.roles[Root.type].threshold = _threshold(root_threshold, len(root.roles[Root.type].keyids), "root")
        for role, online_key in ((Targets.type, targets_key), (Snapshot.type, snapshot_key),
                                 (Timestamp.type, timestamp_key)):
            root.add_key(tuf_key(online_key.public_key), role)
        root_md = Metadata(root)
        for key in root_keys:
            root_md.sign(signer(key), append=True)
        _check_signed(root, Root.type, root_md, "the new root")
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        targets = Targets(version=1, spec_version=SPEC_VERSION, expires=_expiry(now, lifetimes.targets))
        return self._publish(root_md, targets, store, targets_key, snapshot_key, timestamp_key, now, lifetimes,
                             snapshot_version=1, timestamp_version=1, new_root=True)

    def publish(self, store: TrustStore, *, targets_key: PrivateKey, snapshot_key: PrivateKey,
                timestamp_key: PrivateKey, now: datetime, lifetimes: Lifetimes = Lifetimes()) -> RepositoryState:
        """A new version of the trust store: targets, snapshot and timestamp each go up by one."""
        root_md = self._latest_root()
        timestamp_md = self._read(Timestamp, "timestamp.json")
        snapshot_md = self._read(Snapshot, f"{timestamp_md.signed.snapshot_meta.version}.snapshot.json")
        old_targets = snapshot_md.signed.meta["targets.json"].version
        targets = Targets(version=old_targets + 1, spec_version=SPEC_VERSION, expires=_expiry(now, lifetimes.targets))
        return self._publish(root_md, targets, store, targets_key, snapshot_key, timestamp_key, now, lifetimes,
                             snapshot_version=snapshot_md.signed.version + 1,
                             timestamp_version=timestamp_md.signed.version + 1, new_root=False)

    def rotate_root(self, *, old_keys: Sequence[PrivateKey], new_keys: Sequence[PrivateKey], threshold: int,
                    now: datetime, extra_new_keys: Sequence[PublicKey] = (), online: OnlineKeys | None = None,
                    lifetimes: Lifetimes = Lifetimes()) -> RepositoryState:
        """Root version N+1 whose root keys are ``new_keys`` and ``extra_new_keys`` (threshold ``threshold``),
        signed as TUF prescribes by a threshold of the old root's keys *and* a threshold of the new ones, so
        that a client holding version N follows to N+1. The other roles' keys are kept, unless ``online`` names
        new ones (a stolen online key): then the current trust store is published again under them (targets,
        snapshot and timestamp each one version up) in the same step, and the old online keys sign nothing
        a client will accept."""
        old_md = self._latest_root()
        old = old_md.signed
        new = copy.deepcopy(old)  # (Root.from_dict(old.to_dict()) would share the roles' key id lists)
        new.version = old.version + 1
        new.expires = _expiry(now, lifetimes.root)
        for keyid in list(new.roles[Root.type].keyids):
            new.revoke_key(keyid, Root.type)
        for pub in _unique_public([k.public_key for k in new_keys], extra_new_keys):
            new.add_key(tuf_key(pub), Root.type)
        new.roles[Root.type].threshold = _threshold(threshold, len(new.roles[Root.type].keyids), "root")
        if online is not None:
            for role, key in online.by_role():
                for keyid in list(new.roles[role].keyids):
                    new.revoke_key(keyid, role)
                new.add_key(tuf_key(key.public_key), role)
        new_md = Metadata(new)
        for key in _unique_private([*old_keys, *new_keys]):
            new_md.sign(signer(key), append=True)
        _check_signed(old, Root.type, new_md, f"root version {new.version} (by the keys of version {old.version})")
        _check_signed(new, Root.type, new_md, f"root version {new.version} (by its own keys)")
        if online is None:
            self._write(f"{new.version}.root.json", new_md)
            return self.state()
        current = self.state()
        path = self.targets_dir / f"{current.target_sha256}.{TARGET_NAME}"
        try:
            store = TrustStore.from_json(path.read_bytes())
        except OSError as e:
            raise TufRepositoryError(f"cannot read the published trust store {path}: {e.strerror or e}") from e
        targets = Targets(version=current.targets_version + 1, spec_version=SPEC_VERSION,
                          expires=_expiry(now, lifetimes.targets))
        return self._publish(new_md, targets, store, online.targets, online.snapshot, online.timestamp, now,
                             lifetimes, snapshot_version=current.snapshot_version + 1,
                             timestamp_version=current.timestamp_version + 1, new_root=True)

    def refresh_timestamp(self, *, timestamp_key: PrivateKey, now: datetime,
                          lifetimes: Lifetimes = Lifetimes()) -> RepositoryState:
        """A new timestamp (version + 1, expiry from ``now``) over the same snapshot: what keeps clients
        accepting an unchanged trust store. Run it more often than ``lifetimes.timestamp``."""
        root = self._latest_root().signed
        old = self._read(Timestamp, "timestamp.json")
        timestamp = Timestamp(version=old.signed.version + 1, spec_version=SPEC_VERSION,
                              expires=_expiry(now, lifetimes.timestamp), snapshot_meta=old.signed.snapshot_meta)
        timestamp_md = Metadata(timestamp)
        self._sign_role(root, Timestamp.type, timestamp_md, timestamp_key)
        self._write("timestamp.json", timestamp_md)
        return self.state()

    def state(self) -> RepositoryState:
        root = self._latest_root().signed
        timestamp = self._read(Timestamp, "timestamp.json").signed
        snapshot = self._read(Snapshot, f"{timestamp.snapshot_meta.version}.snapshot.json").signed
        targets = self._read(Targets, f"{snapshot.meta['targets.json'].version}.targets.json").signed
        target = targets.targets.get(TARGET_NAME)
        if target is None:
            raise TufRepositoryError(f"{self.path}: the targets metadata does not list {TARGET_NAME}")
        return RepositoryState(root.version, targets.version, snapshot.version, timestamp.version,
                               timestamp.expires, target.hashes["sha256"], target.length)

    # -- internals --------------------------------------------------------------------------------------
    def _publish(self, root_md: Metadata[Root], targets: Targets, store: TrustStore, targets_key: PrivateKey,
                 snapshot_key: PrivateKey, timestamp_key: PrivateKey, now: datetime, lifetimes: Lifetimes, *,
                 snapshot_version: int, timestamp_version: int, new_root: bool) -> RepositoryState:
        root = root_md.signed
        data = store.to_json()
        target = TargetFile.from_data(TARGET_NAME, data, ["sha256"])
        targets.targets[TARGET_NAME] = target
        targets_md = Metadata(targets)
        self._sign_role(root, Targets.type, targets_md, targets_key)
        snapshot = Snapshot(version=snapshot_version, spec_version=SPEC_VERSION,
                            expires=_expiry(now, lifetimes.snapshot),
                            meta={"targets.json": MetaFile(version=targets.version)})
        snapshot_md = Metadata(snapshot)
        self._sign_role(root, Snapshot.type, snapshot_md, snapshot_key)
        timestamp = Timestamp(version=timestamp_version, spec_version=SPEC_VERSION,
                              expires=_expiry(now, lifetimes.timestamp),
                              snapshot_meta=MetaFile(version=snapshot.version))
        timestamp_md = Metadata(timestamp)
        self._sign_role(root, Timestamp.type, timestamp_md, timestamp_key)
        # Targets first, timestamp last: the timestamp is what makes the new version visible.
        atomic_write(self.targets_dir / f"{target.hashes['sha256']}.{TARGET_NAME}", data)
        if new_root:
            self._write(f"{root.version}.root.json", root_md)
        self._write(f"{targets.version}.targets.json", targets_md)
        self._write(f"{snapshot.version}.snapshot.json", snapshot_md)
        self._write("timestamp.json", timestamp_md)
        return self.state()

    @staticmethod
    def _sign_role(root: Root, role: str, md: Metadata[Any], key: PrivateKey) -> None:
        keyid = tuf_key(key.public_key).keyid
        if keyid not in root.roles[role].keyids:
            raise TufRepositoryError(f"key {key.key_id} is not a {role} key of root version {root.version}")
        md.sign(signer(key), append=True)
        _check_signed(root, role, md, f"the new {role} metadata")

    def _latest_root(self) -> Metadata[Root]:
        versions = sorted(int(p.name.split(".", 1)[0]) for p in self.metadata_dir.glob("*.root.json")
                          if p.name.split(".", 1)[0].isdigit())
        if not versions:
            raise TufRepositoryError(f"{self.metadata_dir}: no root metadata (run trust-repo init first)")
        return self._read(Root, f"{versions[-1]}.root.json")

    def _read(self, cls: type[_T], name: str) -> Metadata[_T]:
        path = self.metadata_dir / name
        try:
            md: Metadata[Any] = Metadata.from_file(str(path))
        except OSError as e:
            raise TufRepositoryError(f"cannot read {path}: {e.strerror or e}") from e
        except Exception as e:  # tuf's DeserializationError and the like
            raise TufRepositoryError(f"{path}: not valid TUF metadata: {e}") from e
        if not isinstance(md.signed, cls):
            raise TufRepositoryError(f"{path}: not {cls.type} metadata")
        return cast("Metadata[_T]", md)

    def _write(self, name: str, md: Metadata[Any]) -> None:
        atomic_write(self.metadata_dir / name, md.to_bytes(_SERIALIZER))


def _check_signed(delegator: Root, role: str, md: Metadata[Any], what: str) -> None:
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except tuf_errors.UnsignedMetadataError as e:
        role_keys = delegator.roles[role]
        raise TufRepositoryError(
            f"{what} would not verify: {role} needs {role_keys.threshold} of its {len(role_keys.keyids)} keys "
            f"({e})") from e


def _threshold(value: int, keys: int, role: str) -> int:
    if not 1 <= value <= keys:
        raise TufRepositoryError(f"the {role} threshold must be between 1 and its {keys} keys, not {value}")
    return value


def _unique_public(*groups: Iterable[PublicKey]) -> list[PublicKey]:
    seen: dict[str, PublicKey] = {}
    for group in groups:
        for key in group:
            seen.setdefault(key.key_id, key)
    return list(seen.values())


def _unique_private(keys: Iterable[PrivateKey]) -> list[PrivateKey]:
    seen: dict[str, PrivateKey] = {}
    for key in keys:
        seen.setdefault(key.key_id, key)
    return list(seen.values())


def _expiry(now: datetime, lifetime: timedelta) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return (now.astimezone(UTC) + lifetime).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------------- client
@dataclass(frozen=True)
class RefreshResult:
    """What ``refresh`` did: the versions it trusted, and the store it wrote."""

    store: TrustStore
    root_version: int
    targets_version: int
    timestamp_version: int
    timestamp_expires: datetime
    kept_revocations: tuple[str, ...]  # key ids revoked locally and kept revoked
    dropped: tuple[str, ...]  # key ids of the old local store that the repository no longer lists

    def as_dict(self) -> dict[str, Any]:
        return {"root_version": self.root_version, "targets_version": self.targets_version,
                "timestamp_version": self.timestamp_version, "timestamp_expires": _iso(self.timestamp_expires),
                "keys": len(self.store), "kept_revocations": list(self.kept_revocations),
                "dropped": list(self.dropped)}


def default_cache(store_path: str | Path) -> Path:
    """Where ``refresh`` keeps the TUF metadata it trusts (``STORE.tuf/``, beside the store): what rollback
    protection and root rotation are checked against on the next refresh. Keep it with the store."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".tuf")


def refresh(url: str, store_path: str | Path, *, bootstrap_root: bytes | None = None,
            cache_dir: str | Path | None = None) -> RefreshResult:
    """Fetch the trust store through TUF from the repository at ``url`` (``URL/metadata/``, ``URL/targets/``),
    verify it (ngclient: root chain, thresholds, expiry, versions, hashes) and write it to ``store_path``
    atomically, keeping every key the local store had revoked revoked.

    ``bootstrap_root``: the root metadata trusted out of band (``1.root.json`` or any later one); without it the
    newest root in ``cache_dir`` (from an earlier refresh) is the anchor. Raises tuf's ``RepositoryError``
    (expired, threshold, rollback, hash mismatch), ``DownloadError`` or urllib3's ``HTTPError`` (unreachable),
    ``TrustStoreError`` (a signed target that is not a trust store)."""
    store_path = Path(store_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache(store_path)
    metadata_dir, targets_dir = cache / METADATA_DIR, cache / TARGETS_DIR
    if bootstrap_root is None and not (metadata_dir / "root.json").exists():
        raise FileNotFoundError(f"{metadata_dir} holds no trusted root yet: give the repository's root metadata")
    metadata_dir.mkdir(parents=True, exist_ok=True)
    targets_dir.mkdir(parents=True, exist_ok=True)
    base = url.rstrip("/")
    updater = Updater(str(metadata_dir), f"{base}/{METADATA_DIR}/", str(targets_dir), f"{base}/{TARGETS_DIR}/",
                      bootstrap=bootstrap_root)
    updater.refresh()
    info = updater.get_targetinfo(TARGET_NAME)
    if info is None:
        raise tuf_errors.RepositoryError(f"the repository's signed targets do not list {TARGET_NAME}")
    downloaded = Path(updater.find_cached_target(info) or updater.download_target(info))
    try:
        remote = TrustStore.from_json(downloaded.read_bytes())
    except TrustStoreError as e:  # signed, yet not a trust store: the publisher's mistake
        raise TrustStoreError(f"the {TARGET_NAME} signed at {url}: {e}") from e
    local = TrustStore.load(store_path) if store_path.exists() else TrustStore()
    merged, kept = merge_revocations(remote, local)
    merged.save(store_path)
    root = _cached(Root, metadata_dir / "root.json")
    timestamp = _cached(Timestamp, metadata_dir / "timestamp.json")
    targets = _cached(Targets, metadata_dir / "targets.json")
    dropped = tuple(entry.key_id for entry in local if entry.key_id not in merged)
    return RefreshResult(merged, root.version, targets.version, timestamp.version, timestamp.expires, kept, dropped)


def _cached(cls: type[_T], path: Path) -> _T:
    """A role's metadata as ngclient left it in its cache, once verified (for the versions it reports)."""
    signed = Metadata.from_file(str(path)).signed
    if not isinstance(signed, cls):
        raise tuf_errors.RepositoryError(f"{path}: not {cls.type} metadata")
    return signed


def merge_revocations(remote: TrustStore, local: TrustStore) -> tuple[TrustStore, tuple[str, ...]]:
    """The repository's store, with every key that ``local`` revoked revoked (added, revoked, if the
    repository does not list it): a refresh can add and remove keys but never un-revoke one."""
    entries: dict[str, TrustedKey] = {entry.key_id: entry for entry in remote}
    kept: list[str] = []
    for entry in local:
        if not entry.revoked:
            continue
        kept.append(entry.key_id)
        current = entries.get(entry.key_id)
        entries[entry.key_id] = entry if current is None else replace(current, revoked=True)
    return TrustStore(entries.values()), tuple(kept)


# ------------------------------------------------------------------------------------------------ serve
@contextlib.contextmanager
def serve_trust_repo(directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``directory`` (a ``TrustRepository``) over plain HTTP in a thread for the block; yields its base
    URL (``http://127.0.0.1:PORT``). TUF needs no transport security: what it fetches is signed."""
    server = make_server(directory, host, port)
    thread = threading.Thread(target=server.serve_forever, name="tuf-repo", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_server(directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    """A static HTTP server of ``directory`` (GET and HEAD only, no request log), bound but not yet serving."""
    if not Path(directory, METADATA_DIR).is_dir():
        raise TufRepositoryError(f"{directory} is not a trust repository (no {METADATA_DIR}/; run trust-repo init)")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer((host, port), handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
