"""What the ``pawprint`` role modules share: the CLI's own errors, the exit statuses and which error means which,
reading files and keys named on the command line, JSON and progress output, and the option groups several roles
add.

Imports only ``protocol`` (the core install): whatever needs the owner's agent, the verifier or the zoo is
imported by the command that needs it; their error classes are looked up only once their modules are loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from protocol import Bundle, PrivateKey, PublicKey
    from verifier import NullModel, Thresholds

# The exit statuses, one meaning each (the README's command-line section shows this table; a test checks it):
EXIT_OK = 0  # the command did what it was asked, and what it checked holds
EXIT_CHECK_FAILED = 1  # the input was well formed but does not verify: a signature, a proof, an audit, a verdict
EXIT_BAD_INPUT = 2  # bad input or usage: an unreadable or malformed file, a bad option (argparse's usage errors)
EXIT_UNAVAILABLE = 3  # a server could not be reached, or did not answer in time
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_CHECK_FAILED: "a verification failed (signature, proof, audit, tampered file, verdict, invalid receipt)",
    EXIT_BAD_INPUT: "bad input or usage (unreadable or malformed file, bad option)",
    EXIT_UNAVAILABLE: "unavailable (a server that cannot be reached, UNAVAILABLE, deadline exceeded)",
}
# gRPC statuses that mean the peer could not be reached or did not answer in time (exit 3)
UNAVAILABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})

Progress = Callable[[str, int, int], None]

# The modules of the ``[verifier]`` extra: an ImportError naming one of them means the extra is not installed.
VERIFIER_EXTRA_MODULES = frozenset({"scipy", "PIL", "grpc_health"})
VERIFIER_EXTRA_HINT = "needs the verifier extra (pip install 'pawprint[verifier]')"

# The project's error hierarchies, by the module that defines each: an error of a class can only be raised
# once its module is loaded, so they are looked up there instead of importing owner, verifier or the zoo.
_ERROR_CLASSES = (
    ("owner.errors", "OwnerError"),
    ("verifier.errors", "VerifierError"),
    ("zoo.attacks", "AttackError"),
    ("zoo.attacks", "AttackNotApplicable"),
)
# Classes whose every instance means "does not verify" (exit 1), by module (looked up as above).
_CHECK_FAILED_CLASSES = (
    ("protocol", "SignatureError"),
    ("protocol", "UntrustedKeyError"),
    ("protocol", "ProofError"),
    ("protocol", "LogCheckFailed"),
    ("protocol", "LogUnreadable"),  # the log itself is corrupt (a registry's DATA_LOSS)
    ("protocol", "ProofUnavailable"),  # the log has no proof for a checkpoint it once signed
    ("verifier.errors", "Unauthenticated"),  # a local registry: the signature does not verify, the key is unknown
    ("verifier.errors", "PermissionDenied"),  # ... the key is not trusted for what it signed
    ("verifier._pictures", "PictureMismatch"),
)
# A peer's refusals, carrying its gRPC status name as ``code``.
_REFUSALS = (("protocol.wire", "RemoteFailure"), ("owner._client", "SubmissionError"))
# (``verifier.RegistryCorrupt`` is not among them: a data directory the verifier cannot read, its database or a
# blob, is exit 2 whichever it is; an audit of a local log reports its corruption itself, exit 1.)
# Errors that say where a check could not run (a channel, a peer, a file of keys), never that it failed.
_NOT_A_CHECK = (
    ("protocol.wire", "ChannelError"),
    ("protocol.wire", "RemoteFailure"),
    ("protocol", "KeyFileError"),
    ("protocol", "TrustStoreError"),
)


class CommandError(Exception):
    """A file named on the command line cannot be read or written, an option combination is invalid, or a
    library refused the input: ``main`` prints it as one line and exits with ``code`` (2 unless said).
    ``kind`` names the error for ``--json`` (the library's class when this wraps one)."""

    default_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, code: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.code = self.default_code if code is None else code
        self.kind = kind or type(self).__name__


class CheckFailed(CommandError):
    """What the command checked does not hold (exit 1): a verdict that does not follow, an invalid receipt."""

    default_code = EXIT_CHECK_FAILED


class UsageError(SystemExit):
    """argparse's usage error (exit 2), after argparse's own two lines on stderr: ``main`` adds the JSON."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_BAD_INPUT)
        self.message = message


def _loaded(pairs: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module, name in pairs:
        loaded = sys.modules.get(module)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input, a failed check or an unreachable peer (one line, exit 1-3) rather
    than a bug: the CLI's own, the protocol's, and those of the owner's agent, the verifier and the zoo that
    are loaded."""
    from protocol import ProtocolError

    found: list[type[Exception]] = [CommandError, ProtocolError]
    found.extend(c for c in _loaded(_ERROR_CLASSES) if issubclass(c, Exception))
    return tuple(found)


def _status_code(e: BaseException) -> str | None:
    """The gRPC status name a peer's refusal carries (``RemoteFailure`` and the owner's ``SubmissionError``)."""
    code = getattr(e, "code", None)
    return code if isinstance(code, str) else None


def exit_code(e: BaseException, *, verifying: bool = False) -> int:
    """The exit status of a user error (``EXIT_CODES``). ``verifying``: ``e`` was raised while checking input
    already read and parsed (a bundle's terms, a receipt's contents), so any protocol error means the input
    does not verify, except one that says the check could not run (a channel, a peer, a key file)."""
    from protocol import ProtocolError

    if isinstance(e, CommandError):
        return e.code
    if isinstance(e, _loaded((("verifier.errors", "Unavailable"),))):
        return EXIT_UNAVAILABLE
    if _status_code(e) in UNAVAILABLE_CODES and isinstance(e, _loaded(_REFUSALS)):
        return EXIT_UNAVAILABLE
    checks = _loaded(_CHECK_FAILED_CLASSES)
    if isinstance(e, checks):
        return EXIT_CHECK_FAILED
    if isinstance(e, _loaded(_REFUSALS)) and isinstance(e.__cause__, checks):
        return EXIT_CHECK_FAILED  # the owner's agent: the verifier's challenge or receipt does not verify
    if verifying and isinstance(e, ProtocolError) and not isinstance(e, _loaded(_NOT_A_CHECK)):
        return EXIT_CHECK_FAILED
    return EXIT_BAD_INPUT


def error_kind(e: BaseException) -> str:
    return e.kind if isinstance(e, CommandError) else type(e).__name__


@contextmanager
def about(prefix: str, *, verifying: bool = False) -> Iterator[None]:
    """Name what a user error was about: ``PREFIX: message`` (unless the message already names it), with the
    exit status of the original error (``exit_code``; ``verifying`` as there) and its class as ``kind``."""
    try:
        yield
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        message = str(e)
        code = exit_code(e, verifying=verifying)
        if prefix and prefix not in message:
            message = f"{prefix}: {message}"
        elif isinstance(e, CommandError) and code == e.code:
            raise
        raise CommandError(message, code=code, kind=error_kind(e)) from e


@contextmanager
def reaching(address: str) -> Iterator[None]:
    """Name the address when a channel cannot be opened or a peer refuses or cannot be reached (exit 3 for
    UNAVAILABLE and DEADLINE_EXCEEDED); other errors pass unchanged."""
    try:
        yield
    except Exception as e:
        if not isinstance(e, _loaded((*_REFUSALS, ("protocol.wire", "ChannelError")))):
            raise
        message = str(e)
        raise CommandError(message if address in message else f"{address}: {message}", code=exit_code(e),
                           kind=type(e).__name__) from e


def error_document(e: BaseException, code: int) -> dict[str, Any]:
    """The ``--json`` form of a failure, printed on stdout: ``{"ok": false, "error": {code, kind, message}}``."""
    message = e.message if isinstance(e, UsageError) else str(e)
    return {"ok": False, "error": {"code": code, "kind": error_kind(e), "message": message}}


def version() -> str:
    """The installed distribution's version, else the package's own ``__version__`` (a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pawprint")
    except PackageNotFoundError:
        from pawprint import __version__

        return __version__


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


def tls_client_options(p: argparse.ArgumentParser, peer: str) -> None:
    """How a command reaches a server over TLS (``protocol.wire.open_channel``'s options); ``peer`` names the
    server in the help ("verifier", "registry", "server")."""
    p.add_argument("--ca", default=None, help=f"CA certificate to trust for the {peer}'s TLS certificate")
    p.add_argument("--cert", default=None, help="client certificate (mutual TLS)")
    p.add_argument("--key", dest="tls_key", default=None, metavar="K", help="client certificate's key (mutual TLS)")
    p.add_argument("--server-name", default=None, help=f"expected name in the {peer}'s certificate")
    p.add_argument("--insecure-loopback", action="store_true", help="plaintext, only to 127.0.0.1 or ::1")


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

    with about(path):
        return PrivateKey.load(path, passphrase(env))


def public_key(path: str | Path, option: str = "") -> PublicKey:
    """A public key file; errors name the file (and the option that named it)."""
    from protocol import PublicKey

    with about(f"{option} {path}".strip()):
        return PublicKey.load(path)


def load_bundle(path: str | Path) -> Bundle:
    """A bundle file, parsed (not checked: ``protocol.verify_bundle`` does that); errors name the file."""
    from protocol import ProtocolError, read_bundle

    try:
        return read_bundle(path)
    except ProtocolError as e:
        raise CommandError(str(e)) from e


# ----------------------------------------------------------------------------------------------- output
def write_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ---------------------------------------------------------------------------------------------- progress
# One progress style for every long step (owner commands, ``zoo build``, ``demo``), written by hand rather than
# with tqdm: it is a few lines, needs no extra (``zoo build`` and the core commands have no tqdm), and tqdm has
# no form for logs (without a terminal it still redraws with carriage returns).
ProgressMode = Literal["tty", "lines", "quiet"]
_REDRAW_S = 0.1  # a terminal's line is redrawn at most this often, unless ``done`` changed

# Environment settings that keep third-party libraries from drawing progress bars or logging on their own;
# set (unless the user set them) by a command before it imports the zoo, transformers or huggingface_hub.
QUIET_LIBRARIES_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub, and transformers' bars, which follow it
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_libraries_env() -> None:
    """Set ``QUIET_LIBRARIES_ENV`` where the environment does not say otherwise (before those imports)."""
    for name, value in QUIET_LIBRARIES_ENV.items():
        os.environ.setdefault(name, value)


def elapsed_text(seconds: float) -> str:
    """``4.2s``, ``3m07s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def progress_mode(enabled: bool, stream: TextIO) -> ProgressMode:
    """``quiet`` unless ``enabled`` (``-q``, ``--json``), else ``tty`` on a terminal and ``lines`` otherwise."""
    if not enabled:
        return "quiet"
    try:
        return "tty" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "lines"


class ProgressReporter:
    """The CLI's progress, a ``Progress`` callback ``(label, done, total)``: ``done`` of ``total`` steps are
    finished and ``label`` is being worked on now (as ``owner.compute_invariants`` and ``zoo.build_zoo`` call
    it). Written on ``stream`` (stderr), one of three ways (``mode``, by default from ``progress_mode``):

    - ``tty`` (a terminal): one line redrawn in place, ``DESC: LABEL  DONE/TOTAL  ELAPSED``, cut to the
      terminal's width, at most ten times a second unless ``done`` changed; it is ended with a newline when
      ``done`` reaches ``total`` or the reporter is closed;
    - ``lines`` (a log, CI): the same text as plain lines, one when a step starts (the first call, and each
      call that changes ``done``: the one with ``done == total`` ends the work), no carriage returns; calls
      that only change the running step's label (a training loss) print nothing;
    - ``quiet`` (``-q``, ``--json``): nothing.
    """

    def __init__(self, desc: str = "", *, enabled: bool = True, mode: ProgressMode | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.mode: ProgressMode = mode or progress_mode(enabled, self.stream)
        self.prefix = f"{desc}: " if desc else ""
        self._clock = clock
        self._start = clock()
        self._last_done: int | None = None
        self._last_draw = float("-inf")
        self._open = False  # a terminal line is drawn and not yet ended

    def text(self, label: str, done: int, total: int, width: int | None = None) -> str:
        """``DESC: LABEL  DONE/TOTAL  ELAPSED``; within ``width`` characters, the label is shortened first."""
        tail = f"  {done}/{total}  {elapsed_text(self._clock() - self._start)}"
        if width is not None:
            room = width - len(self.prefix) - len(tail)
            if len(label) > room:
                label = label[: max(0, room - 3)] + "..."
        line = f"{self.prefix}{label}{tail}"
        return line if width is None else line[:width]

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.mode == "quiet":
            return
        new_step = done != self._last_done
        self._last_done = done
        if self.mode == "lines":
            if new_step:
                self._write(self.text(label, done, total) + "\n")
            return
        now = self._clock()
        if not new_step and done != total and now - self._last_draw < _REDRAW_S:
            return
        self._last_draw = now
        line = self.text(label, done, total, self._width())
        self._write(f"\r{line}\x1b[K" + ("\n" if done >= total else ""))
        self._open = done < total

    def close(self) -> None:
        """End a terminal line left open (the work stopped before ``done`` reached ``total``)."""
        if self._open:
            self._write("\n")
            self._open = False

    def _width(self) -> int:
        """The terminal's width less one (a full line would wrap on some terminals); 79 if unknown."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns - 1 if columns > 0 else 79

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def line_progress(enabled: bool) -> Progress | None:
    """The CLI's progress reporter on stderr (``ProgressReporter``), or ``None`` when not ``enabled``."""
    return ProgressReporter() if enabled else None


@contextmanager
def progress_bar(desc: str, enabled: bool = True) -> Iterator[Progress]:
    """The CLI's progress reporter on stderr named ``desc`` (``ProgressReporter``; silent when not
    ``enabled``), for the duration of the block; a line left open on a terminal is ended on leaving it."""
    reporter = ProgressReporter(desc, enabled=enabled)
    try:
        yield reporter
    finally:
        reporter.close()


# ---------------------------------------------------------------------------------------------- options
KEY_ROLES = ("owner", "vendor", "verifier", "registry", "auditor", "witness")


def passphrase_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-env", metavar="VAR", default=None,
                   help="read the private key's passphrase from this environment variable")


def verdict_options(p: argparse.ArgumentParser) -> None:
    """The measured null and the verdict thresholds (``verifier``'s calibration)."""
    p.add_argument("--null", default=None, metavar="FILE",
                   help="the measured null (default: the shipped verifier/data/null-zoo-real-v3.json)")
    p.add_argument("--derived-p", type=float, default=1e-6, metavar="P",
                   help="derived if p * bases compared <= P (default 1e-6)")
    p.add_argument("--independent-p", type=float, default=0.01, metavar="P",
                   help="independent if p >= P (default 0.01)")


def thresholds(args: argparse.Namespace) -> Thresholds:
    """The verdict rule of ``verdict_options`` (needs the verifier extra)."""
    from verifier import Thresholds

    with user_input():
        return Thresholds(derived_p=args.derived_p, independent_p=args.independent_p)


def null_model(path: str | None, null_id: str | None = None) -> NullModel:
    """The measured null named by ``--null`` (by default the shipped one a receipt names by ``null_id``, else
    the default one; needs the verifier extra)."""
    from verifier import load_null

    return load_null(path, null_id)  # a NullError is a VerifierError: main reports it
