"""The owner agent against the published pipeline, side by side on the same checkpoint, in the same run.

    python -m benchmarks.perf.owner_vs_reference --shape 1.1b            # both, 3 repeats each, interleaved
    python -m benchmarks.perf.owner_vs_reference --shape 7b --repeats 1  # the reference is refused by estimate

Each side runs as its own process and is measured from outside (``_common.run_measured``: wall time, peak
RSS from the kernel, sampled peaks of anonymous and file-backed memory): ``pawprint owner invariants MODEL -o
FILE`` (the real command line), ``benchmarks.perf._reference`` (HuRef's pipeline: whole model in fp32 with
transformers, then the same products) and ``owner.write_invariants`` called from a bare script (the agent writing
each term to the file as it is computed, holding none: what the command line does once it calls it). Runs
alternate (reference, pawprint, write_invariants, write_invariants, pawprint, reference, ...) so that a change of
load on the machine falls on all; the page
cache is warm (the checkpoint is read once first), and one extra cold run of each starts from the checkpoint
dropped from the cache. The outputs are checked against each other (cosine of every term). The reference is
not started when its estimated peak (fp32 parameters, x 1.5 for the loading copies) exceeds the memory
available.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.perf._common import (
    OUT,
    RESULTS,
    evict,
    loadavg,
    machine,
    machine_line,
    median,
    python_cmd,
    run_measured,
    warm,
    write_json,
)
from benchmarks.perf.gen_checkpoint import SHAPES, generate, tensor_specs

REFERENCE_OVERHEAD = 1.5  # transformers' loading holds about half the model again while converting
STREAM = "write_invariants"
_STREAM_SCRIPT = "import sys; from owner import write_invariants; write_invariants(sys.argv[1], sys.argv[2])"


def probe_ids(model: Path) -> list[int]:
    from owner import build_probe_set, load_vocabulary, map_probes

    vocab = load_vocabulary(model)
    return list(map_probes(build_probe_set(vocab), vocab).present_ids())


def reference_estimate(model: Path) -> int:
    """Bytes the reference needs at least: every parameter in fp32, with transformers' loading overhead."""
    idx = json.loads((model / "model.safetensors.index.json").read_text())
    return int(idx["metadata"]["total_size"] // 2 * 4 * REFERENCE_OVERHEAD)


def agreement(inv_file: Path, ref_file: Path) -> list[float]:
    from owner import load_invariants
    from protocol import TERMS
    from verifier import term_cosine

    inv = load_invariants(inv_file)
    ref = np.load(ref_file, mmap_mode="r")
    return [term_cosine(inv.term(layer, t), np.asarray(ref[3 * i + j]))
            for i, layer in enumerate(inv.layers) for j, t in enumerate(TERMS)]


def agreement_files(a_file: Path, b_file: Path) -> list[float]:
    from owner import load_invariants
    from protocol import TERMS
    from verifier import term_cosine

    a, b = load_invariants(a_file), load_invariants(b_file)
    return [term_cosine(a.term(layer, t), b.term(layer, t)) for layer in a.layers for t in TERMS]


def run(shape: str, model: Path, repeats: int, cold: bool) -> dict[str, Any]:
    generate(model, SHAPES[shape])
    files = sorted(model.glob("*.safetensors"))
    ids_file = OUT / f"ids-{shape}.json"
    ids_file.write_text(json.dumps(probe_ids(model)))
    inv_file, ref_file = OUT / f"inv-{shape}.safetensors", OUT / f"ref-{shape}.npy"
    stream_file = OUT / f"stream-{shape}.safetensors"
    cmds = {
        "pawprint": python_cmd("-m", "pawprint", "owner", "invariants", str(model), "-o", str(inv_file), "-q"),
        "reference": python_cmd("-m", "benchmarks.perf._reference", str(model), "--ids", str(ids_file),
                                "--out", str(ref_file)),
        STREAM: python_cmd("-c", _STREAM_SCRIPT, str(model), str(stream_file)),
    }
    need = reference_estimate(model)
    available = psutil.virtual_memory().available
    ref_ok = need < available
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cmds}
    loads: list[tuple[float, float, float]] = [loadavg()]

    def one(side: str, cache: str) -> None:
        if cache == "cold":
            evict(files)
        m = run_measured(cmds[side], timeout_s=1800)
        if m.returncode != 0:
            raise SystemExit(f"{side} failed ({m.returncode}): {m.stderr[-2000:]}")
        rec = {"cache": cache, **m.as_dict(), "load_after": loadavg()}
        if side == "reference":
            rec["phases"] = json.loads(m.stdout.strip().splitlines()[-1])
        runs[side].append(rec)
        print(f"  {side:14s} {cache:4s} {m.wall_s:6.2f} s  peak RSS {m.max_rss_bytes / 2**20:6.0f} MiB "
              f"(anon {m.peak_anon_bytes / 2**20:.0f}, file {m.peak_file_bytes / 2**20:.0f})  "
              f"load {loadavg()[0]:.2f}", flush=True)

    warm(files)
    sides = ["reference", "pawprint", STREAM] if ref_ok else ["pawprint", STREAM]
    for r in range(repeats):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            one(side, "warm")
    if cold:
        for side in sides:
            one(side, "cold")
    loads.append(loadavg())
    doc: dict[str, Any] = {
        "shape": shape,
        "model": str(model),
        "checkpoint_bytes": sum(f.stat().st_size for f in files),
        "parameters": sum(math.prod(s) for _, s in tensor_specs(SHAPES[shape])),
        "probe_tokens": len(json.loads(ids_file.read_text())),
        "reference_estimate_bytes": need,
        "available_bytes": available,
        "reference_run": ref_ok,
        "runs": runs,
        "loadavg_start_end": loads,
    }
    summary: dict[str, Any] = {}
    for side in sides:
        warm_runs = [x for x in runs[side] if x["cache"] == "warm"]
        summary[side] = {
            "wall_s_median": median([x["wall_s"] for x in warm_runs]),
            "max_rss_bytes_median": median([x["max_rss_bytes"] for x in warm_runs]),
            "peak_anon_bytes_median": median([x["peak_anon_bytes"] for x in warm_runs]),
            "cold_wall_s": next((x["wall_s"] for x in runs[side] if x["cache"] == "cold"), None),
        }
    if ref_ok:
        r = summary["reference"]
        for side in ("pawprint", STREAM):
            p = summary[side]
            p["speedup_vs_reference"] = r["wall_s_median"] / p["wall_s_median"]
            p["memory_ratio_vs_reference"] = r["max_rss_bytes_median"] / p["max_rss_bytes_median"]
        summary["reference_vs_pawprint_term_cosines"] = agreement(inv_file, ref_file)
    summary["stream_vs_pawprint_identical_bytes"] = inv_file.read_bytes() == stream_file.read_bytes()
    summary["stream_vs_pawprint_term_cosines"] = agreement_files(inv_file, stream_file)
    doc["summary"] = summary
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["1.1b", "7b", "tiny"], default="1.1b")
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default out/perf/llama-SHAPE, generated)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache run of each side")
    ap.add_argument("--out", type=Path, default=None, help="JSON result (default docs/results/perf_owner_SHAPE.json)")
    args = ap.parse_args(argv)
    model = args.model or OUT / f"llama-{args.shape}"
    t0 = time.perf_counter()
    m = machine()
    print(machine_line(m))
    doc = run(args.shape, model, args.repeats, not args.no_cold)
    doc["machine"] = m
    doc["command"] = f"python -m benchmarks.perf.owner_vs_reference --shape {args.shape} --repeats {args.repeats}" + (
        " --no-cold" if args.no_cold else "")
    doc["seconds"] = time.perf_counter() - t0
    write_json(args.out or RESULTS / f"perf_owner_{args.shape}.json", doc)
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
