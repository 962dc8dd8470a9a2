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

from zoo._attacks_arch import HOMOGENEOUS_ACTIVATIONS, Arch, Linear, Norm, Rotary, Rows
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
    for ly in w.arch.layers:
        perm = _perm(len(ly.mlp.up.index), w.gen)
        for rows in (ly.mlp.up, ly.mlp.gate):
            if rows is not None:
                weight, bias = _take(w, rows)
                _put(w, rows, weight[perm], None if bias is None else bias[perm])
        w.t[ly.mlp.down.weight] = w.t[ly.mlp.down.weight][:, perm]


def ffn_scale(w: Work) -> None:
    for ly in w.arch.layers:
        act = ly.mlp.activation
        if ly.mlp.gate is None and act not in HOMOGENEOUS_ACTIVATIONS:
            raise w.not_applicable(
                f"non-gated FFN with {act!r}: act(s x) != s act(x), so a unit cannot be rescaled "
                f"(only {sorted(HOMOGENEOUS_ACTIVATIONS)} are positively homogeneous)")
        # gated: down(act(gate x) * (s up x)) / s; plain ReLU: relu(s x) = s relu(x)
        k = torch.randint(-FFN_MAX_LOG2, FFN_MAX_LOG2 + 1, (len(ly.mlp.up.index),), generator=w.gen)
        s = torch.pow(2.0, k.to(torch.float64))
        weight, bias = _take(w, ly.mlp.up)
        _put(w, ly.mlp.up, weight * s[:, None], None if bias is None else bias * s)
        w.t[ly.mlp.down.weight] = w.t[ly.mlp.down.weight] / s


def qk_linear(w: Work) -> None:
    for ly in w.arch.layers:
        a = ly.attn
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
    for ly in w.arch.layers:
        a = ly.attn
        if a.alibi:
            raise w.not_applicable("ALiBi gives each head index its own fixed slope, so moving a head to "
                                   "another index changes its position bias")
        r = a.n_q // a.n_kv
        groups = _perm(a.n_kv, w.gen)
        within = [_perm(r, w.gen) for _ in range(a.n_kv)]
        q_order = torch.tensor([int(g) * r + int(within[int(g)][j]) for g in groups for j in range(r)])
        for rows, order in ((a.q, q_order), (a.k, groups), (a.v, groups)):
            weight, bias = _take(w, rows)
            weight = _heads(weight, a.head_dim)[order].flatten(0, 1)
            bias = None if bias is None else bias.reshape(-1, a.head_dim)[order].flatten()
            _put(w, rows, weight, bias)
        wo = w.t[a.o.weight].reshape(-1, a.n_q, a.head_dim)
        w.t[a.o.weight] = wo[:, q_order].flatten(1)


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
}
