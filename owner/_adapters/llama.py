"""LLaMA-style decoders (llama, mistral, qwen2): RMSNorm, separate q/k/v/o, gated SiLU FFN, GQA."""

from __future__ import annotations

from typing import ClassVar, TypedDict, cast

import torch

from owner._adapters._base import Adapter, ArchInfo, LayerWeights, Method, cfg_int


class Projections(TypedDict):
    """The projection matrices of a LLaMA-style layer (``LlamaAdapter.PROJECTIONS``)."""

    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    w_gate: torch.Tensor
    w_up: torch.Tensor
    w_down: torch.Tensor


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

    # The layer's projections: LayerWeights field -> HF weight, in a forward pass's order (shared by the
    # layouts built on this one: Qwen3, OLMo-2, Gemma-2/3).
    PROJECTIONS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("wq", "self_attn.q_proj.weight"), ("wk", "self_attn.k_proj.weight"), ("wv", "self_attn.v_proj.weight"),
        ("wo", "self_attn.o_proj.weight"), ("w_gate", "mlp.gate_proj.weight"), ("w_up", "mlp.up_proj.weight"),
        ("w_down", "mlp.down_proj.weight"),
    )

    def layer_tensor_names(self, layer: int) -> list[str]:
        s = [*(x for _f, x in self.PROJECTIONS), "input_layernorm.weight", "post_attention_layernorm.weight"]
        return [self.name(self._p(layer, x)) for x in s]

    def _projection_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Each projection's HF weight and the shape config.json implies."""
        i = self.info
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        shapes = [(q, i.d_model), (kv, i.d_model), (kv, i.d_model), (i.d_model, q), (i.d_ffn, i.d_model),
                  (i.d_ffn, i.d_model), (i.d_model, i.d_ffn)]
        return [(x, shape) for (_f, x), shape in zip(self.PROJECTIONS, shapes, strict=True)]

    def _projections(self, layer: int) -> Projections:
        """The layer's projection matrices, as ``LayerWeights`` keyword arguments."""
        return cast(Projections, {f: self.weight(self._p(layer, x)) for f, x in self.PROJECTIONS})

    def _check_layer_shapes(self, layer: int) -> None:
        for suffix, shape in [*self._projection_shapes(), ("input_layernorm.weight", (self.info.d_model,))]:
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, p = self.tensor, self._p
        return LayerWeights(
            index=layer,
            **self._projections(layer),
            g1=self.norm_weight(t(p(layer, "input_layernorm.weight"))),
            g2=self.norm_weight(t(p(layer, "post_attention_layernorm.weight"))),
        )

    def norm_weight(self, stored: torch.Tensor) -> torch.Tensor:
        """The weight the norm multiplies by, from its stored form."""
        return stored
