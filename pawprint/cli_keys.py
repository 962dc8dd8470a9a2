"""``pawprint keys generate`` and ``pawprint trust add``: signing keys and trust stores (``protocol`` alone).

Private keys are written to files (PKCS#8 PEM, mode 0600), with a passphrase only from an environment variable
(never from the command line, where other users could see it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pawprint._common import EXIT_OK, KEY_ROLES, CommandError, passphrase, passphrase_option


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from protocol import PrivateKey, Role

    role = Role(args.role)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"cannot create {out}: {e.strerror or e}") from e
    key = PrivateKey.generate()
    key.save(out / f"{args.name}.key", passphrase(args.passphrase_env), overwrite=args.force)
    key.public_key.save(out / f"{args.name}.pub")
    print(f"wrote {out / (args.name + '.key')} and {out / (args.name + '.pub')}: {role.value} key {key.key_id}")
    return EXIT_OK


def cmd_trust_add(args: argparse.Namespace) -> int:
    from protocol import PublicKey, TrustStore

    path = Path(args.trust)
    store = TrustStore.load(path) if path.exists() else TrustStore()
    entry = store.add(PublicKey.load(args.pub), args.role, name=args.name)
    store.save(path)
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
    passphrase_option(gen)
    gen.set_defaults(func=cmd_keys_generate)

    trust = sub.add_parser("trust", help="trust stores").add_subparsers(dest="trust_command", required=True)
    tadd = trust.add_parser("add", help="trust a public key for a role (the store is created if missing)")
    tadd.add_argument("trust", metavar="TRUST")
    tadd.add_argument("pub", metavar="PUB")
    tadd.add_argument("--role", required=True, choices=KEY_ROLES)
    tadd.add_argument("--name", default=None, help="a label for the key")
    tadd.set_defaults(func=cmd_trust_add)
