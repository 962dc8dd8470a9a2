"""Time in the registry's log (issue 17, item 3): the log's own time never goes backwards and is bounded by the
checkpoints around each entry; vendors' release dates are shown as their claims.

The backdating attack of the issue, by the log's operator signing with the live log key: an entry appended
after a checkpoint an auditor saved, but dated before it. It passed ``registry audit``; now the audit fails,
and the verifier refuses to open a data directory holding one.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from pawprint import cli
from protocol import (
    Checkpoint,
    LogCopy,
    LogEntry,
    MerkleTree,
    audit,
    audit_log,
    leaf_hash,
    parse_checkpoint,
    sign_checkpoint,
)
from tests.verifier.registry_kit import LOG_KEY, NOW, register, tiny_bundle, trust
from verifier import Registry, RegistryCorrupt
from verifier._store import DB_NAME


def _registry(path: Path, times: list[int]) -> Registry:
    """The clock reads ``times`` in turn (once at creation, once per append), then stays at the last."""
    clock = iter(times)
    return Registry(path, log_key=LOG_KEY, clock=lambda: next(clock, times[-1]))


def _note(origin: str, entries: list[bytes], size: int, time: int) -> str:
    return sign_checkpoint(Checkpoint(origin, size, MerkleTree(leaf_hash(e) for e in entries).root(size), time),
                           LOG_KEY).text


def test_a_clock_set_back_never_dates_an_entry_before_the_one_before_it(tmp_path: Path) -> None:
    reg = _registry(tmp_path / "d", [NOW + 100, NOW + 500, NOW + 200, NOW + 900])
    store = trust()
    for seed in (1, 2, 3):
        bundle = tiny_bundle(seed)
        reg.publish(register(bundle, f"m{seed}"), bundle, store)
    times = [LogEntry.from_bytes(e).logged_at for e in reg.entries(0)]
    assert times == [NOW + 500, NOW + 500, NOW + 900]  # the clock said NOW + 200: dated at the latest time
    note = reg.latest_checkpoint()
    assert parse_checkpoint(note).checkpoint.time == times[-1]
    reg.close()
    assert Registry(tmp_path / "d", log_key=LOG_KEY).size() == 3  # and it opens again


def _log_with_a_fresh_checkpoint(tmp_path: Path) -> tuple[Registry, list[bytes], str]:
    """Two entries; then the operator signs a fresher checkpoint of the same tree (as a log does to show it is
    alive, or for witnesses), which an auditor saves."""
    reg = _registry(tmp_path / "d", [NOW, NOW + 10, NOW + 20])
    store = trust()
    for seed in (1, 2):
        bundle = tiny_bundle(seed)
        reg.publish(register(bundle, f"m{seed}"), bundle, store)
    entries = reg.entries(0)
    return reg, entries, _note(reg.origin, entries, 2, NOW + 1000)


def test_an_entry_backdated_before_a_saved_checkpoint_fails_the_audit(tmp_path: Path) -> None:
    reg, entries, saved = _log_with_a_fresh_checkpoint(tmp_path)
    bundle = tiny_bundle(3)
    # Appended after the saved checkpoint, dated after the entry before it but before the saved checkpoint.
    backdated = LogEntry(register(bundle, "m3"), bundle.signed, NOW + 500, format=2).to_bytes()
    forged = [*entries, backdated]
    current = _note(reg.origin, forged, 3, NOW + 2000)
    proof = MerkleTree(leaf_hash(e) for e in forged).consistency_proof(2, 3)
    report = audit_log(saved, current, proof, forged, LOG_KEY.public_key)
    assert not report.ok
    assert report.problems == ("entry 2 is backdated: it was appended after the saved checkpoint (size 2, time "
                               f"{NOW + 1000}) but is dated {NOW + 500}, before it",)
    # The same entry dated after the saved checkpoint passes: the check is the date, not the entry.
    honest = [*entries, LogEntry(register(bundle, "m3"), bundle.signed, NOW + 1500, format=2).to_bytes()]
    report = audit_log(saved, _note(reg.origin, honest, 3, NOW + 2000),
                       MerkleTree(leaf_hash(e) for e in honest).consistency_proof(2, 3), honest, LOG_KEY.public_key)
    assert report.ok, report.problems
    # Dated before the entry before it: refused by the rules themselves.
    earlier = [*entries, LogEntry(register(bundle, "m3"), bundle.signed, NOW + 5, format=2).to_bytes()]
    problems = audit_log(saved, _note(reg.origin, earlier, 3, NOW + 2000),
                         MerkleTree(leaf_hash(e) for e in earlier).consistency_proof(2, 3), earlier,
                         LOG_KEY.public_key).problems
    assert problems and "time went backwards" in problems[0]


def test_an_entry_dated_after_a_checkpoint_that_includes_it_fails_the_audit(tmp_path: Path) -> None:
    reg, entries, _ = _log_with_a_fresh_checkpoint(tmp_path)
    early = _note(reg.origin, entries, 2, NOW + 15)  # signed before entry 1's time, yet includes it
    report = audit_log(early, reg.latest_checkpoint(), [], entries, LOG_KEY.public_key)
    assert report.problems == (f"entry 1 was logged after the saved checkpoint that includes it ({NOW + 20} > "
                               f"{NOW + 15})",)


def test_the_verifier_refuses_a_data_directory_with_a_backdated_entry(tmp_path: Path) -> None:
    """The operator rewrites entry 0's time to before the log existed and re-signs the checkpoint with the
    live key: the rules alone cannot see it (nothing precedes entry 0), the checkpoint of the empty log can."""
    reg = _registry(tmp_path / "d", [NOW + 100, NOW + 200])
    bundle = tiny_bundle(1)
    reg.publish(register(bundle, "m1"), bundle, trust())
    saved = reg.latest_checkpoint()
    empty = _empty_checkpoint(tmp_path / "d")
    origin = reg.origin
    reg.close()
    record = LogEntry.from_bytes(_leaf(tmp_path / "d", 0))
    moved = LogEntry(record.statement, record.manifest, NOW, record.linked_to, format=record.format).to_bytes()
    note = _note(origin, [moved], 1, NOW + 200)
    with contextlib.closing(sqlite3.connect(tmp_path / "d" / DB_NAME)) as db, db:
        db.execute("UPDATE entries SET leaf = ?, logged_at = ? WHERE idx = 0", (moved, NOW))
        db.execute("UPDATE checkpoints SET root = ?, note = ? WHERE size = 1",
                   (parse_checkpoint(note).checkpoint.root, note))
    with pytest.raises(RegistryCorrupt, match="entry 0 is backdated"):
        Registry(tmp_path / "d", log_key=LOG_KEY)
    # An auditor who saved the empty log's checkpoint finds it too.
    report = audit(LogCopy(note, [moved]), empty, LOG_KEY.public_key)
    assert any("entry 0 is backdated" in p for p in report.problems)
    assert saved != note


def _leaf(data: Path, index: int) -> bytes:
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db:
        return bytes(db.execute("SELECT leaf FROM entries WHERE idx = ?", (index,)).fetchone()[0])


def _empty_checkpoint(data: Path) -> str:
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db:
        return str(db.execute("SELECT note FROM checkpoints WHERE size = 0").fetchone()[0])


def _run(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def test_release_dates_are_shown_as_the_vendors_claims(tmp_path: Path) -> None:
    reg = _registry(tmp_path / "d", [NOW, NOW + 10])
    bundle = tiny_bundle(1)
    reg.publish(register(bundle, "acme-base", release_date="2001-01-01"), bundle, trust())
    reg.close()
    data = ("--data", str(tmp_path / "d"))
    shown = _run("registry", "show", "acme-base", *data)
    assert "release_date       2001-01-01 (the vendor's claim, not verified)" in shown
    assert "released 2001-01-01 (claimed)" in _run("registry", "list", *data)
    view = json.loads(_run("registry", "show", "acme-base", *data, "--json"))
    assert view["release_date"] == "2001-01-01" and "release_date" in view["vendor_claims"]
    assert view["logged_at"] == NOW + 10  # the log's own time, beside the claim
