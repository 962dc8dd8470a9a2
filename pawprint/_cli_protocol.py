"""The protocol's subcommands of the ``pawprint`` CLI: keys, trust stores, bundles, the registry, the verifier
server, submissions and receipts.

``add_commands(sub, owner_sub)`` adds the top-level ``keys``, ``trust``, ``bundle``, ``registry``,
``verifier`` and ``receipt`` commands and ``owner fingerprint`` / ``owner submit`` to ``pawprint.cli``'s
parser. Each command takes the parsed ``args`` and returns an exit status; bad input raises a
``protocol.ProtocolError``, ``verifier.VerifierError`` or ``owner.errors.OwnerError`` with a one-line
message, which ``pawprint.cli.main`` prints as ``pawprint: error: <message>`` (exit 2). ``registry audit``
returns 1 when the log fails a check (its findings printed), so that 2 still means the audit could not run.

The ``registry`` commands (``publish``, ``revoke``, ``list``, ``show``, ``checkpoint``, ``prove``, ``audit``)
reach a server with ``--registry HOST:PORT`` or a data directory with ``--data DIR``; ``add`` is the
administrator's local path. What a registry serves is checked here before it is shown as verified.

Private keys are read from files, with a passphrase only from an environment variable (never from the
command line, where other users could see it). Nothing here sends a weight: ``owner submit`` sends only
what ``owner._client`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocol import ProtocolError

EXIT_OK = 0


class CommandError(ProtocolError):
    """A file named on the command line cannot be read or written, or an option combination is invalid."""


# ---------------------------------------------------------------------------------------------- helpers
def _passphrase(env: str | None) -> str | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise CommandError(f"environment variable {env} (named by --passphrase-env) is not set")
    return value


def _private_key(path: str, env: str | None) -> Any:
    from protocol import PrivateKey

    return PrivateKey.load(path, _passphrase(env))


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {what} {path}: {e.strerror or e}") from e


def _write_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None

    def report(label: str, done: int, total: int) -> None:
        print(f"\r{label} ({done}/{total})", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    return report


# ------------------------------------------------------------------------------------------------- keys
def cmd_keys_generate(args: argparse.Namespace) -> int:
    from protocol import PrivateKey, Role

    role = Role(args.role)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"cannot create {out}: {e.strerror or e}") from e
    key = PrivateKey.generate()
    key.save(out / f"{args.name}.key", _passphrase(args.passphrase_env), overwrite=args.force)
    key.public_key.save(out / f"{args.name}.pub")
    print(f"wrote {out / (args.name + '.key')} and {out / (args.name + '.pub')}: {role.value} key {key.key_id}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ trust
def cmd_trust_add(args: argparse.Namespace) -> int:
    from protocol import PublicKey, TrustStore

    path = Path(args.trust)
    store = TrustStore.load(path) if path.exists() else TrustStore()
    entry = store.add(PublicKey.load(args.pub), args.role, name=args.name)
    store.save(path)
    print(f"{path}: {entry.key_id} trusted as {', '.join(sorted(entry.roles))}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ owner
def cmd_owner_fingerprint(args: argparse.Namespace) -> int:
    from owner._fingerprint import build_bundle
    from protocol import atomic_write

    key = _private_key(args.k, args.passphrase_env)
    bundle = build_bundle(
        Path(args.model), key, now=int(time.time()), layers=args.layers, workers=args.workers,
        progress=_progress(not args.quiet),
    )
    manifest = bundle.open()
    try:
        atomic_write(args.output, bundle.to_bytes())
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    groups = ", ".join(f"{g.probe_set.name} ({g.rows}/{len(g.present)} tokens, layers {list(g.layers)})"
                       for g in manifest.groups)
    print(f"wrote {args.output}: {len(manifest.tensors)} terms on {groups}; "
          f"weight commitment {manifest.weight_commitment.root.hex()} over {manifest.weight_commitment.tensors} "
          f"tensors; manifest {bundle.manifest_digest.hex()}")
    return EXIT_OK


def cmd_owner_submit(args: argparse.Namespace) -> int:
    from owner._client import open_channel, read_pem, submit
    from protocol import RECEIPT_FORMAT, PublicKey, atomic_write

    key = _private_key(args.k, args.passphrase_env)
    verifier_key = PublicKey.load(args.verifier_pub)
    channel = open_channel(
        args.verifier, ca=read_pem(args.ca, "CA certificate"), cert=read_pem(args.cert, "client certificate"),
        key=read_pem(args.tls_key, "client key"), insecure_loopback=args.insecure_loopback,
        server_name=args.server_name,
    )
    with channel:
        result = submit(
            Path(args.model), key, channel, verifier_key, keep_invariants=args.keep_invariants,
            timeout_s=args.timeout, workers=args.workers, progress=_progress(not args.quiet and not args.json),
            retries=args.retries,
        )
    receipt = result.receipt
    out = Path(args.output)
    path = out / f"receipt-{receipt.submission.hex()[:16]}.pawprint-receipt"
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, result.signed_receipt.to_bytes(RECEIPT_FORMAT))
        pictures = _save_pictures(receipt, path.with_suffix(""))
    except OSError as e:
        raise CommandError(f"cannot write the receipt to {out}: {e.strerror or e}") from e
    if args.json:
        _write_json({**receipt.as_dict(), "receipt": str(path), "pictures": [str(x) for x in pictures]})
        return EXIT_OK
    _print_receipt(receipt)
    print(f"receipt    {path}")
    for x in pictures:
        print(f"picture    {x}")
    return EXIT_OK


def _save_pictures(receipt: Any, stem: Path) -> list[Path]:
    """The submission's dog (``STEM.png``) and, with the best match's, a side-by-side sheet with the scores
    (``STEM-sheet.png``); each redrawn from the receipt's vector and checked against its digest."""
    from protocol import atomic_write
    from verifier._pictures import PictureMismatch, receipt_sheet, redraw

    if receipt.picture is None:
        return []
    try:
        png = redraw(receipt.picture)
        sheet = receipt_sheet(receipt)
    except PictureMismatch as e:
        raise CommandError(f"the receipt's pictures do not check: {e}") from None
    written = [stem.parent / f"{stem.name}.png"]
    atomic_write(written[0], png)
    if sheet is not None and any(m.picture is not None for m in receipt.matches):
        written.append(stem.parent / f"{stem.name}-sheet.png")
        atomic_write(written[1], sheet)
    return written


def _print_receipt(receipt: Any) -> None:
    print(f"verdict    {receipt.verdict}   ({receipt.compared} base(s) compared; null {receipt.null_id})")
    for m in receipt.matches:
        layers = " ".join(f"{a}-{b}" for a, b in dict.fromkeys((t.layer, t.base_layer) for t in m.terms))
        stats = f"z {m.z:>8s}  p {m.p_value}" if m.z is not None else "no calibrated p-value"
        print(f"  {m.name:24s} ICS {m.ics}  {stats}  {m.verdict:12s} layers {layers}")
    print(f"submission {receipt.submission.hex()}")
    print(f"registry   {receipt.registry.size} entries, root {receipt.registry.root.hex()}")


# ----------------------------------------------------------------------------------------------- bundle
def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from owner._fingerprint import load_bundle
    from protocol import Role, TrustStore
    from verifier import check_bundle

    bundle = load_bundle(args.bundle)
    trust = TrustStore.load(args.trust)
    roles = (Role(args.role),) if args.role else (Role.OWNER, Role.VENDOR)
    manifest = check_bundle(bundle, trust, roles)
    entry = trust.get(manifest.owner_key_id)
    key_roles = sorted(entry.roles) if entry else []
    report: dict[str, Any] = {
        "valid": True,
        "manifest_sha256": bundle.manifest_digest.hex(),
        "key_id": manifest.owner_key_id,
        "key_name": entry.name if entry else None,
        "key_roles": key_roles,
        "created_at": manifest.created_at,
        "agent": manifest.agent,
        "model": dict(manifest.model),
        "weight_commitment": {"root": manifest.weight_commitment.root.hex(), "id": manifest.weight_commitment.id,
                              "tensors": manifest.weight_commitment.tensors,
                              "total_bytes": manifest.weight_commitment.total_bytes},
        "groups": [
            {"probe_set": g.probe_set.name, "probe_set_id": g.probe_set.id, "tokens": len(g.present),
             "present": g.rows, "layers": list(g.layers), "method_id": g.method_id}
            for g in manifest.groups
        ],
        "tensors": len(manifest.tensors),
    }
    if args.json:
        _write_json(report)
        return EXIT_OK
    print(f"{args.bundle}: valid bundle signed by {manifest.owner_key_id} ({', '.join(key_roles)})")
    print(f"  model {manifest.model.get('family')} ({manifest.model.get('n_layers')} layers), "
          f"{len(manifest.tensors)} terms, weight commitment {manifest.weight_commitment.root.hex()}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------- registry
# Every registry command reads a local data directory (--data) or talks to a server (--registry HOST:PORT,
# with TLS options as for ``owner submit``). Whatever the source, what it serves is checked here with
# ``protocol`` before it is shown or believed: checkpoints against the log's public key, entries against
# inclusion and consistency proofs.
EXIT_AUDIT_FAILED = 1


@contextlib.contextmanager
def _log_source(args: argparse.Namespace, *, trust: Any = None, checked: bool = True,
                create: bool = False) -> Iterator[Any]:
    """The registry the command names: ``RemoteRegistry`` over a channel, or ``LocalRegistry`` on a data dir."""
    from verifier import LocalRegistry, Registry, RemoteRegistry

    if getattr(args, "registry", None):
        from owner._client import open_channel, read_pem

        channel = open_channel(
            args.registry, ca=read_pem(args.ca, "CA certificate"), cert=read_pem(args.cert, "client certificate"),
            key=read_pem(args.tls_key, "client key"), insecure_loopback=args.insecure_loopback,
            server_name=args.server_name,
        )
        source: Any = RemoteRegistry(channel, timeout_s=args.timeout)
    else:
        source = LocalRegistry(Registry(args.data, create=create, checked=checked), trust)
    try:
        yield source
    finally:
        source.close()


def _log_key(args: argparse.Namespace, source: Any, *, required: bool) -> Any:
    """The log's public key: ``--log-pub``, else (a local registry) the data directory's own; a remote log's
    key must come from the command line, never from the log being checked."""
    from protocol import PublicKey
    from verifier import LocalRegistry

    if args.log_pub is not None:
        return PublicKey.load(args.log_pub)
    if isinstance(source, LocalRegistry):
        return source.registry.log_public_key
    if required:
        raise CommandError("--log-pub is needed to check a remote registry's checkpoints")
    return None


def _describe(index: int, data: bytes, log_key: Any) -> dict[str, Any]:
    """An entry for display: its fields, and whether its signatures verify (``signatures``)."""
    from protocol import LogEntry, ProtocolError
    from verifier import statement_of

    try:
        view = LogEntry.from_bytes(data).open(log_key).as_dict(index)
        view["signatures"] = "verified"
        return view
    except ProtocolError as e:
        problem = str(e)
    s = statement_of(data)
    view = {"index": index, "action": s.action, "name": s.name, "vendor_key_id": s.vendor_key_id,
            "manifest_sha256": s.manifest_sha256.hex()}
    unchecked = log_key is None and "neither the vendor" in problem
    view["signatures"] = "unchecked: signed by the log (pass --log-pub)" if unchecked else f"INVALID: {problem}"
    return view


def _checkpoint_dict(cp: Any) -> dict[str, Any]:
    return {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "time": cp.time}


def _published_report(published: Any, statement: Any, log_key: Any, *, action: str) -> dict[str, Any]:
    from verifier import check_published

    cp = check_published(published, statement, log_key)
    return {"index": published.index, "existing": published.existing, "action": action,
            "checkpoint": _checkpoint_dict(cp), "checkpoint_signature": "verified" if log_key else "unchecked",
            "inclusion_proof": "verified", "leaf_hash": _leaf_hex(published.entry)}


def _leaf_hex(data: bytes) -> str:
    from protocol import leaf_hash

    return leaf_hash(data).hex()


def _trust_for(args: argparse.Namespace) -> Any:
    from protocol import TrustStore

    if getattr(args, "data", None) and args.trust is None:
        raise CommandError("publishing to a local registry (--data) needs its trust store (--trust)")
    return TrustStore.load(args.trust) if args.trust is not None else None


def max_probe_sets_option(p: argparse.ArgumentParser) -> None:
    from verifier._registry import DEFAULT_MAX_PROBE_SETS

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    p.add_argument("--max-probe-sets", type=positive, default=DEFAULT_MAX_PROBE_SETS, metavar="N",
                   help="a base may bring a new probe set only while the registry holds fewer than N (every "
                        f"challenge names them all; default {DEFAULT_MAX_PROBE_SETS})")


def cmd_registry_add(args: argparse.Namespace) -> int:
    from owner._fingerprint import load_bundle
    from protocol import TrustStore
    from verifier import Registry

    bundle = load_bundle(args.bundle)
    registry = Registry(args.data, log_key=_private_key(args.log_key, None) if args.log_key else None,
                        max_probe_sets=args.max_probe_sets)
    try:
        entry = registry.add_base(args.name, bundle, TrustStore.load(args.trust), licence=args.licence,
                                  release_date=args.release_date, description=args.description)
        state = registry.state()
    finally:
        registry.close()
    print(f"registered {entry.name} as entry {entry.index} (vendor {entry.vendor_key_id}, manifest "
          f"{entry.manifest_sha256.hex()}); registry now {state.size} entries, root {state.root.hex()}")
    return EXIT_OK


def cmd_registry_publish(args: argparse.Namespace) -> int:
    from owner._fingerprint import load_bundle
    from protocol import REGISTER, RegistryStatement

    bundle = load_bundle(args.bundle)
    manifest = bundle.open()
    key = _private_key(args.k, args.passphrase_env)
    if manifest.owner_key_id != key.key_id:
        raise CommandError(f"{args.bundle} is signed by key {manifest.owner_key_id}, not by the key given with -k")
    statement = RegistryStatement(REGISTER, args.name, key.key_id, bundle.manifest_digest, int(time.time()),
                                  args.licence, args.release_date, args.description).sign(key)
    with _log_source(args, trust=_trust_for(args), create=True) as source:
        published = source.publish(statement, bundle)
        report = _published_report(published, statement, _log_key(args, source, required=False), action="register")
    report["name"] = args.name
    report["manifest_sha256"] = bundle.manifest_digest.hex()
    if args.json:
        _write_json(report)
        return EXIT_OK
    state = "already in the log" if published.existing else "appended"
    cp = report["checkpoint"]
    print(f"{args.name}: entry {published.index} ({state}); in the checkpoint of size {cp['size']} "
          f"(root {cp['root']}, signature {report['checkpoint_signature']}), inclusion proof verified")
    return EXIT_OK


def cmd_registry_revoke(args: argparse.Namespace) -> int:
    from protocol import REGISTER, REVOKE, RegistryStatement
    from verifier import statement_of

    key = _private_key(args.k, args.passphrase_env)
    with _log_source(args, trust=_trust_for(args)) as source:
        index, data = source.get(args.entry)
        target = statement_of(data)
        if target.action != REGISTER:
            raise CommandError(f"entry {index} is a revocation; name the registration to revoke")
        statement = RegistryStatement(REVOKE, target.name, key.key_id, target.manifest_sha256, int(time.time()),
                                      reason=args.reason).sign(key)
        published = source.revoke(statement)
        report = _published_report(published, statement, _log_key(args, source, required=False), action="revoke")
    report.update(name=target.name, revokes=index)
    if args.json:
        _write_json(report)
        return EXIT_OK
    state = "already in the log" if published.existing else "appended"
    print(f"{target.name}: entry {index} revoked by entry {published.index} ({state}); inclusion proof verified")
    return EXIT_OK


def cmd_registry_list(args: argparse.Namespace) -> int:
    from protocol import REVOKE
    from verifier import open_note

    with _log_source(args) as source:
        log_key = _log_key(args, source, required=False)
        note = source.checkpoint()
        cp = open_note(note, log_key)
        rows = [_describe(i, d, log_key) for i, d in enumerate(source.entries(0, cp.size))]
    revoked = {r["manifest_sha256"]: r["index"] for r in rows if r["action"] == REVOKE}
    for r in rows:
        if r["action"] != REVOKE:
            r["revoked_by"] = revoked.get(r["manifest_sha256"])
    if args.json:
        _write_json({**_checkpoint_dict(cp), "checkpoint": note,
                     "checkpoint_signature": "verified" if log_key else "unchecked", "entries": rows})
        return EXIT_OK
    for r in rows:
        status = r["action"] if r["action"] == REVOKE else ("revoked" if r["revoked_by"] is not None else "active")
        family = r.get("model", {}).get("family", "")
        print(f"{r['index']:5d}  {r['name']:30s} {status:8s} {family!s:10s} {r['manifest_sha256'][:16]}  "
              f"vendor {r['vendor_key_id'][:16]}" + ("" if r["signatures"] == "verified" else f"  {r['signatures']}"))
    print(f"{cp.size} entries, root {cp.root.hex()} (checkpoint signature "
          f"{'verified' if log_key else 'unchecked: pass --log-pub'})")
    return EXIT_OK


def cmd_registry_show(args: argparse.Namespace) -> int:
    from protocol import REVOKE
    from verifier import open_note, statement_of

    with _log_source(args) as source:
        log_key = _log_key(args, source, required=False)
        cp = open_note(source.checkpoint(), log_key)
        index, data = source.get(args.entry)
        view = _describe(index, data, log_key)
        if view["action"] != REVOKE:
            later = source.entries(index + 1, cp.size)
            view["revoked_by"] = next(
                (i for i, d in enumerate(later, index + 1)
                 if (s := statement_of(d)).action == REVOKE and s.manifest_sha256.hex() == view["manifest_sha256"]),
                None)
    if args.json:
        _write_json(view)
        return EXIT_OK
    for k, v in view.items():
        print(f"{k:18s} {v}")
    return EXIT_OK


def cmd_registry_checkpoint(args: argparse.Namespace) -> int:
    from protocol import atomic_write
    from verifier import open_note

    previous = _saved_checkpoint(Path(args.output))
    with _log_source(args) as source:
        log_key = _log_key(args, source, required=False)
        note = source.checkpoint()
        cp = open_note(note, log_key)
        if previous is not None:
            _check_extends(source, previous, cp, args.output)
    try:
        atomic_write(args.output, note.encode("utf-8"))
    except OSError as e:
        raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    report = {**_checkpoint_dict(cp), "file": args.output, "signature": "verified" if log_key else "unchecked",
              "replaced_size": None if previous is None else previous.size}
    if args.json:
        _write_json(report)
        return EXIT_OK
    replaced = "" if previous is None else f"; consistent with the {previous.size}-entry checkpoint it replaces"
    print(f"wrote {args.output}: {cp.origin}, {cp.size} entries, root {cp.root.hex()}, time {cp.time} "
          f"(signature {report['signature']}{replaced})")
    return EXIT_OK


def _saved_checkpoint(path: Path) -> Any:
    """The checkpoint already saved at ``path`` (``None`` if there is no file): a newer one may replace it
    only if the log grew consistently from it, so a saved reference point can never be moved backwards."""
    from protocol import parse_checkpoint

    if not path.exists():
        return None
    try:
        return parse_checkpoint(path.read_bytes()).checkpoint
    except (OSError, ProtocolError) as e:
        raise CommandError(f"{path} exists and is not a checkpoint; not replacing it ({e})") from e


def _check_extends(source: Any, previous: Any, cp: Any, where: str) -> None:
    from protocol import verify_consistency
    from verifier import LogCheckFailed

    if previous.origin != cp.origin:
        raise CommandError(f"{where} holds a checkpoint of another log ({previous.origin})")
    if cp.size < previous.size:
        raise LogCheckFailed(f"the log shrank: {where} has {previous.size} entries, the log now {cp.size}")
    try:
        verify_consistency(previous.size, cp.size, previous.root, cp.root,
                           source.consistency_proof(previous.size, cp.size))
    except ProtocolError as e:
        raise LogCheckFailed(f"the log's new checkpoint does not extend the one in {where}: {e}") from e


def cmd_registry_prove(args: argparse.Namespace) -> int:
    from protocol import LogEntry
    from verifier import open_note, prove

    note = _read(args.checkpoint, "checkpoint")
    with _log_source(args) as source:
        log_key = _log_key(args, source, required=True)
        cp = open_note(note, log_key)
        proven = prove(source, args.entry, cp)
    entry = LogEntry.from_bytes(proven.data).open(log_key)
    report = {"index": proven.index, "name": entry.name, "action": entry.action,
              "manifest_sha256": entry.manifest_sha256.hex(), "leaf_hash": _leaf_hex(proven.data),
              "proof": [p.hex() for p in proven.proof], "checkpoint": _checkpoint_dict(cp), "verified": True}
    if args.json:
        _write_json(report)
        return EXIT_OK
    print(f"entry {proven.index} ({entry.action} {entry.name}) is in the log at the checkpoint of size {cp.size} "
          f"(root {cp.root.hex()}): inclusion proof of {len(proven.proof)} hashes verified")
    return EXIT_OK


def cmd_registry_audit(args: argparse.Namespace) -> int:
    from protocol import TrustStore
    from verifier import audit

    saved = _read(args.from_, "saved checkpoint")
    trust = TrustStore.load(args.trust) if args.trust else None
    # A local registry is opened unchecked: the audit, not the start-up check, says what is wrong.
    with _log_source(args, checked=False) as source:
        report = audit(source, saved, _log_key(args, source, required=True), trust=trust)
    if args.json:
        _write_json(report.as_dict())
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
        return EXIT_AUDIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------------------------- verifier
_EXIT_WATCHDOG_S = 30.0  # after the drain grace: how long stopping the server and closing may take


def cmd_verifier_serve(args: argparse.Namespace) -> int:
    from protocol import TrustStore
    from verifier import (
        ClientRoles,
        ConfigError,
        RateLimits,
        Registry,
        ServerConfig,
        TlsConfig,
        VerifierService,
        start,
    )

    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if args.client_ca is not None and args.tls_cert is None:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key")
    tls = TlsConfig.from_files(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    key = _private_key(args.key, args.passphrase_env)
    trust = TrustStore.load(args.trust)
    registry = Registry(args.data, log_key=_private_key(args.log_key, None) if args.log_key else None,
                        max_probe_sets=args.max_probe_sets)
    rates = None
    if args.rate_limit_rpm is not None or args.rate_limit_bytes_per_hour is not None:
        default = RateLimits()
        rates = RateLimits(requests_per_minute=args.rate_limit_rpm or default.requests_per_minute,
                           burst=args.rate_limit_burst or default.burst,
                           bytes_per_hour=args.rate_limit_bytes_per_hour or default.bytes_per_hour)
    if args.client_roles is not None and args.client_ca is None:
        raise ConfigError("--client-roles needs mutual TLS (--client-ca)")
    config = ServerConfig(
        listen=args.listen, tls=tls, insecure_loopback=args.insecure_loopback, null_path=args.null,
        thresholds=_thresholds(args), layers=args.layers, null_sha256=args.null_sha256,
        probe_set_pins=frozenset(args.probe_set_pin) if args.probe_set_pin else None,
        client_roles=ClientRoles.load(args.client_roles) if args.client_roles else None,
        rate_limits=rates, drain_grace_s=args.drain_grace, max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_workers=args.max_workers, stream_timeout_s=args.stream_timeout, screen_k=args.screen_k,
        screen_floor=args.screen_floor, stream_idle_timeout_s=args.stream_idle_timeout,
        **({"max_concurrent_compares": args.max_concurrent_compares} if args.max_concurrent_compares else {}),
    )
    try:
        running = start(VerifierService(key, trust, registry, config))
    except BaseException:
        registry.close()
        raise
    host = args.listen.rpartition(":")[0]
    logger = logging.getLogger("pawprint.verifier")
    logger.info(
        "registry log %s: %d entries, signed by key %s (auditors need its public key, %s/log.pub)", registry.origin,
        registry.size(), registry.log_public_key.key_id, args.data)
    print(f"listening on {host}:{running.port}", flush=True)
    # The handler only appends to a list: it runs on the main thread between any two bytecodes, so it must
    # take no lock (an Event.set() there deadlocks when the signal lands while the main thread holds the
    # Event's own lock inside wait()).
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        while not received:
            time.sleep(0.2)  # a signal cuts the sleep short
        # Watchdog: should anything keep the process from ending (a call that ignores cancellation, a thread
        # that does not return), every thread's stack goes to stderr and the process exits 1, rather than
        # hanging under a supervisor that is waiting for it.
        faulthandler.dump_traceback_later(config.drain_grace_s + _EXIT_WATCHDOG_S, exit=True)
        logger.info("shutting down: health NOT_SERVING, draining for up to %.0f s", config.drain_grace_s)
        drained = running.shutdown()
        logger.info("stopped (%s)", "drained" if drained else "in-flight calls cut off at the grace period")
    finally:
        # The handlers stay: a second SIGTERM while draining or closing is only recorded, and this command ends
        # with the process.
        running.server.stop(grace=0).wait(_EXIT_WATCHDOG_S)
        registry.close()
    # Everything is durable now: the server has stopped and the registry is closed. Threads left behind (the
    # gRPC server's workers, a call that ignored cancellation) must not keep the process from ending, as the
    # interpreter's exit would by joining them: end here, saying how many there were.
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    logger.info("exiting; %d non-daemon threads not joined", len(others))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def cmd_verifier_test_certs(args: argparse.Namespace) -> int:
    from verifier import write_test_pki

    pki = write_test_pki(args.output, now=dt.datetime.now(dt.UTC), hosts=args.host or ("localhost", "127.0.0.1", "::1"))
    print(f"wrote {pki.ca}, {pki.server_cert}, {pki.server_key}, {pki.client_cert}, {pki.client_key} "
          "(loopback tests and demos only)")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- receipt
def verdict_options(p: argparse.ArgumentParser) -> None:
    """The measured null and the verdict thresholds (``verifier._calibration``)."""
    p.add_argument("--null", default=None, metavar="FILE",
                   help="the measured null (default: the shipped verifier/data/null-zoo-v1.json)")
    p.add_argument("--derived-p", type=float, default=1e-6, metavar="P",
                   help="derived if p * bases compared <= P (default 1e-6)")
    p.add_argument("--independent-p", type=float, default=0.01, metavar="P",
                   help="independent if p >= P (default 0.01)")


def _thresholds(args: argparse.Namespace) -> Any:
    from verifier import Thresholds

    return Thresholds(derived_p=args.derived_p, independent_p=args.independent_p)


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from protocol import RECEIPT_FORMAT, PublicKey, SignedMessage, open_receipt
    from verifier import load_null, recheck_verdict

    signed = SignedMessage.from_bytes(_read(args.receipt, "receipt"), RECEIPT_FORMAT)
    receipt = open_receipt(signed, PublicKey.load(args.verifier_pub))
    null = load_null(args.null)
    consistent = recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule, null, receipt.null_id,
                                 _thresholds(args), screened=receipt.screened)
    if consistent is False:
        raise CommandError(f"{args.receipt}: the verdict does not follow from the scores under its rule")
    log = _receipt_log_checks(args, receipt)
    if args.json:
        _write_json({"valid": True, "verdict_rechecked": consistent, **receipt.as_dict(), "log": log})
        return EXIT_OK
    print(f"{args.receipt}: valid receipt signed by verifier {receipt.verifier_key_id}")
    _print_receipt(receipt)
    print(f"checkpoint {log['checkpoint_signature']}; inclusion of matched entries {log['inclusion']}")
    return EXIT_OK


def _receipt_log_checks(args: argparse.Namespace, receipt: Any) -> dict[str, Any]:
    """What the receipt says about the registry log, checked as far as the options allow: the checkpoint's
    signature with ``--log-pub``, each matched entry's inclusion with ``--registry`` or ``--data``."""
    from protocol import PublicKey
    from verifier import check_receipt_entries, open_note

    wants_proofs = bool(args.registry or args.data)
    if receipt.checkpoint is None:
        if wants_proofs or args.log_pub:
            raise CommandError(f"{args.receipt}: the receipt names no registry checkpoint to check against")
        return {"checkpoint_signature": "absent", "inclusion": "not checked", "entries": []}
    log_key = PublicKey.load(args.log_pub) if args.log_pub else None
    if not wants_proofs:
        open_note(receipt.checkpoint, log_key)
        return {"checkpoint_signature": "verified" if log_key else "not checked (pass --log-pub)",
                "inclusion": "not checked (pass --registry or --data)", "entries": []}
    with _log_source(args) as source:
        log_key = log_key or _log_key(args, source, required=False)
        open_note(receipt.checkpoint, log_key)
        proven = check_receipt_entries(source, receipt)
    return {"checkpoint_signature": "verified" if log_key else "not checked (pass --log-pub)",
            "inclusion": "verified",
            "entries": [{"index": p.index, "leaf_hash": _leaf_hex(p.data)} for p in proven]}


# ----------------------------------------------------------------------------------------------- parser
def add_commands(sub: argparse._SubParsersAction, owner_sub: argparse._SubParsersAction) -> None:
    """Add the protocol's commands to ``pawprint``'s top-level subparsers and to ``owner``'s."""
    roles = ("owner", "vendor", "verifier", "registry")

    def passphrase_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passphrase-env", metavar="VAR", default=None,
                       help="read the private key's passphrase from this environment variable")

    keys = sub.add_parser("keys", help="Ed25519 signing keys").add_subparsers(dest="keys_command", required=True)
    gen = keys.add_parser("generate", help="write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub")
    gen.add_argument("-o", "--output", required=True, metavar="DIR")
    gen.add_argument("--name", required=True)
    gen.add_argument("--role", required=True, choices=roles, help="what the key will be trusted for")
    gen.add_argument("--force", action="store_true", help="replace an existing key file")
    passphrase_option(gen)
    gen.set_defaults(func=cmd_keys_generate)

    trust = sub.add_parser("trust", help="trust stores").add_subparsers(dest="trust_command", required=True)
    tadd = trust.add_parser("add", help="trust a public key for a role (the store is created if missing)")
    tadd.add_argument("trust", metavar="TRUST")
    tadd.add_argument("pub", metavar="PUB")
    tadd.add_argument("--role", required=True, choices=roles)
    tadd.add_argument("--name", default=None, help="a label for the key")
    tadd.set_defaults(func=cmd_trust_add)

    fp = owner_sub.add_parser("fingerprint", help="write a signed bundle (terms + manifest) for offline use")
    fp.add_argument("model")
    fp.add_argument("-k", required=True, metavar="KEY", help="the signing key (owner or vendor)")
    fp.add_argument("-o", "--output", required=True, metavar="BUNDLE")
    fp.add_argument("--layers", default=None, help="'last2' (default), 'all', or e.g. '0,5,-1'")
    fp.add_argument("--workers", type=int, default=None, help="threads hashing checkpoint files")
    fp.add_argument("-q", "--quiet", action="store_true")
    passphrase_option(fp)
    fp.set_defaults(func=cmd_owner_fingerprint)

    sm = owner_sub.add_parser("submit", help="submit a model's terms to a verifier and keep the signed receipt")
    sm.add_argument("model")
    sm.add_argument("--verifier", required=True, metavar="HOST:PORT")
    sm.add_argument("-k", required=True, metavar="KEY", help="the owner's signing key")
    sm.add_argument("--verifier-pub", required=True, metavar="PUB", help="the verifier's public key")
    sm.add_argument("--ca", default=None, help="CA certificate to trust for the verifier's TLS certificate")
    sm.add_argument("--cert", default=None, help="client certificate (mutual TLS)")
    sm.add_argument("--key", dest="tls_key", default=None, metavar="K", help="client certificate's key (mutual TLS)")
    sm.add_argument("--server-name", default=None, help="expected name in the verifier's certificate")
    sm.add_argument("--insecure-loopback", action="store_true", help="plaintext, only to 127.0.0.1 or ::1")
    sm.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    sm.add_argument("--keep-invariants", action="store_true", help="ask the verifier to keep the terms")
    sm.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole exchange")
    sm.add_argument("--workers", type=int, default=None)
    sm.add_argument("--retries", type=int, default=3, metavar="N",
                    help="send the same signed submission again up to N times if the verifier was unreachable or "
                         "restarted (it is answered at most once)")
    sm.add_argument("--json", action="store_true")
    sm.add_argument("-q", "--quiet", action="store_true")
    passphrase_option(sm)
    sm.set_defaults(func=cmd_owner_submit)

    bundle = sub.add_parser("bundle", help="offline bundles").add_subparsers(dest="bundle_command", required=True)
    bv = bundle.add_parser("verify", help="check a bundle's signature, key and terms offline")
    bv.add_argument("bundle", metavar="BUNDLE")
    bv.add_argument("--trust", required=True, metavar="TRUST")
    bv.add_argument("--role", default=None, choices=("owner", "vendor"),
                    help="the role the key must have (default: owner or vendor)")
    bv.add_argument("--json", action="store_true")
    bv.set_defaults(func=cmd_bundle_verify)

    def connection_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
        where = p.add_mutually_exclusive_group(required=required)
        where.add_argument("--registry", metavar="HOST:PORT", default=None, help="a registry server")
        where.add_argument("--data", metavar="DIR", default=None, help="a local registry data directory")
        p.add_argument("--ca", default=None, help="CA certificate to trust for the server's TLS certificate")
        p.add_argument("--cert", default=None, help="client certificate (mutual TLS)")
        p.add_argument("--key", dest="tls_key", default=None, metavar="K", help="client certificate's key")
        p.add_argument("--server-name", default=None, help="expected name in the server's certificate")
        p.add_argument("--insecure-loopback", action="store_true", help="plaintext, only to 127.0.0.1 or ::1")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
        p.add_argument("--log-pub", default=None, metavar="PUB",
                       help="the log's public key, to check its checkpoints (a local registry's own by default)")

    def metadata_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--licence", default="", help="the base model's licence (e.g. an SPDX id)")
        p.add_argument("--release-date", default="", metavar="YYYY-MM-DD")
        p.add_argument("--description", default="", help="free text")

    reg = sub.add_parser("registry", help="the registry of base models: a transparency log").add_subparsers(
        dest="registry_command", required=True
    )
    radd = reg.add_parser("add", help="(local admin) register a vendor-signed bundle; the log key signs the entry")
    radd.add_argument("bundle", metavar="BUNDLE")
    radd.add_argument("--data", required=True, metavar="DIR")
    radd.add_argument("--name", required=True)
    radd.add_argument("--trust", required=True, metavar="TRUST")
    radd.add_argument("--log-key", default=None, metavar="KEY", help="the log's key (default DIR/log.key)")
    max_probe_sets_option(radd)
    metadata_options(radd)
    radd.set_defaults(func=cmd_registry_add)
    rpub = reg.add_parser("publish", help="publish a base: the vendor signs name and metadata, the bundle is sent")
    rpub.add_argument("bundle", metavar="BUNDLE")
    rpub.add_argument("-k", required=True, metavar="VENDOR_KEY", help="the vendor's key (the bundle's signer)")
    rpub.add_argument("--name", required=True)
    metadata_options(rpub)
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
    rpr = reg.add_parser("prove", help="fetch and check an entry's inclusion proof against a saved checkpoint")
    rpr.add_argument("entry", metavar="ENTRY", help="index, manifest digest (hex) or name")
    rpr.add_argument("--checkpoint", required=True, metavar="FILE")
    connection_options(rpr)
    rpr.add_argument("--json", action="store_true")
    rpr.set_defaults(func=cmd_registry_prove)
    rau = reg.add_parser("audit", help="check the log against a checkpoint saved earlier (exit 0 only if all holds)")
    rau.add_argument("--from", dest="from_", required=True, metavar="FILE", help="the saved checkpoint")
    rau.add_argument("--trust", default=None, metavar="TRUST", help="also require every vendor key to be trusted")
    connection_options(rau)
    rau.add_argument("--json", action="store_true")
    rau.set_defaults(func=cmd_registry_audit)

    ver = sub.add_parser("verifier", help="the verifier service").add_subparsers(dest="verifier_command", required=True)
    srv = ver.add_parser("serve", help="serve challenges and submissions over gRPC")
    srv.add_argument("--data", required=True, metavar="DIR")
    srv.add_argument("--listen", required=True, metavar="HOST:PORT", help="port 0 picks a free port")
    srv.add_argument("--key", required=True, metavar="KEY", help="the verifier's signing key")
    srv.add_argument("--trust", required=True, metavar="TRUST")
    srv.add_argument("--tls-cert", default=None, metavar="C")
    srv.add_argument("--tls-key", default=None, metavar="K")
    srv.add_argument("--client-ca", default=None, metavar="CA", help="require client certificates signed by CA")
    srv.add_argument("--insecure-loopback", action="store_true", help="plaintext, only on 127.0.0.1 or ::1")
    srv.add_argument("--log-key", default=None, metavar="KEY",
                     help="the registry log's signing key (default DIR/log.key, created with the registry)")
    max_probe_sets_option(srv)
    srv.add_argument("--layers", default="last2", choices=("last2", "all"),
                     help="the layers owners must send: 'all' lets depth-pruned and upscaled models be matched")
    srv.add_argument("--client-roles", default=None, metavar="FILE",
                     help="client certificate -> roles (pawprint-client-roles/1 JSON; needs --client-ca)")
    srv.add_argument("--rate-limit-rpm", type=float, default=None, metavar="N",
                     help="requests per minute per signing key (and per client for challenges and reads)")
    srv.add_argument("--rate-limit-burst", type=int, default=None, metavar="N", help="burst size (default 60)")
    srv.add_argument("--rate-limit-bytes-per-hour", type=int, default=None, metavar="N",
                     help="term bytes per hour per signing key")
    srv.add_argument("--null-sha256", default=None, metavar="HEX", help="pin the digest of the --null file")
    srv.add_argument("--probe-set-pin", action="append", default=None, metavar="ID",
                     help="offer only this probe set id (repeat); refuse to start if the registry offers others")
    srv.add_argument("--drain-grace", type=float, default=30.0, metavar="S",
                     help="on SIGTERM/SIGINT, let in-flight submissions finish for up to S seconds")
    srv.add_argument("--max-concurrent-rpcs", type=int, default=64, metavar="N",
                     help="calls beyond N at once are refused with RESOURCE_EXHAUSTED")
    srv.add_argument("--max-workers", type=int, default=16, metavar="N", help="worker threads")
    srv.add_argument("--stream-timeout", type=float, default=900.0, metavar="S",
                     help="a submission or publish stream is cut off after S seconds")
    srv.add_argument("--stream-idle-timeout", type=float, default=60.0, metavar="S",
                     help="a stream silent for S seconds (before its first message too) is cut off")
    srv.add_argument("--max-concurrent-compares", type=int, default=None, metavar="N",
                     help="comparisons and pictures computed at once (default: the number of CPUs)")
    srv.add_argument("--screen-k", type=int, default=16, metavar="K",
                     help="above K bases, compare exactly only the K best by sketch (and any reaching the floor); "
                          "0 compares every base")
    srv.add_argument("--screen-floor", type=float, default=0.05, metavar="ICS",
                     help="a base whose screen estimate reaches this is always compared exactly")
    srv.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    passphrase_option(srv)
    verdict_options(srv)
    srv.set_defaults(func=cmd_verifier_serve)
    tc = ver.add_parser("test-certs", help="write a throwaway CA, server and client certificate (loopback only)")
    tc.add_argument("-o", "--output", required=True, metavar="DIR")
    tc.add_argument("--host", action="append", default=None, help="a name or address for the server certificate")
    tc.set_defaults(func=cmd_verifier_test_certs)

    rc = sub.add_parser("receipt", help="receipts").add_subparsers(dest="receipt_command", required=True)
    rv = rc.add_parser("verify", help="check a receipt offline (exit 0 only if valid)")
    rv.add_argument("receipt", metavar="RECEIPT")
    rv.add_argument("--verifier-pub", required=True, metavar="PUB")
    connection_options(rv, required=False)
    verdict_options(rv)
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(func=cmd_receipt_verify)
