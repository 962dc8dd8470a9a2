"""``pawprint keys generate`` and ``pawprint trust add``: signing keys and trust stores (``protocol`` alone).

Private keys are written to files (PKCS#8 PEM, mode 0600), with a passphrase only from an environment variable
(never from the command line, where other users could see it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pawprint._common import (
    EXIT_OK,
    KEY_ROLES,
    CommandError,
    about,
    passphrase,
    passphrase_option,
    public_key,
    write_json,
)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from protocol import PrivateKey, Role

    role = Role(args.role)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"cannot create {out}: {e.strerror or e}") from e
    key = PrivateKey.generate()
    private, public = out / f"{args.name}.key", out / f"{args.name}.pub"
    with about(str(private)):
        key.save(private, passphrase(args.passphrase_env), overwrite=args.force)
    try:
        key.public_key.save(public)
    except OSError as e:
        raise CommandError(f"cannot write {public}: {e.strerror or e}") from e
    if args.json:
        write_json({"key_id": key.key_id, "role": role.value, "private_key": str(private), "public_key": str(public)})
        return EXIT_OK
    print(f"wrote {private} and {public}: {role.value} key {key.key_id}")
    return EXIT_OK


def cmd_trust_add(args: argparse.Namespace) -> int:
    from protocol import TrustStore

    path = Path(args.trust)
    key = public_key(args.pub)
    with about(str(path)):
        store = TrustStore.load(path) if path.exists() else TrustStore()
    with about(f"{path}: key {key.key_id} ({args.pub})"):
        entry = store.add(key, args.role, name=args.name)
    try:
        store.save(path)
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from e
    if args.json:
        write_json({"trust": str(path), "key_id": entry.key_id, "roles": sorted(entry.roles), "name": entry.name})
        return EXIT_OK
    print(f"{path}: {entry.key_id} trusted as {', '.join(sorted(entry.roles))}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint keys ...`` and ``pawprint trust ...``."""
    keys = sub.add_parser("keys", help="Ed25519 signing keys").add_subparsers(dest="keys_command", required=True)
    gen = keys.add_parser("generate", help="write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub")
    gen.add_argument("-o", "--output", required=True, metavar="DIR")
    gen.add_argument("--name", required=True)
    gen.add_argument("--role", required=True, choices=KEY_ROLES, help="what the key will be trusted for")
    gen.add_argument("--force", action="store_true", help="replace an existing key file")
    gen.add_argument("--json", action="store_true")
    passphrase_option(gen)
    gen.set_defaults(func=cmd_keys_generate)

    trust = sub.add_parser("trust", help="trust stores").add_subparsers(dest="trust_command", required=True)
    tadd = trust.add_parser("add", help="trust a public key for a role (the store is created if missing)")
    tadd.add_argument("trust", metavar="TRUST")
    tadd.add_argument("pub", metavar="PUB")
    tadd.add_argument("--role", required=True, choices=KEY_ROLES)
    tadd.add_argument("--name", default=None, help="a label for the key")
    tadd.add_argument("--json", action="store_true")
    tadd.set_defaults(func=cmd_trust_add)
