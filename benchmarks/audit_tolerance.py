"""How far an honest recomputation of the terms moves from what the owner's agent sent, against how far a decoy is.

``pawprint audit recompute`` checks a receipt's signed encoded vector and per-term cosines against the terms it
recomputes from the weights, within ``VECTOR_TOLERANCE`` and ``SCORE_TOLERANCE`` (``pawprint.cli_audit``). This
measures, on the demo zoo (``out/demo/zoo``, built by ``pawprint demo`` / ``zoo build``):

- **bit-reproducibility**: each model's terms computed in fresh processes at 1 and 2 torch threads, twice each:
  identical bytes at the same thread count? across thread counts?
- **honest drift**: between the 1-thread and 2-thread terms, the encoded vector's relative L2 distance and the
  largest change of a per-term cosine against the zoo's llama base (after the receipt's six-decimal rounding);
- **decoy distance**: the same two numbers between different models of the zoo (a decoy's terms in place of
  the model's), the smallest over every pair.

    .venv/bin/python -m benchmarks.audit_tolerance [--zoo out/demo/zoo] [--out docs/results/audit.md]

Each model costs two fresh-process term computations (a few seconds each on the demo zoo).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FAMILY_BASE = {"llama": "llama-base-s0"}


def _child(model: str, threads: int, out: str) -> None:
    import torch

    from owner._agent import compute_invariants
    from owner._invfile import save_invariants

    torch.set_num_threads(threads)
    save_invariants(compute_invariants(model, layers="all"), Path(out))


def _run(model: Path, threads: int, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "benchmarks.audit_tolerance", "--child", str(model), str(threads), str(out)],
                   check=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--zoo", default="out/demo/zoo")
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return
    from owner._invfile import load_invariants
    from protocol import format_score, parse_score
    from verifier import load_encoder
    from verifier._ics import compare

    zoo = Path(args.zoo)
    models = sorted(d for d in zoo.iterdir() if d.is_dir() and d.name.startswith("llama")
                    and (d / "config.json").exists() and not d.name.startswith("llama-onnx"))
    encoder = load_encoder("default")
    rows, sets = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        base1 = load_invariants(_run(zoo / FAMILY_BASE["llama"], 1, Path(tmp) / "base.inv"))
        for m in models:
            runs = {(t, k): load_invariants(_run(m, t, Path(tmp) / f"{m.name}-{t}-{k}.inv")) for t in (1, 2)
                    for k in (0, 1)}

            def digest(inv: object) -> str:
                terms = inv.terms  # type: ignore[attr-defined]
                return hashlib.sha256(b"".join(terms[k].astype("<f4").tobytes() for k in sorted(terms))).hexdigest()

            same = all(digest(runs[(t, 0)]) == digest(runs[(t, 1)]) for t in (1, 2))
            cross = digest(runs[(1, 0)]) == digest(runs[(2, 0)])
            a, b = runs[(1, 0)], runs[(2, 0)]
            va, vb = encoder.encode(a).astype(np.float64), encoder.encode(b).astype(np.float64)
            rel = float(np.linalg.norm(va - vb) / np.linalg.norm(va))
            ca = {(t.layer_a, t.layer_b, t.term): float(parse_score(format_score(t.cosine)))
                  for t in compare(a, base1, layer_pairs="match").terms}
            cb = {(t.layer_a, t.layer_b, t.term): float(parse_score(format_score(t.cosine)))
                  for t in compare(b, base1, layer_pairs="match").terms}
            score = max(abs(ca[k] - cb[k]) for k in ca)
            rows.append({"model": m.name, "same_threads_identical": same, "across_threads_identical": cross,
                         "vector_rel_l2": rel, "max_cosine_change": score})
            sets[m.name] = (va, ca)
    decoy_vec, decoy_score = float("inf"), float("inf")
    for (_, (v1, c1)), (_, (v2, c2)) in itertools.combinations(sets.items(), 2):
        decoy_vec = min(decoy_vec, float(np.linalg.norm(v1 - v2) / np.linalg.norm(v1)),
                        float(np.linalg.norm(v1 - v2) / np.linalg.norm(v2)))
        common = set(c1) & set(c2)
        if common:
            decoy_score = min(decoy_score, max(abs(c1[k] - c2[k]) for k in common))
    result = {"models": rows, "decoy_min_vector_rel_l2": decoy_vec, "decoy_min_max_cosine_change": decoy_score}
    print(json.dumps(result, indent=2))
    if args.out:
        lines = ["| model | same threads: identical bytes | 1 vs 2 threads: identical bytes | vector rel. L2 | "
                 "max cosine change |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['same_threads_identical']} | {r['across_threads_identical']} | "
                  f"{r['vector_rel_l2']:.2e} | {r['max_cosine_change']:.6f} |" for r in rows]
        lines.append(f"\nDecoys (another zoo model's terms in place of the model's), smallest over all pairs: vector "
                     f"rel. L2 {decoy_vec:.3f}, largest per-term cosine change {decoy_score:.6f}.")
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
