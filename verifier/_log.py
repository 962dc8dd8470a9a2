"""The registry's transparency log on disk: SQLite tables, the Merkle tree over them, signed checkpoints.

Three tables in the registry's database (``verifier._store`` owns the connection)::

    log_meta      one row, fixed when the log is created: its origin and public key
    entries       one row per leaf, idx 0, 1, 2, ... without gaps; ``leaf`` holds the ``LogEntry`` bytes, the
                  only thing the tree covers; action, name, vendor key id, manifest digest and time are an index
                  over it (checked against it at start-up), ``terms_blob`` names the private terms blob
    checkpoints   one row per tree size: the signed checkpoint note, with its root and time; a C2SP
                  tlog-checkpoint signed note (``protocol._checkpoint``) signed by the log's checkpoint key
                  (derived from the log key for that use only) and bound to the log key; rows written before
                  C2SP checkpoints keep their pawprint-1 notes, which still verify

**Appending** is one SQLite transaction begun with ``BEGIN IMMEDIATE``, which takes the database's single
writer lock across threads and processes: read what other processes appended since, check the registry's
rules (``protocol.LogRules``), insert the entry at the next index, sign the checkpoint of the new size and
insert it, commit. An entry and its checkpoint therefore exist together or not at all, indices stay dense,
and the size never goes backwards; a process killed at any point leaves the old state or the new one.

**Opening** replays the whole log: every entry parsed and its signatures checked, the rules applied in
order (``protocol.LogRules``: names, namespaces, links, time never going backwards), the tree rebuilt, and
every stored checkpoint checked against the tree (root and signature) and against the entries' times (an
entry is dated no later than the first checkpoint that includes it and no earlier than the last that does
not). Entries are appended in the current format (``pawprint-log-entry/2``, with the link the rules derive);
a log holding entries of the first format opens as before. Anything
that does not hold is ``RegistryCorrupt``: a verifier must not serve a log it cannot vouch for.

This module never updates or deletes a row of these tables: there is no code path that could.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from protocol import (
    Checkpoint,
    LogEntry,
    LogRules,
    MerkleError,
    MerkleTree,
    NoteSignature,
    PrivateKey,
    ProtocolError,
    PublicKey,
    RegistryEntry,
    RegistryStatement,
    SignatureError,
    SignedCheckpoint,
    SignedMessage,
    leaf_hash,
    parse_checkpoint,
    sign_checkpoint,
    verifier_key,
    with_cosignatures,
)
from verifier.errors import OutOfRange, RegistryCorrupt, RegistryError, StorageFull

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def full_disk_refused() -> Iterator[None]:
    """A full disk, as SQLite ("database or disk is full") or a file write (ENOSPC, EDQUOT, EFBIG) reports it,
    becomes ``StorageFull``: the caller has stored nothing and says so."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if "full" in str(e).lower():
            raise StorageFull("the verifier's storage is full: nothing was stored; try again later") from e
        raise
    except OSError as e:
        if e.errno in _DISK_FULL_ERRNOS:
            raise StorageFull("the verifier's storage is full: nothing was stored; try again later") from e
        raise


# Called with the name of each step of an append ("entry-inserted", "checkpoint-inserted", "committed"):
# fault-injection tests kill the process there.
FaultHook = Callable[[str], None]

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    origin TEXT NOT NULL,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    name TEXT NOT NULL,
    vendor_key_id TEXT NOT NULL,
    manifest_sha256 BLOB NOT NULL,
    logged_at INTEGER NOT NULL,
    terms_blob TEXT,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_name ON entries (name, idx);
CREATE INDEX IF NOT EXISTS entries_by_manifest ON entries (manifest_sha256, idx);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    time INTEGER NOT NULL,
    note TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class LogMeta:
    """What identifies a log: the origin line of its checkpoints and the key that signs them."""

    origin: str
    public_key: PublicKey


def default_origin(public_key: PublicKey) -> str:
    return f"pawprint/registry/{public_key.key_id[:16]}"


def read_meta(db: sqlite3.Connection) -> LogMeta | None:
    row = db.execute("SELECT origin, public_key FROM log_meta WHERE id = 1").fetchone()
    if row is None:
        return None
    try:
        return LogMeta(str(row[0]), PublicKey(bytes(row[1])))
    except ProtocolError as e:
        raise RegistryCorrupt(f"the log's stored public key is malformed ({e})") from e


def initialise(db: sqlite3.Connection, key: PrivateKey, origin: str, now: int) -> LogMeta:
    """Create the log (meta row and the checkpoint of the empty tree), unless another process just did."""
    db.execute("BEGIN IMMEDIATE")
    try:
        meta = read_meta(db)
        if meta is None:
            meta = LogMeta(origin, key.public_key)
            empty = sign_checkpoint(Checkpoint(origin, 0, MerkleTree().root(), now), key)
            db.execute("INSERT INTO log_meta (id, origin, public_key, created_at) VALUES (1, ?, ?, ?)",
                       (origin, key.public_key.raw, now))
            db.execute("INSERT INTO checkpoints (size, root, time, note) VALUES (0, ?, ?, ?)",
                       (empty.checkpoint.root, now, empty.text))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return meta


@dataclass(frozen=True)
class Appended:
    """An entry just appended: its index, the opened entry and the signed checkpoint that first includes it."""

    index: int
    entry: RegistryEntry
    checkpoint: SignedCheckpoint


class TransparencyLog:
    """The log over one database connection. Not thread-safe by itself: the registry serialises calls.

    ``checked`` (the default) opens every entry and applies the rules, as the registry needs to append;
    unchecked, only leaf hashes are loaded (an auditor's local read of a log that may be broken).
    """

    def __init__(self, db: sqlite3.Connection, meta: LogMeta, key: PrivateKey | None, *, checked: bool = True,
                 fault: FaultHook | None = None) -> None:
        if key is not None and key.public_key.raw != meta.public_key.raw:
            raise RegistryError(f"the log was created with key {meta.public_key.key_id}, not {key.key_id}")
        self._db = db
        self.meta = meta
        self._key = key
        self._checked = checked
        self._fault = fault or (lambda _point: None)
        self._tree = MerkleTree()
        self._rules = LogRules()
        self._stale = True

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """False for a log opened unchecked (read-only, as a local auditor opens a possibly broken one)."""
        return self._checked

    @property
    def rules(self) -> LogRules:
        """The registry's rules state after every entry read so far (call ``sync`` first)."""
        self.sync()
        return self._rules

    def size(self) -> int:
        self.sync()
        return len(self._tree)

    def sync(self) -> None:
        """Read the entries appended since (by this process or another), checking each one."""
        if not self._stale:
            self._read_new()
            return
        self._tree, self._rules, self._stale = MerkleTree(), LogRules(), False
        # Entries and checkpoints read in one snapshot: another process may append between two queries.
        own = not self._db.in_transaction
        if own:
            self._db.execute("BEGIN")
        try:
            self._read_new()
            if self._checked:
                self._check_checkpoints()
        except BaseException:
            self._stale = True
            raise
        finally:
            if own:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("COMMIT")

    def latest(self) -> tuple[int, str]:
        """The size and note of the latest checkpoint, with the tree read at least that far."""
        row = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        if row is None:
            raise RegistryCorrupt("the log has no checkpoint at all")
        size, note = int(row[0]), str(row[1])
        if size > self.size():
            raise RegistryCorrupt(f"the latest checkpoint covers {size} entries, but only {len(self._tree)} exist")
        return size, note

    def verifier_key(self) -> str | None:
        """The log's C2SP note verifier key (``<origin>+<key ID>+<key>``), what a witness or Go's
        ``note.NewVerifier`` checks its checkpoints with: the checkpoint key named by the latest checkpoint's
        binding line (verified with the log key); None while the latest is a note from before C2SP."""
        _size, note = self.latest()
        try:
            key = parse_checkpoint(note).checkpoint_key(self.meta.public_key)
        except ProtocolError as e:
            raise RegistryCorrupt(f"the latest checkpoint does not verify ({e})") from e
        return None if key is None else verifier_key(self.meta.origin, key)

    def leaf(self, index: int) -> bytes:
        row = self._db.execute("SELECT leaf FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise OutOfRange(f"the log has no entry {index}")
        return bytes(row[0])

    def leaves(self, start: int, end: int) -> list[bytes]:
        rows = self._db.execute("SELECT idx, leaf FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                                (start, end)).fetchall()
        if [int(r[0]) for r in rows] != list(range(start, min(end, start + len(rows)))):
            raise RegistryCorrupt("the log's entries are not numbered without gaps")
        return [bytes(r[1]) for r in rows]

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        size = self.size()
        if not 0 <= index < tree_size <= size:
            raise OutOfRange(f"no inclusion proof for entry {index} in a tree of {tree_size}: the log has {size}")
        try:
            return self._tree.inclusion_proof(index, tree_size)
        except MerkleError as e:
            raise OutOfRange(str(e)) from e

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        size = self.size()
        if not 0 <= old_size <= new_size <= size:
            raise OutOfRange(f"no consistency proof from {old_size} to {new_size}: the log has {size} entries")
        try:
            return self._tree.consistency_proof(old_size, new_size)
        except MerkleError as e:
            raise OutOfRange(str(e)) from e

    def root(self, tree_size: int) -> bytes:
        return self._tree.root(tree_size)

    # -- appending -----------------------------------------------------------------------------------------
    def sign_statement(self, statement: RegistryStatement) -> SignedMessage:
        """An administrator's statement, signed by the log's key (``pawprint registry add``)."""
        if self._key is None:
            raise RegistryError("the log's private key is not available here: cannot sign for the log")
        return statement.sign(self._key)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction: the writer lock, the entries others appended, then commit or roll back."""
        if self._key is None:
            raise RegistryError("the log's private key is not available here: cannot append")
        if not self._checked:
            raise RegistryError("this registry was opened unchecked (read-only): cannot append")
        with full_disk_refused():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self.sync()
                yield
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                self._stale = True  # the tree and rules may hold what was rolled back: read them again
                raise
        self._fault("committed")

    def append(self, statement: SignedMessage, manifest: SignedMessage | None, *, terms_blob: str | None,
               now: int) -> Appended:
        """Append an entry and its checkpoint; inside ``writing()`` only. Raises ``EntryError`` if the entry
        breaks the registry's rules (callers check first, to answer with the right status)."""
        if not self._db.in_transaction or self._key is None:
            raise RegistryError("append outside a write transaction")
        last_size, last_note = self.latest()
        index = len(self._tree)
        if last_size != index:
            raise RegistryCorrupt(f"the latest checkpoint covers {last_size} entries, but {index} exist")
        # The log's time never goes backwards: a clock set back dates the entry at the latest checkpoint.
        logged_at = max(int(now), parse_checkpoint(last_note).checkpoint.time, self._rules.last_time)
        record = LogEntry(statement, manifest, logged_at, format=2)
        entry = record.open(self.meta.public_key)
        if entry.manifest is not None:  # the earliest registration sharing its weights or terms
            link = self._rules.link_for(entry.manifest)
            if link is not None:
                record = LogEntry(statement, manifest, logged_at, link, format=2)
                entry = record.open(self.meta.public_key)
        self._rules.check(entry)
        data = record.to_bytes()
        self._db.execute(
            "INSERT INTO entries (idx, action, name, vendor_key_id, manifest_sha256, logged_at, terms_blob, leaf) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (index, entry.action, entry.name, entry.vendor_key_id, entry.manifest_sha256, logged_at, terms_blob,
             data),
        )
        self._fault("entry-inserted")
        self._tree.append(leaf_hash(data))
        self._rules.apply(index, entry)
        checkpoint = sign_checkpoint(Checkpoint(self.meta.origin, index + 1, self._tree.root(), logged_at),
                                     self._key)
        self._db.execute("INSERT INTO checkpoints (size, root, time, note) VALUES (?, ?, ?, ?)",
                         (index + 1, checkpoint.checkpoint.root, logged_at, checkpoint.text))
        self._fault("checkpoint-inserted")
        return Appended(index, entry, checkpoint)

    def add_cosignatures(self, size: int, lines: Sequence[NoteSignature]) -> str:
        """Store witnesses' cosignature lines in the note of the checkpoint of ``size`` (each replacing an older
        line by the same witness); the caller has verified them. Returns the new note."""
        with self.writing():
            row = self._db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
            if row is None:
                raise RegistryError(f"the log has no checkpoint of size {size}")
            note = with_cosignatures(parse_checkpoint(str(row[0])), lines).text
            self._db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (note, size))
        return note

    # -- checking ------------------------------------------------------------------------------------------
    def _read_new(self) -> None:
        start = len(self._tree)
        rows = self._db.execute(
            "SELECT idx, action, name, vendor_key_id, manifest_sha256, logged_at, leaf FROM entries "
            "WHERE idx >= ? ORDER BY idx", (start,)
        ).fetchall()
        for expected, row in enumerate(rows, start):
            index, leaf = int(row[0]), bytes(row[6])
            if index != expected:
                raise RegistryCorrupt(f"the log has no entry {expected} but has entry {index}: entries were removed")
            if self._checked:
                self._check_entry(index, row[1:6], leaf)
            self._tree.append(leaf_hash(leaf))

    def _check_entry(self, index: int, columns: tuple[object, ...], leaf: bytes) -> None:
        try:
            entry = LogEntry.from_bytes(leaf).open(self.meta.public_key)
        except SignatureError as e:
            raise RegistryCorrupt(f"entry {index}: {e}: the entry was altered") from e
        except ProtocolError as e:
            raise RegistryCorrupt(f"entry {index} is not a valid log entry ({e})") from e
        expected = (entry.action, entry.name, entry.vendor_key_id, entry.manifest_sha256, entry.logged_at)
        digest = columns[3]
        found = (columns[0], columns[1], columns[2], bytes(digest) if isinstance(digest, bytes) else digest,
                 columns[4])
        if found != expected:
            raise RegistryCorrupt(f"entry {index}: the database's index columns do not match the entry itself")
        try:
            self._rules.check(entry)
        except ProtocolError as e:
            raise RegistryCorrupt(f"entry {index} breaks the registry's rules: {e}") from e
        self._rules.apply(index, entry)

    def _entry_times(self) -> list[int]:
        rows = self._db.execute("SELECT logged_at FROM entries WHERE idx < ? ORDER BY idx",
                                (len(self._tree),)).fetchall()
        return [int(r[0]) for r in rows]

    def _check_checkpoints(self) -> None:
        """Every stored checkpoint is signed by the log and commits to exactly the entries stored."""
        rows = self._db.execute("SELECT size, root, time, note FROM checkpoints ORDER BY size").fetchall()
        if not rows:
            raise RegistryCorrupt("the log has no checkpoint at all")
        last_time = 0
        times = self._entry_times()
        for size, root, time, note in rows:
            try:
                cp = parse_checkpoint(str(note)).verify(self.meta.public_key, origin=self.meta.origin)
            except SignatureError as e:
                raise RegistryCorrupt(f"the checkpoint of size {size}: its signature does not verify") from e
            except ProtocolError as e:
                raise RegistryCorrupt(f"the checkpoint of size {size} is malformed ({e})") from e
            if (cp.size, cp.root, cp.time) != (size, bytes(root), time):
                raise RegistryCorrupt(f"the checkpoint of size {size}: its columns do not match its note")
            if size > len(self._tree):
                raise RegistryCorrupt(f"a checkpoint covers {size} entries, but only {len(self._tree)} exist: "
                                      "entries were removed")
            if self._tree.root(size) != cp.root:
                raise RegistryCorrupt(f"the entries no longer hash to the root of the checkpoint of size {size}: "
                                      "an entry was altered, removed or reordered")
            if cp.time < last_time:
                raise RegistryCorrupt(f"the checkpoint of size {size} is older than the one before it")
            if size > 0 and times[size - 1] > cp.time:
                raise RegistryCorrupt(f"entry {size - 1} is dated after the checkpoint of size {size}, which "
                                      "includes it")
            if size < len(times) and times[size] < cp.time:
                raise RegistryCorrupt(f"entry {size} is backdated: it is dated before the checkpoint of size "
                                      f"{size}, which does not include it")
            last_time = cp.time
        if int(rows[-1][0]) != len(self._tree):
            raise RegistryCorrupt(f"{len(self._tree) - int(rows[-1][0])} entries were appended without a checkpoint")
