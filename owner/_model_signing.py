"""Relate an OpenSSF model signature (``model_signing``, sigstore/model-transparency) to the weight commitment.

A publisher signs a model's files with ``model_signing``: the signature is a Sigstore bundle whose DSSE envelope
holds an in-toto statement listing every file of the model (path relative to the model, digest). The weight
commitment (``owner._fingerprint``) pins every tensor of the checkpoint files. ``check_model_signature``
relates the two:

1. the signature is verified over the model with ``model_signing``'s own verification API
   (``model_signing.verifying.Config``): the statement's signature under the publisher's public key, then every
   file of the model hashed again and compared with the signed list (none missing, none extra, each digest
   equal), the files the signature itself ignores (its ``ignore_paths``, git files, the signature file when it
   lies inside the model) aside, as ``model_signing verify key`` does;
2. the weight commitment is computed (``commit_checkpoint``, with its cache);
3. every file the commitment read is one of the signed files (not an ignored one), and no file changed (size,
   times, inode) between the first step and the last.

Together: the committed tensors come from exactly the files the publisher signed. ``verify_publisher_signature``
(or ``SignedCommitment.publisher_signature``) turns the result into the ``protocol.PublisherSignature`` an owner
states in its signed manifest (``owner fingerprint``/``owner submit --model-signature``), which the verifier
copies into the receipt. The signature covers the
files, the commitment covers their tensors; neither says the bundle's terms were computed from them (that is
recomputing the terms: ``pawprint owner fingerprint`` and a comparison).

Only key-based signatures (an elliptic-curve public key, PEM: ``model_signing sign key``) are verified here.
Keyless Sigstore signatures (a Fulcio certificate for an OIDC identity, logged in Rekor) are refused: verifying
one needs Sigstore's trusted root, which ``model_signing`` fetches from Sigstore's TUF repository on the
network, and pawprint works offline. Certificate-chain signatures (``model_signing sign certificate``) are not
supported either.

``model_signing`` is the ``[signing]`` extra; this module is imported only by the options that read a signature,
and imports it only when one is checked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from owner._fingerprint import CommitmentCache, commit_checkpoint
from owner._model import OpenedModel, open_model
from owner.errors import OwnerError
from protocol import PUBLISHER_SIGNATURE_FORMAT, PublisherSignature, WeightCommitment

SIGNING_EXTRA_HINT = "needs the signing extra (pip install 'pawprint[signing]')"
KEYLESS_UNSUPPORTED = (
    "keyless Sigstore and certificate signatures are not verified here: verifying one needs Sigstore's trusted "
    "root, which model_signing fetches from Sigstore's TUF repository on the network, and pawprint works offline; "
    "verify it with `model_signing verify sigstore` instead"
)
_IN_TOTO_JSON = "application/vnd.in-toto+json"
_PREDICATE_V1 = "https://model_signing/signature/v1.0"
_PREDICATE_COMPAT = "https://model_signing/Digests/v0.1"


class ModelSignatureError(OwnerError):
    """A model signature cannot be checked: its file or the key is unreadable or malformed, a kind of signature
    not supported here, or the signing extra is not installed (bad input: exit 2)."""


class ModelSignatureMismatch(OwnerError):
    """A model signature does not verify, or the model's files are not the files it signs (exit 1)."""


@dataclass(frozen=True)
class SignedFile:
    """One file as the statement signs it: its path relative to the model (``.`` for a single-file model)."""

    name: str
    algorithm: str
    digest: str  # hex

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "algorithm": self.algorithm, "digest": self.digest}


@dataclass(frozen=True)
class SignedCommitment:
    """A weight commitment whose checkpoint files a verified model signature covers."""

    model: Path  # what the signature was verified over (a directory, or a single file)
    signature: Path
    key_sha256: str  # SHA-256 of the public key (PEM SubjectPublicKeyInfo): model_signing's key hint
    serialization: dict[str, Any]  # the statement's "serialization" (method, hash_type, ...)
    signed_files: int  # how many files (or shards) the statement lists
    weight_files: tuple[SignedFile, ...]  # the checkpoint files the commitment read, as the statement signs them
    commitment: WeightCommitment
    signer: str = ""  # the key's id: SHA-256 of the public key (DER SubjectPublicKeyInfo), hex
    signature_sha256: bytes = b""  # SHA-256 of the signature file's bytes
    statement_sha256: bytes = b""  # SHA-256 of the signed in-toto statement (the DSSE payload)
    files: int = 0  # how many files the statement signs (shards of one file count once)

    @property
    def publisher_signature(self) -> PublisherSignature:
        """The statement an owner signs in its manifest: this signature was verified over the committed files."""
        return PublisherSignature(format=PUBLISHER_SIGNATURE_FORMAT, bundle_sha256=self.signature_sha256,
                                  signer=self.signer, files=self.files, statement_sha256=self.statement_sha256)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verified": True, "signature": str(self.signature), "model": str(self.model),
            "kind": "model_signing key (elliptic curve)", "key_sha256": self.key_sha256,
            "serialization": self.serialization, "signed_files": self.signed_files,
            "weight_files": [f.as_dict() for f in self.weight_files],
            "weight_commitment": self.commitment.root.hex(),
            "publisher_signature": self.publisher_signature.as_dict(),  # as a manifest would state it
        }


# ------------------------------------------------------------------------------------------------ check
def check_model_signature(
    model: OpenedModel, signature: Path | str, public_key: Path | str, *, workers: int | None = None,
    cache: CommitmentCache | None = None,
) -> SignedCommitment:
    """Verify ``signature`` (a ``model_signing`` key-based signature) over ``model.path`` with ``public_key`` (PEM),
    compute the weight commitment, and check that every checkpoint file it read is a signed file, unchanged
    meanwhile. ``ModelSignatureMismatch`` when something does not verify; ``ModelSignatureError`` for bad input."""
    signature, public_key = Path(signature), Path(public_key)
    raw, doc = _read_signature(signature)
    key_sha256, signer = _key_ids(public_key)
    statement_params = _statement(doc, signature, verified=False)["predicate"].get("serialization")
    files = list(dict.fromkeys(model.source.files()))
    before = {f: CommitmentCache.identity(f) for f in files}
    _verify(model.path, signature, raw, public_key, statement_params)
    # Verified: the statement in ``raw`` is the publisher's (the same bytes model_signing checked).
    statement = _statement(doc, signature, verified=True)
    signed = _signed_files(statement, signature)
    commitment = commit_checkpoint(model, workers, cache)
    changed = [str(f) for f in files if CommitmentCache.identity(f) != before[f] or before[f] is None]
    if changed:
        raise ModelSignatureMismatch(f"{', '.join(changed)}: changed while the signature and the weight commitment "
                                     "were checked; check again")
    weight_files: list[SignedFile] = []
    for f in files:
        name = _name_in_model(f, model.path)
        found = signed.get(name) if name is not None else None
        if found is None:
            raise ModelSignatureMismatch(
                f"{f}: the weight commitment reads this file but the model signature {signature} does not sign it "
                f"(the signature was verified over {model.path}; "
                + ("the file lies outside it)" if name is None else "it is among the paths the signature ignores)"))
        weight_files.extend(found)
    serialization = statement["predicate"].get("serialization")
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"], validate=True)  # parsed above: well formed
    return SignedCommitment(
        model=model.path, signature=signature, key_sha256=key_sha256,
        serialization=dict(serialization) if isinstance(serialization, dict) else {},
        signed_files=sum(len(v) for v in signed.values()), weight_files=tuple(weight_files), commitment=commitment,
        signer=signer, signature_sha256=hashlib.sha256(raw).digest(),
        statement_sha256=hashlib.sha256(payload).digest(), files=len(signed),
    )


def verify_publisher_signature(
    model: OpenedModel | Path | str, signature: Path | str, public_key: Path | str, *, workers: int | None = None,
    cache: CommitmentCache | None = None,
) -> PublisherSignature:
    """``check_model_signature`` over ``model`` (an opened model or its directory), as the statement a manifest
    carries (``fingerprint(..., publisher_signature=...)``): the signature verified and every file the weight
    commitment reads among the signed files. ``ModelSignatureMismatch`` when it does not verify,
    ``ModelSignatureError`` for bad input."""
    opened = model if isinstance(model, OpenedModel) else open_model(Path(model))
    return check_model_signature(opened, signature, public_key, workers=workers, cache=cache).publisher_signature


def _verify(model_path: Path, signature: Path, raw: bytes, public_key: Path, params: Any) -> None:
    """``model_signing.verifying.Config().use_elliptic_key_verifier(...).verify(model, signature)``, hashing as the
    signed statement says (the library's own guess, with ``allow_symlinks`` honoured), the signature file aside
    when it lies inside the model (as ``model_signing verify`` does)."""
    try:
        from model_signing import hashing, verifying
    except ImportError as e:
        raise ModelSignatureError(f"{signature}: checking a model signature {SIGNING_EXTRA_HINT}") from e

    config = _hashing_config(hashing, params, model_path, signature)
    try:
        config_class: Any = verifying.Config  # model_signing's API is untyped
        verifier = config_class().use_elliptic_key_verifier(public_key=public_key)
    except (ValueError, TypeError) as e:  # not a PEM public key, or a curve model_signing does not take
        raise ModelSignatureError(f"--signature-key {public_key}: not an elliptic-curve public key that "
                                  f"model_signing takes ({e})") from e
    with tempfile.TemporaryDirectory(prefix="pawprint-sig-") as tmp:
        copy = Path(tmp) / "model.sig"  # the very bytes parsed here are the bytes verified
        copy.write_bytes(raw)
        try:
            # model_signing prints a warning for old-format signatures on stdout, which is --json's
            with contextlib.redirect_stdout(sys.stderr):
                verifier.set_hashing_config(config).verify(model_path, copy)
        except Exception as e:  # InvalidSignature, ValueError ("Signature mismatch: ...", "Key mismatch"), ...
            why = str(e) or type(e).__name__
            if isinstance(e, ValueError) and "symlink" in why:  # a Hugging Face cache snapshot: links to blobs
                raise ModelSignatureError(
                    f"{model_path}: the model signature {signature} was made over real files (not allow_symlinks) "
                    f"and cannot be checked over symbolic links ({why}); check a copy with the files themselves "
                    "(e.g. `huggingface-cli download --local-dir DIR`)") from e
            if type(e).__name__ == "InvalidSignature":
                why = f"the signature does not verify under {public_key}"
            raise ModelSignatureMismatch(f"{model_path}: the model signature {signature} does not verify: {why}") \
                from e


def _hashing_config(hashing: Any, params: Any, model_path: Path, signature: Path) -> Any:
    """The hashing configuration of the signed statement's ``serialization`` (as model_signing guesses it)."""
    if not isinstance(params, dict) or not isinstance(params.get("hash_type"), str):
        raise ModelSignatureError(f"{signature}: the signed statement has no serialization parameters")
    ignored = [str(p) for p in params.get("ignore_paths") or [] if isinstance(p, str)]
    inside = _name_in_model(signature, model_path)
    if inside is not None and inside != ".":
        ignored.append(inside)
    allow_symlinks = bool(params.get("allow_symlinks", False))
    config = hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True)
    config.set_allow_symlinks(allow_symlinks)
    method = params.get("method")
    try:
        if method == "files":
            return config.use_file_serialization(hashing_algorithm=params["hash_type"], allow_symlinks=allow_symlinks)
        if method == "shards":
            return config.use_shard_serialization(hashing_algorithm=params["hash_type"],
                                                  shard_size=int(params["shard_size"]), allow_symlinks=allow_symlinks)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelSignatureError(f"{signature}: unsupported serialization {params!r:.200} ({e})") from e
    raise ModelSignatureError(f"{signature}: unsupported serialization method {method!r}")


# ------------------------------------------------------------------------------------------- the file
def _read_signature(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The signature's bytes and JSON (a Sigstore bundle with a DSSE envelope and a public-key hint)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelSignatureError(f"{path}: cannot read the model signature ({e.strerror or e})") from e
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelSignatureError(f"{path}: not a model_signing signature (not JSON: {e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("verificationMaterial"), dict) \
            or not isinstance(doc.get("dsseEnvelope"), dict):
        raise ModelSignatureError(f"{path}: not a model_signing signature (expected a Sigstore bundle with a "
                                  "verificationMaterial and a dsseEnvelope)")
    material = doc["verificationMaterial"]
    if "publicKey" not in material:
        kinds = sorted(k for k in ("certificate", "x509CertificateChain") if k in material)
        raise ModelSignatureError(f"{path}: a signature made with a {' / '.join(kinds) or 'certificate'}, not a "
                                  f"key; {KEYLESS_UNSUPPORTED}")
    return raw, doc


def _statement(doc: dict[str, Any], path: Path, *, verified: bool) -> dict[str, Any]:
    """The in-toto statement in the envelope (parsed before verification only to learn how to hash)."""
    env = doc["dsseEnvelope"]
    try:
        if env.get("payloadType") != _IN_TOTO_JSON:
            raise ValueError(f"payload type {env.get('payloadType')!r}, expected {_IN_TOTO_JSON}")
        statement = json.loads(base64.b64decode(env["payload"], validate=True))
        if not isinstance(statement, dict) or not isinstance(statement.get("predicate"), dict):
            raise ValueError("no predicate")
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        error = ModelSignatureMismatch if verified else ModelSignatureError
        raise error(f"{path}: not a model_signing statement ({e})") from e
    return statement


def _signed_files(statement: dict[str, Any], path: Path) -> dict[str, list[SignedFile]]:
    """File path -> its signed entries (one per file; one per shard for shard serialization)."""
    out: dict[str, list[SignedFile]] = {}
    try:
        if statement.get("predicateType") == _PREDICATE_COMPAT:
            rows = [(s["name"], *next(iter(s["digest"].items()))) for s in statement["subject"]]
        else:
            rows = [(r["name"], r["algorithm"], r["digest"]) for r in statement["predicate"]["resources"]]
        shards = statement["predicate"].get("serialization", {}).get("method") == "shards"
        for name, algorithm, digest in rows:
            file = str(name).rsplit(":", 2)[0] if shards else str(name)
            out.setdefault(file, []).append(SignedFile(str(name), str(algorithm), str(digest)))
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as e:
        raise ModelSignatureMismatch(f"{path}: the signed statement lists no files ({e})") from e
    return out


def _key_ids(path: Path) -> tuple[str, str]:
    """SHA-256 of the public key's PEM SubjectPublicKeyInfo (model_signing's key hint) and of its DER (the key id
    a ``PublisherSignature`` names), hex; errors name the file."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as e:
        raise ModelSignatureError(f"--signature-key {path}: cannot read ({e.strerror or e})") from e
    except (ValueError, TypeError) as e:
        raise ModelSignatureError(f"--signature-key {path}: not a PEM public key ({e})") from e
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem, der = key.public_bytes(serialization.Encoding.PEM, spki), key.public_bytes(serialization.Encoding.DER, spki)
    return hashlib.sha256(pem).hexdigest(), hashlib.sha256(der).hexdigest()


def _name_in_model(path: Path, model: Path) -> str | None:
    """``path`` relative to ``model`` as model_signing names it (POSIX; ``.`` for the model file itself), or
    ``None`` if it lies outside."""
    for p, m in ((path, model), (path.resolve(), model.resolve())):
        try:
            return PurePosixPath(Path(os.path.normpath(p)).relative_to(os.path.normpath(m))).as_posix()
        except ValueError:
            continue
    return None


def signed_digest_names(entries: Sequence[SignedFile]) -> str:
    """``name (algorithm digest)`` of signed entries, for one line of text."""
    return ", ".join(f"{e.name} ({e.algorithm} {e.digest[:16]}...)" for e in entries)
