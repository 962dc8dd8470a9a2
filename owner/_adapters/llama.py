"""LLaMA-style decoders (llama, mistral, qwen2): RMSNorm, separate q/k/v/o, gated SiLU FFN, GQA."""

from __future__ import annotations

from typing import ClassVar

import torch

from owner._adapters._base import Adapter, ArchInfo, LayerWeights, Method, cfg_int


class LlamaAdapter(Adapter):
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2")
    prefixes: ClassVar[tuple[str, ...]] = ("model.", "")
    embedding_suffix: ClassVar[str] = "embed_tokens.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        return ArchInfo(
            family=str(c.get("model_type", self.model_types[0])),
            n_layers=cfg_int(c, "num_hidden_layers"),
            d_model=d,
            n_heads=h,
            n_kv_heads=cfg_int(c, "num_key_value_heads", default=h),
            head_dim=cfg_int(c, "head_dim", default=d // h),
            d_ffn=cfg_int(c, "intermediate_size"),
            vocab_size=cfg_int(c, "vocab_size"),
            norm="rms",
            gated_ffn=True,
            parallel_residual=False,
        )

    def _p(self, layer: int, suffix: str) -> str:
        return f"layers.{layer}.{suffix}"

    def layer_tensor_names(self, layer: int) -> list[str]:
        s = [
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
            "input_layernorm.weight", "post_attention_layernorm.weight",
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
            ("mlp.gate_proj.weight", (i.d_ffn, i.d_model)),
            ("mlp.up_proj.weight", (i.d_ffn, i.d_model)),
            ("mlp.down_proj.weight", (i.d_model, i.d_ffn)),
            ("input_layernorm.weight", (i.d_model,)),
        ]:
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, w = self.tensor, self.weight
        p = self._p
        g1 = t(p(layer, "input_layernorm.weight"))
        g2 = t(p(layer, "post_attention_layernorm.weight"))
        return LayerWeights(
            index=layer,
            wq=w(p(layer, "self_attn.q_proj.weight")),
            wk=w(p(layer, "self_attn.k_proj.weight")),
            wv=w(p(layer, "self_attn.v_proj.weight")),
            wo=w(p(layer, "self_attn.o_proj.weight")),
            w_gate=w(p(layer, "mlp.gate_proj.weight")),
            w_up=w(p(layer, "mlp.up_proj.weight")),
            w_down=w(p(layer, "mlp.down_proj.weight")),
            g1=self.norm_weight(g1),
            g2=self.norm_weight(g2),
        )

    def norm_weight(self, stored: torch.Tensor) -> torch.Tensor:
        """The weight the norm multiplies by, from its stored form."""
        return stored
