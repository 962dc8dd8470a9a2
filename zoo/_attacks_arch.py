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
from dataclasses import dataclass, replace
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
class Mla:
    """DeepSeek-V2/V3 latent attention: ``q_a`` (None without a query compression; ``q_b`` then reads the
    stream) and ``kv_a`` read the stream; ``q_b`` rows per head ``[nope, rope]``, ``kv_a`` rows ``[latent (kv_rank),
    shared rotary key (rope)]``, ``kv_b`` rows per head ``[k_nope, v]``, ``o`` columns per head ``v_dim``. The latent
    norms are internal: they read the latents, not the stream."""

    q_a: Linear | None
    q_a_norm: Norm | None
    q_b: Linear
    kv_a: Linear
    kv_a_norm: Norm
    kv_b: Linear
    nope: int
    rope: int
    v_dim: int
    kv_rank: int


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
    # latent attention: q/k/v above are then the q_b rows and kv_b's k/v rows, and only ``mla``'s q_a (or q_b)
    # and kv_a read the stream
    mla: Mla | None = None
    # QK-norm (Qwen3, OLMo-2, Gemma-3): RMSNorms of the query / key projections; per head (one weight of
    # head_dim shared by all heads) or over all heads together (OLMo-2, weights of n_q * head_dim / n_kv * head_dim)
    q_norm: Norm | None = None
    k_norm: Norm | None = None
    qk_norm_per_head: bool = True

    def stream_readers(self) -> list[Linear]:
        """The linears whose input is this attention's (normed) residual stream."""
        if self.mla is not None:
            return [self.mla.q_a or self.mla.q_b, self.mla.kv_a]
        return [Linear(r.weight, r.bias) for r in (self.q, self.k, self.v)]


@dataclass(frozen=True)
class Mlp:
    up: Rows  # non-gated: the input projection
    gate: Rows | None
    down: Linear  # writer
    activation: str


@dataclass(frozen=True)
class Moe:
    """A mixture-of-experts FFN: ``router`` (rows = experts) and Qwen2-MoE's ``shared_gate`` read the stream,
    ``experts`` and ``shared`` are gated FFNs; ``score_bias`` (DeepSeek-V3) is one entry per expert, and experts are
    routed within ``n_group`` contiguous groups."""

    router: Linear
    experts: tuple[Mlp, ...]
    shared: tuple[Mlp, ...] = ()
    shared_gate: Linear | None = None
    score_bias: str | None = None
    n_group: int = 1


@dataclass(frozen=True)
class Layer:
    attn_norm: Norm | None  # pre-norm read by attention; None in post-norm models
    mlp_norm: Norm | None  # pre-norm read by the FFN; may be the same norm as attn_norm
    post_norms: tuple[Norm, ...]  # post-norm models: norms whose output is the residual stream
    attn: Attention
    mlp: Mlp  # a mixture-of-experts layer: its first expert (``mlps()`` lists every FFN)
    moe: Moe | None = None
    # norms of a block's output before it is added to the stream (Gemma-2/3 sandwich norms, OLMo-2)
    out_norms: tuple[Norm, ...] = ()

    def mlps(self) -> tuple[Mlp, ...]:
        """Every FFN of the layer: the dense one, or every routed and shared expert."""
        return (self.mlp,) if self.moe is None else (*self.moe.experts, *self.moe.shared)

    def mlp_readers(self) -> list[Linear]:
        """The linears whose input is the FFN's (normed) stream: up/gate of every FFN, the router."""
        out = [Linear(r.weight, r.bias) for m in self.mlps() for r in (m.up, m.gate) if r is not None]
        if self.moe is not None:
            out += [self.moe.router] + ([self.moe.shared_gate] if self.moe.shared_gate else [])
        return out


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
    head_bias: str | None = None  # MPNet: a relative-position bias table (buckets x heads) shared by all layers

    def norms(self) -> tuple[Norm, ...]:
        seen: dict[str, Norm] = {}
        extra = [self.embed_norm, self.final_norm]
        for n in [*extra, *(x for ly in self.layers
                            for x in (ly.attn_norm, ly.mlp_norm, *ly.post_norms, *ly.out_norms))]:
            if n is not None:
                seen.setdefault(n.weight, n)
        return tuple(seen.values())

    def readers(self, include_tied_head: bool = False) -> tuple[Linear, ...]:
        """Every linear whose input is the residual stream (a fused tensor once)."""
        out: list[Linear] = []
        for ly in self.layers:
            out += ly.attn.stream_readers()
            out += ly.mlp_readers()
        out += list(self.extra_readers)
        out += [r for r in self.final_readers if include_tied_head or not self._is_tied_head(r)]
        return _unique(out)

    def writers(self) -> tuple[Linear, ...]:
        """Every linear whose output is added into the residual stream."""
        return _unique([w for ly in self.layers for w in (ly.attn.o, *(m.down for m in ly.mlps()))]
                       + list(self.extra_writers))

    def layer_norm_groups(self) -> Iterator[tuple[Norm, tuple[Linear, ...]]]:
        """Each pre-norm with the linears that read its output."""
        for ly in self.layers:
            attn = ly.attn.stream_readers()
            mlp = ly.mlp_readers()
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
        names |= {x.weight for ly in self.layers for x in (ly.attn.q_norm, ly.attn.k_norm) if x is not None}
        names |= {self.head_bias} if self.head_bias else set()
        for lin in [*self.readers(include_tied_head=True), *self.writers()]:
            names |= {lin.weight} | ({lin.bias} if lin.bias else set())
        if self.lm_head is not None and not self.tied:
            names |= {self.lm_head.weight} | ({self.lm_head.bias} if self.lm_head.bias else set())
        for ly in self.layers:
            mla = ly.attn.mla
            if mla is not None:  # tensors inside the attention, neither reading nor writing the stream
                names |= {x for n in (mla.q_a_norm, mla.kv_a_norm) if n for x in (n.weight, n.bias) if x}
                names |= {x for lin in (mla.q_b, mla.kv_b) for x in (lin.weight, lin.bias) if x}
            if ly.moe is not None and ly.moe.score_bias:
                names.add(ly.moe.score_bias)
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


def _gated(n: _Names, prefix: str, names: tuple[str, str, str], width: int, act: str) -> Mlp:
    """A gated FFN from its gate, up and down tensor names (without ``.weight``)."""
    g, u, d = (prefix + x for x in names)
    return Mlp(_rows(n, u, range(width)), _rows(n, g, range(width)), _lin(n, d), act)


_PROJ = ("gate_proj", "up_proj", "down_proj")


def _moe_llama(family: str, cfg: Any, names: set[str]) -> Arch:
    """Mixtral and Qwen2-MoE: LLaMA's attention and norms, a routed mixture of gated experts in the sparse layers
    (Qwen2-MoE: ``mlp_only_layers`` / ``decoder_sparse_step`` stay dense, plus a sigmoid-gated shared expert)."""
    n = _Names(names, "model.", "embed_tokens.weight")
    nq, dh = cfg.num_attention_heads, _head_dim(cfg)
    nkv = getattr(cfg, "num_key_value_heads", None) or nq
    act = str(cfg.hidden_act)
    rotary = Rotary(_rope_dim(cfg, dh, honours_partial=False), "half")
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        q = _rows(n, p + "self_attn.q_proj", range(nq * dh))
        k = _rows(n, p + "self_attn.k_proj", range(nkv * dh))
        v = _rows(n, p + "self_attn.v_proj", range(nkv * dh))
        attn = Attention(q, k, v, _lin(n, p + "self_attn.o_proj"), nq, nkv, dh, rotary, alibi=False)
        moe = None
        if family == "mixtral":
            experts = tuple(_gated(n, f"{p}block_sparse_moe.experts.{e}.", ("w1", "w3", "w2"), cfg.intermediate_size,
                                   act) for e in range(cfg.num_local_experts))
            moe = Moe(_lin(n, p + "block_sparse_moe.gate"), experts)
        elif i not in (cfg.mlp_only_layers or []) and cfg.num_experts and (i + 1) % cfg.decoder_sparse_step == 0:
            experts = tuple(_gated(n, f"{p}mlp.experts.{e}.", _PROJ, cfg.moe_intermediate_size, act)
                            for e in range(cfg.num_experts))
            if family == "qwen2_moe":
                shared = (_gated(n, p + "mlp.shared_expert.", _PROJ, cfg.shared_expert_intermediate_size, act),)
                moe = Moe(_lin(n, p + "mlp.gate"), experts, shared, _lin(n, p + "mlp.shared_expert_gate"))
            else:  # Qwen3-MoE: no shared expert
                moe = Moe(_lin(n, p + "mlp.gate"), experts)
        mlp = moe.experts[0] if moe is not None else _gated(n, p + "mlp.", _PROJ, cfg.intermediate_size, act)
        layers.append(Layer(_norm(n, p + "input_layernorm", "rms"), _norm(n, p + "post_attention_layernorm", "rms"),
                            (), attn, mlp, moe))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("embed_tokens.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "norm", "rms"), (head,), head, tied,
                eps_key="rms_norm_eps", eps_default=float(cfg.rms_norm_eps))


def _qwen3_moe(family: str, cfg: Any, names: set[str]) -> Arch:
    """Qwen3-MoE: Qwen2-MoE's layout without the shared expert (``_moe_llama``) plus Qwen3's per-head QK-norm
    (``_qk_norm_family``'s roles: the attacks restrict ``qk-linear`` and refuse ``residual-scale`` as for Qwen3)."""
    arch = _moe_llama(family, cfg, names)
    n = _Names(names, "model.", "embed_tokens.weight")
    layers = tuple(replace(ly, attn=replace(ly.attn, q_norm=_norm(n, f"layers.{i}.self_attn.q_norm", "rms"),
                                            k_norm=_norm(n, f"layers.{i}.self_attn.k_norm", "rms"),
                                            qk_norm_per_head=True))
                   for i, ly in enumerate(arch.layers))
    return replace(arch, layers=layers)


def _deepseek(family: str, cfg: Any, names: set[str]) -> Arch:
    """DeepSeek-V3: latent attention (``Mla``) in every layer; a dense gated FFN before ``first_k_dense_replace``,
    then a sigmoid-routed mixture (choice bias, ``n_group`` groups) plus shared experts. DeepSeek-V2 reads the same
    (its softmax router has no choice bias; V2-Lite has no query compression)."""
    n = _Names(names, "model.", "embed_tokens.weight")
    h, nope, rope, dv, rkv = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim,
                              cfg.kv_lora_rank)
    act = str(cfg.hidden_act)
    rotary = Rotary(rope, "interleave" if getattr(cfg, "rope_interleave", True) else "half")
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}.self_attn."
        lora = cfg.q_lora_rank is not None
        q_b = _lin(n, p + ("q_b_proj" if lora else "q_proj"))
        mla = Mla(_lin(n, p + "q_a_proj") if lora else None, _norm(n, p + "q_a_layernorm", "rms") if lora else None,
                  q_b, _lin(n, p + "kv_a_proj_with_mqa"), _norm(n, p + "kv_a_layernorm", "rms"),
                  _lin(n, p + "kv_b_proj"), nope, rope, dv, rkv)
        qi = range(h * (nope + rope))
        ki = [hh * (nope + dv) + j for hh in range(h) for j in range(nope)]
        vi = [hh * (nope + dv) + nope + j for hh in range(h) for j in range(dv)]
        attn = Attention(Rows(q_b.weight, None, tuple(qi)), Rows(mla.kv_b.weight, None, tuple(ki)),
                         Rows(mla.kv_b.weight, None, tuple(vi)), _lin(n, p + "o_proj"), h, h, nope + rope, rotary,
                         alibi=False, mla=mla)
        m = f"layers.{i}.mlp."
        moe = None
        if cfg.n_routed_experts and i >= cfg.first_k_dense_replace and i % getattr(cfg, "moe_layer_freq", 1) == 0:
            experts = tuple(_gated(n, f"{m}experts.{e}.", _PROJ, cfg.moe_intermediate_size, act)
                            for e in range(cfg.n_routed_experts))
            shared = ((_gated(n, m + "shared_experts.", _PROJ, cfg.moe_intermediate_size * cfg.n_shared_experts, act),)
                      if cfg.n_shared_experts else ())
            moe = Moe(_lin(n, m + "gate"), experts, shared, None, n.opt(m + "gate.e_score_correction_bias"),
                      int(cfg.n_group or 1))
            mlp = experts[0]
        else:
            mlp = _gated(n, m, _PROJ, cfg.intermediate_size, act)
        layers.append(Layer(_norm(n, f"layers.{i}.input_layernorm", "rms"),
                            _norm(n, f"layers.{i}.post_attention_layernorm", "rms"), (), attn, mlp, moe))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("embed_tokens.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "norm", "rms"), (head,), head, tied,
                eps_key="rms_norm_eps", eps_default=float(cfg.rms_norm_eps))


def _qk_norm_family(family: str, cfg: Any, names: set[str]) -> Arch:
    """Qwen3 (pre-norms + per-head QK-norm), Gemma-2 (pre- and output norms, ``1 + w`` weights), Gemma-3 text
    (Gemma-2's norms + per-head QK-norm), OLMo-2 (output norms only, QK-norm over all heads): the LLaMA layout
    with their extra norms described by role.

    What this changes for the attacks (``zoo._attacks_ops``): an output norm ``g * rms(y)^-1 y`` after ``Wo`` /
    ``Wdown`` cannot be folded, and a rotation of the stream does not commute with its non-uniform diagonal
    weight, so only permutations of the stream apply (``fold-rotate`` is not applicable); a QK-norm's RMS and
    diagonal weight do not commute with a general per-head map, so ``qk-linear`` is restricted to the maps that
    do (see ``qk_linear``); and a norm that reads an unscaled projection shares its epsilon with the norms that
    read the scaled stream, so ``residual-scale`` is not exact."""
    n = _Names(names, "model.", "embed_tokens.weight")
    nq, dh = cfg.num_attention_heads, _head_dim(cfg)
    nkv = getattr(cfg, "num_key_value_heads", None) or nq
    ffn = cfg.intermediate_size
    gemma = family.startswith("gemma")
    offset = 1.0 if gemma else 0.0
    act = str(getattr(cfg, "hidden_activation", None) or cfg.hidden_act)
    rotary = Rotary(dh, "half")
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        q, k, v = (_rows(n, p + f"self_attn.{x}_proj", range(m * dh)) for x, m in (("q", nq), ("k", nkv), ("v", nkv)))
        attn = Attention(q, k, v, _lin(n, p + "self_attn.o_proj"), nq, nkv, dh, rotary, alibi=False)
        if family != "gemma2":
            attn = replace(attn, q_norm=_norm(n, p + "self_attn.q_norm", "rms", offset),
                           k_norm=_norm(n, p + "self_attn.k_norm", "rms", offset),
                           qk_norm_per_head=family != "olmo2")
        mlp = Mlp(_rows(n, p + "mlp.up_proj", range(ffn)), _rows(n, p + "mlp.gate_proj", range(ffn)),
                  _lin(n, p + "mlp.down_proj"), act)
        if family == "qwen3":
            layers.append(Layer(_norm(n, p + "input_layernorm", "rms"), _norm(n, p + "post_attention_layernorm", "rms"),
                                (), attn, mlp))
        elif family == "olmo2":  # no pre-norms: attention and FFN read the raw stream
            outs = (_norm(n, p + "post_attention_layernorm", "rms"), _norm(n, p + "post_feedforward_layernorm", "rms"))
            layers.append(Layer(None, None, (), attn, mlp, out_norms=outs))
        else:
            outs = (_norm(n, p + "post_attention_layernorm", "rms", offset),
                    _norm(n, p + "post_feedforward_layernorm", "rms", offset))
            layers.append(Layer(_norm(n, p + "input_layernorm", "rms", offset),
                                _norm(n, p + "pre_feedforward_layernorm", "rms", offset), (), attn, mlp,
                                out_norms=outs))
    tied = _tied(cfg)
    head = _lm_head(n, "lm_head", tied)
    embed = n.req("embed_tokens.weight")
    return Arch(family, embed, (embed,), None, tuple(layers), _norm(n, "norm", "rms", offset), (head,), head,
                tied, eps_key="rms_norm_eps", eps_default=float(cfg.rms_norm_eps))


def _mpnet(family: str, cfg: Any, names: set[str]) -> Arch:
    """MPNet encoder (MPNetModel): BERT's post-norm layout under other names, learned positions and no token
    types, and one relative-position attention bias (``encoder.relative_attention_bias``, buckets x heads) added
    to every layer's scores: a head keeps its bias column wherever it moves, so ``head-permute`` must move the
    heads of every layer alike and the table's columns with them."""
    n = _Names(names, "mpnet.", "embeddings.word_embeddings.weight")
    d, nh = cfg.hidden_size, cfg.num_attention_heads
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (_rows(n, p + f"attention.attn.{x}", range(d)) for x in "qkv")
        attn = Attention(q, k, v, _lin(n, p + "attention.attn.o"), nh, nh, d // nh, None, alibi=False)
        mlp = Mlp(_rows(n, p + "intermediate.dense", range(cfg.intermediate_size)), None,
                  _lin(n, p + "output.dense"), str(cfg.hidden_act))
        post = (_norm(n, p + "attention.LayerNorm", "layer"), _norm(n, p + "output.LayerNorm", "layer"))
        layers.append(Layer(None, None, post, attn, mlp))
    e = "embeddings."
    embed = n.req(e + "word_embeddings.weight")
    stream = (embed, n.req(e + "position_embeddings.weight"))
    pooler = (_lin(n, "pooler.dense"),) if n.opt("pooler.dense.weight") else ()
    return Arch(family, embed, stream, _norm(n, e + "LayerNorm", "layer"), tuple(layers), None, (), None, False,
                extra_readers=pooler, post_norm=True, eps_key="layer_norm_eps",
                eps_default=float(cfg.layer_norm_eps), hidden_output=True, ignored=("embeddings.position_ids",),
                head_bias=n.req("encoder.relative_attention_bias.weight"))


_Adapter = Callable[[str, Any, set[str]], Arch]
ADAPTERS: dict[str, _Adapter] = {
    "llama": _llama_like, "mistral": _llama_like, "qwen2": _llama_like, "gemma": _llama_like,
    "phi3": _llama_like, "gpt2": _gpt2, "gpt_neox": _gpt_neox, "gptj": _gptj, "opt": _opt,
    "falcon": _falcon, "bloom": _bloom, "bert": _bert, "mpt": _mpt,
    "qwen3": _qk_norm_family, "olmo2": _qk_norm_family, "gemma2": _qk_norm_family,
    "gemma3_text": _qk_norm_family, "mpnet": _mpnet,
    "mixtral": _moe_llama, "qwen2_moe": _moe_llama, "deepseek_v3": _deepseek,
    "qwen3_moe": _qwen3_moe, "deepseek_v2": _deepseek,
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
        for rows in (a.q, a.k, a.v, *(r for mm in ly.mlps() for r in (mm.up, mm.gate))):
            if rows is not None:
                tiles.setdefault(rows.weight, []).extend(rows.index)
        for mm in ly.mlps():
            if shapes[mm.down.weight][1] != len(mm.up.index):
                raise fail(f"{mm.down.weight} {shapes[mm.down.weight]} vs {len(mm.up.index)} FFN units")
        if ly.moe is not None and shapes[ly.moe.router.weight][0] != len(ly.moe.experts):
            raise fail(f"{ly.moe.router.weight} {shapes[ly.moe.router.weight]} vs {len(ly.moe.experts)} experts")
        if a.mla is not None:
            _check_mla(a, shapes, fail)
            continue
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


def _check_mla(a: Attention, shapes: dict[str, tuple[int, ...]], fail: Callable[[str], ArchError]) -> None:
    mla = a.mla
    assert mla is not None
    h = a.n_q
    for name, rows in ((mla.q_b.weight, h * (mla.nope + mla.rope)), (mla.kv_a.weight, mla.kv_rank + mla.rope),
                       (mla.kv_b.weight, h * (mla.nope + mla.v_dim))):
        if shapes[name][0] != rows:
            raise fail(f"{name} {shapes[name]}: expected {rows} rows")
    if shapes[a.o.weight][1] != h * mla.v_dim:
        raise fail(f"{a.o.weight} {shapes[a.o.weight]} vs {h} heads of {mla.v_dim} values")


def unclaimed(arch: Arch, names: set[str]) -> list[str]:
    """Names the adapter does not understand (other than ignored buffers): attacking them blind is unsafe."""
    claimed = arch.claimed()
    return sorted(x for x in names if x not in claimed and not x.endswith(arch.ignored))
