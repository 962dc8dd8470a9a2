"""The invariant terms: products of weight matrices on the probe rows that function-preserving transforms
cannot move (see shared/design/SCIENCE.md), and ICS, the comparison of two models' terms.

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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from owner._adapters import ArchInfo, LayerWeights, Method, NormKind
from owner._probes import ProbeSet

TERMS: tuple[str, ...] = ("attn_qk", "attn_vo", "ffn")
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
    return (v * (w + ridge * mean).rsqrt()) @ v.T


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


@dataclass(frozen=True)
class InvariantSet:
    """A model's invariant terms with what is needed to compare them: the probe tokens (by string) and which
    of them the model has, the layers, the method id and the model's shape facts."""

    method: str
    method_id: str
    probes: ProbeSet
    present: tuple[bool, ...]
    layers: tuple[int, ...]
    model: dict[str, Any] = field(compare=False)
    terms: dict[tuple[int, str], np.ndarray] = field(compare=False, repr=False)

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.probes.tokens

    @property
    def present_tokens(self) -> list[str]:
        return [t for t, p in zip(self.tokens, self.present, strict=True) if p]

    def term(self, layer: int, name: str) -> np.ndarray:
        return self.terms[(layer, name)]


def standardise(m: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation over all entries (float64)."""
    a = np.asarray(m, dtype=np.float64)
    a = a - a.mean()
    sd = a.std()
    return a / sd if sd > 0 else a


def term_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two standardised terms (scale- and shift-free)."""
    za, zb = standardise(a).ravel(), standardise(b).ravel()
    den = float(np.linalg.norm(za) * np.linalg.norm(zb))
    return float(za @ zb / den) if den > 0 else 0.0


# Terms are read in blocks of rows, the blocks of all the terms in play at once holding about twice this many
# entries (16 MiB in float64), so that a comparison holds no float64 copy of a whole term: at n = 4096 a copy is
# 128 MiB, 805 MiB for the six terms of two layers, on each side.
_BLOCK_ENTRIES = 1 << 20


def _block_rows(m: int, terms_in_play: int) -> int:
    return max(1, 2 * _BLOCK_ENTRIES // (m * max(2, terms_in_play)))


def _rows_of(t: np.ndarray, rows: np.ndarray, every: bool, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of the term restricted to ``rows`` (rows and columns), as float64."""
    if every:
        return np.array(t[r0:r1], dtype=np.float64)  # always a copy: callers centre it in place
    # Rows, then columns: about 1.8x faster than one ``np.ix_`` gather.
    return np.take(np.take(t, rows[r0:r1], axis=0), rows, axis=1).astype(np.float64)


def _centred(block: np.ndarray, mean: float) -> np.ndarray:
    block -= mean
    return block


class _Rows:
    """One side of a comparison: an invariant set restricted to the probe tokens common with the other side."""

    def __init__(self, inv: InvariantSet, rows: np.ndarray) -> None:
        self.inv, self.rows, self.m = inv, rows, len(rows)
        self.every = self.m == len(inv.present_tokens) and bool(np.array_equal(rows, np.arange(self.m)))
        self.means: dict[tuple[int, str], float] = {}
        self.norms: dict[tuple[int, str], float] = {}

    def blocks(self, layer: int, name: str, step: int) -> Iterator[np.ndarray]:
        t = self.inv.term(layer, name)
        for r0 in range(0, self.m, step):
            yield _rows_of(t, self.rows, self.every, r0, min(self.m, r0 + step))

    def moments(self, keys: Iterable[tuple[int, str]]) -> None:
        """Mean and centred norm of each term (two passes over its rows), kept."""
        step = _block_rows(self.m, 2)
        for key in keys:
            if key in self.norms:
                continue
            total = sum(float(b.sum()) for b in self.blocks(*key, step))
            mean = total / float(self.m * self.m)
            ss = 0.0
            for block in self.blocks(*key, step):
                c = _centred(block, mean)
                ss += float(np.vdot(c, c))
            self.means[key], self.norms[key] = mean, float(np.sqrt(ss))


def _cosines(a: _Rows, b: _Rows, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int, str], float]:
    """The cosine of every term of every ``(layer of a, layer of b)`` pair, each term centred (the same number
    as the dot product of the two standardised, unit-norm terms), read row block by row block: each term of
    either side is read once per call, and no whole-term float64 copy is made."""
    pairs = sorted(set(pairs))
    la = sorted({x for x, _ in pairs})
    lb = sorted({y for _, y in pairs})
    a.moments((x, t) for x in la for t in TERMS)
    b.moments((y, t) for y in lb for t in TERMS)
    step = _block_rows(a.m, len(la) + len(lb))
    out: dict[tuple[int, int, str], float] = {}
    for name in TERMS:
        dots = dict.fromkeys(pairs, 0.0)
        a_blocks = {x: a.blocks(x, name, step) for x in la}
        b_blocks = {y: b.blocks(y, name, step) for y in lb}
        for _ in range(0, a.m, step):
            ra = {x: _centred(next(it), a.means[(x, name)]) for x, it in a_blocks.items()}
            rb = {y: _centred(next(it), b.means[(y, name)]) for y, it in b_blocks.items()}
            for x, y in pairs:
                dots[(x, y)] += float(np.vdot(ra[x], rb[y]))
        for x, y in pairs:
            den = a.norms[(x, name)] * b.norms[(y, name)]
            out[(x, y, name)] = dots[(x, y)] / den if den > 0 else 0.0
    return out


def _similarity(cos: dict[tuple[int, int, str], float], la: Sequence[int], lb: Sequence[int]) -> np.ndarray:
    sim = np.zeros((len(la), len(lb)))
    for i, x in enumerate(la):
        for j, y in enumerate(lb):
            sim[i, j] = float(np.mean([cos[(x, y, t)] for t in TERMS]))
    return sim


@dataclass(frozen=True)
class TermScore:
    layer_a: int
    layer_b: int
    term: str
    cosine: float


@dataclass(frozen=True)
class Comparison:
    """ICS between two invariant sets: the mean of every term's cosine, and every term reported."""

    method: str
    ics: float
    terms: tuple[TermScore, ...]
    common_probe_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "ics": self.ics,
            "common_probe_tokens": self.common_probe_tokens,
            "terms": [t.__dict__ for t in self.terms],
        }


class IncomparableError(ValueError):
    """Two invariant sets cannot be compared (different methods, no common tokens, no layers)."""


def default_layer_pairs(a: Sequence[int], b: Sequence[int]) -> list[tuple[int, int]]:
    """Pair the selected layers of two models from the end (last with last), as many as both have."""
    n = min(len(a), len(b))
    return list(zip(list(a)[len(a) - n :], list(b)[len(b) - n :], strict=True))


def _common_rows(a: InvariantSet, b: InvariantSet, min_common: int) -> tuple[np.ndarray, np.ndarray]:
    if a.method_id != b.method_id:
        raise IncomparableError(f"terms were computed with different methods: {a.method_id} vs {b.method_id}")
    rows_b = {t: i for i, t in enumerate(b.present_tokens)}
    rows_a = {t: i for i, t in enumerate(a.present_tokens)}
    common = [t for t in a.present_tokens if t in rows_b]
    if len(common) < min_common:
        raise IncomparableError(
            f"only {len(common)} probe tokens are common to both models (need at least {min_common})"
        )
    return np.array([rows_a[t] for t in common]), np.array([rows_b[t] for t in common])


def _match(la: Sequence[int], lb: Sequence[int], sim: np.ndarray) -> list[tuple[int, int]]:
    """Order-preserving one-to-one matching of every layer of the shallower side maximising summed ``sim``."""
    transpose = len(la) > len(lb)
    s = sim.T if transpose else sim
    rows, cols = s.shape  # rows <= cols: every row gets a distinct, increasing column
    best = np.full((rows + 1, cols + 1), -np.inf)
    best[0, :] = 0.0
    for i in range(1, rows + 1):
        for j in range(i, cols + 1):
            best[i, j] = max(best[i, j - 1], best[i - 1, j - 1] + s[i - 1, j - 1])
    pairs: list[tuple[int, int]] = []
    i, j = rows, cols
    while i > 0:
        if j > i and best[i, j] == best[i, j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    pairs.reverse()
    if transpose:
        return [(la[c], lb[r]) for r, c in pairs]
    return [(la[r], lb[c]) for r, c in pairs]


def compare(
    a: InvariantSet, b: InvariantSet, layer_pairs: Sequence[tuple[int, int]] | str | None = None,
    min_common: int = 16, a_cache: dict[Any, Any] | None = None,
) -> Comparison:
    """ICS of ``a`` and ``b`` on the probe tokens both have.

    ``layer_pairs``: explicit ``(layer of a, layer of b)`` pairs; ``None`` pairs the selected layers from the
    end (last with last); ``"match"`` matches them order-preservingly (``match_layers``), computing every
    pair's cosines once for the matching and the scores. The terms are read in row blocks, centred in float64
    (no whole-term copy on either side). ``a_cache`` (an empty dict to start) keeps the means and norms of
    ``a``'s terms across calls comparing the same ``a`` with several ``b`` (a submission with the registry's
    bases): same results, less work.
    """
    ia, ib = _common_rows(a, b, min_common)
    if a_cache is None:
        side_a = _Rows(a, ia)
    else:  # the means and norms of ``a``'s terms on these rows, worked out once
        side_a = a_cache.setdefault((id(a), ia.tobytes()), _Rows(a, ia))
    side_b = _Rows(b, ib)
    if layer_pairs == "match":
        cos = _cosines(side_a, side_b, [(x, y) for x in a.layers for y in b.layers])
        pairs = _match(a.layers, b.layers, _similarity(cos, a.layers, b.layers))
    else:
        if isinstance(layer_pairs, str):
            raise ValueError(f"layer_pairs must be pairs, None or 'match', got {layer_pairs!r}")
        pairs = list(layer_pairs) if layer_pairs is not None else default_layer_pairs(a.layers, b.layers)
        if not pairs:
            raise IncomparableError("no layers to compare")
        cos = _cosines(side_a, side_b, pairs)
    scores = [TermScore(la, lb, name, cos[(la, lb, name)]) for la, lb in pairs for name in TERMS]
    ics = float(np.mean([s.cosine for s in scores]))
    return Comparison(method=a.method, ics=ics, terms=tuple(scores), common_probe_tokens=len(ia))


def layer_similarity(a: InvariantSet, b: InvariantSet) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """Mean term cosine between every layer of ``a`` and every layer of ``b`` (on common probe tokens)."""
    ia, ib = _common_rows(a, b, 16)
    cos = _cosines(_Rows(a, ia), _Rows(b, ib), [(x, y) for x in a.layers for y in b.layers])
    sim = _similarity(cos, a.layers, b.layers)
    return a.layers, b.layers, sim


def match_layers(a: InvariantSet, b: InvariantSet) -> list[tuple[int, int]]:
    """An order-preserving one-to-one matching of layers maximising the summed layer similarity.

    Every layer of the shallower model is matched (dynamic programming over the similarity matrix), which
    recognises depth-pruned and depth-upscaled derivatives: the matched pairs skip the dropped layers.
    """
    la, lb, sim = layer_similarity(a, b)
    return _match(la, lb, sim)
