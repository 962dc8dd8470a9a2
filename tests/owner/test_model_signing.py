"""An OpenSSF model_signing signature related to the weight commitment (``owner._model_signing``): the signature
verified over the model with model_signing, and every file the commitment reads among the signed files.

Each model is signed here with model_signing's key-based signer and a fresh EC P-256 key: nothing online.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("model_signing")

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from owner import open_model
from owner._fingerprint import CommitmentCache, commit_checkpoint
from owner._model_signing import ModelSignatureError, ModelSignatureMismatch, check_model_signature

NO_CACHE = CommitmentCache(None)


def ec_key(where: Path, name: str) -> tuple[Path, Path]:
    """A fresh EC P-256 key pair as PEM files: ``(private, public)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = where / f"{name}.pem", where / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def sign(model: Path, private: Path, signature: Path, ignore: tuple[str, ...] = ()) -> Path:
    import model_signing

    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private)
    if ignore:
        config.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=list(ignore)))
    config.sign(model, signature)
    return signature


@pytest.fixture()
def signed(tiny_model: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the tiny llama (ours to modify), its signature and the publisher's public key."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model("llama"), model)
    private, public = ec_key(tmp_path, "publisher")
    return model, sign(model, private, tmp_path / "model.sig"), public


def test_a_valid_signature_covers_the_committed_files(signed: tuple[Path, Path, Path]) -> None:
    model, sig, pub = signed
    opened = open_model(model)
    check = check_model_signature(opened, sig, pub, cache=NO_CACHE)
    assert check.commitment == commit_checkpoint(opened, cache=NO_CACHE)
    weights = model / "model.safetensors"
    assert [(f.name, f.algorithm, f.digest) for f in check.weight_files] == [
        ("model.safetensors", "sha256", hashlib.sha256(weights.read_bytes()).hexdigest())]
    assert check.signed_files == len([p for p in model.iterdir() if p.is_file()])
    assert check.key_sha256 == hashlib.sha256(pub.read_bytes()).hexdigest()
    doc = check.as_dict()
    assert doc["verified"] is True and doc["weight_commitment"] == check.commitment.root.hex()
    assert doc["serialization"]["method"] == "files" and doc["serialization"]["hash_type"] == "sha256"


def test_a_signature_inside_the_model_directory_is_set_aside(tiny_model: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model("llama"), model)
    private, public = ec_key(tmp_path, "publisher")
    sig = sign(model, private, model / "model.sig")  # as `model_signing sign key MODEL --signature MODEL/model.sig`
    assert check_model_signature(open_model(model), sig, public, cache=NO_CACHE).signed_files == 4


def test_weights_modified_after_signing_do_not_verify(signed: tuple[Path, Path, Path]) -> None:
    model, sig, pub = signed
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelSignatureMismatch, match=r"does not verify: .*Hash mismatch for 'model.safetensors'"):
        check_model_signature(open_model(model), sig, pub, cache=NO_CACHE)


def test_an_extra_file_does_not_verify(signed: tuple[Path, Path, Path]) -> None:
    model, sig, pub = signed
    (model / "extra.txt").write_text("not signed")
    with pytest.raises(ModelSignatureMismatch, match="Extra files found"):
        check_model_signature(open_model(model), sig, pub, cache=NO_CACHE)


def test_a_signature_by_another_key_does_not_verify(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, sig, _ = signed
    _, other = ec_key(tmp_path, "other")
    with pytest.raises(ModelSignatureMismatch, match="does not verify"):
        check_model_signature(open_model(model), sig, other, cache=NO_CACHE)


def test_a_forged_statement_does_not_verify(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The key hint kept, the statement rewritten (say, to drop a file): the signature no longer verifies."""
    model, sig, pub = signed
    doc = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"]["ignore_paths"].append("tokenizer.json")
    statement["predicate"]["resources"] = [r for r in statement["predicate"]["resources"]
                                           if r["name"] != "tokenizer.json"]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(doc))
    with pytest.raises(ModelSignatureMismatch, match="does not verify"):
        check_model_signature(open_model(model), forged, pub, cache=NO_CACHE)


def test_weights_the_publisher_left_unsigned_are_refused(tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    """model_signing verifies (the weights file is among the signature's ignored paths), but the commitment reads
    a file the publisher did not sign: the committed tensors are not the signed files'."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model("llama"), model)
    private, public = ec_key(tmp_path, "publisher")
    sig = sign(model, private, tmp_path / "model.sig", ignore=("model.safetensors",))
    with pytest.raises(ModelSignatureMismatch, match="does not sign it"):
        check_model_signature(open_model(model), sig, public, cache=NO_CACHE)


def test_unsupported_or_malformed_signatures_are_bad_input(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, sig, pub = signed
    doc = json.loads(sig.read_text())
    doc["verificationMaterial"] = {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []}
    keyless = tmp_path / "keyless.sig"
    keyless.write_text(json.dumps(doc))
    with pytest.raises(ModelSignatureError, match=r"not verified here: .*TUF"):
        check_model_signature(open_model(model), keyless, pub, cache=NO_CACHE)
    junk = tmp_path / "junk.sig"
    junk.write_text("{")
    with pytest.raises(ModelSignatureError, match="not a model_signing signature"):
        check_model_signature(open_model(model), junk, pub, cache=NO_CACHE)
    with pytest.raises(ModelSignatureError, match="not a PEM public key"):
        check_model_signature(open_model(model), sig, sig, cache=NO_CACHE)
    with pytest.raises(ModelSignatureError, match="cannot read"):
        check_model_signature(open_model(model), tmp_path / "none.sig", pub, cache=NO_CACHE)


def test_a_symlinked_model_is_bad_input_not_a_failed_check(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A Hugging Face cache snapshot links its files to blobs: a signature made without allow_symlinks cannot be
    checked over it (bad input, with what to do), which says nothing of whether it verifies."""
    model, sig, pub = signed
    linked = tmp_path / "snapshot"
    linked.mkdir()
    for f in model.iterdir():
        (linked / f.name).symlink_to(f)
    with pytest.raises(ModelSignatureError, match="symbolic links"):
        check_model_signature(open_model(linked), sig, pub, cache=NO_CACHE)
