"""Model signing interop from the command line (issue 20, "Ecosystem"): ``pawprint owner digest MODEL`` (the
weight commitment, no term computed), ``pawprint bundle verify BUNDLE --model MODEL`` (the bundle commits to
these files' tensors) and ``--model-signature SIG --signature-key PEM`` on both (an OpenSSF model_signing
signature of the same files, checked against the commitment). Exit statuses: 0 ok, 1 does not verify, 2 bad
input or usage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("model_signing")

from pawprint.cli import main
from tests.owner.test_model_signing import ec_key, sign


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def failed(capsys: pytest.CaptureFixture[str], code: int, *args: str | Path) -> str:
    """Run with --json, expect exit ``code`` with the error on stderr and as JSON on stdout; its message."""
    got, out, err = run(capsys, *args, "--json")
    assert got == code, (got, out, err)
    assert err.startswith("pawprint: error:") and "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["error"]["code"] == code, doc
    return str(doc["error"]["message"])


@pytest.fixture()
def setup(tiny_model: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A copy of the tiny llama, the owner's bundle of it and a trust store, a publisher's signature and key."""
    monkeypatch.setenv("PAWPRINT_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model("llama"), model)
    code, out, err = run(capsys, "keys", "generate", "-o", tmp_path / "k", "--name", "o", "--role", "owner", "--json")
    assert code == 0, err
    keys = json.loads(out)
    bundle, trust = tmp_path / "a.bundle", tmp_path / "trust.json"
    code, out, err = run(capsys, "owner", "fingerprint", model, "-k", keys["private_key"], "-o", bundle, "-q",
                         "--json")
    assert code == 0, err
    root = json.loads(out)["weight_commitment"]["root"]
    assert run(capsys, "trust", "add", trust, keys["public_key"], "--role", "owner")[0] == 0
    private, public = ec_key(tmp_path, "publisher")
    sig = sign(model, private, tmp_path / "model.sig")
    return {"model": model, "bundle": bundle, "trust": trust, "root": root, "sig": sig, "pub": public,
            "tmp": tmp_path}


def test_owner_digest_computes_no_term(setup: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import owner._agent

    def no_terms(*_: object, **__: object) -> None:
        raise AssertionError("owner digest computed a term")

    # every term the agent computes goes through iter_layer_terms (owner._agent._terms)
    monkeypatch.setattr(owner._agent, "iter_layer_terms", no_terms)
    code, out, err = run(capsys, "owner", "digest", setup["model"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    wc = doc["weight_commitment"]
    assert wc["root"] == setup["root"] and wc["id"].startswith("weights-v1:") and wc["tensors"] > 0
    assert wc["total_bytes"] > 0 and doc["format"] == "safetensors" and doc["model_signature"] is None
    assert doc["files"] == [str(setup["model"] / "model.safetensors")]
    code, out, err = run(capsys, "owner", "digest", setup["model"])
    assert code == 0 and setup["root"] in out and f"{wc['tensors']} tensors" in out, err


def test_bundle_verify_model(setup: dict[str, Any], tiny_model: Callable[..., Path],
                             capsys: pytest.CaptureFixture[str]) -> None:
    bundle, trust = setup["bundle"], setup["trust"]
    other = tiny_model("llama", seed=1)
    capsys.readouterr()  # what building it printed
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust, "--model", setup["model"], "--json")
    assert code == 0, err
    weights = json.loads(out)["weights"]
    assert weights["matches_bundle"] is True and weights["weight_commitment"]["root"] == setup["root"]
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust, "--model", setup["model"])
    assert code == 0 and "the bundle commits to these files' tensors" in out, err
    assert "not proof that its terms were computed from them" in out
    # another model: does not verify (1), both roots named
    message = failed(capsys, 1, "bundle", "verify", bundle, "--trust", trust, "--model", other)
    assert setup["root"] in message and str(other) in message and "does not match the bundle's" in message
    # a model that is not one: bad input (2)
    failed(capsys, 2, "bundle", "verify", bundle, "--trust", trust, "--model", setup["tmp"] / "nowhere")


def test_model_signature_on_digest_and_bundle_verify(setup: dict[str, Any],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sig_args = ("--model-signature", setup["sig"], "--signature-key", setup["pub"])
    code, out, err = run(capsys, "owner", "digest", setup["model"], *sig_args, "--json")
    assert code == 0, err
    signed = json.loads(out)["model_signature"]
    assert signed["verified"] is True and signed["weight_commitment"] == setup["root"]
    assert [f["name"] for f in signed["weight_files"]] == ["model.safetensors"]
    code, out, err = run(capsys, "bundle", "verify", setup["bundle"], "--trust", setup["trust"], "--model",
                         setup["model"], *sig_args)
    assert code == 0, err
    assert "the committed tensors come from exactly the files the publisher signed" in out
    code, out, err = run(capsys, "bundle", "verify", setup["bundle"], "--trust", setup["trust"], "--model",
                         setup["model"], *sig_args, "--json")
    assert code == 0 and json.loads(out)["weights"]["model_signature"]["verified"] is True, err


def test_a_signature_by_another_key_exits_1(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    _, other = ec_key(setup["tmp"], "other")
    for command in (("owner", "digest", setup["model"]),
                    ("bundle", "verify", setup["bundle"], "--trust", setup["trust"], "--model", setup["model"])):
        message = failed(capsys, 1, *command, "--model-signature", setup["sig"], "--signature-key", other)
        assert str(setup["sig"]) in message and "does not verify" in message


def test_weights_modified_after_signing_exit_1(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    weights = setup["model"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    sig_args = ("--model-signature", setup["sig"], "--signature-key", setup["pub"])
    message = failed(capsys, 1, "owner", "digest", setup["model"], *sig_args)
    assert "Hash mismatch for 'model.safetensors'" in message
    failed(capsys, 1, "bundle", "verify", setup["bundle"], "--trust", setup["trust"], "--model", setup["model"],
           *sig_args)
    # without the signature the bundle check alone fails too: the tensors changed
    message = failed(capsys, 1, "bundle", "verify", setup["bundle"], "--trust", setup["trust"], "--model",
                     setup["model"])
    assert setup["root"] in message


def test_option_combinations_are_usage_errors(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert "keyless" in failed(capsys, 2, "owner", "digest", setup["model"], "--model-signature", setup["sig"])
    failed(capsys, 2, "owner", "digest", setup["model"], "--signature-key", setup["pub"])
    failed(capsys, 2, "bundle", "verify", setup["bundle"], "--trust", setup["trust"], "--model-signature",
           setup["sig"], "--signature-key", setup["pub"])
