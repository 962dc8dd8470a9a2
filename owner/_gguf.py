"""GGUF files (llama.cpp): a lazy ``TensorSource`` in Hugging Face names, the config, and the weight commitment.

A ``.gguf`` file holds its own config (``<arch>.block_count``, ``<arch>.attention.head_count_kv``, ...), its
tokenizer (``tokenizer.ggml.*``, read by ``owner._vocab.read_gguf_vocabulary``) and its tensors under llama.cpp's
names (``token_embd``, ``blk.N.attn_q``, ``ffn_gate``, ...), each in one of ggml's types. This module presents
such a file in the view the adapters already read (``owner/_adapters``): a config dict with ``model_type`` and the
Hugging Face field names, and tensors under Hugging Face state-dict names in HF ``Linear`` layout, converted to
fp32 by the ``gguf`` package's own dequantisers (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ... Q6_K and
the other types it implements).

Architectures read (``general.architecture`` -> ``model_type``): llama, qwen2, gpt2, qwen3, gemma2,
gemma3 (-> ``gemma3_text``), phi3, olmo2, and the mixture-of-experts ones: llama with ``llama.expert_count`` > 0
(-> ``mixtral``), qwen2moe (-> ``qwen2_moe``), qwen3moe (-> ``qwen3_moe``), deepseek2 (-> ``deepseek_v2``, or
``deepseek_v3`` when ``expert_gating_func`` is sigmoid). The conventions of llama.cpp's ``convert_hf_to_gguf.py``
undone here:

- for ``general.architecture == "llama"`` the rows of ``attn_q`` and ``attn_k`` are permuted within each head,
  from Hugging Face's rotate-half order to GGML's interleaved rotary pairs:
  ``w.reshape(n_head, 2, dh // 2, d).swapaxes(1, 2)`` (``LlamaModel.permute``; ``n_head`` is the KV head count
  for ``attn_k``); the inverse ``w.reshape(n_head, dh // 2, 2, d).swapaxes(1, 2)`` restores HF's order. No other
  architecture read here is permuted: qwen2, qwen3, gemma2, gemma3, phi3 and olmo2 use llama.cpp's NEOX rotary
  type (pairs ``dh / 2`` apart, HF's own order; ``llama_model_rope_type`` in ``src/llama-model.cpp``), and their
  converters (``Qwen2Model``, ``Qwen3Model(Qwen2Model)``, ``Gemma2Model``, ``Gemma3Model``, ``Phi3MiniModel``,
  ``Olmo2Model``) do not call ``LlamaModel.permute``. GPT-2 has no rotary embedding;
- GPT-2's ``Conv1D`` weights are transposed to ``(out, in)`` by the converter; they are presented transposed back
  (the GPT-2 adapter reads ``Conv1D`` layout);
- Gemma-2 and Gemma-3: ``Gemma2Model.modify_tensors`` and ``Gemma3Model.modify_tensors`` (``norm_shift``) add 1 to
  every tensor whose HF name ends in ``norm.weight`` (HF stores ``w`` and applies ``1 + w``; llama.cpp applies the
  stored weight as is), which includes Gemma-3's ``q_norm`` / ``k_norm`` and the sandwich norms. The reader
  subtracts 1 from every GGUF tensor whose name ends in ``norm.weight`` so the Gemma adapters, which apply
  ``1 + w``, see HF's ``w``; for an fp32 ``w >= -1/2`` the weight applied, ``1 + ((1 + w) - 1)``, is fp32's
  ``1 + w`` exactly (the subtraction is exact). (The
  converter adds 1 in the checkpoint's dtype, so a bf16 checkpoint's norms lose bits there; that is in the
  file, not undone.) The embedding is not scaled by ``sqrt(d)`` in the file (llama.cpp scales at run time),
  as the Gemma adapter expects. ``Gemma3Model`` drops embedding rows past the tokenizer's size;
- names: llama.cpp's per-architecture tensor names (gguf-py ``constants.py`` ``MODEL_TENSORS``, mapped from HF
  names by ``tensor_mapping.py``'s ``TensorNameMap``; the tests check every name here against the installed
  ``gguf`` package's map). Gemma's ``post_attention_layernorm`` is ``post_attention_norm`` (the norm on the
  attention's output) and its ``pre_feedforward_layernorm`` is ``ffn_norm``; OLMo-2's two output norms are
  ``post_attention_norm`` / ``post_ffw_norm`` and it has no ``attn_norm`` / ``ffn_norm``; QK-norm weights (qwen3,
  gemma3, olmo2) are ``attn_q_norm`` / ``attn_k_norm``; Phi-3's ``qkv_proj`` stays fused as ``attn_qkv`` and its
  ``gate_up_proj`` as ``ffn_up`` (gate rows first; llama.cpp splits it at run time), presented under the HF
  fused names that the Phi-3 adapter splits. A Phi-3 file with separate ``attn_q/k/v`` (allowed by llama.cpp's
  loader, not written by its converter) is refused by the adapter's missing-tensor check;
- experts (``LlamaModel.modify_tensors`` for Mixtral, ``Qwen2MoeModel`` / ``Qwen3MoeModel(Qwen2MoeModel)``,
  ``DeepseekV2Model``): each layer's routed experts are ``torch.stack``-ed on a new first axis, in expert order,
  one tensor per projection (``ffn_gate_exps`` / ``ffn_up_exps`` / ``ffn_down_exps``; Mixtral's ``w1`` / ``w3`` /
  ``w2``), untransposed: ``ne = (n_in, n_out, n_expert)``. Expert ``e`` is therefore the ``e``-th of ``n_expert``
  equal, contiguous byte ranges (whole rows, so whole quantisation blocks) in HF ``(out, in)`` layout; the reader
  presents it under its per-expert HF name and reads and dequantises that range alone. Mixtral's q / k rows are
  permuted as LLaMA's (it is converted by ``LlamaModel``); Mixtral files of the first converters (December 2023),
  one 2-D tensor per expert ``blk.N.ffn_gate.E`` (``LLM_TENSOR_FFN_GATE_EXP`` in llama.cpp of that time), are
  read too (today's llama.cpp no longer loads them: llama-cpp-python 0.3.36 refuses such a file). Routers are
  ``ffn_gate_inp`` (kept F32 by the converter), Qwen2-MoE's shared expert ``ffn_*_shexp`` and its gate
  ``ffn_gate_inp_shexp`` ``(1, d)``,
  DeepSeek's shared experts ``ffn_*_shexp`` and V3's score-correction bias ``exp_probs_b.bias`` (the converter
  renames ``e_score_correction_bias`` to ``e_score_correction.bias`` before mapping). llama.cpp's qwen2moe /
  qwen3moe have no dense FFN tensors (``MODEL_TENSORS``), so every layer of such a file is sparse;
- DeepSeek's latent attention (``DeepseekV2Model``): ``attn_q`` (V2-Lite) or ``attn_q_a`` / ``attn_q_a_norm`` /
  ``attn_q_b``, ``attn_kv_a_mqa``, ``attn_kv_a_norm``, no rotary permutation; ``kv_b_proj`` is, in converters
  since the MLA-absorption change, split per head into ``attn_k_b`` = the key rows transposed ``(h, rank, nope)``
  and ``attn_v_b`` = the value rows ``(h, v, rank)``, with ``head_count_kv`` 1, ``key_length`` =
  ``kv_lora_rank + rope`` and the per-head sizes in ``key_length_mla`` / ``value_length_mla``; older converters
  wrote one ``attn_kv_b`` and the sizes in ``key_length`` / ``value_length``. Both are read; ``kv_b_proj`` is
  rebuilt from the split when there is no ``attn_kv_b``;
- MoE config (``_moe_config``): ``expert_count``, ``expert_used_count``, ``expert_feed_forward_length``,
  ``expert_shared_feed_forward_length``, ``expert_shared_count``, ``leading_dense_block_count``,
  ``expert_weights_scale`` / ``_norm``, ``expert_group_count`` / ``_used_count``, ``expert_gating_func``,
  ``attention.q_lora_rank`` / ``kv_lora_rank``, ``rope.dimension_count``. What the file does not carry is set as
  llama.cpp runs the architecture (``build_moe_ffn``'s ``norm_w`` in ``src/models/*.cpp``): qwen2moe's top-k
  weights not renormalised, qwen3moe's and Mixtral's renormalised. A DeepSeek-V2 file with expert groups is read
  as V2's group-limited greedy (a group scores its best expert), as the checkpoint routes; llama.cpp's
  ``build_moe_ffn`` scores every architecture's groups by their best two (V3's rule), so llama.cpp itself runs
  such a file slightly differently (``benchmarks/gguf_llamacpp.py``).

Sources (read, not vendored): ggml-org/llama.cpp ``convert_hf_to_gguf.py`` (``LlamaModel.permute``,
``LlamaModel.modify_tensors``' expert merge, ``Qwen2MoeModel``, ``Qwen3MoeModel``, ``DeepseekV2Model``,
``TextModel.set_gguf_parameters``' expert keys, ``prepare_tensors``' F32 rule for ``FFN_GATE_INP``,
``Qwen3Model``, ``Gemma2Model`` / ``Gemma3Model.modify_tensors``, ``Phi3MiniModel``, ``Olmo2Model``),
``src/llama-model.cpp`` ``llama_model_rope_type``, ``src/llama-graph.cpp`` ``build_moe_ffn`` (group scoring),
``src/models/qwen2moe.cpp`` / ``qwen3moe.cpp`` (``norm_w``), gguf-py ``constants.py`` / ``tensor_mapping.py``
(the installed ``gguf`` package). The MoE files ``zoo.gguf_export`` writes are loaded and run by llama.cpp itself
in ``benchmarks/gguf_llamacpp.py`` (logits within 3e-4 of transformers').

The header (metadata and tensor table) is parsed here in one buffered pass (``read_header``; the ``gguf``
package's ``GGUFReader`` builds a numpy view per metadata item, about 4 s for a 32000-token vocabulary against
0.2 s here); the ``gguf`` package supplies the type table and the dequantisers. Tensors are read with ``pread`` at
the offsets the header gives, one tensor (or one run of embedding rows) at a time: the file is never mapped, and
no fp32 copy of the model exists, only of the tensor being read. Nothing here sends anything anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from owner._source import ROW_GAP, TensorMeta
from owner.errors import CheckpointError, UnsupportedModelError
from protocol import TensorDigest

GGUF_MAGIC = b"GGUF"
HASH_BLOCK = 8 << 20

# general.architecture -> (config.json model_type, tensor-name map). Only families whose GGUF conversion is
# reproduced and tested (zoo/gguf_export.py, tests/owner/test_gguf.py, test_gguf_families.py, test_gguf_moe.py)
# are listed.
_LLAMA_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LLAMA_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_GPT2_LAYER = {
    "attn_norm.weight": "ln_1.weight", "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight", "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight", "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight", "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight", "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight", "ffn_down.bias": "mlp.c_proj.bias",
}
_GPT2_GLOBAL = {"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
                "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias",
                "output.weight": "lm_head.weight"}
_GPT2_CONV1D = frozenset({"attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight"})


_QK_NORM = {"attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight"}
_QWEN3_LAYER = {**_LLAMA_LAYER, **_QK_NORM}
# Gemma-2/3: ``post_attention_layernorm`` is the norm on the attention's output (``post_attention_norm``) and the
# FFN's pre-norm is ``pre_feedforward_layernorm`` (``ffn_norm``), unlike LLaMA where ``post_attention_layernorm``
# is the FFN's pre-norm
_GEMMA2_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GEMMA3_LAYER = {**_GEMMA2_LAYER, **_QK_NORM}
# Phi-3: the fused ``qkv_proj`` and ``gate_up_proj`` are kept fused by the converter (``attn_qkv``, ``ffn_up`` of
# 2 x intermediate_size rows, gate first); the Phi-3 adapter splits them as it does for safetensors
_PHI3_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_qkv.weight": "self_attn.qkv_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_up.weight": "mlp.gate_up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
}
# OLMo-2: no pre-norms; output norms after attention and FFN; QK-norm over all heads
_OLMO2_LAYER = {
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    **_QK_NORM,
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}

# Mixture-of-experts layers. The routed experts are one 3-D tensor per projection, experts stacked on the slowest
# axis (``torch.stack(datas, dim=0)`` in the converter): ``ne = (n_in, n_out, n_expert)``, so expert ``e`` is the
# ``e``-th of ``n_expert`` equal, contiguous byte ranges, in HF ``Linear`` layout ``(n_out, n_in)``. The values here
# are the per-expert HF names, ``{e}`` the expert index.
_MIXTRAL_EXPERTS = {
    "ffn_gate_exps.weight": "block_sparse_moe.experts.{e}.w1.weight",
    "ffn_down_exps.weight": "block_sparse_moe.experts.{e}.w2.weight",
    "ffn_up_exps.weight": "block_sparse_moe.experts.{e}.w3.weight",
}
_MIXTRAL_LAYER = {**_LLAMA_LAYER, "ffn_gate_inp.weight": "block_sparse_moe.gate.weight"}
_MLP_EXPERTS = {
    "ffn_gate_exps.weight": "mlp.experts.{e}.gate_proj.weight",
    "ffn_up_exps.weight": "mlp.experts.{e}.up_proj.weight",
    "ffn_down_exps.weight": "mlp.experts.{e}.down_proj.weight",
}
_ROUTER = {"ffn_gate_inp.weight": "mlp.gate.weight"}
_DENSE_FFN = frozenset({"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"})
# llama.cpp's qwen2moe / qwen3moe have no dense FFN tensors (every layer sparse)
_QWEN2MOE_LAYER = {
    **{k: v for k, v in _LLAMA_LAYER.items() if k not in _DENSE_FFN}, **_ROUTER,
    "ffn_gate_shexp.weight": "mlp.shared_expert.gate_proj.weight",
    "ffn_up_shexp.weight": "mlp.shared_expert.up_proj.weight",
    "ffn_down_shexp.weight": "mlp.shared_expert.down_proj.weight",
    "ffn_gate_inp_shexp.weight": "mlp.shared_expert_gate.weight",
}
_QWEN3MOE_LAYER = {**{k: v for k, v in _QWEN3_LAYER.items() if k not in _DENSE_FFN}, **_ROUTER}
# DeepSeek-V2/V3 (``deepseek2``): latent attention; ``attn_k_b`` / ``attn_v_b`` are ``kv_b_proj`` split per head
# (see ``_kv_b_from_split``); dense FFN in the leading layers, routed + shared experts after
_DEEPSEEK2_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q_a.weight": "self_attn.q_a_proj.weight", "attn_q_a_norm.weight": "self_attn.q_a_layernorm.weight",
    "attn_q_b.weight": "self_attn.q_b_proj.weight",
    "attn_kv_a_mqa.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attn_kv_a_norm.weight": "self_attn.kv_a_layernorm.weight",
    "attn_kv_b.weight": "self_attn.kv_b_proj.weight",
    "attn_k_b.weight": "self_attn.k_b_proj.weight", "attn_v_b.weight": "self_attn.v_b_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    **_ROUTER,
    "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
    "ffn_gate_shexp.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn_up_shexp.weight": "mlp.shared_experts.up_proj.weight",
    "ffn_down_shexp.weight": "mlp.shared_experts.down_proj.weight",
}


@dataclass(frozen=True)
class _Family:
    model_type: str
    layer_prefix: str
    layer_names: dict[str, str]
    global_names: dict[str, str]
    permute_qk: bool = False
    conv1d: frozenset[str] = frozenset()
    # subtracted from every tensor whose GGUF name ends in ``norm.weight`` (Gemma: the converter stores ``1 + w``)
    norm_shift: float = 0.0
    # stacked expert tensors (GGUF layer suffix -> per-expert HF suffix with ``{e}``)
    experts: dict[str, str] = field(default_factory=dict)


_FAMILIES: dict[str, _Family] = {
    "llama": _Family("llama", "model.layers.{i}.", _LLAMA_LAYER, _LLAMA_GLOBAL, permute_qk=True),
    "qwen2": _Family("qwen2", "model.layers.{i}.", _LLAMA_LAYER, _LLAMA_GLOBAL),
    "gpt2": _Family("gpt2", "transformer.h.{i}.", _GPT2_LAYER, _GPT2_GLOBAL, conv1d=_GPT2_CONV1D),
    "qwen3": _Family("qwen3", "model.layers.{i}.", _QWEN3_LAYER, _LLAMA_GLOBAL),
    "gemma3": _Family("gemma3_text", "model.layers.{i}.", _GEMMA3_LAYER, _LLAMA_GLOBAL, norm_shift=1.0),
    "gemma2": _Family("gemma2", "model.layers.{i}.", _GEMMA2_LAYER, _LLAMA_GLOBAL, norm_shift=1.0),
    "phi3": _Family("phi3", "model.layers.{i}.", _PHI3_LAYER, _LLAMA_GLOBAL),
    "olmo2": _Family("olmo2", "model.layers.{i}.", _OLMO2_LAYER, _LLAMA_GLOBAL),
    "qwen2moe": _Family("qwen2_moe", "model.layers.{i}.", _QWEN2MOE_LAYER, _LLAMA_GLOBAL, experts=_MLP_EXPERTS),
    "qwen3moe": _Family("qwen3_moe", "model.layers.{i}.", _QWEN3MOE_LAYER, _LLAMA_GLOBAL, experts=_MLP_EXPERTS),
    # model_type deepseek_v2 or deepseek_v3 by the router's gating function (``gguf_config``)
    "deepseek2": _Family("deepseek_v2", "model.layers.{i}.", _DEEPSEEK2_LAYER, _LLAMA_GLOBAL, experts=_MLP_EXPERTS),
}
# Mixtral is ``general.architecture = "llama"`` with ``llama.expert_count`` > 0 (``LlamaModel`` converts it)
_MIXTRAL = _Family("mixtral", "model.layers.{i}.", _MIXTRAL_LAYER, _LLAMA_GLOBAL, permute_qk=True,
                   experts=_MIXTRAL_EXPERTS)
GGUF_ARCHITECTURES: tuple[str, ...] = tuple(_FAMILIES)
_BLK = re.compile(r"blk\.(\d+)\.(.+)")
# Mixtral files from the first converters (December 2023) hold one 2-D tensor per expert, ``blk.N.ffn_gate.E``
# (llama.cpp's ``LLM_TENSOR_FFN_GATE_EXP`` = "blk.%d.ffn_gate.%d"; gate = w1, up = w3, down = w2)
_SPLIT_EXPERT = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight")
_MIXTRAL_PROJ = {"gate": "w1", "up": "w3", "down": "w2"}


@dataclass(frozen=True)
class GgufTensorInfo:
    """One entry of a GGUF tensor table: name, GGML type, ``ne`` (ggml order) and absolute byte range."""

    name: str
    qtype: Any  # gguf.GGMLQuantizationType
    ne: tuple[int, ...]
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class GgufHeader:
    """A GGUF file's metadata (key -> plain Python value) and tensor table."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GgufTensorInfo]
    data_offset: int


class _Cursor:
    """Sequential little-endian reads of a GGUF header, bounded by the file's size."""

    def __init__(self, f: Any, path: Path, size: int) -> None:
        self.f, self.path, self.size, self.pos = f, path, size, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise CheckpointError(f"{self.path}: GGUF header truncated or malformed (the {what} runs past the end "
                                  "of the file)")
        b: bytes = self.f.read(n)
        if len(b) != n:
            raise CheckpointError(f"{self.path}: file ends inside the GGUF header ({what})")
        self.pos += n
        return b

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def string(self, what: str) -> str:
        raw = self.take(self.u64(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: GGUF {what} is not valid UTF-8") from None


# GGUFValueType -> struct format of a scalar (STRING = 8 and ARRAY = 9 are read apart)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _value(c: _Cursor, vtype: int, key: str, depth: int = 0) -> Any:
    if vtype in _SCALAR:
        fmt = "<" + _SCALAR[vtype]
        return struct.unpack(fmt, c.take(struct.calcsize(fmt), f"value of {key!r}"))[0]
    if vtype == 8:
        return c.string(f"value of {key!r}")
    if vtype == 9 and depth == 0:
        item, count = c.u32(f"array type of {key!r}"), c.u64(f"array length of {key!r}")
        if item in _SCALAR:
            fmt = _SCALAR[item]
            width = struct.calcsize("<" + fmt)
            raw = c.take(count * width, f"array {key!r}")
            return np.frombuffer(raw, dtype=np.dtype("<" + fmt if fmt != "?" else "?")).tolist()
        if count > c.size - c.pos:
            raise CheckpointError(f"{c.path}: GGUF header truncated or malformed (array {key!r} claims {count} "
                                  "items, more than the file holds)")
        return [_value(c, item, key, depth + 1) for _ in range(count)]
    raise CheckpointError(f"{c.path}: GGUF metadata {key!r} has an unknown value type {vtype}")


def read_header(path: Path) -> GgufHeader:
    """The metadata and tensor table of the GGUF file ``path`` (versions 2 and 3, little-endian), read in one
    pass without mapping the file; every tensor's byte range is checked to lie inside the file."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if not path.is_file():
        raise CheckpointError(f"{path}: GGUF file is missing")
    try:
        size = path.stat().st_size
        with open(path, "rb", buffering=1 << 20) as f:
            c = _Cursor(f, path, size)
            if size < 4 or c.take(4, "magic") != GGUF_MAGIC:
                raise CheckpointError(f"{path}: not a GGUF file (no GGUF magic at the start)")
            version = c.u32("version")
            if version not in (2, 3):
                what = "a big-endian file" if version & 0xFFFF == 0 else f"version {version}"
                raise CheckpointError(f"{path}: GGUF {what} is not supported (expected little-endian version 2 or 3)")
            n_tensors, n_kv = c.u64("tensor count"), c.u64("metadata count")
            if n_tensors > size or n_kv > size:
                raise CheckpointError(f"{path}: GGUF header truncated or malformed (counts {n_tensors}, {n_kv})")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = c.string("metadata key")
                meta[key] = _value(c, c.u32(f"type of {key!r}"), key)
            table = []
            for _ in range(n_tensors):
                name = c.string("tensor name")
                n_dims = c.u32(f"rank of tensor {name!r}")
                if n_dims > 8:
                    raise CheckpointError(f"{path}: GGUF tensor {name!r} has rank {n_dims}")
                ne = tuple(c.u64(f"shape of tensor {name!r}") for _ in range(n_dims))
                raw_type = c.u32(f"type of tensor {name!r}")
                rel = c.u64(f"offset of tensor {name!r}")
                try:
                    qtype = GGMLQuantizationType(raw_type)
                except ValueError:
                    raise CheckpointError(f"{path}: GGUF tensor {name!r} has unknown GGML type {raw_type}") from None
                block, type_size = GGML_QUANT_SIZES[qtype]
                n = math.prod(ne)
                if ne and ne[0] % block:
                    raise CheckpointError(f"{path}: GGUF tensor {name!r} rows of {ne[0]} are not whole "
                                          f"{block}-element blocks of {qtype.name}")
                table.append((name, qtype, ne, rel, n // block * type_size))
            align = meta.get("general.alignment", 32)
            if not isinstance(align, int) or align <= 0 or align & (align - 1):
                raise CheckpointError(f"{path}: GGUF general.alignment {align!r} is not a power of two")
            data = -(-c.pos // align) * align
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    tensors = []
    seen: set[str] = set()
    for name, qtype, ne, rel, n_bytes in table:
        if name in seen:
            raise CheckpointError(f"{path}: GGUF tensor {name!r} appears twice")
        seen.add(name)
        if data + rel + n_bytes > size:
            raise CheckpointError(f"{path}: tensor {name!r} lies past the end of the file (truncated GGUF)")
        tensors.append(GgufTensorInfo(name, qtype, ne, data + rel, n_bytes))
    return GgufHeader(path, version, meta, tensors, data)


def field_value(header: GgufHeader, key: str) -> Any:
    """A metadata value (str, int, float, bool or a list of them), or None if absent."""
    return header.metadata.get(key)


def _int_field(reader: GgufHeader, path: Path, key: str, default: int | None = None) -> int:
    v = field_value(reader, key)
    if isinstance(v, list) and v and all(x == v[0] for x in v):  # per-layer arrays with one value
        v = v[0]
    if v is None:
        if default is not None:
            return default
        raise CheckpointError(f"{path}: GGUF metadata {key!r} is missing (needed to know the architecture)")
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(f"{path}: GGUF metadata {key!r} should be an integer, got {v!r:.60}")
    return v


def _family(reader: GgufHeader, path: Path) -> tuple[str, _Family]:
    arch = field_value(reader, "general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: GGUF metadata 'general.architecture' is missing")
    fam = _FAMILIES.get(arch)
    if fam is None:
        raise CheckpointError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: {', '.join(GGUF_ARCHITECTURES)}"
        )
    if arch == "llama" and _int_field(reader, path, "llama.expert_count", default=0) > 0:
        return arch, _MIXTRAL
    return arch, fam


def gguf_config(reader: GgufHeader, path: Path) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields the adapters read, from the GGUF metadata."""
    arch, fam = _family(reader, path)
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise CheckpointError(f"{path}: GGUF file has no tensor 'token_embd.weight' (the token embedding)")
    vocab = embd.ne[-1] if len(embd.ne) == 2 else 0
    d = _int_field(reader, path, f"{arch}.embedding_length")
    layers = _int_field(reader, path, f"{arch}.block_count")
    heads = _int_field(reader, path, f"{arch}.attention.head_count")
    ffn = _int_field(reader, path, f"{arch}.feed_forward_length")
    if fam.model_type == "gpt2":
        return {"model_type": "gpt2", "n_embd": d, "n_layer": layers, "n_head": heads, "n_inner": ffn,
                "vocab_size": vocab, "gguf_architecture": arch}
    kv = _int_field(reader, path, f"{arch}.attention.head_count_kv", default=heads)
    cfg: dict[str, Any] = {
        "model_type": fam.model_type, "hidden_size": d, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ffn, "vocab_size": vocab,
        "gguf_architecture": arch,
    }
    key_len = field_value(reader, f"{arch}.attention.key_length")
    if isinstance(key_len, int) and not isinstance(key_len, bool) and arch != "deepseek2":
        cfg["head_dim"] = key_len
    if fam.experts:
        _moe_config(reader, path, arch, fam, cfg)
    return cfg


def _float_field(reader: GgufHeader, path: Path, key: str, default: float) -> float:
    v = field_value(reader, key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CheckpointError(f"{path}: GGUF metadata {key!r} should be a number, got {v!r:.60}")
    return float(v)


def _moe_config(reader: GgufHeader, path: Path, arch: str, fam: _Family, cfg: dict[str, Any]) -> None:
    """The mixture-of-experts (and, for ``deepseek2``, latent-attention) fields of the HF config, from the keys
    llama.cpp's converter writes (``TextModel.set_gguf_parameters``: ``expert_count``, ``expert_used_count``,
    ``expert_group_count``, ``expert_group_used_count``, ``expert_gating_func``; ``Qwen2MoeModel``:
    ``expert_feed_forward_length``, ``expert_shared_feed_forward_length``; ``DeepseekV2Model``: the rest). Routing
    choices the file does not carry are set as llama.cpp runs the architecture: qwen2moe's top-k weights are not
    renormalised, qwen3moe's and Mixtral's are (``build_moe_ffn``'s ``norm_w`` in ``src/models/*.cpp``)."""
    experts = _int_field(reader, path, f"{arch}.expert_count")
    used = _int_field(reader, path, f"{arch}.expert_used_count")
    if fam.model_type == "mixtral":
        cfg.update(num_local_experts=experts, num_experts_per_tok=used)
        return
    width = _int_field(reader, path, f"{arch}.expert_feed_forward_length")
    if fam.model_type in ("qwen2_moe", "qwen3_moe"):
        # llama.cpp's qwen2moe / qwen3moe have no dense FFN layers (no ffn_gate / ffn_up / ffn_down tensors)
        cfg.update(num_experts=experts, num_experts_per_tok=used, moe_intermediate_size=width,
                   mlp_only_layers=[], decoder_sparse_step=1, norm_topk_prob=fam.model_type == "qwen3_moe")
        if fam.model_type == "qwen2_moe":
            cfg["shared_expert_intermediate_size"] = _int_field(
                reader, path, f"{arch}.expert_shared_feed_forward_length")
        return
    # deepseek2: gating 2 (sigmoid, with exp_probs_b) is DeepSeek-V3; 1 (softmax) or absent is V2 (llama.cpp reads
    # a file without the key as softmax, "for compatibility with existing DeepSeek V2 and V2.5 GGUFs")
    gating = _int_field(reader, path, f"{arch}.expert_gating_func", default=1)
    if gating not in (1, 2):
        raise CheckpointError(f"{path}: GGUF metadata '{arch}.expert_gating_func' is {gating}; only softmax (1, "
                              "DeepSeek-V2) and sigmoid (2, DeepSeek-V3) routers are read")
    rope = _int_field(reader, path, f"{arch}.rope.dimension_count")
    # converters since the MLA-absorption split write the per-head sizes as key_length_mla / value_length_mla
    # (key_length is then kv_lora_rank + rope: the MQA view); older ones as key_length / value_length
    k_len = _int_field(reader, path, f"{arch}.attention.key_length_mla",
                       default=_int_field(reader, path, f"{arch}.attention.key_length"))
    v_len = _int_field(reader, path, f"{arch}.attention.value_length_mla",
                       default=_int_field(reader, path, f"{arch}.attention.value_length"))
    q_rank = _int_field(reader, path, f"{arch}.attention.q_lora_rank", default=0)
    n_group = _int_field(reader, path, f"{arch}.expert_group_count", default=1)
    cfg.update(
        model_type="deepseek_v3" if gating == 2 else "deepseek_v2", num_key_value_heads=cfg["num_attention_heads"],
        n_routed_experts=experts, num_experts_per_tok=used, moe_intermediate_size=width,
        n_shared_experts=_int_field(reader, path, f"{arch}.expert_shared_count", default=0),
        first_k_dense_replace=_int_field(reader, path, f"{arch}.leading_dense_block_count", default=0),
        routed_scaling_factor=_float_field(reader, path, f"{arch}.expert_weights_scale", 1.0),
        norm_topk_prob=bool(field_value(reader, f"{arch}.expert_weights_norm") or False),
        n_group=n_group, topk_group=_int_field(reader, path, f"{arch}.expert_group_used_count", default=1),
        q_lora_rank=q_rank or None, kv_lora_rank=_int_field(reader, path, f"{arch}.attention.kv_lora_rank"),
        qk_rope_head_dim=rope, qk_nope_head_dim=k_len - rope, v_head_dim=v_len,
    )
    if gating == 1:
        cfg["topk_method"] = "group_limited_greedy" if n_group > 1 else "greedy"


@contextlib.contextmanager
def metadata_errors(path: Path) -> Iterator[None]:
    """The adapters' errors (``owner/_adapters``) about the config, which for a GGUF file is its metadata
    (``gguf_config``), naming that metadata instead of a ``config.json`` the model does not have."""
    try:
        yield
    except (CheckpointError, UnsupportedModelError) as e:
        text = str(e)
        if "config.json" not in text:
            raise
        if text.startswith("config.json:"):
            text = f"{path}: GGUF metadata:{text[len('config.json:'):]}"
        raise type(e)(text.replace("config.json", f"the GGUF metadata of {path.name}")) from e


@dataclass(frozen=True)
class _Entry:
    gguf_name: str
    qtype: Any  # gguf.GGMLQuantizationType
    ne: tuple[int, ...]  # ggml order: ne[0] is the contiguous (row) length
    offset: int
    n_bytes: int
    permute_heads: int = 0  # undo llama.cpp's rotary row permutation with this many heads
    transpose: bool = False  # present transposed (GPT-2 Conv1D layout)
    shift: float = 0.0  # subtracted on reading (Gemma's norm weights, stored by the converter as ``1 + w``)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """Shape in row-major (numpy / torch) order, as the tensor is stored."""
        return tuple(reversed(self.ne))

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.stored_shape
        return s[::-1] if self.transpose else s

    @property
    def type_name(self) -> str:
        return str(self.qtype.name)


def unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of ``convert_hf_to_gguf.py``'s ``LlamaModel.permute`` (rows of q or k, per head)."""
    rows = w.shape[0]
    if n_head <= 0 or rows % n_head or (rows // n_head) % 2:
        raise CheckpointError(f"cannot undo the rotary permutation: {rows} rows over {n_head} heads")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GgufSource:
    """A ``.gguf`` file as a ``TensorSource`` under Hugging Face names (see the module docstring)."""

    def __init__(self, path: Path, header: GgufHeader | None = None) -> None:
        self._fd: int | None = None
        self.path = Path(path)
        header = header or read_header(self.path)
        self.config = gguf_config(header, self.path)
        arch, fam = _family(header, self.path)
        heads = int(self.config.get("num_attention_heads") or self.config.get("n_head") or 0)
        kv = int(self.config.get("num_key_value_heads") or heads)
        self._where: dict[str, _Entry] = {}
        self._block: dict[str, tuple[int, int]] = {}
        n_experts = _int_field(header, self.path, f"{arch}.expert_count") if fam.experts else 0
        for t in header.tensors:
            split = _SPLIT_EXPERT.fullmatch(t.name) if fam is _MIXTRAL else None
            if split is not None:
                layer, proj, e = int(split.group(1)), _MIXTRAL_PROJ[split.group(2)], int(split.group(3))
                if e >= n_experts:
                    raise CheckpointError(f"{self.path}: GGUF tensor {t.name!r} is expert {e}, but expert_count is "
                                          f"{n_experts}")
                self._add(fam.layer_prefix.format(i=layer) + f"block_sparse_moe.experts.{e}.{proj}.weight",
                          _Entry(t.name, t.qtype, t.ne, t.offset, t.n_bytes))
                continue
            m = _BLK.fullmatch(t.name)
            if m is not None and m.group(2) in fam.experts:
                self._add_experts(t, fam.layer_prefix.format(i=int(m.group(1))) + fam.experts[m.group(2)],
                                  n_experts)
                continue
            hf, permute, transpose = self._hf_name(t.name, fam, heads, kv)
            shift = fam.norm_shift if t.name.endswith("norm.weight") else 0.0
            self._add(hf, _Entry(t.name, t.qtype, t.ne, t.offset, t.n_bytes, permute, transpose, shift))
        # deepseek2 files from converters since the MLA-absorption split hold attn_k_b / attn_v_b, not attn_kv_b
        self._kv_b: dict[str, tuple[str, str]] = {}
        for name in list(self._where):
            if name.endswith("self_attn.k_b_proj.weight"):
                kv_b, v_b = (name.replace("k_b_proj", x) for x in ("kv_b_proj", "v_b_proj"))
                if kv_b not in self._where and v_b in self._where:
                    self._kv_b[kv_b] = (name, v_b)
        self.architecture = arch

    def _add(self, hf: str, e: _Entry) -> None:
        from gguf import GGML_QUANT_SIZES

        if hf in self._where:
            raise CheckpointError(f"{self.path}: two GGUF tensors map to {hf!r}")
        self._where[hf] = e
        self._block[hf] = GGML_QUANT_SIZES[e.qtype]

    def _add_experts(self, t: GgufTensorInfo, template: str, n_experts: int) -> None:
        """One entry per expert of a stacked 3-D expert tensor: expert ``e`` is the ``e``-th of ``n_experts``
        equal byte ranges (whole rows, so whole quantisation blocks), read and dequantised on its own."""
        if len(t.ne) != 3 or t.ne[2] != n_experts:
            raise CheckpointError(f"{self.path}: GGUF tensor {t.name!r} has shape {tuple(reversed(t.ne))}, expected "
                                  f"{n_experts} experts stacked on the first axis (expert_count)")
        per = t.n_bytes // n_experts
        for e in range(n_experts):
            self._add(template.format(e=e),
                      _Entry(f"{t.name}[{e}]", t.qtype, t.ne[:2], t.offset + e * per, per))

    @staticmethod
    def _hf_name(name: str, fam: _Family, heads: int, kv: int) -> tuple[str, int, bool]:
        if name in fam.global_names:
            return fam.global_names[name], 0, False
        m = _BLK.fullmatch(name)
        if m is not None and m.group(2) in fam.layer_names:
            rest = m.group(2)
            permute = 0
            if fam.permute_qk and rest == "attn_q.weight":
                permute = heads
            elif fam.permute_qk and rest == "attn_k.weight":
                permute = kv
            return fam.layer_prefix.format(i=int(m.group(1))) + fam.layer_names[rest], permute, rest in fam.conv1d
        return name, 0, False  # kept under its GGUF name (rope_freqs, ...): never read by an adapter

    # -- TensorSource ------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted([*self._where, *self._kv_b])

    def _kv_b_from_split(self, name: str) -> torch.Tensor:
        """HF's ``kv_b_proj`` (``(h * (nope + v), rank)``, per head the ``nope`` key rows then the ``v`` value
        rows) from the converter's split: ``k_b`` is each head's key rows transposed, ``(h, rank, nope)``, and
        ``v_b`` its value rows, ``(h, v, rank)`` (``DeepseekV2Model.modify_tensors``: ``kv_b.view(h, nope + v,
        rank)``, ``torch.split``, ``k_b.transpose(1, 2)``)."""
        kb_name, vb_name = self._kv_b[name]
        k_b, v_b = self.tensor(kb_name), self.tensor(vb_name)
        if k_b.ndim != 3 or v_b.ndim != 3 or k_b.shape[0] != v_b.shape[0] or k_b.shape[1] != v_b.shape[2]:
            raise CheckpointError(f"{self.path}: GGUF tensors for {kb_name!r} {tuple(k_b.shape)} and {vb_name!r} "
                                  f"{tuple(v_b.shape)} are not one kv_b_proj split per head")
        kv = torch.cat([k_b.transpose(1, 2), v_b], dim=1)
        return kv.reshape(-1, kv.shape[-1]).contiguous()

    def _locate(self, name: str) -> _Entry:
        try:
            return self._where[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: GGUF file has no tensor for {name!r}") from None

    def meta(self, name: str) -> TensorMeta:
        if name in self._kv_b:
            kb, vb = (self._locate(x) for x in self._kv_b[name])
            (h, rank, nope), v = kb.shape, vb.shape[1]
            return TensorMeta(name, kb.type_name, (h * (nope + v), rank), self.path)
        e = self._locate(name)
        return TensorMeta(name, e.type_name, e.shape, self.path)

    def _read(self, offset: int, n: int) -> np.ndarray:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as e:
                raise CheckpointError(f"{self.path}: cannot open ({e.strerror or e})") from e
        buf = np.empty(n, dtype=np.uint8)
        view = buf.data
        done = 0
        try:
            while done < n:
                got = os.preadv(self._fd, [view[done:]], offset + done)
                if got <= 0:
                    raise CheckpointError(f"{self.path}: file ends inside a tensor (truncated GGUF)")
                done += got
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror or e})") from e
        return buf

    def _dequantize(self, name: str, e: _Entry, raw: np.ndarray, rows: int) -> torch.Tensor:
        """``rows`` stored rows of ``e`` from their raw bytes (uint8), as fp32 ``(rows, ne[0])``. F16 and BF16 are
        widened by torch (numpy's float16 conversion is several times slower); quantised types by the ``gguf``
        package's dequantisers (llama.cpp's reference algorithms in numpy)."""
        from gguf import GGMLQuantizationType as Q
        from gguf import dequantize

        width = e.ne[0]
        half = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}.get(e.qtype)
        if half is not None:
            return torch.from_numpy(raw).view(half).reshape(rows, width).to(torch.float32)
        block, type_size = self._block[name]
        if width % block:
            raise CheckpointError(f"{self.path}: tensor {e.gguf_name!r} rows of {width} are not whole {block}-blocks")
        try:
            out = dequantize(raw.reshape(rows, width // block * type_size), e.qtype)
        except NotImplementedError:
            raise CheckpointError(
                f"{self.path}: tensor {e.gguf_name!r} has GGML type {e.type_name}, which the gguf package cannot "
                "dequantise"
            ) from None
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32).reshape(rows, width))

    def _float_check(self, e: _Entry) -> None:
        from gguf import GGMLQuantizationType as Q

        if e.qtype in (Q.I8, Q.I16, Q.I32, Q.I64, Q.F64):
            raise CheckpointError(f"{self.path}: tensor {e.gguf_name!r} has GGML type {e.type_name}, "
                                  "expected a floating-point or quantised weight")

    def tensor(self, name: str) -> torch.Tensor:
        if name in self._kv_b:
            return self._kv_b_from_split(name)
        e = self._locate(name)
        self._float_check(e)
        rows = int(np.prod(e.stored_shape[:-1])) if len(e.ne) > 1 else 1
        t = self._dequantize(name, e, self._read(e.offset, e.n_bytes), rows).reshape(e.stored_shape)
        if e.permute_heads:
            t = unpermute_rotary(t, e.permute_heads)
        if e.transpose:
            t = t.T.contiguous()
        if e.shift:
            t = t - e.shift
        return t

    def rows(self, name: str, index: Sequence[int]) -> torch.Tensor:
        e = self._locate(name)
        if len(e.ne) != 2:
            raise CheckpointError(f"{self.path}: tensor {name!r} has shape {e.shape}, expected a matrix")
        if e.permute_heads or e.transpose or e.shift:  # never the embedding; read whole
            return self.tensor(name)[torch.as_tensor(list(index), dtype=torch.long)]
        self._float_check(e)
        n_rows, width = e.stored_shape
        idx = [int(i) for i in index]
        out = torch.empty((len(idx), width), dtype=torch.float32)
        if not idx:
            return out
        if min(idx) < 0 or max(idx) >= n_rows:
            raise CheckpointError(f"{self.path}: row index out of range for {name!r} with {n_rows} rows")
        row_bytes = e.n_bytes // n_rows
        order = sorted(range(len(idx)), key=idx.__getitem__)
        start = 0
        while start < len(order):  # runs of nearby rows, each read in one request; only the wanted rows converted
            end = start + 1
            while end < len(order) and idx[order[end]] - idx[order[end - 1]] <= ROW_GAP:
                end += 1
            lo, hi = idx[order[start]], idx[order[end - 1]] + 1
            run = self._read(e.offset + lo * row_bytes, (hi - lo) * row_bytes).reshape(hi - lo, row_bytes)
            ks = order[start:end]
            wanted = np.ascontiguousarray(run[[idx[k] - lo for k in ks]])
            out[torch.as_tensor(ks, dtype=torch.long)] = self._dequantize(name, e, wanted.reshape(-1), len(ks))
            start = end
        return out

    def files(self) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


def hash_gguf(path: Path) -> list[TensorDigest]:
    """The weight commitment entries of a GGUF file: each tensor under its GGUF name, its GGML type name, its
    shape in row-major order (ne reversed) and the SHA-256 of its stored bytes (quantised blocks as stored)."""
    header = read_header(path)
    out = []
    with open(path, "rb") as f:
        for t in header.tensors:
            h = hashlib.sha256()
            f.seek(t.offset)
            left = t.n_bytes
            while left:
                chunk = f.read(min(HASH_BLOCK, left))
                if not chunk:
                    raise CheckpointError(f"{path}: file ends inside tensor {t.name!r} (truncated GGUF)")
                h.update(chunk)
                left -= len(chunk)
            out.append(TensorDigest(t.name, str(t.qtype.name), tuple(reversed(t.ne)), h.digest()))
    return out
