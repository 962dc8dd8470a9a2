"""Write docs/results/perf.md from the benchmarks' JSON results: ``python -m benchmarks.perf.report``.

Numbers come from ``docs/results/perf_*.json`` (each records its command, machine and load); the prose that
explains them is here, next to the numbers it cites, so a rerun regenerates the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.perf._common import RESULTS, machine_line

MIB = 1 << 20


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x / MIB:,.0f} MiB"


def _s(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else f"{x:{spec}} s"


def _load_range(doc: dict[str, Any]) -> str:
    vals: list[float] = []

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, k)
        elif isinstance(v, list):
            if key.startswith("load") and v and all(isinstance(x, int | float) for x in v):
                vals.append(float(v[0]))
            else:
                for x in v:
                    walk(x, key)
        elif key.startswith("load") and isinstance(v, int | float):
            vals.append(float(v))

    walk(doc)
    return f"{min(vals):.1f}-{max(vals):.1f}" if vals else "n/a"


def owner_section(d11: dict[str, Any] | None, d7: dict[str, Any] | None) -> list[str]:
    out = ["## 1. The owner agent against the published pipeline", ""]
    if d11 is None:
        return [*out, "(not run)", ""]
    out += [
        f"Command: `{d11['command']}`" + (f" and `{d7['command']}`" if d7 else "") + ". Each side is a separate "
        "process measured from outside: wall time, peak RSS (the process's `VmHWM`, sampled every 20 ms; not "
        "`ru_maxrss`, which Linux seeds with the parent's RSS at fork), and the sampled peaks of its anonymous and "
        "file-backed memory. Warm page cache, runs interleaved, median of the warm "
        "runs; one cold run each (checkpoint dropped from the page cache with `posix_fadvise(DONTNEED)`). "
        f"1-minute load average during the runs: {_load_range(d11)}"
        + (f" (7B: {_load_range(d7)})" if d7 else "") + " on 2 cores.",
        "",
        "- **reference**: `benchmarks/perf/_reference.py`, HuRef's pipeline (`AutoModelForCausalLM.from_pretrained` "
        "in fp32, `state_dict()`, probe rows, the last two layers' products), the products computed by the same "
        "`owner._invariants.layer_terms` as the agent, so both do identical arithmetic and the outputs agree;",
        "- **pawprint**: `python -m pawprint owner invariants MODEL -o FILE` as it is in this tree;",
        "- **write_invariants**: `owner.write_invariants(MODEL, FILE)` from a bare `python -c` script: the same "
        "agent writing each term to the file as soon as it is computed and holding none (the command line calls "
        "it too, so the two rows differ by the command line's imports).",
        "",
        "| checkpoint | side | wall, warm (median) | wall, cold | peak RSS | peak anon | vs reference: time | "
        "vs reference: memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in (d11, d7):
        if d is None:
            continue
        summ = d["summary"]
        label = f"{d['shape']} ({d['checkpoint_bytes'] / 1e9:.1f} GB bf16, {d['parameters'] / 1e9:.2f} B params)"
        if not d["reference_run"]:
            out.append(f"| {label} | reference | refused: needs about {d['reference_estimate_bytes'] / 2**30:.0f} "
                       f"GiB (fp32 parameters x 1.5), {d['available_bytes'] / 2**30:.0f} GiB available | | | | | |")
        for side in ("reference", "pawprint", "write_invariants"):
            s = summ.get(side)
            if s is None:
                continue
            tr = f"{s['speedup_vs_reference']:.2f}x faster" if "speedup_vs_reference" in s else ""
            mr = f"{s['memory_ratio_vs_reference']:.1f}x smaller" if "memory_ratio_vs_reference" in s else ""
            out.append(f"| {label} | {side} | {_s(s['wall_s_median'])} | {_s(s['cold_wall_s'])} | "
                       f"{_mib(s['max_rss_bytes_median'])} | {_mib(s['peak_anon_bytes_median'])} | {tr} | {mr} |")
    cos = d11["summary"].get("reference_vs_pawprint_term_cosines")
    out += [""]
    if cos:
        out.append(f"Agreement (1.1B, cosine of each of the 6 terms): reference vs pawprint min {min(cos):.12f}.")
    for d in (d11, d7):
        if d and "stream_vs_pawprint_identical_bytes" in d["summary"]:
            same = d["summary"]["stream_vs_pawprint_identical_bytes"]
            out.append(f"{d['shape']}: the file `write_invariants` wrote and the command line's are "
                       + ("identical, byte for byte." if same else "**not** identical (see the JSON)."))
    ref_runs = d11["runs"].get("reference", [])
    if ref_runs:
        ph = [r["phases"] for r in ref_runs if r["cache"] == "warm"]
        out += ["", "The reference's own phases (warm runs): loading " + ", ".join(f"{p['load_s']:.1f}" for p in ph)
                + " s; products " + ", ".join(f"{p['terms_s']:.1f}" for p in ph) + " s."]
    out.append("")
    return out


def floor_section(d: dict[str, Any] | None) -> list[str]:
    out = ["## 2. The floor, the profile and the arithmetic", ""]
    if d is None:
        return [*out, "(not run)", ""]
    f, bw = d["floor"], d["bandwidth"]
    out += [
        f"Command: `{d['command']}` ({d['threads']} torch threads, load {_load_range(d)}).",
        "",
        f"- Bytes the agent reads for the default terms (probe rows of the embedding in runs of nearby rows, and "
        f"the last two layers): **{bw['bytes'] / MIB:.0f} MiB** ({d['profile']['reads']} reads). `pread` of exactly "
        f"those ranges: cold {bw['cold_pread_GBps']:.2f} GB/s, warm {bw['warm_pread_GBps']:.2f} GB/s; read and "
        f"convert bf16 to fp32 (the two layers, {bw['layer_bytes'] / MIB:.0f} MiB): cold "
        f"{bw['cold_read_convert_GBps']:.2f} GB/s, warm {bw['warm_read_convert_GBps']:.2f} GB/s.",
        f"- Best measured throughput at the agent's shapes (median over rounds): fp32 "
        f"{f['peak_GFps']['float32']:.0f} GFLOP/s, fp64 {(f['peak_GFps'].get('float64') or 0):.0f} GFLOP/s; `eigh` "
        f"({d['threads']} threads or 1, the better) {f['eigh_s']:.1f} s for the agent's calls.",
        f"- Floor: compute {f['compute_s']:.1f} s (products at peak throughput + `eigh`), I/O {f['io_warm_s']:.2f} s "
        f"warm / {f['io_cold_s']:.2f} s cold. Reading is 1-2 orders of magnitude below the arithmetic, so the floor "
        f"is the arithmetic whether or not the reads overlap it: max(io, compute) = {f['floor_overlap_warm_s']:.1f} s,"
        f" io + compute = {f['floor_serial_cold_s']:.1f} s cold.",
        f"- Agent (`compute_invariants`, in-process), in rounds alternating with the throughput measurements so "
        f"that each is set against a floor measured under the same load: "
        f"{', '.join(f'{x:.1f}' for x in d['agent_wall_s'])} s, i.e. "
        f"{', '.join(f'{x:.2f}' for x in f['agent_over_floor_rounds'])}x that round's floor (median "
        f"**{f['agent_over_floor_overlap']:.2f}x**, best {min(f['agent_over_floor_rounds']):.2f}x). The command "
        "line adds about 3 s of imports and 1-2 s writing the 384 MiB invariants file.",
        f"- `eigh` alone for the agent's calls, median over the rounds: {f['eigh_all_threads_s']:.1f} s on "
        f"{d['threads']} threads, {f['eigh_1_thread_s']:.1f} s on one.",
        "",
        "Profile (torch profiler, self time of the agent's ops; fp32 unless said):",
        "",
        "| op | shapes | dtype | calls | self time | GFLOP |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["profile"]["ops"][:12]:
        dt = (r["dtypes"] or ["-"])[0]
        out.append(f"| {r['op']} | {r['shapes']} | {dt} | {r['calls']} | {r['self_s']:.2f} s | "
                   f"{r['flops'] / 1e9:.0f} |")
    out.append("")
    p = d.get("before_after")
    if p:
        out += [
            "One layer (the last of 1.1B, n = 4096), each variant in a fresh process, variants interleaved over "
            "rounds (2 runs per process): every time, the median, peak memory above the process's start, and "
            "agreement with the previous version. `before`: the previous version's arithmetic "
            "(`benchmarks/perf/_before.py`: the layer in fp32, GQA summed on the products, whole `n x h` FFN "
            "intermediates, whitening applied in fp64) with the default OpenMP wait policy; `shipped`: "
            "`owner._invariants.layer_terms` on the layer in its stored dtype (bf16) with `OMP_WAIT_POLICY=PASSIVE`, "
            "as importing `owner` first sets it; `shipped-default-policy`: the same arithmetic with the default "
            "policy.",
            "",
            "| variant | times | median | peak above start | min cosine | max rel. error | speed-up (medians) |",
            "|---|---|---|---|---|---|---|",
        ]
        for k in ("before", "shipped-default-policy", "shipped"):
            v = p[k]
            cosv = f"{min(v['cosine']):.12f}" if "cosine" in v else "(itself)"
            err = f"{max(v['max_rel_err']):.1e}" if "max_rel_err" in v else ""
            sp = f"{v['speedup']:.2f}x" if "speedup" in v else ""
            peaks = v["peak_above_start_bytes"]
            peak = max(peaks) if isinstance(peaks, list) else peaks
            out.append(f"| {k} | {', '.join(f'{t:.1f}' for t in v['times_s'])} s | {v.get('median_s', 0):.2f} s | "
                       f"{_mib(peak)} | {cosv} | {err} | {sp} |")
        out.append("")
    loaded = _load("perf_floor_1.1b_loaded.json")
    if loaded and "prototype" in loaded and "skipped" not in loaded["prototype"]:
        lf, lp = loaded["floor"], loaded["prototype"]
        out += [
            f"**Under load** (an earlier run, before these changes shipped: `current` was the previous version, "
            f"`lean` its prototype, with one-thread `eigh`, now shipped with `OMP_WAIT_POLICY=PASSIVE` instead). "
            f"The same command, while other jobs came and went (load "
            f"{_load_range(loaded)}): the agent took {', '.join(f'{x:.1f}' for x in loaded['agent_wall_s'])} s, "
            f"{', '.join(f'{x:.2f}' for x in lf['agent_over_floor_rounds'])}x the floor measured in the same "
            f"round; the one-layer variants, interleaved: current "
            f"{', '.join(f'{t:.1f}' for t in lp['current']['times_s'])} s, `OMP_WAIT_POLICY=PASSIVE` "
            f"{', '.join(f'{t:.1f}' for t in lp['current-passive']['times_s'])} s, lean (one-thread `eigh`) "
            f"{', '.join(f'{t:.1f}' for t in lp['lean']['times_s'])} s. The products are the same in all three; "
            "what differs is whether `eigh`'s threads spin at barriers while a core is taken.",
            "",
        ]
    return out


def commitment_section(d: dict[str, Any] | None) -> list[str]:
    out = ["## 3. Weight commitment", ""]
    if d is None:
        return [*out, "(not run)", ""]
    out += [
        f"Command: `{d['command']}` over {len(d['files'])} files, {d['bytes'] / 1e9:.2f} GB (load {_load_range(d)}).",
        "",
        "| method | median | GB/s | cold |",
        "|---|---|---|---|",
    ]
    for k, v in d["median_s"].items():
        cold = d["cold_s"].get(k)
        out.append(f"| {k} | {v:.2f} s | {d['GBps'][k]:.2f} | {_s(cold, '.2f')} |")
    out += [
        "",
        f"pawprint on {d['cores']} threads is **{d['speedup_vs_sha256sum']:.1f}x `sha256sum`** and "
        f"{d['speedup_vs_sha256sum_parallel']:.1f}x `sha256sum` run once per file in parallel (at 0.3 GB/s, "
        "GNU coreutils 9.1 here evidently does not use the CPU's SHA instructions; OpenSSL under `hashlib` does); "
        f"threads scale "
        f"{d['thread_scaling']:.2f}x over one thread on {d['cores']} cores. "
        f"With the cache, a first commitment took {d['cache_first_s']:.2f} s and the second "
        f"**{d['cache_second_s'] * 1e3:.1f} ms** ({d['cache_hits']} files from the cache, nothing read).",
        "",
    ]
    return out


def transfer_section(d: dict[str, Any] | None) -> list[str]:
    out = ["## 4. Transfer to the verifier", ""]
    if d is None:
        return [*out, "(not run)", ""]
    e, b, ip = d["empty_registry"], d["one_base"], d["in_process_empty"]
    out += [
        f"Command: `{d['command']}` (load {_load_range(d)}). Payload {e['payload_bytes'] / MIB:.0f} MiB "
        f"({len(d['layers'])} layers x 3 terms, n = {d['n']}, fp32), 1 MiB chunks, TLS on 127.0.0.1, verifier in its "
        "own process.",
        "",
        "| registry | Submit wall (median) | MB/s | verifier RSS after start-up | verifier peak | peak above "
        "pre-submit RSS |",
        "|---|---|---|---|---|---|",
        f"| empty | {_s(e['wall_s_median'], '.2f')} | {e['MBps_median']:.0f} | {_mib(e['server_started_rss'])} | "
        f"{_mib(e['server_peak_median'])} | {_mib(e['server_peak_over_before_median'])} |",
        f"| one base, same probe set | {_s(b['wall_s_median'], '.2f')} | {b['MBps_median']:.0f} | "
        f"{_mib(b['server_started_rss'])} | {_mib(b['server_peak_median'])} | "
        f"{_mib(b['server_peak_over_before_median'])} |",
        "",
        f"The same submission given to `VerifierService.submit` in-process (no gRPC, no TLS): "
        f"{_s(ip['wall_s_median'], '.2f')}: so of the {e['wall_s_median']:.1f} s, about "
        f"{max(0.0, e['wall_s_median'] - ip['wall_s_median']):.1f} s is gRPC + TLS + the second process "
        f"({e['payload_bytes'] / max(1e-9, e['wall_s_median'] - ip['wall_s_median']) / 1e6:.0f} MB/s for the "
        "transport alone) and the rest is the verifier's own work (profile in the JSON: the picture encoder, the "
        "receiver's hashing and copies, the comparison).",
        "",
    ]
    return out


def registry_section(d: dict[str, Any] | None) -> list[str]:
    out = ["## 5. Registry scale", ""]
    if d is None:
        return [*out, "(not run)", ""]
    out += [
        f"Command: `{d['command']}` (load {_load_range(d)}); sketch `{d['sketch']}`.",
        "",
        f"- Index: {d['bases']:,} bases, **{d['index_bytes'] / MIB:.0f} MiB** ({d['index_bytes_per_base'] / 1024:.1f} "
        f"KiB per base); sketching a base when it is registered: {d['sketch_one_base_s']:.2f} s.",
        f"- Query (sketch the suspect, score all {d['bases']:,}, top {d['k']}): **{d['query_s']:.2f} s**.",
        f"- Exact ICS per candidate: reading its terms back ({d['blob_bytes'] / MIB:.0f} MiB) "
        f"{d['read_blob_warm_s']:.2f} s warm / {d['read_blob_cold_s']:.2f} s cold, `owner.compare` "
        f"{d['compare_one_base_s']:.2f} s without the suspect's cache (section 5b times it with the cache); a "
        f"float32 prototype with the suspect standardised once: {d['compare_one_base_prestandardised_s']:.2f} s, "
        "same ICS to 1e-4.",
        f"- One submission answered: screen + {d['k']} exact = **{d['screened_answer_s']:.0f} s** "
        f"({d['screened_answer_prestandardised_s']:.1f} s with the float32 prototype) against "
        f"{d['exact_all_s_extrapolated'] / 3600:.1f} h for exact comparison with all {d['bases']:,} bases "
        f"(extrapolated; {d['exact_all_prestandardised_s_extrapolated'] / 3600:.1f} h standardised once), which "
        f"also needs all {d['exact_all_bytes'] / 2**40:.1f} TiB of terms read or held (the registry keeps at most "
        "32 bases' and 1 GiB of decoded terms in memory).",
        "",
        "| suspect (share of the true base) | true base rank | estimate | exact ICS | best unrelated estimate |",
        "|---|---|---|---|---|",
    ]
    for s in d["suspects"]:
        ex = "n/a" if s["true_exact_ics"] is None else f"{s['true_exact_ics']:.3f}"
        out.append(f"| {s['weight']} | {s['true_base_rank']} | {s['true_estimate']:.3f} | {ex} | "
                   f"{s['best_unrelated_estimate']:.3f} |")
    out.append("")
    return out


def compare_section(d: dict[str, Any] | None) -> list[str]:
    out = ["## 5b. Exact comparison with a candidate base", ""]
    if d is None:
        return [*out, "(not run)", ""]
    out += [
        f"Command: `{d['command']}` (load {_load_range(d)}); n = {d['n']}, 2 layers x 3 terms, layers matched as "
        "the verifier does. Before: every term of both sides standardised as a whole float64 copy, the suspect's "
        "kept across bases (`benchmarks/perf/_before.py`). Now (`owner.compare`): rows read in blocks and centred "
        "on the fly, only the suspect's means and norms kept. Memory: peak allocated during the comparisons "
        "(`tracemalloc`), above the terms themselves.",
        "",
        "| case | before: first base / next | now: first base / next | faster (next) | memory before / now | "
        "less memory | cosines agree to |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, label in (("all_tokens", "every probe token common"), ("tokens_missing", "bases lack 10 % of tokens")):
        c = d[case]
        b, n = c["before"], c["now"]
        out.append(
            f"| {label} | {b['first_base_s']:.2f} / {b['next_bases_s']:.2f} s | {n['first_base_s']:.2f} / "
            f"{n['next_bases_s']:.2f} s | **{c['speedup_next_bases']:.2f}x** | {_mib(b['peak_alloc_bytes'])} / "
            f"{_mib(n['peak_alloc_bytes'])} | **{c['memory_ratio']:.0f}x** | {c['max_cosine_difference']:.0e} |")
    out.append("")
    return out


def layers_section(d: dict[str, Any] | None) -> list[str]:
    out = ["## 6. All layers, and how the cost grows", ""]
    if d is None:
        return [*out, "(not run)", ""]
    a = d["all_layers"]
    out += [
        f"Command: `{d['command']}` (load {_load_range(d)}).",
        "",
        f"All {a['layers']} layers of the 1.1B checkpoint at n = {a['tokens']}: **{a['wall_s']:.0f} s** "
        f"({a['process_wall_s']:.0f} s for the process), {a['per_layer_median_s']:.2f} s per layer (median; "
        f"range {min(a['per_layer_s']):.2f}-{max(a['per_layer_s']):.2f}), peak RSS {_mib(a['max_rss_bytes'])}. "
        "Time grows linearly with the layer count (each layer is independent; the probe rows are whitened once).",
        "",
        "| n (d = 2048) | one layer | GFLOP of products | GFLOP/s |",
        "|---|---|---|---|",
    ]
    for r in d["tokens_sweep"]:
        out.append(f"| {r['n']} | {r['s']:.2f} s | {r['gflop']:.0f} | {r['GFps']:.0f} |")
    out += ["", f"| d (n = {d['tokens']}) | FFN h | heads (KV) | one layer | GFLOP of products | GFLOP/s |",
            "|---|---|---|---|---|---|"]
    for r in d["width_sweep"]:
        out.append(f"| {r['d']} | {r['h']} | {r['heads']} ({r['kv_heads']}) | {r['s']:.2f} s | {r['gflop']:.0f} | "
                   f"{r['GFps']:.0f} |")
    out.append("")
    loaded = _load("perf_all_layers_1.1b_loaded.json")
    if loaded:
        la = loaded["all_layers"]
        out += [
            f"The same command in another run, while other jobs took the cores (load {_load_range(loaded)}): "
            f"{la['wall_s']:.0f} s, {la['per_layer_median_s']:.2f} s per layer (range "
            f"{min(la['per_layer_s']):.2f}-{max(la['per_layer_s']):.2f}); one layer at n = 256 took "
            f"{loaded['tokens_sweep'][0]['s']:.1f} s. That is the 2-thread `eigh` stalling (section 2), "
            "not the products (measured before `OMP_WAIT_POLICY=PASSIVE` shipped with `owner`).",
            "",
        ]
    out += [
        "Cost of one layer (terms v2, with `kv = Hkv dh`, FFN width `h`; grouped-query attention summed in the "
        "weights), in multiply-adds: `n d (4 kv + 3h)` for the products with the weights, `n^2 (2kv + d)` for the "
        "n x n products, and `2 n d^2 + c d^3` for whitening the FFN output (`F^T F`, the fp32 `F M` product, and "
        "`eigh`, with the `d^3` fp64 forming of `M`); plus, once for all layers, the same whitening of the probe "
        "rows. So a layer is **O(n d (kv + h) + n^2 d + n d^2 + d^3)**: linear in layers, linear in n until n "
        "exceeds about kv + h and quadratic after, and cubic in width through `eigh` (GFLOP/s above counts products "
        "only, so it falls where `eigh` dominates). Memory per layer: its weights in their stored dtype, `O(n d)` "
        "intermediates (the FFN in blocks of 1024 units), and one `n x n` term at a time when the terms are written "
        "as computed (`write_invariants`; `compute_invariants` keeps `3 n^2` fp32 per layer).",
        "",
    ]
    return out


def render() -> str:
    d11, d7 = _load("perf_owner_1.1b.json"), _load("perf_owner_7b.json")
    fl, cm = _load("perf_floor_1.1b.json"), _load("perf_commitment_1.1b.json")
    tr, rs, al = _load("perf_transfer.json"), _load("perf_registry_scale.json"), _load("perf_all_layers_1.1b.json")
    cp = _load("perf_compare.json")
    machine = next((d["machine"] for d in (d11, fl, cm, tr, rs, al) if d), None)
    ranges = [_load_range(d) for d in (d11, d7, fl, cm, tr, rs, cp, al) if d]
    lows = [float(r.split("-")[0]) for r in ranges if r != "n/a"]
    highs = [float(r.split("-")[1]) for r in ranges if r != "n/a"]
    overall = f"{min(lows):.1f}-{max(highs):.1f}" if lows else "n/a"
    head = [
        "# Performance (issue #8)",
        "",
        "Everything here is rerunnable: `python -m benchmarks.perf` runs every benchmark with these settings, "
        "each in its own process, and rewrites this page (about 15-20 min on this machine under the load below; "
        "`--quick` for one repeat each and no 7B), "
        "`python -m benchmarks.perf.report` rewrites this page from the `docs/results/perf_*.json` files, which "
        "keep every run, the exact command and the load. Checkpoints are synthetic (random weights at the real "
        "shapes: `python -m benchmarks.perf.gen_checkpoint out/perf/llama-1.1b --shape 1.1b` and `--shape 7b`; "
        "TinyLlama-1.1B's shape, 2.2 GB; LLaMA-2-7B's, 13.5 GB; sharded bf16 safetensors, a 32,000-piece tokenizer).",
        "",
        f"**Machine**: {machine_line(machine) if machine else 'n/a'}; disk: virtio block device.",
        "",
        f"**Load**: the machine was shared with other workers' jobs (1-minute load average {overall} on 2 cores "
        "over these runs; each section gives its own range, and the JSON files the load after every run). "
        "Absolute times are therefore noisy; ratios are measured in the same run with interleaved repeats and "
        "medians. One effect of the sharing is large and matters to users too: OpenMP threads spin at barriers, "
        "so when other work takes a core, LAPACK's `eigh` on 2 threads stalls for seconds (section 2); importing "
        "`owner` now sets `OMP_WAIT_POLICY=PASSIVE`, and every benchmark here ran with it set in the environment.",
        "",
    ]
    body = (owner_section(d11, d7) + floor_section(fl) + commitment_section(cm) + transfer_section(tr)
            + registry_section(rs) + compare_section(cp) + layers_section(al))
    return "\n".join(head + body + _static()) + "\n"


def _static() -> list[str]:
    return (Path(__file__).with_name("report_notes.md").read_text(encoding="utf-8")).splitlines()


def main() -> int:
    out = RESULTS / "perf.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
