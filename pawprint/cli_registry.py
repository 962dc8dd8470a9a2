"""``pawprint registry ...``: the registry of base models, a transparency log.

Every command reads a registry server (``--registry HOST:PORT``, TLS options as for ``owner submit``) or a
verifier's data directory (``--data DIR``, the verifier extra); ``audit`` and ``prove`` (and ``receipt
verify``) also read a log copy (``--log-copy FILE``, written by ``registry export``) with no server and no
store. ``add`` is the administrator's local path. Whatever the source, what it serves is checked here with
``protocol`` before it is shown or believed: checkpoints against the log's public key, entries against
inclusion and consistency proofs. A log copy is untrusted input like a server.

Reading a log needs only the core install: ``protocol`` and ``protocol.wire``; the verifier is imported only
for ``--data`` and for the administrator's ``add``. ``audit`` exits 1 when the log fails a check (its findings
printed), so that 2 still means the audit could not run (3: the registry could not be reached).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pawprint._common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    VERIFIER_EXTRA_HINT,
    CommandError,
    about,
    load_bundle,
    passphrase_option,
    private_key,
    public_key,
    reaching,
    read_file,
    tls_client_options,
    user_input,
    verifier_extra_missing,
    write_json,
)

if TYPE_CHECKING:
    import grpc

    from protocol import (
        Bundle,
        Checkpoint,
        Cosigned,
        LogCopy,
        LogReader,
        PublicKey,
        Published,
        SignedMessage,
        TrustStore,
        WitnessPolicy,
    )
    from verifier import Registry
    from verifier._witnessing import Witnessed, WitnessSet

# verifier's DEFAULT_MAX_PROBE_SETS, repeated so that building the parser imports no verifier (a test checks it)
DEFAULT_MAX_PROBE_SETS = 16


class LogSource(Protocol):
    """A registry that can also be written to: ``protocol.wire.RemoteRegistry`` or ``verifier.LocalRegistry``."""

    def checkpoint(self) -> str: ...

    def entries(self, start: int, end: int) -> list[bytes]: ...

    def get(self, key: str) -> tuple[int, bytes]: ...

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]: ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    def publish(self, statement: SignedMessage, bundle: Bundle) -> Published: ...

    def revoke(self, statement: SignedMessage) -> Published: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- sources
def _open_registry(args: argparse.Namespace, *, create: bool = False, checked: bool = True,
                   log_key: str | None = None, max_probe_sets: int | None = None) -> Registry:
    """The verifier's store on ``--data`` (the verifier extra, said plainly when it is missing)."""
    try:
        from verifier import Registry
    except ImportError as e:
        if verifier_extra_missing(e):
            raise CommandError(f"a verifier's data directory (--data) {VERIFIER_EXTRA_HINT}; "
                               "a registry server (--registry) or a log copy (--log-copy) needs only the core") from e
        raise
    return Registry(args.data, create=create, checked=checked,
                    log_key=private_key(log_key, None) if log_key is not None else None,
                    max_probe_sets=DEFAULT_MAX_PROBE_SETS if max_probe_sets is None else max_probe_sets)


@contextlib.contextmanager
def registry_source(args: argparse.Namespace, *, trust: TrustStore | None = None, checked: bool = True,
                    create: bool = False) -> Iterator[tuple[LogSource, PublicKey | None]]:
    """The registry the command names and, for a local data directory, its own log key: a
    ``RemoteRegistry`` over a channel, or a ``LocalRegistry`` on a data directory."""
    source: LogSource
    own_key: PublicKey | None = None
    if getattr(args, "registry", None):
        from protocol.wire import RemoteRegistry

        source = RemoteRegistry(open_remote(args, args.registry), timeout_s=args.timeout)
        try:
            with reaching(args.registry):  # a refusal or an unreachable registry names its address
                yield source, own_key
        finally:
            source.close()
        return
    with about(args.data):
        registry = _open_registry(args, create=create, checked=checked)
    from verifier import LocalRegistry

    source, own_key = LocalRegistry(registry, trust), registry.log_public_key
    try:
        yield source, own_key
    finally:
        source.close()


def open_remote(args: argparse.Namespace, address: str) -> grpc.Channel:
    """A channel to ``address`` with the command's TLS options (``--ca``, ``--cert``, ``--key``,
    ``--server-name``, ``--insecure-loopback``); errors name the address."""
    from protocol.wire import open_channel, read_pem

    with reaching(address):
        return open_channel(
            address, ca=read_pem(args.ca, "CA certificate"), cert=read_pem(args.cert, "client certificate"),
            key=read_pem(args.tls_key, "client key"), insecure_loopback=args.insecure_loopback,
            server_name=args.server_name,
        )


def where(args: argparse.Namespace) -> str:
    """The log a command reads, as the user named it: ``HOST:PORT``, a data directory or a log copy file."""
    return str(getattr(args, "registry", None) or getattr(args, "log_copy", None) or getattr(args, "data", None))


@contextlib.contextmanager
def log_reader(args: argparse.Namespace, *, checked: bool = True) -> Iterator[tuple[LogReader, PublicKey | None]]:
    """``registry_source``, or the log copy of ``--log-copy`` (no own key: its checkpoints need ``--log-pub``)."""
    if getattr(args, "log_copy", None):
        yield read_log_copy(args.log_copy), None
        return
    with registry_source(args, checked=checked) as (source, own_key):
        yield source, own_key


def log_key(args: argparse.Namespace, own_key: PublicKey | None, *, required: bool) -> PublicKey | None:
    """The log's public key: ``--log-pub``, else (a local registry) the data directory's own; a remote log's
    (or a log copy's) key must come from the command line, never from the log being checked."""
    if args.log_pub is not None:
        return public_key(args.log_pub, "--log-pub")
    if getattr(args, "log_trust", None) is not None:  # the trust store's registry key (pawprint.cli_keys)
        from pawprint.cli_keys import sole_trusted_key

        return sole_trusted_key(args.log_trust, "registry", "--log-trust")
    if own_key is not None:
        return own_key
    if required:
        where = "a log copy's" if getattr(args, "log_copy", None) else "a remote registry's"
        raise CommandError(f"--log-pub is needed to check {where} checkpoints (or --log-trust)")
    return None


def read_log_copy(path: str) -> LogCopy:
    """A ``registry export`` file as a ``protocol.LogCopy``: only its shape is checked here; its checkpoint and
    entries are untrusted until the commands' checks verify them against ``--log-pub`` and a saved checkpoint."""
    from protocol import FormatError, JsonError, LogCopy

    try:
        return LogCopy.from_json(read_file(path, "log copy"))
    except JsonError as e:
        raise CommandError(f"{path}: not a log copy: {e}") from e
    except FormatError as e:
        raise CommandError(f"{path}: {e}") from e


def connection_options(p: argparse.ArgumentParser, *, required: bool = True, log_copy: bool = False) -> None:
    """Where the log is (``--registry`` | ``--data`` [| ``--log-copy``]), the TLS options and ``--log-pub``."""
    where = p.add_mutually_exclusive_group(required=required)
    where.add_argument("--registry", metavar="HOST:PORT", default=None, help="a registry server")
    where.add_argument("--data", metavar="DIR", default=None, help="a local registry data directory")
    if log_copy:
        where.add_argument("--log-copy", metavar="FILE", default=None,
                           help="a copy of the log written by `registry export` (checked like a server)")
    tls_client_options(p, "server")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--log-pub", default=None, metavar="PUB",
                   help="the log's public key, to check its checkpoints (a local registry's own by default)")
    p.add_argument("--log-trust", default=None, metavar="TRUST",
                   help="... or take it from a trust store: its one unrevoked key of role registry")
    witness_options(p)


def open_checkpoint(args: argparse.Namespace, note: str | bytes, key: PublicKey | None,
                    what: str = "", *, witnessed: bool = True) -> Checkpoint:
    """``protocol.open_note``, its failure naming the log (or the file ``what``) and the log key; with
    ``witnessed`` (not for a checkpoint the user saved) also the command's witness policy (``--witnesses``)."""
    from protocol import open_note

    signer = f" (checked against log key {key.key_id})" if key is not None else ""
    with about(f"{what or where(args) + ': the checkpoint'}{signer}"):
        cp = open_note(note, key)
    if witnessed:
        check_witnessed(args, note, what or f"{where(args)}: the checkpoint")
    return cp


def witness_options(p: argparse.ArgumentParser) -> None:
    """``--witnesses K`` and ``--witness-trust``: the client's witness policy on the log's checkpoints."""
    p.add_argument("--witnesses", type=int, default=None, metavar="K",
                   help="refuse a log checkpoint unless K witnesses trusted in --witness-trust cosigned it")
    p.add_argument("--witness-trust", default=None, metavar="TRUST",
                   help="the trust store whose witness keys (role witness) --witnesses counts (default --trust)")


def witness_policy(args: argparse.Namespace) -> WitnessPolicy | None:
    """The policy of ``witness_options`` (None without ``--witnesses``)."""
    from protocol import TrustStore, WitnessPolicy

    threshold = getattr(args, "witnesses", None)
    if threshold is None:
        return None
    path = args.witness_trust or getattr(args, "trust", None)
    if path is None:
        raise CommandError("--witnesses needs the trust store holding the witness keys (--witness-trust)")
    with about(path):
        return WitnessPolicy.from_trust(TrustStore.load(path), threshold)


def check_witnessed(args: argparse.Namespace, note: str | bytes, what: str) -> list[Cosigned] | None:
    """The note's cosignatures under the command's witness policy (None when it has none); a note short of it
    fails verification (exit 1), naming ``what``."""
    policy = witness_policy(args)
    if policy is None:
        return None
    with about(what):
        return policy.check(note)


def saved_checkpoint(path: str) -> bytes:
    """A checkpoint saved by ``registry checkpoint``: a file that is not one is bad input (2), named."""
    from protocol import ProtocolError, parse_checkpoint

    note = read_file(path, "checkpoint")
    try:
        parse_checkpoint(note)
    except ProtocolError as e:
        raise CommandError(f"{path}: not a checkpoint ({e})") from e
    return note


def leaf_hex(data: bytes) -> str:
    from protocol import leaf_hash

    return leaf_hash(data).hex()


def checkpoint_dict(cp: Checkpoint) -> dict[str, Any]:
    return {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "time": cp.time}


def _describe(index: int, data: bytes, key: PublicKey | None) -> dict[str, Any]:
    """An entry for display: its fields, and whether its signatures verify (``signatures``)."""
    from protocol import LogEntry, ProtocolError, statement_of

    try:
        view: dict[str, Any] = LogEntry.from_bytes(data).open(key).as_dict(index)
        view["signatures"] = "verified"
        return view
    except ProtocolError as e:
        problem = str(e)
    s = statement_of(data)
    view = {"index": index, "action": s.action, "name": s.name, "vendor_key_id": s.vendor_key_id,
            "manifest_sha256": s.manifest_sha256.hex()}
    unchecked = key is None and "neither the vendor" in problem
    view["signatures"] = "unchecked: signed by the log (pass --log-pub)" if unchecked else f"INVALID: {problem}"
    return view


def _published_report(published: Published, statement: SignedMessage, key: PublicKey | None, *,
                      action: str) -> dict[str, Any]:
    from protocol import check_published

    cp = check_published(published, statement, key)
    return {"index": published.index, "existing": published.existing, "action": action,
            "checkpoint": checkpoint_dict(cp), "checkpoint_signature": "verified" if key else "unchecked",
            "inclusion_proof": "verified", "leaf_hash": leaf_hex(published.entry)}


def _trust_for(args: argparse.Namespace) -> TrustStore | None:
    from protocol import TrustStore

    if getattr(args, "data", None) and args.trust is None:
        raise CommandError("publishing to a local registry (--data) needs its trust store (--trust)")
    return TrustStore.load(args.trust) if args.trust is not None else None


def max_probe_sets_option(p: argparse.ArgumentParser) -> None:
    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    p.add_argument("--max-probe-sets", type=positive, default=DEFAULT_MAX_PROBE_SETS, metavar="N",
                   help="a base may bring a new probe set only while the registry holds fewer than N (every "
                        f"challenge names them all; default {DEFAULT_MAX_PROBE_SETS})")


# ---------------------------------------------------------------------------------------------- commands
def cmd_registry_add(args: argparse.Namespace) -> int:
    from protocol import TrustStore

    bundle = load_bundle(args.bundle)
    trust = TrustStore.load(args.trust)
    with about(args.data):
        registry = _open_registry(args, create=True, log_key=args.log_key, max_probe_sets=args.max_probe_sets)
    registry.witnesses = witness_set(args, trust)
    signed_by = f"{args.bundle} (signed by key {bundle.signed.public_key.key_id}; trust store {args.trust})"
    try:
        with about(signed_by, verifying=True):  # a tampered bundle does not verify (1), before the store says so
            bundle.open()
        with about(signed_by):
            entry = registry.add_base(args.name, bundle, trust, licence=args.licence,
                                      release_date=args.release_date, description=args.description)
        state = registry.state()
    finally:
        registry.close()
    witnessed = None if registry.last_witnessed is None else registry.last_witnessed.as_dict()
    if args.json:
        write_json({"name": entry.name, "index": entry.index, "vendor_key_id": entry.vendor_key_id,
                    "manifest_sha256": entry.manifest_sha256.hex(), "size": state.size, "root": state.root.hex(),
                    "witnessed": witnessed})
        return EXIT_OK
    print(f"registered {entry.name} as entry {entry.index} (vendor {entry.vendor_key_id}, manifest "
          f"{entry.manifest_sha256.hex()}); registry now {state.size} entries, root {state.root.hex()}")
    if registry.last_witnessed is not None:
        _print_witnessed(registry.last_witnessed)
    return EXIT_OK


def witness_set(args: argparse.Namespace, trust: TrustStore | None) -> WitnessSet | None:
    """The witnesses a log sends its checkpoints to (``--witness URL``), and whose cosignatures it keeps: the
    trust store's witness keys (role witness)."""
    from protocol import Role

    if not getattr(args, "witness", None):
        return None
    from verifier._witnessing import WitnessSet, check_urls

    if trust is None:
        raise CommandError("--witness needs the trust store holding the witnesses' keys (--trust)")
    keys = tuple((e.name, e.public_key) for e in sorted(trust, key=lambda e: e.key_id)
                 if Role.WITNESS in e.roles and not e.revoked and e.name)
    if not keys:
        raise CommandError("--witness: the trust store holds no named witness key (trust add ... --role witness "
                           "--name NAME)")
    with user_input():
        return WitnessSet(check_urls(args.witness), keys)


def _print_witnessed(done: Witnessed) -> None:
    who = ", ".join(done.cosigned) or "no witness"
    print(f"checkpoint of size {done.size} cosigned by {who}")
    for url, reason in done.failed.items():
        print(f"  witness {url}: {reason}")


def cmd_registry_witness(args: argparse.Namespace) -> int:
    from protocol import TrustStore

    trust = TrustStore.load(args.trust)
    with about(args.data):
        registry = _open_registry(args, log_key=args.log_key)
    try:
        registry.witnesses = witness_set(args, trust)
        done = registry.witness()
    finally:
        registry.close()
    if args.json:
        write_json(done.as_dict())
    else:
        _print_witnessed(done)
    return EXIT_OK if not done.failed else EXIT_UNAVAILABLE


def cmd_registry_publish(args: argparse.Namespace) -> int:
    from protocol import REGISTER, RegistryStatement

    bundle = load_bundle(args.bundle)
    with about(f"{args.bundle} (signed by key {bundle.signed.public_key.key_id})", verifying=True):
        manifest = bundle.open()
    key = private_key(args.k, args.passphrase_env)
    if manifest.owner_key_id != key.key_id:
        raise CommandError(f"{args.bundle} is signed by key {manifest.owner_key_id}, not by the key given with -k "
                           f"({args.k}: key {key.key_id})")
    statement = RegistryStatement(REGISTER, args.name, key.key_id, bundle.manifest_digest, int(time.time()),
                                  args.licence, args.release_date, args.description).sign(key)
    with registry_source(args, trust=_trust_for(args), create=True) as (source, own_key):
        published = source.publish(statement, bundle)
        report = _published_report(published, statement, log_key(args, own_key, required=False), action="register")
    report["name"] = args.name
    report["manifest_sha256"] = bundle.manifest_digest.hex()
    if args.json:
        write_json(report)
        return EXIT_OK
    state = "already in the log" if published.existing else "appended"
    cp = report["checkpoint"]
    print(f"{args.name}: entry {published.index} ({state}); in the checkpoint of size {cp['size']} "
          f"(root {cp['root']}, signature {report['checkpoint_signature']}), inclusion proof verified")
    return EXIT_OK


def cmd_registry_revoke(args: argparse.Namespace) -> int:
    from protocol import REGISTER, REVOKE, RegistryStatement, statement_of

    key = private_key(args.k, args.passphrase_env)
    with registry_source(args, trust=_trust_for(args)) as (source, own_key):
        index, data = source.get(args.entry)
        target = statement_of(data)
        if target.action != REGISTER:
            raise CommandError(f"entry {index} is a revocation; name the registration to revoke")
        statement = RegistryStatement(REVOKE, target.name, key.key_id, target.manifest_sha256, int(time.time()),
                                      reason=args.reason).sign(key)
        published = source.revoke(statement)
        report = _published_report(published, statement, log_key(args, own_key, required=False), action="revoke")
    report.update(name=target.name, revokes=index)
    if args.json:
        write_json(report)
        return EXIT_OK
    state = "already in the log" if published.existing else "appended"
    print(f"{target.name}: entry {index} revoked by entry {published.index} ({state}); inclusion proof verified")
    return EXIT_OK


def cmd_registry_claim(args: argparse.Namespace) -> int:
    """A vendor's claim of a namespace: from then on only its key publishes names ``NAMESPACE/...``. Like a
    revocation it is a signed statement without a bundle (sent as one: the registry reads its action)."""
    from protocol import CLAIM, NO_MANIFEST, ProtocolError, RegistryStatement

    key = private_key(args.k, args.passphrase_env)
    namespace = args.namespace[:-1] if args.namespace.endswith("/") else args.namespace
    try:
        statement = RegistryStatement(CLAIM, namespace, key.key_id, NO_MANIFEST, int(time.time()),
                                      description=args.description).sign(key)
    except ProtocolError as e:
        raise CommandError(f"cannot claim {args.namespace!r}: {e}") from e
    with registry_source(args, trust=_trust_for(args), create=True) as (source, own_key):
        published = source.revoke(statement)
        report = _published_report(published, statement, log_key(args, own_key, required=False), action=CLAIM)
    report["namespace"] = f"{namespace}/"
    report["vendor_key_id"] = key.key_id
    if args.json:
        write_json(report)
        return EXIT_OK
    state = "already in the log" if published.existing else "appended"
    print(f"{namespace}/: claimed by key {key.key_id} in entry {published.index} ({state}); only that key "
          "publishes under it from now on; inclusion proof verified")
    return EXIT_OK


# What the vendor says, shown as such: nothing checks a release date, a licence or a description.
CLAIMED = "(the vendor's claim, not verified)"


def _status(r: dict[str, Any]) -> str:
    from protocol import CLAIM, REVOKE

    if r["action"] in (REVOKE, CLAIM):
        return str(r["action"])
    return "revoked" if r.get("revoked_by") is not None else "active"


def cmd_registry_list(args: argparse.Namespace) -> int:
    from protocol import CLAIM, REVOKE

    with registry_source(args) as (source, own_key):
        key = log_key(args, own_key, required=False)
        note = source.checkpoint()
        cp = open_checkpoint(args, note, key)
        rows = [_describe(i, d, key) for i, d in enumerate(source.entries(0, cp.size))]
    revoked = {r["manifest_sha256"]: r["index"] for r in rows if r["action"] == REVOKE}
    for r in rows:
        if r["action"] not in (REVOKE, CLAIM):
            r["revoked_by"] = revoked.get(r["manifest_sha256"])
    if args.json:
        write_json({**checkpoint_dict(cp), "checkpoint": note,
                    "checkpoint_signature": "verified" if key else "unchecked", "entries": rows})
        return EXIT_OK
    for r in rows:
        family = r.get("model", {}).get("family", "")
        name = f"{r['name']}/" if r["action"] == CLAIM else r["name"]
        extra = f"  released {r['release_date']} (claimed)" if r.get("release_date") else ""
        if r.get("linked_to") is not None:
            extra += f"  linked to #{r['linked_to']} (same weights or terms, registered earlier)"
        print(f"{r['index']:5d}  {name:30s} {_status(r):8s} {family!s:10s} {r['manifest_sha256'][:16]}  "
              f"vendor {r['vendor_key_id'][:16]}{extra}"
              + ("" if r["signatures"] == "verified" else f"  {r['signatures']}"))
    print(f"{cp.size} entries, root {cp.root.hex()} (checkpoint signature "
          f"{'verified' if key else 'unchecked: pass --log-pub'})")
    return EXIT_OK


def cmd_registry_show(args: argparse.Namespace) -> int:
    from protocol import REGISTER, REVOKE, statement_of

    with registry_source(args) as (source, own_key):
        key = log_key(args, own_key, required=False)
        cp = open_checkpoint(args, source.checkpoint(), key)
        index, data = source.get(args.entry)
        view = _describe(index, data, key)
        if view["action"] == REGISTER:
            later = source.entries(index + 1, cp.size)
            view["revoked_by"] = next(
                (i for i, d in enumerate(later, index + 1)
                 if (s := statement_of(d)).action == REVOKE and s.manifest_sha256.hex() == view["manifest_sha256"]),
                None)
    if args.json:
        write_json(view)
        return EXIT_OK
    for k, v in view.items():
        if k == "vendor_claims":
            continue
        if k in ("release_date", "licence", "description") and v and view.get("action") == REGISTER:
            v = f"{v} {CLAIMED}"
        if k == "linked_to" and v is not None:
            v = f"{v} (an earlier registration with the same weight commitment or terms: it takes precedence)"
        print(f"{k:18s} {v}")
    return EXIT_OK


def cmd_registry_checkpoint(args: argparse.Namespace) -> int:
    from protocol import atomic_write, parse_checkpoint, verifier_key

    previous = _saved_checkpoint(Path(args.output))
    with registry_source(args) as (source, own_key):
        key = log_key(args, own_key, required=False)
        note = source.checkpoint()
        cp = open_checkpoint(args, note, key)
        if previous is not None:
            _check_extends(source, previous, cp, args.output)
    try:
        atomic_write(args.output, note.encode("utf-8"))
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    # The log's C2SP verifier key (its checkpoint key, as the log key's binding line names it): what a
    # witness or any signed-note verifier is configured with to check this log's checkpoints.
    checkpoint_key = None if key is None else parse_checkpoint(note).checkpoint_key(key)
    vkey = None if checkpoint_key is None else verifier_key(cp.origin, checkpoint_key)
    report = {**checkpoint_dict(cp), "file": args.output, "signature": "verified" if key else "unchecked",
              "replaced_size": None if previous is None else previous.size, "verifier_key": vkey}
    if args.json:
        write_json(report)
        return EXIT_OK
    replaced = "" if previous is None else f"; consistent with the {previous.size}-entry checkpoint it replaces"
    print(f"wrote {args.output}: {cp.origin}, {cp.size} entries, root {cp.root.hex()}, time {cp.time} "
          f"(signature {report['signature']}{replaced})")
    if vkey is not None:
        print(f"the log's checkpoint verifier key (C2SP signed note): {vkey}")
    return EXIT_OK


def _saved_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint already saved at ``path`` (``None`` if there is no file): a newer one may replace it
    only if the log grew consistently from it, so a saved reference point can never be moved backwards."""
    from protocol import ProtocolError, parse_checkpoint

    if not path.exists():
        return None
    try:
        return parse_checkpoint(path.read_bytes()).checkpoint
    except (OSError, ProtocolError) as e:
        raise CommandError(f"{path} exists and is not a checkpoint; not replacing it ({e})") from e


def _check_extends(source: LogReader, previous: Checkpoint, cp: Checkpoint, where: str) -> None:
    from protocol import LogCheckFailed, ProtocolError, verify_consistency

    if previous.origin != cp.origin:
        raise CommandError(f"{where} holds a checkpoint of another log ({previous.origin})")
    if cp.size < previous.size:
        raise LogCheckFailed(f"the log shrank: {where} has {previous.size} entries, the log now {cp.size}")
    try:
        verify_consistency(previous.size, cp.size, previous.root, cp.root,
                           source.consistency_proof(previous.size, cp.size))
    except ProtocolError as e:
        raise LogCheckFailed(f"the log's new checkpoint does not extend the one in {where}: {e}") from e


def cmd_registry_export(args: argparse.Namespace) -> int:
    """A copy of the log for offline audits: its latest checkpoint note and every entry, checked to rehash to
    that checkpoint's root (and its signature with ``--log-pub`` or a local registry's own key)."""
    from protocol import LogCheckFailed, LogCopy, atomic_write, leaf_hash, merkle_root

    with registry_source(args) as (source, own_key):
        key = log_key(args, own_key, required=False)
        note = source.checkpoint()
        cp = open_checkpoint(args, note, key)
        entries = source.entries(0, cp.size)
    if len(entries) != cp.size or merkle_root([leaf_hash(e) for e in entries]) != cp.root:
        raise LogCheckFailed(f"{where(args)}: the log's {len(entries)} entries do not hash to its checkpoint's root "
                             f"({cp.size} entries, root {cp.root.hex()})")
    try:
        atomic_write(args.output, LogCopy(note, entries).to_json())
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    signature = "verified" if key else "unchecked"
    if args.json:
        write_json({**checkpoint_dict(cp), "file": args.output, "entries": len(entries), "signature": signature})
        return EXIT_OK
    print(f"wrote {args.output}: {cp.origin}, {cp.size} entries rehashed to root {cp.root.hex()} "
          f"(checkpoint signature {signature if key else 'unchecked: pass --log-pub'})")
    return EXIT_OK


def cmd_registry_prove(args: argparse.Namespace) -> int:
    from protocol import LogEntry, prove

    note = saved_checkpoint(args.checkpoint)
    with log_reader(args) as (source, own_key):
        key = log_key(args, own_key, required=True)
        cp = open_checkpoint(args, note, key, what=args.checkpoint, witnessed=False)
        with about(f"{where(args)}: entry {args.entry}"):
            proven = prove(source, args.entry, cp)
    with about(f"{where(args)}: entry {proven.index}", verifying=True):
        entry = LogEntry.from_bytes(proven.data).open(key)
    report = {"index": proven.index, "name": entry.name, "action": entry.action,
              "manifest_sha256": entry.manifest_sha256.hex(), "leaf_hash": leaf_hex(proven.data),
              "proof": [p.hex() for p in proven.proof], "checkpoint": checkpoint_dict(cp), "verified": True}
    if args.json:
        write_json(report)
        return EXIT_OK
    print(f"entry {proven.index} ({entry.action} {entry.name}) is in the log at the checkpoint of size {cp.size} "
          f"(root {cp.root.hex()}): inclusion proof of {len(proven.proof)} hashes verified")
    return EXIT_OK


def cmd_registry_audit(args: argparse.Namespace) -> int:
    from protocol import TrustStore, audit

    saved = saved_checkpoint(args.from_)
    trust = TrustStore.load(args.trust) if args.trust else None
    # A local registry is opened unchecked: the audit, not the start-up check, says what is wrong.
    with log_reader(args, checked=False) as (source, own_key):
        key = log_key(args, own_key, required=True)
        assert key is not None  # required=True
        report = audit(source, saved, key, trust=trust, witnesses=witness_policy(args))
    if args.json:
        write_json(report.as_dict())
    elif report.ok and report.saved is not None and report.current is not None:
        print(f"audit passed: the log grew from {report.saved.size} to {report.current.size} entries consistently; "
              f"{report.entries} entries rehashed to the current root and their signatures verified "
              f"({report.registrations} registrations, {report.revocations} revocations, {report.vendors} vendors)")
    else:
        for p in report.problems:
            print(f"FAILED: {p}")
    for n in report.notes:
        print(f"note: {n}", file=sys.stderr)
    if not report.ok:
        print(f"pawprint: error: audit failed: {report.problems[0]}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- parser
def _metadata_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--licence", default="", help="the base model's licence (e.g. an SPDX id)")
    p.add_argument("--release-date", default="", metavar="YYYY-MM-DD")
    p.add_argument("--description", default="", help="free text")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint registry ...``."""
    reg = sub.add_parser("registry", help="the registry of base models: a transparency log").add_subparsers(
        dest="registry_command", required=True
    )
    radd = reg.add_parser("add", help="(local admin) register a vendor-signed bundle; the log key signs the entry")
    radd.add_argument("bundle", metavar="BUNDLE")
    radd.add_argument("--data", required=True, metavar="DIR")
    radd.add_argument("--name", required=True)
    radd.add_argument("--trust", required=True, metavar="TRUST")
    radd.add_argument("--log-key", default=None, metavar="KEY", help="the log's key (default DIR/log.key)")
    radd.add_argument("--witness", action="append", default=[], metavar="URL",
                      help="send the new checkpoint to this witness (C2SP tlog-witness) and keep its cosignature "
                           "(repeatable; the witness's key must be trusted in --trust as role witness)")
    max_probe_sets_option(radd)
    _metadata_options(radd)
    radd.add_argument("--json", action="store_true")
    radd.set_defaults(func=cmd_registry_add)
    rpub = reg.add_parser("publish", help="publish a base: the vendor signs name and metadata, the bundle is sent")
    rpub.add_argument("bundle", metavar="BUNDLE")
    rpub.add_argument("-k", required=True, metavar="VENDOR_KEY", help="the vendor's key (the bundle's signer)")
    rpub.add_argument("--name", required=True)
    _metadata_options(rpub)
    rpub.add_argument("--trust", default=None, metavar="TRUST", help="with --data: the registry's trust store")
    connection_options(rpub)
    rpub.add_argument("--json", action="store_true")
    passphrase_option(rpub)
    rpub.set_defaults(func=cmd_registry_publish)
    rrev = reg.add_parser("revoke", help="append the vendor's signed revocation of one of its entries")
    rrev.add_argument("entry", metavar="ENTRY", help="index, manifest digest (hex) or name")
    rrev.add_argument("-k", required=True, metavar="VENDOR_KEY")
    rrev.add_argument("--reason", default="")
    rrev.add_argument("--trust", default=None, metavar="TRUST", help="with --data: the registry's trust store")
    connection_options(rrev)
    rrev.add_argument("--json", action="store_true")
    passphrase_option(rrev)
    rrev.set_defaults(func=cmd_registry_revoke)
    rcl = reg.add_parser("claim", help="claim a namespace (NAMESPACE/...): only your key publishes under it then")
    rcl.add_argument("namespace", metavar="NAMESPACE", help="the organisation part of names, e.g. acme (or acme/)")
    rcl.add_argument("-k", required=True, metavar="VENDOR_KEY", help="the vendor's key, bound to the namespace")
    rcl.add_argument("--description", default="", help="who claims it (free text, shown as the vendor's claim)")
    rcl.add_argument("--trust", default=None, metavar="TRUST", help="with --data: the registry's trust store")
    connection_options(rcl)
    rcl.add_argument("--json", action="store_true")
    passphrase_option(rcl)
    rcl.set_defaults(func=cmd_registry_claim)
    rwi = reg.add_parser("witness", help="(local admin) send the latest checkpoint to witnesses again and keep "
                                         "their cosignatures (exit 3 if one did not cosign)")
    rwi.add_argument("--data", required=True, metavar="DIR")
    rwi.add_argument("--witness", action="append", required=True, metavar="URL", help="a witness (repeatable)")
    rwi.add_argument("--trust", required=True, metavar="TRUST", help="trusts each witness's key (role witness)")
    rwi.add_argument("--log-key", default=None, metavar="KEY", help="the log's key (default DIR/log.key)")
    rwi.add_argument("--json", action="store_true")
    rwi.set_defaults(func=cmd_registry_witness)
    rls = reg.add_parser("list", help="every entry of the log and the latest checkpoint")
    connection_options(rls)
    rls.add_argument("--json", action="store_true")
    rls.set_defaults(func=cmd_registry_list)
    rsh = reg.add_parser("show", help="one entry")
    rsh.add_argument("entry", metavar="ENTRY", help="index, manifest digest (hex) or name (its latest entry)")
    connection_options(rsh)
    rsh.add_argument("--json", action="store_true")
    rsh.set_defaults(func=cmd_registry_show)
    rcp = reg.add_parser("checkpoint", help="save the latest signed checkpoint (an auditor's reference point)")
    rcp.add_argument("-o", "--output", required=True, metavar="FILE")
    connection_options(rcp)
    rcp.add_argument("--json", action="store_true")
    rcp.set_defaults(func=cmd_registry_checkpoint)
    rex = reg.add_parser("export", help="save a copy of the log (checkpoint and entries) to audit offline")
    rex.add_argument("-o", "--output", required=True, metavar="FILE")
    connection_options(rex)
    rex.add_argument("--json", action="store_true")
    rex.set_defaults(func=cmd_registry_export)
    rpr = reg.add_parser("prove", help="fetch and check an entry's inclusion proof against a saved checkpoint")
    rpr.add_argument("entry", metavar="ENTRY", help="index, manifest digest (hex) or name")
    rpr.add_argument("--checkpoint", required=True, metavar="FILE")
    connection_options(rpr, log_copy=True)
    rpr.add_argument("--json", action="store_true")
    rpr.set_defaults(func=cmd_registry_prove)
    rau = reg.add_parser("audit", help="check the log against a checkpoint saved earlier (exit 0 only if all holds)")
    rau.add_argument("--from", dest="from_", required=True, metavar="FILE", help="the saved checkpoint")
    rau.add_argument("--trust", default=None, metavar="TRUST", help="also require every vendor key to be trusted")
    connection_options(rau, log_copy=True)
    rau.add_argument("--json", action="store_true")
    rau.set_defaults(func=cmd_registry_audit)
