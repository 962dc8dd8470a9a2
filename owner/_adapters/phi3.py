"""Phi-3: LLaMA-like, with fused ``qkv_proj`` (rows: all query heads, then keys, then values) and fused
``gate_up_proj`` (rows: gate, then up)."""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import LayerWeights, Method
from owner._adapters.llama import LlamaAdapter


class Phi3Adapter(LlamaAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("phi3",)

    def layer_tensor_names(self, layer: int) -> list[str]:
        s = [
            "self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight",
            "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
        ]
        return [self.name(self._p(layer, x)) for x in s]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        self.expect_shape(self._p(layer, "self_attn.qkv_proj.weight"), (q + 2 * kv, i.d_model))
        self.expect_shape(self._p(layer, "self_attn.o_proj.weight"), (i.d_model, q))
        self.expect_shape(self._p(layer, "mlp.gate_up_proj.weight"), (2 * i.d_ffn, i.d_model))
        self.expect_shape(self._p(layer, "mlp.down_proj.weight"), (i.d_model, i.d_ffn))

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        i = self.info
        t, w, p = self.tensor, self.weight, self._p
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        qkv = w(p(layer, "self_attn.qkv_proj.weight"))
        gate_up = w(p(layer, "mlp.gate_up_proj.weight"))
        return LayerWeights(
            index=layer,
            wq=qkv[:q],
            wk=qkv[q : q + kv],
            wv=qkv[q + kv :],
            wo=w(p(layer, "self_attn.o_proj.weight")),
            w_gate=gate_up[: i.d_ffn],
            w_up=gate_up[i.d_ffn :],
            w_down=w(p(layer, "mlp.down_proj.weight")),
            g1=t(p(layer, "input_layernorm.weight")),
            g2=t(p(layer, "post_attention_layernorm.weight")),
        )
