"""Mixture-of-experts decoders with LLaMA-style attention: Mixtral and Qwen2-MoE (a sigmoid-gated shared expert).

The FFN of a sparse layer is a router ``(E, d)`` plus ``E`` gated experts; it is read into ``MoeWeights`` and
the FFN term is formed from the routed output on the probe rows (``owner._invariants``), so permuting the experts
together with the router's rows (a function-preserving transform) cannot move it. Dense layers (Qwen2-MoE's
``mlp_only_layers`` and ``decoder_sparse_step``) are read as LLaMA's.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from owner._adapters._base import FfnWeights, LayerWeights, Method, MoeWeights, cfg_int
from owner._adapters.llama import LlamaAdapter
from owner.errors import CheckpointError

_ATTN = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
         "self_attn.o_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight")
_GATED = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")


def empty_ffn(d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense FFN fields of a layer whose FFN is a mixture of experts: ``(0, d)`` and ``(d, 0)``."""
    return torch.empty((0, d), dtype=dtype), torch.empty((d, 0), dtype=dtype)


class _MoeAdapter(LlamaAdapter):
    """Shared parts: subclasses name the router, the experts and the shared experts."""

    def n_experts(self) -> int:
        raise NotImplementedError

    def expert_width(self) -> int:
        raise NotImplementedError

    def is_sparse(self, layer: int) -> bool:
        return True

    def router_name(self, layer: int) -> str:
        raise NotImplementedError

    def expert_names(self, layer: int, e: int) -> tuple[str, str, str]:
        """gate, up, down of expert ``e``."""
        raise NotImplementedError

    def shared_names(self, layer: int) -> list[tuple[str, str, str]]:
        return []

    def shared_gate_name(self, layer: int) -> str | None:
        return None

    def shared_width(self) -> int:
        return 0

    def moe_params(self) -> dict[str, object]:
        raise NotImplementedError

    def _moe_suffixes(self, layer: int) -> list[str]:
        out = [self.router_name(layer)]
        for e in range(self.n_experts()):
            out += list(self.expert_names(layer, e))
        for names in self.shared_names(layer):
            out += list(names)
        sg = self.shared_gate_name(layer)
        return out + ([sg] if sg else [])

    def layer_tensor_names(self, layer: int) -> list[str]:
        if not self.is_sparse(layer):
            return super().layer_tensor_names(layer)
        return [self.name(self._p(layer, x)) for x in (*_ATTN, *self._moe_suffixes(layer))]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        for suffix, shape in [("self_attn.q_proj.weight", (q, i.d_model)),
                              ("self_attn.k_proj.weight", (kv, i.d_model)),
                              ("self_attn.v_proj.weight", (kv, i.d_model)),
                              ("self_attn.o_proj.weight", (i.d_model, q))]:
            self.expect_shape(self._p(layer, suffix), shape)
        for ly in range(i.n_layers):  # sparse and dense layers differ; check one of each kind present
            if self.is_sparse(ly):
                self._check_moe_shapes(ly)
                break

    def _check_moe_shapes(self, layer: int) -> None:
        d, h, e = self.info.d_model, self.expert_width(), self.n_experts()
        self.expect_shape(self._p(layer, self.router_name(layer)), (e, d))
        for x in range(e):
            g, u, dn = self.expert_names(layer, x)
            for suffix, shape in ((g, (h, d)), (u, (h, d)), (dn, (d, h))):
                self.expect_shape(self._p(layer, suffix), shape)
        for g, u, dn in self.shared_names(layer):
            hs = self.shared_width()
            for suffix, shape in ((g, (hs, d)), (u, (hs, d)), (dn, (d, hs))):
                self.expect_shape(self._p(layer, suffix), shape)
        sg = self.shared_gate_name(layer)
        if sg is not None:
            self.expect_shape(self._p(layer, sg), (1, d))

    def _ffn(self, layer: int, names: tuple[str, str, str]) -> FfnWeights:
        g, u, d = (self.weight(self._p(layer, n)) for n in names)
        return g, u, d

    def read_moe(self, layer: int) -> MoeWeights:
        p = self.moe_params()
        sg = self.shared_gate_name(layer)
        bias = p.pop("score_bias_name", None)
        return MoeWeights(
            router=self.weight(self._p(layer, self.router_name(layer))),
            experts=tuple(self._ffn(layer, self.expert_names(layer, e)) for e in range(self.n_experts())),
            shared=tuple(self._ffn(layer, n) for n in self.shared_names(layer)),
            shared_gate=None if sg is None else self.weight(self._p(layer, sg)),
            score_bias=None if bias is None else self.tensor(self._p(layer, str(bias))),
            **p,  # type: ignore[arg-type]
        )

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        if not self.is_sparse(layer):
            return super()._layer(layer, method)
        t, w, p = self.tensor, self.weight, self._p
        wq = w(p(layer, "self_attn.q_proj.weight"))
        up, down = empty_ffn(self.info.d_model, wq.dtype)
        return LayerWeights(
            index=layer, wq=wq, wk=w(p(layer, "self_attn.k_proj.weight")), wv=w(p(layer, "self_attn.v_proj.weight")),
            wo=w(p(layer, "self_attn.o_proj.weight")), w_gate=None, w_up=up, w_down=down,
            g1=self.norm_weight(t(p(layer, "input_layernorm.weight"))),
            g2=self.norm_weight(t(p(layer, "post_attention_layernorm.weight"))),
            moe=self.read_moe(layer),
        )


def _positive(config: dict[str, object], *keys: str, default: int | None = None) -> int:
    v = cfg_int(config, *keys, default=default)
    if v < 1:
        raise CheckpointError(f"config.json: field {' / '.join(repr(k) for k in keys)} should be at least 1, got {v}")
    return v


class MixtralAdapter(_MoeAdapter):
    """Mixtral: every layer sparse; softmax router, top-k renormalised; experts ``w1`` (gate), ``w3`` (up),
    ``w2`` (down)."""

    model_types: ClassVar[tuple[str, ...]] = ("mixtral",)

    def n_experts(self) -> int:
        return _positive(self.config, "num_local_experts")

    def expert_width(self) -> int:
        return self.info.d_ffn

    def router_name(self, layer: int) -> str:
        return "block_sparse_moe.gate.weight"

    def expert_names(self, layer: int, e: int) -> tuple[str, str, str]:
        b = f"block_sparse_moe.experts.{e}."
        return b + "w1.weight", b + "w3.weight", b + "w2.weight"

    def moe_params(self) -> dict[str, object]:
        k = _positive(self.config, "num_experts_per_tok")
        return dict(top_k=k, scoring="softmax", norm_topk=True)


class Qwen2MoeAdapter(_MoeAdapter):
    """Qwen2-MoE: sparse layers every ``decoder_sparse_step`` outside ``mlp_only_layers``; softmax router, top-k
    renormalised when ``norm_topk_prob``; one shared expert gated by ``sigmoid(shared_expert_gate x)``."""

    model_types: ClassVar[tuple[str, ...]] = ("qwen2_moe",)
    # config.json spellings of the expert count (transformers >= 5 writes Qwen3-MoE's as ``num_local_experts``)
    experts_keys: ClassVar[tuple[str, ...]] = ("num_experts",)

    def n_experts(self) -> int:
        return _positive(self.config, *self.experts_keys)

    def expert_width(self) -> int:
        return _positive(self.config, "moe_intermediate_size")

    def shared_width(self) -> int:
        return _positive(self.config, "shared_expert_intermediate_size")

    def is_sparse(self, layer: int) -> bool:
        only = self.config.get("mlp_only_layers") or []
        step = cfg_int(self.config, "decoder_sparse_step", default=1)
        return layer not in only and cfg_int(self.config, *self.experts_keys, default=0) > 0 and (layer + 1) % step == 0

    def router_name(self, layer: int) -> str:
        return "mlp.gate.weight"

    def expert_names(self, layer: int, e: int) -> tuple[str, str, str]:
        b = f"mlp.experts.{e}."
        return tuple(b + n for n in _GATED)  # type: ignore[return-value]

    def shared_names(self, layer: int) -> list[tuple[str, str, str]]:
        return [tuple("mlp.shared_expert." + n for n in _GATED)]  # type: ignore[list-item]

    def shared_gate_name(self, layer: int) -> str | None:
        return "mlp.shared_expert_gate.weight"

    def moe_params(self) -> dict[str, object]:
        k = _positive(self.config, "num_experts_per_tok")
        return dict(top_k=k, scoring="softmax", norm_topk=bool(self.config.get("norm_topk_prob", False)))
