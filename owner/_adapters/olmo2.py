"""OLMo-2: no pre-norms. Attention and FFN read the raw residual stream; their outputs are RMS-normed
(``post_attention_layernorm``, ``post_feedforward_layernorm``) before being added back. QK-norm normalises the
query projection of all heads together (``q_norm`` has ``H*head_dim`` entries), likewise the keys.

The terms: the attention and FFN read the probe rows unscaled (``g1 = g2 = None``); the output norms act after
``Wo`` and ``Wdown`` and are left out of the terms (every function-preserving transform of these models moves
them together with the stream, see ``zoo._attacks_arch``)."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import LayerWeights, Method
from owner._adapters.qwen3 import Qwen3Adapter


class Olmo2Adapter(Qwen3Adapter):
    model_types: ClassVar[tuple[str, ...]] = ("olmo2",)
    per_head_qk_norm: ClassVar[bool] = False

    # no pre-norms; output norms after attention and FFN (not in the terms)
    NORMS: ClassVar[tuple[str, ...]] = ("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")

    def layer_tensor_names(self, layer: int) -> list[str]:
        s = [*(x for _f, x in self.PROJECTIONS), "self_attn.q_norm.weight", "self_attn.k_norm.weight", *self.NORMS]
        return [self.name(self._p(layer, x)) for x in s]

    def _check_layer_shapes(self, layer: int) -> None:
        q_shape, k_shape = self._qk_norm_shapes()
        for suffix, shape in [*self._projection_shapes(), ("self_attn.q_norm.weight", q_shape),
                              ("self_attn.k_norm.weight", k_shape), *((x, (self.info.d_model,)) for x in self.NORMS)]:
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, p = self.tensor, self._p
        return LayerWeights(
            index=layer,
            **self._projections(layer),
            g1=None,
            g2=None,
            q_norm=t(p(layer, "self_attn.q_norm.weight")),
            k_norm=t(p(layer, "self_attn.k_norm.weight")),
        )
