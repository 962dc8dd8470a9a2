"""``pawprint audit endpoint`` against llama.cpp: our GGUF exports served by an engine nobody here wrote.

    python -m benchmarks.llamacpp_endpoint --llama-python /tmp/llvenv/bin/python --zoo out/demo/zoo \\
        --out docs/results/llamacpp_endpoint.json

Two questions, one run:

- Does llama.cpp read ``zoo/gguf_export.py``'s files as the models they came from? Each GGUF (float32, float16
  and quantised copies of ``llama-base-s0``, and ``gpt2-base-s0``) is loaded by llama.cpp (llama-cpp-python)
  and must give the same next-token log-probabilities as transformers on the safetensors model.
- Does the audit's tolerance (``DEFAULT_THRESHOLD``, measured on our own server, docs/results/endpoint_audit.md)
  separate the same weights from a derivative when the server is llama.cpp? The auditor holds
  ``llama-base-s0`` (or ``gpt2-base-s0``); the endpoint serves that model's GGUF in each type, or a derivative's
  (``llama-sft``, ``llama-cpt-heavy``) or another seed's (``llama-base-s1``).

Each served model is ``benchmarks/llamacpp_shim.py`` run by ``--llama-python`` (an environment with
``llama_cpp``; llama-cpp-python has no wheel on PyPI and builds llama.cpp from source, about 17 minutes on 2 cores:
``python -m venv V && V/bin/pip install llama-cpp-python==0.3.36 numpy``); the audit is the command's own code
(``audit_endpoint``) over HTTP, with ``--seeds`` prompt seeds. Not run by the tests: it needs that build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pawprint._endpoint_audit import DEFAULT_THRESHOLD, audit_endpoint
from zoo.gguf_export import export_gguf

SHIM = Path(__file__).with_name("llamacpp_shim.py")
# (auditor's model, served model, GGUF type)
CASES: tuple[tuple[str, str, str], ...] = (
    ("llama-base-s0", "llama-base-s0", "f32"),
    ("llama-base-s0", "llama-base-s0", "f16"),
    ("llama-base-s0", "llama-base-s0", "q8_0"),
    ("llama-base-s0", "llama-base-s0", "q4_k"),
    ("llama-base-s0", "llama-sft", "f32"),
    ("llama-base-s0", "llama-cpt-heavy", "f32"),
    ("llama-base-s0", "llama-base-s1", "f32"),
    ("gpt2-base-s0", "gpt2-base-s0", "f32"),
    ("gpt2-base-s0", "gpt2-base-s0", "q8_0"),
    ("gpt2-base-s0", "gpt2-base-s1", "f32"),
)


def serve(llama_python: str, gguf: Path, name: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([llama_python, str(SHIM), str(gguf), name, "64"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise RuntimeError(f"llama.cpp did not load {gguf}")
    return proc, f"http://127.0.0.1:{line}/v1"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--llama-python", required=True, help="a Python with llama_cpp installed")
    p.add_argument("--zoo", type=Path, default=Path("out/demo/zoo"))
    p.add_argument("--work", type=Path, default=Path("out/llamacpp"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/results/llamacpp_endpoint.json"))
    args = p.parse_args(argv)
    llama_version = subprocess.run([args.llama_python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    for held, served, qtype in CASES:
        gguf = args.work / f"{served}-{qtype}.gguf"
        if not gguf.exists():
            export_gguf(args.zoo / served, gguf, qtype)
        proc, url = serve(args.llama_python, gguf, f"{served}-{qtype}")
        try:
            stats = [audit_endpoint(args.zoo / held, url, seed=seed).statistic for seed in range(args.seeds)]
        finally:
            proc.kill()
            proc.wait()
        same = held == served
        row = {"auditor_holds": held, "served": served, "gguf_type": qtype, "same_weights": same,
               "statistic_min": min(stats), "statistic_max": max(stats),
               "verdict": "match" if max(stats) <= DEFAULT_THRESHOLD else
               ("mismatch" if min(stats) > DEFAULT_THRESHOLD else "mixed")}
        rows.append(row)
        print(f"{held:15s} served {served:16s} {qtype:5s} statistic {min(stats):.4f}-{max(stats):.4f} nats: "
              f"{row['verdict']}", flush=True)
    doc = {"command": "python -m benchmarks.llamacpp_endpoint " + " ".join(argv or sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - started, 1),
           "machine": {"python": platform.python_version(), "nproc": os.cpu_count(), "loadavg": os.getloadavg(),
                       "llama_cpp_python": llama_version},
           "threshold": DEFAULT_THRESHOLD, "prompts_per_seed": 8, "seeds": args.seeds, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
