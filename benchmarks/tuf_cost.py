"""What distributing the trust store through TUF costs, beside a plain download of the same file.

In one process, over a real local HTTP server (``pawprint._tuf.serve_trust_repo``, loopback): a trust store of
``--keys`` keys (the demo's is a handful; default 64) is published with root 2-of-3, then fetched ``--rounds``
times each way:

- ``plain``: one HTTP GET of the store (what ``trust add`` by hand amounts to: no signature, no expiry);
- ``tuf first``: ``keys refresh`` from an empty cache, bootstrapped by ``1.root.json`` (root, timestamp,
  snapshot, targets, the store; signatures, thresholds, expiry, versions and hashes checked);
- ``tuf unchanged``: a refresh with a warm cache and nothing new (root probe, timestamp; the rest is cached);
- ``tuf publish``: the repository side's ``publish`` (three signatures, five atomic writes).

Wall and CPU seconds (medians) and the bytes each way reads over HTTP are printed and, with ``--json``, written.

    .venv/bin/python -m benchmarks.tuf_cost [--keys 64] [--rounds 20] [--json docs/results/tuf_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def _timed(fn: Callable[[], object], rounds: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {"wall_ms": round(statistics.median(walls) * 1e3, 2), "cpu_ms": round(statistics.median(cpus) * 1e3, 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--keys", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from pawprint._tuf import TrustRepository, refresh, serve_trust_repo
    from protocol import PrivateKey, Role, TrustStore

    roles = [Role.VERIFIER, Role.REGISTRY, Role.WITNESS, Role.VENDOR]
    store = TrustStore()
    for i in range(args.keys):
        store.add(PrivateKey.from_seed(i.to_bytes(32, "big")).public_key, roles[i % len(roles)], name=f"key {i}")
    signers = {n: PrivateKey.from_seed(bytes([200 + i]) * 32) for i, n in
               enumerate(("root1", "root2", "root3", "targets", "snapshot", "timestamp"))}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = TrustRepository(tmp / "repo")
        now = datetime.now(UTC)
        repo.init(store, root_keys=[signers["root1"], signers["root2"]], extra_root_keys=[signers["root3"].public_key],
                  root_threshold=2, targets_key=signers["targets"], snapshot_key=signers["snapshot"],
                  timestamp_key=signers["timestamp"], now=now)
        state = repo.state()
        metadata = {f.name: f.stat().st_size for f in (tmp / "repo" / "metadata").iterdir()}
        root = (tmp / "repo" / "metadata" / "1.root.json").read_bytes()
        store_url_path = f"targets/{state.target_sha256}.trust.json"
        counter = iter(range(10**6))
        with serve_trust_repo(tmp / "repo") as url:
            def plain() -> None:
                with urllib.request.urlopen(f"{url}/{store_url_path}") as r:
                    TrustStore.from_json(r.read())

            def first() -> None:
                n = next(counter)
                refresh(url, tmp / f"c{n}" / "trust.json", bootstrap_root=root)

            (tmp / "warm").mkdir()
            refresh(url, tmp / "warm" / "trust.json", bootstrap_root=root)

            def unchanged() -> None:
                refresh(url, tmp / "warm" / "trust.json")

            def publish() -> None:
                repo.publish(store, targets_key=signers["targets"], snapshot_key=signers["snapshot"],
                             timestamp_key=signers["timestamp"], now=datetime.now(UTC))

            results = {"plain": _timed(plain, args.rounds), "tuf_first": _timed(first, args.rounds),
                       "tuf_unchanged": _timed(unchanged, args.rounds), "tuf_publish": _timed(publish, args.rounds)}
    first_bytes = metadata["1.root.json"] + metadata["timestamp.json"] + metadata["1.snapshot.json"] + \
        metadata["1.targets.json"] + state.target_length
    out = {"keys": args.keys, "rounds": args.rounds, "store_bytes": state.target_length,
           "metadata_bytes": metadata, "tuf_first_bytes": first_bytes,
           "tuf_unchanged_bytes": metadata["timestamp.json"], **results}
    print(f"trust store of {args.keys} keys: {state.target_length} bytes; metadata {metadata}")
    for name, r in results.items():
        print(f"  {name:14s} {r['wall_ms']:8.2f} ms wall  {r['cpu_ms']:8.2f} ms CPU  (median of {args.rounds})")
    print(f"  bytes read: plain {state.target_length}, tuf first {first_bytes}, tuf unchanged "
          f"{metadata['timestamp.json']} (+ one 404 for the next root)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
