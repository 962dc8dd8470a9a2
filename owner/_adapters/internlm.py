"""InternLM (``model_type`` "internlm") and InternLM2 ("internlm2").

InternLM is LLaMA's block with biases on the four attention projections (``config.bias``): the same tensor
names (``model.layers.N.self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, ``input_layernorm``,
``post_attention_layernorm``), every query head with its own key and value head. Biases do not enter the
terms (no family's do), so it is read as LLaMA is.

InternLM2 renames and packs: ``model.tok_embeddings``, ``attention_norm``/``ffn_norm`` (RMSNorm),
``attention.wo``, ``feed_forward.w1`` (gate, SiLU), ``w3`` (up), ``w2`` (down), ``output`` (the head), and one
``attention.wqkv`` whose rows are grouped per key/value head: its attention reshapes the output as
``(h gs d)`` with ``gs = Hq/Hkv + 2``, taking ``[..., :gs-2, :]`` as the group's query heads, ``[..., -2, :]``
as its key and ``[..., -1, :]`` as its value. So rows ``[g][q_1 .. q_r, k, v][dh]`` for group ``g``; query
head ``g*r + j`` uses key head ``g``, which is the canonical ``h // r`` grouping.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from owner._adapters._base import Adapter, ArchInfo, LayerWeights, Method, cfg_int
from owner._adapters.llama import LlamaAdapter


class InternLMAdapter(LlamaAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("internlm",)


def split_grouped_qkv(w: torch.Tensor, n_heads: int, n_kv_heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """Split a packed QKV grouped per KV head, ``[group][q_1..q_r, k, v][dh]`` (InternLM2, Falcon's new
    decoder architecture), into ``wq (Hq*dh, d)``, ``wk, wv (Hkv*dh, d)``."""
    r = n_heads // n_kv_heads
    g = w.reshape(n_kv_heads, r + 2, head_dim, w.shape[-1])
    return (g[:, :r].reshape(n_heads * head_dim, -1), g[:, r].reshape(n_kv_heads * head_dim, -1),
            g[:, r + 1].reshape(n_kv_heads * head_dim, -1))


class InternLM2Adapter(Adapter):
    model_types: ClassVar[tuple[str, ...]] = ("internlm2",)
    prefixes: ClassVar[tuple[str, ...]] = ("model.", "")
    embedding_suffix: ClassVar[str] = "tok_embeddings.weight"
    _suffixes: ClassVar[tuple[str, ...]] = (
        "attention.wqkv.weight", "attention.wo.weight", "feed_forward.w1.weight", "feed_forward.w3.weight",
        "feed_forward.w2.weight", "attention_norm.weight", "ffn_norm.weight",
    )

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        return ArchInfo(
            family="internlm2", n_layers=cfg_int(c, "num_hidden_layers"), d_model=d, n_heads=h,
            n_kv_heads=cfg_int(c, "num_key_value_heads", default=h), head_dim=d // h,
            d_ffn=cfg_int(c, "intermediate_size"), vocab_size=cfg_int(c, "vocab_size"), norm="rms",
            gated_ffn=True, parallel_residual=False,
        )

    def _p(self, layer: int, suffix: str) -> str:
        return f"layers.{layer}.{suffix}"

    def layer_tensor_names(self, layer: int) -> list[str]:
        return [self.name(self._p(layer, s)) for s in self._suffixes]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        for suffix, shape in zip(self._suffixes, [
            (q + 2 * kv, i.d_model), (i.d_model, q), (i.d_ffn, i.d_model), (i.d_ffn, i.d_model),
            (i.d_model, i.d_ffn), (i.d_model,), (i.d_model,),
        ], strict=True):
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        i, w, p = self.info, self.weight, self._p
        wq, wk, wv = split_grouped_qkv(w(p(layer, "attention.wqkv.weight")), i.n_heads, i.n_kv_heads, i.head_dim)
        return LayerWeights(
            index=layer, wq=wq, wk=wk, wv=wv, wo=w(p(layer, "attention.wo.weight")),
            w_gate=w(p(layer, "feed_forward.w1.weight")), w_up=w(p(layer, "feed_forward.w3.weight")),
            w_down=w(p(layer, "feed_forward.w2.weight")),
            g1=self.tensor(p(layer, "attention_norm.weight")), g2=self.tensor(p(layer, "ffn_norm.weight")),
        )
