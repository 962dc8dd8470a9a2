"""The protocol's subcommands of the ``pawprint`` CLI: keys, trust stores, bundles, the registry, the verifier
server, submissions and receipts.

``add_commands(sub, owner_sub)`` adds the top-level ``keys``, ``trust``, ``bundle``, ``registry``,
``verifier`` and ``receipt`` commands and ``owner fingerprint`` / ``owner submit`` to ``pawprint.cli``'s
parser. Each command takes the parsed ``args`` and returns an exit status; bad input raises a
``protocol.ProtocolError``, ``verifier.VerifierError`` or ``owner.errors.OwnerError`` with a one-line
message, which ``pawprint.cli.main`` prints as ``pawprint: error: <message>`` (exit 2).

Private keys are read from files, with a passphrase only from an environment variable (never from the
command line, where other users could see it). Nothing here sends a weight: ``owner submit`` sends only
what ``owner._client`` does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
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
        )
    receipt = result.receipt
    out = Path(args.output)
    path = out / f"receipt-{receipt.submission.hex()[:16]}.pawprint-receipt"
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, result.signed_receipt.to_bytes(RECEIPT_FORMAT))
    except OSError as e:
        raise CommandError(f"cannot write the receipt to {out}: {e.strerror or e}") from e
    if args.json:
        _write_json({**receipt.as_dict(), "receipt": str(path)})
        return EXIT_OK
    _print_receipt(receipt)
    print(f"receipt    {path}")
    return EXIT_OK


def _print_receipt(receipt: Any) -> None:
    print(f"verdict    {receipt.verdict}   ({receipt.compared} base(s) compared; rule {receipt.verdict_rule})")
    for m in receipt.matches:
        print(f"  {m.name:30s} ICS {m.ics}  min term {m.min_term}  {m.common_probe_tokens} tokens  {m.verdict}")
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
def cmd_registry_add(args: argparse.Namespace) -> int:
    from owner._fingerprint import load_bundle
    from protocol import TrustStore
    from verifier import Registry

    bundle = load_bundle(args.bundle)
    registry = Registry(args.data)
    try:
        entry = registry.add_base(args.name, bundle, TrustStore.load(args.trust))
        state = registry.state()
    finally:
        registry.close()
    print(f"registered {entry.name} (vendor {entry.vendor_key_id}, manifest {entry.manifest_sha256.hex()}); "
          f"registry now {state.size} entries, root {state.root.hex()}")
    return EXIT_OK


def cmd_registry_list(args: argparse.Namespace) -> int:
    from verifier import Registry

    registry = Registry(args.data)
    try:
        entries, state = registry.bases(), registry.state()
    finally:
        registry.close()
    rows: list[dict[str, Any]] = [
        {"name": e.name, "vendor_key_id": e.vendor_key_id, "manifest_sha256": e.manifest_sha256.hex(),
         "weight_commitment": e.weight_commitment.hex(), "probe_set_ids": list(e.probe_set_ids),
         "family": e.metadata.get("family"), "registered_at": e.registered_at}
        for e in entries
    ]
    if args.json:
        _write_json({"size": state.size, "root": state.root.hex(), "entries": rows})
        return EXIT_OK
    for r in rows:
        print(f"{r['name']:30s} {r['family']!s:10s} {r['manifest_sha256'][:16]}  vendor {r['vendor_key_id'][:16]}")
    print(f"{state.size} entries, root {state.root.hex()}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------- verifier
def cmd_verifier_serve(args: argparse.Namespace) -> int:
    from protocol import TrustStore
    from verifier import ConfigError, Registry, ServerConfig, TlsConfig, serve

    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if args.client_ca is not None and args.tls_cert is None:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key")
    tls = TlsConfig.from_files(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    key = _private_key(args.key, args.passphrase_env)
    trust = TrustStore.load(args.trust)
    registry = Registry(args.data)
    config = ServerConfig(listen=args.listen, tls=tls, insecure_loopback=args.insecure_loopback)
    server, port = serve(key, trust, registry, config)
    host = args.listen.rpartition(":")[0]
    print(f"listening on {host}:{port}", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop(grace=5).wait()
        registry.close()
    return EXIT_OK


def cmd_verifier_test_certs(args: argparse.Namespace) -> int:
    from verifier import write_test_pki

    pki = write_test_pki(args.output, now=dt.datetime.now(dt.UTC), hosts=args.host or ("localhost", "127.0.0.1", "::1"))
    print(f"wrote {pki.ca}, {pki.server_cert}, {pki.server_key}, {pki.client_cert}, {pki.client_key} "
          "(loopback tests and demos only)")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- receipt
def cmd_receipt_verify(args: argparse.Namespace) -> int:
    from protocol import RECEIPT_FORMAT, PublicKey, SignedMessage, open_receipt
    from verifier import recheck_verdict

    signed = SignedMessage.from_bytes(_read(args.receipt, "receipt"), RECEIPT_FORMAT)
    receipt = open_receipt(signed, PublicKey.load(args.verifier_pub))
    consistent = recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule)
    if consistent is False:
        raise CommandError(f"{args.receipt}: the verdict does not follow from the scores under its rule")
    if args.json:
        _write_json({"valid": True, "verdict_rechecked": consistent, **receipt.as_dict()})
        return EXIT_OK
    print(f"{args.receipt}: valid receipt signed by verifier {receipt.verifier_key_id}")
    _print_receipt(receipt)
    return EXIT_OK


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

    reg = sub.add_parser("registry", help="the verifier's registry of base models (local admin)").add_subparsers(
        dest="registry_command", required=True
    )
    radd = reg.add_parser("add", help="register a vendor-signed bundle as a base model")
    radd.add_argument("bundle", metavar="BUNDLE")
    radd.add_argument("--data", required=True, metavar="DIR")
    radd.add_argument("--name", required=True)
    radd.add_argument("--trust", required=True, metavar="TRUST")
    radd.set_defaults(func=cmd_registry_add)
    rls = reg.add_parser("list", help="the registered bases and the registry state")
    rls.add_argument("--data", required=True, metavar="DIR")
    rls.add_argument("--json", action="store_true")
    rls.set_defaults(func=cmd_registry_list)

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
    srv.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    passphrase_option(srv)
    srv.set_defaults(func=cmd_verifier_serve)
    tc = ver.add_parser("test-certs", help="write a throwaway CA, server and client certificate (loopback only)")
    tc.add_argument("-o", "--output", required=True, metavar="DIR")
    tc.add_argument("--host", action="append", default=None, help="a name or address for the server certificate")
    tc.set_defaults(func=cmd_verifier_test_certs)

    rc = sub.add_parser("receipt", help="receipts").add_subparsers(dest="receipt_command", required=True)
    rv = rc.add_parser("verify", help="check a receipt offline (exit 0 only if valid)")
    rv.add_argument("receipt", metavar="RECEIPT")
    rv.add_argument("--verifier-pub", required=True, metavar="PUB")
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(func=cmd_receipt_verify)
