"""Peak memory of the owner's agent on a GGUF file against the safetensors reader on the same model.

    python -m benchmarks.perf.gguf_memory [--repeats 1] [--layers 8] [--hidden 1024]

One synthetic LLaMA checkpoint (``benchmarks.perf.gen_checkpoint``; default 8 layers of width 1024, FFN 2816,
16 query / 4 KV heads, 32000 vocabulary: 0.17 B parameters, bf16 safetensors) and GGUF copies of it written by
``zoo.gguf_export`` (llama.cpp's conventions) as F16, Q8_0 and Q4_0. Each model's terms are computed by
``python -m pawprint owner invariants MODEL -o OUT -q`` in its own measured process (``_common.run_measured``:
peak RSS ``VmHWM``, peak anonymous and file-backed RSS), runs interleaved. The model's fp32 size is printed beside
the peaks: a reader that held a full fp32 copy would need at least that much on top of the interpreter and torch.
The F16 GGUF's terms are compared with the safetensors original's (ICS) so the runs measure the same computation.
Writes ``docs/results/gguf_memory.md`` and ``out/perf/gguf_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.perf._common import (
    MIB,
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
from benchmarks.perf.gen_checkpoint import Shape, generate, tensor_specs

TYPES = ("f16", "q8_0", "q4_0")


def _models(shape: Shape) -> dict[str, Path]:
    from zoo.gguf_export import export_gguf

    base = generate(OUT / f"gguf-mem-{shape.name}" / "safetensors", shape, workers=2)
    out = {"safetensors (bf16)": base}
    for t in TYPES:
        g = base.parent / f"model-{t}.gguf"
        stamp = g.with_suffix(".complete")
        if not (g.is_file() and stamp.is_file()):
            t0 = time.perf_counter()
            export_gguf(base, g, t)
            stamp.write_text("1\n")
            print(f"wrote {g} ({g.stat().st_size / MIB:.0f} MiB, {time.perf_counter() - t0:.0f} s)", flush=True)
        out[f"gguf {t.upper()}"] = g
    return out


def run(shape: Shape, repeats: int) -> dict[str, Any]:
    models = _models(shape)
    params = sum(math.prod(s) for _, s in tensor_specs(shape))
    env = {**os.environ, "PAWPRINT_COMMITMENT_CACHE": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in models}
    with tempfile.TemporaryDirectory(prefix="gguf-mem-") as tmp:
        for r in range(repeats):
            for label, path in models.items():
                inv = Path(tmp) / f"{label.split()[-1].strip('()')}-{r}.inv"
                m = run_measured(python_cmd("-m", "pawprint", "owner", "invariants", str(path), "-o", str(inv), "-q"),
                                 env=env)
                if m.returncode:
                    raise SystemExit(f"{label}: exit {m.returncode}: {m.stderr[-800:]}")
                rows[label].append(m.as_dict())
                print(f"{label:22} peak RSS {m.max_rss_bytes / MIB:7.0f} MiB  anon {m.peak_anon_bytes / MIB:7.0f} MiB"
                      f"  file {m.peak_file_bytes / MIB:6.0f} MiB  {m.wall_s:6.1f} s", flush=True)
        ics = _ics(Path(tmp) / "bf16-0.inv", Path(tmp) / "F16-0.inv")
    sizes = {k: (sum(f.stat().st_size for f in p.glob("*.safetensors")) if p.is_dir() else p.stat().st_size)
             for k, p in models.items()}
    return {"shape": shape.__dict__, "parameters": params, "fp32_bytes": params * 4, "sizes": sizes,
            "runs": rows, "ics_f16_vs_safetensors": ics, "machine": machine(), "loadavg": loadavg(),
            "repeats": repeats}


def _ics(a: Path, b: Path) -> float:
    from owner import load_invariants
    from verifier import compare

    return float(compare(load_invariants(a), load_invariants(b), layer_pairs="match").ics)


def write_page(doc: dict[str, Any]) -> Path:
    lines = [
        "# Peak memory: GGUF reader against the safetensors reader",
        "",
        "`python -m benchmarks.perf.gguf_memory` (see its docstring). `pawprint owner invariants MODEL` on one",
        f"synthetic LLaMA checkpoint ({doc['shape']['n_layers']} layers, width {doc['shape']['d_model']}, "
        f"FFN {doc['shape']['d_ffn']}, {doc['shape']['n_heads']}/{doc['shape']['n_kv_heads']} heads, vocabulary "
        f"{doc['shape']['vocab']}: {doc['parameters'] / 1e9:.2f} B parameters, "
        f"{doc['fp32_bytes'] / MIB:.0f} MiB in fp32) and GGUF copies written by `zoo.gguf_export`. Median of "
        f"{doc['repeats']} run(s) each, each in its own process; peak RSS is the kernel's `VmHWM`.",
        "",
        "| model | file size | peak RSS | peak anonymous | peak file-backed | wall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, runs in sorted(doc["runs"].items(), key=lambda kv: (not kv[0].startswith("safetensors"), kv[0])):
        lines.append(
            f"| {label} | {doc['sizes'][label] / MIB:.0f} MiB "
            f"| {median([r['max_rss_bytes'] for r in runs]) / MIB:.0f} MiB "
            f"| {median([r['peak_anon_bytes'] for r in runs]) / MIB:.0f} MiB "
            f"| {median([r['peak_file_bytes'] for r in runs]) / MIB:.0f} MiB "
            f"| {median([r['wall_s'] for r in runs]):.1f} s |")
    lines += [
        "",
        f"ICS of the F16 GGUF's terms against the safetensors original's: {doc['ics_f16_vs_safetensors']:.6f}.",
        "",
        "Both readers read one tensor at a time with `pread` (the GGUF header is read in one buffered pass, the",
        "file is never mapped) and drop it after its layer: neither holds an fp32 copy of the model (that alone",
        f"would be {doc['fp32_bytes'] / MIB:.0f} MiB). The safetensors reader hands a layer over in its stored",
        "bf16 and the terms convert it a block at a time; the GGUF reader dequantises a layer's tensors to fp32",
        "as it reads them, so a GGUF layer costs its fp32 size while it is used. Peaks include the Python",
        "interpreter, torch and the terms (4096 probe tokens).",
        "",
        f"Machine: {machine_line(doc['machine'])}; load average at the end {doc['loadavg'][0]:.1f} (wall times on",
        "a shared, loaded machine are indicative only; the memory peaks are the result).",
        "",
    ]
    page = RESULTS / "gguf_memory.md"
    page.write_text("\n".join(lines), encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--page-only", action="store_true", help="rewrite the page from out/perf/gguf_memory.json")
    a = ap.parse_args(argv)
    if a.page_only:
        print(f"wrote {write_page(json.loads((OUT / 'gguf_memory.json').read_text(encoding='utf-8')))}")
        return 0
    shape = Shape(f"L{a.layers}-d{a.hidden}", a.layers, a.hidden, a.ffn, a.heads, a.kv_heads, a.vocab)
    doc = run(shape, a.repeats)
    write_json(OUT / "gguf_memory.json", doc)
    print(f"wrote {write_page(doc)}", file=sys.stderr)
    print(json.dumps({k: doc[k] for k in ("parameters", "ics_f16_vs_safetensors")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
