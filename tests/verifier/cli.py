"""Run the protocol's CLI commands as ``pawprint`` will: ``python -m tests.verifier.cli ARGS``.

Uses ``pawprint.cli.main`` once the lead has wired ``add_commands`` into it, and until then an equivalent
parser built here, with the same error handling (one line ``pawprint: error: ...``, exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from owner.errors import OwnerError
from pawprint._cli_protocol import add_commands
from protocol import ProtocolError
from verifier import VerifierError


def _wired() -> bool:
    from pawprint.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any("keys" in a.choices for a in actions)


def main(argv: Sequence[str] | None = None) -> int:
    if _wired():
        from pawprint.cli import main as cli_main

        return cli_main(argv)
    parser = argparse.ArgumentParser(prog="pawprint")
    sub = parser.add_subparsers(dest="command", required=True)
    owner_sub = sub.add_parser("owner").add_subparsers(dest="owner_command", required=True)
    add_commands(sub, owner_sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ProtocolError, VerifierError, OwnerError, ValueError) as e:
        print(f"pawprint: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
