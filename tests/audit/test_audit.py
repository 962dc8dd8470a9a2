"""``pawprint audit recompute`` and ``audit verify-finding`` end to end: receipts from a real in-process verifier,
an honest submission (consistent), a decoy (terms of another model under the stolen model's commitment: an
inconsistent, signed finding that verifies offline), the wrong weights, and bad input."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from owner._client import request_challenge, submission_requests, submit
from owner._fingerprint import fingerprint
from pawprint.cli import main
from protocol import (
    FINDING_FORMAT,
    ONLINE_MANIFEST_KIND,
    RECEIPT_FORMAT,
    SUBMISSION_FORMAT,
    Bundle,
    PrivateKey,
    PublicKey,
    SignedMessage,
    sign_message,
)
from tests.verifier.fixtures import NOW, Env, Keys, Models, answering, start_env, stop_env

pytest_plugins = ["tests.verifier.fixtures"]


@dataclass(frozen=True)
class Case:
    receipt: Path
    submission: Path


@dataclass(frozen=True)
class Files:
    honest: Case
    decoy: Case
    verifier_pub: Path
    auditor_key: Path
    auditor_pub: Path
    base: Path
    dir: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Keys, base_bundle: Bundle) -> Iterator[Env]:
    e = start_env(tmp_path_factory.mktemp("audit-verifier"), keys, bundle=base_bundle)
    yield e
    stop_env(e)


def _write(out: Path, name: str, receipt: SignedMessage, manifest: SignedMessage) -> Case:
    case = Case(out / f"{name}.pawprint-receipt", out / f"{name}.pawprint-submission")
    case.receipt.write_bytes(receipt.to_bytes(RECEIPT_FORMAT))
    case.submission.write_bytes(manifest.to_bytes(SUBMISSION_FORMAT))
    return case


@pytest.fixture(scope="module")
def files(served: Env, keys: Keys, models: Models, base_bundle: Bundle,
          tmp_path_factory: pytest.TempPathFactory) -> Files:
    out = tmp_path_factory.mktemp("audit-files")
    honest = submit(models.derived, keys.owner, served.channel, keys.verifier.public_key, clock=lambda: NOW)
    assert honest.signed_manifest is not None
    # The thief: the derived (stolen) model's commitment, the independent model's terms.
    challenge = request_challenge(served.stub, keys.verifier.public_key, keys.owner.key_id, 30)
    real = answering(fingerprint(models.derived, keys.owner.key_id, now=NOW, probe_sets=challenge.probe_sets,
                                 layers=challenge.layers, nonce=challenge.nonce), challenge)
    decoy = answering(fingerprint(models.independent, keys.owner.key_id, now=NOW, probe_sets=challenge.probe_sets,
                                  layers=challenge.layers, nonce=challenge.nonce), challenge)
    manifest = dataclasses.replace(decoy.manifest, weight_commitment=real.manifest.weight_commitment)
    signed = sign_message(manifest, keys.owner, ONLINE_MANIFEST_KIND)
    reply = served.stub.Submit(submission_requests(signed, manifest, decoy.terms, 1 << 20), timeout=60)
    decoy_receipt = SignedMessage(bytes(reply.payload), bytes(reply.signature), PublicKey(bytes(reply.public_key)))
    pub = out / "verifier.pub"
    keys.verifier.public_key.save(pub)
    auditor = PrivateKey.from_seed(b"\x42" * 32)
    auditor.save(out / "auditor.key")
    auditor.public_key.save(out / "auditor.pub")
    base = out / "base.pawprint-bundle"
    base.write_bytes(base_bundle.to_bytes())
    return Files(_write(out, "honest", honest.signed_receipt, honest.signed_manifest),
                 _write(out, "decoy", decoy_receipt, signed), pub, out / "auditor.key", out / "auditor.pub", base, out)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _recompute(f: Files, case: Case, model: Path, *extra: str) -> list[str]:
    return ["audit", "recompute", str(case.receipt), str(model), "--verifier-pub", str(f.verifier_pub),
            "--submission", str(case.submission), *extra]


def _status(doc: dict[str, object]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in doc["checks"]}  # type: ignore[attr-defined]


def test_recompute_an_honest_receipt_is_consistent(files: Files, models: Models,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _run(_recompute(files, files.honest, models.derived, "--base", str(files.base)), capsys)
    assert code == 0 and doc["outcome"] == "consistent", doc
    status = _status(doc)
    assert status["weight-commitment"] == "pass" and status["picture-vector"] == "pass"
    assert status["scores:llama-base"] == "pass"
    assert status["term-digests"] in ("pass", "not-checked")  # bit-identical only at the same thread count


def test_a_decoy_is_caught_with_a_signed_finding_that_verifies(files: Files, models: Models,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    finding = files.dir / "decoy.pawprint-finding"
    code, doc = _run(_recompute(files, files.decoy, models.derived, "--base", str(files.base), "--key",
                                str(files.auditor_key), "-o", str(finding)), capsys)
    assert code == 1 and doc["outcome"] == "inconsistent", doc
    status = _status(doc)
    assert status["weight-commitment"] == "pass"  # the thief's commitment is the stolen model's ...
    assert status["picture-vector"] == "fail"  # ... its terms are not
    # the decoy was judged independent, and a sketching verifier states no scores for an independent match: the
    # scores cannot be checked, the encoded vector (and the term digests) still expose the decoy
    assert not any(name.startswith("scores:") and value == "pass" for name, value in status.items())
    assert "did not come from these weights" in str(doc["summary"])
    code, checked = _run(["audit", "verify-finding", str(finding), "--auditor-pub", str(files.auditor_pub),
                          "--verifier-pub", str(files.verifier_pub)], capsys)
    assert code == 0 and checked["valid"] is True and checked["outcome"] == "inconsistent"
    assert checked["checks"] == doc["checks"] and len(checked["covers"]) == 3  # type: ignore[arg-type]
    assert checked["submission"]["owner_key_id"] == PrivateKey.from_seed(bytes([2]) * 32).key_id  # type: ignore[index]
    # The text form names each signature and what it covers.
    assert main(["audit", "verify-finding", str(finding)]) == 0
    text = capsys.readouterr().out
    assert "owner's signature" in text and "verifier's signature" in text and "auditor's signature" in text
    # A finding altered after signing does not verify (exit 1); one pinned to another auditor key neither.
    signed = SignedMessage.from_bytes(finding.read_bytes(), FINDING_FORMAT)
    forged = files.dir / "forged.pawprint-finding"
    forged.write_bytes(SignedMessage(signed.payload.replace(b"inconsistent", b"consistent\x00\x00"), signed.signature,
                                     signed.public_key).to_bytes(FINDING_FORMAT))
    assert main(["audit", "verify-finding", str(forged)]) == 1
    assert main(["audit", "verify-finding", str(finding), "--auditor-pub", str(files.verifier_pub)]) == 1
    capsys.readouterr()


def test_the_wrong_weights_are_named(files: Files, models: Models, capsys: pytest.CaptureFixture[str]) -> None:
    """The thief hands the auditor the decoy's weights: their commitment is not the receipt's."""
    code, doc = _run(_recompute(files, files.decoy, models.independent), capsys)
    assert code == 1 and doc["outcome"] == "inconsistent"
    assert _status(doc) == {"weight-commitment": "fail", "terms": "not-checked"}
    assert "not the ones the receipt names" in str(doc["summary"])


def test_without_the_submission_only_the_commitment_is_checked(files: Files, models: Models,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _run(["audit", "recompute", str(files.honest.receipt), str(models.derived), "--verifier-pub",
                      str(files.verifier_pub)], capsys)
    assert code == 0 and doc["outcome"] == "incomplete"
    assert _status(doc) == {"weight-commitment": "pass", "terms": "not-checked"}


def test_bad_input_is_one_clear_error(files: Files, models: Models, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-model"
    code, doc = _run(_recompute(files, files.honest, missing), capsys)
    assert code == 2 and "no-such-model" in doc["error"]["message"]  # type: ignore[index]
    code, doc = _run(["audit", "recompute", str(tmp_path / "nope.pawprint-receipt"), str(models.derived),
                      "--verifier-pub", str(files.verifier_pub)], capsys)
    assert code == 2 and "cannot read receipt" in doc["error"]["message"]  # type: ignore[index]
    junk = tmp_path / "junk.pawprint-receipt"
    junk.write_bytes(b"\x93not a receipt")
    code, doc = _run(["audit", "recompute", str(junk), str(models.derived), "--verifier-pub",
                      str(files.verifier_pub)], capsys)
    assert code == 2 and "not a receipt file" in doc["error"]["message"]  # type: ignore[index]
    # Another verifier's key: the receipt does not verify (exit 1).
    code, doc = _run(["audit", "recompute", str(files.honest.receipt), str(models.derived), "--verifier-pub",
                      str(files.auditor_pub)], capsys)
    assert code == 1 and "does not verify" in doc["error"]["message"]  # type: ignore[index]
    # The decoy's submission is not the honest receipt's.
    code, doc = _run(["audit", "recompute", str(files.honest.receipt), str(models.derived), "--verifier-pub",
                      str(files.verifier_pub), "--submission", str(files.decoy.submission)], capsys)
    assert code == 2 and "not the one the receipt names" in doc["error"]["message"]  # type: ignore[index]
    # --key without --output
    code, doc = _run(_recompute(files, files.honest, models.derived, "--key", str(files.auditor_key)), capsys)
    assert code == 2 and "--output" in doc["error"]["message"]  # type: ignore[index]
