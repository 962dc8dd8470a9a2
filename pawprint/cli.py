"""The ``pawprint`` command line: one console script with subcommands for owners, verifiers and the zoo.

Errors on bad input are printed as one line ``pawprint: error: ...`` naming the file and the problem, with
exit status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A usage problem found by the CLI itself."""


@contextmanager
def _progress_bar(desc: str, enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A tqdm bar on stderr driven by ``(label, done, total)`` callbacks."""
    from tqdm import tqdm

    bar: Any = None

    def update(label: str, done: int, total: int) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)
        bar.total = total
        bar.set_postfix_str(label, refresh=False)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------------------------------------ owner
def _cmd_owner_inspect(args: argparse.Namespace) -> int:
    from owner import inspect_model

    report = inspect_model(Path(args.model), layers=args.layers)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
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
    return 0


def _load_probe(path: str | None) -> Any:
    if path is None:
        return None
    from owner import ProbeSet

    return ProbeSet.load(Path(path))


def _cmd_owner_invariants(args: argparse.Namespace) -> int:
    from owner import write_invariants

    # Each term goes to the file as it is computed: the command holds at most one term (benchmarks/perf).
    with _progress_bar("invariants", not args.quiet) as progress:
        inv = write_invariants(
            Path(args.model), Path(args.output), probes=_load_probe(args.probe), layers=args.layers,
            method=args.method, progress=progress,
        )
    n = sum(inv.present)
    print(f"wrote {args.output}: {len(inv.layers)} layers x 3 terms of {n} x {n} "
          f"(probe set {inv.probes.name}, {n}/{len(inv.tokens)} tokens present, method {inv.method})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from owner import compare, load_pair

    with _progress_bar("compare", not args.quiet and not args.json) as progress:
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
        return 0
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
    return 0


def _calibrated_verdict(result: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The verdict, combined z and p-value of one comparison against the measured null (K = 1)."""
    from verifier import Thresholds, assess, base_verdict, load_null

    thresholds = Thresholds(derived_p=args.derived_p, independent_p=args.independent_p)
    null = load_null(args.null)
    from owner._invariants import METHOD_IDS

    if METHOD_IDS.get(result.method) != null.method_id:
        return {"verdict": "inconclusive", "p_value": None, "z": None, "null_id": null.null_id,
                "why": f"the null {null.null_id} is for another method ({null.method_id})"}
    ev = assess([(t.term, t.cosine) for t in result.terms], null)
    return {"verdict": base_verdict(ev.p_value, 1, thresholds), "p_value": ev.p_value, "z": ev.z,
            "term_z": ev.term_z, "layer_z": list(ev.layer_z), "null_id": null.null_id,
            "verdict_rule": thresholds.rule}


def _write_sheet(out: Path, items: list[tuple[Any, list[str]]]) -> None:
    """Dogs of invariant sets side by side with their labels (PNG, or SVG of the first with ``.svg``)."""
    from protocol import atomic_write
    from verifier._encoder import load_encoder
    from verifier._render import render_sheet

    enc = load_encoder()
    atomic_write(out, render_sheet([(enc.encode(inv), lines) for inv, lines in items]))
    print(f"wrote {out} (encoder {enc.encoder_id})", file=sys.stderr)


def _cmd_render(args: argparse.Namespace) -> int:
    """The dog of a bundle, an invariants file or a 512-float vector (.npy), as PNG or SVG."""
    import numpy as np

    from protocol import atomic_write
    from verifier._encoder import load_encoder
    from verifier._render import RENDERER_ID, render_png, render_svg

    src, out = Path(args.input), Path(args.output)
    if src.suffix == ".pawprint-receipt":
        return _render_receipt(src, out)
    if src.suffix == ".npy":
        try:
            v = np.load(src, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CliError(f"{src}: not a readable .npy array ({e})") from None
        if v.shape != (512,) or v.dtype.kind != "f" or not np.isfinite(v).all():
            raise CliError(f"{src}: expected 512 finite floats, got shape {v.shape} dtype {v.dtype}")
        vector, what = v.astype(np.float32), "vector"
    else:
        from owner import is_bundle_file, load_invariants
        from owner._fingerprint import bundle_invariants, load_bundle

        inv = bundle_invariants(load_bundle(src))[0] if is_bundle_file(src) else load_invariants(src)
        enc = load_encoder()
        vector, what = enc.encode(inv), f"terms encoded by {enc.encoder_id}"
    if out.suffix.lower() == ".svg":
        atomic_write(out, render_svg(vector).encode())
    else:
        atomic_write(out, render_png(vector))
    print(f"wrote {out}: {what}, drawn by {RENDERER_ID}")
    return 0


def _render_receipt(src: Path, out: Path) -> int:
    """A receipt's dogs (the submission and its best match), each redrawn from its signed vector and checked
    against its digest. The signature itself is ``receipt verify``'s job."""
    from protocol import RECEIPT_FORMAT, Receipt, SignedMessage, atomic_write, decode_map
    from verifier._pictures import PictureMismatch, receipt_sheet

    try:
        signed = SignedMessage.from_bytes(src.read_bytes(), RECEIPT_FORMAT)
    except OSError as e:
        raise CliError(f"{src}: cannot read ({e.strerror or e})") from None
    receipt = Receipt.from_map(decode_map(signed.payload))
    try:
        sheet = receipt_sheet(receipt)
    except PictureMismatch as e:
        raise CliError(f"{src}: {e}") from None
    if sheet is None:
        raise CliError(f"{src}: the receipt carries no picture")
    atomic_write(out, sheet)
    dogs = 1 + any(m.picture is not None for m in receipt.matches)
    print(f"wrote {out}: {dogs} dog(s) redrawn from the receipt's vectors, digests checked")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from verifier._report import write_report

    pub = Path(args.verifier_pub) if args.verifier_pub else None
    log_pub = Path(args.log_pub) if args.log_pub else None
    null = Path(args.null) if args.null else None
    receipts = [Path(r) for r in args.receipts]
    if args.registry or args.data:
        from pawprint._cli_protocol import _log_source

        with _log_source(args) as source:
            write_report(receipts, Path(args.output), verifier_pub=pub, log_pub=log_pub, log_source=source,
                         null_file=null, title=args.title)
    else:
        write_report(receipts, Path(args.output), verifier_pub=pub, log_pub=log_pub, null_file=null,
                     title=args.title)
    print(f"wrote {args.output}")
    return 0


# -------------------------------------------------------------------------------------------------- zoo
def _cmd_zoo_attack(args: argparse.Namespace) -> int:
    from zoo.attacks import attack

    res = attack(Path(args.src), Path(args.dst), args.kind, seed=args.seed)
    print(f"wrote {args.dst}: {res.kind} (seed {res.seed}) applied to a {res.family} model")
    return 0


def _cmd_zoo_build(args: argparse.Namespace) -> int:
    from zoo.build import build_zoo

    families = tuple(args.families.split(",")) if args.families else None
    with _progress_bar("zoo", not args.quiet) as progress:
        kwargs: dict[str, Any] = {"quick": args.quick, "progress": progress, "heldout": args.heldout}
        if families:
            kwargs["families"] = families
        lineage = build_zoo(Path(args.dir), **kwargs)
    print(f"zoo ready: {lineage}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from zoo.demo import run_demo

    return run_demo(Path(args.workdir), quick=args.quick)


# --------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from owner import METHODS
    from zoo.attacks import ATTACKS

    p = argparse.ArgumentParser(prog="pawprint", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    owner = sub.add_parser("owner", help="the owner's agent: runs next to the weights").add_subparsers(
        dest="owner_command", required=True
    )
    ins = owner.add_parser("inspect", help="family, shapes, tokenizer and the tensors the terms need")
    ins.add_argument("model", help="model directory or .onnx file")
    ins.add_argument("--layers", default=None, help="'last2' (default), 'all', or e.g. '0,5,-1'")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=_cmd_owner_inspect)

    inv = owner.add_parser("invariants", help="compute the invariant terms and write them to a file")
    inv.add_argument("model")
    inv.add_argument("-o", "--output", required=True)
    inv.add_argument("--layers", default=None)
    inv.add_argument("--probe", default=None, help="probe set file (default: built from the model's vocabulary)")
    inv.add_argument("--method", choices=METHODS, default="pawprint")
    inv.add_argument("-q", "--quiet", action="store_true")
    inv.set_defaults(func=_cmd_owner_invariants)

    cmp_ = sub.add_parser("compare", help="ICS between two models or invariants files")
    cmp_.add_argument("a", help="model directory, .onnx file, invariants file or signed bundle")
    cmp_.add_argument("b")
    cmp_.add_argument("--layers", default=None)
    cmp_.add_argument("--probe", default=None, help="probe set file (default: built from A's vocabulary)")
    cmp_.add_argument("--method", choices=METHODS, default="pawprint")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("-q", "--quiet", action="store_true")
    cmp_.add_argument("--sheet", default=None, metavar="PNG", help="also draw both dogs side by side with the scores")
    from pawprint._cli_protocol import verdict_options

    verdict_options(cmp_)
    cmp_.set_defaults(func=_cmd_compare)

    rnd = sub.add_parser("render", help="draw the dog of a bundle, invariants file or 512-float .npy vector")
    rnd.add_argument("input", metavar="INPUT")
    rnd.add_argument("-o", "--output", required=True, metavar="PNG|SVG", help="a .svg name writes SVG")
    rnd.set_defaults(func=_cmd_render)

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
    rep.set_defaults(func=_cmd_report)

    zoo = sub.add_parser("zoo", help="models with known lineage and the attack suite").add_subparsers(
        dest="zoo_command", required=True
    )
    atk = zoo.add_parser("attack", help="apply a function-preserving transform to a model directory")
    atk.add_argument("src")
    atk.add_argument("dst")
    atk.add_argument("--kind", required=True, choices=ATTACKS)
    atk.add_argument("--seed", type=int, default=0)
    atk.set_defaults(func=_cmd_zoo_attack)

    bld = zoo.add_parser("build", help="build (or reuse) the lineage zoo")
    bld.add_argument("dir")
    bld.add_argument("--families", default=None, help="comma-separated, e.g. llama,gpt2")
    bld.add_argument("--quick", action="store_true", help="a small, fast zoo with the same lineage")
    bld.add_argument("--heldout", action="store_true",
                     help="the held-out population (new base seeds, derivatives of llama-base-s2) for evaluation")
    bld.add_argument("-q", "--quiet", action="store_true")
    bld.set_defaults(func=_cmd_zoo_build)

    from pawprint._cli_protocol import add_commands

    add_commands(sub, owner)

    demo = sub.add_parser("demo", help="the end-to-end demonstration on built-in data")
    demo.add_argument("--workdir", default="out/demo")
    demo.add_argument("--quick", action="store_true")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning LAPACK threads stall at
    # barriers (benchmarks/perf, "floor"). Set before any command imports torch; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from owner.errors import OwnerError
    from protocol import ProtocolError
    from verifier import VerifierError
    from zoo.attacks import AttackError, AttackNotApplicable

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (OwnerError, ProtocolError, VerifierError, CliError, AttackError, AttackNotApplicable, ValueError) as e:
        print(f"pawprint: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("pawprint: interrupted", file=sys.stderr)
        return 130
