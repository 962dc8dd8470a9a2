"""BLOOM: pre-LayerNorm with ALiBi, fused ``query_key_value`` per head ``[head][q,k,v][dh]``, and a LayerNorm on
the word embeddings: the residual stream starts at ``LN_emb(E)``, so the probe rows are taken after it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from owner._adapters._base import (
    ArchInfo,
    PlainAdapter,
    cfg_int,
)


class BloomAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("bloom",)
    prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    embedding_suffix: ClassVar[str] = "word_embeddings.weight"
    q = k = v = "h.{i}.self_attention.query_key_value.weight"
    o = "h.{i}.self_attention.dense.weight"
    up = "h.{i}.mlp.dense_h_to_4h.weight"
    down = "h.{i}.mlp.dense_4h_to_h.weight"
    norm1 = "h.{i}.input_layernorm.weight"
    fused_per_head = True
    norm2 = "h.{i}.post_attention_layernorm.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size", "n_embed")
        h = cfg_int(c, "n_head", "num_attention_heads")
        return ArchInfo(
            family="bloom", n_layers=cfg_int(c, "n_layer", "num_hidden_layers"), d_model=d, n_heads=h,
            n_kv_heads=h, head_dim=d // h, d_ffn=4 * d, vocab_size=cfg_int(c, "vocab_size"), norm="layer",
            gated_ffn=False, parallel_residual=False,
        )

    def embedding_tensor_names(self) -> list[str]:
        return [self.embedding_name(), self.name("word_embeddings_layernorm.weight"),
                self.name("word_embeddings_layernorm.bias")]

    def embedding_rows(self, ids: Sequence[int]) -> torch.Tensor:
        x = super().embedding_rows(ids)
        w = self.tensor("word_embeddings_layernorm.weight")
        b = self.tensor("word_embeddings_layernorm.bias")
        eps = float(self.config.get("layer_norm_epsilon", 1e-5))
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)
