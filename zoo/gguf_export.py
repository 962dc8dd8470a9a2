"""Write a zoo model (Hugging Face layout, safetensors) as a GGUF file the way llama.cpp's converter does.

``convert_hf_to_gguf.py`` is not shipped by the ``gguf`` package, so its behaviour for the families the owner
reads from GGUF is reproduced here with ``gguf.GGUFWriter`` and ``gguf.quants``:

- families: llama, qwen2, gpt2, and qwen3, gemma2, gemma3_text (as ``gemma3``), phi3, olmo2;
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
- tokenizer: llama, gemma2, gemma3, phi3 as ``tokenizer.ggml.model = "llama"`` with the pieces of ``tokenizer.json``
  (the converter's ``LlamaHfVocab`` path for a tokenizer without ``tokenizer.model``), qwen2 / qwen3 / olmo2 /
  gpt2 as ``"gpt2"`` with byte-level
  tokens and merges; special added tokens are CONTROL, ``<0xNN>`` pieces BYTE;
- types: 1-D tensors (norms, biases) stay F32, as the converter keeps them; 2-D weights take ``qtype`` (F32, F16,
  BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the types ``gguf.quants`` can quantise; Q4_K by ``quantize_q4_k``, as
  ``llama-quantize`` would write it), falling back where a row is not a whole number of blocks as llama-quantize
  does (Q4_K to Q5_0; others to F16).

``python -m zoo.gguf_export MODEL_DIR OUT.gguf --type q8_0``.
"""

from __future__ import annotations

import argparse
import json
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
FAMILIES: tuple[str, ...] = tuple(_ARCH)
# families whose lm_head is the tied embedding: the converter writes no ``output``
_TIED_HEAD = frozenset({"gpt2", "gemma2", "gemma3_text"})
# families whose tokenizer the converter writes as ``tokenizer.ggml.model = "llama"`` (SentencePiece)
_SPM_FAMILIES = frozenset({"llama", "gemma2", "gemma3_text", "phi3"})
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


def export_gguf(model_dir: Path, out: Path, qtype: str = "f32", name: str | None = None) -> Path:
    """Write the safetensors model in ``model_dir`` to ``out`` as GGUF with 2-D weights in ``qtype``."""
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGUFWriter, LlamaFileType, get_tensor_name_map
    from safetensors import safe_open

    model_dir, out = Path(model_dir), Path(out)
    if qtype not in QTYPES:
        raise GgufExportError(f"unknown type {qtype!r}; expected one of {', '.join(QTYPES)}")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise GgufExportError(f"{model_dir}: model_type {family!r} is not exported; expected one of {FAMILIES}")
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
        w.add_rope_dimension_count(int(rope.get("partial_rotary_factor", 1.0) * (cfg.get("head_dim") or d // heads)))
        w.add_rope_freq_base(float(theta))
        w.add_head_count_kv(kv)
        if family in _MAPPED_ARCH:
            _arch_metadata(w, family, cfg)
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
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for hf in h.keys():  # noqa: SIM118 - safe_open handles have keys(), not iteration
                g = _gguf_name(hf, name_map)
                if g is None or (family in _TIED_HEAD and hf == "lm_head.weight"):
                    continue
                data = h.get_tensor(hf).to(torch.float32).numpy()
                if family in _NORM_PLUS_ONE and hf.endswith("norm.weight"):
                    data = data + 1
                if family == "gemma3_text" and hf.endswith("embed_tokens.weight"):  # Gemma3Model: no OOV rows
                    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
                    data = data[:len(tok["model"]["vocab"]) + len(tok.get("added_tokens") or [])]
                if family == "llama" and g.endswith("attn_q.weight"):
                    data = permute_rotary(data, heads, heads)
                elif family == "llama" and g.endswith("attn_k.weight"):
                    data = permute_rotary(data, heads, kv)
                elif family == "gpt2" and hf.endswith(_GPT2_CONV1D):
                    data = data.T
                stored, t = _quantize(np.ascontiguousarray(data), qname)
                w.add_tensor(g, stored, raw_dtype=t)
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
    a = p.parse_args(argv)
    print(export_gguf(a.model_dir, a.out, a.type))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
