"""DeepSeek-V3 (and V2's layout): multi-head latent attention (MLA) and DeepSeek-MoE FFNs.

Attention reads ``MlaWeights`` (low-rank query and key/value compressions with their own RMSNorms and a
decoupled rotary part; see ``owner._invariants.mla_terms`` for which products are invariant). Layers before
``first_k_dense_replace`` have a dense gated FFN; the others a sigmoid-scored router with a score-correction bias
used for choosing only, group-limited top-k, renormalised top-k scores times ``routed_scaling_factor``, and
``n_shared_experts`` shared experts (stored as one FFN ``n_shared_experts`` times as wide).
"""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import ArchInfo, LayerWeights, Method, MlaWeights, cfg_int
from owner._adapters.moe import _GATED, _MoeAdapter, _positive, empty_ffn
from owner.errors import CheckpointError


class DeepseekV3Adapter(_MoeAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("deepseek_v3",)

    def _read_info(self) -> ArchInfo:
        c = self.config
        h = cfg_int(c, "num_attention_heads")
        nope, rope = cfg_int(c, "qk_nope_head_dim"), cfg_int(c, "qk_rope_head_dim")
        return ArchInfo(
            family=str(c.get("model_type", self.model_types[0])), n_layers=cfg_int(c, "num_hidden_layers"),
            d_model=cfg_int(c, "hidden_size"), n_heads=h, n_kv_heads=h, head_dim=nope + rope,
            d_ffn=cfg_int(c, "intermediate_size"), vocab_size=cfg_int(c, "vocab_size"), norm="rms",
            gated_ffn=True, parallel_residual=False,
        )

    # -- MLA ------------------------------------------------------------------------------------------
    def _q_lora(self) -> int | None:
        v = self.config.get("q_lora_rank")
        return None if v is None else cfg_int(self.config, "q_lora_rank")

    def _attn_suffixes(self) -> list[str]:
        q = (["self_attn.q_a_proj.weight", "self_attn.q_a_layernorm.weight", "self_attn.q_b_proj.weight"]
             if self._q_lora() is not None else ["self_attn.q_proj.weight"])
        return [*q, "self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_a_layernorm.weight",
                "self_attn.kv_b_proj.weight", "self_attn.o_proj.weight", "input_layernorm.weight",
                "post_attention_layernorm.weight"]

    def _dims(self) -> tuple[int, int, int, int, int]:
        c = self.config
        return (self.info.n_heads, cfg_int(c, "qk_nope_head_dim"), cfg_int(c, "qk_rope_head_dim"),
                cfg_int(c, "v_head_dim"), cfg_int(c, "kv_lora_rank"))

    # -- MoE ------------------------------------------------------------------------------------------
    def n_experts(self) -> int:
        return _positive(self.config, "n_routed_experts")

    def expert_width(self) -> int:
        return _positive(self.config, "moe_intermediate_size")

    def shared_width(self) -> int:
        return self.expert_width() * cfg_int(self.config, "n_shared_experts", default=0)

    def is_sparse(self, layer: int) -> bool:
        c = self.config
        if c.get("n_routed_experts") is None:
            return False
        freq = cfg_int(c, "moe_layer_freq", default=1)
        return layer >= cfg_int(c, "first_k_dense_replace", default=0) and layer % freq == 0

    def router_name(self, layer: int) -> str:
        return "mlp.gate.weight"

    def expert_names(self, layer: int, e: int) -> tuple[str, str, str]:
        b = f"mlp.experts.{e}."
        return tuple(b + n for n in _GATED)  # type: ignore[return-value]

    def shared_names(self, layer: int) -> list[tuple[str, str, str]]:
        if not cfg_int(self.config, "n_shared_experts", default=0):
            return []
        return [tuple("mlp.shared_experts." + n for n in _GATED)]  # type: ignore[list-item]

    def moe_params(self) -> dict[str, object]:
        c = self.config
        n_group = cfg_int(c, "n_group", default=1)
        if self.n_experts() % n_group:
            raise CheckpointError(f"config.json: {self.n_experts()} experts do not split into {n_group} groups")
        scale = c.get("routed_scaling_factor", 1.0)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            raise CheckpointError(f"config.json: field 'routed_scaling_factor' should be a number, got {scale!r}")
        return dict(top_k=_positive(c, "num_experts_per_tok"), scoring="sigmoid",
                    norm_topk=bool(c.get("norm_topk_prob", True)), scale=float(scale), n_group=n_group,
                    topk_group=cfg_int(c, "topk_group", default=1),
                    score_bias_name="mlp.gate.e_score_correction_bias")

    def _moe_suffixes(self, layer: int) -> list[str]:
        return [*super()._moe_suffixes(layer), "mlp.gate.e_score_correction_bias"]

    # -- layers ---------------------------------------------------------------------------------------
    def layer_tensor_names(self, layer: int) -> list[str]:
        ffn = self._moe_suffixes(layer) if self.is_sparse(layer) else ["mlp." + n for n in _GATED]
        return [self.name(self._p(layer, x)) for x in (*self._attn_suffixes(), *ffn)]

    def _check_layer_shapes(self, layer: int) -> None:
        d = self.info.d_model
        h, nope, rope, dv, rkv = self._dims()
        rq = self._q_lora()
        expect: list[tuple[str, tuple[int, ...]]] = [
            ("self_attn.kv_a_proj_with_mqa.weight", (rkv + rope, d)), ("self_attn.kv_a_layernorm.weight", (rkv,)),
            ("self_attn.kv_b_proj.weight", (h * (nope + dv), rkv)), ("self_attn.o_proj.weight", (d, h * dv)),
        ]
        if rq is None:
            expect.append(("self_attn.q_proj.weight", (h * (nope + rope), d)))
        else:
            expect += [("self_attn.q_a_proj.weight", (rq, d)), ("self_attn.q_a_layernorm.weight", (rq,)),
                       ("self_attn.q_b_proj.weight", (h * (nope + rope), rq))]
        for suffix, shape in expect:
            self.expect_shape(self._p(layer, suffix), shape)
        for ly in range(self.info.n_layers):
            if self.is_sparse(ly):
                self._check_moe_shapes(ly)
                break

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        t, w, p = self.tensor, self.weight, self._p
        h, nope, rope, dv, rkv = self._dims()
        lora = self._q_lora() is not None
        mla = MlaWeights(
            q_a=w(p(layer, "self_attn.q_a_proj.weight")) if lora else None,
            q_a_norm=t(p(layer, "self_attn.q_a_layernorm.weight")) if lora else None,
            q_b=w(p(layer, "self_attn.q_b_proj.weight" if lora else "self_attn.q_proj.weight")),
            kv_a=w(p(layer, "self_attn.kv_a_proj_with_mqa.weight")),
            kv_a_norm=t(p(layer, "self_attn.kv_a_layernorm.weight")),
            kv_b=w(p(layer, "self_attn.kv_b_proj.weight")),
            n_heads=h, nope_dim=nope, rope_dim=rope, v_dim=dv, kv_rank=rkv,
        )
        wo = w(p(layer, "self_attn.o_proj.weight"))
        none, _ = empty_ffn(self.info.d_model, wo.dtype)
        sparse = self.is_sparse(layer)
        if sparse:
            up, down = empty_ffn(self.info.d_model, wo.dtype)
            gate = None
        else:
            gate, up, down = (w(p(layer, "mlp." + n)) for n in _GATED)
        return LayerWeights(
            index=layer, wq=none, wk=none, wv=none, wo=wo, w_gate=gate, w_up=up, w_down=down,
            g1=t(p(layer, "input_layernorm.weight")), g2=t(p(layer, "post_attention_layernorm.weight")),
            moe=self.read_moe(layer) if sparse else None, mla=mla,
        )
