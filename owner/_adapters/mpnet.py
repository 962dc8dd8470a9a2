"""MPNet: a post-LayerNorm encoder laid out like BERT, with its own tensor names and a relative-position
attention bias (one table shared by all layers). The bias adds to the attention scores by position only, so the
terms, which are taken on the probe tokens' embeddings, are BERT's."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import ArchInfo, PlainAdapter, cfg_int


class MPNetAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("mpnet",)
    prefixes: ClassVar[tuple[str, ...]] = ("mpnet.", "")
    embedding_suffix: ClassVar[str] = "embeddings.word_embeddings.weight"
    q = "encoder.layer.{i}.attention.attn.q.weight"
    k = "encoder.layer.{i}.attention.attn.k.weight"
    v = "encoder.layer.{i}.attention.attn.v.weight"
    o = "encoder.layer.{i}.attention.attn.o.weight"
    up = "encoder.layer.{i}.intermediate.dense.weight"
    down = "encoder.layer.{i}.output.dense.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        return ArchInfo(
            family="mpnet", n_layers=cfg_int(c, "num_hidden_layers"), d_model=d, n_heads=h, n_kv_heads=h,
            head_dim=d // h, d_ffn=cfg_int(c, "intermediate_size"), vocab_size=cfg_int(c, "vocab_size"),
            norm="post", gated_ffn=False, parallel_residual=False,
        )
