"""Baichuan and Baichuan 2 (``model_type`` "baichuan"): LLaMA's block (RMSNorm pre-norm, gated SiLU FFN
``gate_proj``/``up_proj``/``down_proj``, no biases) with the attention's three projections packed in one
``self_attn.W_pack`` of ``3d`` rows.

Baichuan's attention splits the packed output with ``unflatten(-1, (3, d))``: rows ``[0, d)`` are the
queries, ``[d, 2d)`` the keys and ``[2d, 3d)`` the values, each head-major ``[head][dh]`` (every head has its
own key and value: no grouping). The 7B models rotate q and k (RoPE); the 13B models add ALiBi biases to the
scores instead. Neither enters the terms (they are position-free), so one adapter reads both. Baichuan 2's
``NormHead`` normalises the output head at run time; the head is not read here either.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from owner._adapters._base import ArchInfo, LayerWeights, Method, cfg_int, split_thirds
from owner._adapters.llama import LlamaAdapter


class BaichuanAdapter(LlamaAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("baichuan",)
    packed: ClassVar[str] = "self_attn.W_pack.weight"
    _separate: ClassVar[tuple[str, ...]] = (
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    )

    def _read_info(self) -> ArchInfo:
        return replace(super()._read_info(), n_kv_heads=cfg_int(self.config, "num_attention_heads"))  # no GQA

    def layer_tensor_names(self, layer: int) -> list[str]:
        names = super().layer_tensor_names(layer)
        separate = {self.name(self._p(layer, s)) for s in self._separate}
        return [self.name(self._p(layer, self.packed))] + [n for n in names if n not in separate]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        d_attn = i.n_heads * i.head_dim
        for suffix, shape in [
            (self.packed, (3 * d_attn, i.d_model)),
            ("self_attn.o_proj.weight", (i.d_model, d_attn)),
            ("mlp.gate_proj.weight", (i.d_ffn, i.d_model)),
            ("mlp.up_proj.weight", (i.d_ffn, i.d_model)),
            ("mlp.down_proj.weight", (i.d_model, i.d_ffn)),
            ("input_layernorm.weight", (i.d_model,)),
        ]:
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, w, p = self.tensor, self.weight, self._p
        wq, wk, wv = split_thirds(w(p(layer, self.packed)))
        return LayerWeights(
            index=layer, wq=wq, wk=wk, wv=wv,
            wo=w(p(layer, "self_attn.o_proj.weight")),
            w_gate=w(p(layer, "mlp.gate_proj.weight")),
            w_up=w(p(layer, "mlp.up_proj.weight")),
            w_down=w(p(layer, "mlp.down_proj.weight")),
            g1=t(p(layer, "input_layernorm.weight")),
            g2=t(p(layer, "post_attention_layernorm.weight")),
        )
