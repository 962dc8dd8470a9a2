"""The auditor's commands: ``pawprint audit recompute | verify-finding`` (and ``audit endpoint``, from
``pawprint/cli_audit_endpoint.py``).

``audit recompute RECEIPT MODEL`` is for a neutral party holding the weights (escrow, a court order). What it needs:

- the verifier's signed **receipt** file and the verifier's public key (``--verifier-pub``);
- the **model** (a local checkpoint directory): its weight commitment is recomputed and must equal the
  receipt's (the commitment scheme is the submission's: v1, or the chunked v2 a possession proof used);
- optionally, and needed for the terms to be checked at all, the owner's signed **submission**
  (``--submission``: the manifest the owner's agent sent, which ``owner submit`` keeps beside the receipt as
  ``submission-*.pawprint-submission``; its SHA-256 must be the receipt's ``submission``). It names the probe
  sets, layers and method, so the terms are recomputed exactly as the owner's agent should have computed them;
- optionally the registered **base bundles** (``--base``) the receipt compared against, to recompute the
  per-base scores.

The checks, each reported with what was signed, what was recomputed and the tolerance:

1. ``weight-commitment``: exact.
2. ``probe-coverage``: which probe tokens the model has (exact: the tokenizer decides).

   Where the owner sent public sketches of its terms (a verifier started with ``--sketch K``, issue 16), the
   recomputed terms are sketched the same way before checks 3-5, so they are compared with what was sent. This
   recompute is also what stands in for the evidence checks a sketch cannot carry (the FFN-norm bound, the
   shared subspace where the model is wider than the sketch): terms computed from the weights need no
   plausibility check, and sketches that did not come from them fail checks 3-5.
3. ``term-digests``: each recomputed term's SHA-256 against the owner's signed table. The owner's computation
   is bit-reproducible for the same inputs, machine and torch thread count (measured: repeated runs in fresh
   processes give identical bytes), but not across thread counts or CPUs (different BLAS reductions), so a
   digest mismatch alone is not a failure: all equal is a pass, otherwise the numeric checks decide.
4. ``picture-vector``: the receipt's signed encoded vector (the verifier's encoding of the submitted terms)
   against the encoding of the recomputed terms: relative L2 distance within ``VECTOR_TOLERANCE``.
5. ``scores:<base>``: with ``--base``, each per-term cosine the receipt signed against the recomputed one:
   absolute difference within ``SCORE_TOLERANCE``.

The outcome is ``consistent`` (exit 0; every check passed and the terms were checked), ``inconsistent`` (exit
1; a check failed: the owner's submission did not come from these weights, or these are not the committed
weights) or ``incomplete`` (exit 0; nothing failed, but without ``--submission`` only the commitment was
checked). With ``--key`` the result is signed as a finding (``protocol.Finding``) written to ``--output``:
self-contained (the receipt and submission are embedded) and checkable offline with ``audit verify-finding``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pawprint._common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    CheckFailed,
    CommandError,
    about,
    load_bundle,
    passphrase_option,
    private_key,
    public_key,
    read_file,
    write_json,
)

if TYPE_CHECKING:
    from owner import OpenedModel
    from protocol import AuditCheck, Bundle, Finding, Manifest, PublicKey, Receipt, SignedMessage
    from protocol.terms import InvariantSet

# Measured on the demo zoo's nine llama models (docs/results/audit.md, benchmarks/audit_tolerance.py): recomputing
# honest terms at another torch thread count moved the encoded vector by a relative L2 distance of at most 2.4e-6
# and no rounded per-term cosine; the closest decoy (another zoo model's terms, the bf16 copy of the same weights
# included) moved the vector by 4e-3 and a cosine by 1.2e-5. Each tolerance sits about 40x (vector) and 5x
# (cosine, five units of the receipt's sixth decimal) above the honest drift.
VECTOR_TOLERANCE = 1e-4
SCORE_TOLERANCE = 5e-6

COVERS = (
    "owner's signature (in the submission): the manifest - the weight commitment the owner claimed, the "
    "challenge nonce, the probe sets, layers and method, and the SHA-256 of every term it sent",
    "verifier's signature (in the receipt): the receipt - the submission's digest, the weight commitment, the "
    "per-base scores and the encoded vector of the submitted terms",
    "auditor's signature (this finding): every check with the numbers recomputed from the weights the auditor "
    "was given (named by their recomputed commitment), the tolerances, and the two embedded files",
)


@dataclass(frozen=True)
class AuditResult:
    """What ``recompute`` found: the checks, the outcome and the commitment of the weights it was given."""

    outcome: str
    checks: tuple[AuditCheck, ...]
    model_commitment: bytes
    model_commitment_id: str
    receipt: Receipt

    @property
    def summary(self) -> str:
        failed = [c.name for c in self.checks if c.status == "fail"]
        if failed:
            what = ("these weights are not the ones the receipt names" if "weight-commitment" in failed
                    else "the owner's submission did not come from these weights")
            return f"inconsistent: {what} (failed: {', '.join(failed)})"
        if self.outcome == "incomplete":
            return ("incomplete: the weights are the ones the receipt names; the terms were not checked (give the "
                    "owner's submission with --submission)")
        return "consistent: the weights are the ones the receipt names and the submitted terms come from them"


def _check(name: str, ok: bool | None, signed: str, recomputed: str, tolerance: str, detail: str) -> AuditCheck:
    from protocol import AuditCheck

    status = "not-checked" if ok is None else "pass" if ok else "fail"
    return AuditCheck(name, status, signed, recomputed, tolerance, detail)


def _commitment(model: OpenedModel, commitment_id: str, workers: int | None) -> tuple[bytes, str]:
    from owner._fingerprint import CommitmentCache, commit_checkpoint, commit_checkpoint_chunked
    from protocol import commitment_chunk_size

    chunk = commitment_chunk_size(commitment_id)
    fresh = CommitmentCache(None)  # an audit hashes every byte again: no digest cached earlier is trusted
    if chunk is None:
        wc = commit_checkpoint(model, workers, fresh)
    else:
        wc = commit_checkpoint_chunked(model, chunk, fresh)[0]
    return wc.root, wc.id


def _scheme(receipt: Receipt, manifest: Manifest | None) -> str:
    """The commitment scheme the receipt's root was computed with: the submission says; else a possession record
    names the chunk size; else v1."""
    from protocol import WEIGHT_COMMITMENT_ID, weight_commitment_id

    if manifest is not None:
        return manifest.weight_commitment.id
    if receipt.possession is not None and ";chunk=" in receipt.possession:
        return weight_commitment_id(int(receipt.possession.rsplit(";chunk=", 1)[1]))
    return WEIGHT_COMMITMENT_ID


def _recompute_terms(model: OpenedModel, manifest: Manifest) -> tuple[list[InvariantSet], list[AuditCheck]]:
    """The terms recomputed on the submission's groups, and the coverage and digest checks."""
    import hashlib

    from owner._agent import compute_invariants
    from protocol import tensor_name
    from protocol.terms import InvariantSet, sketch_invariants

    digests = {t.name: t.sha256 for t in manifest.tensors}
    sets: list[InvariantSet] = []
    checks: list[AuditCheck] = []
    same = total = 0
    for i, group in enumerate(manifest.groups):
        missing = sorted(set(group.layers) - set(range(model.adapter.info.n_layers)))
        if missing:
            # The submission names layers these weights do not have: it cannot have come from them.
            checks.append(_check(
                f"layers:g{i}", False, f"terms of layers {', '.join(map(str, group.layers))}",
                f"the model has {model.adapter.info.n_layers} layers", "exact",
                f"layer(s) {', '.join(map(str, missing))} do not exist in these weights"))
            continue
        inv = compute_invariants(model, probes=group.probe_set, layers=group.layers,
                                 method=group.method)  # type: ignore[arg-type]
        if group.sketch:  # the owner sent public sketches (issue 16): sketch the recomputed terms the same way
            inv = sketch_invariants(inv, group.sketch)
        have = sum(inv.group.present)
        checks.append(_check(
            f"probe-coverage:g{i}", inv.group.present == group.present and inv.group.method_id == group.method_id,
            f"{group.rows} of {len(group.present)} probe tokens, method {group.method_id}",
            f"{have} of {len(inv.group.present)} probe tokens, method {inv.group.method_id}", "exact",
            f"which tokens of probe set {group.probe_set.name!r} the model's tokenizer has (deterministic)"))
        for (layer, term), array in inv.terms.items():
            total += 1
            signed = digests.get(tensor_name(i, layer, term))
            same += signed is not None and hashlib.sha256(array.astype("<f4", copy=False).tobytes()).digest() == signed
        sets.append(InvariantSet(inv.group, dict(manifest.model), inv.terms))  # as the verifier saw them
    checks.append(_check(
        "term-digests", True if same == total else None, f"{len(digests)} term SHA-256 in the owner's manifest",
        f"{same} of {total} recomputed terms bit-identical", "exact",
        "all bit-identical" if same == total else
        "bit-identical only on the same machine and torch thread count (measured), so the numeric checks decide"))
    return sets, checks


def _vector_check(receipt: Receipt, suspect: InvariantSet) -> AuditCheck:
    import numpy as np

    from verifier import load_encoder

    if receipt.picture is None:
        return _check("picture-vector", None, "none in the receipt", "-", f"relative L2 <= {VECTOR_TOLERANCE:g}",
                      "the receipt carries no encoded vector")
    encoder = load_encoder("default")
    if encoder.encoder_id != receipt.picture.encoder_id:
        return _check("picture-vector", None, receipt.picture.encoder_id, encoder.encoder_id, "-",
                      "the receipt's vector was encoded by another encoder than this build's")
    signed = np.frombuffer(receipt.picture.vector, dtype="<f4").astype(np.float64)
    again = np.asarray(encoder.encode(suspect), dtype=np.float32).astype(np.float64)
    rel = float(np.linalg.norm(again - signed) / max(float(np.linalg.norm(signed)), 1e-30))
    return _check("picture-vector", rel <= VECTOR_TOLERANCE, f"vector sha256 {receipt.picture.vector_digest.hex()}",
                  f"relative L2 distance {rel:.3e}", f"relative L2 <= {VECTOR_TOLERANCE:g}",
                  "the verifier's encoding of the submitted terms against the encoding of the recomputed terms")


def _score_checks(receipt: Receipt, suspect: Sequence[InvariantSet], bases: Sequence[Bundle]) -> list[AuditCheck]:
    from owner._fingerprint import bundle_invariants
    from protocol import parse_score
    from verifier import BaseModel
    from verifier._compare import compare_with_base

    checks = []
    for bundle in bases:
        entry = bundle.manifest_digest
        match = next((m for m in receipt.matches if m.entry == entry), None)
        if match is None:
            checks.append(_check(f"scores:{entry.hex()[:16]}", None, "no match with this base in the receipt", "-",
                                 "-", "the receipt did not compare with this base"))
            continue
        base = BaseModel(match.name, entry, match.vendor_key_id, tuple(bundle_invariants(bundle)))
        again = compare_with_base(suspect, base)
        recomputed = {(t.layer, t.base_layer, t.term): float(parse_score(t.cosine)) for t in again.terms} if again \
            else {}
        worst, where = 0.0, ""
        for t in match.terms:
            value = recomputed.get((t.layer, t.base_layer, t.term))
            diff = float("inf") if value is None else abs(value - float(parse_score(t.cosine)))
            if diff > worst or not where:
                worst, where = diff, f"layer {t.layer}/{t.base_layer} {t.term}: signed {t.cosine}, recomputed " + (
                    "none" if value is None else f"{value:.6f}")
        checks.append(_check(
            f"scores:{match.name}", worst <= SCORE_TOLERANCE, f"ICS {match.ics}, {len(match.terms)} term cosines",
            f"ICS {again.ics if again else 'none'}; largest difference {worst:.6f} ({where})",
            f"|cosine difference| <= {SCORE_TOLERANCE:g}", "the receipt's per-term cosines against this base, "
            "recomputed from the weights"))
    return checks


def recompute(signed_receipt: SignedMessage, verifier_key: PublicKey, model_path: Path | str, *,
              submission: SignedMessage | None = None, bases: Sequence[Bundle] = (),
              workers: int | None = None) -> AuditResult:
    """Recompute the receipt's weight commitment and (with the owner's signed ``submission``) its terms from the
    weights at ``model_path``, and check them against what was signed (module docstring)."""
    from owner import open_model
    from protocol import ONLINE_MANIFEST_KIND, open_manifest, open_receipt, sha256

    with about("the receipt does not verify against the verifier key", verifying=True):
        receipt = open_receipt(signed_receipt, verifier_key)
    manifest: Manifest | None = None
    if submission is not None:
        with about("the submission does not verify", verifying=True):
            manifest = open_manifest(submission, ONLINE_MANIFEST_KIND)
        if sha256(submission.payload) != receipt.submission or manifest.nonce != receipt.nonce:
            raise CommandError("the submission is not the one the receipt names (its SHA-256 "
                               f"{sha256(submission.payload).hex()} is not the receipt's {receipt.submission.hex()})")
    path = Path(model_path)
    if not path.exists():
        raise CommandError(f"model {path}: no such file or directory")
    model = open_model(path)
    root, scheme = _commitment(model, _scheme(receipt, manifest), workers)
    checks = [_check("weight-commitment", root == receipt.weight_commitment, receipt.weight_commitment.hex(),
                     root.hex(), "exact", f"the weights' commitment ({scheme.split(':', 1)[0]}) against the receipt's")]
    if manifest is None:
        checks.append(_check("terms", None, "-", "-", "-", "no submission given: the terms were not recomputed"))
    elif root != receipt.weight_commitment:
        checks.append(_check("terms", None, "-", "-", "-", "not recomputed: these are not the committed weights"))
    else:
        suspect, term_checks = _recompute_terms(model, manifest)
        checks += term_checks
        if suspect:
            checks.append(_vector_check(receipt, suspect[0]))
        checks += _score_checks(receipt, suspect, bases)
    failed = any(c.status == "fail" for c in checks)
    numeric = any(c.status == "pass" and (c.name in ("term-digests", "picture-vector") or c.name.startswith("scores:"))
                  for c in checks)
    outcome = "inconsistent" if failed else "consistent" if numeric else "incomplete"
    return AuditResult(outcome, tuple(checks), root, scheme, receipt)


def make_finding(result: AuditResult, signed_receipt: SignedMessage, submission: SignedMessage | None,
                 auditor_key_id: str, issued_at: int) -> Finding:
    from protocol import RECEIPT_FORMAT, SUBMISSION_FORMAT, Finding

    return Finding(auditor_key_id, result.outcome, result.summary, result.checks, result.model_commitment,
                   result.model_commitment_id, signed_receipt.to_bytes(RECEIPT_FORMAT),
                   None if submission is None else submission.to_bytes(SUBMISSION_FORMAT), COVERS, issued_at)


# ----------------------------------------------------------------------------------------------- commands
def _signed(path: str, fmt: str, what: str) -> SignedMessage:
    from protocol import SignedMessage

    data = read_file(path, what)
    with about(f"{path}: not a {what} file"):
        return SignedMessage.from_bytes(data, fmt)


def _print_checks(checks: Sequence[AuditCheck]) -> None:
    for c in checks:
        print(f"  {c.status:11s} {c.name}: signed {c.signed}; recomputed {c.recomputed} (tolerance {c.tolerance})")
        print(f"              {c.detail}")


def cmd_audit_recompute(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    from protocol import FINDING_FORMAT, RECEIPT_FORMAT, SUBMISSION_FORMAT, atomic_write, sign_finding

    if args.key is not None and args.output is None:
        raise CommandError("--key signs a finding: name the file to write with --output")
    signed_receipt = _signed(args.receipt, RECEIPT_FORMAT, "receipt")
    verifier_key = public_key(args.verifier_pub, "--verifier-pub")
    submission = _signed(args.submission, SUBMISSION_FORMAT, "submission") if args.submission else None
    bases = [load_bundle(b) for b in args.base]
    key = private_key(args.key, args.passphrase_env) if args.key is not None else None
    result = recompute(signed_receipt, verifier_key, args.model, submission=submission, bases=bases,
                       workers=args.workers)
    written = None
    if key is not None:
        finding = make_finding(result, signed_receipt, submission, key.key_id, int(clock()))
        try:
            atomic_write(Path(args.output), sign_finding(finding, key).to_bytes(FINDING_FORMAT))
        except OSError as e:
            raise CommandError(f"cannot write the finding to {args.output}: {e.strerror or e}") from e
        written = args.output
    code = EXIT_CHECK_FAILED if result.outcome == "inconsistent" else EXIT_OK
    if args.json:
        write_json({"outcome": result.outcome, "summary": result.summary,
                    "model_commitment": result.model_commitment.hex(),
                    "model_commitment_id": result.model_commitment_id,
                    "checks": [c.as_dict() for c in result.checks], "finding": written, "covers": list(COVERS)})
        return code
    print(result.summary)
    _print_checks(result.checks)
    if written:
        print(f"finding    {written} (signed by auditor key {key.key_id if key else ''}; check it with "
              f"`pawprint audit verify-finding {written}`)")
    elif result.outcome == "inconsistent":
        print("finding    not signed: give --key and --output to sign it")
    return code


def cmd_audit_verify_finding(args: argparse.Namespace) -> int:
    from protocol import FINDING_FORMAT, open_finding

    signed = _signed(args.finding, FINDING_FORMAT, "finding")
    auditor = public_key(args.auditor_pub, "--auditor-pub") if args.auditor_pub else None
    with about(f"{args.finding}: the finding does not verify", verifying=True):
        opened = open_finding(signed, auditor)
    if args.verifier_pub is not None:
        expected = public_key(args.verifier_pub, "--verifier-pub")
        if expected.raw != opened.verifier_key.raw:
            raise CheckFailed(f"{args.finding}: the embedded receipt is signed by verifier key "
                              f"{opened.verifier_key.key_id}, not {expected.key_id} ({args.verifier_pub})")
    f = opened.finding
    doc: dict[str, Any] = {
        "valid": True, **f.as_dict(), "auditor_key_pinned": auditor is not None,
        "receipt": {"verifier_key_id": opened.verifier_key.key_id, "verifier_key_pinned": args.verifier_pub is not None,
                    "weight_commitment": opened.receipt.weight_commitment.hex(), "verdict": opened.receipt.verdict,
                    "submission": opened.receipt.submission.hex()},
        "submission": None if opened.submission is None else {
            "owner_key_id": opened.submission.owner_key_id,
            "weight_commitment": opened.submission.weight_commitment.root.hex(),
            "terms": len(opened.submission.tensors)},
    }
    if args.json:
        write_json(doc)
        return EXIT_OK
    pinned = "" if auditor is not None else " (key taken from the file: pin it with --auditor-pub)"
    print(f"{args.finding}: valid finding signed by auditor {f.auditor_key_id}{pinned}")
    print(f.summary)
    print(f"receipt    verdict {opened.receipt.verdict}, signed by verifier {opened.verifier_key.key_id}"
          + ("" if args.verifier_pub else " (not pinned: give --verifier-pub)"))
    if opened.submission is not None:
        print(f"submission signed by owner {opened.submission.owner_key_id}, "
              f"{len(opened.submission.tensors)} term digests")
    print(f"weights    recomputed commitment {f.model_commitment.hex()}; the receipt names "
          f"{opened.receipt.weight_commitment.hex()}")
    _print_checks(f.checks)
    print("what each signature covers:")
    for line in f.covers:
        print(f"  - {line}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint audit recompute | verify-finding`` (and ``endpoint``, from ``cli_audit_endpoint``)."""
    audit = sub.add_parser("audit", help="a neutral party's checks of a receipt against the weights").add_subparsers(
        dest="audit_command", required=True)
    rc = audit.add_parser("recompute", help="recompute a receipt's weight commitment and terms from the weights "
                                            "(exit 1 and a signed finding if they do not match)")
    rc.add_argument("receipt", metavar="RECEIPT")
    rc.add_argument("model", metavar="MODEL", help="the model's local checkpoint directory")
    rc.add_argument("--verifier-pub", required=True, metavar="PUB", help="the verifier's public key")
    rc.add_argument("--submission", default=None, metavar="FILE",
                    help="the owner's signed submission (owner submit keeps it beside the receipt); without it only "
                         "the weight commitment is checked")
    rc.add_argument("--base", action="append", default=[], metavar="BUNDLE",
                    help="a registered base's bundle: recompute the receipt's scores against it (repeatable)")
    rc.add_argument("--key", default=None, metavar="KEY", help="the auditor's private key: sign the finding")
    passphrase_option(rc)
    rc.add_argument("-o", "--output", default=None, metavar="FINDING", help="where to write the signed finding")
    rc.add_argument("--workers", type=int, default=None, help="threads hashing checkpoint files")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_audit_recompute)
    vf = audit.add_parser("verify-finding", help="check an auditor's signed finding offline (exit 0 if valid)")
    vf.add_argument("finding", metavar="FINDING")
    vf.add_argument("--auditor-pub", default=None, metavar="PUB", help="the auditor's public key (pins it)")
    vf.add_argument("--verifier-pub", default=None, metavar="PUB", help="the verifier's public key (pins it)")
    vf.add_argument("--json", action="store_true")
    vf.set_defaults(func=cmd_audit_verify_finding)
    # Hook: ``audit endpoint`` lives in its own module (another engineer's); added here when present.
    try:
        from pawprint.cli_audit_endpoint import add_endpoint_parser
    except ImportError:  # pragma: no cover - the module is part of this tree
        return
    add_endpoint_parser(audit)
