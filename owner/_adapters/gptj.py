"""GPT-J: parallel residual with a single pre-LayerNorm ``ln_1`` read by both attention and FFN."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import ArchInfo, PlainAdapter
from owner._adapters.gpt2 import gpt_style_info


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
        return gpt_style_info(self.config, "gptj", parallel_residual=True)
