"""``pawprint trust-repo ...`` and ``pawprint keys refresh``: trust stores distributed as TUF metadata.

The repository side (``trust-repo init | publish | rotate-root | refresh-timestamp | status``) writes a TUF
repository into a directory that any static HTTP server can serve; the client side (``keys refresh``) fetches the
trust store from it through python-tuf's ngclient, verifies it and writes it atomically, keeping local
revocations. The glue is ``pawprint._tuf``; python-tuf comes with the ``signing`` extra (``make install``).

Exit statuses: 1 when what the repository serves does not verify (expired metadata, a signature threshold not
met, a rollback to older versions, a tampered trust store); 3 when it cannot be reached; 2 for bad input (an
unreadable key or root file, a key that is not the role's, a repository in a bad state).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pawprint._common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CheckFailed,
    CommandError,
    about,
    passphrase_option,
    private_key,
    public_key,
    read_file,
    write_json,
)

if TYPE_CHECKING:
    from pawprint._tuf import Lifetimes, RepositoryState
    from protocol import TrustStore

TUF_EXTRA_HINT = "needs python-tuf, from the signing extra (pip install 'pawprint[signing]')"


def _tuf() -> None:
    """Fail with one line if python-tuf is not installed."""
    try:
        import tuf.ngclient  # noqa: F401
    except ImportError as e:
        raise CommandError(f"TUF trust roots {TUF_EXTRA_HINT} ({e})") from e


@contextmanager
def _repository_errors(repo: str) -> Iterator[None]:
    from pawprint._tuf import TufRepositoryError

    try:
        yield
    except TufRepositoryError as e:
        raise CommandError(f"{repo}: {e}", kind="TufRepositoryError") from e
    except OSError as e:
        raise CommandError(f"{repo}: {e}") from e


@contextmanager
def _client_errors(url: str) -> Iterator[None]:
    """tuf's errors as one line each, with the exit status of what they mean."""
    import urllib3
    from tuf.api import exceptions as t

    try:
        yield
    except t.ExpiredMetadataError as e:
        raise CheckFailed(f"{url}: expired TUF metadata refused (the repository is stale or frozen): {e}",
                          kind="ExpiredMetadataError") from e
    except t.UnsignedMetadataError as e:
        raise CheckFailed(f"{url}: TUF signature threshold not met, refused: {e}", kind="UnsignedMetadataError") from e
    except t.BadVersionNumberError as e:
        raise CheckFailed(f"{url}: TUF rollback refused (older metadata than already trusted): {e}",
                          kind="BadVersionNumberError") from e
    except t.LengthOrHashMismatchError as e:
        raise CheckFailed(f"{url}: tampered: what the repository served does not match its signed length and "
                          f"hashes: {e}", kind="LengthOrHashMismatchError") from e
    except t.DownloadLengthMismatchError as e:
        raise CheckFailed(f"{url}: tampered: the repository served more than the signed length: {e}",
                          kind="DownloadLengthMismatchError") from e
    except t.RepositoryError as e:
        raise CheckFailed(f"{url}: TUF metadata does not verify: {type(e).__name__}: {e}", kind=type(e).__name__) from e
    except t.DownloadHTTPError as e:
        raise CommandError(f"{url}: TUF repository unavailable: HTTP {e.status_code} ({e})", code=EXIT_UNAVAILABLE,
                           kind="DownloadHTTPError") from e
    except (t.DownloadError, urllib3.exceptions.HTTPError) as e:
        # (ngclient reports a refused connection as SlowRetrievalError: urllib3's NewConnectionError is a
        # ConnectTimeoutError; the cause says which it was)
        cause = e.__cause__ or e
        text = str(getattr(cause, "reason", None) or cause) or type(e).__name__
        raise CommandError(f"{url}: TUF repository unreachable: {text}", code=EXIT_UNAVAILABLE,
                           kind=type(e).__name__) from e


# --------------------------------------------------------------------------------------------- options
def _now(args: argparse.Namespace) -> datetime:
    if args.now is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
    except ValueError as e:
        raise CommandError(f"--now: not an ISO 8601 time: {args.now!r:.60}") from e
    if moment.tzinfo is None:
        raise CommandError("--now: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return moment


def _lifetimes(args: argparse.Namespace) -> Lifetimes:
    from pawprint._tuf import Lifetimes

    values = {}
    for role in ("root", "targets", "snapshot", "timestamp"):
        days = getattr(args, f"{role}_days")
        if not days > 0:
            raise CommandError(f"--{role}-days must be positive, not {days}")
        values[role] = timedelta(days=days)
    return Lifetimes(**values)


def _store(path: str) -> TrustStore:
    from protocol import TrustStore

    with about(path):
        return TrustStore.from_json(read_file(path, "trust store"))


def _report(args: argparse.Namespace, state: RepositoryState, what: str) -> int:
    if args.json:
        write_json({"repository": args.repo, **state.as_dict()})
        return EXIT_OK
    print(f"{args.repo}: {what}; root v{state.root_version}, targets v{state.targets_version}, snapshot "
          f"v{state.snapshot_version}, timestamp v{state.timestamp_version} (expires "
          f"{state.as_dict()['timestamp_expires']}); {state.target_length}-byte trust store "
          f"sha256 {state.target_sha256[:16]}...")
    return EXIT_OK


# --------------------------------------------------------------------------------------------- commands
def cmd_repo_init(args: argparse.Namespace) -> int:
    _tuf()
    from pawprint._tuf import TrustRepository

    env = args.passphrase_env
    with _repository_errors(args.repo):
        state = TrustRepository(args.repo).init(
            _store(args.store), root_keys=[private_key(k, env) for k in args.root_key],
            extra_root_keys=[public_key(p, "--root-pub") for p in args.root_pub], root_threshold=args.root_threshold,
            targets_key=private_key(args.targets_key, env), snapshot_key=private_key(args.snapshot_key, env),
            timestamp_key=private_key(args.timestamp_key, env), now=_now(args), lifetimes=_lifetimes(args))
    return _report(args, state, "new TUF repository")


def cmd_repo_publish(args: argparse.Namespace) -> int:
    _tuf()
    from pawprint._tuf import TrustRepository

    env = args.passphrase_env
    with _repository_errors(args.repo):
        state = TrustRepository(args.repo).publish(
            _store(args.store), targets_key=private_key(args.targets_key, env),
            snapshot_key=private_key(args.snapshot_key, env), timestamp_key=private_key(args.timestamp_key, env),
            now=_now(args), lifetimes=_lifetimes(args))
    return _report(args, state, f"published {args.store}")


def cmd_repo_rotate_root(args: argparse.Namespace) -> int:
    _tuf()
    from pawprint._tuf import OnlineKeys, TrustRepository

    env = args.passphrase_env
    online_keys = (args.targets_key, args.snapshot_key, args.timestamp_key)
    if any(online_keys) and not all(online_keys):
        raise CommandError("give all three of --targets-key, --snapshot-key and --timestamp-key (new online keys), "
                           "or none")
    online = OnlineKeys(*(private_key(k, env) for k in online_keys)) if all(online_keys) else None
    with _repository_errors(args.repo):
        state = TrustRepository(args.repo).rotate_root(
            old_keys=[private_key(k, env) for k in args.root_key],
            new_keys=[private_key(k, env) for k in args.new_root_key],
            extra_new_keys=[public_key(p, "--new-root-pub") for p in args.new_root_pub],
            threshold=args.root_threshold, now=_now(args), online=online, lifetimes=_lifetimes(args))
    return _report(args, state, "rotated the root keys" + (" and the online keys" if online else ""))


def cmd_repo_refresh_timestamp(args: argparse.Namespace) -> int:
    _tuf()
    from pawprint._tuf import TrustRepository

    with _repository_errors(args.repo):
        state = TrustRepository(args.repo).refresh_timestamp(
            timestamp_key=private_key(args.timestamp_key, args.passphrase_env), now=_now(args),
            lifetimes=_lifetimes(args))
    return _report(args, state, "new timestamp")


def cmd_repo_status(args: argparse.Namespace) -> int:
    _tuf()
    from pawprint._tuf import TrustRepository

    with _repository_errors(args.repo):
        state = TrustRepository(args.repo).state()
    return _report(args, state, "TUF repository")


def cmd_repo_serve(args: argparse.Namespace) -> int:
    """Serve the repository over HTTP until SIGTERM or SIGINT (then exit 0)."""
    import signal
    import threading

    from pawprint._tuf import make_server

    host, sep, port_text = args.listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise CommandError(f"--listen: expected HOST:PORT, not {args.listen!r:.60}")
    with _repository_errors(args.repo):
        server = make_server(args.repo, host, int(port_text))  # IPv4 (http.server's default family)
    bound_port = server.server_address[1]
    url = f"http://{host}:{bound_port}"
    if args.json:
        print(json.dumps({"listening": f"{host}:{bound_port}", "port": bound_port, "url": url}), flush=True)
    else:
        print(f"serving {args.repo} at {url} (metadata/ and targets/); Ctrl-C stops", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_keys_refresh(args: argparse.Namespace) -> int:
    _tuf()
    from pawprint._tuf import default_cache, refresh

    root = None
    if args.tuf_root is not None:
        root = read_file(args.tuf_root, "TUF root metadata")
        _check_root(args.tuf_root, root)
    cache = Path(args.tuf_cache) if args.tuf_cache else default_cache(args.store)
    if root is None and not (cache / "metadata" / "root.json").exists():
        raise CommandError(f"--tuf-root is needed: {cache} holds no root trusted by an earlier refresh")
    with _client_errors(args.tuf_url):  # a local store's error names its file; a fetched one the URL
        result = refresh(args.tuf_url, args.store, bootstrap_root=root, cache_dir=cache)
    if args.json:
        write_json({"store": args.store, "url": args.tuf_url, **result.as_dict()})
        return EXIT_OK
    kept = f"; {len(result.kept_revocations)} local revocation(s) kept" if result.kept_revocations else ""
    dropped = f"; {len(result.dropped)} key(s) no longer listed dropped" if result.dropped else ""
    print(f"{args.store}: {len(result.store)} keys from {args.tuf_url} (TUF root v{result.root_version}, targets "
          f"v{result.targets_version}, timestamp v{result.timestamp_version} valid until "
          f"{result.as_dict()['timestamp_expires']}){kept}{dropped}")
    return EXIT_OK


def _check_root(path: str, data: bytes) -> None:
    """``--tuf-root`` must be TUF root metadata (its signatures are checked by ngclient)."""
    from tuf.api.metadata import Metadata, Root

    try:
        signed = Metadata.from_bytes(data).signed
    except Exception as e:  # tuf's DeserializationError and the like
        raise CommandError(f"--tuf-root {path}: not TUF metadata: {e}") from e
    if not isinstance(signed, Root):
        raise CommandError(f"--tuf-root {path}: TUF {signed.type} metadata, not root")


# ----------------------------------------------------------------------------------------------- parsers
def _lifetime_options(p: argparse.ArgumentParser, *roles: str) -> None:
    defaults = {"root": 365.0, "targets": 90.0, "snapshot": 7.0, "timestamp": 1.0}
    for role in ("root", "targets", "snapshot", "timestamp"):
        if role in roles:
            p.add_argument(f"--{role}-days", type=float, default=defaults[role], metavar="DAYS",
                           help=f"{role} metadata expires DAYS after signing (default {defaults[role]:g})")
        else:
            p.set_defaults(**{f"{role}_days": defaults[role]})
    p.add_argument("--now", default=None, metavar="TIME",
                   help="sign as of this ISO 8601 time (default: the clock); expiries count from it")
    p.add_argument("--json", action="store_true")
    passphrase_option(p)


def _online_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets-key", required=True, metavar="KEY", help="the targets role's private key")
    p.add_argument("--snapshot-key", required=True, metavar="KEY", help="the snapshot role's private key")
    p.add_argument("--timestamp-key", required=True, metavar="KEY", help="the timestamp role's private key")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint trust-repo ...``."""
    tr = sub.add_parser("trust-repo", help="publish a trust store as a TUF repository (a directory to serve)")
    cmds = tr.add_subparsers(dest="trust_repo_command", required=True)

    init = cmds.add_parser("init", help="a new repository: root v1 and the trust store as its one target")
    init.add_argument("repo", metavar="REPO")
    init.add_argument("--store", required=True, metavar="TRUST", help="the trust store to publish")
    init.add_argument("--root-key", action="append", required=True, metavar="KEY",
                      help="a root key that signs now (repeat)")
    init.add_argument("--root-pub", action="append", default=[], metavar="PUB",
                      help="a further root key, public only (kept offline; repeat)")
    init.add_argument("--root-threshold", type=int, required=True, metavar="N", help="root signatures required")
    _online_keys(init)
    _lifetime_options(init, "root", "targets", "snapshot", "timestamp")
    init.set_defaults(func=cmd_repo_init)

    pub = cmds.add_parser("publish", help="publish a new version of the trust store")
    pub.add_argument("repo", metavar="REPO")
    pub.add_argument("--store", required=True, metavar="TRUST")
    _online_keys(pub)
    _lifetime_options(pub, "targets", "snapshot", "timestamp")
    pub.set_defaults(func=cmd_repo_publish)

    rot = cmds.add_parser("rotate-root", help="root version N+1 with new root keys, signed by old and new keys")
    rot.add_argument("repo", metavar="REPO")
    rot.add_argument("--root-key", action="append", required=True, metavar="KEY",
                     help="a key of the current root (a threshold of them must sign; repeat)")
    rot.add_argument("--new-root-key", action="append", required=True, metavar="KEY",
                     help="a key of the new root that signs now (repeat)")
    rot.add_argument("--new-root-pub", action="append", default=[], metavar="PUB",
                     help="a further key of the new root, public only (repeat)")
    rot.add_argument("--root-threshold", type=int, required=True, metavar="N", help="the new root's threshold")
    for role in ("targets", "snapshot", "timestamp"):
        rot.add_argument(f"--{role}-key", default=None, metavar="KEY",
                         help=f"a new {role} key (all three or none): the trust store is re-published under them")
    _lifetime_options(rot, "root", "targets", "snapshot", "timestamp")
    rot.set_defaults(func=cmd_repo_rotate_root)

    ts = cmds.add_parser("refresh-timestamp", help="re-sign the timestamp (run well within its expiry)")
    ts.add_argument("repo", metavar="REPO")
    ts.add_argument("--timestamp-key", required=True, metavar="KEY")
    _lifetime_options(ts, "timestamp")
    ts.set_defaults(func=cmd_repo_refresh_timestamp)

    sv = cmds.add_parser("serve", help="serve the repository over plain HTTP (its files are signed) until stopped")
    sv.add_argument("repo", metavar="REPO")
    sv.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default 127.0.0.1:0 (any port)")
    sv.add_argument("--json", action="store_true", help='first line: {"listening", "port", "url"}')
    sv.set_defaults(func=cmd_repo_serve)

    st = cmds.add_parser("status", help="the versions and expiry the repository stands at")
    st.add_argument("repo", metavar="REPO")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_repo_status)


def add_refresh_parser(keys: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint keys refresh``."""
    rf = keys.add_parser("refresh", help="fetch the trust store from a TUF repository, verified (ngclient)")
    rf.add_argument("--tuf-url", required=True, metavar="URL", help="the repository's base URL (serves metadata/, "
                    "targets/)")
    rf.add_argument("--tuf-root", default=None, metavar="ROOT",
                    help="root metadata trusted out of band (1.root.json); needed on the first refresh only")
    rf.add_argument("--store", required=True, metavar="TRUST", help="the trust store to write (revocations kept)")
    rf.add_argument("--tuf-cache", default=None, metavar="DIR",
                    help="the TUF metadata trusted so far (default: TRUST.tuf/ beside the store); keep it")
    rf.add_argument("--json", action="store_true")
    rf.set_defaults(func=cmd_keys_refresh)
