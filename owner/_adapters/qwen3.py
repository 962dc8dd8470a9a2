"""Qwen3: the LLaMA layout plus QK-norm, an RMSNorm of each head's query and key projection (weights
``q_norm``, ``k_norm`` of ``head_dim`` entries, shared by all heads) before the dot product. The QK term is then
formed from the normalised projections (``owner._invariants.qk_norm_term``)."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from owner._adapters._base import LayerWeights, Method
from owner._adapters.llama import LlamaAdapter


class Qwen3Adapter(LlamaAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("qwen3",)
    # entries of q_norm / k_norm: one head (per-head norm); OLMo-2 overrides with all heads
    per_head_qk_norm: ClassVar[bool] = True

    def layer_tensor_names(self, layer: int) -> list[str]:
        return [*super().layer_tensor_names(layer),
                *(self.name(self._p(layer, f"self_attn.{x}_norm.weight")) for x in "qk")]

    def _qk_norm_shapes(self) -> tuple[tuple[int], tuple[int]]:
        i = self.info
        if self.per_head_qk_norm:
            return (i.head_dim,), (i.head_dim,)
        return (i.n_heads * i.head_dim,), (i.n_kv_heads * i.head_dim,)

    def _check_layer_shapes(self, layer: int) -> None:
        super()._check_layer_shapes(layer)
        q_shape, k_shape = self._qk_norm_shapes()
        self.expect_shape(self._p(layer, "self_attn.q_norm.weight"), q_shape)
        self.expect_shape(self._p(layer, "self_attn.k_norm.weight"), k_shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, p = self.tensor, self._p
        return replace(
            super()._layer(layer, method),
            q_norm=self.norm_weight(t(p(layer, "self_attn.q_norm.weight"))),
            k_norm=self.norm_weight(t(p(layer, "self_attn.k_norm.weight"))),
        )
