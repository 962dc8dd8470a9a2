"""OPT: pre-LayerNorm (``do_layer_norm_before``; OPT-350m is post-norm), separate q/k/v/out, ``fc1``/``fc2``,
and an optional ``project_in`` when the word embedding is narrower than the residual stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from owner._adapters._base import ArchInfo, PlainAdapter, cfg_int


class OptAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("opt",)
    prefixes: ClassVar[tuple[str, ...]] = ("model.decoder.", "decoder.", "")
    embedding_suffix: ClassVar[str] = "embed_tokens.weight"
    q = "layers.{i}.self_attn.q_proj.weight"
    k = "layers.{i}.self_attn.k_proj.weight"
    v = "layers.{i}.self_attn.v_proj.weight"
    o = "layers.{i}.self_attn.out_proj.weight"
    up = "layers.{i}.fc1.weight"
    down = "layers.{i}.fc2.weight"
    norm1 = "layers.{i}.self_attn_layer_norm.weight"
    norm2 = "layers.{i}.final_layer_norm.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        pre = bool(c.get("do_layer_norm_before", True))
        return ArchInfo(
            family="opt", n_layers=cfg_int(c, "num_hidden_layers"), d_model=d, n_heads=h, n_kv_heads=h,
            head_dim=d // h, d_ffn=cfg_int(c, "ffn_dim"), vocab_size=cfg_int(c, "vocab_size"),
            norm="layer" if pre else "post", gated_ffn=False, parallel_residual=False,
        )

    def _embedding_width(self) -> int:
        return cfg_int(self.config, "word_embed_proj_dim", default=self.info.d_model)

    def embedding_tensor_names(self) -> list[str]:
        extra = [self.name("project_in.weight")] if self.has("project_in.weight") else []
        return [self.embedding_name(), *extra]

    def embedding_rows(self, ids: Sequence[int]) -> torch.Tensor:
        x = super().embedding_rows(ids)
        if self.has("project_in.weight"):
            x = x @ self.tensor("project_in.weight").T
        return x
