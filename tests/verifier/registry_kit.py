"""Helpers for the registry and transparency-log tests: fixed keys, tiny vendor bundles made in microseconds,
signed statements, and a publisher that runs as its own process (``python -m tests.verifier.registry_kit``)
for the concurrency and kill -9 tests.

A tiny bundle is the smallest valid base: two probe tokens, one layer, three 2 x 2 F32 terms; ``seed`` makes
its terms (and so its manifest) distinct.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from protocol import (
    REGISTER,
    REVOKE,
    Bundle,
    Manifest,
    PrivateKey,
    ProbeSpec,
    RegistryStatement,
    Role,
    SignedMessage,
    Tensor,
    TensorDigest,
    TermGroup,
    TrustStore,
    WeightCommitment,
)

NOW = 1_700_000_000
VENDOR = PrivateKey.from_seed(b"\x11" * 32)
OTHER_VENDOR = PrivateKey.from_seed(b"\x12" * 32)
OWNER = PrivateKey.from_seed(b"\x13" * 32)
STRANGER = PrivateKey.from_seed(b"\x14" * 32)
LOG_KEY = PrivateKey.from_seed(b"\x15" * 32)
TERMS = ("attn_qk", "attn_vo", "ffn")


def trust() -> TrustStore:
    store = TrustStore()
    store.add(VENDOR.public_key, Role.VENDOR, name="vendor")
    store.add(OTHER_VENDOR.public_key, Role.VENDOR, name="other vendor")
    store.add(OWNER.public_key, Role.OWNER, name="owner")
    return store


def tiny_bundle(seed: int, key: PrivateKey = VENDOR) -> Bundle:
    rng = np.random.default_rng(seed)
    group = TermGroup(ProbeSpec("p", 1, "r", ("a", "b")), (True, True), (0,), "pawprint", "m", TERMS)
    terms = {n: Tensor("F32", (2, 2), rng.standard_normal((2, 2)).astype("<f4").tobytes())
             for n in group.tensor_names(0)}
    table = tuple(TensorDigest(n, "F32", (2, 2), hashlib.sha256(t.data).digest()) for n, t in terms.items())
    manifest = Manifest(key.key_id, None, NOW, "kit", {"family": "tiny"}, (group,), table,
                        WeightCommitment(hashlib.sha256(b"w%d" % seed).digest(), 1, 16, "w"))
    return Bundle.create(manifest, terms, key)


def register(bundle: Bundle, name: str, key: PrivateKey = VENDOR, *, licence: str = "apache-2.0",
             signed_at: int = NOW, **metadata: str) -> SignedMessage:
    return RegistryStatement(REGISTER, name, key.key_id, bundle.manifest_digest, signed_at, licence,
                             **metadata).sign(key)


def revoke(bundle: Bundle, name: str, key: PrivateKey = VENDOR, reason: str = "withdrawn") -> SignedMessage:
    return RegistryStatement(REVOKE, name, key.key_id, bundle.manifest_digest, NOW, reason=reason).sign(key)


def kill_self(point: str, at: str) -> None:
    """A fault hook: SIGKILL this process when the append reaches ``at``."""
    if point == at:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    """Publish ``count`` tiny bundles (seeds ``first``..) to the registry in DATA, printing each index."""
    from verifier import Registry

    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--crash-at", default=None)
    args = parser.parse_args(argv)
    hook = (lambda point: kill_self(point, args.crash_at)) if args.crash_at else None
    registry = Registry(args.data, log_key=LOG_KEY, fault=hook)
    store = trust()
    print("ready", flush=True)
    for seed in range(args.first, args.first + args.count):
        bundle = tiny_bundle(seed)
        published = registry.publish(register(bundle, f"base-{seed}"), bundle, store)
        print(published.index, flush=True)
    registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
