"""Checkpoints in the exact layouts of families transformers has no class for: Baichuan, InternLM, InternLM2 and
the first Qwen, written by an exact mapping from a model of a supported layout.

Each writer takes a LLaMA-layout (``llama``) or Qwen2-layout (``qwen2``) Hugging Face directory and writes the
same function in the target family's layout: its tensor names and packing, its ``config.json`` keys, and its
tokenizer files as the published repositories ship them (``tokenizer.model`` for the SentencePiece families,
``qwen.tiktoken`` for Qwen). The published repositories' remote code (``modeling_*.py``) is not copied. The
maps, derived from each family's attention and FFN code:

- ``baichuan``: ``W_pack = [Wq; Wk; Wv]`` (rows; the attention's ``unflatten(-1, (3, d))``); the rest keeps
  LLaMA's names. ``variant="13b"`` writes the 13B config (ALiBi, ``model_max_length``) instead of the 7B one
  (RoPE, ``max_position_embeddings``): the same tensors, and the same invariant terms (they are position-free),
  but not the same function as the RoPE source; only the 7B variant is function-equal to it.
- ``internlm``: LLaMA's names and biases on q, k, v, o (zeros where the source has none: the same function).
- ``internlm2``: ``wqkv`` rows ``[group][q_1..q_r, k, v][dh]`` (its ``(h gs d)`` rearrange), ``wo``,
  ``feed_forward.w1`` = gate, ``w3`` = up, ``w2`` = down, ``tok_embeddings``, ``attention_norm``, ``ffn_norm``,
  ``output``.
- ``qwen``: ``c_attn = [Wq; Wk; Wv]`` with the concatenated q/k/v biases, ``attn.c_proj`` = o,
  ``mlp.w2`` = gate, ``w1`` = up, ``mlp.c_proj`` = down, ``ln_1``/``ln_2``/``ln_f``, ``wte``, and
  ``intermediate_size`` counting both FFN halves (a source without q/k/v biases gets zero ones). Qwen's
  tokenizer numbers its special tokens after the last rank of ``qwen.tiktoken``, so the embedding and head
  rows are reordered: ordinary tokens first in source order, then the specials (a vocabulary permutation,
  which the terms ignore: probes are chosen by string).

Families without grouped attention (all but InternLM2) get a GQA source's key/value heads repeated per query
head, which is exact too. ``write_layout`` refuses anything it cannot map exactly (other source families,
biases the target has no place for, a byte-level vocabulary for a SentencePiece file or the reverse) with the
reason.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.tiny import TinySpec, make_tiny

LAYOUT_FAMILIES: tuple[str, ...] = ("baichuan", "internlm", "internlm2", "qwen")
# family -> (source family of zoo.tiny, config overrides of the source beyond the table's)
_SOURCES: dict[str, tuple[str, Callable[[TinySpec], dict[str, Any]]]] = {
    "baichuan": ("llama", lambda s: dict(num_key_value_heads=s.heads)),
    "internlm": ("llama", lambda s: dict(num_key_value_heads=s.heads, attention_bias=True)),
    "internlm2": ("llama", lambda s: {}),
    "qwen": ("qwen2", lambda s: dict(num_key_value_heads=s.heads)),
}
_AUTO_MAP = {
    "baichuan": ("configuration_baichuan.BaichuanConfig", "modeling_baichuan.BaichuanForCausalLM"),
    "internlm": ("configuration_internlm.InternLMConfig", "modeling_internlm.InternLMForCausalLM"),
    "internlm2": ("configuration_internlm2.InternLM2Config", "modeling_internlm2.InternLM2ForCausalLM"),
    "qwen": ("configuration_qwen.QWenConfig", "modeling_qwen.QWenLMHeadModel"),
}
_TOKENIZER_CLASS = {"baichuan": "BaichuanTokenizer", "internlm": "InternLMTokenizer",
                    "internlm2": "InternLM2Tokenizer", "qwen": "QWenTokenizer"}


class LayoutError(Exception):
    """The source cannot be mapped exactly into the requested layout."""


def source_family(family: str) -> str:
    """The ``zoo.tiny`` family a tiny ``family`` checkpoint is mapped from."""
    return _SOURCES[family][0]


def make_tiny_source(family: str, out_dir: Path, seed: int = 0, spec: TinySpec | None = None) -> Path:
    """The tiny supported-layout model that ``make_tiny_layout`` maps (MHA where the family has no GQA)."""
    if family not in _SOURCES:
        raise ValueError(f"unknown layout family {family!r}; supported: {', '.join(LAYOUT_FAMILIES)}")
    spec = spec or TinySpec()
    src, overrides = _SOURCES[family]
    return make_tiny(src, out_dir, seed=seed, spec=spec, config_overrides=overrides(spec))


def make_tiny_layout(family: str, out_dir: Path, seed: int = 0, spec: TinySpec | None = None,
                     variant: str | None = None) -> Path:
    """A tiny random ``family`` checkpoint in its published layout: ``make_tiny_source`` mapped by
    ``write_layout`` (the source is built in a temporary directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = make_tiny_source(family, Path(tmp) / "src", seed, spec)
        return write_layout(family, src, out_dir, variant=variant)


# --- reading the source -------------------------------------------------------------------------------------


def _read_source(src: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise LayoutError(f"{src}: no safetensors weights to map")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[k] = h.get_tensor(k)
    tok_path = src / "tokenizer.json"
    if not tok_path.is_file():
        raise LayoutError(f"{src}: a layout needs the source's tokenizer.json")
    return config, tensors, json.loads(tok_path.read_text(encoding="utf-8"))


class _Src:
    """A LLaMA/Qwen2-layout source, read by role."""

    def __init__(self, src: Path) -> None:
        self.dir = src
        self.config, self.t, self.tok = _read_source(src)
        mt = self.config.get("model_type")
        if mt not in ("llama", "qwen2", "mistral"):
            raise LayoutError(f"{src}: model_type {mt!r} cannot be mapped; supported sources: llama, mistral, qwen2")
        c = self.config
        self.d, self.nq = int(c["hidden_size"]), int(c["num_attention_heads"])
        self.nkv = int(c.get("num_key_value_heads") or self.nq)
        self.dh = int(c.get("head_dim") or self.d // self.nq)
        self.layers = int(c["num_hidden_layers"])
        self.tied = bool(c.get("tie_word_embeddings", False))

    def get(self, name: str) -> torch.Tensor:
        return self.t[name]

    def attn(self, i: int, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        p = f"model.layers.{i}.self_attn.{kind}_proj"
        return self.t[p + ".weight"], self.t.get(p + ".bias")

    def head(self) -> torch.Tensor:
        return self.t["model.embed_tokens.weight"] if self.tied else self.t["lm_head.weight"]

    def repeat_kv(self, w: torch.Tensor | None) -> torch.Tensor | None:
        """Key/value rows (or bias) with each KV head repeated for the query heads that share it (GQA -> MHA)."""
        if w is None or self.nkv == self.nq:
            return w
        r = self.nq // self.nkv
        return w.reshape(self.nkv, self.dh, *w.shape[1:]).repeat_interleave(r, dim=0).reshape(
            self.nq * self.dh, *w.shape[1:])


# --- tokenizer files ---------------------------------------------------------------------------------------

_SP_NORMAL, _SP_UNKNOWN, _SP_CONTROL, _SP_BYTE = 1, 2, 3, 6
_SP_BPE = 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _pieces_by_id(tok: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(token, special)`` for ids 0..n-1 of a tokenizer.json (every id must be present)."""
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise LayoutError(f"tokenizer.json: model type {model.get('type')!r} cannot be mapped (BPE only)")
    by_id: dict[int, tuple[str, bool]] = {int(i): (t, False) for t, i in model["vocab"].items()}
    for a in tok.get("added_tokens") or []:
        by_id[int(a["id"])] = (str(a["content"]), bool(a.get("special")))
    if sorted(by_id) != list(range(len(by_id))):
        raise LayoutError("tokenizer.json: token ids are not contiguous from 0")
    return [by_id[i] for i in range(len(by_id))]


def sentencepiece_model(tok: dict[str, Any]) -> bytes:
    """A serialised SentencePiece ``ModelProto`` (BPE) with the pieces of a Metaspace BPE tokenizer.json at the
    same ids: ``<unk>`` as UNKNOWN, other specials as CONTROL, ``<0xNN>`` as BYTE, the rest NORMAL with score
    ``-id`` (BPE pieces are ranked by score)."""
    pre = json.dumps(tok.get("pre_tokenizer"))
    if "ByteLevel" in pre or "Metaspace" not in pre:
        raise LayoutError(
            "tokenizer.json: only a Metaspace (SentencePiece-style) vocabulary can become tokenizer.model")
    out = bytearray()
    for i, (piece, special) in enumerate(_pieces_by_id(tok)):
        if special:
            kind, score = (_SP_UNKNOWN if piece == "<unk>" else _SP_CONTROL), 0.0
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            kind, score = _SP_BYTE, 0.0
        else:
            kind, score = _SP_NORMAL, -float(i)
        body = (_field(1, 2, piece.encode("utf-8")) + _field(2, 5, struct.pack("<f", score))
                + _field(3, 0, _varint(kind)))
        out += _field(1, 2, body)
    n = len(_pieces_by_id(tok))  # TrainerSpec.vocab_size
    out += _field(2, 2, _field(3, 0, _varint(_SP_BPE)) + _field(4, 0, _varint(n)))  # TrainerSpec
    normalizer = _field(1, 2, b"identity") + _field(3, 0, _varint(1)) + _field(4, 0, _varint(0))
    out += _field(3, 2, normalizer)  # NormalizerSpec: identity, add_dummy_prefix, keep whitespace
    return bytes(out)


def _byte_decoder() -> dict[str, int]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def tiktoken_ranks(tok: dict[str, Any]) -> tuple[str, list[int], list[str]]:
    """``(qwen.tiktoken text, new_of_old, special tokens in order)`` for a byte-level BPE tokenizer.json: the
    ordinary tokens keep their order and become ranks 0..m-1; the specials follow at m, m+1, ..."""
    if "ByteLevel" not in json.dumps(tok.get("pre_tokenizer")):
        raise LayoutError("tokenizer.json: only a byte-level BPE vocabulary can become qwen.tiktoken")
    dec = _byte_decoder()
    pieces = _pieces_by_id(tok)
    ordinary = [i for i, (_, s) in enumerate(pieces) if not s]
    specials = [i for i, (_, s) in enumerate(pieces) if s]
    new_of_old = [0] * len(pieces)
    lines = []
    for rank, i in enumerate(ordinary):
        try:
            raw = bytes(dec[c] for c in pieces[i][0])
        except KeyError as e:
            raise LayoutError(f"tokenizer.json: token {pieces[i][0]!r} is not byte-level") from e
        new_of_old[i] = rank
        lines.append(f"{base64.b64encode(raw).decode('ascii')} {rank}")
    for j, i in enumerate(specials):
        new_of_old[i] = len(ordinary) + j
    return "\n".join(lines) + "\n", new_of_old, [pieces[i][0] for i in specials]


# --- writers -----------------------------------------------------------------------------------------------


def _common_config(family: str, s: _Src, architecture: str) -> dict[str, Any]:
    c = s.config
    cfg, model = _AUTO_MAP[family]
    return {
        "architectures": [architecture],
        "auto_map": {"AutoConfig": cfg, "AutoModelForCausalLM": model},
        "hidden_act": str(c.get("hidden_act", "silu")),
        "hidden_size": s.d,
        "initializer_range": float(c.get("initializer_range", 0.02)),
        "intermediate_size": int(c["intermediate_size"]),
        "model_type": family,
        "num_attention_heads": s.nq,
        "num_hidden_layers": s.layers,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": int(s.get("model.embed_tokens.weight").shape[0]),
    }


def _sp_tokenizer_files(family: str, s: _Src, dst: Path) -> None:
    (dst / "tokenizer.model").write_bytes(sentencepiece_model(s.tok))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    tc = {**specials, "tokenizer_class": _TOKENIZER_CLASS[family], "add_bos_token": True, "add_eos_token": False,
          "auto_map": {"AutoTokenizer": [f"tokenization_{family}.{_TOKENIZER_CLASS[family]}", None]}}
    _write_json(dst / "tokenizer_config.json", tc)
    _write_json(dst / "special_tokens_map.json", specials)


def _llama_body(s: _Src, out: dict[str, torch.Tensor], i: int) -> None:
    """Norms and FFN of layer ``i`` under LLaMA's names (Baichuan, InternLM keep them)."""
    p = f"model.layers.{i}."
    for n in ("input_layernorm", "post_attention_layernorm"):
        out[p + n + ".weight"] = s.get(p + n + ".weight")
    for n in ("gate_proj", "up_proj", "down_proj"):
        out[p + f"mlp.{n}.weight"] = s.get(p + f"mlp.{n}.weight")


def _baichuan(s: _Src, variant: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": s.get("model.embed_tokens.weight"),
                                    "model.norm.weight": s.get("model.norm.weight"), "lm_head.weight": s.head()}
    for i in range(s.layers):
        (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (s.attn(i, x) for x in "qkvo")
        if any(b is not None for b in (bq, bk, bv, bo)):
            raise LayoutError(f"{s.dir}: Baichuan's attention has no biases, the source has")
        p = f"model.layers.{i}."
        out[p + "self_attn.W_pack.weight"] = torch.cat([wq, s.repeat_kv(wk), s.repeat_kv(wv)])  # type: ignore[list-item]
        out[p + "self_attn.o_proj.weight"] = wo
        _llama_body(s, out, i)
    cfg = _common_config("baichuan", s, "BaichuanForCausalLM")
    cfg.update(bos_token_id=1, eos_token_id=2, pad_token_id=0, rms_norm_eps=float(s.config["rms_norm_eps"]))
    if variant == "13b":  # ALiBi: no rotary, the context length under Baichuan-13B's key
        cfg.update(model_max_length=int(s.config.get("max_position_embeddings", 4096)), z_loss_weight=0,
                   gradient_checkpointing=False)
    elif variant in (None, "7b"):
        cfg.update(max_position_embeddings=int(s.config.get("max_position_embeddings", 4096)))
        if float((s.config.get("rope_parameters") or {}).get("rope_theta", s.config.get("rope_theta", 1e4))) != 1e4:
            raise LayoutError(f"{s.dir}: Baichuan-7B's RoPE base is 10000; the source's differs")
    else:
        raise LayoutError(f"unknown Baichuan variant {variant!r}; known: 7b, 13b")
    return out, cfg


def _internlm(s: _Src, variant: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": s.get("model.embed_tokens.weight"),
                                    "model.norm.weight": s.get("model.norm.weight"), "lm_head.weight": s.head()}
    for i in range(s.layers):
        p = f"model.layers.{i}.self_attn."
        for x in "qkvo":
            w, b = s.attn(i, x)
            if b is None:  # InternLM's projections always carry a bias: zero adds nothing
                b = torch.zeros(w.shape[0], dtype=w.dtype)
            out[p + f"{x}_proj.weight"] = s.repeat_kv(w) if x in "kv" else w  # type: ignore[assignment]
            out[p + f"{x}_proj.bias"] = s.repeat_kv(b) if x in "kv" else b  # type: ignore[assignment]
        _llama_body(s, out, i)
    cfg = _common_config("internlm", s, "InternLMForCausalLM")
    cfg.update(bias=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
               max_position_embeddings=int(s.config.get("max_position_embeddings", 2048)),
               rms_norm_eps=float(s.config["rms_norm_eps"]), rotary={"base": 10000, "type": "dynamic"})
    return out, cfg


def _internlm2(s: _Src, variant: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    out: dict[str, torch.Tensor] = {"model.tok_embeddings.weight": s.get("model.embed_tokens.weight"),
                                    "model.norm.weight": s.get("model.norm.weight"), "output.weight": s.head()}
    r = s.nq // s.nkv
    for i in range(s.layers):
        (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (s.attn(i, x) for x in "qkvo")
        if any(b is not None for b in (bq, bk, bv, bo)):
            raise LayoutError(f"{s.dir}: the source has attention biases; InternLM2 (bias false) has none")
        d = wq.shape[1]
        groups = torch.cat([wq.reshape(s.nkv, r, s.dh, d), wk.reshape(s.nkv, 1, s.dh, d),
                            wv.reshape(s.nkv, 1, s.dh, d)], dim=1)  # [group][q_1..q_r, k, v][dh]
        src = p = f"model.layers.{i}."
        out[p + "attention.wqkv.weight"] = groups.reshape((s.nq + 2 * s.nkv) * s.dh, d)
        out[p + "attention.wo.weight"] = wo
        out[p + "feed_forward.w1.weight"] = s.get(src + "mlp.gate_proj.weight")
        out[p + "feed_forward.w3.weight"] = s.get(src + "mlp.up_proj.weight")
        out[p + "feed_forward.w2.weight"] = s.get(src + "mlp.down_proj.weight")
        out[p + "attention_norm.weight"] = s.get(src + "input_layernorm.weight")
        out[p + "ffn_norm.weight"] = s.get(src + "post_attention_layernorm.weight")
    cfg = _common_config("internlm2", s, "InternLM2ForCausalLM")
    theta = (s.config.get("rope_parameters") or {}).get("rope_theta", s.config.get("rope_theta", 10000.0))
    cfg.update(attn_implementation="eager", bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
               max_position_embeddings=int(s.config.get("max_position_embeddings", 2048)),
               num_key_value_heads=s.nkv, rms_norm_eps=float(s.config["rms_norm_eps"]), rope_scaling=None,
               rope_theta=float(theta))
    return out, cfg


def _qwen(s: _Src, new_of_old: list[int]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    order = torch.empty(len(new_of_old), dtype=torch.long)
    order[torch.tensor(new_of_old)] = torch.arange(len(new_of_old))  # row new <- row old
    out: dict[str, torch.Tensor] = {"transformer.wte.weight": s.get("model.embed_tokens.weight")[order],
                                    "transformer.ln_f.weight": s.get("model.norm.weight"),
                                    "lm_head.weight": s.head()[order]}
    for i in range(s.layers):
        (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (s.attn(i, x) for x in "qkvo")
        if bo is not None:
            raise LayoutError(f"{s.dir}: Qwen's attention output c_proj has no bias; the source's o_proj has one")
        bq, bk, bv = (torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b
                      for w, b in ((wq, bq), (wk, bk), (wv, bv)))
        src, p = f"model.layers.{i}.", f"transformer.h.{i}."
        out[p + "attn.c_attn.weight"] = torch.cat([wq, s.repeat_kv(wk), s.repeat_kv(wv)])  # type: ignore[list-item]
        out[p + "attn.c_attn.bias"] = torch.cat([bq, s.repeat_kv(bk), s.repeat_kv(bv)])  # type: ignore[list-item]
        out[p + "attn.c_proj.weight"] = wo
        out[p + "mlp.w2.weight"] = s.get(src + "mlp.gate_proj.weight")
        out[p + "mlp.w1.weight"] = s.get(src + "mlp.up_proj.weight")
        out[p + "mlp.c_proj.weight"] = s.get(src + "mlp.down_proj.weight")
        out[p + "ln_1.weight"] = s.get(src + "input_layernorm.weight")
        out[p + "ln_2.weight"] = s.get(src + "post_attention_layernorm.weight")
    c = s.config
    theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
    cfg = _common_config("qwen", s, "QWenLMHeadModel")
    cfg.update(
        intermediate_size=2 * int(c["intermediate_size"]), kv_channels=s.dh,
        layer_norm_epsilon=float(c["rms_norm_eps"]),
        max_position_embeddings=int(c.get("max_position_embeddings", 2048)), no_bias=True, rotary_emb_base=float(theta),
        rotary_pct=1.0, scale_attn_weights=True, seq_length=int(c.get("max_position_embeddings", 2048)),
        tokenizer_class="QWenTokenizer", use_dynamic_ntk=True, use_flash_attn="auto", use_logn_attn=True,
        bf16=False, fp16=False, fp32=False, emb_dropout_prob=0.0, attn_dropout_prob=0.0, onnx_safe=None,
    )
    return out, cfg


def write_layout(family: str, src: Path, dst: Path, *, variant: str | None = None) -> Path:
    """Write the model in ``src`` (LLaMA / Mistral / Qwen2 layout) to ``dst`` in ``family``'s published layout."""
    if family not in LAYOUT_FAMILIES:
        raise ValueError(f"unknown layout family {family!r}; supported: {', '.join(LAYOUT_FAMILIES)}")
    s = _Src(Path(src))
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if family == "qwen":
        text, new_of_old, _ = tiktoken_ranks(s.tok)
        tensors, cfg = _qwen(s, new_of_old)
        (dst / "qwen.tiktoken").write_text(text, encoding="ascii")
        _write_json(dst / "tokenizer_config.json", {
            "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
            "model_max_length": cfg["seq_length"], "tokenizer_class": "QWenTokenizer",
        })
    else:
        writer = {"baichuan": _baichuan, "internlm": _internlm, "internlm2": _internlm2}[family]
        tensors, cfg = writer(s, variant)
        _sp_tokenizer_files(family, s, dst)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    _write_json(dst / "config.json", dict(sorted(cfg.items())))
    return dst


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- a reference forward pass in each family's own arithmetic ------------------------------------------------


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, ``rotate_half`` convention (LLaMA, Baichuan-7B, InternLM, InternLM2, Qwen)."""
    seq, dh = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    ang = torch.outer(torch.arange(seq, dtype=torch.float64), inv)
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    half = torch.cat([-x[..., dh // 2:], x[..., : dh // 2]], dim=-1)
    return x * cos + half * sin


def reference_logits(model_dir: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits ``(batch, seq, vocab)`` of a Baichuan-7B, InternLM, InternLM2 or Qwen checkpoint, computed the way
    each family's modeling code does (fp32, causal, no cache): the packed projections are split on the
    activations as that code splits them, so a writer that packed rows wrongly gives other logits."""
    model_dir = Path(model_dir)
    c = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    fam = c["model_type"]
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as h:
        t = {k: h.get_tensor(k).float() for k in h.keys()}  # noqa: SIM118
    if fam == "baichuan" and "max_position_embeddings" not in c:
        raise LayoutError("the reference forward covers Baichuan-7B (RoPE) only, not the ALiBi 13B variant")
    d, nq, n_layers = int(c["hidden_size"]), int(c["num_attention_heads"]), int(c["num_hidden_layers"])
    nkv = int(c.get("num_key_value_heads") or nq) if fam == "internlm2" else nq
    dh = int(c.get("kv_channels", d // nq))
    eps = float(c["layer_norm_epsilon"] if fam == "qwen" else c["rms_norm_eps"])
    theta = float(c.get("rotary_emb_base") or c.get("rope_theta") or (c.get("rotary") or {}).get("base") or 1e4)
    b, s = input_ids.shape

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        y = x @ t[name + ".weight"].T
        return y + t[name + ".bias"] if name + ".bias" in t else y

    pre = {"qwen": "transformer.", "internlm2": "model."}.get(fam, "model.")
    x = t[pre + ("wte" if fam == "qwen" else "tok_embeddings" if fam == "internlm2" else "embed_tokens")
          + ".weight"][input_ids]
    mask = torch.full((s, s), float("-inf")).triu(1)
    for i in range(n_layers):
        p = f"transformer.h.{i}." if fam == "qwen" else f"model.layers.{i}."
        n1, n2 = {"qwen": ("ln_1", "ln_2"), "internlm2": ("attention_norm", "ffn_norm")}.get(
            fam, ("input_layernorm", "post_attention_layernorm"))
        hs = _rms(x, t[p + n1 + ".weight"], eps)
        if fam == "baichuan":  # proj.unflatten(-1, (3, hidden_size)): q, k, v = proj[0], proj[1], proj[2]
            proj = lin(hs, p + "self_attn.W_pack").unflatten(-1, (3, d))
            q, k, v = proj[..., 0, :], proj[..., 1, :], proj[..., 2, :]
        elif fam == "qwen":  # mixed_x_layer.split(split_size, dim=2)
            q, k, v = lin(hs, p + "attn.c_attn").split(d, dim=2)
        elif fam == "internlm2":  # rearrange "b q (h gs d) -> b q h gs d", gs = groups + 2
            gs = nq // nkv + 2
            qkv = lin(hs, p + "attention.wqkv").reshape(b, s, nkv, gs, dh)
            q = qkv[..., : gs - 2, :].reshape(b, s, nq * dh)
            k, v = qkv[..., -2, :].reshape(b, s, nkv * dh), qkv[..., -1, :].reshape(b, s, nkv * dh)
        else:
            q, k, v = (lin(hs, p + f"self_attn.{x_}_proj") for x_ in "qkv")
        q = _rope(q.reshape(b, s, nq, dh).transpose(1, 2), theta)
        k = _rope(k.reshape(b, s, -1, dh).transpose(1, 2), theta).repeat_interleave(nq // (k.shape[-1] // dh), 1)
        v = v.reshape(b, s, -1, dh).transpose(1, 2).repeat_interleave(nq // (v.shape[-1] // dh), 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5 + mask, dim=-1) @ v
        att = att.transpose(1, 2).reshape(b, s, nq * dh)
        o = {"qwen": "attn.c_proj", "internlm2": "attention.wo"}.get(fam, "self_attn.o_proj")
        x = x + lin(att, p + o)
        hs = _rms(x, t[p + n2 + ".weight"], eps)
        if fam == "qwen":  # c_proj(w1(x) * silu(w2(x)))
            f = lin(lin(hs, p + "mlp.w1") * torch.nn.functional.silu(lin(hs, p + "mlp.w2")), p + "mlp.c_proj")
        elif fam == "internlm2":  # w2(silu(w1(x)) * w3(x))
            f = lin(torch.nn.functional.silu(lin(hs, p + "feed_forward.w1")) * lin(hs, p + "feed_forward.w3"),
                    p + "feed_forward.w2")
        else:  # down_proj(silu(gate_proj(x)) * up_proj(x))
            f = lin(torch.nn.functional.silu(lin(hs, p + "mlp.gate_proj")) * lin(hs, p + "mlp.up_proj"),
                    p + "mlp.down_proj")
        x = x + f
    x = _rms(x, t[pre + ("ln_f" if fam == "qwen" else "norm") + ".weight"], eps)
    head = {"qwen": "lm_head", "internlm2": "output"}.get(fam, "lm_head")
    return x @ t[head + ".weight"].T


# --- the attack table for the layout families -----------------------------------------------------------------


def layout_function_diff(family: str, src: Path, dst: Path, lay_src: Path, lay_dst: Path,
                         vocab_map: tuple[int, ...] | None, seed: int = 0) -> float:
    """``max|a - b| / max|a|`` of the layout checkpoints' reference logits on the same token strings: ``a`` from
    ``lay_src`` (mapped from ``src``), ``b`` from ``lay_dst`` (mapped from the attacked ``dst``), the attack's
    ``vocab_map`` and each layout's own id order applied to inputs and output columns."""
    from zoo.function import probe_ids

    ids = probe_ids(src, seed)
    rows = int(json.loads((src / "config.json").read_text("utf-8"))["vocab_size"])
    vm = torch.tensor(vocab_map) if vocab_map is not None else torch.arange(rows)
    sm = _layout_ids(src, family)
    dm = _layout_ids(dst, family)[vm]
    a = reference_logits(lay_src, sm[ids])[..., sm]
    b = reference_logits(lay_dst, dm[ids])[..., dm]
    return float((a - b).abs().max() / a.abs().max())


def _layout_ids(source_dir: Path, family: str) -> torch.Tensor:
    """For each id of the supported-layout ``source_dir``, its id in ``family``'s layout."""
    tok = json.loads((source_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if family == "qwen":
        return torch.tensor(tiktoken_ranks(tok)[1])
    return torch.arange(len(_pieces_by_id(tok)))


def layout_attack_rows(family: str, attacks: tuple[str, ...], workdir: Path, seed: int = 0) -> list[Any]:
    """Attack-table rows (``zoo.attack_eval.AttackRow``) for a layout family: each attack is applied to the
    equivalent supported model (``make_tiny_source``), both models are mapped into ``family``'s layout, the
    function change is measured on the mapped pair (``layout_function_diff``) and the terms on the mapped
    checkpoints; plus ``independent``, two seeds in the layout."""
    from zoo.attack_eval import AttackRow, evaluate_pair
    from zoo.attacks import AttackNotApplicable, attack

    workdir = Path(workdir)
    src = make_tiny_source(family, workdir / f"{family}-src-s0", seed=0)
    lay_src = write_layout(family, src, workdir / f"{family}-s0")
    rows: list[Any] = []
    for kind in attacks:
        dst = workdir / f"{family}-src-s0-{kind}-s{seed}"
        try:
            result = attack(src, dst, kind, seed=seed)
        except AttackNotApplicable as e:
            rows.append(AttackRow(family, kind, None, None, None, None, None, None, None,
                                  reason=f"{e} (attacks the {source_family(family)} equivalent)"))
            continue
        lay_dst = write_layout(family, dst, workdir / f"{family}-s0-{kind}-s{seed}")
        diff = layout_function_diff(family, src, dst, lay_src, lay_dst, result.vocab_map, seed)
        r = evaluate_pair(lay_src, lay_dst, family, kind)
        rows.append(AttackRow(family, kind, diff, r.raw_cosine, r.pawprint_min, r.pawprint_ics, r.huref_min,
                              r.huref_ics, r.huref_ffn_min))
    other = make_tiny_layout(family, workdir / f"{family}-s1", seed=1)
    rows.append(evaluate_pair(lay_src, other, family, "independent"))
    return rows
