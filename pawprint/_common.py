"""What the ``pawprint`` role modules share: the CLI's own error, exit statuses, reading files and keys named on
the command line, JSON and progress output, and the option groups several roles add.

Imports only ``protocol`` (the core install): whatever needs the owner's agent, the verifier or the zoo is
imported by the command that needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

    from protocol import Bundle, PrivateKey
    from verifier import NullModel, Thresholds

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # the command ran and what it checked does not hold (``registry audit``)
EXIT_BAD_INPUT = 2

Progress = Callable[[str, int, int], None]

# The modules of the ``[verifier]`` extra: an ImportError naming one of them means the extra is not installed.
VERIFIER_EXTRA_MODULES = frozenset({"scipy", "PIL", "grpc_health"})
VERIFIER_EXTRA_HINT = "needs the verifier extra (pip install 'pawprint[verifier]')"


class CommandError(Exception):
    """A file named on the command line cannot be read or written, an option combination is invalid, or a
    library refused the input with a plain ``ValueError``: ``main`` prints it as one line, exit status 2."""


def verifier_extra_missing(e: ImportError) -> bool:
    """Whether ``e`` says the verifier extra is not installed (and not some other, real, import failure)."""
    return (e.name or "").partition(".")[0] in VERIFIER_EXTRA_MODULES


@contextmanager
def user_input(what: str = "") -> Iterator[None]:
    """Turn a library's plain ``ValueError`` on bad input (a layer spec out of range, thresholds out of order)
    into a ``CommandError``; use it only around the call that validates what the user gave."""
    try:
        yield
    except ValueError as e:
        raise CommandError(f"{what}{e}") from e


# ------------------------------------------------------------------------------------------------ files
def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {what} {path}: {e.strerror or e}") from e


def passphrase(env: str | None) -> str | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise CommandError(f"environment variable {env} (named by --passphrase-env) is not set")
    return value


def private_key(path: str, env: str | None) -> PrivateKey:
    from protocol import PrivateKey

    return PrivateKey.load(path, passphrase(env))


def load_bundle(path: str | Path) -> Bundle:
    """A bundle file, parsed (not checked: ``protocol.verify_bundle`` does that); errors name the file."""
    from protocol import Bundle, ProtocolError

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"{path}: cannot read bundle ({e.strerror or e})") from e
    try:
        return Bundle.from_bytes(data)
    except ProtocolError as e:
        raise CommandError(f"{path}: not a valid bundle file ({e})") from e


# ----------------------------------------------------------------------------------------------- output
def write_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def line_progress(enabled: bool) -> Progress | None:
    """``label (done/total)`` on one stderr line, or ``None``."""
    if not enabled:
        return None

    def report(label: str, done: int, total: int) -> None:
        print(f"\r{label} ({done}/{total})", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    return report


@contextmanager
def progress_bar(desc: str, enabled: bool = True) -> Iterator[Progress]:
    """A tqdm bar on stderr driven by ``(label, done, total)`` callbacks (tqdm: the owner extra)."""
    bar: tqdm[None] | None = None

    def update(label: str, done: int, total: int) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            from tqdm import tqdm

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


# ---------------------------------------------------------------------------------------------- options
KEY_ROLES = ("owner", "vendor", "verifier", "registry")


def passphrase_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-env", metavar="VAR", default=None,
                   help="read the private key's passphrase from this environment variable")


def verdict_options(p: argparse.ArgumentParser) -> None:
    """The measured null and the verdict thresholds (``verifier``'s calibration)."""
    p.add_argument("--null", default=None, metavar="FILE",
                   help="the measured null (default: the shipped verifier/data/null-zoo-v1.json)")
    p.add_argument("--derived-p", type=float, default=1e-6, metavar="P",
                   help="derived if p * bases compared <= P (default 1e-6)")
    p.add_argument("--independent-p", type=float, default=0.01, metavar="P",
                   help="independent if p >= P (default 0.01)")


def thresholds(args: argparse.Namespace) -> Thresholds:
    """The verdict rule of ``verdict_options`` (needs the verifier extra)."""
    from verifier import Thresholds

    with user_input():
        return Thresholds(derived_p=args.derived_p, independent_p=args.independent_p)


def null_model(path: str | None) -> NullModel:
    """The measured null named by ``--null`` (the shipped one by default; needs the verifier extra)."""
    from verifier import load_null

    return load_null(path)  # a NullError is a VerifierError: main reports it
