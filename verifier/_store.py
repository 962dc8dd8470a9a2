"""The registry's storage: one data directory, one SQLite database and a content-addressed blob store.

Layout of a data directory::

    registry.sqlite3        SQLite in WAL mode: the log's tables (``verifier._log``) and the three below
    blobs/ab/abcdef...      content-addressed files (name = hex SHA-256 of the contents), written atomically
    log.key, log.pub        the log's signing key and public key (``verifier._registry`` writes them)

``Store`` opens the database (``PRAGMA quick_check``, WAL, ``synchronous=FULL``, the schema) and holds the
connection, the lock that serialises its use between threads, and the blobs. Its own tables::

    submissions   the receipt of each accepted submission (with the manifest digest, owner key id and nonce,
                  unique) and, only if the owner asked, the blob of its terms
    challenges    every challenge handed out, so that a restarted verifier still honours its nonces
    sketches      each base's screen sketches (derived data: losing them costs a recomputation, never a
                  wrong answer)
    term_sketches each base group's public k x k term sketches (``protocol.terms.sketch_invariants``), made
                  when a sketched submission first meets the base (derived data, as above)

Every write is one transaction begun with ``BEGIN IMMEDIATE`` (SQLite's writer lock, across threads and
processes); a full disk is ``StorageFull`` and leaves nothing behind. Crash safety: a blob is written (temp,
fsync, link) before the transaction that names it, and checked again inside it. A crash leaves at worst an
unreferenced blob or temp file, which ``collect_orphans`` removes at the next writable start-up (under the
writer lock, so it cannot race with a writer); ``check_blobs`` hashes every blob a row names. A corrupt
database or blob is ``RegistryCorrupt`` with a message saying what.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from protocol import (
    BUNDLE_LIMITS,
    REGISTER,
    Challenge,
    ProtocolError,
    Receipt,
    SignedMessage,
    Tensor,
    decode_map,
    encode,
    sha256_hex,
)
from verifier._log import LOG_SCHEMA, full_disk_refused
from verifier._screen import SLOTS, Sketch, SketchSpec
from verifier.errors import NonceUsed, RegistryCorrupt, RegistryError, StorageFull

DB_NAME = "registry.sqlite3"
BLOB_DIR = "blobs"

_SCHEMA = LOG_SCHEMA + """
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
CREATE TABLE IF NOT EXISTS sketches (
    entry_idx INTEGER NOT NULL,
    spec_id TEXT NOT NULL,
    probe_set_id TEXT NOT NULL,
    method_id TEXT NOT NULL,
    slots BLOB NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (entry_idx, spec_id, probe_set_id, method_id)
);
CREATE TABLE IF NOT EXISTS term_sketches (
    entry BLOB NOT NULL,
    probe_set_id TEXT NOT NULL,
    k INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (entry, probe_set_id, k)
);
CREATE TABLE IF NOT EXISTS challenges (
    nonce BLOB PRIMARY KEY,
    verifier_key_id TEXT NOT NULL,
    challenge BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_events (
    key_id TEXT NOT NULL,
    at REAL NOT NULL,
    suspicious INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_events_by_key ON budget_events (key_id, at);
"""
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    """Content-addressed files: ``put`` returns the hex SHA-256; ``get`` checks it on the way back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    def put(self, data: bytes) -> str:
        """Store ``data`` (temp file, fsync, link): a full disk is ``StorageFull`` and leaves no file behind."""
        blob_id = sha256_hex(data)
        target = self.path(blob_id)
        if target.exists():
            return blob_id
        with full_disk_refused():
            target.parent.mkdir(exist_ok=True)
            for _ in range(3):  # a temp file taken by ``remove_temporaries`` in the instant before it was locked
                if self._write_new(target, data):
                    break
            else:
                raise RegistryError(f"blob {blob_id}: its temp file kept disappearing")
        return blob_id

    @staticmethod
    def _write_new(target: Path, data: bytes) -> bool:
        """Write ``target`` through a temp file that is locked (``flock``) while it is written, so that
        ``remove_temporaries`` in another process never takes a live one; False if it was taken before the
        lock (try again). Written meanwhile by another writer: same name, so the same contents."""
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not os.path.exists(tmp):
                return False
            os.fchmod(fd, 0o600)
            with os.fdopen(os.dup(fd), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, target)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.close(fd)

    def remove_temporaries(self) -> int:
        """Delete the temp files of writes a crash interrupted (``.<name>.*.tmp`` that no live writer holds
        locked); returns how many."""
        removed = 0
        for p in self.root.glob("*/.*.tmp"):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # being written right now
            try:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
            finally:
                os.close(fd)
        return removed

    def get(self, blob_id: str) -> bytes:
        try:
            data = self.path(blob_id).read_bytes()
        except OSError as e:
            raise RegistryCorrupt(f"blob {blob_id} is missing ({e.strerror or e})") from e
        if sha256_hex(data) != blob_id:
            raise RegistryCorrupt(f"blob {blob_id} is corrupt (its contents do not hash to its name)")
        return data

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*/*") if p.is_file() and _BLOB_NAME.fullmatch(p.name))

    def count(self) -> int:
        return len(self.ids())


def encode_terms(terms: Mapping[str, Tensor]) -> bytes:
    return encode({name: t.to_map() for name, t in terms.items()})


def decode_terms(data: bytes) -> dict[str, Tensor]:
    try:
        value = decode_map(data, limits=BUNDLE_LIMITS)
        return {name: Tensor.from_map(t) for name, t in value.items()}
    except ProtocolError as e:
        raise RegistryCorrupt(f"a terms blob is malformed: {e}") from e


LOW_DISK_BYTES = 1 << 20  # less free space than this, and a database that fails to open is blamed on the disk


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _sketch_from_row(spec: SketchSpec, probe_set_id: str, method_id: str, slots: bytes, data: bytes) -> Sketch:
    values = np.frombuffer(data, dtype="<f2").reshape(SLOTS, spec.samples).astype(np.float32)
    mask = np.unpackbits(np.frombuffer(slots, dtype=np.uint8))[:SLOTS].astype(bool)
    return Sketch(str(probe_set_id), str(method_id), values, mask)


class Store:
    """The database and blobs of one data directory; safe to share between threads (every use of the
    connection holds ``lock``) and between processes (SQLite's writer lock orders the writes).

    ``create=False`` refuses a directory that holds no registry yet. The registry (``verifier._registry``)
    runs the transparency log over the same connection, under the same lock.
    """

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        self.data_dir = data_dir
        self.lock = threading.RLock()
        db_path = self.data_dir / DB_NAME
        if not create and not db_path.is_file():
            raise RegistryError(f"{self.data_dir}: no registry here ({DB_NAME} is missing)")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.blobs = BlobStore(self.data_dir / BLOB_DIR)
            self.db = sqlite3.connect(db_path, timeout=30, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise RegistryError(f"{self.data_dir}: cannot open the registry ({e})") from e
        try:
            self._open_database(db_path)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _open_database(self, db_path: Path) -> None:
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "bases" in tables:
                raise RegistryError(f"{db_path} holds a registry from before the transparency log; register the "
                                    "bases again in a new data directory")
            check = self.db.execute("PRAGMA quick_check").fetchall()
            if [tuple(r) for r in check] != [("ok",)]:
                problems = "; ".join(str(r[0]) for r in check[:3])
                raise RegistryCorrupt(f"{db_path} is corrupt ({problems}); restore it from a backup")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            free = _free_bytes(self.data_dir)
            if free is not None and free < LOW_DISK_BYTES:
                # Opening a WAL database writes (its -shm and -wal files): on a full disk SQLite says "disk I/O
                # error", which is no reason to restore anything.
                raise RegistryError(f"{self.data_dir}: cannot open the registry: its disk is full ({free:,} bytes "
                                    f"free; SQLite: {e}). Nothing was changed: free some space and start again") from e
            raise RegistryCorrupt(f"{db_path} is not a readable SQLite database ({e}); restore it from a backup") from e

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``: the writer lock), committed or rolled back; a full disk is
        ``StorageFull``. Callers hold ``lock``."""
        with full_disk_refused():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise

    # -- blobs ---------------------------------------------------------------------------------------------
    def check_blobs(self) -> None:
        """Every blob a row names (a base's terms, a submission's kept terms) is there and hashes to its name."""
        with self.lock:
            rows = self.db.execute(
                "SELECT idx, name, terms_blob FROM entries WHERE action = ? ORDER BY idx", (REGISTER,)
            ).fetchall()
            kept = self.db.execute(
                "SELECT id, terms_blob FROM submissions WHERE terms_blob IS NOT NULL ORDER BY id").fetchall()
        for index, name, blob in rows:
            try:
                self.blobs.get(str(blob))
            except RegistryCorrupt as e:
                raise RegistryCorrupt(f"{self.data_dir}: entry {index} ({name}): {e}") from e
        for row_id, blob in kept:
            try:
                self.blobs.get(str(blob))
            except RegistryCorrupt as e:
                raise RegistryCorrupt(f"{self.data_dir}: kept terms of submission {row_id}: {e}") from e

    def collect_orphans(self) -> None:
        """Remove blobs no row names (left by a crash between the blob and its transaction) and temp files of
        interrupted writes. Under the writer lock: a publisher checks its blob again inside its own
        transaction, so it cannot lose it to this."""
        with self.lock, self.writing():
            self.blobs.remove_temporaries()
            referenced = {str(r[0]) for r in self.db.execute(
                "SELECT terms_blob FROM entries WHERE terms_blob IS NOT NULL "
                "UNION SELECT terms_blob FROM submissions WHERE terms_blob IS NOT NULL")}
            for blob_id in self.blobs.ids():
                if blob_id not in referenced:
                    with contextlib.suppress(FileNotFoundError):
                        self.blobs.path(blob_id).unlink()

    # -- sketches ------------------------------------------------------------------------------------------
    def sketches(self, spec: SketchSpec, indices: Sequence[int]) -> dict[int, list[Sketch]]:
        """The stored sketches (made with ``spec``) of the bases at ``indices``, by entry index; a base with
        none stored is absent."""
        stored: dict[int, list[Sketch]] = {}
        with self.lock:
            for a in range(0, len(indices), 500):
                chunk = list(indices[a : a + 500])
                rows = self.db.execute(
                    f"SELECT entry_idx, probe_set_id, method_id, slots, sketch FROM sketches WHERE spec_id = ? AND "
                    f"entry_idx IN ({','.join('?' * len(chunk))})", (spec.id, *chunk)).fetchall()
                for idx, probe_set_id, method_id, slots, data in rows:
                    stored.setdefault(int(idx), []).append(_sketch_from_row(spec, probe_set_id, method_id, slots,
                                                                            data))
        return stored

    def save_sketches(self, index: int, spec: SketchSpec, sketches: list[Sketch]) -> None:
        """Keep a base's sketches; a full disk keeps nothing and says nothing (they are derived data)."""
        with contextlib.suppress(StorageFull), self.lock, self.writing():
            self.db.executemany(
                "INSERT OR IGNORE INTO sketches (entry_idx, spec_id, probe_set_id, method_id, slots, sketch) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(index, spec.id, s.probe_set_id, s.method_id, np.packbits(s.slots).tobytes(),
                  s.values.astype("<f2").tobytes()) for s in sketches])

    def term_sketch(self, entry: bytes, probe_set_id: str, k: int) -> bytes | None:
        """The stored term sketches (float32 bytes, in the group's tensor order) of one base group, if any."""
        with self.lock:
            row = self.db.execute("SELECT data FROM term_sketches WHERE entry = ? AND probe_set_id = ? AND k = ?",
                                  (entry, probe_set_id, k)).fetchone()
        return None if row is None else bytes(row[0])

    def save_term_sketch(self, entry: bytes, probe_set_id: str, k: int, data: bytes) -> None:
        """Keep one base group's term sketches; a full disk keeps nothing and says nothing (derived data)."""
        with contextlib.suppress(StorageFull), self.lock, self.writing():
            self.db.execute("INSERT OR IGNORE INTO term_sketches (entry, probe_set_id, k, data) VALUES (?, ?, ?, ?)",
                            (entry, probe_set_id, k, data))

    # -- submissions ---------------------------------------------------------------------------------------
    def record_submission(self, signed_receipt: SignedMessage, receipt: Receipt, terms: bytes | None) -> None:
        """Keep the receipt of an accepted submission, and ``terms`` (encoded, ``encode_terms``) as a blob if
        given. A second receipt for the same nonce is ``NonceUsed`` (the first one stays)."""
        blob_id = self.blobs.put(terms) if terms is not None else None
        try:
            with self.lock, self.writing():
                if terms is not None and blob_id is not None and not self.blobs.path(blob_id).is_file():
                    self.blobs.put(terms)  # see collect_orphans
                self.db.execute(
                    "INSERT INTO submissions (manifest_sha256, owner_key_id, nonce, receipt, receipt_signature, "
                    "terms_blob, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (receipt.submission, receipt.owner_key_id, receipt.nonce, signed_receipt.payload,
                     signed_receipt.signature, blob_id, receipt.issued_at),
                )
        except sqlite3.IntegrityError as e:
            raise NonceUsed("the nonce was already used: ask for a new challenge") from e

    def receipt_for(self, nonce: bytes) -> tuple[bytes, bytes, bytes] | None:
        """(manifest digest, receipt payload, receipt signature) of the submission that used ``nonce``."""
        with self.lock:
            row = self.db.execute(
                "SELECT manifest_sha256, receipt, receipt_signature FROM submissions WHERE nonce = ?", (nonce,)
            ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), bytes(row[2]))

    def submissions(self) -> list[tuple[bytes, str, bytes, str | None]]:
        """(manifest digest, owner key id, receipt bytes, terms blob id or None) of each accepted submission."""
        with self.lock:
            rows = self.db.execute(
                "SELECT manifest_sha256, owner_key_id, receipt, terms_blob FROM submissions ORDER BY id"
            ).fetchall()
        return [(bytes(a), str(b), bytes(c), d) for a, b, c, d in rows]

    def counts(self) -> dict[str, int]:
        """Registrations, submissions and blobs held: what the hostile-input tests check is unchanged by a
        rejected submission."""
        with self.lock:
            bases = self.db.execute("SELECT COUNT(*) FROM entries WHERE action = ?", (REGISTER,)).fetchone()[0]
            subs = self.db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
        return {"bases": int(bases), "submissions": int(subs), "blobs": self.blobs.count()}

    # -- submission budgets (so that a restart, or another process on this directory, counts them too) --
    def budget_events(self, key_id: str, since: float) -> list[tuple[float, bool]]:
        """The counted submissions of owner key ``key_id`` at or after ``since``: (time, suspicious), oldest
        first."""
        with self.lock:
            rows = self.db.execute("SELECT at, suspicious FROM budget_events WHERE key_id = ? AND at >= ? "
                                   "ORDER BY at", (key_id, since)).fetchall()
        return [(float(at), bool(sus)) for at, sus in rows]

    def add_budget_event(self, key_id: str, at: float, suspicious: bool, *, forget_before: float) -> None:
        """Count one submission of ``key_id``; events older than ``forget_before`` (of any key) are dropped."""
        with self.lock, self.writing():
            self.db.execute("DELETE FROM budget_events WHERE at < ?", (forget_before,))
            self.db.execute("INSERT INTO budget_events (key_id, at, suspicious) VALUES (?, ?, ?)",
                            (key_id, at, int(suspicious)))

    # -- challenges (so that a restarted verifier still honours the nonces it handed out) ---------------
    def save_challenge(self, challenge: Challenge) -> None:
        """Record an issued challenge, and forget those expired before ``expires_at`` minus twice its life."""
        horizon = challenge.expires_at - 2 * max(1, challenge.expires_at - challenge.issued_at)
        with self.lock, self.writing():
            self.db.execute("DELETE FROM challenges WHERE expires_at < ?", (horizon,))
            self.db.execute(
                "INSERT INTO challenges (nonce, verifier_key_id, challenge, expires_at) VALUES (?, ?, ?, ?)",
                (challenge.nonce, challenge.verifier_key_id, encode(challenge.to_map()), challenge.expires_at),
            )

    _CHALLENGE_ROWS = ("SELECT c.challenge, s.id IS NOT NULL FROM challenges c LEFT JOIN submissions s "
                       "ON s.nonce = c.nonce WHERE c.verifier_key_id = ?")

    def challenges(self, verifier_key_id: str) -> list[tuple[Challenge, bool]]:
        """Every recorded challenge ``verifier_key_id`` issued, with whether a submission used its nonce."""
        with self.lock:
            rows = self.db.execute(self._CHALLENGE_ROWS + " ORDER BY c.expires_at", (verifier_key_id,)).fetchall()
        return [self._challenge_row(data, used) for data, used in rows]

    def challenge(self, nonce: bytes, verifier_key_id: str) -> tuple[Challenge, bool] | None:
        """The recorded challenge of ``nonce`` if ``verifier_key_id`` issued it (in this process or another
        serving the same data directory), with whether a submission used its nonce."""
        with self.lock:
            row = self.db.execute(self._CHALLENGE_ROWS + " AND c.nonce = ?", (verifier_key_id, nonce)).fetchone()
        return None if row is None else self._challenge_row(*row)

    def _challenge_row(self, data: bytes, used: object) -> tuple[Challenge, bool]:
        try:
            return Challenge.from_map(decode_map(bytes(data))), bool(used)
        except ProtocolError as e:
            raise RegistryCorrupt(f"{self.data_dir / DB_NAME}: a stored challenge is malformed ({e})") from e
