"""``pawprint keys generate`` and ``pawprint trust add``: signing keys and trust stores (``protocol`` alone);
``pawprint keys refresh`` and ``pawprint trust-repo ...`` (trust stores distributed with TUF) are in ``cli_tuf``.

Private keys are written to files (PKCS#8 PEM, mode 0600), with a passphrase only from an environment variable
(never from the command line, where other users could see it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pawprint import cli_tuf
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

if TYPE_CHECKING:
    from protocol import PublicKey

# Keys of the TUF roles of a trust repository (``pawprint trust-repo``): never in a trust store.
TUF_KEY_ROLES = ("tuf-root", "tuf-targets", "tuf-snapshot", "tuf-timestamp")


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from protocol import PrivateKey

    role = args.role
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
        write_json({"key_id": key.key_id, "role": role, "private_key": str(private), "public_key": str(public)})
        return EXIT_OK
    print(f"wrote {private} and {public}: {role} key {key.key_id}")
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


def trusted_key(trust: str, key_id: str, role: str, option: str) -> PublicKey:
    """The key ``key_id`` from the trust store ``trust`` if it is trusted there for ``role`` (what a command
    takes instead of a public key file): an untrusted, unknown or revoked key does not verify (exit 1)."""
    from protocol import TrustStore

    with about(f"{option} {trust}"):
        store = TrustStore.load(trust)
    with about(f"{option} {trust}", verifying=True):
        return store.require(key_id, role)


def sole_trusted_key(trust: str, role: str, option: str) -> PublicKey:
    """The one key of ``trust`` trusted for ``role`` (revoked keys left out): for a check that must name its
    key before it reads the signature (a log's checkpoint). None or several is bad input (exit 2)."""
    from protocol import TrustStore

    with about(f"{option} {trust}"):
        keys = TrustStore.load(trust).trusted_for(role)
    if len(keys) != 1:
        found = ", ".join(k.key_id[:16] for k in keys) or "none"
        raise CommandError(f"{option} {trust}: needs exactly one unrevoked key trusted as {role} (found {found}); "
                           "give the key file instead")
    return keys[0]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint keys ...`` and ``pawprint trust ...``."""
    keys = sub.add_parser("keys", help="Ed25519 signing keys").add_subparsers(dest="keys_command", required=True)
    gen = keys.add_parser("generate", help="write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub")
    gen.add_argument("-o", "--output", required=True, metavar="DIR")
    gen.add_argument("--name", required=True)
    gen.add_argument("--role", required=True, choices=(*KEY_ROLES, *TUF_KEY_ROLES),
                     help="what the key will be trusted for (tuf-*: a role of a TUF trust repository)")
    gen.add_argument("--force", action="store_true", help="replace an existing key file")
    gen.add_argument("--json", action="store_true")
    passphrase_option(gen)
    gen.set_defaults(func=cmd_keys_generate)
    cli_tuf.add_refresh_parser(keys)

    trust = sub.add_parser("trust", help="trust stores").add_subparsers(dest="trust_command", required=True)
    tadd = trust.add_parser("add", help="trust a public key for a role (the store is created if missing)")
    tadd.add_argument("trust", metavar="TRUST")
    tadd.add_argument("pub", metavar="PUB")
    tadd.add_argument("--role", required=True, choices=KEY_ROLES)
    tadd.add_argument("--name", default=None, help="a label for the key")
    tadd.add_argument("--json", action="store_true")
    tadd.set_defaults(func=cmd_trust_add)

    cli_tuf.add_parser(sub)
