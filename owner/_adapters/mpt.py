"""MPT (MosaicML; ``model_type`` "mpt"): pre-LayerNorm (``low_precision_layernorm`` is a LayerNorm computed in the
autocast dtype: the same map, so the probe rows are centred as for any LayerNorm), ALiBi (no position
embedding, nothing to read), no biases by default, a plain GELU FFN of ``expansion_ratio x d`` units, and one
packed ``Wqkv`` per layer.

The packed rows follow MPT's split ``qkv.split([d, kv*dh, kv*dh])`` (llm-foundry; HF's ``MptAttention``
``chunk(3)`` is the ``kv = n_heads`` case): all query heads, then the key heads, then the value heads, each
head-major ``[head][dh]``. ``kv`` is ``n_heads`` for ``multihead_attention``, 1 for ``multiquery_attention``
and ``attn_config.kv_n_heads`` for ``grouped_query_attention``. Layouts whose terms this module cannot
compute exactly are refused with the reason: ``qk_ln`` (a LayerNorm on the query and key outputs) and FFN
types other than ``mptmlp``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from owner._adapters._base import ArchInfo, Method, PlainAdapter, cfg_int
from owner.errors import CheckpointError


def _attn_config(config: dict[str, Any]) -> dict[str, Any]:
    a = config.get("attn_config") or {}
    if not isinstance(a, dict):
        raise CheckpointError("config.json: attn_config should be an object")
    return a


def mpt_kv_heads(config: dict[str, Any], n_heads: int) -> int:
    """The number of key/value heads MPT's ``attn_config`` implies."""
    a = _attn_config(config)
    kind = a.get("attn_type", "multihead_attention")
    if kind == "multihead_attention":
        return n_heads
    if kind == "multiquery_attention":
        return 1
    if kind == "grouped_query_attention":
        return cfg_int(a, "kv_n_heads")
    raise CheckpointError(
        f"config.json: MPT attn_config.attn_type {kind!r} is not supported; supported: multihead_attention, "
        "multiquery_attention, grouped_query_attention"
    )


class MptAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("mpt",)
    prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    embedding_suffix: ClassVar[str] = "wte.weight"
    q = k = v = "blocks.{i}.attn.Wqkv.weight"
    o = "blocks.{i}.attn.out_proj.weight"
    up = "blocks.{i}.ffn.up_proj.weight"
    down = "blocks.{i}.ffn.down_proj.weight"
    norm1 = "blocks.{i}.norm_1.weight"
    norm2 = "blocks.{i}.norm_2.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        if _attn_config(c).get("qk_ln"):
            raise CheckpointError(
                "config.json: MPT with attn_config.qk_ln (a LayerNorm on queries and keys) is not supported: the "
                "attention terms assume q and k are linear in the normed stream"
            )
        ffn = c.get("ffn_config") or {}
        if isinstance(ffn, dict) and ffn.get("ffn_type", "mptmlp") != "mptmlp":
            raise CheckpointError(
                f"config.json: MPT ffn_config.ffn_type {ffn.get('ffn_type')!r} is not supported; supported: mptmlp"
            )
        d = cfg_int(c, "d_model", "hidden_size")
        h = cfg_int(c, "n_heads", "num_attention_heads")
        ratio = c.get("expansion_ratio", 4)
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or ratio <= 0:
            raise CheckpointError(f"config.json: expansion_ratio should be a positive number, got {ratio!r}")
        hidden = ffn.get("ffn_hidden_size") if isinstance(ffn, dict) else None
        return ArchInfo(
            family="mpt", n_layers=cfg_int(c, "n_layers", "num_hidden_layers"), d_model=d, n_heads=h,
            n_kv_heads=mpt_kv_heads(c, h), head_dim=d // h,
            d_ffn=hidden if isinstance(hidden, int) else int(ratio * d),
            vocab_size=cfg_int(c, "vocab_size"), norm="layer", gated_ffn=False, parallel_residual=False,
        )

    def qkv(self, layer: int, method: Method) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the same split for both methods: with kv = n_heads it is HuRef's split in thirds
        i = self.info
        w = self._t(self.q, layer)
        nq, nkv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        return w[:nq], w[nq : nq + nkv], w[nq + nkv :]
