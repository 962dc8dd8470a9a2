"""BERT: a post-LayerNorm encoder. The residual stream itself is normalised after each block, so norm weights
are not folded and the probe rows are the word embeddings as stored (only permutations apply)."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import ArchInfo, PlainAdapter, cfg_int


class BertAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("bert",)
    prefixes: ClassVar[tuple[str, ...]] = ("bert.", "")
    embedding_suffix: ClassVar[str] = "embeddings.word_embeddings.weight"
    q = "encoder.layer.{i}.attention.self.query.weight"
    k = "encoder.layer.{i}.attention.self.key.weight"
    v = "encoder.layer.{i}.attention.self.value.weight"
    o = "encoder.layer.{i}.attention.output.dense.weight"
    up = "encoder.layer.{i}.intermediate.dense.weight"
    down = "encoder.layer.{i}.output.dense.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        return ArchInfo(
            family=self.family, n_layers=cfg_int(c, "num_hidden_layers"), d_model=d, n_heads=h, n_kv_heads=h,
            head_dim=d // h, d_ffn=cfg_int(c, "intermediate_size"), vocab_size=cfg_int(c, "vocab_size"),
            norm="post", gated_ffn=False, parallel_residual=False,
        )
