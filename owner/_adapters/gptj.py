"""GPT-J: parallel residual with a single pre-LayerNorm ``ln_1`` read by both attention and FFN."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import ArchInfo, PlainAdapter, cfg_int


class GptJAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("gptj",)
    prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    embedding_suffix: ClassVar[str] = "wte.weight"
    q = "h.{i}.attn.q_proj.weight"
    k = "h.{i}.attn.k_proj.weight"
    v = "h.{i}.attn.v_proj.weight"
    o = "h.{i}.attn.out_proj.weight"
    up = "h.{i}.mlp.fc_in.weight"
    down = "h.{i}.mlp.fc_out.weight"
    norm1 = "h.{i}.ln_1.weight"
    norm2 = "h.{i}.ln_1.weight"  # parallel block: the FFN reads the same norm

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "n_embd", "hidden_size")
        h = cfg_int(c, "n_head", "num_attention_heads")
        inner = c.get("n_inner")
        return ArchInfo(
            family="gptj", n_layers=cfg_int(c, "n_layer", "num_hidden_layers"), d_model=d, n_heads=h,
            n_kv_heads=h, head_dim=d // h, d_ffn=inner if isinstance(inner, int) else 4 * d,
            vocab_size=cfg_int(c, "vocab_size"), norm="layer", gated_ffn=False, parallel_residual=True,
        )
