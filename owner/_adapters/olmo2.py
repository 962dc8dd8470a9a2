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

    def layer_tensor_names(self, layer: int) -> list[str]:
        s = [
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
            "post_attention_layernorm.weight", "post_feedforward_layernorm.weight",
        ]
        return [self.name(self._p(layer, x)) for x in s]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        for suffix, shape in [
            ("self_attn.q_proj.weight", (q, i.d_model)),
            ("self_attn.k_proj.weight", (kv, i.d_model)),
            ("self_attn.v_proj.weight", (kv, i.d_model)),
            ("self_attn.o_proj.weight", (i.d_model, q)),
            ("self_attn.q_norm.weight", (q,)),
            ("self_attn.k_norm.weight", (kv,)),
            ("mlp.gate_proj.weight", (i.d_ffn, i.d_model)),
            ("mlp.up_proj.weight", (i.d_ffn, i.d_model)),
            ("mlp.down_proj.weight", (i.d_model, i.d_ffn)),
            ("post_attention_layernorm.weight", (i.d_model,)),
            ("post_feedforward_layernorm.weight", (i.d_model,)),
        ]:
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, w, p = self.tensor, self.weight, self._p
        return LayerWeights(
            index=layer,
            wq=w(p(layer, "self_attn.q_proj.weight")),
            wk=w(p(layer, "self_attn.k_proj.weight")),
            wv=w(p(layer, "self_attn.v_proj.weight")),
            wo=w(p(layer, "self_attn.o_proj.weight")),
            w_gate=w(p(layer, "mlp.gate_proj.weight")),
            w_up=w(p(layer, "mlp.up_proj.weight")),
            w_down=w(p(layer, "mlp.down_proj.weight")),
            g1=None,
            g2=None,
            q_norm=t(p(layer, "self_attn.q_norm.weight")),
            k_norm=t(p(layer, "self_attn.k_norm.weight")),
        )
