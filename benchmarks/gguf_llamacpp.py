"""Do llama.cpp itself and Hugging Face agree on the GGUF files ``zoo.gguf_export`` writes? (issue 18)

    python -m benchmarks.gguf_llamacpp --llama-python /tmp/llvenv/bin/python

A round trip through our own exporter and reader only shows they agree with each other. This check runs the
files through llama.cpp's own loader and forward pass (the ``llama_cpp`` package, llama-cpp-python, installed in a
separate interpreter given by ``--llama-python``: it is a C++ build, not a dependency of this project) and compares
its logits with the ``transformers`` model the file was written from, on the same 8 token ids. If a convention of
the exporter (tensor names, q/k row order, Gemma's ``1 + w`` norms, Phi-3's fused tensors) differed from what
llama.cpp expects, the logits would not agree; three negative controls break one convention each on purpose
(Gemma-3 without the ``+ 1``, Qwen3 with LLaMA's rotary row permutation, Mixtral with the gate experts stacked
in reverse order) to show that the comparison notices.

Mixture-of-experts cases (``MOE_CASES``): Qwen2-MoE and Qwen3-MoE with every layer sparse (llama.cpp's
architectures have no dense FFN tensors); DeepSeek-V2 with query compression (``q_lora_rank`` 32: llama.cpp
requires the key unless the model has V2-Lite's 26 or 27 layers) and V2-Lite's greedy router; DeepSeek-V3 with
``kv_b_proj`` split (current converter) and fused (older converters). One row is a known difference, not a
convention of ours: DeepSeek-V2's group-limited greedy router (a group scores its best expert) is run by
llama.cpp's ``build_moe_ffn`` with V3's group score (the sum of a group's best two), so the logits differ where
the two rules pick different groups.

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
# label -> (zoo family, config overrides, kv_b layout of the export)
_SPARSE: dict[str, Any] = {"mlp_only_layers": []}
MOE_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "mixtral": ("mixtral", {}, "split"),
    "qwen2_moe (all layers sparse)": ("qwen2_moe", _SPARSE, "split"),
    "qwen3_moe (all layers sparse)": ("qwen3_moe", _SPARSE, "split"),
    "deepseek_v2 (q_lora 32, greedy router)": (
        "deepseek_v2", {"q_lora_rank": 32, "topk_method": "greedy", "n_group": 1, "topk_group": 1}, "split"),
    "deepseek_v3 (kv_b split)": ("deepseek_v3", {}, "split"),
    "deepseek_v3 (kv_b fused, older converters)": ("deepseek_v3", {}, "fused"),
}
# rows reported, not expected to agree: a difference of llama.cpp's, not a convention of the exporter's
KNOWN_DIFFERENCES: dict[str, tuple[str, dict[str, Any], str]] = {
    "deepseek_v2 (q_lora 32, group-limited greedy: llama.cpp scores groups as V3)": (
        "deepseek_v2", {"q_lora_rank": 32}, "split"),
}
CONTROLS = ("gemma3_text without", "qwen3 with", "mixtral with")
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


def _prepare(family: str, root: Path, overrides: dict[str, Any] | None = None, name: str | None = None) -> Path:
    from zoo.tiny import make_tiny

    d = root / (name or family)
    if d.exists():
        shutil.rmtree(d)
    make_tiny(family, d, seed=0, config_overrides=overrides)
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


def _moe_control(root: Path) -> dict[str, tuple[str, Path]]:
    """Mixtral with each layer's gate experts stacked in reverse order (up and down and the router unchanged)."""
    import gguf

    import zoo.gguf_export as ge

    add = gguf.GGUFWriter.add_tensor

    def reversed_gate(self: Any, name: str, data: np.ndarray, *a: Any, **k: Any) -> None:
        if name.endswith("ffn_gate_exps.weight"):
            data = data[::-1]
        add(self, name, np.ascontiguousarray(data), *a, **k)

    gguf.GGUFWriter.add_tensor = reversed_gate  # type: ignore[method-assign,assignment]
    try:
        return {"mixtral with the gate experts reversed": ("mixtral", ge.export_gguf(
            root / "mixtral", root / "control-mixtral-reversed.gguf", "f32"))}
    finally:
        gguf.GGUFWriter.add_tensor = add  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gguf_llamacpp", description=__doc__.split("\n\n")[0])
    p.add_argument("--llama-python", required=True, help="a Python interpreter with llama_cpp installed")
    p.add_argument("--families", nargs="*", default=list(FAMILIES))
    p.add_argument("--no-moe", action="store_true", help="skip the mixture-of-experts cases")
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
    if not a.no_moe:
        for i, (label, (fam, overrides, kv_b)) in enumerate({**MOE_CASES, **KNOWN_DIFFERENCES}.items()):
            name = "mixtral" if label == "mixtral" else f"moe{i}-{fam}"
            d = _prepare(fam, OUT, overrides, name)
            hf[label] = _hf_logits(d)
            files[label] = (label, export_gguf(d, OUT / f"{name}.gguf", "f32", kv_b=kv_b))
        hf["mixtral with the gate experts reversed"] = hf["mixtral"]
        files.update(_moe_control(OUT))
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
        f"max |HF| <= {TOL:g} and the same argmax at all {len(IDS)} positions. The rows named for what they break "
        "(`... without ...`, `... with ...`) are negative controls (one convention broken on purpose); they must "
        "fail. Rows marked *known difference* are llama.cpp's own "
        "(see the module docstring) and do not count either way. Harness adjustments (no weight touched): see the "
        "module docstring.",
        "",
        "| file | llama.cpp loads it | max rel. error | argmax agree | agrees |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["file"] in KNOWN_DIFFERENCES:
            r = {**r, "file": f"{r['file']} (*known difference*)"}
        lines.append(f"| {r['file']} | {'yes' if r['loaded'] == 'ok' else r['loaded'][:80]} | "
                     f"{r.get('rel_err', float('nan')):.1e} | {r.get('argmax_agree', '-')}/{len(IDS)} | "
                     f"{'yes' if r.get('agree') else 'no'} |")
    RESULT_MD.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULT_MD}")
    expected = all(r.get("agree") for r in rows
                   if not r["file"].startswith(CONTROLS) and r["file"] not in KNOWN_DIFFERENCES)
    controls_fail = not any(r.get("agree") for r in rows if r["file"].startswith(CONTROLS))
    return 0 if expected and controls_fail else 1


if __name__ == "__main__":
    sys.exit(main())
