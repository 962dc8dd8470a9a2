"""The zoo's commands: ``pawprint zoo attack|build`` and ``pawprint demo`` (the zoo extra).

The demo drives the other commands as a user would, each as its own ``python -m pawprint`` process.
``zoo build`` and the demo's zoo report progress model by model with the CLI's one reporter
(``pawprint._common.ProgressReporter``: an updating line on a terminal, a line per model in a log, nothing
under ``-q`` or ``--json``); transformers and huggingface_hub draw no bars of their own (``quiet_libraries_env``
before the zoo is imported, and ``zoo.progress.quiet_libraries`` around its model loads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pawprint._common import EXIT_OK, progress_bar, quiet_libraries_env, write_json

# zoo.attacks.ATTACKS, repeated so that building the parser imports no zoo (torch; a test checks they agree)
ATTACKS = (
    "ffn-permute", "ffn-scale", "qk-linear", "vo-linear", "head-permute", "residual-permute", "fold-rotate",
    "residual-scale", "vocab-permute", "vocab-extend",
)
# zoo.attacks.FAMILY_ATTACKS: only families with mixture-of-experts FFNs / latent attention admit them
FAMILY_ATTACKS = ("expert-permute", "latent-rotate")


def cmd_zoo_attack(args: argparse.Namespace) -> int:
    quiet_libraries_env()
    from zoo.attacks import attack

    res = attack(Path(args.src), Path(args.dst), args.kind, seed=args.seed)
    if args.json:
        write_json({"output": args.dst, "kind": res.kind, "seed": res.seed, "family": res.family})
        return EXIT_OK
    print(f"wrote {args.dst}: {res.kind} (seed {res.seed}) applied to a {res.family} model")
    return EXIT_OK


def cmd_zoo_build(args: argparse.Namespace) -> int:
    quiet_libraries_env()
    from zoo.build import DEFAULT_FAMILIES, build_zoo

    families = tuple(args.families.split(",")) if args.families else DEFAULT_FAMILIES
    with progress_bar("zoo", not args.quiet and not args.json) as progress:
        lineage = build_zoo(Path(args.dir), families, quick=args.quick, progress=progress, heldout=args.heldout)
    if args.json:
        write_json({"dir": args.dir, "lineage": str(lineage), "families": list(families), "quick": args.quick,
                    "heldout": args.heldout})
        return EXIT_OK
    print(f"zoo ready: {lineage}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    quiet_libraries_env()
    from zoo.demo import run_demo

    with progress_bar("zoo") as progress:  # the zoo's build, model by model, under the demo's step [1/4]
        return run_demo(Path(args.workdir), quick=args.quick, progress=progress)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint zoo ...``."""
    zoo = sub.add_parser("zoo", help="models with known lineage and the attack suite").add_subparsers(
        dest="zoo_command", required=True
    )
    atk = zoo.add_parser("attack", help="apply a function-preserving transform to a model directory")
    atk.add_argument("src")
    atk.add_argument("dst")
    atk.add_argument("--kind", required=True, choices=ATTACKS + FAMILY_ATTACKS)
    atk.add_argument("--seed", type=int, default=0)
    atk.add_argument("--json", action="store_true")
    atk.set_defaults(func=cmd_zoo_attack)

    bld = zoo.add_parser("build", help="build (or reuse) the lineage zoo")
    bld.add_argument("dir")
    bld.add_argument("--families", default=None, help="comma-separated, e.g. llama,gpt2")
    bld.add_argument("--quick", action="store_true", help="a small, fast zoo with the same lineage")
    bld.add_argument("--heldout", action="store_true",
                     help="the held-out population (new base seeds, derivatives of llama-base-s2) for evaluation")
    bld.add_argument("-q", "--quiet", action="store_true")
    bld.add_argument("--json", action="store_true", help="print where the lineage is as JSON (no progress)")
    bld.set_defaults(func=cmd_zoo_build)


def add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint demo``."""
    demo = sub.add_parser("demo", help="the end-to-end demonstration on built-in data (no --json: it narrates "
                                       "the other commands, each of which has one)")
    demo.add_argument("--workdir", default="out/demo")
    demo.add_argument("--quick", action="store_true")
    demo.set_defaults(func=cmd_demo)
