"""What sending sketches costs and saves (issue 16): bytes on the wire, the owner's seconds to sketch, the
verifier's seconds to sketch a base once and to compare a submission with it, against full terms, in one run.

    python -m benchmarks.sketch_cost [--m 4096] [--layers 2] [--k 256] [--width 2048] [--repeat 3]

Synthetic terms of the real shape (``m`` probe tokens present, ``layers`` layers, the three terms; each term a
product ``X W X^T`` of ``m x width`` rows, so of rank ``width``) stand in for a model's: the costs depend only on
the shapes. Reported: bytes of the term tensors sent, the owner's ``sketch_invariants`` time (what the owner's
agent adds to computing the terms), the verifier's time to sketch a base group once (then kept in its data
directory) and to compare (``verifier._ics.compare`` with layer matching) a submission with one base, sketched
against full terms, medians of ``--repeat`` runs on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from protocol import TERMS, ProbeSpec
from protocol.terms import InvariantSet, sketch_invariants
from verifier._ics import compare


def _model(m: int, layers: int, width: int, seed: int) -> InvariantSet:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, width)).astype(np.float32) / np.sqrt(width)
    probes = ProbeSpec("cost", 1, "synthetic", tuple(f"t{i}" for i in range(m)))
    terms = {}
    for layer in range(layers):
        for t in TERMS:
            w = rng.standard_normal((width, width)).astype(np.float32) / np.sqrt(width)
            terms[(layer, t)] = (x @ w) @ x.T
    return InvariantSet.create("pawprint", "cost/1", probes, (True,) * m, tuple(range(layers)), {"d_model": width},
                               terms)


def _median(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sketch_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/results/sketch_cost.json"))
    args = p.parse_args(argv)
    base, suspect = _model(args.m, args.layers, args.width, 0), _model(args.m, args.layers, args.width, 1)
    sk_base, sk_suspect = sketch_invariants(base, args.k), sketch_invariants(suspect, args.k)
    n_terms = args.layers * len(TERMS)
    doc = {
        "command": "python -m benchmarks.sketch_cost " + " ".join(f"--{k} {v}" for k, v in (
            ("m", args.m), ("layers", args.layers), ("k", args.k), ("width", args.width), ("repeat", args.repeat))),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        "bytes_full": n_terms * args.m * args.m * 4,
        "bytes_sketch": n_terms * args.k * args.k * 4,
        "owner_sketch_s": _median(lambda: sketch_invariants(suspect, args.k), args.repeat),
        "verifier_base_sketch_s": _median(lambda: sketch_invariants(base, args.k), args.repeat),
        "compare_full_s": _median(lambda: compare(suspect, base, layer_pairs="match"), args.repeat),
        "compare_sketch_s": _median(lambda: compare(sk_suspect, sk_base, layer_pairs="match"), args.repeat),
    }
    doc["bytes_ratio"] = doc["bytes_full"] / doc["bytes_sketch"]
    doc["compare_speedup"] = doc["compare_full_s"] / doc["compare_sketch_s"]
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(doc, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
