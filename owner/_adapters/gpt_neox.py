"""GPT-NeoX (Pythia): pre-LayerNorm, fused ``query_key_value`` laid out per head ``[head][q,k,v][dh]``,
optionally parallel residual (attention and FFN read separate norms of the same input)."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import (
    ArchInfo,
    PlainAdapter,
    cfg_int,
)


class GptNeoXAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("gpt_neox",)
    prefixes: ClassVar[tuple[str, ...]] = ("gpt_neox.", "")
    embedding_suffix: ClassVar[str] = "embed_in.weight"
    q = k = v = "layers.{i}.attention.query_key_value.weight"
    o = "layers.{i}.attention.dense.weight"
    up = "layers.{i}.mlp.dense_h_to_4h.weight"
    down = "layers.{i}.mlp.dense_4h_to_h.weight"
    norm1 = "layers.{i}.input_layernorm.weight"
    fused_per_head = True
    norm2 = "layers.{i}.post_attention_layernorm.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        return ArchInfo(
            family="gpt_neox", n_layers=cfg_int(c, "num_hidden_layers"), d_model=d, n_heads=h, n_kv_heads=h,
            head_dim=d // h, d_ffn=cfg_int(c, "intermediate_size"), vocab_size=cfg_int(c, "vocab_size"),
            norm="layer", gated_ffn=False, parallel_residual=bool(c.get("use_parallel_residual", True)),
        )
