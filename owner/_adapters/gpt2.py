"""GPT-2: pre-LayerNorm, ``Conv1D`` weights stored ``(in, out)``, fused ``c_attn`` in thirds (q, k, v)."""

from __future__ import annotations

from typing import Any, ClassVar

from owner._adapters._base import ArchInfo, PlainAdapter, cfg_int


class Gpt2Adapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("gpt2",)
    prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    embedding_suffix: ClassVar[str] = "wte.weight"
    q = k = v = "h.{i}.attn.c_attn.weight"
    o = "h.{i}.attn.c_proj.weight"
    up = "h.{i}.mlp.c_fc.weight"
    down = "h.{i}.mlp.c_proj.weight"
    norm1 = "h.{i}.ln_1.weight"
    norm2 = "h.{i}.ln_2.weight"
    conv1d = True

    def _read_info(self) -> ArchInfo:
        return gpt_style_info(self.config, "gpt2", parallel_residual=False)


def gpt_style_info(c: dict[str, Any], family: str, parallel_residual: bool) -> ArchInfo:
    """Shape facts from a GPT-2-style config (``n_embd``, ``n_head``, ``n_layer``, ``n_inner`` or 4d), shared with
    GPT-J, whose config uses the same field names."""
    d = cfg_int(c, "n_embd", "hidden_size")
    h = cfg_int(c, "n_head", "num_attention_heads")
    inner = c.get("n_inner")
    return ArchInfo(
        family=family, n_layers=cfg_int(c, "n_layer", "num_hidden_layers"), d_model=d, n_heads=h,
        n_kv_heads=h, head_dim=d // h, d_ffn=inner if isinstance(inner, int) else 4 * d,
        vocab_size=cfg_int(c, "vocab_size"), norm="layer", gated_ffn=False, parallel_residual=parallel_residual,
    )
