"""The owner's cost of proving possession, and what it reveals, beside the v1 weight commitment.

For one checkpoint (default: the synthetic 1.1B-shaped LLaMA checkpoint that ``benchmarks/perf`` generates in
``out/perf/llama-1.1b``, 2.2 GB of bf16; else any model directory), in one process:

- the v1 commitment (SHA-256 per tensor, no cache, ``--workers`` threads);
Wall and CPU seconds are both reported: on a shared machine the CPU seconds are the comparable number.

- the v2 chunked commitment for each chunk size (every tensor's bytes through a ``ChunkHasher``, one thread:
  per-chunk hashing holds the GIL);
- a possession proof for one nonce (the selected tensors read again), its encoded size in the manifest, the
  weight bytes it reveals, and the verifier's check of it.

    .venv/bin/python -m benchmarks.possession_cost [MODEL] [--chunks 64 256 1024] [--json OUT]

Leakage: each submission reveals ``k`` chunks (``DEFAULT_OPENINGS`` = 3) of at most ``chunk`` bytes, chosen by
the verifier's nonce; N submissions reveal at most ``N * k * chunk`` bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?", default="out/perf/llama-1.1b")
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from owner._fingerprint import CommitmentCache, commit_checkpoint, commit_checkpoint_chunked, read_tensor_bytes
    from owner._model import open_model
    from protocol import DEFAULT_OPENINGS, encode, prove_possession, verify_possession

    model = open_model(Path(args.model))
    t, c = time.perf_counter(), time.process_time()
    v1 = commit_checkpoint(model, args.workers, CommitmentCache(None))
    v1_s, v1_cpu = time.perf_counter() - t, time.process_time() - c
    out: dict[str, object] = {"model": args.model, "tensors": v1.tensors, "total_bytes": v1.total_bytes,
                              "v1_seconds": round(v1_s, 2), "v1_cpu_seconds": round(v1_cpu, 2),
                              "v1_workers": args.workers, "openings": DEFAULT_OPENINGS,
                              "v2": []}
    print(f"{args.model}: {v1.tensors} tensors, {v1.total_bytes / 1e9:.2f} GB; v1 commitment {v1_s:.1f} s wall, "
          f"{v1_cpu:.1f} s CPU ({args.workers} threads)")
    nonce = bytes(range(32))
    for chunk in args.chunks:
        t, c = time.perf_counter(), time.process_time()
        wc, entries = commit_checkpoint_chunked(model, chunk, CommitmentCache(None))
        v2_s, v2_cpu = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        proof = prove_possession(nonce, entries, chunk, lambda e: read_tensor_bytes(model, e.name))
        prove_s = time.perf_counter() - t
        t = time.perf_counter()
        verify_possession(proof, nonce=nonce, root=wc.root, commitment_id=wc.id, tensors=wc.tensors)
        verify_ms = (time.perf_counter() - t) * 1e3
        row = {"chunk": chunk, "v2_seconds": round(v2_s, 2), "v2_cpu_seconds": round(v2_cpu, 2),
               "prove_seconds": round(prove_s, 2),
               "verify_ms": round(verify_ms, 2), "proof_bytes": len(encode(proof.to_map())),
               "revealed_bytes": proof.revealed_bytes, "revealed_bytes_1000_submissions_max": 1000 * DEFAULT_OPENINGS
               * chunk, "fraction_revealed_per_submission": proof.revealed_bytes / v1.total_bytes}
        out["v2"].append(row)  # type: ignore[attr-defined]
        print(f"  chunk {chunk:5d} B: v2 commitment {v2_s:6.1f} s wall, {v2_cpu:.1f} s CPU "
              f"({v2_cpu / v1_cpu:.1f}x v1's CPU), proof {prove_s:.2f} s, "
              f"check {verify_ms:.1f} ms, proof {row['proof_bytes']} B in the manifest, reveals "
              f"{proof.revealed_bytes} B of weights ({row['fraction_revealed_per_submission']:.1e} of the checkpoint)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
