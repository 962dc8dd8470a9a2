"""The registry's storage: publishing rules, revocations, proofs from the stored log, start-up checks that catch
a corrupt database or blob, atomicity under injected faults, concurrent publishers (threads and processes) and
a real kill -9 at every step of a publish."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol import (
    LogEntry,
    MerkleTree,
    RegistryStatement,
    check_published,
    decode_map,
    leaf_hash,
    open_checkpoint,
    parse_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from tests.protocol.test_merkle import naive_root
from tests.verifier.registry_kit import (
    LOG_KEY,
    NOW,
    OTHER_VENDOR,
    OWNER,
    STRANGER,
    VENDOR,
    register,
    revoke,
    tiny_bundle,
    trust,
)
from verifier import (
    AlreadyExists,
    InvalidSubmission,
    NotFound,
    PermissionDenied,
    Registry,
    RegistryCorrupt,
    RegistryError,
    Unauthenticated,
)
from verifier._store import DB_NAME

REPO = Path(__file__).resolve().parents[2]


def open_registry(path: Path, **kwargs: object) -> Registry:
    return Registry(path, log_key=LOG_KEY, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def publish(registry: Registry, seed: int, name: str | None = None) -> int:
    bundle = tiny_bundle(seed)
    return registry.publish(register(bundle, name or f"base-{seed}"), bundle, trust()).index


def checkpoints(path: Path) -> list[tuple[int, bytes, str]]:
    with sqlite3.connect(path / DB_NAME) as db:
        return [(int(s), bytes(r), str(n)) for s, r, n in db.execute("SELECT size, root, note FROM checkpoints "
                                                                      "ORDER BY size")]


def leaves(path: Path) -> list[bytes]:
    with sqlite3.connect(path / DB_NAME) as db:
        return [bytes(r[0]) for r in db.execute("SELECT leaf FROM entries ORDER BY idx")]


def assert_consistent(path: Path) -> int:
    """The stored log as an auditor would check it; returns its size."""
    data = leaves(path)
    tree = MerkleTree(leaf_hash(d) for d in data)
    rows = checkpoints(path)
    assert [s for s, _, _ in rows] == list(range(len(data) + 1)), "checkpoint sizes are not 0, 1, ..., n"
    for size, root, note in rows:
        cp = open_checkpoint(note, LOG_KEY.public_key)
        assert (cp.size, cp.root) == (size, root) and tree.root(size) == root
    for d in data:
        LogEntry.from_bytes(d).open(LOG_KEY.public_key)
    return len(data)


# ------------------------------------------------------------------------------------------- publishing
def test_publish_appends_once_and_answers_repeats_with_the_entry(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    bundle = tiny_bundle(1)
    first = registry.publish(register(bundle, "a"), bundle, trust())
    assert (first.index, first.existing) == (0, False)
    cp = check_published(first, register(bundle, "a"), LOG_KEY.public_key)
    assert cp.size == 1 and registry.counts() == {"bases": 1, "submissions": 0, "blobs": 1}
    # A retry (signed again, later) is the same registration: answered, not appended.
    again = registry.publish(register(bundle, "a", signed_at=NOW + 60), bundle, trust())
    assert (again.index, again.existing, registry.size()) == (0, True, 1)
    check_published(again, register(bundle, "a", signed_at=NOW + 60), LOG_KEY.public_key)

    before = registry.counts()
    other = tiny_bundle(2, OTHER_VENDOR)
    refusals: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: registry.publish(register(bundle, "b"), bundle, trust()), AlreadyExists, "registered as 'a'"),
        (lambda: registry.publish(register(bundle, "a", licence="mit"), bundle, trust()), AlreadyExists,
         "other metadata"),
        (lambda: registry.publish(register(other, "a", OTHER_VENDOR), other, trust()), AlreadyExists,
         "held by another vendor"),
        (lambda: registry.publish(register(tiny_bundle(3), "a"), tiny_bundle(3), trust()), AlreadyExists,
         "revoke it"),
        (lambda: registry.publish(register(tiny_bundle(4, OWNER), "o", OWNER), tiny_bundle(4, OWNER), trust()),
         PermissionDenied, "vendor"),
        (lambda: registry.publish(register(tiny_bundle(5, STRANGER), "s", STRANGER), tiny_bundle(5, STRANGER),
                                  trust()), Unauthenticated, "not known"),
        (lambda: registry.publish(register(tiny_bundle(6), "x"), tiny_bundle(7), trust()), InvalidSubmission,
         "another manifest"),
        (lambda: registry.publish(register(other, "x"), other, trust()), InvalidSubmission, "another key"),
        (lambda: registry.publish(revoke(bundle, "a"), bundle, trust()), InvalidSubmission, "'register'"),
    ]
    for call, error, match in refusals:
        with pytest.raises(error, match=match):
            call()
    assert registry.counts() == before and registry.size() == 1, "a refused publish left something stored"
    registry.close()


def test_revocation_is_appended_and_withdraws_the_base(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    a, b = tiny_bundle(10), tiny_bundle(11)
    publish(registry, 10, "a")
    publish(registry, 12, "c")
    with pytest.raises(NotFound):
        registry.revoke(revoke(b, "a"), trust())
    with pytest.raises(InvalidSubmission, match="'register'"):
        registry.revoke(register(a, "a"), trust())
    stolen = RegistryStatement.from_map(decode_map(revoke(a, "a").payload))
    with pytest.raises(InvalidSubmission):  # a revocation of the vendor's entry, signed by someone else
        registry.revoke(stolen.sign(OTHER_VENDOR), trust())
    other_claim = RegistryStatement("revoke", "a", OTHER_VENDOR.key_id, a.manifest_digest, NOW).sign(OTHER_VENDOR)
    with pytest.raises(PermissionDenied):
        registry.revoke(other_claim, trust())

    revoked = registry.revoke(revoke(a, "a"), trust())
    assert (revoked.index, revoked.existing) == (2, False)
    assert registry.revoke(revoke(a, "a", reason="again"), trust()).existing
    assert registry.base("a") is None and [e.name for e in registry.bases()] == ["c"]
    [entry_a] = [e for e in registry.bases(include_revoked=True) if e.name == "a"]
    assert entry_a.revoked_by == 2
    snap = registry.log_snapshot()
    assert [m.name for m in snap.bases] == ["c"] and snap.state.size == 3 and snap.indices == {
        tiny_bundle(12).manifest_digest: 1}
    with pytest.raises(AlreadyExists, match="revoked"):
        registry.publish(register(a, "a"), a, trust())
    # The vendor may register a new manifest under its own name once the old one is revoked.
    assert registry.publish(register(b, "a"), b, trust()).index == 3
    assert registry.find("a")[0] == 3 and registry.find("2")[0] == 2
    assert registry.find(a.manifest_digest.hex())[0] == 0
    with pytest.raises(NotFound):
        registry.find("nothing")
    registry.close()
    assert assert_consistent(tmp_path) == 4


def test_add_base_is_the_administrators_path(tmp_path: Path) -> None:
    registry = Registry(tmp_path, clock=lambda: NOW)  # creates log.key and log.pub
    bundle = tiny_bundle(20)
    entry = registry.add_base("admin-added", bundle, trust(), licence="mit", description="d")
    assert entry.index == 0 and entry.metadata["licence"] == "mit"
    assert registry.find("admin-added")[0] == 0
    _, data = registry.find("admin-added")
    opened = LogEntry.from_bytes(data).open(registry.log_public_key)
    assert opened.admitted_by_log and opened.vendor_key_id == VENDOR.key_id
    with pytest.raises(AlreadyExists, match="already registered"):
        registry.add_base("other", bundle, trust())
    with pytest.raises(InvalidSubmission):
        registry.add_base("42", tiny_bundle(21), trust())
    registry.close()
    (tmp_path / "log.key").unlink()
    keyless = Registry(tmp_path)  # reads fine without the key, but cannot append
    assert keyless.size() == 1
    with pytest.raises(RegistryError, match="key is not available"):
        keyless.add_base("x", tiny_bundle(22), trust())
    with pytest.raises(RegistryError, match="created with key"):
        Registry(tmp_path, log_key=OTHER_VENDOR)
    keyless.close()


def test_the_stored_log_serves_proofs_that_verify(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    for seed in range(17):
        publish(registry, seed)
        if seed % 5 == 4:
            registry.revoke(revoke(tiny_bundle(seed), f"base-{seed}"), trust())
    n = registry.size()
    data = registry.entries(0)
    assert len(data) == n == 20
    rows = checkpoints(tmp_path)
    for size, root, note in rows:
        assert naive_root(data[:size]) == root == open_checkpoint(note, LOG_KEY.public_key).root
        for index in range(size):
            entry, proof = registry.inclusion_proof(index, size)
            assert entry == data[index]
            verify_inclusion(leaf_hash(entry), index, size, proof, root)
        for old, old_root, _ in rows[: size + 1]:
            verify_consistency(old, size, old_root, root, registry.consistency_proof(old, size))
    from verifier import OutOfRange

    for bad in (lambda: registry.inclusion_proof(n, n), lambda: registry.inclusion_proof(0, n + 1),
                lambda: registry.consistency_proof(3, 2), lambda: registry.consistency_proof(0, n + 1)):
        with pytest.raises(OutOfRange):
            bad()
    registry.close()

    again = open_registry(tmp_path)  # a restart replays the log and serves the same
    assert again.latest_checkpoint() == rows[-1][2] and again.entries(0) == data
    again.close()


# ------------------------------------------------------------------------------------ start-up checks
def _sql(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    db = sqlite3.connect(path / DB_NAME)
    with db:
        for sql, params in statements:
            db.execute(sql, params)
    db.close()


def _other_valid_leaf() -> bytes:
    bundle = tiny_bundle(999)
    return LogEntry(register(bundle, "base-1"), bundle.signed, NOW).to_bytes()


def _flip_last(leaf: bytes) -> bytes:
    return leaf[:-1] + bytes([leaf[-1] ^ 1])


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "an entry's byte changed": (
        lambda p: _sql(p, ("UPDATE entries SET leaf = ? WHERE idx = 1", (_flip_last(leaves(p)[1]),))), "entry 1"),
    "an entry replaced by another validly signed one": (
        lambda p: _sql(p, ("UPDATE entries SET leaf = ? WHERE idx = 1", (_other_valid_leaf(),))),
        "entry 1|no longer hash"),
    "an entry deleted": (lambda p: _sql(p, ("DELETE FROM entries WHERE idx = 1", ())), "removed"),
    "the last entry deleted": (lambda p: _sql(p, ("DELETE FROM entries WHERE idx = 2", ())), "removed"),
    "an index column changed": (lambda p: _sql(p, ("UPDATE entries SET name = 'x' WHERE idx = 0", ())),
                                "index columns"),
    "a checkpoint's signature changed": (
        lambda p: _sql(p, ("UPDATE checkpoints SET note = ? WHERE size = 2",
                           (checkpoints(p)[2][2][:-10] + "AAAAAAAAA\n",))), "checkpoint of size 2"),
    "the latest checkpoint deleted": (lambda p: _sql(p, ("DELETE FROM checkpoints WHERE size = 3", ())),
                                      "without a checkpoint"),
    "a blob changed": (lambda p: _corrupt_blob(p, delete=False), "corrupt"),
    "a blob deleted": (lambda p: _corrupt_blob(p, delete=True), "missing"),
    "the database overwritten": (lambda p: _garble_database(p), "SQLite database|corrupt"),
}


def _corrupt_blob(path: Path, *, delete: bool) -> None:
    [blob] = [p for p in (path / "blobs").glob("*/*") if p.name == Registry(path, create=False).bases()[1].terms_blob]
    if delete:
        blob.unlink()
        return
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.chmod(0o600)
    blob.write_bytes(bytes(data))


def _garble_database(path: Path) -> None:
    db = path / DB_NAME
    data = bytearray(db.read_bytes())
    data[:100] = os.urandom(100)  # the header
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("what", list(CORRUPTIONS))
def test_start_up_refuses_a_corrupt_registry_with_a_clear_message(tmp_path: Path, what: str) -> None:
    registry = open_registry(tmp_path)
    for seed in range(3):
        publish(registry, seed)
    registry.close()
    corrupt, message = CORRUPTIONS[what]
    corrupt(tmp_path)
    with pytest.raises(RegistryCorrupt, match=message) as info:
        open_registry(tmp_path)
    assert str(info.value), what


def test_a_database_that_fails_to_open_on_a_full_disk_is_blamed_on_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a WAL database writes, so on a full disk SQLite fails with "disk I/O error": the operator is told
    the disk is full (nothing to restore), not that the database is corrupt. Here the failure is a garbled
    header and the full disk is what ``statvfs`` reports; the real case is ``python -m benchmarks.disk_full``."""
    registry = open_registry(tmp_path)
    publish(registry, 1)
    registry.close()
    _garble_database(tmp_path)
    import verifier._store as store_module

    monkeypatch.setattr(store_module, "_free_bytes", lambda _path: 4096)
    with pytest.raises(RegistryError, match=r"its disk is full \(4,096 bytes free.*free some space") as info:
        open_registry(tmp_path)
    assert not isinstance(info.value, RegistryCorrupt) and "backup" not in str(info.value)
    monkeypatch.setattr(store_module, "_free_bytes", lambda _path: 10 << 30)
    with pytest.raises(RegistryCorrupt, match="restore it from a backup"):
        open_registry(tmp_path)


def test_orphan_blobs_are_collected_at_start_up(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    publish(registry, 1)
    orphan = registry.blobs.put(b"left by a crash between the blob and its transaction")
    assert registry.counts()["blobs"] == 2
    registry.close()
    again = open_registry(tmp_path)
    assert again.counts()["blobs"] == 1 and not again.blobs.path(orphan).exists()
    again.close()


def test_a_failed_append_rolls_back_and_the_log_goes_on(tmp_path: Path) -> None:
    failing = {"point": ""}

    def fault(point: str) -> None:
        if point == failing["point"]:
            raise RuntimeError(f"injected at {point}")

    registry = open_registry(tmp_path, fault=fault)
    publish(registry, 0)
    for point in ("blob-written", "entry-inserted", "checkpoint-inserted"):
        failing["point"] = point
        with pytest.raises(RuntimeError, match=point):
            publish(registry, 1)
        assert registry.size() == 1, point
    failing["point"] = "committed"  # after the commit: the caller sees an error, the entry is in
    with pytest.raises(RuntimeError):
        publish(registry, 1)
    assert registry.size() == 2
    failing["point"] = ""
    assert publish(registry, 1) == 1  # the retry is answered with the committed entry
    assert publish(registry, 2) == 2
    registry.close()
    assert assert_consistent(tmp_path) == 3


# ----------------------------------------------------------------------------- concurrency and crashes
def _publisher(data: Path, first: int, count: int, crash_at: str | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.verifier.registry_kit", str(data), str(first), str(count)]
    if crash_at:
        argv += ["--crash-at", crash_at]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_concurrent_publishers_never_shrink_or_fork_the_log(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    processes = [_publisher(tmp_path, 1000 + 100 * i, 6) for i in range(2)]
    seen: list[str] = []
    done = threading.Event()

    def observe() -> None:
        while not done.is_set():
            seen.append(registry.latest_checkpoint())
            time.sleep(0.005)

    def publish_many(first: int) -> None:
        for seed in range(first, first + 6):
            publish(registry, seed)

    observer = threading.Thread(target=observe)
    observer.start()
    threads = [threading.Thread(target=publish_many, args=(100 * i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for p in processes:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    done.set()
    observer.join()

    total = 3 * 6 + 2 * 6
    assert registry.size() == total and assert_consistent(tmp_path) == total
    sizes = [parse_checkpoint(n).checkpoint.size for n in seen]
    assert sizes == sorted(sizes), "an observer saw the log shrink"
    final = MerkleTree(leaf_hash(d) for d in registry.entries(0))
    for note in seen:  # every checkpoint anyone saw is a prefix of the final log: no fork
        cp = open_checkpoint(note, LOG_KEY.public_key)
        verify_consistency(cp.size, total, cp.root, final.root(), registry.consistency_proof(cp.size, total))
    assert len({e.name for e in registry.bases()}) == total
    registry.close()


POINTS = ("blob-written", "entry-inserted", "checkpoint-inserted", "committed")


def test_kill_9_at_each_step_of_a_publish_leaves_the_old_or_the_new_state(tmp_path: Path) -> None:
    dirs = {point: tmp_path / point for point in POINTS}
    for d in dirs.values():
        registry = open_registry(d)
        publish(registry, 0)
        publish(registry, 1)
        registry.close()
    # The four crashes run side by side: each is its own registry.
    procs = {point: _publisher(d, 50, 1, crash_at=point) for point, d in dirs.items()}
    for point, p in procs.items():
        p.communicate(timeout=60)
        assert p.returncode == -signal.SIGKILL, point
    for point, d in dirs.items():
        expected = 3 if point == "committed" else 2
        assert assert_consistent(d) == expected, point
        registry = open_registry(d)  # restarts cleanly, collecting the orphan blob if there is one
        assert registry.size() == expected
        assert registry.counts() == {"bases": expected, "submissions": 0, "blobs": expected}, point
        assert publish(registry, 50) == 2  # retrying the killed publish: appended, or answered
        assert publish(registry, 51) == 3
        registry.close()


def test_kill_9_at_an_arbitrary_moment(tmp_path: Path) -> None:
    open_registry(tmp_path).close()
    p = _publisher(tmp_path, 0, 500)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    printed = [int(p.stdout.readline()) for _ in range(5)]
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    size = assert_consistent(tmp_path)
    assert printed == list(range(5)) and size >= 5
    registry = open_registry(tmp_path)
    assert registry.size() == size and registry.counts()["blobs"] == size
    assert publish(registry, 10_000) == size
    registry.close()
