"""The hostile-input corpus (``tests/corpus/``, written by ``scripts/make_corpus.py``), case by case.

Each case goes through the public entry point that reads its kind in real use: ``pawprint bundle verify``'s
``Bundle.from_bytes`` + ``check_bundle``; the verifier's header check for an online manifest; an auditor's
``open_receipt``, ``open_checkpoint``, ``verify_inclusion``, ``verify_consistency``, ``audit_log`` (a failed
audit raised as ``LogCheckFailed``); ``LogEntry.open``; ``TrustStore.from_json``; ``load_invariants``. A valid
case must be accepted; an invalid one refused with the recorded error class (or a subclass of it) and a message
containing the recorded text. Cases marked ``known_bug`` document a refusal that currently escapes as another
exception; they are strict xfails, so fixing the bug turns them red until the marker is removed from the
generator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from owner._invfile import load_invariants
from protocol import (
    RECEIPT_FORMAT,
    Bundle,
    LogCheckFailed,
    LogEntry,
    ProbeSpec,
    PublicKey,
    RegistryState,
    Role,
    SignedMessage,
    SubmissionLimits,
    TrustStore,
    audit_log,
    from_hex,
    leaf_hash,
    open_challenge,
    open_checkpoint,
    open_receipt,
    open_statement,
    verify_consistency,
    verify_inclusion,
)
from protocol._pb import pawprint_pb2
from verifier import ChallengeStore, check_bundle, check_header
from verifier._server import _from_pb

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
INDEX = json.loads((CORPUS / "index.json").read_text(encoding="utf-8"))
CONTEXT: dict[str, Any] = INDEX["context"]
CASES: list[dict[str, Any]] = INDEX["cases"]

TRUST = TrustStore.from_json((CORPUS / CONTEXT["trust"]).read_bytes())
VERIFIER_KEY = PublicKey.from_hex(CONTEXT["verifier_public_key"])
LOG_KEY = PublicKey.from_hex(CONTEXT["log_public_key"])
ORIGIN: str = CONTEXT["origin"]


def _challenges() -> ChallengeStore:
    """A challenge store that issued the corpus's challenges (one live, one used, one expired, one tight, one
    asking for sketches)."""
    clock = [0.0]
    pending: list[bytes] = []
    store = ChallengeStore(ttl_s=CONTEXT["ttl_s"], clock=lambda: clock[0], rng=lambda n: pending.pop())
    spec = CONTEXT["challenge"]
    for ch in CONTEXT["challenges"]:
        clock[0] = ch["issued_at"]
        pending.append(bytes.fromhex(ch["nonce"]))
        limits = SubmissionLimits() if ch["limits"] is None else SubmissionLimits.from_map(ch["limits"])
        store.issue(
            verifier_key_id=VERIFIER_KEY.key_id,
            probe_sets=tuple(ProbeSpec.from_map(p) for p in spec["probe_sets"]),
            layers=spec["layers"], method=spec["method"], limits=limits,
            registry=RegistryState(spec["registry"]["size"], bytes.fromhex(spec["registry"]["root"])),
            sketch=ch.get("sketch", 0),
        )
        if ch["used"]:  # a submission answered it and was recorded
            store.redeem(bytes.fromhex(ch["nonce"]))
            store.settle(bytes.fromhex(ch["nonce"]))
    clock[0] = CONTEXT["check_at"]
    return store


def _signed_pb(data: bytes) -> SignedMessage:
    return _from_pb(pawprint_pb2.SignedPayload.FromString(data))


# ------------------------------------------------------------------------------------ one reader per kind
def read_bundle(path: Path) -> object:
    roles = tuple(Role(r) for r in CONTEXT["bundle_roles"])
    return check_bundle(Bundle.from_bytes(path.read_bytes()), TRUST, roles)


def read_manifest(path: Path) -> object:
    return check_header(_signed_pb(path.read_bytes()), trust=TRUST, challenges=_challenges(),
                        limits=SubmissionLimits())


def read_challenge(path: Path) -> object:
    return open_challenge(_signed_pb(path.read_bytes()), VERIFIER_KEY)


def read_receipt(path: Path) -> object:
    receipt = open_receipt(SignedMessage.from_bytes(path.read_bytes(), RECEIPT_FORMAT), VERIFIER_KEY)
    if receipt.checkpoint is not None:
        open_checkpoint(receipt.checkpoint, LOG_KEY, origin=ORIGIN)
    return receipt


def read_checkpoint(path: Path) -> object:
    return open_checkpoint(path.read_bytes(), LOG_KEY, origin=ORIGIN)


def read_inclusion_proof(path: Path) -> object:
    doc = json.loads(path.read_bytes())
    checkpoint = open_checkpoint(doc["checkpoint"], LOG_KEY, origin=ORIGIN)
    entry = from_hex(doc["entry"])
    verify_inclusion(leaf_hash(entry), doc["index"], checkpoint.size, [from_hex(p) for p in doc["proof"]],
                     checkpoint.root)
    return LogEntry.from_bytes(entry).open(LOG_KEY)


def read_consistency_proof(path: Path) -> object:
    doc = json.loads(path.read_bytes())
    old = open_checkpoint(doc["old"], LOG_KEY, origin=ORIGIN)
    new = open_checkpoint(doc["new"], LOG_KEY, origin=ORIGIN)
    verify_consistency(old.size, new.size, old.root, new.root, [from_hex(p) for p in doc["proof"]])
    return new


def read_audit(path: Path) -> object:
    doc = json.loads(path.read_bytes())
    report = audit_log(doc["saved"], doc["current"], [from_hex(p) for p in doc["proof"]],
                       [from_hex(e) for e in doc["entries"]], LOG_KEY, trust=TRUST)
    if not report.ok:  # what the auditor's command reports as a failed check
        raise LogCheckFailed("; ".join(report.problems))
    return report


def read_statement(path: Path) -> object:
    signed = _signed_pb(path.read_bytes())
    statement = open_statement(signed)
    TRUST.require(signed.public_key.key_id, Role.VENDOR)
    return statement


def read_log_entry(path: Path) -> object:
    return LogEntry.from_bytes(path.read_bytes()).open(LOG_KEY)


def read_trust(path: Path) -> object:
    return TrustStore.from_json(path.read_bytes())


def read_invariants(path: Path) -> object:
    return load_invariants(path)


READERS: dict[str, Callable[[Path], object]] = {
    "bundle": read_bundle,
    "manifest": read_manifest,
    "challenge": read_challenge,
    "receipt": read_receipt,
    "checkpoint": read_checkpoint,
    "inclusion_proof": read_inclusion_proof,
    "consistency_proof": read_consistency_proof,
    "audit": read_audit,
    "statement": read_statement,
    "log_entry": read_log_entry,
    "trust": read_trust,
    "invariants": read_invariants,
}


def _param(case: dict[str, Any]) -> Any:
    marks = [pytest.mark.xfail(reason=case["known_bug"], strict=True)] if case.get("known_bug") else []
    return pytest.param(case, id=case["file"], marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    read = READERS[case["kind"]]
    path = CORPUS / case["file"]
    if case["valid"]:
        read(path)
        return
    with pytest.raises(Exception) as caught:
        read(path)
    # By name, up the class's ancestry: a refinement (a subclass with a narrower name) still passes.
    names = [cls.__name__ for cls in type(caught.value).__mro__]
    assert case["error"] in names, f"{case['note']}: got {caught.value!r}"
    assert case["message"] in str(caught.value), f"{case['note']}: got {caught.value!r}"


def test_corpus_is_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_corpus.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    written = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {p.relative_to(CORPUS).as_posix(): p.read_bytes() for p in CORPUS.rglob("*") if p.is_file()}
    assert sorted(written) == sorted(committed), "files differ: run scripts/make_corpus.py and review the diff"
    changed = [name for name in written if written[name] != committed[name]]
    assert not changed, f"{changed} differ from the generator's output: run scripts/make_corpus.py"


def test_corpus_shape() -> None:
    """The issue's bar: at least 50 cases, two thirds of them invalid, every kind present, notes everywhere."""
    assert len(CASES) >= 50
    invalid = [c for c in CASES if not c["valid"]]
    assert 3 * len(invalid) >= 2 * len(CASES)
    kinds = {c["kind"] for c in CASES}
    assert set(READERS) == kinds
    for kind in kinds:
        assert any(c["valid"] for c in CASES if c["kind"] == kind), f"no valid {kind}"
        assert any(not c["valid"] for c in CASES if c["kind"] == kind), f"no invalid {kind}"
    assert all(c["note"] for c in CASES)
    assert all(c["error"] and c["message"] for c in invalid)
