"""Tiny random models of every supported family, in Hugging Face layout, for tests and the attack table.

Each model is built with the real ``transformers`` class of its family, initialised from a seed, with norm
weights drawn away from 1 (so that tests notice when a norm weight is not folded), and saved as
``config.json`` + ``model.safetensors`` + ``tokenizer.json``. Random weights are enough to check invariance
under function-preserving transforms; the trained zoo (``zoo.build``) is what lineage claims are tested on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.corpus import docstring_corpus
from zoo.progress import quiet_libraries
from zoo.tokenizers_ import TokenizerStyle, train_style_tokenizer

# family -> (transformers config class name, model class name, tokenizer style, config overrides)
# Widths are chosen so that every family has GQA/MQA or fused layouts exercised where it supports them.
_FAMILIES: dict[str, tuple[str, str, TokenizerStyle, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "metaspace",
              dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", "metaspace",
                dict(num_key_value_heads=2, sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "bytelevel", dict(num_key_value_heads=2)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", "metaspace", dict(num_key_value_heads=1, head_dim=16)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", "metaspace", dict(num_key_value_heads=2)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "bytelevel", dict()),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", "bytelevel", dict(use_parallel_residual=True)),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", "bytelevel", dict(rotary_dim=8)),
    "opt": ("OPTConfig", "OPTForCausalLM", "bytelevel", dict(do_layer_norm_before=True)),
    "falcon": ("FalconConfig", "FalconForCausalLM", "bytelevel",
               dict(new_decoder_architecture=True, num_kv_heads=2, parallel_attn=True, alibi=False,
                    bias=False)),
    "bloom": ("BloomConfig", "BloomForCausalLM", "bytelevel", dict()),
    "bert": ("BertConfig", "BertModel", "wordpiece", dict()),
    # MPT: packed Wqkv, ALiBi, LayerNorm without biases; transformers' MptMLP is always 4 x d wide
    "mpt": ("MptConfig", "MptForCausalLM", "bytelevel", dict(no_bias=True)),
    # QK-norm: per head (Qwen3, Gemma-3) or over all heads (OLMo-2, which has output norms and no pre-norms);
    # Gemma-2/3: sandwich norms, scaled tied embedding, 1 + w norm weights; MPNet: post-norm encoder with a
    # relative-position attention bias
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "bytelevel", dict(num_key_value_heads=2, head_dim=16)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", "bytelevel", dict(num_key_value_heads=2)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", "metaspace", dict(num_key_value_heads=2, head_dim=16)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", "metaspace", dict(num_key_value_heads=2, head_dim=16)),
    "mpnet": ("MPNetConfig", "MPNetModel", "wordpiece", dict()),
    # mixture-of-experts FFNs (expert permutation is one more function-preserving transform) and DeepSeek's
    # latent attention; Qwen2-MoE keeps layer 0 dense, DeepSeek-V3 its first layer (first_k_dense_replace), and
    # DeepSeek-V3 routes within the best of 2 expert groups
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", "metaspace",
                dict(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=None)),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", "bytelevel",
                  dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                       shared_expert_intermediate_size=96, decoder_sparse_step=1, mlp_only_layers=[0],
                       tie_word_embeddings=False)),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", "metaspace",
                    dict(num_key_value_heads=4, n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=1,
                         moe_intermediate_size=64, first_k_dense_replace=1, n_group=2, topk_group=1,
                         q_lora_rank=32, kv_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
                         head_dim=8)),
    # Qwen3-MoE: Qwen3's per-head QK-norm attention, routed experts without a shared expert (layer 0 dense);
    # DeepSeek-V2 as V2-Lite ships it (no query compression: q_proj reads the stream), softmax router with V2's
    # group-limited greedy choice (a group scores its best expert), 2 shared experts, scaled routing weights
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", "bytelevel",
                  dict(num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=64, decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=True,
                       tie_word_embeddings=False)),
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM", "metaspace",
                    dict(num_key_value_heads=4, n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=2,
                         moe_intermediate_size=32, first_k_dense_replace=1, topk_method="group_limited_greedy",
                         n_group=3, topk_group=2, routed_scaling_factor=1.5, q_lora_rank=None, kv_lora_rank=24,
                         qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)),
}
FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
# families with mixture-of-experts FFNs / latent attention (the attacks expert-permute / latent-rotate apply)
MOE_FAMILIES: tuple[str, ...] = ("mixtral", "qwen2_moe", "deepseek_v3", "qwen3_moe", "deepseek_v2")
# QK-norm, sandwich-norm and MPNet families (issue 18): read from safetensors, TorchScript ONNX and (but mpnet) GGUF
NORM_VARIANT_FAMILIES: tuple[str, ...] = ("qwen3", "olmo2", "gemma2", "gemma3_text", "mpnet")
LATENT_ATTENTION_FAMILIES: tuple[str, ...] = ("deepseek_v3", "deepseek_v2")
# families whose router is initialised to zero by transformers (every expert would tie): drawn here instead
_ZERO_ROUTERS: frozenset[str] = frozenset({"deepseek_v3"})


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny model; ``vocab_size`` is the tokenizer's target size."""

    layers: int = 3
    hidden: int = 64
    heads: int = 4
    ffn: int = 128
    vocab_size: int = 600
    max_positions: int = 128


@functools.lru_cache(maxsize=8)
def _tokenizer_json(style: TokenizerStyle, vocab_size: int) -> str:
    return train_style_tokenizer(docstring_corpus(), style, vocab_size)


def tokenizer_style(family: str) -> TokenizerStyle:
    return _FAMILIES[family][2]


def build_config(
    family: str, vocab_size: int, spec: TinySpec, extra_overrides: dict[str, Any] | None = None
) -> Any:
    """The transformers config of a tiny ``family`` model; ``extra_overrides`` replace the table's fields."""
    import transformers

    cfg_name, _, _, overrides = _FAMILIES[family]
    overrides = {**overrides, **(extra_overrides or {})}
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.ffn,
        max_position_embeddings=spec.max_positions,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    if family == "gpt2" or family == "gptj":
        common.update(n_embd=spec.hidden, n_layer=spec.layers, n_head=spec.heads, n_inner=spec.ffn,
                      n_positions=spec.max_positions)
    elif family == "bloom":
        common.update(n_layer=spec.layers, n_head=spec.heads)
    elif family == "opt":
        common.update(ffn_dim=spec.ffn, word_embed_proj_dim=spec.hidden)
    elif family == "falcon":
        common.update(ffn_hidden_size=spec.ffn)
    elif family == "mpt":
        common.update(d_model=spec.hidden, n_layers=spec.layers, n_heads=spec.heads, max_seq_len=spec.max_positions)
    common.update(overrides)
    cfg = getattr(transformers, cfg_name)(**common)
    cfg.architectures = [_FAMILIES[family][1]]
    return cfg


def make_tiny(
    family: str,
    out_dir: Path,
    seed: int = 0,
    spec: TinySpec | None = None,
    dtype: torch.dtype = torch.float32,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    """Build a tiny random ``family`` model from ``seed`` and save it in HF layout under ``out_dir``
    (``config_overrides``: config fields to change, e.g. ``num_key_value_heads`` for a model without GQA)."""
    import transformers

    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    spec = spec or TinySpec()
    _, model_name, style, _ = _FAMILIES[family]
    tok_json = _tokenizer_json(style, spec.vocab_size)
    vocab_size = len(json.loads(tok_json)["model"]["vocab"])
    config = build_config(family, vocab_size, spec, config_overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    gen = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)
            is_norm = any(k in name.lower() for k in ("norm", "ln_", "ln_f", "layernorm"))
            if is_norm and leaf[-1] == "weight":
                if family in ("gemma", "gemma2", "gemma3_text"):  # Gemma stores the norm weight as g - 1
                    p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
                else:
                    p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif leaf[-1] == "bias":
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif family in _ZERO_ROUTERS and name.endswith("mlp.gate.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3's choice-only router bias
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_libraries():  # no "Writing model shards" bar of transformers' own
        model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    return out_dir
