"""MPNet: a post-LayerNorm encoder laid out like BERT, with its own tensor names and a relative-position
attention bias (one table shared by all layers). The bias adds to the attention scores by position only, so the
terms, which are taken on the probe tokens' embeddings, are BERT's: the BERT adapter with MPNet's names."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters.bert import BertAdapter


class MPNetAdapter(BertAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("mpnet",)
    prefixes: ClassVar[tuple[str, ...]] = ("mpnet.", "")
    q = "encoder.layer.{i}.attention.attn.q.weight"
    k = "encoder.layer.{i}.attention.attn.k.weight"
    v = "encoder.layer.{i}.attention.attn.v.weight"
    o = "encoder.layer.{i}.attention.attn.o.weight"
