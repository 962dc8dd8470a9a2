"""A log written before C2SP checkpoints keeps working: its stored pawprint-1 checkpoint notes still verify at
start-up, new appends are signed as C2SP notes, and an auditor's saved pawprint-1 checkpoint audits against a
new C2SP one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocol import (
    CHECKPOINT_KIND,
    NoteSignature,
    SignedCheckpoint,
    audit_log,
    binding_key_hash,
    legacy_key_hash,
    open_checkpoint,
    parse_checkpoint,
)
from tests.verifier.registry_kit import LOG_KEY, NOW, register, tiny_bundle, trust
from verifier import Registry
from verifier._store import DB_NAME


def _publish(registry: Registry, seed: int) -> None:
    bundle = tiny_bundle(seed)
    registry.publish(register(bundle, f"base-{seed}"), bundle, trust())


def _legacy(note: str) -> str:
    """The note as pawprint 1 signed it: one line, the log key over the kind ``checkpoint``."""
    cp = parse_checkpoint(note).checkpoint
    line = NoteSignature(cp.origin, legacy_key_hash(LOG_KEY.public_key), LOG_KEY.sign(CHECKPOINT_KIND,
                                                                                      cp.body().encode()))
    return SignedCheckpoint(cp, (line,)).text


def _notes(path: Path) -> list[str]:
    with sqlite3.connect(path / DB_NAME) as db:
        return [str(r[0]) for r in db.execute("SELECT note FROM checkpoints ORDER BY size")]


def test_an_old_log_opens_appends_c2sp_checkpoints_and_audits(tmp_path: Path) -> None:
    registry = Registry(tmp_path, log_key=LOG_KEY, clock=lambda: NOW)
    for seed in range(2):
        _publish(registry, seed)
    registry.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:  # what a pawprint-1 verifier had stored
        for size, note in db.execute("SELECT size, note FROM checkpoints").fetchall():
            db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (_legacy(str(note)), size))
    saved = _notes(tmp_path)[-1]
    assert len(parse_checkpoint(saved).signatures) == 1  # an auditor saved this one before the upgrade

    registry = Registry(tmp_path, log_key=LOG_KEY, clock=lambda: NOW + 10)  # start-up re-checks every note
    assert registry.log.verifier_key() is None  # the latest is still a pawprint-1 note
    _publish(registry, 2)
    notes = _notes(tmp_path)
    current = parse_checkpoint(notes[-1])
    origin = current.checkpoint.origin
    assert [s.key_hash for s in current.signatures][1] == binding_key_hash(origin, LOG_KEY.public_key)
    assert registry.log.verifier_key() is not None
    for note in notes:
        open_checkpoint(note, LOG_KEY.public_key, origin=origin)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        entries = [bytes(r[0]) for r in db.execute("SELECT leaf FROM entries ORDER BY idx")]
    report = audit_log(saved, notes[-1], registry.consistency_proof(2, 3), entries, LOG_KEY.public_key)
    assert report.ok, report.problems
    registry.close()
    Registry(tmp_path, log_key=LOG_KEY, clock=lambda: NOW + 20).close()  # a mixed log opens too
