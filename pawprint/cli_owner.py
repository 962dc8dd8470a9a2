"""The owner's commands: ``pawprint owner inspect|invariants|digest|fingerprint|submit``, and the local tools beside
them, ``pawprint compare`` (two models on this machine) and ``pawprint render`` (a dog).

``owner ...`` needs the owner extra (torch: the agent runs next to the weights); ``compare`` and ``render`` also
the verifier extra (the ICS, the null, the encoder and the dogs). Nothing here sends a weight: ``owner submit``
sends only what the owner's agent's ``submit`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pawprint._common import (
    EXIT_OK,
    CheckFailed,
    CommandError,
    about,
    line_progress,
    null_model,
    passphrase_option,
    private_key,
    progress_bar,
    public_key,
    reaching,
    thresholds,
    tls_client_options,
    user_input,
    verdict_options,
    write_json,
)

if TYPE_CHECKING:
    from owner import OpenedModel
    from owner._model_signing import SignedCommitment
    from protocol import ProbeSpec, PublisherSignature, Receipt, WeightCommitment
    from protocol.terms import InvariantSet
    from verifier import Comparison

# owner.METHODS, repeated so that building the parser imports no owner agent (torch; a test checks they agree)
METHODS = ("pawprint", "huref-2024")


def _load_probe(path: str | None) -> ProbeSpec | None:
    if path is None:
        return None
    from owner import load_probe_set

    return load_probe_set(Path(path))


# ------------------------------------------------------------------------------------------------ owner
def model_path(args: argparse.Namespace) -> Path:
    """MODEL as given (a directory, a weights or .onnx file), or a Hugging Face repo id or cache folder resolved
    in the local cache at ``--revision`` (nothing is downloaded)."""
    from owner import resolve_model

    return resolve_model(args.model, revision=args.revision, cache_dir=args.cache_dir)


def model_options(p: argparse.ArgumentParser) -> None:
    """MODEL and where to find it."""
    p.add_argument("model", metavar="MODEL",
                   help="model directory, weights file (.safetensors, .bin), .onnx or .gguf file, or a Hugging Face "
                        "repo id or cache folder found in the local cache (never downloaded)")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hugging Face repo id (default main)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="the Hugging Face hub cache (default: HF_HUB_CACHE / HF_HOME as huggingface_hub finds it)")
    p.add_argument("--lm-prefix", default=None, metavar="PREFIX",
                   help="the module path of the language model inside a multimodal checkpoint (e.g. "
                        "'language_model.'), where its config and tensor names do not locate it unambiguously")


def lm_prefix(args: argparse.Namespace) -> str | None:
    """``--lm-prefix``, for commands that have it."""
    value: str | None = getattr(args, "lm_prefix", None)
    return value


def with_lm_prefix(args: argparse.Namespace, path: Path) -> Path | OpenedModel:
    """MODEL opened at ``--lm-prefix`` when it is given (the agent's functions take either); else the path."""
    if lm_prefix(args) is None:
        return path
    from owner import open_model

    return open_model(path, lm_prefix=lm_prefix(args))


def name_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, metavar="NAME",
                   help="a display name for the model, signed in the manifest and shown in receipts and reports "
                        "(owner-asserted: readers are told it is not verified)")


def signature_options(p: argparse.ArgumentParser, model: str = "MODEL", *, statement: bool = False) -> None:
    """An OpenSSF model_signing signature of MODEL's files, checked against the weight commitment (and, with
    ``statement``, stated in the signed manifest)."""
    stated = (" Verified before any term is computed (exit 1 if it does not verify) and stated in the signed "
              "manifest, which the verifier copies into the receipt" if statement else "")
    p.add_argument("--model-signature", default=None, metavar="SIG",
                   help=f"an OpenSSF model_signing signature of {model}'s files (the Sigstore bundle `model_signing "
                        f"sign key` writes): verified over {model} with model_signing, then every file the weight "
                        "commitment reads must be one of the signed files, so the committed tensors come from "
                        f"exactly the files the publisher signed (needs pawprint[signing]).{stated}")
    p.add_argument("--signature-key", default=None, metavar="PEM",
                   help="the publisher's elliptic-curve public key (PEM) for --model-signature. Keyless Sigstore "
                        "signatures (--signature-identity/--signature-issuer in model_signing) are not supported: "
                        "their trusted root is fetched from Sigstore's TUF repository, online")


def signature_pair(args: argparse.Namespace) -> bool:
    """Whether ``--model-signature`` was given (with its ``--signature-key``: one without the other is bad usage)."""
    if args.signature_key and not args.model_signature:
        raise CommandError("--signature-key: give the signature too (--model-signature SIG)")
    if args.model_signature and not args.signature_key:
        raise CommandError("--model-signature: give the publisher's public key (--signature-key PEM); keyless "
                           "Sigstore signatures are not supported here (their trusted root is fetched online)")
    return bool(args.model_signature)


def checked_signature(args: argparse.Namespace, model: OpenedModel) -> SignedCommitment:
    """``--model-signature`` verified over ``model`` with ``--signature-key`` and related to its weight commitment
    (``owner._model_signing.check_model_signature``): ``CheckFailed`` (exit 1) if it does not verify or the
    committed files are not signed ones, ``CommandError`` (exit 2) for bad input."""
    from owner._model_signing import ModelSignatureError, ModelSignatureMismatch, check_model_signature

    try:
        return check_model_signature(model, args.model_signature, args.signature_key, workers=args.workers)
    except ModelSignatureMismatch as e:
        raise CheckFailed(str(e), kind=type(e).__name__) from e
    except ModelSignatureError as e:
        raise CommandError(str(e), kind=type(e).__name__) from e


def publisher_statement(args: argparse.Namespace) -> tuple[Path | OpenedModel, SignedCommitment | None]:
    """MODEL for ``owner fingerprint``/``owner submit`` and, with ``--model-signature``, the publisher's signature
    verified over it before any term is computed (the model is then opened here, once). A display name is
    checked first, so that bad input is refused before any file is hashed."""
    signing = signature_pair(args)
    if args.name is not None:
        from protocol import ProtocolError, check_display_name

        try:
            check_display_name(args.name, "--name")
        except ProtocolError as e:
            raise CommandError(str(e)) from e
    with user_input():
        path = model_path(args)
        if not signing:
            return with_lm_prefix(args, path), None
        from owner import open_model

        model = open_model(path, lm_prefix=lm_prefix(args))
    return model, checked_signature(args, model)


def same_weights(check: SignedCommitment | None, committed: WeightCommitment) -> PublisherSignature | None:
    """The publisher statement, after checking that the manifest commits to the tensors the signature was
    related to (no file changed between the check and the terms): ``CheckFailed`` otherwise."""
    if check is None:
        return None
    if committed != check.commitment:
        raise CheckFailed(f"{check.model}: the weight commitment changed ({check.commitment.root.hex()} when the "
                          f"model signature {check.signature} was checked, {committed.root.hex()} in the manifest): "
                          "a file changed meanwhile; nothing was kept, run the command again")
    return check.publisher_signature


def print_publisher(statement: PublisherSignature, recheck: str, indent: str = "") -> None:
    """A manifest's or receipt's publisher signature statement, in words."""
    print(f"{indent}publisher signature: verified by the owner's agent over {statement.files} files, signer "
          f"{statement.signer} (signature sha256 {statement.bundle_sha256.hex()[:16]}...; the verifier sees no file: "
          f"re-check with `{recheck}`)")


RECHECK_BUNDLE = "pawprint bundle verify BUNDLE --model MODEL --model-signature SIG --signature-key PEM"
RECHECK_RECEIPT = ("pawprint owner digest MODEL --model-signature SIG --signature-key PEM: the same weight "
                   "commitment and signature")


def weights_check(args: argparse.Namespace, model_option: str = "MODEL") -> dict[str, Any]:
    """MODEL's weight commitment (no term computed; the commitment cache is used) and, with ``--model-signature``,
    the model signature checked against it: ``{"model", "format", "weight_commitment", "files", "model_signature",
    "seconds"}`` (seconds: opening MODEL, hashing and checking, imports aside). A signature that does not verify,
    or files that are not the signed ones: ``CheckFailed``."""
    signature_pair(args)
    try:
        from owner import open_model
        from owner._fingerprint import commit_checkpoint
    except ImportError as e:
        raise CommandError(f"{model_option}: computing a weight commitment needs the owner extra "
                           f"(pip install 'pawprint[owner]'): {e}") from e
    start = time.perf_counter()  # the work, not the imports (torch)

    with user_input():
        path = model_path(args)
        model = open_model(path, lm_prefix=lm_prefix(args))
    signed: dict[str, Any] | None = None
    if args.model_signature:
        check = checked_signature(args, model)
        wc, signed = check.commitment, check.as_dict()
    else:
        wc = commit_checkpoint(model, args.workers)
    return {
        "model": str(path), "format": model.format,
        "weight_commitment": {"root": wc.root.hex(), "id": wc.id, "tensors": wc.tensors, "total_bytes": wc.total_bytes},
        "files": [str(f) for f in dict.fromkeys(model.source.files())],
        "model_signature": signed,
        "seconds": round(time.perf_counter() - start, 3),
    }


def print_signature(signed: dict[str, Any]) -> None:
    """What a verified model signature says about the weight commitment, in words."""
    files = ", ".join(f"{f['name']} ({f['algorithm']} {f['digest'][:16]}...)" for f in signed["weight_files"])
    print(f"  model signature {signed['signature']} verified over {signed['model']} (key sha256 "
          f"{signed['key_sha256'][:16]}..., {signed['signed_files']} signed files): the committed tensors come "
          f"from exactly the files the publisher signed: {files}")
    stated = signed["publisher_signature"]
    print(f"  as a manifest states it: {stated['files']} signed files, signer {stated['signer']}, signature sha256 "
          f"{stated['bundle_sha256']}, statement sha256 {stated['statement_sha256']}")


def cmd_owner_digest(args: argparse.Namespace) -> int:
    """The weight commitment of MODEL without computing any term."""
    report = weights_check(args)
    if args.json:
        write_json(report)
        return EXIT_OK
    wc = report["weight_commitment"]
    print(f"{report['model']} ({report['format']}): weight commitment {wc['root']} over {wc['tensors']} tensors, "
          f"{wc['total_bytes']} bytes ({report['seconds']:.2f} s)")
    print(f"  {wc['id']}")
    if report["model_signature"]:
        print_signature(report["model_signature"])
    return EXIT_OK


def cmd_owner_inspect(args: argparse.Namespace) -> int:
    from owner import inspect_model

    with user_input():  # a layer spec out of range is a ValueError of the agent's
        report = inspect_model(model_path(args), layers=args.layers, lm_prefix=lm_prefix(args))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return EXIT_OK
    info = report["architecture"]
    print(f"model      {report['path']} ({report['format']})")
    print(f"family     {info['family']}  norm={info['norm']}  gated_ffn={info['gated_ffn']}  "
          f"parallel_residual={info['parallel_residual']}")
    print(f"layers     {info['n_layers']}   d_model={info['d_model']}  d_ffn={info['d_ffn']}")
    print(f"heads      {info['n_heads']} query / {info['n_kv_heads']} KV, head_dim={info['head_dim']}")
    print(f"vocab      {info['vocab_size']} (tokenizer: {report['tokenizer']['source']}, "
          f"{report['tokenizer']['style']}, {report['tokenizer']['tokens']} canonical tokens)")
    print(f"probe set  {report['probe_set']['name']} ({report['probe_set']['tokens']} tokens, "
          f"coverage {report['probe_set']['coverage']:.3f})")
    print(f"to read    {len(report['tensors_to_read'])} of {report['tensors_total']} tensors, "
          f"{report['bytes_to_read'] / 2**20:.1f} MiB of {report['bytes_total'] / 2**20:.1f} MiB "
          f"(layers {', '.join(map(str, report['layers']))})")
    for t in report["tensors_to_read"]:
        print(f"  {t['name']:60s} {t['dtype']:5s} {tuple(t['shape'])}")
    return EXIT_OK


def cmd_owner_invariants(args: argparse.Namespace) -> int:
    from owner import write_invariants

    # Each term goes to the file as it is computed: the command holds at most one term (benchmarks/perf).
    with progress_bar("invariants", not args.quiet and not args.json) as progress, user_input():
        inv = write_invariants(
            with_lm_prefix(args, model_path(args)), Path(args.output), probes=_load_probe(args.probe),
            layers=args.layers,
            method=args.method, progress=progress,
        )
    n = sum(inv.present)
    if args.json:
        write_json({"output": args.output, "layers": list(inv.layers), "terms": 3 * len(inv.layers), "rows": n,
                    "probe_set": inv.probes.name, "probe_set_id": inv.probes.id, "present": n,
                    "tokens": len(inv.tokens), "method": inv.method})
        return EXIT_OK
    print(f"wrote {args.output}: {len(inv.layers)} layers x 3 terms of {n} x {n} "
          f"(probe set {inv.probes.name}, {n}/{len(inv.tokens)} tokens present, method {inv.method})")
    return EXIT_OK


def cmd_owner_fingerprint(args: argparse.Namespace) -> int:
    from owner import build_bundle
    from protocol import write_bundle

    key = private_key(args.k, args.passphrase_env)
    model, check = publisher_statement(args)  # the publisher's signature verified before any term is computed
    with user_input():
        bundle = build_bundle(
            model, key, now=int(time.time()), layers=args.layers, workers=args.workers,
            progress=line_progress(not args.quiet and not args.json), display_name=args.name,
            publisher_signature=None if check is None else check.publisher_signature,
        )
    manifest = bundle.open()
    same_weights(check, manifest.weight_commitment)
    try:
        write_bundle(args.output, bundle)  # streamed: the terms are written from their buffers, never copied whole
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    if args.json:
        wc = manifest.weight_commitment
        write_json({
            "output": args.output, "manifest_sha256": bundle.manifest_digest.hex(), "key_id": manifest.owner_key_id,
            "display_name": manifest.display_name,
            "publisher_signature": None if manifest.publisher_signature is None
            else manifest.publisher_signature.as_dict(),
            "weight_commitment": {"root": wc.root.hex(), "id": wc.id, "tensors": wc.tensors,
                                  "total_bytes": wc.total_bytes},
            "groups": [{"probe_set": g.probe_set.name, "probe_set_id": g.probe_set.id, "tokens": len(g.present),
                        "present": g.rows, "layers": list(g.layers), "method_id": g.method_id}
                       for g in manifest.groups],
            "tensors": len(manifest.tensors),
        })
        return EXIT_OK
    groups = ", ".join(f"{g.probe_set.name} ({g.rows}/{len(g.present)} tokens, layers {list(g.layers)})"
                       for g in manifest.groups)
    named = f" named {manifest.display_name!r}" if manifest.display_name else ""
    print(f"wrote {args.output}{named}: {len(manifest.tensors)} terms on {groups}; "
          f"weight commitment {manifest.weight_commitment.root.hex()} over {manifest.weight_commitment.tensors} "
          f"tensors; manifest {bundle.manifest_digest.hex()}")
    if manifest.publisher_signature is not None:
        print_publisher(manifest.publisher_signature, RECHECK_BUNDLE, "  ")
    return EXIT_OK


def cmd_owner_submit(args: argparse.Namespace) -> int:
    from owner import submit
    from pawprint.cli_receipt import print_receipt
    from pawprint.cli_registry import open_remote
    from protocol import RECEIPT_FORMAT, atomic_write

    if args.possession_chunk is not None:
        from protocol import weight_commitment_id

        if args.model_signature:
            raise CommandError("--possession-chunk commits with a chunked commitment, which --model-signature does "
                               "not relate to the signed files yet: use one or the other")
        weight_commitment_id(args.possession_chunk)  # a bad chunk size is refused before anything is computed
    key = private_key(args.k, args.passphrase_env)
    verifier_key = public_key(args.verifier_pub, "--verifier-pub")
    model, check = publisher_statement(args)  # the publisher's signature verified before any term is computed
    channel = open_remote(args, args.verifier)
    # A refusal or an unreachable verifier names its address (exit 3 when it cannot be reached).
    with channel, user_input(), reaching(args.verifier):
        result = submit(
            model, key, channel, verifier_key, keep_invariants=args.keep_invariants,
            timeout_s=args.timeout, workers=args.workers, progress=line_progress(not args.quiet and not args.json),
            retries=args.retries, display_name=args.name, target=args.verifier,
            publisher_signature=None if check is None else check.publisher_signature,
            possession_chunk=args.possession_chunk,
        )
    same_weights(check, result.manifest.weight_commitment)
    receipt = result.receipt
    out = Path(args.output)
    path = out / f"receipt-{receipt.submission.hex()[:16]}.pawprint-receipt"
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, result.signed_receipt.to_bytes(RECEIPT_FORMAT))
        if result.signed_manifest is not None:  # what an auditor needs beside the receipt (pawprint audit recompute)
            from protocol import SUBMISSION_FORMAT

            atomic_write(out / f"submission-{receipt.submission.hex()[:16]}.pawprint-submission",
                         result.signed_manifest.to_bytes(SUBMISSION_FORMAT))
        pictures = _save_pictures(receipt, path.with_suffix(""))
    except OSError as e:
        raise CommandError(f"cannot write the receipt to {out}: {e.strerror or e}") from e
    witnessed = _receipt_witnessed(args, receipt, path)
    if args.json:
        write_json({**receipt.as_dict(), "receipt": str(path), "pictures": [str(x) for x in pictures],
                    "witnesses": witnessed})
        return EXIT_OK
    print_receipt(receipt)
    if witnessed is not None:
        print(f"witnesses  {witnessed}")
    print(f"receipt    {path}")
    for x in pictures:
        print(f"picture    {x}")
    return EXIT_OK


def _receipt_witnessed(args: argparse.Namespace, receipt: Receipt, path: Path) -> str | None:
    """The receipt's registry checkpoint under ``--witnesses`` (None without it): short of the policy, the
    command fails (exit 1) after keeping the receipt, which stays valid for what it says."""
    from pawprint.cli_registry import check_witnessed

    if args.witnesses is None:
        return None
    if receipt.checkpoint is None:
        raise CheckFailed(f"the receipt names no registry checkpoint, so no witness cosigned it (kept at {path})")
    cosigned = check_witnessed(args, receipt.checkpoint, f"the receipt's registry checkpoint (receipt kept at {path})")
    assert cosigned is not None
    return ", ".join(f"{c.name} at {c.time}" for c in cosigned)


def _save_pictures(receipt: Receipt, stem: Path) -> list[Path]:
    """The submission's dog (``STEM.png``) and, with the best match's, a side-by-side sheet with the scores
    (``STEM-sheet.png``); each redrawn from the receipt's vector and checked against its digest."""
    from protocol import atomic_write
    from verifier import PictureMismatch, receipt_sheet, redraw

    if receipt.picture is None:
        return []
    try:
        png = redraw(receipt.picture)
        sheet = receipt_sheet(receipt)
    except PictureMismatch as e:
        raise CheckFailed(f"the receipt's pictures do not check: {e}") from None
    written = [stem.parent / f"{stem.name}.png"]
    atomic_write(written[0], png)
    if sheet is not None and any(m.picture is not None for m in receipt.matches):
        written.append(stem.parent / f"{stem.name}-sheet.png")
        atomic_write(written[1], sheet)
    return written


# ---------------------------------------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> int:
    from pawprint._local import load_pair
    from verifier import compare

    with progress_bar("compare", not args.quiet and not args.json) as progress, user_input():
        inv_a, inv_b = load_pair(
            Path(args.a), Path(args.b), probes=_load_probe(args.probe), layers=args.layers, method=args.method,
            progress=progress,
        )
    result = compare(inv_a, inv_b, layer_pairs="match")
    verdict = _calibrated_verdict(result, args)
    if args.sheet:
        _write_sheet(Path(args.sheet), [(inv_a, [Path(args.a).name[:28], "A"]), (inv_b, [
            Path(args.b).name[:28], f"ICS {result.ics:.3f}",
            f"p {verdict['p_value']:.2e}" if verdict["p_value"] is not None else "no p-value", verdict["verdict"]])])
    if args.json:
        print(json.dumps({**result.as_dict(), **verdict}, indent=2))
        return EXIT_OK
    print(f"method {result.method}   common probe tokens {result.common_probe_tokens}")
    zs = verdict.get("layer_z") or [None] * len(result.terms)
    print(f"{'layer A':>8} {'layer B':>8}  {'term':8} {'cosine':>9} {'z':>8}")
    for t, z in zip(result.terms, zs, strict=True):
        print(f"{t.layer_a:>8} {t.layer_b:>8}  {t.term:8} {t.cosine:9.4f} " + (f"{z:8.2f}" if z is not None else ""))
    print(f"ICS {result.ics:.4f}")
    if verdict["p_value"] is None:
        print(f"verdict {verdict['verdict']} ({verdict['why']})")
    else:
        print(f"verdict {verdict['verdict']}   z {verdict['z']:.2f}   p {verdict['p_value']:.3e}   "
              f"(null {verdict['null_id']}, one base compared)")
    return EXIT_OK


def _calibrated_verdict(result: Comparison, args: argparse.Namespace) -> dict[str, Any]:
    """The verdict, combined z and p-value of one comparison against the measured null (K = 1)."""
    from owner import METHOD_IDS
    from verifier import assess, base_verdict

    rule = thresholds(args)
    null = null_model(args.null)
    if METHOD_IDS.get(result.method) != null.method_id:
        return {"verdict": "inconclusive", "p_value": None, "z": None, "null_id": null.null_id,
                "why": f"the null {null.null_id} is for another method ({null.method_id})"}
    ev = assess([(t.term, t.cosine) for t in result.terms], null, result.common_probe_tokens)
    return {"verdict": base_verdict(ev.p_value, 1, rule), "p_value": ev.p_value, "z": ev.z,
            "term_z": ev.term_z, "layer_z": list(ev.layer_z), "null_id": null.null_id,
            "verdict_rule": rule.rule}


def _write_sheet(out: Path, items: list[tuple[InvariantSet, list[str]]]) -> None:
    """Dogs of invariant sets side by side with their labels (PNG, or SVG of the first with ``.svg``)."""
    from protocol import atomic_write
    from verifier import load_encoder, render_sheet

    enc = load_encoder()
    vectors = [(enc.encode(inv), lines) for inv, lines in items]  # EncoderInputError: a VerifierError
    atomic_write(out, render_sheet(vectors))
    print(f"wrote {out} (encoder {enc.encoder_id})", file=sys.stderr)


# ----------------------------------------------------------------------------------------------- render
def cmd_render(args: argparse.Namespace) -> int:
    """The dog of a bundle, an invariants file or a 512-float vector (.npy), as PNG or SVG."""
    import numpy as np

    from protocol import atomic_write
    from verifier import RENDERER_ID, load_encoder, render_png, render_svg

    src, out = Path(args.input), Path(args.output)
    if src.suffix == ".pawprint-receipt":
        return _render_receipt(src, out, args.json)
    if src.suffix == ".npy":
        try:
            v = np.load(src, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CommandError(f"{src}: not a readable .npy array ({e})") from None
        if v.shape != (512,) or v.dtype.kind != "f" or not np.isfinite(v).all():
            raise CommandError(f"{src}: expected 512 finite floats, got shape {v.shape} dtype {v.dtype}")
        vector, what = v.astype(np.float32), "vector"
    else:
        from owner import bundle_invariants, is_bundle_file, load_bundle, load_invariants

        inv = bundle_invariants(load_bundle(src))[0] if is_bundle_file(src) else load_invariants(src)
        enc = load_encoder()
        vector, what = enc.encode(inv), f"terms encoded by {enc.encoder_id}"  # EncoderInputError: a VerifierError
    if out.suffix.lower() == ".svg":
        atomic_write(out, render_svg(vector).encode())
    else:
        atomic_write(out, render_png(vector))
    if args.json:
        write_json({"output": str(out), "input": str(src), "drawn": what, "renderer": RENDERER_ID})
        return EXIT_OK
    print(f"wrote {out}: {what}, drawn by {RENDERER_ID}")
    return EXIT_OK


def _render_receipt(src: Path, out: Path, as_json: bool = False) -> int:
    """A receipt's dogs (the submission and its best match), each redrawn from its signed vector and checked
    against its digest. The signature itself is ``receipt verify``'s job."""
    from protocol import RECEIPT_FORMAT, Receipt, SignedMessage, atomic_write, decode_map
    from verifier import PictureMismatch, receipt_sheet

    try:
        signed = SignedMessage.from_bytes(src.read_bytes(), RECEIPT_FORMAT)
    except OSError as e:
        raise CommandError(f"{src}: cannot read ({e.strerror or e})") from None
    with about(f"{src}: not a receipt file"):
        receipt = Receipt.from_map(decode_map(signed.payload))
    try:
        sheet = receipt_sheet(receipt)
    except PictureMismatch as e:
        raise CheckFailed(f"{src}: {e}") from None
    if sheet is None:
        raise CommandError(f"{src}: the receipt carries no picture")
    atomic_write(out, sheet)
    dogs = 1 + any(m.picture is not None for m in receipt.matches)
    if as_json:
        write_json({"output": str(out), "input": str(src), "dogs": dogs})
        return EXIT_OK
    print(f"wrote {out}: {dogs} dog(s) redrawn from the receipt's vectors, digests checked")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- parser
def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint owner ...``, ``pawprint compare`` and ``pawprint render``."""
    owner = sub.add_parser("owner", help="the owner's agent: runs next to the weights").add_subparsers(
        dest="owner_command", required=True
    )
    ins = owner.add_parser("inspect", help="family, shapes, tokenizer and the tensors the terms need")
    model_options(ins)
    ins.add_argument("--layers", default=None, help="'last2' (default), 'all', or e.g. '0,5,-1'")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=cmd_owner_inspect)

    inv = owner.add_parser("invariants", help="compute the invariant terms and write them to a file")
    model_options(inv)
    inv.add_argument("-o", "--output", required=True)
    inv.add_argument("--layers", default=None)
    inv.add_argument("--probe", default=None, help="probe set file (default: built from the model's vocabulary)")
    inv.add_argument("--method", choices=METHODS, default="pawprint")
    inv.add_argument("--json", action="store_true", help="print what was written as JSON (no progress bar)")
    inv.add_argument("-q", "--quiet", action="store_true")
    inv.set_defaults(func=cmd_owner_invariants)

    dg = owner.add_parser("digest", help="the weight commitment of MODEL (no term computed), and optionally its "
                                         "OpenSSF model_signing signature checked against it")
    model_options(dg)
    signature_options(dg)
    dg.add_argument("--workers", type=int, default=None, help="threads hashing checkpoint files")
    dg.add_argument("--json", action="store_true")
    dg.set_defaults(func=cmd_owner_digest)

    fp = owner.add_parser("fingerprint", help="write a signed bundle (terms + manifest) for offline use")
    model_options(fp)
    name_option(fp)
    signature_options(fp, statement=True)
    fp.add_argument("-k", required=True, metavar="KEY", help="the signing key (owner or vendor)")
    fp.add_argument("-o", "--output", required=True, metavar="BUNDLE")
    fp.add_argument("--layers", default=None, help="'last2' (default), 'all', or e.g. '0,5,-1'")
    fp.add_argument("--workers", type=int, default=None, help="threads hashing checkpoint files")
    fp.add_argument("--json", action="store_true", help="print what was written as JSON (no progress)")
    fp.add_argument("-q", "--quiet", action="store_true")
    passphrase_option(fp)
    fp.set_defaults(func=cmd_owner_fingerprint)

    sm = owner.add_parser("submit", help="submit a model's terms to a verifier and keep the signed receipt")
    model_options(sm)
    name_option(sm)
    signature_options(sm, statement=True)
    sm.add_argument("--verifier", required=True, metavar="HOST:PORT")
    sm.add_argument("-k", required=True, metavar="KEY", help="the owner's signing key")
    sm.add_argument("--verifier-pub", required=True, metavar="PUB", help="the verifier's public key")
    tls_client_options(sm, "verifier")
    sm.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    sm.add_argument("--keep-invariants", action="store_true", help="ask the verifier to keep the terms")
    from pawprint.cli_registry import witness_options

    witness_options(sm)
    sm.add_argument("--possession-chunk", type=int, default=None, metavar="BYTES",
                    help="show the verifier that you hold the committed weights: commit with a chunked (weights-v2) "
                         "commitment and open 3 chunks of BYTES (a power of two, e.g. 64) that the challenge selects; "
                         "reveals 3 x BYTES bytes of weights (protocol/_possession.py)")
    sm.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole exchange")
    sm.add_argument("--workers", type=int, default=None)
    sm.add_argument("--retries", type=int, default=3, metavar="N",
                    help="send the same signed submission again up to N times if the verifier was unreachable or "
                         "restarted (it is answered at most once)")
    sm.add_argument("--json", action="store_true")
    sm.add_argument("-q", "--quiet", action="store_true")
    passphrase_option(sm)
    sm.set_defaults(func=cmd_owner_submit)

    cmp_ = sub.add_parser("compare", help="ICS between two models or invariants files")
    cmp_.add_argument("a", help="model directory, .onnx file, invariants file or signed bundle")
    cmp_.add_argument("b")
    cmp_.add_argument("--layers", default=None)
    cmp_.add_argument("--probe", default=None,
                      help="probe set file (default: the probe set of a side that is an invariants file or bundle, "
                           "else one built from the tokens both models' vocabularies have, the same whichever "
                           "comes first)")
    cmp_.add_argument("--method", choices=METHODS, default="pawprint")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("-q", "--quiet", action="store_true")
    cmp_.add_argument("--sheet", default=None, metavar="PNG", help="also draw both dogs side by side with the scores")
    verdict_options(cmp_)
    cmp_.set_defaults(func=cmd_compare)

    rnd = sub.add_parser("render", help="draw the dog of a bundle, invariants file or 512-float .npy vector")
    rnd.add_argument("input", metavar="INPUT")
    rnd.add_argument("-o", "--output", required=True, metavar="PNG|SVG", help="a .svg name writes SVG")
    rnd.add_argument("--json", action="store_true")
    rnd.set_defaults(func=cmd_render)
