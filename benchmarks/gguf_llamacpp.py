"""Do llama.cpp itself and Hugging Face agree on the GGUF files ``zoo.gguf_export`` writes? (issue 18)

    python -m benchmarks.gguf_llamacpp --llama-python /tmp/llvenv/bin/python

A round trip through our own exporter and reader only shows they agree with each other. This check runs the
files through llama.cpp's own loader and forward pass (the ``llama_cpp`` package, llama-cpp-python, installed in a
separate interpreter given by ``--llama-python``: it is a C++ build, not a dependency of this project) and compares
its logits with the ``transformers`` model the file was written from, on the same 8 token ids. If a convention of
the exporter (tensor names, q/k row order, Gemma's ``1 + w`` norms, Phi-3's fused tensors) differed from what
llama.cpp expects, the logits would not agree; two negative controls break one convention each on purpose
(Gemma-3 without the ``+ 1``, Qwen3 with LLaMA's rotary row permutation) to show that the comparison notices.

Harness adjustments, none of which touch a weight: Gemma's ``query_pre_attn_scalar`` is set to ``head_dim`` in
the copy (llama.cpp scales attention by ``1/sqrt(head_dim)`` for all but the 27B models; the tiny config's 256
would make HF scale differently); the tiny Phi-3's tokenizer gets an ``<|endoftext|>`` token in place of its last
piece (llama.cpp's Phi-3 vocabulary path refuses a vocabulary without it). Writes
``docs/results/gguf_llamacpp.md`` and ``out/gguf_llamacpp/result.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "gguf_llamacpp"
RESULT_MD = ROOT / "docs" / "results" / "gguf_llamacpp.md"
FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2")
IDS = [5, 77, 123, 250, 311, 42, 590, 17]
# pass: llama.cpp's logits within this relative error of HF's (fp32 weights; llama.cpp's f16 KV cache and
# summation order differ) and the same argmax at every position
TOL = 5e-3

_LLAMA_SCRIPT = r"""
import json, sys, numpy as np, llama_cpp
ids = json.loads(sys.argv[1])
out = {"version": llama_cpp.__version__}
for path in sys.argv[2:]:
    try:
        m = llama_cpp.Llama(model_path=path, verbose=False, n_ctx=64, n_threads=1, logits_all=True, seed=0)
        m.eval(ids)
        np.save(path + ".llama.npy", np.array(m.scores[:len(ids)], dtype=np.float32))
        out[path] = "ok"
    except Exception as e:  # a file llama.cpp refuses is a result, reported as such
        out[path] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _prepare(family: str, root: Path) -> Path:
    from zoo.tiny import make_tiny

    d = root / family
    if d.exists():
        shutil.rmtree(d)
    make_tiny(family, d, seed=0)
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    if family.startswith("gemma"):
        cfg["query_pre_attn_scalar"] = cfg["head_dim"]
        (d / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    if family == "phi3":
        tok = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = tok["model"]["vocab"]
        last = max(vocab, key=vocab.__getitem__)
        vocab["<|endoftext|>"] = vocab.pop(last)
        (d / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    return d


def _hf_logits(model_dir: Path) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        return np.asarray(m(torch.tensor([IDS])).logits[0].float().numpy())


def _controls(root: Path) -> dict[str, tuple[str, Path]]:
    """Two exports with one convention broken on purpose: (family whose HF logits they are compared with, file)."""
    import gguf

    import zoo.gguf_export as ge

    out = {}
    saved = ge._NORM_PLUS_ONE
    ge._NORM_PLUS_ONE = frozenset({"gemma2"})  # Gemma-3 norms written as w, not 1 + w
    try:
        out["gemma3_text without the norm + 1"] = ("gemma3_text", ge.export_gguf(
            root / "gemma3_text", root / "control-gemma3-noshift.gguf", "f32"))
    finally:
        ge._NORM_PLUS_ONE = saved
    cfg = json.loads((root / "qwen3" / "config.json").read_text(encoding="utf-8"))
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    add = gguf.GGUFWriter.add_tensor

    def permuted(self: Any, name: str, data: np.ndarray, *a: Any, **k: Any) -> None:
        if name.endswith("attn_q.weight"):
            data = ge.permute_rotary(data, heads, heads)
        elif name.endswith("attn_k.weight"):
            data = ge.permute_rotary(data, heads, kv)
        add(self, name, np.ascontiguousarray(data), *a, **k)

    gguf.GGUFWriter.add_tensor = permuted  # type: ignore[method-assign,assignment]
    try:
        out["qwen3 with LLaMA's q/k permutation"] = ("qwen3", ge.export_gguf(
            root / "qwen3", root / "control-qwen3-permuted.gguf", "f32"))
    finally:
        gguf.GGUFWriter.add_tensor = add  # type: ignore[method-assign]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gguf_llamacpp", description=__doc__.split("\n\n")[0])
    p.add_argument("--llama-python", required=True, help="a Python interpreter with llama_cpp installed")
    p.add_argument("--families", nargs="*", default=list(FAMILIES))
    a = p.parse_args(argv)
    from zoo.gguf_export import export_gguf

    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    hf: dict[str, np.ndarray] = {}
    files: dict[str, tuple[str, Path]] = {}
    for fam in a.families:
        d = _prepare(fam, OUT)
        hf[fam] = _hf_logits(d)
        files[fam] = (fam, export_gguf(d, OUT / f"{fam}.gguf", "f32"))
    if "gemma3_text" in a.families and "qwen3" in a.families:
        files.update(_controls(OUT))
    run = subprocess.run([a.llama_python, "-c", _LLAMA_SCRIPT, json.dumps(IDS), *(str(f) for _, f in files.values())],
                         capture_output=True, text=True, check=True)
    status = json.loads(run.stdout.strip().splitlines()[-1])
    for label, (fam, f) in files.items():
        row: dict[str, Any] = {"file": label, "loaded": status[str(f)]}
        if status[str(f)] == "ok":
            ll, ref = np.load(str(f) + ".llama.npy"), hf[fam]
            row["rel_err"] = float(np.abs(ll - ref).max() / np.abs(ref).max())
            row["argmax_agree"] = int((ll.argmax(1) == ref.argmax(1)).sum())
            row["agree"] = row["rel_err"] <= TOL and row["argmax_agree"] == len(IDS)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (OUT / "result.json").write_text(json.dumps({"llama_cpp": status["version"], "rows": rows}, indent=1))
    lines = [
        "# llama.cpp against Hugging Face on GGUF files written by `zoo.gguf_export`",
        "",
        f"`python -m benchmarks.gguf_llamacpp --llama-python PY` (llama-cpp-python {status['version']}, its own "
        "llama.cpp build, CPU, 1 thread). Tiny zoo models (seed 0) exported as F32; llama.cpp's logits on "
        f"{len(IDS)} token ids against the `transformers` model's (eager attention). Pass: max |llama.cpp - HF| / "
        f"max |HF| <= {TOL:g} and the same argmax at all {len(IDS)} positions. The last rows are negative controls "
        "(one convention broken on purpose); they must fail. Harness adjustments (no weight touched): see the "
        "module docstring.",
        "",
        "| file | llama.cpp loads it | max rel. error | argmax agree | agrees |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['file']} | {'yes' if r['loaded'] == 'ok' else r['loaded'][:80]} | "
                     f"{r.get('rel_err', float('nan')):.1e} | {r.get('argmax_agree', '-')}/{len(IDS)} | "
                     f"{'yes' if r.get('agree') else 'no'} |")
    RESULT_MD.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULT_MD}")
    expected = all(r.get("agree") for r in rows if not r["file"].startswith(("gemma3_text without", "qwen3 with")))
    controls_fail = not any(r.get("agree") for r in rows if r["file"].startswith(("gemma3_text without", "qwen3 with")))
    return 0 if expected and controls_fail else 1


if __name__ == "__main__":
    sys.exit(main())
