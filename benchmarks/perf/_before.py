"""The previous version's arithmetic, kept to measure what the shipped one saves. First, one layer's terms
(``benchmarks.perf.floor``, part 6): the straightforward formulas of ``owner._invariants``'s docstring on the whole
layer in fp32, grouped-query attention summed on the ``n x Hq*dh`` products, the whole ``n x h`` FFN intermediates,
the whitening applied in fp64. Same terms as ``owner._invariants.layer_terms`` up to rounding (cosine 1 - 1e-11 on
the zoo); ``tests/owner/test_terms_arithmetic.py`` holds the same formulas as its reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from owner._adapters import ArchInfo, LayerWeights
from owner._invariants import TERMS, WHITEN_RIDGE
from verifier._ics import _common_rows, _match


def whiten(z: torch.Tensor) -> torch.Tensor:
    g = (z.T @ z).to(torch.float64)
    w, v = torch.linalg.eigh(g)
    w = w.clamp(min=0.0)
    mean = float(w.mean())
    if mean <= 0.0:
        return z
    return (z.to(torch.float64) @ ((v * (w + WHITEN_RIDGE * mean).rsqrt()) @ v.T)).to(torch.float32)


def _group_sum(x: torch.Tensor, n_heads: int, n_kv: int) -> torch.Tensor:
    return x.reshape(x.shape[0], n_kv, n_heads // n_kv, -1).sum(dim=2).reshape(x.shape[0], -1)


def layer_terms(x: torch.Tensor, w: LayerWeights, info: ArchInfo, er: torch.Tensor) -> dict[str, torch.Tensor]:
    """Method ``pawprint`` for a pre-norm model with a gated FFN (LLaMA), ``w`` in fp32, ``er`` = ``W(X)``."""
    xa = er * w.g1 if w.g1 is not None else er
    xf = x * w.g2 if w.g2 is not None else x
    hq, hkv = info.n_heads, info.n_kv_heads
    qk = _group_sum(xa @ w.wq.T, hq, hkv) @ (xa @ w.wk.T).T
    vo = (xa @ w.wv.T) @ _group_sum(er @ w.wo, hq, hkv).T
    assert w.w_gate is not None
    f = ((xf @ w.w_gate.T) * (xf @ w.w_up.T)) @ w.w_down.T
    return {"attn_qk": qk, "attn_vo": vo, "ffn": whiten(f) @ er.T}


# --- the previous version's exact comparison (``owner.compare`` before row blocks), for ``benchmarks.perf.compare``:
# every term of both sides restricted, standardised and scaled to unit norm as a whole float64 copy (the
# suspect's copies kept across bases), then dot products. Same cosines up to rounding.
def unit_terms(inv: Any, rows: np.ndarray, layers: set[int]) -> dict[tuple[int, str], np.ndarray]:
    out: dict[tuple[int, str], np.ndarray] = {}
    every = len(rows) == len(inv.present_tokens) and bool(np.array_equal(rows, np.arange(len(rows))))
    for layer in layers:
        for name in TERMS:
            t = inv.term(layer, name)
            z = np.array(t if every else t[np.ix_(rows, rows)], dtype=np.float64).ravel()
            z -= z.mean()
            nz = float(np.sqrt(z @ z))
            if nz > 0:
                z /= nz
            out[(layer, name)] = z
    return out


def compare_match(a: Any, b: Any, a_cache: dict[Any, Any] | None = None) -> tuple[float, list[float]]:
    """ICS with layers matched (what the verifier runs per base): the ICS and every term's cosine."""
    ia, ib, _ = _common_rows(a, b, 16)
    key = (id(a), ia.tobytes())
    if a_cache is None or key not in a_cache:
        unit_a = unit_terms(a, ia, set(a.layers))
        if a_cache is not None:
            a_cache[key] = unit_a
    else:
        unit_a = a_cache[key]
    unit_b = unit_terms(b, ib, set(b.layers))
    sim = np.zeros((len(a.layers), len(b.layers)))
    for i, x in enumerate(a.layers):
        for j, y in enumerate(b.layers):
            sim[i, j] = float(np.mean([unit_a[(x, t)] @ unit_b[(y, t)] for t in TERMS]))
    cos = [float(unit_a[(x, t)] @ unit_b[(y, t)]) for x, y in _match(a.layers, b.layers, sim) for t in TERMS]
    return float(np.mean(cos)), cos
