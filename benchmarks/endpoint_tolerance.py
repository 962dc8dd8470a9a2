"""The tolerance of ``pawprint audit endpoint``: how far served log-probabilities move for the same weights
(dtype, attention kernel, a rounded or quantised copy) and for other models (derivatives, independents).

    python -m benchmarks.endpoint_tolerance --zoo out/endpoint-tolerance/quick-zoo --build-quick \\
        --zoo out/demo/zoo --out docs/results/endpoint_audit.json

For each zoo: the auditor holds ``llama-base-s0`` (float32, the reference of ``pawprint._endpoint_audit``).
Each served model runs as its own ``python -m zoo.serve`` process (our own OpenAI-compatible server, see
zoo/serve.py) in each dtype and attention kernel asked for, and is audited over HTTP with prompts from every
seed asked for, exactly as the command does (``served_logprobs`` + ``compare``). Per row: the statistic (the
largest per-prompt mean |served - local| log-probability, nats) over the seeds, min and max.
``--build-quick`` builds the quick zoo (llama, gpt2, gpt_neox) at the first ``--zoo`` if it is not there
(about 15 s on 2 cores); the default zoo is ``pawprint zoo build DIR`` (what ``pawprint demo`` uses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from pawprint._endpoint_audit import (
    DEFAULT_LENGTH,
    DEFAULT_PROMPTS,
    DEFAULT_THRESHOLD,
    Endpoint,
    LocalModel,
    compare,
    seeded_prompts,
    served_logprobs,
)
from zoo.serve import ATTENTION, DTYPES, running

REFERENCE = "llama-base-s0"
# (served model, relation to the reference, dtypes to serve it in)
SAME = "same weights"
ROUNDED = "same weights, rounded copy"
DERIVED = "derivative"
INDEPENDENT = "independent"
SERVED: tuple[tuple[str, str], ...] = (
    (REFERENCE, SAME),
    ("llama-bf16", ROUNDED),
    ("llama-int8", ROUNDED),
    ("llama-sft", DERIVED),
    ("llama-lora", DERIVED),
    ("llama-cpt-vocab", DERIVED),
    ("llama-cpt-heavy", DERIVED),
    ("llama-pruned", DERIVED),
    ("llama-base-s1", INDEPENDENT),
    ("gpt2-base-s0", INDEPENDENT),
    ("gpt_neox-base-s0", INDEPENDENT),
)


def measure_zoo(zoo: Path, seeds: list[int], dtypes: list[str], attns: list[str]) -> list[dict[str, Any]]:
    local = LocalModel.load(zoo / REFERENCE)
    batches = {seed: seeded_prompts(local.usable_ids, seed, DEFAULT_PROMPTS, DEFAULT_LENGTH) for seed in seeds}
    reference = {seed: local.token_logprobs(batch) for seed, batch in batches.items()}
    rows: list[dict[str, Any]] = []
    for name, relation in SERVED:
        if not (zoo / name).is_dir():
            print(f"  {name}: not in {zoo}, skipped")
            continue
        # the reference in every dtype and kernel; the other models in every dtype with the default kernel
        configs = [(d, a) for d in dtypes for a in (attns if name == REFERENCE else attns[:1])]
        for dtype, attn in configs:
            start = time.perf_counter()
            with running(zoo / name, dtype=dtype, attn=attn) as url:
                started = time.perf_counter() - start
                endpoint = Endpoint.parse(url, 60.0)
                stats, worst_pos, audit_s = [], 0.0, []
                for seed, batch in batches.items():
                    t = time.perf_counter()
                    served = [served_logprobs(endpoint, p, None)[0] for p in batch]
                    res = compare(served, reference[seed], DEFAULT_THRESHOLD)
                    audit_s.append(time.perf_counter() - t)
                    stats.append(res.statistic)
                    worst_pos = max(worst_pos, res.max_abs)
            row = {"zoo": str(zoo), "served": name, "relation": relation, "dtype": dtype, "attn": attn,
                   "seeds": len(stats), "stat_min": min(stats), "stat_max": max(stats), "max_abs": worst_pos,
                   "server_start_s": started, "requests_s_per_audit": sum(audit_s) / len(audit_s)}
            rows.append(row)
            print(f"  {name:18s} {dtype:9s} {attn:5s} {relation:27s} stat {min(stats):.5f}..{max(stats):.5f} "
                  f"max|d| {worst_pos:.4f}", flush=True)
    return rows


NOISE = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.2, 0.3)


def noise_sweep(zoo: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """How small a change of the weights the statistic sees: every weight matrix of the reference plus
    ``eps * std(W) * N(0, 1)`` (torch seed 0), compared in-process (the same forward pass the server runs)."""
    local = LocalModel.load(zoo / REFERENCE)
    batches = {seed: seeded_prompts(local.usable_ids, seed, DEFAULT_PROMPTS, DEFAULT_LENGTH) for seed in seeds}
    reference = {seed: local.token_logprobs(batch) for seed, batch in batches.items()}
    original = {k: v.clone() for k, v in local.model.state_dict().items()}
    rows = []
    for eps in NOISE:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in local.model.named_parameters():
                base = original[name]
                noise = torch.randn(base.shape, generator=gen) * base.std() * eps if base.dim() == 2 else 0
                param.copy_(base + noise)
        stats = [compare(local.token_logprobs(batch), reference[seed], DEFAULT_THRESHOLD).statistic
                 for seed, batch in batches.items()]
        rows.append({"zoo": str(zoo), "eps": eps, "stat_min": min(stats), "stat_max": max(stats)})
        print(f"  noise {eps:g} x std: stat {min(stats):.5f}..{max(stats):.5f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zoo", action="append", required=True, help="a zoo directory (repeatable)")
    ap.add_argument("--build-quick", action="store_true", help="build the quick zoo at the first --zoo if absent")
    ap.add_argument("--seeds", type=int, default=5, help="prompt seeds 0..N-1 per row")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--attn", default=",".join(ATTENTION))
    ap.add_argument("--out", default="docs/results/endpoint_audit.json")
    ap.add_argument("--noise-only", action="store_true",
                    help="only the noise sweep (no servers), merged into --out if it exists")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    zoos = [Path(z) for z in args.zoo]
    if args.build_quick and not (zoos[0] / "lineage.json").is_file():
        from zoo.build import build_zoo

        build_zoo(zoos[0], families=("llama", "gpt2", "gpt_neox"), quick=True, threads=1)
    if args.noise_only:
        out = Path(args.out)
        doc = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
        doc["noise"] = [r for zoo in zoos for r in noise_sweep(zoo, list(range(args.seeds)))]
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for zoo in zoos:
        scale = json.loads((zoo / "lineage.json").read_text(encoding="utf-8")).get("scale")
        print(f"{zoo} (scale {scale})", flush=True)
        for row in measure_zoo(zoo, list(range(args.seeds)), args.dtypes.split(","), args.attn.split(",")):
            rows.append({**row, "scale": scale})
    same = [r["stat_max"] for r in rows if r["relation"] in (SAME, ROUNDED)]
    other = [r["stat_min"] for r in rows if r["relation"] in (DERIVED, INDEPENDENT)]
    summary = {"threshold": DEFAULT_THRESHOLD, "largest_same_weights": max(same) if same else None,
               "smallest_other_model": min(other) if other else None,
               "prompts": DEFAULT_PROMPTS, "length": DEFAULT_LENGTH, "seeds": args.seeds,
               "seconds": time.perf_counter() - t0, "torch": torch.__version__, "machine": platform.machine(),
               "threads": 1}
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
