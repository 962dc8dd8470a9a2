"""The ``pawprint`` command line: one console script with subcommands for owners, verifiers and the zoo.

Errors on bad input are printed as one line ``pawprint: error: ...`` naming the file and the problem, with
exit status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
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
    from owner import compute_invariants, save_invariants

    with _progress_bar("invariants", not args.quiet) as progress:
        inv = compute_invariants(
            Path(args.model), probes=_load_probe(args.probe), layers=args.layers, method=args.method,
            progress=progress,
        )
    save_invariants(inv, Path(args.output))
    n = sum(inv.present)
    print(f"wrote {args.output}: {len(inv.layers)} layers x 3 terms of {n} x {n} "
          f"(probe set {inv.probes.name}, {n}/{len(inv.tokens)} tokens present, method {inv.method})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from owner import compare_paths

    with _progress_bar("compare", not args.quiet and not args.json) as progress:
        result = compare_paths(
            Path(args.a), Path(args.b), probes=_load_probe(args.probe), layers=args.layers, method=args.method,
            progress=progress,
        )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"method {result.method}   common probe tokens {result.common_probe_tokens}")
    print(f"{'layer A':>8} {'layer B':>8}  {'term':8} {'cosine':>9}")
    for t in result.terms:
        print(f"{t.layer_a:>8} {t.layer_b:>8}  {t.term:8} {t.cosine:9.4f}")
    print(f"ICS {result.ics:.4f}")
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
        kwargs: dict[str, Any] = {"quick": args.quick, "progress": progress}
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
    cmp_.set_defaults(func=_cmd_compare)

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
