"""The previous version's arithmetic for one layer's terms, kept to measure what the shipped one saves
(``benchmarks.perf.floor``, part 6): the straightforward formulas of ``owner._invariants``'s docstring on the whole
layer in fp32, grouped-query attention summed on the ``n x Hq*dh`` products, the whole ``n x h`` FFN intermediates,
the whitening applied in fp64. Same terms as ``owner._invariants.layer_terms`` up to rounding (cosine 1 - 1e-11 on
the zoo); ``tests/owner/test_terms_arithmetic.py`` holds the same formulas as its reference.
"""

from __future__ import annotations

import torch

from owner._adapters import ArchInfo, LayerWeights
from owner._invariants import WHITEN_RIDGE


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
