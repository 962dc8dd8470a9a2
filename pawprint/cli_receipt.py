"""An auditor's commands: ``pawprint bundle verify``, ``pawprint receipt verify`` and ``pawprint report``.

``bundle verify`` and ``receipt verify`` run on the core install (``protocol`` alone): a bundle's signature,
key and terms; a receipt's signature, its registry checkpoint and each matched entry's inclusion (from a
registry server, a verifier's data directory or a log copy). Re-deriving a receipt's verdict from its scores
needs the measured null (scipy: the verifier extra); without it the verdict is reported as not re-derived.
``report`` draws the HTML dispute report (the verifier extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pawprint._common import (
    EXIT_OK,
    VERIFIER_EXTRA_HINT,
    CommandError,
    load_bundle,
    null_model,
    read_file,
    thresholds,
    verdict_options,
    verifier_extra_missing,
    write_json,
)
from pawprint.cli_registry import connection_options, leaf_hex, log_key, log_reader

if TYPE_CHECKING:
    from protocol import Receipt

NOT_REDERIVED = f"verdict not re-derived: {VERIFIER_EXTRA_HINT}"


# ----------------------------------------------------------------------------------------------- bundle
def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from protocol import Role, TrustStore, verify_bundle

    bundle = load_bundle(args.bundle)
    trust = TrustStore.load(args.trust)
    roles = (Role(args.role),) if args.role else (Role.OWNER, Role.VENDOR)
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
    if args.json:
        write_json(report)
        return EXIT_OK
    print(f"{args.bundle}: valid bundle signed by {manifest.owner_key_id} ({', '.join(key_roles)})")
    print(f"  model {manifest.model.get('family')} ({manifest.model.get('n_layers')} layers), "
          f"{len(manifest.tensors)} terms, weight commitment {manifest.weight_commitment.root.hex()}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- receipt
def print_receipt(receipt: Receipt) -> None:
    print(f"verdict    {receipt.verdict}   ({receipt.compared} base(s) compared; null {receipt.null_id})")
    for m in receipt.matches:
        layers = " ".join(f"{a}-{b}" for a, b in dict.fromkeys((t.layer, t.base_layer) for t in m.terms))
        stats = f"z {m.z:>8s}  p {m.p_value}" if m.z is not None else "no calibrated p-value"
        print(f"  {m.name:24s} ICS {m.ics}  {stats}  {m.verdict:12s} layers {layers}")
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
    consistent = recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule, null_model(args.null),
                                 receipt.null_id, thresholds(args), screened=receipt.screened)
    return True, consistent


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from protocol import RECEIPT_FORMAT, PublicKey, SignedMessage, open_receipt

    signed = SignedMessage.from_bytes(read_file(args.receipt, "receipt"), RECEIPT_FORMAT)
    receipt = open_receipt(signed, PublicKey.load(args.verifier_pub))
    derived, consistent = _recheck(args, receipt)
    if consistent is False:
        raise CommandError(f"{args.receipt}: the verdict does not follow from the scores under its rule")
    log = _receipt_log_checks(args, receipt)
    if args.json:
        write_json({"valid": True, "verdict_rechecked": consistent, **receipt.as_dict(), "log": log})
        return EXIT_OK
    print(f"{args.receipt}: valid receipt signed by verifier {receipt.verifier_key_id}")
    print_receipt(receipt)
    print(f"checkpoint {log['checkpoint_signature']}; inclusion of matched entries {log['inclusion']}")
    if not derived:
        print(NOT_REDERIVED)
    return EXIT_OK


def _receipt_log_checks(args: argparse.Namespace, receipt: Receipt) -> dict[str, Any]:
    """What the receipt says about the registry log, checked as far as the options allow: the checkpoint's
    signature with ``--log-pub``, each matched entry's inclusion with ``--registry``, ``--data`` or
    ``--log-copy``."""
    from protocol import PublicKey, check_receipt_entries, open_note

    wants_proofs = bool(args.registry or args.data or args.log_copy)
    if receipt.checkpoint is None:
        if wants_proofs or args.log_pub:
            raise CommandError(f"{args.receipt}: the receipt names no registry checkpoint to check against")
        return {"checkpoint_signature": "absent", "inclusion": "not checked", "entries": []}
    key = PublicKey.load(args.log_pub) if args.log_pub else None
    if not wants_proofs:
        open_note(receipt.checkpoint, key)
        return {"checkpoint_signature": "verified" if key else "not checked (pass --log-pub)",
                "inclusion": "not checked (pass --registry, --data or --log-copy)", "entries": []}
    with log_reader(args) as (source, own_key):
        key = key or log_key(args, own_key, required=False)
        open_note(receipt.checkpoint, key)
        proven = check_receipt_entries(source, receipt)
    return {"checkpoint_signature": "verified" if key else "not checked (pass --log-pub)",
            "inclusion": "verified",
            "entries": [{"index": p.index, "leaf_hash": leaf_hex(p.data)} for p in proven]}


# ----------------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from verifier import write_report

    pub = Path(args.verifier_pub) if args.verifier_pub else None
    log_pub = Path(args.log_pub) if args.log_pub else None
    null = Path(args.null) if args.null else None
    receipts = [Path(r) for r in args.receipts]
    # A ReportError is a VerifierError: main reports it.
    if args.registry or args.data:
        with log_reader(args) as (source, _):
            write_report(receipts, Path(args.output), verifier_pub=pub, log_pub=log_pub, log_source=source,
                         null_file=null, title=args.title)
    else:
        write_report(receipts, Path(args.output), verifier_pub=pub, log_pub=log_pub, null_file=null,
                     title=args.title)
    print(f"wrote {args.output}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- parser
def add_bundle_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint bundle verify``."""
    bundle = sub.add_parser("bundle", help="offline bundles").add_subparsers(dest="bundle_command", required=True)
    bv = bundle.add_parser("verify", help="check a bundle's signature, key and terms offline")
    bv.add_argument("bundle", metavar="BUNDLE")
    bv.add_argument("--trust", required=True, metavar="TRUST")
    bv.add_argument("--role", default=None, choices=("owner", "vendor"),
                    help="the role the key must have (default: owner or vendor)")
    bv.add_argument("--json", action="store_true")
    bv.set_defaults(func=cmd_bundle_verify)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint receipt verify``."""
    rc = sub.add_parser("receipt", help="receipts").add_subparsers(dest="receipt_command", required=True)
    rv = rc.add_parser("verify", help="check a receipt offline (exit 0 only if valid)")
    rv.add_argument("receipt", metavar="RECEIPT")
    rv.add_argument("--verifier-pub", required=True, metavar="PUB")
    connection_options(rv, required=False, log_copy=True)
    verdict_options(rv)
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(func=cmd_receipt_verify)


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint report`` (its place in ``--help`` is after ``render``, as it always was)."""
    rep = sub.add_parser("report", help="one self-contained HTML dispute report from signed receipts")
    rep.add_argument("receipts", nargs="+", metavar="RECEIPT")
    rep.add_argument("-o", "--output", required=True, metavar="HTML")
    rep.add_argument("--verifier-pub", default=None, metavar="PUB", help="check each receipt's signature")
    rep.add_argument("--log-pub", default=None, metavar="PUB", help="check the registry checkpoint's signature")
    rep.add_argument("--null", default=None, metavar="FILE", help="re-derive verdicts against this null")
    rep.add_argument("--title", default=None)
    where = rep.add_mutually_exclusive_group()
    where.add_argument("--registry", metavar="HOST:PORT", default=None, help="check inclusion against this registry")
    where.add_argument("--data", metavar="DIR", default=None, help="... or against a local registry data directory")
    rep.add_argument("--ca", default=None, help="CA certificate to trust for the registry's TLS certificate")
    rep.add_argument("--cert", default=None, help="client certificate (mutual TLS)")
    rep.add_argument("--key", dest="tls_key", default=None, metavar="K", help="client certificate's key")
    rep.add_argument("--server-name", default=None)
    rep.add_argument("--insecure-loopback", action="store_true", help="plaintext, only to 127.0.0.1 or ::1")
    rep.add_argument("--timeout", type=float, default=60.0)
    rep.set_defaults(func=cmd_report)
