"""An auditor's commands: ``pawprint bundle verify``, ``pawprint receipt verify`` and ``pawprint report``.

``bundle verify`` and ``receipt verify`` run on the core install (``protocol`` alone): a bundle's signature,
key and terms; a receipt's signature, its registry checkpoint and each matched entry's inclusion (from a
registry server, a verifier's data directory or a log copy). ``bundle verify --model MODEL`` also recomputes
MODEL's weight commitment (the owner extra) and checks it is the bundle's: the bundle commits to these files'
tensors, which is not proof that its terms were computed from them (``owner fingerprint`` and a comparison are);
``--model-signature`` relates it to a publisher's OpenSSF model_signing signature (the signing extra).
Re-deriving a receipt's verdict from its scores needs the measured null (scipy: the verifier extra); without it
the verdict is reported as not re-derived.
``report`` draws the HTML dispute report (the verifier extra); it refuses (exit 1) when a receipt's signature,
checkpoint, inclusion or verdict is invalid, unless ``--allow-invalid`` (the page then shows what failed). With
``--finding FILE`` (repeatable) it also shows auditors' signed findings (``pawprint audit recompute``), each in the
headline of the receipt it concerns (which must be given too); a finding whose auditor signature does not verify
against ``--auditor-pub`` or an ``auditor`` key of ``--trust``, or whose embedded receipt or submission does not
verify, is invalid like a receipt.

Exit statuses: 1 when what is checked does not verify (a signature, a key the trust store refuses, a term that
does not match its digest, a proof, a verdict that does not follow), 2 when a file cannot be read or parsed, 3
when a registry cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pawprint._common import (
    EXIT_OK,
    VERIFIER_EXTRA_HINT,
    CheckFailed,
    CommandError,
    about,
    load_bundle,
    null_model,
    public_key,
    read_file,
    thresholds,
    tls_client_options,
    verdict_options,
    verifier_extra_missing,
    write_json,
)
from pawprint.cli_owner import signature_options
from pawprint.cli_registry import (
    connection_options,
    leaf_hex,
    log_key,
    log_reader,
    open_checkpoint,
    where,
    witness_options,
    witness_policy,
)

if TYPE_CHECKING:
    from protocol import PublisherSignature, Receipt
    from verifier import FindingItem, ReportItem

NOT_REDERIVED = f"verdict not re-derived: {VERIFIER_EXTRA_HINT}"


# ----------------------------------------------------------------------------------------------- bundle
def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from protocol import Role, TrustStore, verify_bundle

    bundle = load_bundle(args.bundle)
    trust = TrustStore.load(args.trust)  # its errors name the file
    roles = (Role(args.role),) if args.role else (Role.OWNER, Role.VENDOR)
    signer = bundle.signed.public_key.key_id
    with about(f"{args.bundle}: bundle signed by key {signer}, checked against {args.trust}", verifying=True):
        manifest = verify_bundle(bundle, trust, roles)
    entry = trust.get(manifest.owner_key_id)
    key_roles = sorted(entry.roles) if entry else []
    report: dict[str, Any] = {
        "valid": True,
        "manifest_sha256": bundle.manifest_digest.hex(),
        "key_id": manifest.owner_key_id,
        "key_name": entry.name if entry else None,
        "key_roles": key_roles,
        "created_at": manifest.created_at,
        "agent": manifest.agent,
        "model": dict(manifest.model),
        "display_name": manifest.display_name,
        # the owner's agent's word (the bundle's verifier sees no file); --model --model-signature checks it again
        "publisher_signature": None if manifest.publisher_signature is None
        else manifest.publisher_signature.as_dict(),
        "weight_commitment": {"root": manifest.weight_commitment.root.hex(), "id": manifest.weight_commitment.id,
                              "tensors": manifest.weight_commitment.tensors,
                              "total_bytes": manifest.weight_commitment.total_bytes},
        "groups": [
            {"probe_set": g.probe_set.name, "probe_set_id": g.probe_set.id, "tokens": len(g.present),
             "present": g.rows, "layers": list(g.layers), "method_id": g.method_id}
            for g in manifest.groups
        ],
        "tensors": len(manifest.tensors),
    }
    if args.model is not None:
        report["weights"] = _check_model(args, manifest.weight_commitment.root.hex())
        _check_statement(args, manifest.publisher_signature, report["weights"]["model_signature"])
    elif args.model_signature or args.signature_key:
        raise CommandError("--model-signature and --signature-key need --model MODEL (the files they sign)")
    if args.json:
        write_json(report)
        return EXIT_OK
    print(f"{args.bundle}: valid bundle signed by {manifest.owner_key_id} ({', '.join(key_roles)})")
    if manifest.display_name:
        print(f"  named {manifest.display_name!r} by its owner (not verified)")
    if manifest.publisher_signature is not None:
        from pawprint.cli_owner import RECHECK_BUNDLE, print_publisher

        print_publisher(manifest.publisher_signature, RECHECK_BUNDLE.replace("BUNDLE", args.bundle, 1), "  ")
    print(f"  model {manifest.model.get('family')} ({manifest.model.get('n_layers')} layers), "
          f"{len(manifest.tensors)} terms, weight commitment {manifest.weight_commitment.root.hex()}")
    if args.model is not None:
        from pawprint.cli_owner import print_signature

        weights = report["weights"]
        tensors = weights["weight_commitment"]["tensors"]
        print(f"  {weights['model']}: its tensors have this weight commitment ({tensors} tensors): the bundle "
              f"commits to these files' tensors (not proof that its terms were computed from them: recompute them "
              f"with `pawprint owner fingerprint` and compare)")
        if weights["model_signature"]:
            print_signature(weights["model_signature"])
    return EXIT_OK


def _check_model(args: argparse.Namespace, expected: str) -> dict[str, Any]:
    """``--model``: MODEL's weight commitment recomputed (``pawprint owner digest``) must equal the manifest's."""
    from pawprint.cli_owner import weights_check

    weights = weights_check(args, "--model")
    actual = weights["weight_commitment"]["root"]
    if actual != expected:
        raise CheckFailed(f"{weights['model']}: weight commitment {actual} does not match the bundle's {expected} "
                          f"({args.bundle}): the bundle does not commit to these files' tensors")
    return {**weights, "matches_bundle": True}


def _check_statement(args: argparse.Namespace, stated: PublisherSignature | None,
                     signed: dict[str, Any] | None) -> None:
    """With ``--model-signature``, a bundle that states a publisher signature must state this one: the same
    signature file, key, statement and number of files (``CheckFailed`` otherwise)."""
    if stated is None or signed is None:
        return
    again = signed["publisher_signature"]
    if again != stated.as_dict():
        differ = sorted(k for k, v in stated.as_dict().items() if again.get(k) != v)
        raise CheckFailed(f"{args.bundle}: the bundle states another publisher signature than {args.model_signature} "
                          f"verified with {args.signature_key} ({', '.join(differ)} differ: the bundle's signer "
                          f"{stated.signer}, signature sha256 {stated.bundle_sha256.hex()})")


# ---------------------------------------------------------------------------------------------- receipt
def assurance_line(receipt: Receipt) -> str:
    """The receipt's assurance level and what it means, for the headline (docs/threat-model.md)."""
    legacy = "" if receipt.assurance is not None else "; issued before levels were stated"
    shown = "" if receipt.possession is None else "; possession of the committed weights shown (see possession)"
    if receipt.assurance_level == "owner-attested":
        return (f"assurance  owner-attested{legacy}: the terms and weight commitment are what the owner's agent "
                f"sent; no one has recomputed them from the weights{shown}")
    return (f"assurance  {receipt.assurance_level}{legacy}: the terms were recomputed from the weights by an "
            f"auditor{shown}")


def possession_line(record: str) -> str:
    """What a receipt's possession record (``"<id>;openings=<k>;chunk=<bytes>"``) shows, and what it does not."""
    fields = dict(part.split("=", 1) for part in record.split(";")[1:] if "=" in part)
    return (f"possession at submission the owner opened {fields.get('openings', '?')} chunk(s) of at most "
            f"{fields.get('chunk', '?')} bytes of the committed weights, picked by the verifier's fresh challenge and "
            "checked against the commitment: it held those chunks then (the commitment was not merely copied). Not "
            "shown: that it holds every byte, that the terms came from these weights, or that it came by them "
            f"lawfully ({record})")


def print_receipt(receipt: Receipt) -> None:
    print(f"verdict    {receipt.verdict}   ({receipt.compared} base(s) compared; null {receipt.null_id})")
    print(assurance_line(receipt))
    print(f"weights    commitment {receipt.weight_commitment.hex()}: {receipt.commitment_claim}")
    if receipt.possession is not None:
        print(possession_line(receipt.possession))
    for finding in receipt.evidence:
        print(f"evidence   {finding}")
    if receipt.model_name:
        print(f"model      {receipt.model_name!r}  (named by the owner, not verified)")
    if receipt.publisher_signature is not None:
        from pawprint.cli_owner import RECHECK_RECEIPT, print_publisher

        print_publisher(receipt.publisher_signature, RECHECK_RECEIPT)
    for m in receipt.matches:
        layers = " ".join(f"{a}-{b}" for a, b in dict.fromkeys((t.layer, t.base_layer) for t in m.terms))
        stats = f"z {m.z:>8s}  p {m.p_value}" if m.z is not None else "no calibrated p-value"
        print(f"  {m.name:24s} ICS {m.ics}  {stats}  {m.verdict:12s} layers {layers}")
    withheld = receipt.compared - len(receipt.matches)
    if withheld > 0:
        print(f"  {withheld} base(s) independent, not listed: no scores are stated for an independent match "
              "(the verdict needs none)")
    print(f"submission {receipt.submission.hex()}")
    print(f"registry   {receipt.registry.size} entries, root {receipt.registry.root.hex()}")


def _recheck(args: argparse.Namespace, receipt: Receipt) -> tuple[bool, bool | None]:
    """``(derived, consistent)``: whether the verdict could be re-derived here (the verifier extra) and, if
    so, ``verifier.recheck_verdict``'s answer (``None``: the receipt's null is not the one loaded)."""
    try:
        from verifier import recheck_verdict
    except ImportError as e:
        if not verifier_extra_missing(e):
            raise
        if args.null is not None:
            raise CommandError(f"--null: re-deriving the verdict {VERIFIER_EXTRA_HINT}") from e
        return False, None
    consistent = recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule,
                                 null_model(args.null, receipt.null_id), receipt.null_id, thresholds(args),
                                 screened=receipt.screened, evidence=receipt.evidence, compared=receipt.compared)
    return True, consistent


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from protocol import RECEIPT_FORMAT, SignedMessage, open_receipt

    data = read_file(args.receipt, "receipt")
    with about(f"{args.receipt}: not a receipt file"):
        signed = SignedMessage.from_bytes(data, RECEIPT_FORMAT)
    if args.trust is not None:  # the receipt's own key, if the trust store trusts it as a verifier
        from pawprint.cli_keys import trusted_key

        key, source = trusted_key(args.trust, signed.public_key.key_id, "verifier", "--trust"), args.trust
    else:
        key, source = public_key(args.verifier_pub, "--verifier-pub"), args.verifier_pub
    with about(f"{args.receipt}: receipt signed by key {signed.public_key.key_id}, checked against verifier key "
               f"{key.key_id} ({source})", verifying=True):
        receipt = open_receipt(signed, key)
    derived, consistent = _recheck(args, receipt)
    if consistent is False:
        raise CheckFailed(f"{args.receipt}: the verdict does not follow from the scores under its rule")
    log = _receipt_log_checks(args, receipt)
    if args.json:
        write_json({"valid": True, "verdict_rechecked": consistent, **receipt.as_dict(), "log": log})
        return EXIT_OK
    print(f"{args.receipt}: valid receipt signed by verifier {receipt.verifier_key_id}")
    print_receipt(receipt)
    print(f"checkpoint {log['checkpoint_signature']}; witnesses {log['witnesses']}; inclusion of matched entries "
          f"{log['inclusion']}")
    if not derived:
        print(NOT_REDERIVED)
    return EXIT_OK


def _receipt_log_checks(args: argparse.Namespace, receipt: Receipt) -> dict[str, Any]:
    """What the receipt says about the registry log, checked as far as the options allow: the checkpoint's
    signature with ``--log-pub``, each matched entry's inclusion with ``--registry``, ``--data`` or
    ``--log-copy``."""
    from protocol import check_receipt_entries

    wants_proofs = bool(args.registry or args.data or args.log_copy)
    if receipt.checkpoint is None:
        if wants_proofs or args.log_pub or args.log_trust or args.witnesses is not None:
            raise CommandError(f"{args.receipt}: the receipt names no registry checkpoint to check against")
        return {"checkpoint_signature": "absent", "inclusion": "not checked", "entries": [],
                "witnesses": "not checked"}
    witnesses = "not checked (pass --witnesses)" if args.witnesses is None else f"{args.witnesses} required, met"
    key = log_key(args, None, required=False)  # --log-pub, or --log-trust's registry key
    what = f"{args.receipt}: the receipt's registry checkpoint"
    if not wants_proofs:
        open_checkpoint(args, receipt.checkpoint, key, what=what)
        return {"checkpoint_signature": "verified" if key else "not checked (pass --log-pub)",
                "inclusion": "not checked (pass --registry, --data or --log-copy)", "entries": [],
                "witnesses": witnesses}
    with log_reader(args) as (source, own_key):
        key = key or log_key(args, own_key, required=False)
        open_checkpoint(args, receipt.checkpoint, key, what=what)
        with about(f"{args.receipt}: the receipt's matches in the log at {where(args)}", verifying=True):
            proven = check_receipt_entries(source, receipt)
    return {"checkpoint_signature": "verified" if key else "not checked (pass --log-pub)",
            "inclusion": "verified", "witnesses": witnesses,
            "entries": [{"index": p.index, "leaf_hash": leaf_hex(p.data)} for p in proven]}


# ----------------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    """The report, once every receipt's checks are known: with one invalid (a FAILED signature, checkpoint,
    inclusion or verdict check, as the page marks it) no page is written and the exit status is 1, unless
    ``--allow-invalid``. The checks run once; the page shows those same results."""
    from verifier import check_findings, check_receipts, write_report_page

    pub = Path(args.verifier_pub) if args.verifier_pub else None
    log_pub = Path(args.log_pub) if args.log_pub else None
    null = Path(args.null) if args.null else None
    receipts = [Path(r) for r in args.receipts]
    # A ReportError is a VerifierError: main reports it.
    policy = witness_policy(args)
    if args.registry or args.data:
        with log_reader(args) as (source, _):
            items = check_receipts(receipts, verifier_pub=pub, log_pub=log_pub, log_source=source, null_file=null,
                                   witnesses=policy)
    else:
        items = check_receipts(receipts, verifier_pub=pub, log_pub=log_pub, null_file=null, witnesses=policy)
    results = [_checks_of(path, item) for path, item in zip(receipts, items, strict=True)]
    finding_paths = [Path(f) for f in args.finding]
    if (args.auditor_pub or (args.trust and args.witnesses is None)) and not finding_paths:
        raise CommandError("--auditor-pub and --trust check findings: give them with --finding FILE")
    findings = check_findings(finding_paths, items, auditor_pubs=[Path(p) for p in args.auditor_pub],
                              trust_file=Path(args.trust) if args.trust else None, verifier_pub=pub)
    found = [_finding_of(path, f, items) for path, f in zip(finding_paths, findings, strict=True)]
    _refuse_invalid(args, results, found)
    write_report_page(items, Path(args.output), title=args.title, findings=findings)
    invalid = [r for r in results if r["failed"]]
    bad = [f for f in found if f["failed"]]
    if args.json:
        write_json({"output": args.output, "valid": not invalid and not bad, "receipts": results,
                    "findings": found})
    else:
        marked = [f"{len(invalid)} invalid receipt(s)"] if invalid else []
        marked += [f"{len(bad)} invalid finding(s)"] if bad else []
        print(f"wrote {args.output}" + (f" ({' and '.join(marked)} marked on the page)" if marked else ""))
        for f in found:
            print(f"  finding {f['file']} ({f['outcome']}) shown in the headline of {f['receipt']}")
    return EXIT_OK


def _finding_of(path: Path, f: FindingItem, items: list[ReportItem]) -> dict[str, Any]:
    """One finding's checks as the report made them, and the receipt (file) it is shown with."""
    from protocol import sha256

    receipt = next(item.label for item in items if sha256(item.payload) == f.receipt_sha256)
    return {"file": str(path), "receipt": receipt, "signer_key_id": f.signer_key_id, "outcome": f.finding.outcome,
            "summary": f.finding.summary,
            "failed_checks": [c.name for c in f.finding.checks if c.status == "fail"],
            **{name: {"state": getattr(f, name).state, "text": getattr(f, name).text} for name in f.CHECKS},
            "failed": list(f.failed)}


def _checks_of(path: Path, item: ReportItem) -> dict[str, Any]:
    """One receipt's checks as the report made them: ``{"file", "signer_key_id", CHECK: {"state", "text"}, ...,
    "failed": [CHECK, ...]}``."""
    checks = {name: getattr(item, name) for name in item.CHECKS}
    return {"file": str(path), "signer_key_id": item.signer_key_id,
            **{name: {"state": c.state, "text": c.text} for name, c in checks.items()},
            "failed": list(item.failed)}


def _refuse_invalid(args: argparse.Namespace, results: list[dict[str, Any]],
                    findings: list[dict[str, Any]] | None = None) -> None:
    invalid = [r for r in results if r["failed"]] + [f for f in findings or [] if f["failed"]]
    if not invalid:
        return
    n_receipts = sum(1 for r in results if r["failed"])
    what = " and ".join(x for x in (f"{n_receipts} of {len(results)} receipt(s)" if n_receipts else "",
                                    f"{len(invalid) - n_receipts} of {len(findings or [])} finding(s)"
                                    if len(invalid) > n_receipts else "") if x)
    words = "; ".join(f"{r['file']} (signed by key {r['signer_key_id']}): "
                      + ", ".join(f"{c} {r[c]['text']}" for c in r["failed"]) for r in invalid)
    if not args.allow_invalid:
        raise CheckFailed(f"{what} invalid, no report written (--allow-invalid writes it anyway): {words}")
    print(f"pawprint: warning: writing the report with {what} invalid: {words}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------- parser
def add_bundle_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint bundle verify``."""
    bundle = sub.add_parser("bundle", help="offline bundles").add_subparsers(dest="bundle_command", required=True)
    bv = bundle.add_parser("verify", help="check a bundle's signature, key and terms offline")
    bv.add_argument("bundle", metavar="BUNDLE")
    bv.add_argument("--trust", required=True, metavar="TRUST")
    bv.add_argument("--role", default=None, choices=("owner", "vendor"),
                    help="the role the key must have (default: owner or vendor)")
    bv.add_argument("--model", default=None, metavar="MODEL",
                    help="also recompute MODEL's weight commitment (as `pawprint owner digest`; needs the owner extra) "
                         "and check it equals the bundle's (exit 1 if not). This proves the bundle commits to these "
                         "files' tensors, not that its terms were computed from them (recomputing the terms is "
                         "`pawprint owner fingerprint` and a comparison)")
    bv.add_argument("--revision", default=None, help="with --model: branch, tag or commit of a Hugging Face repo id")
    bv.add_argument("--cache-dir", default=None, metavar="DIR", help="with --model: the Hugging Face hub cache")
    bv.add_argument("--workers", type=int, default=None, help="with --model: threads hashing checkpoint files")
    signature_options(bv, "--model")
    bv.add_argument("--json", action="store_true")
    bv.set_defaults(func=cmd_bundle_verify)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint receipt verify``."""
    rc = sub.add_parser("receipt", help="receipts").add_subparsers(dest="receipt_command", required=True)
    rv = rc.add_parser("verify", help="check a receipt offline (exit 0 only if valid)")
    rv.add_argument("receipt", metavar="RECEIPT")
    signer = rv.add_mutually_exclusive_group(required=True)
    signer.add_argument("--verifier-pub", default=None, metavar="PUB")
    signer.add_argument("--trust", default=None, metavar="TRUST",
                        help="... or a trust store: the receipt's key must be trusted there as a verifier")
    connection_options(rv, required=False, log_copy=True)
    verdict_options(rv)
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(func=cmd_receipt_verify)


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint report`` (its place in ``--help`` is after ``render``, as it always was)."""
    rep = sub.add_parser("report", help="one self-contained HTML dispute report from signed receipts (exit 1, "
                                        "no page, if one is invalid)")
    rep.add_argument("receipts", nargs="+", metavar="RECEIPT")
    rep.add_argument("-o", "--output", required=True, metavar="HTML")
    rep.add_argument("--verifier-pub", default=None, metavar="PUB", help="check each receipt's signature")
    rep.add_argument("--log-pub", default=None, metavar="PUB", help="check the registry checkpoint's signature")
    rep.add_argument("--null", default=None, metavar="FILE", help="re-derive verdicts against this null")
    rep.add_argument("--title", default=None)
    rep.add_argument("--finding", action="append", default=[], metavar="FILE",
                     help="an auditor's signed finding (pawprint audit recompute --key); shown in the headline of "
                          "the receipt it concerns, which must be given too (repeatable)")
    rep.add_argument("--auditor-pub", action="append", default=[], metavar="PUB",
                     help="an auditor's public key to check findings against (repeatable)")
    rep.add_argument("--trust", default=None, metavar="TRUST",
                     help="... or a trust store: a finding's key must be trusted there as an auditor")
    witness_options(rep)
    rep.add_argument("--allow-invalid", action="store_true",
                     help="write the page even when a receipt or finding is invalid (exit 0, with a warning; the "
                          "page marks it)")
    rep.add_argument("--json", action="store_true")
    where = rep.add_mutually_exclusive_group()
    where.add_argument("--registry", metavar="HOST:PORT", default=None, help="check inclusion against this registry")
    where.add_argument("--data", metavar="DIR", default=None, help="... or against a local registry data directory")
    tls_client_options(rep, "registry")
    rep.add_argument("--timeout", type=float, default=60.0)
    rep.set_defaults(func=cmd_report)
