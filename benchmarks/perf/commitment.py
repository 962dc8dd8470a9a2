"""Weight-commitment hashing against ``sha256sum`` of the same files, in the same run, and the cache.

    python -m benchmarks.perf.commitment --shape 1.1b

Over the checkpoint's safetensors files (every byte of every tensor is hashed by both; the commitment skips
only the few-KB headers): ``sha256sum F1 F2 ...`` (GNU coreutils, one process, files in turn), ``sha256sum``
with one process per file in parallel (``xargs -P``), and ``owner._fingerprint.commit_checkpoint`` with the
cache off, on one thread and on every core. Warm page cache, runs interleaved, median of ``--repeats``; then
one cold run of each (files dropped from the page cache first), and a first and second commitment through the
cache (a fresh cache file under ``out/perf/``): the second only stats the files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.perf._common import OUT, RESULTS, evict, loadavg, machine, machine_line, median, warm, write_json
from benchmarks.perf.gen_checkpoint import SHAPES, generate


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(shape: str, model: Path, repeats: int) -> dict[str, Any]:
    from owner import open_model
    from owner._fingerprint import CommitmentCache, commit_checkpoint

    generate(model, SHAPES[shape])
    files = sorted(model.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    cores = os.cpu_count() or 1
    opened = open_model(model)
    roots: set[bytes] = set()

    def paw(workers: int) -> Callable[[], object]:
        def go() -> None:
            roots.add(commit_checkpoint(opened, workers=workers, cache=CommitmentCache(None)).root)
        return go

    def sha(parallel: bool) -> Callable[[], object]:
        cmd = (["xargs", "-P", str(cores), "-n", "1", "sha256sum"] if parallel else ["sha256sum", *map(str, files)])
        stdin = "\n".join(map(str, files)) if parallel else None
        return lambda: subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True)

    methods: dict[str, Callable[[], object]] = {
        "sha256sum": sha(False),
        f"sha256sum x{cores} processes": sha(True),
        "pawprint 1 thread": paw(1),
        f"pawprint {cores} threads": paw(cores),
    }
    warm(files)
    times: dict[str, list[float]] = {k: [] for k in methods}
    loads = [loadavg()]
    for r in range(repeats):
        order = list(methods) if r % 2 == 0 else list(methods)[::-1]
        for k in order:
            times[k].append(timed(methods[k]))
            print(f"  {k:28s} {times[k][-1]:6.2f} s  ({size / times[k][-1] / 1e9:.2f} GB/s)  load {loadavg()[0]:.2f}",
                  flush=True)
    loads.append(loadavg())
    cold: dict[str, float] = {}
    for k in ("sha256sum", f"pawprint {cores} threads"):
        evict(files)
        cold[k] = timed(methods[k])
        print(f"  {k:28s} {cold[k]:6.2f} s cold ({size / cold[k] / 1e9:.2f} GB/s)", flush=True)
    loads.append(loadavg())
    cache_file = OUT / "commitment-cache" / "commitments.json"
    cache_file.unlink(missing_ok=True)
    first = timed(lambda: commit_checkpoint(opened, workers=cores, cache=CommitmentCache(cache_file)))
    second_cache = CommitmentCache(cache_file)
    second = timed(lambda: roots.add(commit_checkpoint(opened, workers=cores, cache=second_cache).root))
    print(f"  cache: first {first:.2f} s, second {second * 1e3:.1f} ms ({second_cache.hits} files from the cache)")
    if len(roots) != 1:
        raise SystemExit("the commitment differs between runs")
    med = {k: median(v) for k, v in times.items()}
    return {
        "shape": shape,
        "files": [f.name for f in files],
        "bytes": size,
        "cores": cores,
        "times_s": times,
        "median_s": med,
        "GBps": {k: size / v / 1e9 for k, v in med.items()},
        "cold_s": cold,
        "cold_GBps": {k: size / v / 1e9 for k, v in cold.items()},
        "cache_first_s": first,
        "cache_second_s": second,
        "cache_hits": second_cache.hits,
        "speedup_vs_sha256sum": med["sha256sum"] / med[f"pawprint {cores} threads"],
        "speedup_vs_sha256sum_parallel": med[f"sha256sum x{cores} processes"] / med[f"pawprint {cores} threads"],
        "thread_scaling": med["pawprint 1 thread"] / med[f"pawprint {cores} threads"],
        "root": roots.pop().hex(),
        "loadavg": loads,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["1.1b", "7b", "tiny"], default="1.1b")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    m = machine()
    print(machine_line(m))
    doc = run(args.shape, args.model or OUT / f"llama-{args.shape}", args.repeats)
    doc["machine"] = m
    doc["command"] = " ".join(["python -m benchmarks.perf.commitment", *sys.argv[1:]])
    doc["seconds"] = time.perf_counter() - t0
    write_json(args.out or RESULTS / f"perf_commitment_{args.shape}.json", doc)
    print(json.dumps({k: v for k, v in doc.items() if k not in ("machine", "times_s")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
