"""The floor under the owner agent: what reading the bytes it needs and doing the arithmetic it does must cost on
this machine, the agent's time as a multiple of it, where the time goes (profile), and what the shipped arithmetic
saves against the previous version's (before/after).

    python -m benchmarks.perf.floor --shape 1.1b

1. **Profile** ``compute_invariants`` (default layers, 4096 probe tokens) in this process under
   ``torch.profiler`` (every op with its shapes, dtypes and FLOPs) and ``cProfile`` (Python-level), counting the
   bytes it reads from the checkpoint.
2. **Read bandwidth** for exactly those byte ranges: cold (the checkpoint dropped from the page cache with
   ``posix_fadvise(DONTNEED)``, which touches only these files) and warm; raw ``pread`` and with the conversion
   to fp32 the agent does.
3. **Throughput** of each matrix product the profile shows, alone at its shape and dtype with the thread count
   the agent uses (best of 3), and of ``eigh`` at its size (on all threads and on one: the better counts).
4. **Floor**: compute = sum over products of FLOPs / the best fp32 (resp. fp64) throughput measured, plus ``eigh``
   at its measured time (LAPACK: no FLOP rate applies); I/O = bytes / bandwidth. The agent reads a layer, then
   computes it (with the next layer prefetched), so the floor is ``max(io, compute)`` when reads overlap the
   arithmetic and ``io + compute`` when they do not; both are reported. Elementwise work (conversions, norm
   folding, the gate product) is memory-bound and left out of the floor, so it shows in the ratio.
5. **Agent time**: ``compute_invariants`` wall time, median of ``--repeats`` warm runs in this process.
6. **Before/after**: one layer's terms the previous version's way (``benchmarks.perf._before``: fp32 layer, GQA
   summed on the products, whole FFN intermediates, fp64 whitening application; the default OpenMP wait policy,
   as that version had) and the shipped way (``owner._invariants.layer_terms`` on the layer in its stored dtype),
   with the default policy and with ``OMP_WAIT_POLICY=PASSIVE`` (what importing ``owner`` first sets), each in a
   fresh process (time, peak memory above the process's start) and their agreement with the previous way
   (cosine, largest relative error).

The machine may be shared: ``os.getloadavg()`` is recorded before and after every part.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from benchmarks.perf.gen_checkpoint import SHAPES, generate


# ----------------------------------------------------------------------------------------------- profile
def _count_reads() -> tuple[list[tuple[Path, int, int]], Callable[[], None]]:
    """Record every (file, offset, bytes) the safetensors source reads; returns the log and an undo."""
    from owner._source import SafetensorsSource

    log: list[tuple[Path, int, int]] = []
    original = SafetensorsSource._pread

    def counting(self: SafetensorsSource, file: Path, into: memoryview, offset: int) -> None:
        log.append((file, offset, len(into)))
        original(self, file, into, offset)

    SafetensorsSource._pread = counting  # type: ignore[method-assign]

    def undo() -> None:
        SafetensorsSource._pread = original  # type: ignore[method-assign]

    return log, undo


def _addmm_flops(name: str, shapes: list[list[int]] | None) -> float:
    """FLOPs of an ``addmm``/``addmm_`` call (the profiler counts none for the in-place form, which the FFN
    accumulation uses), from its operands ``(c, a (m x k), b (k x n))``."""
    if name not in ("aten::addmm", "aten::addmm_") or not shapes or len(shapes) < 3:
        return 0.0
    a, b = shapes[1], shapes[2]
    if len(a) != 2 or len(b) != 2:
        return 0.0
    return 2.0 * a[0] * a[1] * b[1]


def profile_agent(model: Path) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from owner import compute_invariants

    log, undo = _count_reads()
    prof_py = cProfile.Profile()
    t0 = time.perf_counter()
    try:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
            prof_py.enable()
            compute_invariants(model)
            prof_py.disable()
    finally:
        undo()
    wall = time.perf_counter() - t0
    ops: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: {"calls": 0, "self_s": 0.0, "flops": 0.0})
    for e in prof.events():
        if e.name.startswith("aten::") or e.name.startswith("ProfilerStep"):
            key = (e.name, json.dumps(e.input_shapes), json.dumps([str(t) for t in (e.input_dtypes or [])]))
            ops[key]["calls"] += 1
            ops[key]["self_s"] += e.self_cpu_time_total / 1e6
            ops[key]["flops"] += float(e.flops or 0) or _addmm_flops(e.name, e.input_shapes)
    table = sorted(
        ({"op": k[0], "shapes": json.loads(k[1]), "dtypes": json.loads(k[2]), **v} for k, v in ops.items()),
        key=lambda r: -r["self_s"],
    )
    s = io.StringIO()
    pstats.Stats(prof_py, stream=s).sort_stats("cumulative").print_stats(25)
    ranges = sorted(set(log))
    return {
        "wall_s_profiled": wall,
        "ops": [r for r in table if r["self_s"] >= 0.005],
        "python_profile": s.getvalue(),
        "reads": len(log),
        "bytes_read": sum(n for _, _, n in log),
        "ranges": [(str(f), o, n) for f, o, n in ranges],
    }


# ---------------------------------------------------------------------------------------------- bandwidth
def read_ranges(ranges: list[tuple[str, int, int]]) -> float:
    """Seconds to ``pread`` every range into one reused buffer."""
    import os

    biggest = max(n for _, _, n in ranges)
    buf = memoryview(bytearray(biggest))
    fds: dict[str, int] = {}
    t0 = time.perf_counter()
    for f, off, n in ranges:
        fd = fds.get(f)
        if fd is None:
            fd = fds[f] = os.open(f, os.O_RDONLY)
        done = 0
        while done < n:
            done += os.preadv(fd, [buf[done:n]], off + done)
    dt = time.perf_counter() - t0
    for fd in fds.values():
        os.close(fd)
    return dt


def bandwidth(model: Path, ranges: list[tuple[str, int, int]], files: list[Path]) -> dict[str, Any]:
    from owner import compute_invariants  # noqa: F401  (warm the import before timing)
    from owner._invariants import resolve_layers
    from owner._model import open_model

    nbytes = sum(n for _, _, n in ranges)
    out: dict[str, Any] = {"bytes": nbytes}
    evict(files)
    out["cold_pread_s"] = read_ranges(ranges)
    out["warm_pread_s"] = min(read_ranges(ranges) for _ in range(3))
    m = open_model(model)
    names = m.adapter.tensor_names(resolve_layers(None, m.adapter.info.n_layers))[1:]  # layers (rows: see ranges)

    def convert() -> float:
        t0 = time.perf_counter()
        for n in names:
            m.source.tensor(n)
        return time.perf_counter() - t0

    evict(files)
    out["cold_read_convert_layers_s"] = convert()
    out["warm_read_convert_layers_s"] = min(convert() for _ in range(3))
    layer_bytes = sum(m.source.meta(n).shape.__len__() and _nbytes(m, n) for n in names)
    out["layer_bytes"] = layer_bytes
    for k in ("cold", "warm"):
        out[f"{k}_pread_GBps"] = nbytes / out[f"{k}_pread_s"] / 1e9
        out[f"{k}_read_convert_GBps"] = layer_bytes / out[f"{k}_read_convert_layers_s"] / 1e9
    return out


def _nbytes(m: Any, name: str) -> int:
    meta = m.source.meta(name)
    n = 1
    for s in meta.shape:
        n *= s
    return n * {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}.get(meta.dtype, 4)


# --------------------------------------------------------------------------------------------- throughput
_DTYPES = {"float": torch.float32, "double": torch.float64, "c10::BFloat16": torch.bfloat16}


def op_throughput(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each product (``aten::mm``/``addmm``) and ``eigh`` of the profile, alone at its shape (best of 3)."""
    out = []
    seen = set()
    for r in ops:
        key = (r["op"], json.dumps(r["shapes"]), json.dumps(r["dtypes"]))
        if key in seen:
            continue
        seen.add(key)
        dtype = _DTYPES.get(r["dtypes"][0] if r["dtypes"] else "")
        if dtype is None:
            continue
        if r["op"] == "aten::mm":
            (n, k), (_, m) = r["shapes"][0], r["shapes"][1]
            fn: Callable[[], object] = functools.partial(torch.mm, torch.randn(n, k, dtype=dtype),
                                                         torch.randn(k, m, dtype=dtype))
            flops = 2.0 * n * k * m
        elif r["op"] == "aten::_linalg_eigh":
            (n, _) = r["shapes"][0]
            g = torch.randn(n, n, dtype=dtype)
            fn = functools.partial(torch.linalg.eigh, g @ g.T)
            flops = 0.0
        else:
            continue
        fn()
        best = min(_timed(fn) for _ in range(3))
        rec = {"op": r["op"], "shapes": r["shapes"], "dtype": str(dtype).removeprefix("torch."),
               "calls_in_agent": r["calls"], "agent_self_s": r["self_s"], "alone_s": best,
               "flops": flops, "GFps": flops / best / 1e9 if flops else None}
        if r["op"] == "aten::_linalg_eigh":
            # LAPACK's eigh meets a barrier per step: with other work on the cores, one thread can beat all of
            # them, so the floor takes the better of the two (both recorded).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                rec["alone_1_thread_s"] = min(_timed(fn) for _ in range(3))
            finally:
                torch.set_num_threads(threads)
            rec["alone_s"] = min(best, rec["alone_1_thread_s"])
            rec["alone_all_threads_s"] = best
        out.append(rec)
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- before/after
VARIANTS = ("before", "shipped-default-policy", "shipped")


def child(model: Path, variant: str, out: Path) -> int:
    """One layer's terms the ``variant`` way, timed, with this process's peak memory above its start."""
    import resource

    from benchmarks.perf import _before
    from owner._agent import whitened_rows
    from owner._invariants import layer_terms
    from owner._model import open_model
    from owner._probes import build_probe_set, load_vocabulary, map_probes

    def hwm() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    m = open_model(model)
    vocab = load_vocabulary(m.root)
    ids = list(map_probes(build_probe_set(vocab), vocab).present_ids())
    info = m.adapter.info
    layer = info.n_layers - 1
    times = []
    with torch.inference_mode():
        x = m.adapter.embedding_rows(ids)
        er = _before.whiten(x) if variant == "before" else whitened_rows(x, info, "pawprint")
        assert er is not None
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: measure from here
        base = hwm()
        for _ in range(2):
            t0 = time.perf_counter()
            if variant == "before":
                terms = _before.layer_terms(x, m.adapter.layer(layer), info, er)
            else:
                terms = layer_terms(x, m.adapter.layer(layer, stored=True), info, whiten_rows=er)
            times.append(time.perf_counter() - t0)
            peak = hwm()
            result = np.stack([t.numpy() for t in terms.values()])
            del terms
    np.save(out, result)
    print(json.dumps({"variant": variant, "times_s": times, "peak_above_start_bytes": peak - base}))
    return 0


def before_after(model: Path, rounds: int) -> dict[str, Any]:
    variants = VARIANTS
    res: dict[str, Any] = {v: {"times_s": [], "peak_above_start_bytes": [], "loadavg": []} for v in variants}
    for r in range(rounds):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            path = OUT / f"proto-{variant}.npy"
            # this module imports torch before owner, so the child's policy is the environment's
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if variant == "shipped":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            m = run_measured(python_cmd("-m", "benchmarks.perf.floor", "--child", variant,
                                        "--model", str(model), "--child-out", str(path)), env=env)
            if m.returncode:
                raise SystemExit(f"before/after {variant} failed: {m.stderr[-2000:]}")
            out = json.loads(m.stdout.strip().splitlines()[-1])
            res[variant]["times_s"] += out["times_s"]
            res[variant]["peak_above_start_bytes"].append(out["peak_above_start_bytes"])
            res[variant]["loadavg"].append(loadavg()[0])
            print(f"  {variant:16s} {', '.join(f'{t:.2f}' for t in out['times_s'])} s  "
                  f"peak +{out['peak_above_start_bytes'] / 2**20:.0f} MiB  load {loadavg()[0]:.2f}", flush=True)
    cur = np.load(OUT / "proto-before.npy")
    for variant in variants:
        res[variant]["median_s"] = median(res[variant]["times_s"])
        if variant == "before":
            continue
        other = np.load(OUT / f"proto-{variant}.npy")
        res[variant]["cosine"] = [_cos(cur[i], other[i]) for i in range(3)]
        res[variant]["max_rel_err"] = [float(np.abs(cur[i] - other[i]).max() / np.abs(cur[i]).max()) for i in range(3)]
        res[variant]["speedup"] = res["before"]["median_s"] / res[variant]["median_s"]
    return res


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    from verifier import term_cosine

    return term_cosine(a, b)


# ------------------------------------------------------------------------------------------------- floor
def _floor(prof: dict[str, Any], thr: list[dict[str, Any]], bw: dict[str, Any], agent: float) -> dict[str, Any]:
    """The floor from one round's throughput (see the module docstring) and the agent's time against it."""
    peak = {dt: max((r["GFps"] for r in thr if r["dtype"] == dt and r["GFps"]), default=None)
            for dt in ("float32", "float64")}
    compute = 0.0
    for r in prof["ops"]:
        if r["op"] in ("aten::mm", "aten::addmm", "aten::addmm_") and r["flops"]:
            dt = str(_DTYPES.get(r["dtypes"][0], torch.float32)).removeprefix("torch.")
            compute += r["flops"] / ((peak.get(dt) or 1.0) * 1e9)
    eigh = sum(t["alone_s"] * t["calls_in_agent"] for t in thr if t["op"] == "aten::_linalg_eigh")
    eigh_all = sum(t.get("alone_all_threads_s", 0.0) * t["calls_in_agent"] for t in thr)
    eigh_one = sum(t.get("alone_1_thread_s", 0.0) * t["calls_in_agent"] for t in thr)
    compute += eigh
    at_shapes = sum(t["alone_s"] * t["calls_in_agent"] for t in thr)
    io_cold = bw["bytes"] / (bw["cold_pread_GBps"] * 1e9)
    io_warm = bw["bytes"] / (bw["warm_pread_GBps"] * 1e9)
    return {
        "peak_GFps": peak, "compute_s": compute, "eigh_s": eigh, "eigh_all_threads_s": eigh_all,
        "eigh_1_thread_s": eigh_one, "compute_at_agent_shapes_s": at_shapes, "io_cold_s": io_cold,
        "io_warm_s": io_warm, "floor_overlap_warm_s": max(compute, io_warm), "floor_serial_warm_s": compute + io_warm,
        "floor_overlap_cold_s": max(compute, io_cold), "floor_serial_cold_s": compute + io_cold, "agent_s": agent,
        "agent_over_floor_overlap": agent / max(compute, io_warm),
        "agent_over_floor_serial": agent / (compute + io_warm),
        "agent_over_shapes_sum": agent / at_shapes if at_shapes else None,
    }


# ------------------------------------------------------------------------------------------------- main
def run(shape: str, model: Path, repeats: int, with_prototype: bool) -> dict[str, Any]:
    from owner import compute_invariants

    generate(model, SHAPES[shape])
    files = sorted(model.glob("*.safetensors"))
    warm(files)
    doc: dict[str, Any] = {"shape": shape, "threads": torch.get_num_threads(), "loadavg": {"start": loadavg()}}
    print("profile ...", flush=True)
    prof = profile_agent(model)
    doc["profile"] = prof
    doc["loadavg"]["after_profile"] = loadavg()
    print("bandwidth ...", flush=True)
    doc["bandwidth"] = bandwidth(model, prof["ranges"], files)
    doc["loadavg"]["after_bandwidth"] = loadavg()
    # The load on a shared machine moves within seconds: the agent and its ops alone are timed in alternating
    # rounds, and each round's agent time is set against that round's floor.
    rounds: list[dict[str, Any]] = []
    for r in range(repeats):
        print(f"round {r + 1}/{repeats}: throughput, agent ...", flush=True)
        thr = op_throughput(prof["ops"])
        warm(files)
        t0 = time.perf_counter()
        compute_invariants(model)
        agent = time.perf_counter() - t0
        rounds.append({"throughput": thr, "agent_s": agent, "loadavg": loadavg(), **_floor(prof, thr, doc["bandwidth"],
                                                                                         agent)})
        print(f"  agent {agent:.1f} s, floor {rounds[-1]['floor_overlap_warm_s']:.1f} s "
              f"(x{rounds[-1]['agent_over_floor_overlap']:.2f}), load {loadavg()[0]:.2f}", flush=True)
    doc["rounds"] = rounds
    doc["agent_wall_s"] = [x["agent_s"] for x in rounds]
    doc["throughput"] = rounds[-1]["throughput"]
    keys = [k for k in rounds[0] if k not in ("throughput", "loadavg", "peak_GFps")]
    doc["floor"] = {k: median([x[k] for x in rounds]) for k in keys if rounds[0][k] is not None}
    doc["floor"]["peak_GFps"] = {dt: median([x["peak_GFps"][dt] or 0.0 for x in rounds])
                                 for dt in ("float32", "float64")}
    doc["floor"]["agent_over_floor_rounds"] = [x["agent_over_floor_overlap"] for x in rounds]
    doc["loadavg"]["after_rounds"] = loadavg()
    if with_prototype:
        print("before/after ...", flush=True)
        doc["before_after"] = before_after(model, max(1, repeats - 1))
        doc["loadavg"]["after_before_after"] = loadavg()
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["1.1b", "7b", "tiny"], default="1.1b")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-before-after", dest="no_prototype", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = args.model or OUT / f"llama-{args.shape}"
    if args.child:
        return child(model, args.child, args.child_out)
    t0 = time.perf_counter()
    m = machine()
    print(machine_line(m))
    doc = run(args.shape, model, args.repeats, not args.no_prototype)
    doc["machine"] = m
    doc["command"] = " ".join(["python -m benchmarks.perf.floor", *sys.argv[1:]])
    doc["seconds"] = time.perf_counter() - t0
    write_json(args.out or RESULTS / f"perf_floor_{args.shape}.json", doc)
    f = doc["floor"]
    print(json.dumps(f, indent=1))
    print(doc["profile"]["python_profile"][:3000])
    if "before_after" in doc:
        print(json.dumps(doc["before_after"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
