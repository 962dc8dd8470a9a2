"""Falcon: pre-LayerNorm, parallel attention, fused ``query_key_value`` in one of three layouts:

- ``new_decoder_architecture``: grouped per KV head ``[group][q_1..q_r, k, v][dh]`` (GQA);
- ``multi_query``: all query heads, then one key head, then one value head;
- otherwise per head ``[head][q, k, v][dh]``.
Two norms (``ln_attn``, ``ln_mlp``) in the new architecture, one shared ``input_layernorm`` in the old
parallel one, and ``input_layernorm``/``post_attention_layernorm`` when not parallel."""

from __future__ import annotations

from typing import ClassVar

import torch

from owner._adapters._base import (
    ArchInfo,
    Method,
    PlainAdapter,
    cfg_int,
    split_interleaved_qkv,
    split_thirds,
)


class FalconAdapter(PlainAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("falcon", "RefinedWeb", "RefinedWebModel")
    prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    embedding_suffix: ClassVar[str] = "word_embeddings.weight"
    q = k = v = "h.{i}.self_attention.query_key_value.weight"
    o = "h.{i}.self_attention.dense.weight"
    up = "h.{i}.mlp.dense_h_to_4h.weight"
    down = "h.{i}.mlp.dense_4h_to_h.weight"

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads", "n_head")
        if c.get("new_decoder_architecture"):
            kv = cfg_int(c, "num_kv_heads", "n_head_kv", default=h)
        elif c.get("multi_query", True):
            kv = 1
        else:
            kv = h
        return ArchInfo(
            family="falcon", n_layers=cfg_int(c, "num_hidden_layers", "n_layer"), d_model=d, n_heads=h,
            n_kv_heads=kv, head_dim=d // h, d_ffn=cfg_int(c, "ffn_hidden_size", default=4 * d),
            vocab_size=cfg_int(c, "vocab_size"), norm="layer", gated_ffn=False,
            parallel_residual=bool(c.get("parallel_attn", True)),
        )

    def _layout(self) -> str:
        c = self.config
        if c.get("new_decoder_architecture"):
            return "grouped"
        return "mqa" if c.get("multi_query", True) else "interleaved"

    def _norm_templates(self, layer: int) -> tuple[str, str]:
        if self.has(f"h.{layer}.ln_attn.weight"):
            return "h.{i}.ln_attn.weight", "h.{i}.ln_mlp.weight"
        if self.has(f"h.{layer}.post_attention_layernorm.weight"):
            return "h.{i}.input_layernorm.weight", "h.{i}.post_attention_layernorm.weight"
        return "h.{i}.input_layernorm.weight", "h.{i}.input_layernorm.weight"

    def layer_tensor_names(self, layer: int) -> list[str]:
        n1, n2 = self._norm_templates(layer)
        ts = [self.q, self.o, self.up, self.down, n1, n2]
        return [self.name(t.format(i=layer)) for t in dict.fromkeys(ts)]

    def norms(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        n1, n2 = self._norm_templates(layer)
        return self.tensor(n1.format(i=layer)), self.tensor(n2.format(i=layer))

    def qkv(self, layer: int, method: Method) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = self.info
        w = self._t(self.q, layer)
        dh, d = i.head_dim, w.shape[1]
        layout = self._layout()
        if method == "huref-2024" and layout == "interleaved":  # as the reference code does
            q, k, v = split_thirds(w)
        elif layout == "grouped":
            r = i.n_heads // i.n_kv_heads
            g = w.reshape(i.n_kv_heads, r + 2, dh, d)
            q = g[:, :r].reshape(i.n_heads * dh, d)
            k = g[:, r].reshape(i.n_kv_heads * dh, d)
            v = g[:, r + 1].reshape(i.n_kv_heads * dh, d)
        elif layout == "mqa":
            q, k, v = w[: i.n_heads * dh], w[i.n_heads * dh : (i.n_heads + 1) * dh], w[(i.n_heads + 1) * dh :]
        else:
            q, k, v = split_interleaved_qkv(w, i.n_heads, dh)
        return q, k, v
