"""The agent never builds an fp32 copy of the checkpoint: peak memory while computing the terms of a checkpoint
much larger than the tensors they need stays far below the checkpoint's size (measured in a fresh process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

TinyModel = Callable[..., Path]

LAYERS, D, FFN, HEADS, KV, VOCAB = 24, 512, 1408, 8, 2, 120_000


def _big_llama(dst: Path, tokenizer_from: Path) -> int:
    """A bf16 LLaMA-shaped checkpoint of ~380 MB (fp32 copy: ~760 MB) sharing the tiny model's tokenizer
    (its embedding has many more rows than the tokenizer uses, like a padded vocabulary)."""
    dst.mkdir()
    shutil.copy(tokenizer_from / "tokenizer.json", dst / "tokenizer.json")
    cfg = {
        "model_type": "llama", "hidden_size": D, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV, "intermediate_size": FFN, "vocab_size": VOCAB,
    }
    (dst / "config.json").write_text(json.dumps(cfg))
    g = torch.Generator().manual_seed(0)

    def w(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    hd = D // HEADS
    sd = {"model.embed_tokens.weight": w(VOCAB, D), "lm_head.weight": w(VOCAB, D), "model.norm.weight": w(D)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd |= {
            p + "self_attn.q_proj.weight": w(HEADS * hd, D), p + "self_attn.k_proj.weight": w(KV * hd, D),
            p + "self_attn.v_proj.weight": w(KV * hd, D), p + "self_attn.o_proj.weight": w(D, HEADS * hd),
            p + "mlp.gate_proj.weight": w(FFN, D), p + "mlp.up_proj.weight": w(FFN, D),
            p + "mlp.down_proj.weight": w(D, FFN), p + "input_layernorm.weight": w(D) + 1,
            p + "post_attention_layernorm.weight": w(D) + 1,
        }
    save_file(sd, str(dst / "model.safetensors"))
    return sum(t.numel() * t.element_size() for t in sd.values())


def test_peak_memory_is_bounded_by_what_the_terms_need(tiny_model: TinyModel, tmp_path: Path) -> None:
    size = _big_llama(tmp_path / "big", tiny_model("llama"))
    assert size > 350e6
    script = textwrap.dedent(
        f"""
        import json, psutil
        import torch
        from owner import compute_invariants
        def hwm():  # VmHWM is this process's own peak (ru_maxrss can carry the parent's across fork)
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        base = psutil.Process().memory_info().rss
        assert hwm() - base < 50e6
        inv = compute_invariants({str(tmp_path / "big")!r})
        peak = hwm()
        print(json.dumps({{"base": base, "peak": peak, "layers": list(inv.layers)}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["layers"] == [LAYERS - 2, LAYERS - 1]
    grew = r["peak"] - r["base"]
    # What the terms need: two layers in fp32 (~24 MB) plus the probe rows and n x h intermediates.
    # An fp32 copy of the checkpoint would be ~2x its size; even reading it once in bf16 would be its size.
    assert grew < 0.25 * size, f"peak grew by {grew / 1e6:.0f} MB for a {size / 1e6:.0f} MB checkpoint"
