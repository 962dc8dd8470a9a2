"""The invariant terms: products of weight matrices on the probe rows that function-preserving transforms
cannot move (see docs/science.md). Comparing them (ICS) is the verifier's (``verifier._ics``).

Pure logic: takes tensors and values, returns arrays and values; reading checkpoints lives in the adapters.
Only these ``n x n`` terms (never a weight tensor) may leave the owner's machine.

Per layer, with ``Xc`` the probe rows (centred for LayerNorm models), ``W(Z) = Z (Z^T Z + r I)^{-1/2}`` the
whitened rows of ``Z`` (ridge ``r`` = ``WHITEN_RIDGE`` x the mean eigenvalue of ``Z^T Z``), ``Ec = W(Xc)``,
``Ea = Ec diag(g1)``, ``Xf = Xc diag(g2)``:

- ``attn_qk``: ``(Ea Wq^T)(Ea Wk_rep^T)^T``
- ``attn_vo``: ``Ea Wv_rep^T Wo^T Ec^T``
- ``ffn``: ``W(F) Ec^T`` with ``F`` the FFN's output on the (unwhitened) rows: gated
  ``((Xf Wgate^T) * (Xf Wup^T)) Wdown^T``, plain ``Xf Win^T Wout^T``

Why whiten: models trained on the same data learn similar token-token structure in their embeddings (the
Gram matrix ``Xc Xc^T``), and an unwhitened term ``Xc M Xc^T`` inherits it, so independent same-data seeds
with tied embeddings scored ICS 0.6 (docs/results/zoo_lineage.md, terms v1). ``W`` flattens the rows'
spectrum, leaving the layer's own map ``M`` seen through the rows' directions. It is exactly as invariant as
the unwhitened term: ``W(Xc R) = W(Xc) R`` for orthogonal ``R`` (rotations, permutations), ``W(c Xc) = W(Xc)``
(residual scaling), and ``Ec`` does not involve the norm gains, which stay folded into the weights; ``F`` is
itself invariant to every FFN-internal transform.

Mixture-of-experts FFNs (``LayerWeights.moe``): ``F`` is the routed output on the rows (``moe_ffn_output``), so
that permuting the experts with the router's rows cannot move it. DeepSeek latent attention (``LayerWeights.mla``):
``attn_qk`` and ``attn_vo`` are formed through both low-rank compressions and their RMSNorms (``mla_qk_term``,
``mla_vo_factors``, whose docstrings derive which products are invariant).

``huref-2024`` reproduces the published form for comparison: no norm folding, no centring, gated FFN term
``X (Wgate^T * Wup^T) Wdown^T X^T`` and fused QKV split in thirds (as the reference code does).
With grouped-query attention the query heads of a group are summed before multiplying by the group's key
(and the output heads of a group before the value), which equals repeating the KV heads, exactly; the sums are
taken in the weights (``Wq`` rows, ``Wo`` columns), where they cost ``Hkv/Hq`` of summing the products.

How the terms are computed (none of it changes what they are, only rounding): weights arrive in their stored
dtype and are converted to fp32 one matrix (attention) or one block of ``FFN_BLOCK`` hidden units (FFN) at a
time, the attention's norm gain folded into them; the FFN's output is accumulated block by block; the whitening matrix
is formed in fp64 and applied in fp32; each term is handed on as soon as it exists (``iter_layer_terms``).
``tests/owner/test_terms_arithmetic.py`` checks this against the straightforward formulas above for every
family and both methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch

from owner._adapters import ArchInfo, LayerWeights, Method, MlaWeights, MoeWeights, NormKind
from protocol import TERMS

__all__ = ["FFN_BLOCK", "METHOD_IDS", "TERMS", "WHITEN_RIDGE", "iter_layer_terms", "layer_terms", "mla_qk_term",
           "mla_vo_factors", "moe_ffn_output", "moe_routing", "qk_norm_term", "resolve_layers", "whiten",
           "whiten_matrix"]
METHOD_IDS: dict[str, str] = {
    "pawprint": "pawprint-terms/2(fold-norms,centre-layernorm,whiten-rows(ridge=1e-3),ffn=W((XWg)*(XWu)Wd)W(X)^T,"
                "per-head-qkv)",
    "huref-2024": "huref-2024/1(no-fold,ffn=Wg*Wu,qkv-thirds)",
}


def resolve_layers(spec: str | Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Layer indices from a spec: ``None``/"last2" (the default), "all", or indices (negative from the end)."""
    if spec is None or spec == "last2":
        return tuple(range(max(0, n_layers - 2), n_layers))
    if spec == "all":
        return tuple(range(n_layers))
    if isinstance(spec, str):
        try:
            items: list[int] = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'last2', 'all' or comma-separated integers, got {spec!r}") from None
    else:
        items = list(spec)
    out: list[int] = []
    for i in items:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise ValueError(f"layer {i} is out of range for a model with {n_layers} layers")
        if j not in out:
            out.append(j)
    if not out:
        raise ValueError("no layers selected")
    return tuple(sorted(out))


WHITEN_RIDGE = 1e-3
# The FFN is accumulated over blocks of this many hidden units: its ``n x h`` intermediates never exist whole, and
# each block's weights are converted to fp32 just before use.
FFN_BLOCK = 1024


def whiten_matrix(z: torch.Tensor, ridge: float = WHITEN_RIDGE) -> torch.Tensor | None:
    """``(z^T z + ridge * mean_eig * I)^{-1/2}`` in fp64 (``None`` when ``z`` is zero).

    ``eigh`` runs on the default threads. On a machine whose cores are busy with other work, OpenMP threads that
    spin at LAPACK's barriers stall it for seconds; ``owner`` sets ``OMP_WAIT_POLICY=PASSIVE`` when it is imported
    before torch (see ``owner/__init__.py``).
    """
    g = (z.T @ z).to(torch.float64)
    w, v = torch.linalg.eigh(g)
    del g
    w = w.clamp(min=0.0)
    mean = float(w.mean())
    if mean <= 0.0:
        return None
    m: torch.Tensor = (v * (w + ridge * mean).rsqrt()) @ v.T
    return m


def whiten(z: torch.Tensor, ridge: float = WHITEN_RIDGE) -> torch.Tensor:
    """``z (z^T z + ridge * mean_eig * I)^{-1/2}``: the rows of ``z`` with their spectrum flattened (fp32 out).

    Equivariant: ``whiten(z R) = whiten(z) R`` for orthogonal ``R``, and scale-free. The ridge keeps directions
    the rows barely use (numerical noise, quantisation) from being blown up. The matrix is formed in fp64 and
    applied in fp32: its eigenvalues lie within a factor ``(1 + 1/ridge)^{1/2}`` (about 32) of each other, which
    fp32 carries to ~1e-6 relative, and the ``n x d x d`` product then runs at fp32 speed.
    """
    m = whiten_matrix(z, ridge)
    if m is None:
        return z
    return z.to(torch.float32) @ m.to(torch.float32)


def _group_sum(x: torch.Tensor, n_heads: int, n_kv: int) -> torch.Tensor:
    """Sum the per-head blocks of ``x (n, Hq*dh)`` over the query heads of each KV group -> ``(n, Hkv*dh)``."""
    n = x.shape[0]
    r = n_heads // n_kv
    return x.reshape(n, n_kv, r, -1).sum(dim=2).reshape(n, -1)


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


def _group_rows(wq: torch.Tensor, n_heads: int, n_kv: int, head_dim: int) -> torch.Tensor:
    """``Wq (Hq*dh, d)`` with the query heads of each KV group summed -> ``(Hkv*dh, d)`` fp32: ``X Wq_g^T`` is
    ``X Wq^T`` group-summed, exactly in real arithmetic, at ``Hkv/Hq`` of the cost."""
    if n_heads == n_kv:
        return _f32(wq)
    return _f32(wq.reshape(n_kv, n_heads // n_kv, head_dim, -1)).sum(dim=1).reshape(n_kv * head_dim, -1)


def _group_cols(wo: torch.Tensor, n_heads: int, n_kv: int, head_dim: int) -> torch.Tensor:
    """``Wo (d, Hq*dh)`` with the columns of each KV group's query heads summed -> ``(d, Hkv*dh)`` fp32."""
    if n_heads == n_kv:
        return _f32(wo)
    d = wo.shape[0]
    return _f32(wo.reshape(d, n_kv, n_heads // n_kv, head_dim)).sum(dim=2).reshape(d, n_kv * head_dim)


def _scaled(w: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """``w`` in fp32 with its columns multiplied by ``g``: ``(X diag(g)) w^T = X (w diag(g))^T``, so a norm gain is
    folded into a (block of a) weight matrix instead of into an ``n x d`` copy of the probe rows."""
    return _f32(w) if g is None else w * g  # bf16 * fp32 promotes to fp32


def _ffn_output(xf: torch.Tensor, w: LayerWeights, method: Method, block: int) -> torch.Tensor:
    """The FFN's output on ``xf`` (``n x d``, without biases), accumulated over blocks of ``block`` hidden units:
    each block's weights converted to fp32 as used, no ``n x h`` intermediate."""
    f = torch.zeros((xf.shape[0], w.w_down.shape[0]), dtype=torch.float32)
    h_units = w.w_up.shape[0]
    for b in range(0, h_units, block):
        s = slice(b, min(b + block, h_units))
        up = _f32(w.w_up[s])
        if w.w_gate is None:
            h = xf @ up.T
        elif method == "huref-2024":
            h = xf @ (_f32(w.w_gate[s]) * up).T
        else:
            h = xf @ up.T
            h.mul_(xf @ _f32(w.w_gate[s]).T)
        del up
        f.addmm_(h, _f32(w.w_down[:, s]).T)
        del h
    return f


def _qk_normed(z: torch.Tensor, g: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """QK-norm on projected rows ``z (n, H*dh)``: each row divided by its RMS (per head when ``g`` has ``dh``
    entries, over all heads when it has ``H*dh``), then multiplied by ``g``. The model's epsilon is left out
    (it is negligible next to real activations), so the result is exactly free of the projection's scale."""
    n = z.shape[0]
    g = _f32(g)
    if g.numel() == head_dim:
        zh = z.reshape(n, n_heads, head_dim)
    elif g.numel() == n_heads * head_dim:
        zh = z.reshape(n, 1, n_heads * head_dim)
    else:
        raise ValueError(f"a QK-norm weight of {g.numel()} entries fits neither a head ({head_dim}) nor "
                         f"{n_heads} heads ({n_heads * head_dim})")
    rms = zh.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    return (zh / rms * g).reshape(n, -1)


def qk_norm_term(
    xa: torch.Tensor, w: LayerWeights, info: ArchInfo, g1: torch.Tensor | None = None
) -> torch.Tensor:
    """``attn_qk`` for a model with QK-norm (Qwen3, OLMo-2, Gemma-3): ``sum_h qn_h kn_{g(h)}^T`` with
    ``qn = QKNorm(Ea Wq^T)``, ``kn = QKNorm(Ea Wk^T)`` on the probe rows, formed from the normalised
    projections as the gated FFN term is formed from ``(X Wgate^T) * (X Wup^T)``.

    The norm is not linear, so the query heads of a KV group are summed after it (on ``qn``), not in ``Wq``.
    What moves the plain ``Ea Wq^T Wk Ea^T`` but not the model, and not this term: a positive scale of ``Wq``
    (per head for a per-head norm), cancelled by the RMS; gains traded between ``q_norm`` and ``k_norm``
    (``gq * a``, ``gk / a`` elementwise), which only the product ``gq * gk`` sees; sign flips of head dims in
    both ``Wq`` and ``Wk``. Residual rotations, permutations and scalings move ``Ea`` and the weights
    together, as for the plain term. (A general per-head map ``C`` inside q/k is no longer function-preserving:
    the RMS and the diagonal gains do not commute with it; see ``zoo._attacks_ops.qk_linear``.)
    """
    assert w.q_norm is not None and w.k_norm is not None
    hq, hkv, dh = info.n_heads, info.n_kv_heads, info.head_dim
    q = _qk_normed(xa @ _scaled(w.wq, g1).T, w.q_norm, hq, dh)
    q = _group_sum(q, hq, hkv) if hq != hkv else q
    k = _qk_normed(xa @ _scaled(w.wk, g1).T, w.k_norm, hkv, dh)
    return q @ k.T


# --- mixture-of-experts FFNs and latent attention (Mixtral, Qwen2-MoE, DeepSeek-V2/V3) -----------------------


def _rms(z: torch.Tensor) -> torch.Tensor:
    """Each row's RMS (``n x 1``), kept away from 0."""
    return z.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float32).tiny)


def _rms_rows(z: torch.Tensor) -> torch.Tensor:
    """``z`` with each row divided by its RMS. The model's epsilon is left out, so the result is exactly free of
    the rows' scale (the residual-scale attack multiplies epsilon by ``c^2`` to keep the model's output)."""
    return z / _rms(z)


def moe_routing(xn: torch.Tensor, moe: MoeWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's choice on the normed rows ``xn`` (``n x d``, as the FFN reads them): the chosen experts'
    indices and weights, both ``n x top_k``, by the rule ``MoeWeights`` describes."""
    logits = xn @ _f32(moe.router).T
    scores = logits.softmax(dim=1) if moe.scoring == "softmax" else logits.sigmoid()
    choice = scores if moe.score_bias is None else scores + _f32(moe.score_bias)
    n, e = choice.shape
    if moe.n_group > 1:  # DeepSeek: keep the topk_group groups whose group_top best experts score highest
        grouped = choice.reshape(n, moe.n_group, e // moe.n_group)
        best = grouped.topk(min(moe.group_top, e // moe.n_group), dim=2).values.sum(dim=2)
        keep = torch.zeros_like(best).scatter_(1, best.topk(moe.topk_group, dim=1).indices, 1.0)
        choice = choice.masked_fill(keep.repeat_interleave(e // moe.n_group, dim=1) == 0, 0.0)
    idx = choice.topk(moe.top_k, dim=1).indices
    weights = scores.gather(1, idx)
    if moe.norm_topk:
        weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-20)
    return idx, weights * moe.scale


def moe_ffn_output(xf: torch.Tensor, xr: torch.Tensor, w: LayerWeights, method: Method, block: int) -> torch.Tensor:
    """The FFN term's ``F`` for a mixture-of-experts FFN: the routed output on the probe rows.

    Each row is routed as the model routes it, on the normed input ``xn = xf / rms(xr)`` (``xf`` the rows with the
    norm's gain, ``xr`` before it): softmax or sigmoid scores, top-k (group-limited for DeepSeek-V3), renormalised
    and scaled. Each chosen expert contributes its gated FFN output in the term's own form
    (``((Xf Wgate^T) * (Xf Wup^T)) Wdown^T``, as the dense term, ``_ffn_output``) times its routing weight; shared
    experts are added for every row, Qwen2-MoE's times ``sigmoid(xn Wsg^T)``.

    Why this cannot move under the function-preserving transforms: permuting the experts together with the
    router's rows (and DeepSeek's score bias) permutes the scores and the experts alike, so every row picks the
    same experts with the same weights and the sum over them is unchanged; a permutation or a rescaling of one
    expert's hidden units leaves its gated output unchanged, as for the dense FFN; residual rotations and
    permutations move ``xf`` and the weights together, and a residual scale ``c`` leaves ``xn`` (no epsilon) and
    hence the routing exactly unchanged while scaling ``F`` by ``c^2``, which whitening removes. Routing is not
    continuous: a probe row whose top-k scores nearly tie can switch experts under a small weight change (noise,
    quantisation), which moves that row of ``F`` and not the others.
    """
    moe = w.moe
    assert moe is not None
    xn = xf / _rms(xr)
    idx, weights = moe_routing(xn, moe)
    f = torch.zeros((xf.shape[0], xf.shape[1]), dtype=torch.float32)
    for e, (gate, up, down) in enumerate(moe.experts):
        rw = (weights * (idx == e)).sum(dim=1)
        rows = rw.nonzero().flatten()
        if rows.numel() == 0:
            continue
        expert = replace(w, w_gate=gate, w_up=up, w_down=down, moe=None)
        f.index_add_(0, rows, _ffn_output(xf[rows], expert, method, block) * rw[rows, None])
    for s, (gate, up, down) in enumerate(moe.shared):
        out = _ffn_output(xf, replace(w, w_gate=gate, w_up=up, w_down=down, moe=None), method, block)
        if moe.shared_gate is not None and s == 0:
            out.mul_((xn @ _f32(moe.shared_gate).T).sigmoid())
        f.add_(out)
    return f


def mla_qk_term(xa: torch.Tensor, mla: MlaWeights, g1: torch.Tensor | None) -> torch.Tensor:
    """``attn_qk`` for multi-head latent attention (DeepSeek-V2/V3): ``sum_h q_h k_h^T``, the attention logits of
    the probe rows against each other at relative position 0, formed from the normalised latents.

    With ``Ea`` the (whitened, gain-folded) probe rows: ``cq = RMS(Ea Wqa^T) * gqa`` (or ``Ea`` itself without a
    query compression), ``q = cq Wqb^T`` split per head into ``[q_nope, q_rope]``; ``z = Ea Wkva^T`` split into the
    latent ``ckv`` and the shared rotary key ``k_rope``; ``[k_nope, v] = (RMS(ckv) * gkva) Wkvb^T`` per head.
    The term is ``sum_h (q_nope_h k_nope_h^T + q_rope_h k_rope^T)``.

    Derivation. The score of query ``i`` and key ``j`` is ``q_nope_i . k_nope_j + R_i q_rope_i . R_j k_rope_j``.
    The no-rope part is a plain bilinear form per head, so any invertible per-head ``C`` with ``Wqb_nope_h ->
    C^T Wqb_nope_h``, ``Wkvb_k_h -> C^-1 Wkvb_k_h`` preserves the model and this product. The rotary part only
    admits maps commuting with every position's rotation (a scaled rotation per frequency plane, the same for
    all heads because ``k_rope`` is shared): at relative position 0 the rotations cancel and the product is
    preserved too, so the whole position-0 logit is used. The two latents sit behind RMSNorms: a latent rotation
    ``Wqa -> R Wqa``, ``Wqb -> Wqb R^T`` (after folding the norm's gain into ``Wqb``), or the same in the KV latent,
    preserves the model because ``RMS(R z) = RMS(z)``, and preserves ``cq Wqb^T``; a latent rescaling is removed by
    the RMS (epsilon left out, as in ``_rms_rows``). Residual-stream transforms move ``Ea`` and ``Wqa``/``Wkva``
    together, as for the plain term. Not invariant, hence not used: ``Ea Wqa^T`` or ``Ea Wkva^T`` alone (latent
    rotations move them) and any product across the RMSNorm taken as if it were linear.
    """
    h, dn, dr = mla.n_heads, mla.nope_dim, mla.rope_dim
    n = xa.shape[0]
    if mla.q_a is None:
        q = xa @ _scaled(mla.q_b, g1).T
    else:
        cq = _rms_rows(xa @ _scaled(mla.q_a, g1).T)
        q = cq @ _scaled(mla.q_b, mla.q_a_norm).T
    z = xa @ _scaled(mla.kv_a, g1).T
    ckv, k_rope = z[:, : mla.kv_rank], z[:, mla.kv_rank :]
    kv = (_rms_rows(ckv) @ _scaled(mla.kv_b, mla.kv_a_norm).T).reshape(n, h, dn + mla.v_dim)
    k = torch.cat([kv[:, :, :dn], k_rope[:, None, :].expand(n, h, dr)], dim=2).reshape(n, h * (dn + dr))
    return q @ k.T


def mla_vo_factors(
    xa: torch.Tensor, er: torch.Tensor, mla: MlaWeights, wo: torch.Tensor, g1: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``V (n, H*dv)`` and ``O = Er Wo (n, H*dv)`` whose product ``V O^T`` is latent attention's ``attn_vo``:
    ``V = (RMS(ckv) * gkva) Wkvb_v^T`` per head, the values of the probe rows through ``kv_b_proj``. A per-head
    invertible ``C`` with ``Wkvb_v_h -> C Wkvb_v_h``, ``Wo_h -> Wo_h C^-1`` preserves the model and ``V_h O_h^T``;
    latent rotations and scales are removed as in ``mla_qk_term``."""
    h, dn, dv = mla.n_heads, mla.nope_dim, mla.v_dim
    ckv = (xa @ _scaled(mla.kv_a, g1).T)[:, : mla.kv_rank]
    kv_b_v = _f32(mla.kv_b).reshape(h, dn + dv, -1)[:, dn:].reshape(h * dv, -1)
    v = _rms_rows(ckv) @ _scaled(kv_b_v, mla.kv_a_norm).T
    return v, er @ _f32(wo)


def iter_layer_terms(
    x: torch.Tensor, w: LayerWeights, info: ArchInfo, method: Method = "pawprint",
    whiten_rows: torch.Tensor | None = None, *, block: int = FFN_BLOCK,
) -> Iterator[tuple[str, torch.Tensor]]:
    """The three ``n x n`` terms of one layer (in ``TERMS`` order), each yielded as soon as it is computed, from the
    probe rows ``x`` (fp32, as they enter the stream) and the layer's weights in their stored dtype or fp32.

    ``whiten_rows``: ``W(Xc)`` if the caller computed it once for all layers (it does not depend on the layer).
    A caller that writes each term and drops it never holds more than one; the layer's weights are converted to
    fp32 a matrix (attention) or a block of ``block`` hidden units (FFN) at a time, and dropped before the FFN's
    output is whitened (a caller that keeps no reference to ``w`` of its own gets that memory back there). The
    attention's norm gain is folded into its weights, not into a copy of the rows; the FFN's is applied to the
    rows as the formulas say, because the FFN's output is whitened next, which magnifies rounding in the
    directions it uses least (folding it into the weights moved the FFN term by 1 - 4e-9 in cosine on the zoo).
    """
    x = x.to(torch.float32)
    norm: NormKind = info.norm
    g1 = None
    if method == "huref-2024":
        xa = xf = xr = er = x
    else:
        xr = x - x.mean(dim=1, keepdim=True) if norm == "layer" else x
        er = whiten_rows if whiten_rows is not None else whiten(xr)
        xa, xf = er, xr
        if norm != "post":
            g1 = None if w.g1 is None else _f32(w.g1)
            xf = xr * _f32(w.g2) if w.g2 is not None else xr
    hq, hkv, dh = info.n_heads, info.n_kv_heads, info.head_dim
    if w.mla is not None:
        qk = mla_qk_term(xa, w.mla, g1)
    elif w.q_norm is not None and w.k_norm is not None and method != "huref-2024":
        qk = qk_norm_term(xa, w, info, g1)
    else:
        q = xa @ _scaled(_group_rows(w.wq, hq, hkv, dh), g1).T
        k = xa @ _scaled(w.wk, g1).T
        qk = q @ k.T
        del q, k
    yield "attn_qk", qk
    del qk
    if w.mla is not None:
        v, o = mla_vo_factors(xa, er, w.mla, w.wo, g1)
    else:
        v = xa @ _scaled(w.wv, g1).T
        o = er @ _group_cols(w.wo, hq, hkv, dh)
    vo = v @ o.T
    del v, o, xa
    yield "attn_vo", vo
    del vo
    f = _ffn_output(xf, w, method, block) if w.moe is None else moe_ffn_output(xf, xr, w, method, block)
    del xf, w
    if method != "huref-2024":
        f = whiten(f)
    yield "ffn", f @ er.T


def layer_terms(
    x: torch.Tensor, w: LayerWeights, info: ArchInfo, method: Method = "pawprint",
    whiten_rows: torch.Tensor | None = None, *, block: int = FFN_BLOCK,
) -> dict[str, torch.Tensor]:
    """``iter_layer_terms`` collected: the three ``n x n`` terms of one layer by name."""
    return dict(iter_layer_terms(x, w, info, method, whiten_rows, block=block))
