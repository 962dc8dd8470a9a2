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

import torch

from owner._adapters import ArchInfo, LayerWeights, Method, NormKind
from protocol import TERMS

__all__ = ["FFN_BLOCK", "METHOD_IDS", "TERMS", "WHITEN_RIDGE", "iter_layer_terms", "layer_terms", "resolve_layers",
           "whiten", "whiten_matrix"]
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
    q = xa @ _scaled(_group_rows(w.wq, hq, hkv, dh), g1).T
    k = xa @ _scaled(w.wk, g1).T
    qk = q @ k.T
    del q, k
    yield "attn_qk", qk
    del qk
    v = xa @ _scaled(w.wv, g1).T
    o = er @ _group_cols(w.wo, hq, hkv, dh)
    vo = v @ o.T
    del v, o, xa
    yield "attn_vo", vo
    del vo
    f = _ffn_output(xf, w, method, block)
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
