"""A prototype of leaner arithmetic for one LLaMA layer's terms, to measure before anyone changes
``owner._invariants.layer_terms`` (which this module never replaces: it only computes the same terms another way).

It mirrors the terms of ``METHOD_ID`` (pawprint-terms/2, whitened rows) for RMSNorm models with a gated FFN, and
changes only how they are computed:

1. grouped-query attention: the query heads of a group are summed in the *weights* (``Wq`` rows, ``Wo`` columns)
   before multiplying by the probe rows, instead of in the ``n x Hq*dh`` products (exact in real arithmetic:
   ``sum_h X Wq_h^T = X (sum_h Wq_h)^T``), so ``Xa Wq^T`` and ``Er Wo`` cost ``n d Hkv dh`` instead of ``n d Hq dh``;
2. the FFN is accumulated over blocks of ``block`` hidden units, each block of ``Wgate`` and ``Wup`` read and
   converted to fp32 just before use (``Wdown`` is read whole in its stored dtype and converted a block of
   columns at a time): no ``n x h`` intermediate and no fp32 copy of the FFN weights; the attention weights are
   read in their stored dtype and converted one at a time;
3. the whitening matrix ``(Z^T Z + r I)^{-1/2}`` is formed in fp64 as now, but applied in fp32
   (``fp32_apply``): the ``n x d x d`` product runs at fp32 speed;
4. ``eigh`` runs on one thread (``torch.set_num_threads(1)`` around it): LAPACK's divide and conquer meets a
   barrier per step, and on a machine whose cores are also busy with other work every barrier waits for a
   descheduled thread (measured: 2-20x slower than one thread under load), while the products gain from every
   core.

Accuracy against ``layer_terms`` is measured by ``benchmarks.perf.floor``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch

from owner._adapters import ArchInfo
from owner._invariants import WHITEN_RIDGE
from owner._source import SafetensorsSource

METHOD_ID = ("pawprint-terms/2(fold-norms,centre-layernorm,whiten-rows(ridge=1e-3),ffn=W((XWg)*(XWu)Wd)W(X)^T,"
             "per-head-qkv)")


def whiten_matrix(z: torch.Tensor, ridge: float = WHITEN_RIDGE) -> torch.Tensor | None:
    """``(z^T z + ridge * mean_eig * I)^{-1/2}`` in fp64 (``None`` when ``z`` is zero), as ``owner._invariants``."""
    g = (z.T @ z).to(torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w, v = torch.linalg.eigh(g)
    finally:
        torch.set_num_threads(threads)
    w = w.clamp(min=0.0)
    mean = float(w.mean())
    if mean <= 0.0:
        return None
    return (v * (w + ridge * mean).rsqrt()) @ v.T


def whiten(z: torch.Tensor, fp32_apply: bool) -> torch.Tensor:
    m = whiten_matrix(z)
    if m is None:
        return z
    if fp32_apply:
        return z @ m.to(torch.float32)
    return (z.to(torch.float64) @ m).to(torch.float32)


class LayerReader:
    """One LLaMA layer's tensors read from a safetensors source: whole in their stored dtype, or a block of rows
    converted to fp32 (gate and up are read block by block, so their fp32 copies never exist whole)."""

    NAMES: ClassVar[dict[str, str]] = {
        "q": "self_attn.q_proj.weight", "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
        "o": "self_attn.o_proj.weight", "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
        "down": "mlp.down_proj.weight", "g1": "input_layernorm.weight", "g2": "post_attention_layernorm.weight",
    }

    def __init__(self, source: SafetensorsSource, layer: int, prefix: str = "model.") -> None:
        self.source = source
        self.prefix = f"{prefix}layers.{layer}."

    def stored(self, key: str) -> torch.Tensor:
        return self.source.stored(self.prefix + self.NAMES[key])

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        return self.source.rows(self.prefix + self.NAMES[key], range(start, stop))

    def n_rows(self, key: str) -> int:
        return self.source.meta(self.prefix + self.NAMES[key]).shape[0]


def iter_layer_terms(
    x: torch.Tensor, er: torch.Tensor, layer: LayerReader, info: ArchInfo, *, block: int = 1024,
    fp32_apply: bool = True,
) -> Iterator[tuple[str, torch.Tensor]]:
    """The three terms of one LLaMA layer read through ``layer``, from the fp32 probe rows ``x`` and their
    whitened form ``er``, each yielded as soon as it is computed (a caller that writes and drops it never holds
    more than one ``n x n`` term)."""
    f32 = torch.float32
    hq, hkv, dh, d = info.n_heads, info.n_kv_heads, info.head_dim, info.d_model
    r = hq // hkv
    xa = er * layer.stored("g1").to(f32)
    wq = layer.stored("q").reshape(hkv, r, dh, d).to(f32).sum(dim=1).reshape(hkv * dh, d)
    q = xa @ wq.T
    del wq
    yield "attn_qk", q @ (xa @ layer.stored("k").to(f32).T).T
    del q
    wo = layer.stored("o").reshape(d, hkv, r, dh).to(f32).sum(dim=2).reshape(d, hkv * dh)
    o = er @ wo
    del wo
    yield "attn_vo", (xa @ layer.stored("v").to(f32).T) @ o.T
    del o, xa
    xf = x * layer.stored("g2").to(f32)
    down = layer.stored("down")  # (d, h): column blocks are not contiguous on disk, so read whole (stored dtype)
    f = torch.zeros((x.shape[0], d), dtype=f32)
    for b in range(0, layer.n_rows("gate"), block):
        e = min(b + block, layer.n_rows("gate"))
        h = xf @ layer.rows("gate", b, e).T
        h.mul_(xf @ layer.rows("up", b, e).T)
        f.addmm_(h, down[:, b:e].to(f32).T)
        del h
    del down, xf
    yield "ffn", whiten(f, fp32_apply) @ er.T


def layer_terms(
    x: torch.Tensor, er: torch.Tensor, layer: LayerReader, info: ArchInfo, *, block: int = 1024,
    fp32_apply: bool = True,
) -> dict[str, torch.Tensor]:
    """``iter_layer_terms`` collected (the shape of ``owner._invariants.layer_terms``'s answer)."""
    return dict(iter_layer_terms(x, er, layer, info, block=block, fp32_apply=fp32_apply))
