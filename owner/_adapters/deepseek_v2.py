"""DeepSeek-V2 (and V2-Lite): the latent attention and tensor layout of DeepSeek-V3 (``owner._adapters.deepseek``)
with V2's router.

What differs from V3, as transformers' ``DeepseekV2TopkRouter`` routes: softmax scores (not sigmoid) and no
score-correction bias; ``topk_method`` ``greedy`` takes the top-k of all experts, ``group_limited_greedy`` first
keeps the ``topk_group`` of ``n_group`` groups whose best expert scores highest (V3 sums a group's two best);
the chosen scores times ``routed_scaling_factor``, renormalised first only when ``norm_topk_prob`` (false in the
published V2 and V2-Lite configs; transformers' class never renormalises). V2-Lite has no query compression
(``q_lora_rank`` null: ``q_proj`` reads the stream), which the V3 adapter already reads. Layers before
``first_k_dense_replace`` are dense.
"""

from __future__ import annotations

from typing import ClassVar

from owner._adapters.deepseek import DeepseekV3Adapter
from owner._adapters.moe import _MoeAdapter
from owner.errors import CheckpointError

_TOPK_METHODS = ("greedy", "group_limited_greedy")


class DeepseekV2Adapter(DeepseekV3Adapter):
    model_types: ClassVar[tuple[str, ...]] = ("deepseek_v2",)

    def moe_params(self) -> dict[str, object]:
        p = super().moe_params()
        method = self.config.get("topk_method", "greedy")
        if method not in _TOPK_METHODS:
            raise CheckpointError(
                f"config.json: topk_method {method!r} is not a DeepSeek-V2 router; expected one of "
                f"{', '.join(_TOPK_METHODS)}"
            )
        del p["score_bias_name"]
        p.update(scoring="softmax", norm_topk=bool(self.config.get("norm_topk_prob", False)), group_top=1)
        if method == "greedy":
            p.update(n_group=1, topk_group=1)
        return p

    def _moe_suffixes(self, layer: int) -> list[str]:
        return _MoeAdapter._moe_suffixes(self, layer)  # no score-correction bias
