"""Write a zoo model (Hugging Face layout, safetensors) as a GGUF file the way llama.cpp's converter does.

``convert_hf_to_gguf.py`` is not shipped by the ``gguf`` package, so its behaviour for the families the owner
reads from GGUF is reproduced here with ``gguf.GGUFWriter`` and ``gguf.quants``:

- families: llama, qwen2, gpt2, and qwen3, gemma2, gemma3_text (as ``gemma3``), phi3, olmo2; the
  mixture-of-experts ones: mixtral (as ``llama`` with ``expert_count``), qwen2_moe (``qwen2moe``), qwen3_moe
  (``qwen3moe``), deepseek_v2 and deepseek_v3 (``deepseek2``);
- metadata: ``general.architecture``, ``general.name``, ``general.file_type``, ``<arch>.context_length``,
  ``embedding_length``, ``block_count``, ``feed_forward_length``, ``attention.head_count``,
  ``attention.head_count_kv``, ``rope.dimension_count``, the norm epsilon; ``attention.key_length`` /
  ``value_length`` where the config has ``head_dim``; gemma2's soft-capping and sliding window, gemma3's sliding
  window, phi3's original context length and sliding window (0 when none, as ``Phi3MiniModel`` writes it);
- tensor names ``token_embd``, ``blk.N.attn_q`` ... ``ffn_down``, ``output_norm``, ``output``, for every family
  from the ``gguf`` package's own ``TensorNameMap`` (what the converter's ``map_tensor_name`` calls), among
  them QK-norm ``attn_q_norm`` / ``attn_k_norm``, Gemma's ``post_attention_norm``,
  ``ffn_norm`` (its pre-FFN norm), ``post_ffw_norm``, Phi-3's fused ``attn_qkv`` and ``ffn_up`` (gate and up);
- llama: q and k rows permuted per head for GGML's rotary layout (``LlamaModel.permute``: ``w.reshape(n_head, 2,
  dh // 2, d).swapaxes(1, 2)``, with the KV head count for k); no other family is permuted (their converters do
  not call it); gpt2's ``Conv1D`` weights are transposed to ``(out, in)``;
- gemma2 / gemma3: 1 added to every ``*norm.weight`` (``Gemma2Model`` / ``Gemma3Model.modify_tensors``),
  ``lm_head`` skipped, and for gemma3 the embedding cut to the tokenizer's size;
- experts: each layer's routed experts stacked per projection on a new first axis in expert order (Mixtral:
  ``w1``, ``w2``, ``w3`` merged as ``layers.N.feed_forward.experts.wK``; Qwen / DeepSeek: ``down_proj``,
  ``gate_proj``, ``up_proj`` merged as ``model.layers.N.mlp.experts.P``, then named by ``TensorNameMap``), routers
  (``ffn_gate_inp``) F32 whatever the type; the expert metadata of ``TextModel`` / ``Qwen2MoeModel`` /
  ``DeepseekV2Model.set_gguf_parameters``; qwen2_moe / qwen3_moe with dense layers, or with a top-k
  renormalisation llama.cpp does not run for the architecture, are refused (``_check_moe``);
- DeepSeek: ``kv_b_proj`` split into ``attn_k_b`` (key rows transposed, ``(h, rank, nope)``) and ``attn_v_b``
  with one KV head and ``key_length_mla`` / ``value_length_mla``, as the current converter writes it
  (``kv_b="fused"``: one ``attn_kv_b``, as older converters); the score-correction bias as ``exp_probs_b.bias``;
  ``expert_gating_func`` from ``scoring_func`` (softmax for V2 and sigmoid for V3 where transformers' config
  drops the field, as the hub configs say);
- tokenizer: llama, gemma2, gemma3, phi3, mixtral, deepseek as ``tokenizer.ggml.model = "llama"`` with the
  pieces of ``tokenizer.json`` (the converter's ``LlamaHfVocab`` path for a tokenizer without
  ``tokenizer.model``), qwen2 / qwen3 / olmo2 / gpt2 / the Qwen MoEs as ``"gpt2"`` with byte-level tokens and
  merges; special added tokens are CONTROL, ``<0xNN>`` pieces BYTE;
- types: 1-D tensors (norms, biases) stay F32, as the converter keeps them; 2-D weights take ``qtype`` (F32, F16,
  BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the types ``gguf.quants`` can quantise; Q4_K by ``quantize_q4_k``, as
  ``llama-quantize`` would write it), falling back where a row is not a whole number of blocks as llama-quantize
  does (Q4_K to Q5_0; others to F16).

``python -m zoo.gguf_export MODEL_DIR OUT.gguf --type q8_0``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

# our --type -> (GGMLQuantizationType name, LlamaFileType name)
QTYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q4_0": ("Q4_0", "MOSTLY_Q4_0"), "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"), "q5_1": ("Q5_1", "MOSTLY_Q5_1"), "q4_k": ("Q4_K", "MOSTLY_Q4_K_S"),
}
# llama-quantize's type for a tensor whose rows are not whole 256-element super-blocks of a k-quant
_K_FALLBACK = {"Q4_K": "Q5_0"}
_GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# model_type -> gguf's MODEL_ARCH: the general.architecture written, and llama.cpp's own tensor-name map
# (gguf-py's ``TensorNameMap``, which ``convert_hf_to_gguf.py``'s ``map_tensor_name`` uses) for every family
_ARCH: dict[str, str] = {"llama": "LLAMA", "qwen2": "QWEN2", "gpt2": "GPT2"}
# the families that also get their architecture's extra metadata (``_arch_metadata``)
_MAPPED_ARCH: dict[str, str] = {"qwen3": "QWEN3", "gemma2": "GEMMA2", "gemma3_text": "GEMMA3", "phi3": "PHI3",
                                "olmo2": "OLMO2"}
_ARCH.update(_MAPPED_ARCH)
# mixture-of-experts families: Mixtral is written as ``llama`` (``LlamaModel``), DeepSeek-V2 and V3 as ``deepseek2``
_MOE_ARCH: dict[str, str] = {"mixtral": "LLAMA", "qwen2_moe": "QWEN2MOE", "qwen3_moe": "QWEN3MOE",
                             "deepseek_v2": "DEEPSEEK2", "deepseek_v3": "DEEPSEEK2"}
_ARCH.update(_MOE_ARCH)
FAMILIES: tuple[str, ...] = tuple(_ARCH)
# the HF name of one expert's weight -> (layer, expert, projection); the converter stacks a layer's experts per
# projection, in expert order, and names the stack by the merged HF name below (then ``TensorNameMap``)
_EXPERT = {
    "mixtral": re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight"),
    "mlp": re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight"),
}
# the order the converter writes a layer's stacks in (``LlamaModel``: w1, w2, w3; ``Qwen2MoeModel`` and
# ``DeepseekV2Model``: down, gate, up) and the merged name it maps
_EXPERT_ORDER = {"mixtral": ("w1", "w2", "w3"), "mlp": ("down_proj", "gate_proj", "up_proj")}
_EXPERT_MERGED = {"mixtral": "layers.{bid}.feed_forward.experts.{w}.weight",
                  "mlp": "model.layers.{bid}.mlp.experts.{w}.weight"}
# families whose lm_head is the tied embedding: the converter writes no ``output``
_TIED_HEAD = frozenset({"gpt2", "gemma2", "gemma3_text"})
# families whose tokenizer the converter writes as ``tokenizer.ggml.model = "llama"`` (SentencePiece); the tiny
# zoo's Mixtral and DeepSeek tokenizers are Metaspace ones (real DeepSeek checkpoints ship byte-level BPE, which
# ``DeepseekV2Model.set_vocab`` writes as ``gpt2``: the choice follows the tokenizer, not the architecture)
_SPM_FAMILIES = frozenset({"llama", "gemma2", "gemma3_text", "phi3", "mixtral", "deepseek_v2", "deepseek_v3"})
# Gemma2Model / Gemma3Model.modify_tensors add 1 to every ``*norm.weight`` (HF applies ``1 + w``)
_NORM_PLUS_ONE = frozenset({"gemma2", "gemma3_text"})


class GgufExportError(Exception):
    """The model cannot be written as GGUF by this converter."""


def permute_rotary(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """``convert_hf_to_gguf.py``'s ``LlamaModel.permute``: HF's rotate-half row order to GGML's interleaved one."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(hf: str, name_map: Any) -> str | None:
    """convert_hf_to_gguf.py's ``map_tensor_name``: llama.cpp's name of the HF tensor ``hf`` (None: not written)."""
    mapped: str | None = name_map.get_name(hf, try_suffixes=(".weight", ".bias"))
    return mapped


def _vocab(model_dir: Path, family: str) -> dict[str, Any]:
    """tokens, token types, scores, merges and the tokenizer model name, as the converter writes them."""
    from gguf import TokenType

    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok["model"]
    vocab: dict[str, int] = model["vocab"] if isinstance(model["vocab"], dict) else {
        p[0]: i for i, p in enumerate(model["vocab"])}
    added = {int(a["id"]): a for a in tok.get("added_tokens") or []}
    size = max([*vocab.values(), *added]) + 1
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        elif i in by_id:
            t = by_id[i]
            tokens.append(t)
            is_byte = family in _SPM_FAMILIES and t.startswith("<0x") and t.endswith(">")
            types.append(TokenType.BYTE if is_byte else TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"model": "llama" if family in _SPM_FAMILIES else "gpt2", "tokens": tokens, "types": types, "merges": merges}


def quantize_q4_k(data: np.ndarray) -> np.ndarray:
    """``data`` (rows of whole 256-element super-blocks) in ggml's Q4_K block layout: per super-block an fp16 ``d``
    and ``dmin``, eight 6-bit sub-block scales and mins packed in 12 bytes, and 256 4-bit values, two per byte
    (``x = d * sc_j * q - dmin * m_j``). The ``gguf`` package can only dequantise Q4_K; the scales here are chosen
    by each 32-element sub-block's min and max (llama.cpp's ``quantize_row_q4_K_ref`` searches them further), so
    the copy is at least as far from the original as llama.cpp's; the layout is checked against ``gguf``'s
    reference dequantiser in the tests."""
    rows, width = data.shape
    x = data.astype(np.float32).reshape(-1, 8, 32)
    lo = np.minimum(x.min(-1), 0.0)
    scale, mins = (x.max(-1) - lo) / 15.0, -lo
    d = (scale.max(-1) / 63.0).astype(np.float16)
    dmin = (mins.max(-1) / 63.0).astype(np.float16)

    def steps(v: np.ndarray, unit: np.ndarray) -> np.ndarray:
        u = unit.astype(np.float32)[:, None]
        q = np.divide(v, u, out=np.zeros_like(v), where=u > 0)
        return np.clip(np.rint(q), 0, 63).astype(np.uint8)

    sc, m = steps(scale, d), steps(mins, dmin)
    step = d.astype(np.float32)[:, None] * sc  # (n, 8)
    offset = dmin.astype(np.float32)[:, None] * m
    q = np.divide(x + offset[..., None], step[..., None], out=np.zeros_like(x), where=step[..., None] > 0)
    q = np.clip(np.rint(q), 0, 15).astype(np.uint8)  # (n, 8, 32)
    packed = np.zeros((x.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = (m[:, :4] & 63) | ((m[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)  # chunk c: sub-block 2c low nibbles, 2c + 1 high
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8), packed, qs], axis=1)
    return np.ascontiguousarray(blocks).reshape(rows, width // 256 * 144)


def _quantize(data: np.ndarray, qtype_name: str) -> tuple[np.ndarray, Any]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[qtype_name]
    if data.ndim < 2 or qtype == GGMLQuantizationType.F32:
        return data.astype(np.float32), GGMLQuantizationType.F32
    if data.ndim > 2:  # stacked experts: each row quantised on its own, as in 2-D
        flat, t = _quantize(data.reshape(-1, data.shape[-1]), qtype_name)
        return flat.reshape(*data.shape[:-1], flat.shape[-1]), t
    if qtype == GGMLQuantizationType.F16:
        return data.astype(np.float16), GGMLQuantizationType.F16
    if data.shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        fallback = _K_FALLBACK.get(qtype_name)
        if fallback is not None:
            return _quantize(data, fallback)
        return data.astype(np.float16), GGMLQuantizationType.F16
    if qtype == GGMLQuantizationType.Q4_K:
        return quantize_q4_k(data), qtype
    return quants.quantize(data.astype(np.float32), qtype), qtype


def _arch_metadata(w: Any, family: str, cfg: dict[str, Any]) -> None:
    """What each architecture's converter writes beyond ``TextModel.set_gguf_parameters`` (only what llama.cpp's
    loader reads for it; none of it changes a tensor)."""
    if cfg.get("head_dim"):
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    if family == "gemma2":
        w.add_attn_logit_softcapping(float(cfg["attn_logit_softcapping"]))
        w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
        w.add_sliding_window(int(cfg["sliding_window"]))
    elif family == "gemma3_text":
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
        if cfg.get("sliding_window_pattern") != 1 and cfg.get("sliding_window"):
            w.add_sliding_window(int(cfg["sliding_window"]))
    elif family == "phi3":
        w.add_rope_scaling_orig_ctx_len(int(cfg.get("original_max_position_embeddings")
                                            or cfg["max_position_embeddings"]))
        w.add_sliding_window(int(cfg.get("sliding_window") or 0))


def _check_moe(model_dir: Path, family: str, cfg: dict[str, Any]) -> None:
    """Refuse what llama.cpp's architecture cannot hold: its qwen2moe / qwen3moe have no dense FFN layers
    (``MODEL_TENSORS`` lists no ``ffn_gate``; the converter fails to map ``mlp.gate_proj``) and fix the top-k
    renormalisation (qwen2moe never, qwen3moe always: ``build_moe_ffn``'s ``norm_w``)."""
    if family not in ("qwen2_moe", "qwen3_moe"):
        return
    if cfg.get("mlp_only_layers") or int(cfg.get("decoder_sparse_step") or 1) != 1:
        raise GgufExportError(f"{model_dir}: {family} with dense layers (mlp_only_layers "
                              f"{cfg.get('mlp_only_layers')}, decoder_sparse_step {cfg.get('decoder_sparse_step')}) "
                              "has no llama.cpp architecture: its MoE architectures have no dense FFN tensors")
    want = family == "qwen3_moe"
    if bool(cfg.get("norm_topk_prob", want)) != want:
        raise GgufExportError(f"{model_dir}: {family} with norm_topk_prob {cfg.get('norm_topk_prob')} cannot be "
                              f"written: llama.cpp runs this architecture with norm_topk_prob {want}")


def _moe_metadata(w: Any, family: str, cfg: dict[str, Any], kv_b: str) -> None:
    """What ``TextModel.set_gguf_parameters`` and ``Qwen2MoeModel`` / ``DeepseekV2Model.set_gguf_parameters``
    write for the experts (and DeepSeek's latent attention; ``kv_b``: "split" as converters since the
    MLA-absorption split write it, "fused" as older ones did)."""
    if family == "mixtral":
        w.add_expert_count(int(cfg["num_local_experts"]))
        w.add_expert_used_count(int(cfg["num_experts_per_tok"]))
        return
    if family in ("qwen2_moe", "qwen3_moe"):
        w.add_expert_count(int(cfg.get("num_experts") or cfg["num_local_experts"]))
        w.add_expert_used_count(int(cfg["num_experts_per_tok"]))
        w.add_expert_feed_forward_length(int(cfg["moe_intermediate_size"]))
        if family == "qwen2_moe":
            w.add_expert_shared_feed_forward_length(int(cfg["shared_expert_intermediate_size"]))
        return
    # deepseek_v2 / deepseek_v3
    w.add_expert_count(int(cfg["n_routed_experts"]))
    w.add_expert_used_count(int(cfg["num_experts_per_tok"]))
    if cfg.get("n_group") is not None:
        w.add_expert_group_count(int(cfg["n_group"]))
    if cfg.get("topk_group") is not None:
        w.add_expert_group_used_count(int(cfg["topk_group"]))
    # the hub configs say scoring_func "softmax" (V2) / "sigmoid" (V3); transformers' own configs drop the field
    from gguf import ExpertGatingFuncType

    score = cfg.get("scoring_func") or ("sigmoid" if family == "deepseek_v3" else "softmax")
    w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID if score == "sigmoid" else ExpertGatingFuncType.SOFTMAX)
    w.add_leading_dense_block_count(int(cfg.get("first_k_dense_replace") or 0))
    w.add_vocab_size(int(cfg["vocab_size"]))
    if cfg.get("q_lora_rank") is not None:
        w.add_q_lora_rank(int(cfg["q_lora_rank"]))
    rank, rope = int(cfg["kv_lora_rank"]), int(cfg["qk_rope_head_dim"])
    nope, v = int(cfg["qk_nope_head_dim"]), int(cfg["v_head_dim"])
    w.add_kv_lora_rank(rank)
    if kv_b == "split":
        w.add_key_length(rank + rope)
        w.add_value_length(rank)
        w.add_key_length_mla(nope + rope)
        w.add_value_length_mla(v)
    else:
        w.add_key_length(nope + rope)
        w.add_value_length(v)
    w.add_expert_feed_forward_length(int(cfg["moe_intermediate_size"]))
    w.add_expert_shared_count(int(cfg.get("n_shared_experts") or 0))
    if cfg.get("routed_scaling_factor") is not None:
        w.add_expert_weights_scale(float(cfg["routed_scaling_factor"]))
    if cfg.get("norm_topk_prob"):
        w.add_expert_weights_norm(True)


def _split_kv_b(data: np.ndarray, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``DeepseekV2Model.modify_tensors``: ``kv_b_proj`` viewed ``(h, nope + v, rank)``, split into the key rows,
    transposed to ``(h, rank, nope)`` (``k_b``), and the value rows ``(h, v, rank)`` (``v_b``)."""
    h, nope, v = int(cfg["num_attention_heads"]), int(cfg["qk_nope_head_dim"]), int(cfg["v_head_dim"])
    kv = data.reshape(h, nope + v, data.shape[-1])
    return np.ascontiguousarray(kv[:, :nope].transpose(0, 2, 1)), np.ascontiguousarray(kv[:, nope:])


def export_gguf(model_dir: Path, out: Path, qtype: str = "f32", name: str | None = None,
                kv_b: str = "split") -> Path:
    """Write the safetensors model in ``model_dir`` to ``out`` as GGUF with 2-D (and stacked 3-D expert) weights in
    ``qtype``; ``kv_b`` (DeepSeek only): "split" into ``attn_k_b`` / ``attn_v_b`` as llama.cpp's converter does
    since the MLA-absorption change, or "fused" (one ``attn_kv_b``) as converters before it did."""
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGUFWriter, LlamaFileType, get_tensor_name_map
    from safetensors import safe_open

    model_dir, out = Path(model_dir), Path(out)
    if qtype not in QTYPES:
        raise GgufExportError(f"unknown type {qtype!r}; expected one of {', '.join(QTYPES)}")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise GgufExportError(f"{model_dir}: model_type {family!r} is not exported; expected one of {FAMILIES}")
    if kv_b not in ("split", "fused"):
        raise GgufExportError(f"unknown kv_b layout {kv_b!r}; expected 'split' or 'fused'")
    _check_moe(model_dir, family, cfg)
    deepseek = _ARCH[family] == "DEEPSEEK2"
    qname, ftype = QTYPES[qtype]
    arch = MODEL_ARCH[_ARCH[family]]
    w = GGUFWriter(out, MODEL_ARCH_NAMES[arch])
    w.add_name(name or model_dir.name)
    w.add_file_type(int(LlamaFileType[ftype]))
    if family == "gpt2":
        d, layers, heads = cfg["n_embd"], cfg["n_layer"], cfg["n_head"]
        kv, ffn = heads, cfg.get("n_inner") or 4 * d
        w.add_context_length(cfg["n_positions"])
        w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    else:
        d, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        kv, ffn = cfg.get("num_key_value_heads") or heads, cfg["intermediate_size"]
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        # Gemma3Model: the full-attention layers' base (rope_parameters per layer type), 1e6 by default
        theta = cfg.get("rope_theta") or rope.get("full_attention", rope).get("rope_theta") or (
            1e6 if family == "gemma3_text" else 10000.0)
        if deepseek:  # DeepseekV2Model: the rotary part of each head; MLA run as MQA (one KV head) when split
            w.add_rope_dimension_count(int(cfg["qk_rope_head_dim"]))
            w.add_head_count_kv(1 if kv_b == "split" else kv)
        else:
            w.add_rope_dimension_count(
                int(rope.get("partial_rotary_factor", 1.0) * (cfg.get("head_dim") or d // heads)))
            w.add_head_count_kv(kv)
        w.add_rope_freq_base(float(theta))
        if family in _MAPPED_ARCH or family == "qwen3_moe":
            _arch_metadata(w, family, cfg)
        if family in _MOE_ARCH:
            _moe_metadata(w, family, cfg, kv_b)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    v = _vocab(model_dir, family)
    w.add_tokenizer_model(v["model"])
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"])
    if v["model"] == "llama":
        w.add_token_scores([0.0] * len(v["tokens"]))
    elif v["merges"]:
        w.add_token_merges(v["merges"])
    name_map = get_tensor_name_map(arch, layers)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GgufExportError(f"{model_dir}: no .safetensors file")
    style = "mixtral" if family == "mixtral" else "mlp"
    n_experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
    pending: dict[int, dict[tuple[int, str], np.ndarray]] = {}

    def add(g: str, data: np.ndarray, f32: bool = False) -> None:
        stored, t = _quantize(np.ascontiguousarray(data), "F32" if f32 else qname)
        w.add_tensor(g, stored, raw_dtype=t)

    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for hf in h.keys():  # noqa: SIM118 - safe_open handles have keys(), not iteration
                m = _EXPERT[style].fullmatch(hf) if family in _MOE_ARCH else None
                if m is not None:  # held until the layer's last expert is seen, then stacked (as the converter)
                    bid, got = int(m.group(1)), pending.setdefault(int(m.group(1)), {})
                    got[int(m.group(2)), m.group(3)] = h.get_tensor(hf).to(torch.float32).numpy()
                    if len(got) == 3 * n_experts:
                        for proj in _EXPERT_ORDER[style]:
                            merged = _gguf_name(_EXPERT_MERGED[style].format(bid=bid, w=proj), name_map)
                            if merged is None:
                                raise GgufExportError(f"{hf}: no llama.cpp name for the stacked experts")
                            add(merged, np.stack([got[e, proj] for e in range(n_experts)]))
                        del pending[bid]
                    continue
                # ``filter_tensors``: the score-correction bias is mapped as the router's ``.bias``
                g = _gguf_name(hf.replace("e_score_correction_bias", "e_score_correction.bias"), name_map)
                if g is None or (family in _TIED_HEAD and hf == "lm_head.weight"):
                    if family in _MOE_ARCH and hf != "lm_head.weight":
                        raise GgufExportError(f"{model_dir}: tensor {hf!r} has no llama.cpp name for {family}")
                    continue
                data = h.get_tensor(hf).to(torch.float32).numpy()
                if deepseek and g.endswith("attn_kv_b.weight") and kv_b == "split":
                    k_b, v_b = _split_kv_b(data, cfg)
                    add(g.replace("attn_kv_b", "attn_k_b"), k_b)
                    add(g.replace("attn_kv_b", "attn_v_b"), v_b)
                    continue
                if g.endswith("ffn_gate_inp.weight"):  # the converter keeps every router in F32
                    add(g, data, f32=True)
                    continue
                if family in _NORM_PLUS_ONE and hf.endswith("norm.weight"):
                    data = data + 1
                if family == "gemma3_text" and hf.endswith("embed_tokens.weight"):  # Gemma3Model: no OOV rows
                    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
                    data = data[:len(tok["model"]["vocab"]) + len(tok.get("added_tokens") or [])]
                if _ARCH[family] == "LLAMA" and g.endswith("attn_q.weight"):
                    data = permute_rotary(data, heads, heads)
                elif _ARCH[family] == "LLAMA" and g.endswith("attn_k.weight"):
                    data = permute_rotary(data, heads, kv)
                elif family == "gpt2" and hf.endswith(_GPT2_CONV1D):
                    data = data.T
                add(g, data)
    if pending:
        raise GgufExportError(f"{model_dir}: layers {sorted(pending)} do not have all {n_experts} experts")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.gguf_export", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--type", default="f32", choices=tuple(QTYPES))
    p.add_argument("--kv-b", default="split", choices=("split", "fused"),
                   help="DeepSeek's kv_b_proj: split into attn_k_b / attn_v_b (current converter) or fused")
    a = p.parse_args(argv)
    print(export_gguf(a.model_dir, a.out, a.type, kv_b=a.kv_b))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
