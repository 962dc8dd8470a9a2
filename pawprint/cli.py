"""The ``pawprint`` command line: one console script with subcommands for owners, verifiers and the zoo.

Exit statuses (``pawprint._common.EXIT_CODES``): 0 ok; 1 a verification failed (the input was well formed but
does not verify); 2 bad input or usage; 3 a server could not be reached. A failure is printed as one line
``pawprint: error: ...`` naming the file, key or address involved; with ``--json`` it is also printed on stdout
as ``{"ok": false, "error": {"code": ..., "kind": ..., "message": ...}}``. Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pawprint import (
    cli_audit,
    cli_keys,
    cli_owner,
    cli_receipt,
    cli_registry,
    cli_verifier,
    cli_witness,
    cli_zoo,
)
from pawprint._common import (
    EXIT_CODES,
    UsageError,
    error_document,
    exit_code,
    user_errors,
    version,
    write_json,
)

__all__ = ["build_parser", "main", "user_errors"]

# One module per role, each adding its own subcommands; commands import what they need (the owner's agent,
# the verifier, the zoo) when they run, so that the parser, --help and the auditor's commands need only the
# core install (``protocol``).
#   cli_owner     owner inspect | invariants | fingerprint | submit, compare, render
#   cli_receipt   bundle verify, receipt verify, report
#   cli_registry  registry add | publish | revoke | list | show | checkpoint | export | prove | audit
#   cli_verifier  verifier serve | health | test-certs (| refit-null, from cli_refit_null)
#   cli_keys      keys generate | refresh, trust add (and trust-repo, from cli_tuf)
#   cli_witness   witness key | serve
#   cli_zoo       zoo attack | build, demo
#   cli_audit     audit recompute | verify-finding (| endpoint, from cli_audit_endpoint)

EPILOG = "exit status: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises ``UsageError`` (a ``SystemExit(2)``) after printing argparse's two
    lines, so that ``main`` can add its JSON form; the subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (``importlib.metadata`` is not free at start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"pawprint {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = _Parser(prog="pawprint", description=__doc__.splitlines()[0] if __doc__ else None,
                                         epilog=EPILOG)
    p.add_argument("--version", action=_Version)
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
    cli_audit.add_parser(sub)
    cli_witness.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning LAPACK threads stall at
    # barriers (benchmarks/perf, "floor"). Set before any command imports torch; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        if "--json" in argv:
            write_json(error_document(e, int(e.code or 0)))
        return int(e.code or 0)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("pawprint: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        code = exit_code(e)
        print(f"pawprint: error: {e}", file=sys.stderr)
        if getattr(args, "json", False):
            write_json(error_document(e, code))
        return code
