"""Gemma-2 and Gemma-3 (text): Gemma's scaled tied embedding (``x sqrt(d)``) and ``1 + w`` RMSNorm weights, with
sandwich norms: a pre-norm before attention (``input_layernorm``) and before the FFN
(``pre_feedforward_layernorm``), and a norm on each block's output (``post_attention_layernorm``,
``post_feedforward_layernorm``) before it is added to the stream. Gemma-3 adds per-head QK-norm (``q_norm``,
``k_norm``, also ``1 + w``); ``gemma3_text`` is the ``Gemma3ForCausalLM`` layout (``model.layers...``).

The terms fold the pre-norms as for LLaMA (``g1``, ``g2``); the output norms act after ``Wo`` / ``Wdown`` and are
left out (the transforms that preserve these models move them with the stream, see ``zoo._attacks_arch``)."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import LayerWeights, Method
from owner._adapters.gemma import GemmaAdapter


class Gemma2Adapter(GemmaAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("gemma2",)
    qk_norm: ClassVar[bool] = False

    def _suffixes(self) -> list[str]:
        s = [*(x for _f, x in self.PROJECTIONS), "input_layernorm.weight", "post_attention_layernorm.weight",
             "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"]
        return s + (["self_attn.q_norm.weight", "self_attn.k_norm.weight"] if self.qk_norm else [])

    def layer_tensor_names(self, layer: int) -> list[str]:
        return [self.name(self._p(layer, x)) for x in self._suffixes()]

    def _check_layer_shapes(self, layer: int) -> None:
        super()._check_layer_shapes(layer)
        d, dh = self.info.d_model, self.info.head_dim
        for x in ("post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            self.expect_shape(self._p(layer, f"{x}.weight"), (d,))
        if self.qk_norm:
            self.expect_shape(self._p(layer, "self_attn.q_norm.weight"), (dh,))
            self.expect_shape(self._p(layer, "self_attn.k_norm.weight"), (dh,))

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, p, g = self.tensor, self._p, self.norm_weight
        qn = g(t(p(layer, "self_attn.q_norm.weight"))) if self.qk_norm else None
        kn = g(t(p(layer, "self_attn.k_norm.weight"))) if self.qk_norm else None
        return LayerWeights(
            index=layer,
            **self._projections(layer),
            g1=g(t(p(layer, "input_layernorm.weight"))),
            g2=g(t(p(layer, "pre_feedforward_layernorm.weight"))),
            q_norm=qn,
            k_norm=kn,
        )


class Gemma3TextAdapter(Gemma2Adapter):
    model_types: ClassVar[tuple[str, ...]] = ("gemma3_text",)
    qk_norm: ClassVar[bool] = True
