"""All-layer terms at the 1.1B shape, and how their cost grows with layers, probe tokens and width.

    python -m benchmarks.perf.all_layers --shape 1.1b --tokens 1024

1. **All layers** of the checkpoint at ``--tokens`` probe tokens (``--layers all``), in a fresh process: wall time,
   the time at which each layer finished (so the growth with layers is read off one run), peak RSS.
2. **Tokens**: one layer of the same shape (random weights in memory, no checkpoint) at n = 256 ... 4096.
3. **Width**: one layer at n = ``--tokens`` for d = 512 ... ``--max-width`` (FFN 2.75 d, 64-wide heads, 8 query
   heads per KV head as at 1.1B).

Cost model of one layer (``owner._invariants.layer_terms``, terms v2 with whitening), in multiply-adds, with
``kv = Hkv dh`` and ``h`` the FFN width (grouped-query attention is summed in the weights, so every attention
product is ``kv`` wide):

    n d (4 kv + 3 h)              the products with the weights (Ea Wq_g^T, Ea Wk^T, Ea Wv^T, Er Wo_g, gate, up, down)
  + n^2 (2 kv + d)                the n x n products (QK, VO, W(F) Er^T)
  + 2 n d^2 + c d^3               whitening F: F^T F, F M (fp32), eigh and forming M (fp64; LAPACK, c ~ 10)

plus, once for all layers, the whitening of the probe rows (another 2 n d^2 + c d^3). So a layer is
O(n d (kv + h) + n^2 d + n d^2 + d^3): linear in the number of layers, between linear and quadratic in n
(quadratic once n > kv + h), and cubic in the width (quadratic from the weights, cubic from ``eigh``). Memory:
the layer's weights in their stored dtype, O(n d) intermediates (the FFN in blocks of 1024 units) and the O(n^2)
terms kept per layer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.perf._common import (
    OUT,
    RESULTS,
    loadavg,
    machine,
    machine_line,
    median,
    python_cmd,
    run_measured,
    write_json,
)
from benchmarks.perf.gen_checkpoint import SHAPES, generate


def child_all(model: Path, tokens: int) -> int:
    """All layers in this process, with each layer's finishing time."""
    from owner import build_probe_set, compute_invariants, load_vocabulary

    probes = build_probe_set(load_vocabulary(model), n=tokens)
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def progress(label: str, done: int, total: int) -> None:
        marks.append((label, time.perf_counter() - t0))

    inv = compute_invariants(model, probes=probes, layers="all", progress=progress)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "marks": marks, "layers": len(inv.layers), "tokens": sum(inv.present)}))
    return 0


def flops(n: int, d: int, q: int, kv: int, h: int) -> float:
    """Multiply-adds x 2 of one layer's products (see the module docstring; eigh left out)."""
    del q  # the query heads are summed in the weights: every attention product is kv wide
    return 2.0 * (n * d * (4 * kv + 3 * h) + n * n * (2 * kv + d) + 2 * n * d * d)


def one_layer(n: int, d: int, repeats: int = 2) -> dict[str, Any]:
    from owner._adapters import ArchInfo, LayerWeights
    from owner._agent import whitened_rows
    from owner._invariants import layer_terms

    heads = d // 64
    kv_heads = max(1, heads // 8)
    h = int(2.75 * d) // 64 * 64
    g = torch.Generator().manual_seed(0)

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    info = ArchInfo("llama", 1, d, heads, kv_heads, 64, h, 32000, "rms", True, False)
    lw = LayerWeights(0, w(heads * 64, d), w(kv_heads * 64, d), w(kv_heads * 64, d), w(d, heads * 64),
                      w(h, d), w(d, h), w(h, d), 1 + w(d) * 5, 1 + w(d) * 5)
    x = w(n, d)
    with torch.inference_mode():
        rows = whitened_rows(x, info, "pawprint")
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer_terms(x, lw, info, whiten_rows=rows)
            times.append(time.perf_counter() - t0)
    t = median(times)
    f = flops(n, d, heads * 64, kv_heads * 64, h)
    return {"n": n, "d": d, "h": h, "heads": heads, "kv_heads": kv_heads, "s": t, "gflop": f / 1e9,
            "GFps": f / t / 1e9, "loadavg": loadavg()[0]}


def run(shape: str, model: Path, tokens: int, max_width: int) -> dict[str, Any]:
    generate(model, SHAPES[shape])
    doc: dict[str, Any] = {"shape": shape, "tokens": tokens, "loadavg_start": loadavg()}
    m = run_measured(python_cmd("-m", "benchmarks.perf.all_layers", "--child-all", "--model", str(model),
                                "--tokens", str(tokens)), timeout_s=1800)
    if m.returncode:
        raise SystemExit(f"all-layer run failed: {m.stderr[-2000:]}")
    res = json.loads(m.stdout.strip().splitlines()[-1])
    layer_marks = [t for label, t in res["marks"] if label.startswith("layer ") or label == "done"]
    per_layer = [b - a for a, b in itertools.pairwise(layer_marks)]
    doc["all_layers"] = {**res, "process_wall_s": m.wall_s, "max_rss_bytes": m.max_rss_bytes,
                         "per_layer_s": per_layer, "per_layer_median_s": median(per_layer)}
    print(f"  all {res['layers']} layers at n={res['tokens']}: {res['wall_s']:.1f} s in-process "
          f"({m.wall_s:.1f} s process), {median(per_layer):.2f} s/layer, peak RSS {m.max_rss_bytes / 2**20:.0f} MiB, "
          f"load {loadavg()[0]:.2f}", flush=True)
    s = SHAPES[shape]
    doc["tokens_sweep"] = []
    for n in (256, 512, 1024, 2048, 4096):
        r = one_layer(n, s.d_model)
        doc["tokens_sweep"].append(r)
        print(f"  n={n:5d} d={s.d_model}: {r['s']:.2f} s ({r['GFps']:.0f} GF/s of products)", flush=True)
    doc["width_sweep"] = []
    d = 512
    while d <= max_width:
        r = one_layer(tokens, d)
        doc["width_sweep"].append(r)
        print(f"  n={tokens} d={d:5d}: {r['s']:.2f} s ({r['GFps']:.0f} GF/s of products)", flush=True)
        d *= 2
    doc["loadavg_end"] = loadavg()
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["1.1b", "7b", "tiny"], default="1.1b")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--max-width", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child-all", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = args.model or OUT / f"llama-{args.shape}"
    if args.child_all:
        return child_all(model, args.tokens)
    t0 = time.perf_counter()
    m = machine()
    print(machine_line(m))
    doc = run(args.shape, model, args.tokens, args.max_width)
    doc["machine"] = m
    doc["command"] = " ".join(["python -m benchmarks.perf.all_layers", *sys.argv[1:]])
    doc["seconds"] = time.perf_counter() - t0
    write_json(args.out or RESULTS / f"perf_all_layers_{args.shape}.json", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
