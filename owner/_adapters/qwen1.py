"""The first Qwen (``model_type`` "qwen": Qwen-7B/14B/72B, and the language model of Qwen-VL): RMSNorm
pre-norm (``ln_1``, ``ln_2``), rotary attention with every query head owning its key and value head, and a
gated SiLU FFN.

Its ``attn.c_attn`` is an ``nn.Linear`` (``(out, in)``, unlike GPT-2's Conv1D of the same name) of ``3d`` rows
with a bias; the attention splits its output with ``split(d, dim=2)``: rows ``[0, d)`` are the queries,
``[d, 2d)`` the keys, ``[2d, 3d)`` the values, each head-major. ``attn.c_proj`` is the output projection. The
FFN computes ``c_proj(w1(x) * silu(w2(x)))``: ``w2`` is the gate, ``w1`` the up projection, ``mlp.c_proj`` the
down projection, each of ``intermediate_size / 2`` units (the config counts both halves).
"""

from __future__ import annotations

from typing import ClassVar

from owner._adapters._base import Adapter, ArchInfo, LayerWeights, Method, cfg_int, split_thirds
from owner.errors import CheckpointError


class Qwen1Adapter(Adapter):
    model_types: ClassVar[tuple[str, ...]] = ("qwen",)
    prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    embedding_suffix: ClassVar[str] = "wte.weight"
    _suffixes: ClassVar[tuple[str, ...]] = (
        "attn.c_attn.weight", "attn.c_proj.weight", "mlp.w2.weight", "mlp.w1.weight", "mlp.c_proj.weight",
        "ln_1.weight", "ln_2.weight",
    )

    def _read_info(self) -> ArchInfo:
        c = self.config
        d = cfg_int(c, "hidden_size")
        h = cfg_int(c, "num_attention_heads")
        kv_channels = cfg_int(c, "kv_channels", default=d // h)
        inner = cfg_int(c, "intermediate_size")
        if inner % 2:
            raise CheckpointError(
                f"config.json: Qwen's intermediate_size counts both FFN halves and must be even, got {inner}"
            )
        return ArchInfo(
            family="qwen", n_layers=cfg_int(c, "num_hidden_layers"), d_model=d, n_heads=h, n_kv_heads=h,
            head_dim=kv_channels, d_ffn=inner // 2, vocab_size=cfg_int(c, "vocab_size"), norm="rms",
            gated_ffn=True, parallel_residual=False,
        )

    def _p(self, layer: int, suffix: str) -> str:
        return f"h.{layer}.{suffix}"

    def layer_tensor_names(self, layer: int) -> list[str]:
        return [self.name(self._p(layer, s)) for s in self._suffixes]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        q = i.n_heads * i.head_dim
        for suffix, shape in zip(self._suffixes, [
            (3 * q, i.d_model), (i.d_model, q), (i.d_ffn, i.d_model), (i.d_ffn, i.d_model), (i.d_model, i.d_ffn),
            (i.d_model,), (i.d_model,),
        ], strict=True):
            self.expect_shape(self._p(layer, suffix), shape)

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        w, p = self.weight, self._p
        wq, wk, wv = split_thirds(w(p(layer, "attn.c_attn.weight")))
        return LayerWeights(
            index=layer, wq=wq, wk=wk, wv=wv, wo=w(p(layer, "attn.c_proj.weight")),
            w_gate=w(p(layer, "mlp.w2.weight")), w_up=w(p(layer, "mlp.w1.weight")),
            w_down=w(p(layer, "mlp.c_proj.weight")),
            g1=self.tensor(p(layer, "ln_1.weight")), g2=self.tensor(p(layer, "ln_2.weight")),
        )
