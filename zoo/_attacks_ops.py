"""The function-preserving transforms themselves, on tensors described by an ``Arch``.

Each op mutates a ``Work`` (float64 tensors in ``(out, in)`` layout plus the raw config) and raises
``AttackNotApplicable`` where its family's computation would not be preserved. Randomness comes only from
``Work.gen``, so an op is deterministic for a seed. The ops never read or write files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from zoo._attacks_arch import HOMOGENEOUS_ACTIVATIONS, Arch, Attention, Linear, Mla, Mlp, Norm, Rotary, Rows
from zoo._attacks_base import AttackNotApplicable, HiddenTransform

# Well-conditioned random maps: singular values (and rotary pair scales) in [1/COND, COND].
COND = 2.0
# Per-unit FFN scales are 2^k, |k| <= FFN_MAX_LOG2: wide enough that raw weights clearly move, and powers of
# two so that the rescaling is exact in any float format (bf16 checkpoints included).
FFN_MAX_LOG2 = 2
# residual-scale picks c = 2^k, k in 1..SCALE_MAX_LOG2: a power of two, so scaling is exact in any float format
SCALE_MAX_LOG2 = 3
# vocab-extend appends this many tokens
EXTEND_TOKENS = 16


@dataclass
class Work:
    kind: str
    arch: Arch
    t: dict[str, torch.Tensor]
    config: dict[str, Any]
    gen: torch.Generator
    vocab_map: tuple[int, ...] | None = None
    hidden: HiddenTransform | None = None
    added_rows: int = 0
    token_rows: int | None = None  # embedding rows the tokenizer uses (the rest is padding); vocab attacks
    notes: list[str] = field(default_factory=list)

    def not_applicable(self, reason: str) -> AttackNotApplicable:
        return AttackNotApplicable(self.arch.family, self.kind, reason)


# --- random maps -----------------------------------------------------------------------------------------


def _uniform(gen: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _perm(n: int, gen: torch.Generator) -> torch.Tensor:
    p = torch.randperm(n, generator=gen)
    if n > 1 and bool((p == torch.arange(n)).all()):
        p = torch.roll(p, 1)  # an attack that happens to be the identity would test nothing
    return p


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed


def _mean_preserving_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """Orthogonal ``Q`` with ``Q 1 = 1``: rotates only the complement of the all-ones direction, so LayerNorm's
    centring commutes with it."""
    u = torch.full((n, 1), 1.0 / math.sqrt(n), dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.cat([u, torch.randn(n, n - 1, generator=gen, dtype=torch.float64)], 1))
    b = basis[:, 1:]  # orthonormal basis of the complement of u
    return u @ u.T + b @ _orthogonal(n - 1, gen) @ b.T


def _invertible(n: int, gen: torch.Generator) -> torch.Tensor:
    s = torch.exp(_uniform(gen, -math.log(COND), math.log(COND), n))
    return _orthogonal(n, gen) @ torch.diag(s) @ _orthogonal(n, gen)


def _qk_map(rotary: Rotary | None, dh: int, gen: torch.Generator) -> torch.Tensor:
    """A per-head ``C`` such that ``C^T`` (on queries) and ``C^-1`` (on keys) commute with the rotary embedding.

    RoPE rotates each pair plane by a position-dependent angle, with a different frequency per plane. The
    maps commuting with every such rotation are block-diagonal with one scaled rotation ``a R(phi)`` per
    plane; ``C^T = a R(-phi)`` and ``C^-1 = R(-phi) / a`` are then scaled rotations too. Dims without rotary
    get any invertible block."""
    if rotary is None:
        return _invertible(dh, gen)
    r = rotary.dim
    c = torch.zeros(dh, dh, dtype=torch.float64)
    for i in range(r // 2):
        j, k = (i, i + r // 2) if rotary.style == "half" else (2 * i, 2 * i + 1)
        a = float(torch.exp(_uniform(gen, -math.log(COND), math.log(COND))))
        phi = float(_uniform(gen, 0.0, 2 * math.pi))
        cos, sin = a * math.cos(phi), a * math.sin(phi)
        c[j, j], c[j, k], c[k, j], c[k, k] = cos, -sin, sin, cos
    if dh > r:
        c[r:, r:] = _invertible(dh - r, gen)
    return c


# --- tensor access ---------------------------------------------------------------------------------------


def _take(w: Work, rows: Rows) -> tuple[torch.Tensor, torch.Tensor | None]:
    idx = torch.tensor(rows.index)
    return w.t[rows.weight][idx], (w.t[rows.bias][idx] if rows.bias else None)


def _put(w: Work, rows: Rows, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    idx = torch.tensor(rows.index)
    w.t[rows.weight][idx] = weight
    if rows.bias is not None and bias is not None:
        w.t[rows.bias][idx] = bias


def _heads(x: torch.Tensor, dh: int) -> torch.Tensor:
    return x.reshape(-1, dh, *x.shape[1:])


def _untie(w: Work, reason: str) -> None:
    """Give the lm head its own copy of the embedding, so the two can then differ."""
    arch = w.arch
    if arch.tied and arch.lm_head is not None and arch.head_reads_stream():
        w.t[arch.lm_head.weight] = w.t[arch.embed].clone()
        w.config["tie_word_embeddings"] = False
        w.arch = replace(arch, tied=False)
        w.notes.append(f"untied {arch.lm_head.weight} from {arch.embed} ({reason})")


def _scale_eps(w: Work, key: str, factor: float) -> None:
    old = float(w.config.get(key, w.arch.eps_default))
    w.config[key] = old * factor
    w.notes.append(f"{key} scaled by c^2: {old!r} -> {old * factor!r}")


# --- the attacks -----------------------------------------------------------------------------------------


def ffn_permute(w: Work) -> None:
    for mlp in (m for ly in w.arch.layers for m in ly.mlps()):  # every expert of a MoE layer on its own
        perm = _perm(len(mlp.up.index), w.gen)
        for rows in (mlp.up, mlp.gate):
            if rows is not None:
                weight, bias = _take(w, rows)
                _put(w, rows, weight[perm], None if bias is None else bias[perm])
        w.t[mlp.down.weight] = w.t[mlp.down.weight][:, perm]


def ffn_scale(w: Work) -> None:
    for mlp in (m for ly in w.arch.layers for m in ly.mlps()):
        act = mlp.activation
        if mlp.gate is None and act not in HOMOGENEOUS_ACTIVATIONS:
            raise w.not_applicable(
                f"non-gated FFN with {act!r}: act(s x) != s act(x), so a unit cannot be rescaled "
                f"(only {sorted(HOMOGENEOUS_ACTIVATIONS)} are positively homogeneous)")
        # gated: down(act(gate x) * (s up x)) / s; plain ReLU: relu(s x) = s relu(x)
        k = torch.randint(-FFN_MAX_LOG2, FFN_MAX_LOG2 + 1, (len(mlp.up.index),), generator=w.gen)
        s = torch.pow(2.0, k.to(torch.float64))
        weight, bias = _take(w, mlp.up)
        _put(w, mlp.up, weight * s[:, None], None if bias is None else bias * s)
        w.t[mlp.down.weight] = w.t[mlp.down.weight] / s


def _qk_norm_maps(w: Work, a: Attention) -> None:
    """``qk-linear`` under QK-norm: the per-head maps that still preserve the function.

    The model computes ``rope(n(Wq x) * gq) . rope(n(Wk x) * gk)`` with ``n`` an RMS normalisation (per head, or over
    all heads for OLMo-2). A map ``C`` on a head's query rows and ``C^-T`` on its key rows survived without the
    norm; with it, ``n(C z)`` must equal ``C n(z)`` (so ``C`` preserves the RMS: orthogonal) and ``C`` must then
    commute with ``diag(gq * gk)`` (distinct gains: ``C`` is diagonal, so a sign per dim) and with the rotary
    rotation (so one sign per rotary pair). The gains may also be traded, ``gq * a``, ``gk / a`` with ``a > 0``
    equal on both dims of a rotary pair (per head-dim and shared by all heads when the weight is per head; per KV
    group and dim for OLMo-2's all-head norm). A positive scale of a head's ``Wq`` (or all of ``Wq`` for OLMo-2)
    is cancelled by the RMS only up to the norm's epsilon, which is shared with the stream's norms, so it is not
    applied here (the term's own test covers it). Signs are +-1 and factors powers of two: exact in any format."""
    assert a.q_norm is not None and a.k_norm is not None
    dh, r = a.head_dim, a.n_q // a.n_kv
    rot = a.rotary
    tied: list[list[int]] = []  # dims that must share a sign and a gain factor
    rd = 0 if rot is None else rot.dim
    for i in range(rd // 2):
        tied.append([i, i + rd // 2] if rot is not None and rot.style == "half" else [2 * i, 2 * i + 1])
    tied += [[j] for j in range(rd, dh)]

    def draw(signs: bool) -> torch.Tensor:
        out = torch.empty(dh, dtype=torch.float64)
        for dims in tied:
            if signs:
                v = 1.0 if bool(torch.rand(1, generator=w.gen) < 0.5) else -1.0
            else:
                v = 2.0 ** int(torch.randint(-FFN_MAX_LOG2, FFN_MAX_LOG2 + 1, (1,), generator=w.gen))
            out[dims] = v
        return out

    (wq, bq), (wk, bk) = _take(w, a.q), _take(w, a.k)
    wq, wk = _heads(wq, dh), _heads(wk, dh)
    bq, bk = (None if b is None else b.reshape(-1, dh) for b in (bq, bk))
    gq = w.t[a.q_norm.weight] + a.q_norm.offset
    gk = w.t[a.k_norm.weight] + a.k_norm.offset
    if a.qk_norm_per_head:
        f = draw(signs=False)
        gq, gk = gq * f, gk / f
    else:
        gq, gk = gq.reshape(a.n_q, dh).clone(), gk.reshape(a.n_kv, dh).clone()
    for g in range(a.n_kv):
        hs = slice(g * r, (g + 1) * r)
        s = draw(signs=True)
        wq[hs] = s[:, None] * wq[hs]
        wk[g] = s[:, None] * wk[g]
        if bq is not None:
            bq[hs] = bq[hs] * s
        if bk is not None:
            bk[g] = bk[g] * s
        if not a.qk_norm_per_head:
            f = draw(signs=False)
            gq[hs] = gq[hs] * f
            gk[g] = gk[g] / f
    _put(w, a.q, wq.flatten(0, 1), None if bq is None else bq.flatten())
    _put(w, a.k, wk.flatten(0, 1), None if bk is None else bk.flatten())
    w.t[a.q_norm.weight] = gq.flatten() - a.q_norm.offset
    w.t[a.k_norm.weight] = gk.flatten() - a.k_norm.offset


def qk_linear(w: Work) -> None:
    for ly in w.arch.layers:
        a = ly.attn
        if a.mla is not None:
            _mla_qk_linear(w, a)
            continue
        if a.q_norm is not None and a.k_norm is not None:
            _qk_norm_maps(w, a)
            continue
        r = a.n_q // a.n_kv
        (wq, bq), (wk, bk) = _take(w, a.q), _take(w, a.k)
        wq, wk = _heads(wq, a.head_dim), _heads(wk, a.head_dim)
        bq, bk = (None if b is None else b.reshape(-1, a.head_dim) for b in (bq, bk))
        for g in range(a.n_kv):
            c = _qk_map(a.rotary, a.head_dim, w.gen)
            ct, ci = c.T, torch.linalg.inv(c)
            hs = slice(g * r, (g + 1) * r)
            wq[hs] = ct @ wq[hs]
            wk[g] = ci @ wk[g]
            if bq is not None:
                bq[hs] = bq[hs] @ ct.T
            if bk is not None:
                bk[g] = ci @ bk[g]
        _put(w, a.q, wq.flatten(0, 1), None if bq is None else bq.flatten())
        _put(w, a.k, wk.flatten(0, 1), None if bk is None else bk.flatten())


def vo_linear(w: Work) -> None:
    for ly in w.arch.layers:
        a = ly.attn
        if a.mla is not None:
            _mla_vo_linear(w, a)
            continue
        r = a.n_q // a.n_kv
        wv, bv = _take(w, a.v)
        wv = _heads(wv, a.head_dim)
        bv = None if bv is None else bv.reshape(-1, a.head_dim)
        wo = w.t[a.o.weight].reshape(-1, a.n_q, a.head_dim)  # (d, head, dh)
        for g in range(a.n_kv):
            c = _invertible(a.head_dim, w.gen)
            ci = torch.linalg.inv(c)
            wv[g] = c @ wv[g]
            if bv is not None:
                bv[g] = c @ bv[g]
            wo[:, g * r:(g + 1) * r] = wo[:, g * r:(g + 1) * r] @ ci
        _put(w, a.v, wv.flatten(0, 1), None if bv is None else bv.flatten())
        w.t[a.o.weight] = wo.flatten(1)


def head_permute(w: Work) -> None:
    shared: torch.Tensor | None = None  # one head order for every layer when a bias table is shared (MPNet)
    if w.arch.head_bias is not None:
        if any(ly.attn.n_kv != ly.attn.n_q or ly.attn.n_q != w.arch.layers[0].attn.n_q for ly in w.arch.layers):
            raise w.not_applicable("a head-bias table shared by all layers needs the same heads (no GQA) in each")
        shared = _perm(w.arch.layers[0].attn.n_q, w.gen)
        w.t[w.arch.head_bias] = w.t[w.arch.head_bias][:, shared]
    for ly in w.arch.layers:
        a = ly.attn
        if a.alibi:
            raise w.not_applicable("ALiBi gives each head index its own fixed slope, so moving a head to "
                                   "another index changes its position bias")
        if a.mla is not None:
            _mla_head_permute(w, a)
            continue
        r = a.n_q // a.n_kv
        groups = _perm(a.n_kv, w.gen) if shared is None else shared
        within = [_perm(r, w.gen) for _ in range(a.n_kv)]
        q_order = torch.tensor([int(g) * r + int(within[int(g)][j]) for g in groups for j in range(r)])
        for rows, order in ((a.q, q_order), (a.k, groups), (a.v, groups)):
            weight, bias = _take(w, rows)
            weight = _heads(weight, a.head_dim)[order].flatten(0, 1)
            bias = None if bias is None else bias.reshape(-1, a.head_dim)[order].flatten()
            _put(w, rows, weight, bias)
        wo = w.t[a.o.weight].reshape(-1, a.n_q, a.head_dim)
        w.t[a.o.weight] = wo[:, q_order].flatten(1)
        if a.q_norm is not None and a.k_norm is not None and not a.qk_norm_per_head:  # OLMo-2: weights per head
            for norm, order in ((a.q_norm, q_order), (a.k_norm, groups)):
                w.t[norm.weight] = w.t[norm.weight].reshape(-1, a.head_dim)[order].flatten()


def residual_permute(w: Work) -> None:
    arch = w.arch
    perm = _perm(w.t[arch.stream_embeds[0]].shape[1], w.gen)
    for name in arch.stream_embeds:
        w.t[name] = w.t[name][:, perm]
    for norm in arch.norms():
        for vec in (norm.weight, norm.bias):
            if vec is not None:
                w.t[vec] = w.t[vec][perm]
    for lin in arch.readers():
        w.t[lin.weight] = w.t[lin.weight][:, perm]
    for lin in arch.writers():
        w.t[lin.weight] = w.t[lin.weight][perm]
        if lin.bias is not None:
            w.t[lin.bias] = w.t[lin.bias][perm]
    if arch.hidden_output:
        w.hidden = HiddenTransform(tuple(int(i) for i in perm))


def _fold(w: Work, norm: Norm, readers: tuple[Linear, ...]) -> None:
    """Move a pre-norm's weight g (and bias b) into the linears reading it: W (n(x) g + b) + c becomes
    (W diag g) n(x) + (W b + c), or, when some reader has no bias, (W diag g)(n(x) + b/g) + c."""
    g = w.t[norm.weight] + norm.offset
    if norm.bias is not None:
        b = w.t[norm.bias]
        biases = [lin.bias for lin in readers if lin.bias is not None]
        if len(biases) == len(readers):
            for lin, bias in zip(readers, biases, strict=True):
                w.t[bias] = w.t[bias] + w.t[lin.weight] @ b
            w.t[norm.bias] = torch.zeros_like(b)
        else:
            if bool(((g == 0) & (b != 0)).any()):
                raise w.not_applicable(f"{norm.weight} has zero weights under non-zero bias, so b/g is undefined")
            w.t[norm.bias] = torch.where(g == 0, torch.zeros_like(b), b / torch.where(g == 0, 1.0, g))
    for lin in readers:
        w.t[lin.weight] = w.t[lin.weight] * g
    w.t[norm.weight] = torch.full_like(g, 1.0 - norm.offset)


def fold_rotate(w: Work) -> None:
    arch = w.arch
    if arch.post_norm:
        raise w.not_applicable("post-norm: the norm's output is the residual stream itself, so its weight "
                               "cannot be folded away and a rotation does not commute with a non-uniform "
                               "diagonal weight")
    if arch.embed_norm is not None:
        raise w.not_applicable(f"{arch.embed_norm.weight} writes the residual stream with a non-unit diagonal "
                               "weight; a rotation does not commute with it, and no linear reads it to fold into")
    outs = [n.weight for ly in arch.layers for n in ly.out_norms]
    if outs:
        raise w.not_applicable(f"{outs[0]} normalises a block's output before it enters the stream: it follows the "
                               "writer, so it cannot be folded, and a rotation does not commute with its "
                               "non-uniform diagonal weight (only permutations and sign flips of the stream do)")
    _untie(w, "fold the final norm into the head and rotate it alone")
    arch = w.arch
    for norm, readers in arch.layer_norm_groups():
        _fold(w, norm, readers)
    d = w.t[arch.stream_embeds[0]].shape[1]
    layer_norm = any(n.kind == "layer" for n in arch.norms())
    q = _mean_preserving_orthogonal(d, w.gen) if layer_norm else _orthogonal(d, w.gen)
    for name in arch.stream_embeds:
        w.t[name] = w.t[name] @ q
    for lin in arch.readers():
        w.t[lin.weight] = w.t[lin.weight] @ q
    for lin in arch.writers():
        w.t[lin.weight] = q.T @ w.t[lin.weight]
        if lin.bias is not None:
            w.t[lin.bias] = q.T @ w.t[lin.bias]
    for norm in arch.norms():
        if norm.bias is not None:
            w.t[norm.bias] = q.T @ w.t[norm.bias]


def _scale_norm(w: Work, norm: Norm, c: float) -> None:
    w.t[norm.weight] = (w.t[norm.weight] + norm.offset) * c - norm.offset
    if norm.bias is not None:
        w.t[norm.bias] = w.t[norm.bias] * c


def residual_scale(w: Work) -> None:
    """Scale the residual stream by c. Every norm then reads c x; multiplying its epsilon by c^2 makes
    norm(c x) == norm(x) exactly (eps would otherwise change outputs by about eps / var(x))."""
    arch = w.arch
    eps_key = arch.eps_key
    if eps_key is None:
        raise w.not_applicable("the norms' epsilon is fixed in the modelling code (not in config.json), so it "
                               "cannot follow the stream's scale and the output changes by about eps/var")
    if arch.residual_is_norm_output:
        raise w.not_applicable("the residual branch carries the LayerNorm output, which is scale-invariant")
    inner = [n.weight for ly in arch.layers for n in (*ly.out_norms, ly.attn.q_norm) if n is not None]
    if inner:
        raise w.not_applicable(f"{inner[0]} normalises an unscaled block output or projection while the pre/final "
                               f"norms read the scaled stream, and all share one epsilon ({eps_key}): no epsilon "
                               "keeps both exact")
    c = float(2 ** int(torch.randint(1, SCALE_MAX_LOG2 + 1, (1,), generator=w.gen)))
    w.notes.append(f"residual stream scaled by c = {c!r}")
    _untie(w, "the head must read the scaled stream with the original embedding")
    arch = w.arch
    for name in arch.stream_embeds:
        w.t[name] = w.t[name] * c
    for lin in arch.writers():
        w.t[lin.weight] = w.t[lin.weight] * c
        if lin.bias is not None:
            w.t[lin.bias] = w.t[lin.bias] * c
    if arch.embed_norm is not None:  # it reads c E and must write c times the stream
        _scale_norm(w, arch.embed_norm, c)
    if arch.post_norm:  # every norm output is the stream: scale it, and let its readers undo it
        for ly in arch.layers:
            for norm in ly.post_norms:
                _scale_norm(w, norm, c)
        for lin in arch.readers():
            w.t[lin.weight] = w.t[lin.weight] / c
        if arch.hidden_output:
            w.hidden = HiddenTransform(tuple(range(w.t[arch.stream_embeds[0]].shape[1])), c)
    elif arch.final_norm is None:  # the head reads the raw (scaled) stream
        for lin in arch.final_readers:
            w.t[lin.weight] = w.t[lin.weight] / c
    # latent attention's own RMSNorms read latents of the normed (unscaled) stream and keep their default epsilon
    # (transformers builds them without the config's): nothing to change there
    _scale_eps(w, eps_key, c * c)


def vocab_permute(w: Work) -> None:
    arch = w.arch
    n = w.t[arch.embed].shape[0]
    used = n if w.token_rows is None else w.token_rows
    # padding rows past the tokenizer's ids stay put, so every token keeps an id its tokenizer can hold
    new_of_old = torch.cat([_perm(used, w.gen), torch.arange(used, n)])
    old_of_new = torch.argsort(new_of_old)
    names = [arch.embed]
    if arch.lm_head is not None and not arch.tied:
        names += [x for x in (arch.lm_head.weight, arch.lm_head.bias) if x is not None]
    for name in names:
        w.t[name] = w.t[name][old_of_new]
    w.vocab_map = tuple(int(i) for i in new_of_old)


def _extend_rows(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(0, keepdim=True).expand(k, *x.shape[1:])
    noise = 0.01 * x.std() * torch.randn(k, *x.shape[1:], generator=gen, dtype=x.dtype)
    return torch.cat([x, mean + noise])


def vocab_extend(w: Work) -> None:
    arch = w.arch
    n = w.t[arch.embed].shape[0]
    names = [arch.embed]
    if arch.lm_head is not None and not arch.tied:
        names += [x for x in (arch.lm_head.weight, arch.lm_head.bias) if x is not None]
    for name in names:
        w.t[name] = _extend_rows(w.t[name], EXTEND_TOKENS, w.gen)
    w.config["vocab_size"] = n + EXTEND_TOKENS
    w.added_rows = EXTEND_TOKENS
    w.vocab_map = tuple(range(n))


# --- mixture-of-experts FFNs and latent attention ------------------------------------------------------------


def _mla(a: Attention) -> Mla:
    assert a.mla is not None
    return a.mla


def _mla_qk_linear(w: Work, a: Attention) -> None:
    """Per head an invertible ``C`` on the no-rope query/key dims (``q_b`` rows ``C^T``, ``kv_b``'s key rows
    ``C^-1``); one rotary-commuting map on the rope dims of every head's query and the shared rotary key."""
    m, h = _mla(a), a.n_q
    qb = w.t[m.q_b.weight].reshape(h, m.nope + m.rope, -1).clone()
    kvb = w.t[m.kv_b.weight].reshape(h, m.nope + m.v_dim, -1).clone()
    for hh in range(h):
        c = _invertible(m.nope, w.gen)
        qb[hh, : m.nope] = c.T @ qb[hh, : m.nope]
        kvb[hh, : m.nope] = torch.linalg.inv(c) @ kvb[hh, : m.nope]
    c = _qk_map(a.rotary, m.rope, w.gen)
    ci = torch.linalg.inv(c)
    for hh in range(h):
        qb[hh, m.nope :] = c.T @ qb[hh, m.nope :]
    w.t[m.q_b.weight], w.t[m.kv_b.weight] = qb.flatten(0, 1), kvb.flatten(0, 1)
    for name in (m.kv_a.weight, m.kv_a.bias):
        if name is not None:
            w.t[name][m.kv_rank :] = ci @ w.t[name][m.kv_rank :]


def _mla_vo_linear(w: Work, a: Attention) -> None:
    """Per head an invertible ``C`` on the values: ``kv_b``'s value rows ``C``, ``o``'s columns ``C^-1``."""
    m, h = _mla(a), a.n_q
    kvb = w.t[m.kv_b.weight].reshape(h, m.nope + m.v_dim, -1).clone()
    wo = w.t[a.o.weight].reshape(-1, h, m.v_dim).clone()
    for hh in range(h):
        c = _invertible(m.v_dim, w.gen)
        kvb[hh, m.nope :] = c @ kvb[hh, m.nope :]
        wo[:, hh] = wo[:, hh] @ torch.linalg.inv(c)
    w.t[m.kv_b.weight], w.t[a.o.weight] = kvb.flatten(0, 1), wo.flatten(1)


def _mla_head_permute(w: Work, a: Attention) -> None:
    m, h = _mla(a), a.n_q
    perm = _perm(h, w.gen)
    w.t[m.q_b.weight] = w.t[m.q_b.weight].reshape(h, m.nope + m.rope, -1)[perm].flatten(0, 1)
    w.t[m.kv_b.weight] = w.t[m.kv_b.weight].reshape(h, m.nope + m.v_dim, -1)[perm].flatten(0, 1)
    w.t[a.o.weight] = w.t[a.o.weight].reshape(-1, h, m.v_dim)[:, perm].flatten(1)


def latent_rotate(w: Work) -> None:
    """Latent attention's low-rank compressions: fold each latent RMSNorm's weight into the expansion that reads
    it (``q_b`` / ``kv_b`` columns), then rotate the latent by an orthogonal ``R`` (compression rows ``R``,
    expansion columns ``R^T``): ``RMS(R z) = RMS(z)``, so the model is unchanged. The rotary key rows of
    ``kv_a`` are not part of the latent and stay put."""
    found = False
    for ly in w.arch.layers:
        m = ly.attn.mla
        if m is None:
            continue
        found = True
        for comp, norm, exp, rank in ((m.q_a, m.q_a_norm, m.q_b, None), (m.kv_a, m.kv_a_norm, m.kv_b, m.kv_rank)):
            if comp is None or norm is None:
                continue
            g = w.t[norm.weight] + norm.offset
            w.t[exp.weight] = w.t[exp.weight] * g
            w.t[norm.weight] = torch.full_like(g, 1.0 - norm.offset)
            r = _orthogonal(g.shape[0], w.gen)
            for name in (comp.weight, comp.bias):
                if name is not None:
                    w.t[name][:rank] = r @ w.t[name][:rank]
            w.t[exp.weight] = w.t[exp.weight] @ r.T
    if not found:
        raise w.not_applicable("no latent attention (DeepSeek-V2/V3 MLA): no compressed latent to rotate")


def _mlp_tensors(m: Mlp) -> list[str | None]:
    return [m.up.weight, m.up.bias, None if m.gate is None else m.gate.weight,
            None if m.gate is None else m.gate.bias, m.down.weight, m.down.bias]


def expert_permute(w: Work) -> None:
    """Permute the routed experts of every mixture-of-experts layer together with the router's rows (and
    DeepSeek's score bias): each token picks the same experts at new indices, with the same weights. With
    group-limited routing the permutation keeps the groups: it permutes whole groups, then within each."""
    found = False
    for ly in w.arch.layers:
        moe = ly.moe
        if moe is None:
            continue
        found = True
        n_e, n_g = len(moe.experts), moe.n_group
        per = n_e // n_g
        groups = _perm(n_g, w.gen)
        perm = torch.tensor([int(g) * per + int(j) for g in groups for j in _perm(per, w.gen)])
        old = {n: w.t[n] for e in moe.experts for n in _mlp_tensors(e) if n is not None}
        for dst, src in zip(moe.experts, (moe.experts[int(i)] for i in perm), strict=True):
            for nd, ns in zip(_mlp_tensors(dst), _mlp_tensors(src), strict=True):
                if nd is not None and ns is not None:
                    w.t[nd] = old[ns]
        for name in (moe.router.weight, moe.router.bias, moe.score_bias):
            if name is not None:
                w.t[name] = w.t[name][perm]
    if not found:
        raise w.not_applicable("no mixture-of-experts FFN: there are no experts to permute")


OPS: dict[str, Callable[[Work], None]] = {
    "ffn-permute": ffn_permute,
    "ffn-scale": ffn_scale,
    "qk-linear": qk_linear,
    "vo-linear": vo_linear,
    "head-permute": head_permute,
    "residual-permute": residual_permute,
    "fold-rotate": fold_rotate,
    "residual-scale": residual_scale,
    "vocab-permute": vocab_permute,
    "vocab-extend": vocab_extend,
    "expert-permute": expert_permute,
    "latent-rotate": latent_rotate,
}
