"""The ``pawprint`` command line: one console script with subcommands for owners, verifiers and the zoo.

Errors on bad input are printed as one line ``pawprint: error: ...`` naming the file and the problem, with
exit status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pawprint import cli_keys, cli_owner, cli_receipt, cli_registry, cli_verifier, cli_zoo
from pawprint._common import EXIT_BAD_INPUT, CommandError

# One module per role, each adding its own subcommands; commands import what they need (the owner's agent,
# the verifier, the zoo) when they run, so that the parser, --help and the auditor's commands need only the
# core install (``protocol``).
#   cli_owner     owner inspect | invariants | fingerprint | submit, compare, render
#   cli_receipt   bundle verify, receipt verify, report
#   cli_registry  registry add | publish | revoke | list | show | checkpoint | export | prove | audit
#   cli_verifier  verifier serve | test-certs
#   cli_keys      keys generate, trust add
#   cli_zoo       zoo attack | build, demo

# The project's error hierarchies, by the module that defines each: an error of a class can only be raised
# once its module is loaded, so ``main`` looks them up there instead of importing owner, verifier or the zoo.
_ERROR_CLASSES = (
    ("owner.errors", "OwnerError"),
    ("verifier.errors", "VerifierError"),
    ("zoo.attacks", "AttackError"),
    ("zoo.attacks", "AttackNotApplicable"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pawprint", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    cli_owner.add_parser(sub)
    cli_receipt.add_report_parser(sub)
    cli_zoo.add_parser(sub)
    cli_keys.add_parser(sub)
    cli_receipt.add_bundle_parser(sub)
    cli_registry.add_parser(sub)
    cli_verifier.add_parser(sub)
    cli_receipt.add_parser(sub)
    cli_zoo.add_demo_parser(sub)
    return p


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (exit 2, one line) rather than a bug: the CLI's own, the
    protocol's, and those of the owner's agent, the verifier and the zoo that are loaded."""
    from protocol import ProtocolError

    found: list[type[Exception]] = [CommandError, ProtocolError]
    for module, name in _ERROR_CLASSES:
        loaded = sys.modules.get(module)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type) and issubclass(cls, Exception):
            found.append(cls)
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning LAPACK threads stall at
    # barriers (benchmarks/perf, "floor"). Set before any command imports torch; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("pawprint: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        print(f"pawprint: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
