"""Where each family keeps its residual-stream tensors: one short adapter per architecture.

An adapter reads a checkpoint's ``config.json`` (``model_type`` picks the adapter, never the directory name)
and its tensor names, and describes the model as roles the attacks understand: embeddings that write the
residual stream, norms, linears that read it (``readers``) or write it (``writers``), attention heads as row
sets of possibly fused tensors, and FFN hidden units. Names are HF checkpoint names; every linear is seen
in ``(out, in)`` layout (GPT-2's Conv1D tensors, stored ``(in, out)``, are listed in ``Arch.conv1d`` and
transposed on load). The adapters never touch tensor values; ``zoo._attacks_ops`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

NormKind = Literal["rms", "layer"]
RotaryStyle = Literal["half", "interleave"]

# Activations a for which a(s x) = s a(x) for every s > 0: a non-gated FFN can then be rescaled per unit.
HOMOGENEOUS_ACTIVATIONS: frozenset[str] = frozenset({"relu"})


class ArchError(Exception):
    """The checkpoint does not match the layout its family's adapter expects."""


@dataclass(frozen=True)
class Norm:
    """A norm layer. ``offset`` is what the model adds to the stored weight (Gemma stores ``g - 1``)."""

    weight: str
    bias: str | None
    kind: NormKind
    offset: float = 0.0


@dataclass(frozen=True)
class Rows:
    """Output rows ``index`` of a linear (``weight``, ``bias``); for heads, head-major ``[head][dh]``."""

    weight: str
    bias: str | None
    index: tuple[int, ...]


@dataclass(frozen=True)
class Linear:
    weight: str
    bias: str | None


@dataclass(frozen=True)
class Rotary:
    """Rotary embedding on the first ``dim`` dims of each head: pairs ``(i, i+dim/2)`` (``half``, HF
    ``rotate_half``) or ``(2i, 2i+1)`` (``interleave``, GPT-J ``rotate_every_two``)."""

    dim: int
    style: RotaryStyle


@dataclass(frozen=True)
class Attention:
    q: Rows
    k: Rows
    v: Rows
    o: Linear  # writer; its input columns are head-major like q
    n_q: int
    n_kv: int
    head_dim: int
    rotary: Rotary | None
    alibi: bool


@dataclass(frozen=True)
class Mlp:
    up: Rows  # non-gated: the input projection
    gate: Rows | None
    down: Linear  # writer
    activation: str


@dataclass(frozen=True)
class Layer:
    attn_norm: Norm | None  # pre-norm read by attention; None in post-norm models
    mlp_norm: Norm | None  # pre-norm read by the FFN; may be the same norm as attn_norm
    post_norms: tuple[Norm, ...]  # post-norm models: norms whose output is the residual stream
    attn: Attention
    mlp: Mlp


@dataclass(frozen=True)
class Arch:
    family: str
    embed: str  # token embedding (vocab x d_embed)
    stream_embeds: tuple[str, ...]  # tables whose rows are added into the residual stream
    embed_norm: Norm | None  # a norm applied to the embedding sum (BLOOM, BERT)
    layers: tuple[Layer, ...]
    final_norm: Norm | None
    final_readers: tuple[Linear, ...]  # linears reading the final normed stream (lm_head or OPT project_out)
    lm_head: Linear | None  # None for encoders without a head
    tied: bool  # lm_head is the token embedding and is not stored
    extra_readers: tuple[Linear, ...] = ()  # BERT pooler
    extra_writers: tuple[Linear, ...] = ()  # OPT project_in
    post_norm: bool = False
    eps_key: str | None = None  # config.json key of the norms' epsilon; None when the code fixes it
    eps_default: float = 1e-5
    conv1d: frozenset[str] = frozenset()
    ignored: tuple[str, ...] = ()  # name suffixes of buffers copied unchanged (causal-mask caches)
    hidden_output: bool = False  # the model's output is the last hidden state, not logits
    residual_is_norm_output: bool = False  # BLOOM's apply_residual_connection_post_layernorm

    def norms(self) -> tuple[Norm, ...]:
        seen: dict[str, Norm] = {}
        extra = [self.embed_norm, self.final_norm]
        for n in [*extra, *(x for ly in self.layers for x in (ly.attn_norm, ly.mlp_norm, *ly.post_norms))]:
            if n is not None:
                seen.setdefault(n.weight, n)
        return tuple(seen.values())

    def readers(self, include_tied_head: bool = False) -> tuple[Linear, ...]:
        """Every linear whose input is the residual stream (a fused tensor once)."""
        out: list[Linear] = []
        for ly in self.layers:
            out += [Linear(r.weight, r.bias) for r in (ly.attn.q, ly.attn.k, ly.attn.v)]
            out += [Linear(r.weight, r.bias) for r in (ly.mlp.up, ly.mlp.gate) if r is not None]
        out += list(self.extra_readers)
        out += [r for r in self.final_readers if include_tied_head or not self._is_tied_head(r)]
        return _unique(out)

    def writers(self) -> tuple[Linear, ...]:
        """Every linear whose output is added into the residual stream."""
        return _unique([w for ly in self.layers for w in (ly.attn.o, ly.mlp.down)] + list(self.extra_writers))

    def layer_norm_groups(self) -> Iterator[tuple[Norm, tuple[Linear, ...]]]:
        """Each pre-norm with the linears that read its output."""
        for ly in self.layers:
            attn = [Linear(r.weight, r.bias) for r in (ly.attn.q, ly.attn.k, ly.attn.v)]
            mlp = [Linear(r.weight, r.bias) for r in (ly.mlp.up, ly.mlp.gate) if r is not None]
            if ly.attn_norm is None or ly.mlp_norm is None:
                continue
            if ly.attn_norm.weight == ly.mlp_norm.weight:
                yield ly.attn_norm, _unique(attn + mlp)
            else:
                yield ly.attn_norm, _unique(attn)
                yield ly.mlp_norm, _unique(mlp)
        if self.final_norm is not None:
            yield self.final_norm, tuple(self.final_readers)

    def head_reads_stream(self) -> bool:
        return self.lm_head is not None and any(r.weight == self.lm_head.weight for r in self.final_readers)

    def claimed(self) -> set[str]:
        """Every tensor name this description accounts for."""
        names = {self.embed, *self.stream_embeds}
        for n in self.norms():
            names |= {n.weight} | ({n.bias} if n.bias else set())
        for lin in [*self.readers(include_tied_head=True), *self.writers()]:
            names |= {lin.weight} | ({lin.bias} if lin.bias else set())
        if self.lm_head is not None and not self.tied:
            names |= {self.lm_head.weight} | ({self.lm_head.bias} if self.lm_head.bias else set())
        return names

    def _is_tied_head(self, lin: Linear) -> bool:
        return self.tied and self.lm_head is not None and lin.weight == self.lm_head.weight


def _unique(lins: list[Linear]) -> tuple[Linear, ...]:
    seen: dict[str, Linear] = {}
    for lin in lins:
        seen.setdefault(lin.weight, lin)
    return tuple(seen.values())


# --- helpers for the adapters -----------------------------------------------------------------------------


class _Names:
    """The checkpoint's tensor names, with the base-model prefix resolved (``transformer.h.0`` or ``h.0``)."""

    def __init__(self, names: set[str], prefix: str, probe: str) -> None:
        self.all = names
        # a checkpoint saved from the bare base model has no prefix (e.g. the original GPT-2 files)
        self.prefix = prefix if prefix + probe in names or probe not in names else ""

    def req(self, name: str, top: bool = False) -> str:
        full = name if top else self.prefix + name
        if full not in self.all:
            raise ArchError(f"expected tensor {full!r} is missing from the checkpoint")
        return full

    def opt(self, name: str, top: bool = False) -> str | None:
        full = name if top else self.prefix + name
        return full if full in self.all else None


def _rows(n: _Names, weight: str, index: range | list[int]) -> Rows:
    return Rows(n.req(weight + ".weight"), n.opt(weight + ".bias"), tuple(index))


def _lin(n: _Names, name: str, top: bool = False) -> Linear:
    return Linear(n.req(name + ".weight", top), n.opt(name + ".bias", top))


def _norm(n: _Names, name: str, kind: NormKind, offset: float = 0.0) -> Norm:
    return Norm(n.req(name + ".weight"), n.opt(name + ".bias") if kind == "layer" else None, kind, offset)


def _rope_dim(cfg: Any, head_dim: int, honours_partial: bool) -> int:
    params = getattr(cfg, "rope_parameters", None) or {}
    factor = float(params.get("partial_rotary_factor", 1.0)) if honours_partial else 1.0
    return int(head_dim * factor)


def _head_dim(cfg: Any) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _split_rows(sizes: list[int]) -> list[range]:
    out, start = [], 0
    for s in sizes:
        out.append(range(start, start + s))
        start += s
    return out


def _per_head_interleaved(n_heads: int, dh: int) -> tuple[list[int], list[int], list[int]]:
    """``[head][q,k,v][dh]`` (GPT-NeoX, BLOOM, Falcon-RW)."""
    q = [h * 3 * dh + i for h in range(n_heads) for i in range(dh)]
    return q, [x + dh for x in q], [x + 2 * dh for x in q]


def _lm_head(n: _Names, name: str, tied: bool) -> Linear:
    if tied:
        if name + ".weight" in n.all:
            raise ArchError(f"config ties the lm head to the embedding but {name}.weight is also stored")
        return Linear(name + ".weight", None)
    return _lin(n, name, top=True)


def _tied(cfg: Any) -> bool:
    return bool(getattr(cfg, "tie_word_embeddings", True))  # the config class knows its family's default


# --- adapters ---------------------------------------------------------------------------------------------


def _llama_like(family: str, cfg: Any, names: set[str]) -> Arch:
    """LLaMA, Mistral, Qwen2, Gemma, Phi-3: RMSNorm pre-norm, rotary, gated FFN, GQA."""
    n = _Names(names, "model.", "embed_tokens.weight")
    nq, dh = cfg.num_attention_heads, _head_dim(cfg)
    nkv = getattr(cfg, "num_key_value_heads", None) or nq
    ffn = cfg.intermediate_size
    offset = 1.0 if family == "gemma" else 0.0
    rotary = Rotary(_rope_dim(cfg, dh, honours_partial=family == "phi3"), "half")
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        if family == "phi3":
            qr, kr, vr = _split_rows([nq * dh, nkv * dh, nkv * dh])
            q, k, v = (_rows(n, p + "self_attn.qkv_proj", r) for r in (qr, kr, vr))
            gr, ur = _split_rows([ffn, ffn])  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2)
            gate, up = _rows(n, p + "mlp.gate_up_proj", gr), _rows(n, p + "mlp.gate_up_proj", ur)
        else:
            q = _rows(n, p + "self_attn.q_proj", range(nq * dh))
            k = _rows(n, p + "self_attn.k_proj", range(nkv * dh))
            v = _rows(n, p + "self_attn.v_proj", range(nkv * dh))
            gate = _rows(n, p + "mlp.gate_proj", range(ffn))
            up = _rows(n, p + "mlp.up_proj", range(ffn))
        attn = Attention(q, k, v, _lin(n, p + "self_attn.o_proj"), nq, nkv, dh, rotary, alibi=False)
        mlp = Mlp(up, gate, _lin(n, p + "mlp.down_proj"), str(cfg.hidden_act))
        layers.append(Layer(_norm(n, p + "input_layernorm", "rms", offset),
                            _norm(n, p + "post_attention_layernorm", "rms", offset), (), attn, mlp))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("embed_tokens.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "norm", "rms", offset), (head,), head,
                tied, eps_key="rms_norm_eps", eps_default=float(cfg.rms_norm_eps))


def _gpt2(family: str, cfg: Any, names: set[str]) -> Arch:
    """GPT-2: LayerNorm pre-norm, learned positions, Conv1D (in, out) weights, c_attn in thirds."""
    n = _Names(names, "transformer.", "wte.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    conv: set[str] = set()
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"h.{i}."
        qr, kr, vr = _split_rows([d, d, d])
        q, k, v = (_rows(n, p + "attn.c_attn", r) for r in (qr, kr, vr))
        o = _lin(n, p + "attn.c_proj")
        h = cfg.n_inner or 4 * d
        up, down = _rows(n, p + "mlp.c_fc", range(h)), _lin(n, p + "mlp.c_proj")
        conv |= {q.weight, o.weight, up.weight, down.weight}
        attn = Attention(q, k, v, o, nh, nh, d // nh, None, alibi=False)
        layers.append(Layer(_norm(n, p + "ln_1", "layer"), _norm(n, p + "ln_2", "layer"), (), attn,
                            Mlp(up, None, down, str(cfg.activation_function))))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    wte, wpe = n.req("wte.weight"), n.req("wpe.weight")
    return Arch(family, wte, (wte, wpe), None, tuple(layers), _norm(n, "ln_f", "layer"), (head,), head, tied,
                eps_key="layer_norm_epsilon", eps_default=float(cfg.layer_norm_epsilon),
                conv1d=frozenset(conv), ignored=(".attn.bias", ".attn.masked_bias"))


def _gpt_neox(family: str, cfg: Any, names: set[str]) -> Arch:
    """GPT-NeoX / Pythia: LayerNorm, per-head interleaved fused QKV, partial rotary, optional parallel residual
    (attention and FFN read their own norms of the same stream either way)."""
    n = _Names(names, "gpt_neox.", "embed_in.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    dh = d // nh
    rotary = Rotary(_rope_dim(cfg, dh, honours_partial=True), "half")
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        qi, ki, vi = _per_head_interleaved(nh, dh)
        q, k, v = (_rows(n, p + "attention.query_key_value", r) for r in (qi, ki, vi))
        attn = Attention(q, k, v, _lin(n, p + "attention.dense"), nh, nh, dh, rotary, alibi=False)
        mlp = Mlp(_rows(n, p + "mlp.dense_h_to_4h", range(cfg.intermediate_size)), None,
                  _lin(n, p + "mlp.dense_4h_to_h"), str(cfg.hidden_act))
        layers.append(Layer(_norm(n, p + "input_layernorm", "layer"),
                            _norm(n, p + "post_attention_layernorm", "layer"), (), attn, mlp))
    tied = _tied(cfg)
    # transformers 5 calls the head module lm_head but saves it as embed_out, like the original checkpoints
    head = _lm_head(n, "lm_head" if "lm_head.weight" in names else "embed_out", tied)
    embed = n.req("embed_in.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "final_layer_norm", "layer"), (head,),
                head, tied, eps_key="layer_norm_eps", eps_default=float(cfg.layer_norm_eps),
                ignored=(".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"))


def _gptj(family: str, cfg: Any, names: set[str]) -> Arch:
    """GPT-J: one LayerNorm read by attention and FFN in parallel, interleaved partial rotary, biased head."""
    n = _Names(names, "transformer.", "wte.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    dh = d // nh
    rotary = Rotary(int(cfg.rotary_dim or dh), "interleave")
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"h.{i}."
        q, k, v = (_rows(n, p + f"attn.{x}_proj", range(d)) for x in "qkv")
        attn = Attention(q, k, v, _lin(n, p + "attn.out_proj"), nh, nh, dh, rotary, alibi=False)
        mlp = Mlp(_rows(n, p + "mlp.fc_in", range(cfg.n_inner or 4 * d)), None, _lin(n, p + "mlp.fc_out"),
                  str(cfg.activation_function))
        ln = _norm(n, p + "ln_1", "layer")
        layers.append(Layer(ln, ln, (), attn, mlp))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    wte = n.req("wte.weight")
    return Arch(family, wte, (wte,), None, tuple(layers), _norm(n, "ln_f", "layer"), (head,), head, tied,
                eps_key="layer_norm_epsilon", eps_default=float(cfg.layer_norm_epsilon),
                ignored=(".attn.bias", ".attn.masked_bias"))


def _opt(family: str, cfg: Any, names: set[str]) -> Arch:
    """OPT: LayerNorm (pre-norm, or post-norm for OPT-350m), learned positions, optional project_in/out
    between a narrower embedding space and the stream."""
    n = _Names(names, "model.decoder.", "embed_tokens.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    pre = bool(cfg.do_layer_norm_before)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        q, k, v = (_rows(n, p + f"self_attn.{x}_proj", range(d)) for x in "qkv")
        attn = Attention(q, k, v, _lin(n, p + "self_attn.out_proj"), nh, nh, d // nh, None, alibi=False)
        mlp = Mlp(_rows(n, p + "fc1", range(cfg.ffn_dim)), None, _lin(n, p + "fc2"),
                  str(cfg.activation_function))
        ln1, ln2 = _norm(n, p + "self_attn_layer_norm", "layer"), _norm(n, p + "final_layer_norm", "layer")
        layers.append(Layer(ln1, ln2, (), attn, mlp) if pre else Layer(None, None, (ln1, ln2), attn, mlp))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed, pos = n.req("embed_tokens.weight"), n.req("embed_positions.weight")
    final = _norm(n, "final_layer_norm", "layer") if n.opt("final_layer_norm.weight") else None
    if n.opt("project_in.weight"):
        proj_in, proj_out = _lin(n, "project_in"), _lin(n, "project_out")
        stream: tuple[str, ...] = (pos,)
        writers: tuple[Linear, ...] = (proj_in,)
        readers: tuple[Linear, ...] = (proj_out,)
    else:
        stream, writers, readers = (embed, pos), (), (head,)
    return Arch(family, embed, stream, None, tuple(layers), final, readers, head, tied, extra_writers=writers,
                post_norm=not pre, eps_key=None)  # OPT's LayerNorms use the nn.LayerNorm default eps


def _falcon(family: str, cfg: Any, names: set[str]) -> Arch:
    """Falcon: three fused-QKV layouts (new_decoder_architecture grouped ``[kv][q..q,k,v][dh]``, multi-query
    ``[q..q,k,v]``, per-head ``[head][q,k,v]``), rotary or ALiBi, parallel or sequential blocks."""
    n = _Names(names, "transformer.", "word_embeddings.weight")
    d, nq = cfg.hidden_size, cfg.num_attention_heads
    dh = d // nq
    new = bool(cfg.new_decoder_architecture)
    if new:
        nkv = cfg.num_kv_heads
        r = nq // nkv
        blk = (r + 2) * dh
        qi = [g * blk + j * dh + i for g in range(nkv) for j in range(r) for i in range(dh)]
        ki = [g * blk + r * dh + i for g in range(nkv) for i in range(dh)]
        vi = [x + dh for x in ki]
    elif cfg.multi_query:
        nkv = 1
        qi, ki, vi = list(range(nq * dh)), list(range(nq * dh, nq * dh + dh)), list(range(nq * dh + dh, d + 2 * dh))
    else:
        nkv = nq
        qi, ki, vi = _per_head_interleaved(nq, dh)
    alibi = bool(cfg.alibi)
    rotary = None if alibi else Rotary(dh, "half")
    num_ln = getattr(cfg, "num_ln_in_parallel_attn", None) or (2 if new else 1)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"h.{i}."
        q, k, v = (_rows(n, p + "self_attention.query_key_value", x) for x in (qi, ki, vi))
        attn = Attention(q, k, v, _lin(n, p + "self_attention.dense"), nq, nkv, dh, rotary, alibi)
        mlp = Mlp(_rows(n, p + "mlp.dense_h_to_4h", range(cfg.ffn_hidden_size or 4 * d)), None,
                  _lin(n, p + "mlp.dense_4h_to_h"), str(cfg.activation))
        if new and num_ln == 2:
            ln_a, ln_m = _norm(n, p + "ln_attn", "layer"), _norm(n, p + "ln_mlp", "layer")
        elif new or cfg.parallel_attn:
            ln_a = ln_m = _norm(n, p + "input_layernorm", "layer")
        else:
            ln_a, ln_m = _norm(n, p + "input_layernorm", "layer"), _norm(n, p + "post_attention_layernorm", "layer")
        layers.append(Layer(ln_a, ln_m, (), attn, mlp))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("word_embeddings.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "ln_f", "layer"), (head,), head, tied,
                eps_key="layer_norm_epsilon", eps_default=float(cfg.layer_norm_epsilon))


def _bloom(family: str, cfg: Any, names: set[str]) -> Arch:
    """BLOOM: a LayerNorm on the embeddings, per-head interleaved fused QKV, ALiBi."""
    n = _Names(names, "transformer.", "word_embeddings.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    dh = d // nh
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"h.{i}."
        qi, ki, vi = _per_head_interleaved(nh, dh)
        q, k, v = (_rows(n, p + "self_attention.query_key_value", x) for x in (qi, ki, vi))
        attn = Attention(q, k, v, _lin(n, p + "self_attention.dense"), nh, nh, dh, None, alibi=True)
        # BloomMLP hard-codes its (tanh-approximated) GELU and a 4x width
        mlp = Mlp(_rows(n, p + "mlp.dense_h_to_4h", range(4 * d)), None, _lin(n, p + "mlp.dense_4h_to_h"), "gelu")
        layers.append(Layer(_norm(n, p + "input_layernorm", "layer"),
                            _norm(n, p + "post_attention_layernorm", "layer"), (), attn, mlp))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("word_embeddings.weight")
    return Arch(family, embed, (embed,), _norm(n, "word_embeddings_layernorm", "layer"), tuple(layers),
                _norm(n, "ln_f", "layer"), (head,), head, tied, eps_key="layer_norm_epsilon",
                eps_default=float(cfg.layer_norm_epsilon),
                residual_is_norm_output=bool(cfg.apply_residual_connection_post_layernorm))


def _bert(family: str, cfg: Any, names: set[str]) -> Arch:
    """BERT encoder (BertModel): post-norm, so every LayerNorm output *is* the residual stream."""
    n = _Names(names, "bert.", "embeddings.word_embeddings.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (_rows(n, p + f"attention.self.{x}", range(d)) for x in ("query", "key", "value"))
        attn = Attention(q, k, v, _lin(n, p + "attention.output.dense"), nh, nh, d // nh, None, alibi=False)
        mlp = Mlp(_rows(n, p + "intermediate.dense", range(cfg.intermediate_size)), None,
                  _lin(n, p + "output.dense"), str(cfg.hidden_act))
        post = (_norm(n, p + "attention.output.LayerNorm", "layer"), _norm(n, p + "output.LayerNorm", "layer"))
        layers.append(Layer(None, None, post, attn, mlp))
    e = "embeddings."
    embed = n.req(e + "word_embeddings.weight")
    stream = (embed, n.req(e + "position_embeddings.weight"), n.req(e + "token_type_embeddings.weight"))
    pooler = (_lin(n, "pooler.dense"),) if n.opt("pooler.dense.weight") else ()
    return Arch(family, embed, stream, _norm(n, e + "LayerNorm", "layer"), tuple(layers), None, (), None, False,
                extra_readers=pooler, post_norm=True, eps_key="layer_norm_eps",
                eps_default=float(cfg.layer_norm_eps), hidden_output=True,
                ignored=("embeddings.position_ids", "embeddings.token_type_ids"))


def _mpt(family: str, cfg: Any, names: set[str]) -> Arch:
    """MPT: LayerNorm pre-norm (no biases with ``no_bias``), ALiBi, a packed ``Wqkv`` split
    ``[q (d), k, v]`` by rows (transformers' ``chunk(3)``: every head has its own key and value), GELU FFN of
    4d units (``MptMLP``), tied head."""
    n = _Names(names, "transformer.", "wte.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"blocks.{i}."
        qr, kr, vr = _split_rows([d, d, d])
        q, k, v = (_rows(n, p + "attn.Wqkv", r) for r in (qr, kr, vr))
        attn = Attention(q, k, v, _lin(n, p + "attn.out_proj"), nh, nh, d // nh, None, alibi=True)
        mlp = Mlp(_rows(n, p + "ffn.up_proj", range(4 * d)), None, _lin(n, p + "ffn.down_proj"), "gelu")
        layers.append(Layer(_norm(n, p + "norm_1", "layer"), _norm(n, p + "norm_2", "layer"), (), attn, mlp))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("wte.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "norm_f", "layer"), (head,), head, tied,
                eps_key="layer_norm_epsilon", eps_default=float(cfg.layer_norm_epsilon))


_Adapter = Callable[[str, Any, set[str]], Arch]
ADAPTERS: dict[str, _Adapter] = {
    "llama": _llama_like, "mistral": _llama_like, "qwen2": _llama_like, "gemma": _llama_like,
    "phi3": _llama_like, "gpt2": _gpt2, "gpt_neox": _gpt_neox, "gptj": _gptj, "opt": _opt,
    "falcon": _falcon, "bloom": _bloom, "bert": _bert, "mpt": _mpt,
}
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(ADAPTERS)


def describe(family: str, hf_config: Any, shapes: dict[str, tuple[int, ...]]) -> Arch:
    """The roles of the checkpoint tensors (name -> stored shape) for ``family``, given its transformers config
    object; the config's widths are checked against the stored shapes."""
    arch = ADAPTERS[family](family, hf_config, set(shapes))
    _check_shapes(arch, {k: (v[::-1] if k in arch.conv1d else v) for k, v in shapes.items()})
    return arch


def _check_shapes(arch: Arch, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every row set must lie inside its tensor, fused row sets must tile it, and widths must agree."""
    def fail(what: str) -> ArchError:
        return ArchError(f"{arch.family}: config and checkpoint disagree: {what}")

    d = shapes[arch.stream_embeds[0]][1]
    tiles: dict[str, list[int]] = {}
    for ly in arch.layers:
        a, m = ly.attn, ly.mlp
        for rows in (a.q, a.k, a.v, m.up, m.gate):
            if rows is not None:
                tiles.setdefault(rows.weight, []).extend(rows.index)
        if shapes[a.o.weight][1] != a.n_q * a.head_dim or a.n_q % a.n_kv:
            raise fail(f"{a.o.weight} {shapes[a.o.weight]} vs {a.n_q} heads ({a.n_kv} kv) of {a.head_dim}")
        if len(a.q.index) != a.n_q * a.head_dim or len(a.k.index) != a.n_kv * a.head_dim:
            raise fail(f"{a.q.weight}: head rows do not match {a.n_q}/{a.n_kv} heads of {a.head_dim}")
        if shapes[m.down.weight][1] != len(m.up.index):
            raise fail(f"{m.down.weight} {shapes[m.down.weight]} vs {len(m.up.index)} FFN units")
    for name, index in tiles.items():
        if sorted(index) != list(range(shapes[name][0])):
            raise fail(f"{name} {shapes[name]}: its q/k/v or FFN row sets do not tile its rows")
    for lin in arch.readers() + arch.writers():
        if d not in shapes[lin.weight]:
            raise fail(f"{lin.weight} {shapes[lin.weight]} does not touch the {d}-wide stream")


def unclaimed(arch: Arch, names: set[str]) -> list[str]:
    """Names the adapter does not understand (other than ignored buffers): attacking them blind is unsafe."""
    claimed = arch.claimed()
    return sorted(x for x in names if x not in claimed and not x.endswith(arch.ignored))
