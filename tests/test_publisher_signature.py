"""A publisher's OpenSSF model_signing signature stated in the manifest and carried into the receipt (issue 20,
"Ecosystem"): ``Manifest.publisher_signature`` / ``Receipt.publisher_signature`` (``protocol.PublisherSignature``),
absent when unset so every message without one keeps its bytes; ``owner fingerprint|submit --model-signature SIG
--signature-key PEM`` verify it before any term is computed and state it; ``receipt verify`` and ``bundle verify``
show it as the owner's agent's word, and ``bundle verify --model --model-signature`` checks it again.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import (
    PUBLISHER_SIGNATURE_FORMAT,
    Manifest,
    MessageError,
    PrivateKey,
    PublisherSignature,
    Receipt,
    decode_map,
    encode,
)
from tests.verifier.test_display_name import _manifest, _receipt

STATEMENT = PublisherSignature(format=PUBLISHER_SIGNATURE_FORMAT, bundle_sha256=b"\x11" * 32, signer="ab" * 32,
                               files=5, statement_sha256=b"\x22" * 32)


# ------------------------------------------------------------------------------------------------ messages
def test_manifest_and_receipt_round_trip_with_and_without_the_statement() -> None:
    bare_m, bare_r = _manifest(), _receipt()
    stated_m = dataclasses.replace(bare_m, publisher_signature=STATEMENT)
    stated_r = dataclasses.replace(bare_r, publisher_signature=STATEMENT)
    for bare, stated, cls in ((bare_m, stated_m, Manifest), (bare_r, stated_r, Receipt)):
        assert "publisher_signature" not in bare.to_map()  # absent, not nil: the bytes of before
        assert encode({k: v for k, v in stated.to_map().items() if k != "publisher_signature"}) == encode(bare.to_map())
        assert cls.from_map(decode_map(encode(bare.to_map()))) == bare
        again = cls.from_map(decode_map(encode(stated.to_map())))
        assert again == stated and again.publisher_signature == STATEMENT
    assert stated_r.as_dict()["publisher_signature"]["signer"] == "ab" * 32 and bare_r.as_dict()[
        "publisher_signature"] is None
    assert PublisherSignature.from_map(STATEMENT.to_map()) == STATEMENT
    assert sorted(STATEMENT.to_map()) == ["bundle_sha256", "files", "format", "signer", "statement_sha256"]


HOSTILE: list[Any] = [
    pytest.param({"format": "model_signing/v2"}, id="unknown-format"),
    pytest.param({"format": ""}, id="empty-format"),
    pytest.param({"format": 1}, id="format-not-text"),
    pytest.param({"bundle_sha256": b"\x11" * 31}, id="short-bundle-digest"),
    pytest.param({"bundle_sha256": b"\x11" * 33}, id="long-bundle-digest"),
    pytest.param({"bundle_sha256": "11" * 32}, id="bundle-digest-as-hex"),
    pytest.param({"statement_sha256": b""}, id="empty-statement-digest"),
    pytest.param({"statement_sha256": b"\x22" * 64}, id="long-statement-digest"),
    pytest.param({"signer": "AB" * 32}, id="signer-uppercase"),
    pytest.param({"signer": "ab" * 31}, id="signer-short"),
    pytest.param({"signer": b"\xab" * 32}, id="signer-bytes"),
    pytest.param({"files": 0}, id="no-files"),
    pytest.param({"files": -1}, id="negative-files"),
    pytest.param({"files": True}, id="files-boolean"),
    pytest.param({"files": "5"}, id="files-text"),
]


@pytest.mark.parametrize("change", HOSTILE)
def test_hostile_statements_are_refused(change: dict[str, Any]) -> None:
    value = {**STATEMENT.to_map(), **change}
    with pytest.raises(MessageError, match="publisher_signature"):
        PublisherSignature.from_map(value)
    with pytest.raises(MessageError, match="publisher_signature"):
        Manifest.from_map({**_manifest().to_map(), "publisher_signature": value})
    with pytest.raises(MessageError, match="publisher_signature"):
        Receipt.from_map({**_receipt().to_map(), "publisher_signature": value})
    args = {**dataclasses.asdict(STATEMENT), **change}
    with pytest.raises(MessageError):
        PublisherSignature(**args)


@pytest.mark.parametrize("value", [None, [], "x", {**STATEMENT.to_map(), "extra": 1},
                                   {k: v for k, v in STATEMENT.to_map().items() if k != "files"}])
def test_malformed_statement_maps_are_refused(value: object) -> None:
    for message, cls in ((_manifest(), Manifest), (_receipt(), Receipt)):
        with pytest.raises(MessageError, match="publisher_signature"):
            cls.from_map({**message.to_map(), "publisher_signature": value})


def test_a_statement_must_be_a_publisher_signature() -> None:
    with pytest.raises(MessageError, match="publisher_signature"):
        dataclasses.replace(_manifest(), publisher_signature=STATEMENT.to_map())  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="publisher_signature"):
        dataclasses.replace(_receipt(), publisher_signature=STATEMENT.to_map())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ with a signature
def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    from pawprint.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def signed(tiny_model: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A copy of the tiny llama signed by a publisher (EC P-256), the owner's key and a trust store."""
    pytest.importorskip("model_signing")
    from tests.owner.test_model_signing import ec_key, sign

    monkeypatch.setenv("PAWPRINT_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model("llama"), model)
    private, public = ec_key(tmp_path, "publisher")
    sig = sign(model, private, tmp_path / "model.sig")
    code, out, err = run(capsys, "keys", "generate", "-o", tmp_path / "k", "--name", "o", "--role", "owner", "--json")
    assert code == 0, err
    keys = json.loads(out)
    trust = tmp_path / "trust.json"
    assert run(capsys, "trust", "add", trust, keys["public_key"], "--role", "owner")[0] == 0
    return {"model": model, "sig": sig, "pub": public, "private": private, "keys": keys, "trust": trust,
            "tmp": tmp_path, "args": ("--model-signature", sig, "--signature-key", public)}


def expected_statement(setup: dict[str, Any]) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    raw = setup["sig"].read_bytes()
    payload = base64.b64decode(json.loads(raw)["dsseEnvelope"]["payload"])
    key = serialization.load_pem_public_key(setup["pub"].read_bytes())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    files = len([p for p in setup["model"].iterdir() if p.is_file()])
    return {"format": "model_signing/v1", "bundle_sha256": hashlib.sha256(raw).hexdigest(),
            "signer": hashlib.sha256(der).hexdigest(), "files": files,
            "statement_sha256": hashlib.sha256(payload).hexdigest(),
            "verified_by": "the owner's agent (the verifier sees no file)"}


def test_verify_publisher_signature_states_the_signature(signed: dict[str, Any]) -> None:
    from owner._fingerprint import CommitmentCache
    from owner._model_signing import ModelSignatureMismatch, verify_publisher_signature
    from tests.owner.test_model_signing import ec_key

    statement = verify_publisher_signature(signed["model"], signed["sig"], signed["pub"], cache=CommitmentCache(None))
    assert statement.as_dict() == expected_statement(signed)
    _, other = ec_key(signed["tmp"], "other")
    with pytest.raises(ModelSignatureMismatch):
        verify_publisher_signature(signed["model"], signed["sig"], other, cache=CommitmentCache(None))


def test_fingerprint_states_it_and_bundle_verify_checks_it_again(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.owner.test_model_signing import ec_key, sign

    key, bundle, trust = signed["keys"]["private_key"], signed["tmp"] / "a.bundle", signed["trust"]
    code, out, err = run(capsys, "owner", "fingerprint", signed["model"], "-k", key, "-o", bundle, *signed["args"],
                         "-q", "--json")
    assert code == 0, err
    assert json.loads(out)["publisher_signature"] == expected_statement(signed)
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust, "--json")
    assert code == 0 and json.loads(out)["publisher_signature"] == expected_statement(signed), err
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust)
    assert code == 0, err
    assert (f"publisher signature: verified by the owner's agent over {expected_statement(signed)['files']} files, "
            f"signer {expected_statement(signed)['signer']}") in out
    assert "--model MODEL --model-signature SIG" in out
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust, "--model", signed["model"],
                         *signed["args"])
    assert code == 0, err
    # Another signature of the same files (another publisher key) verifies, but is not the one the bundle states.
    private2, public2 = ec_key(signed["tmp"], "second")
    sig2 = sign(signed["model"], private2, signed["tmp"] / "second.sig")
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust, "--model", signed["model"],
                         "--model-signature", sig2, "--signature-key", public2)
    assert code == 1 and "states another publisher signature" in err, (out, err)
    # A bundle without the statement: unchanged output, no line.
    plain = signed["tmp"] / "plain.bundle"
    code, out, err = run(capsys, "owner", "fingerprint", signed["model"], "-k", key, "-o", plain, "-q", "--json")
    assert code == 0 and json.loads(out)["publisher_signature"] is None, err
    code, out, err = run(capsys, "bundle", "verify", plain, "--trust", trust)
    assert code == 0 and "publisher signature" not in out, err


def test_a_signature_that_does_not_verify_stops_before_any_term(
    signed: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import owner._fingerprint
    from tests.owner.test_model_signing import ec_key

    def no_terms(*_: object, **__: object) -> None:
        raise AssertionError("a term was computed before the signature was verified")

    monkeypatch.setattr(owner._fingerprint, "fingerprint", no_terms)
    _, other = ec_key(signed["tmp"], "other")
    bundle = signed["tmp"] / "no.bundle"
    key = signed["keys"]["private_key"]
    code, out, err = run(capsys, "owner", "fingerprint", signed["model"], "-k", key, "-o", bundle,
                         "--model-signature", signed["sig"], "--signature-key", other, "-q")
    assert code == 1 and "does not verify" in err and not bundle.exists(), (out, err)
    # one without the other: usage (2)
    code, _, err = run(capsys, "owner", "fingerprint", signed["model"], "-k", key, "-o", bundle,
                       "--model-signature", signed["sig"], "-q")
    assert code == 2 and "--signature-key" in err and not bundle.exists()
    # submit: verified before anything is computed or sent (nothing listens at the address: it is never reached)
    verifier_pub = signed["tmp"] / "v.pub"
    PrivateKey.from_seed(b"\x09" * 32).public_key.save(verifier_pub)
    code, _, err = run(capsys, "owner", "submit", signed["model"], "--verifier", "127.0.0.1:1", "-k", key,
                       "--verifier-pub", verifier_pub, "--insecure-loopback", "-o", signed["tmp"] / "r",
                       "--model-signature", signed["sig"], "--signature-key", other, "-q")
    assert code == 1 and "does not verify" in err and not (signed["tmp"] / "r").exists(), err


@pytest.fixture()
def verifier(signed: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    from tests.verifier.fixtures import serving_owner

    with serving_owner(signed["tmp"] / "data", signed["keys"]["private_key"]) as served:
        yield served


def test_a_submission_with_the_statement_gets_a_receipt_carrying_it(
    signed: dict[str, Any], verifier: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address, pub = verifier
    args = ("owner", "submit", signed["model"], "--verifier", address, "-k", signed["keys"]["private_key"],
            "--verifier-pub", pub, "--insecure-loopback", *signed["args"], "-q")
    code, out, err = run(capsys, *args, "-o", signed["tmp"] / "a", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["publisher_signature"] == expected_statement(signed)
    receipt = Path(doc["receipt"])
    code, out, err = run(capsys, "receipt", "verify", receipt, "--verifier-pub", pub)
    assert code == 0, err
    assert f"publisher signature: verified by the owner's agent over {expected_statement(signed)['files']} files" in out
    assert "owner digest MODEL --model-signature SIG" in out
    code, out, err = run(capsys, "receipt", "verify", receipt, "--verifier-pub", pub, "--json")
    assert code == 0 and json.loads(out)["publisher_signature"] == expected_statement(signed), err
    # The text of submit shows it too.
    code, out, err = run(capsys, *args, "-o", signed["tmp"] / "b")
    assert code == 0 and "publisher signature: verified by the owner's agent" in out, err


def test_the_report_shows_the_statement_as_the_owners_agents_word(tmp_path: Path) -> None:
    from benchmarks.report_sample import sample_receipts
    from protocol import RECEIPT_FORMAT, SignedMessage, sign_message
    from verifier._report import write_report

    sample = sample_receipts(tmp_path / "receipts")
    path = sample.receipts[0]
    receipt = Receipt.from_map(decode_map(SignedMessage.from_bytes(path.read_bytes(), RECEIPT_FORMAT).payload))
    stated = tmp_path / "stated.receipt"
    stated.write_bytes(sign_message(dataclasses.replace(receipt, publisher_signature=STATEMENT), sample.verifier_key)
                       .to_bytes(RECEIPT_FORMAT))
    out = tmp_path / "report.html"
    write_report([stated, sample.receipts[1]], out, verifier_pub=sample.verifier_pub, log_pub=sample.log_pub,
                 null_file=sample.null_file)
    html = out.read_text(encoding="utf-8")
    assert html.count("Publisher signature (verified by the owner's agent)") == 1
    assert f'signer <span class="mono">{"ab" * 32}</span>' in html and (b"\x11" * 32).hex() in html
