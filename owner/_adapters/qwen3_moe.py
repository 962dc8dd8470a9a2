"""Qwen3-MoE: Qwen3's attention (per-head QK-norm, ``owner._adapters.qwen3``) with Qwen2-MoE's sparse FFN layout
(``owner._adapters.moe``: softmax router, top-k renormalised when ``norm_topk_prob``, dense layers from
``mlp_only_layers`` / ``decoder_sparse_step``) and no shared expert.

The two parents compose by method resolution: ``Qwen3Adapter`` adds the QK-norm weights on top of whatever its
next class reads for the layer, here ``Qwen2MoeAdapter``'s sparse or dense layer."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters.moe import Qwen2MoeAdapter
from owner._adapters.qwen3 import Qwen3Adapter


class Qwen3MoeAdapter(Qwen3Adapter, Qwen2MoeAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_moe",)
    experts_keys: ClassVar[tuple[str, ...]] = ("num_experts", "num_local_experts")

    def shared_width(self) -> int:
        return 0

    def shared_names(self, layer: int) -> list[tuple[str, str, str]]:
        return []

    def shared_gate_name(self, layer: int) -> str | None:
        return None
