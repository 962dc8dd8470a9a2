"""Candidate invariant terms, measured on the lineage zoo: which ones separate derivatives from independent pairs.

    python -m benchmarks.lineage.candidates      # ~3 min on 2 cores; writes docs/results/term_candidates.md

Every candidate is an ``n x n`` product on the probe rows that the same function-preserving transforms cannot
move (orthogonal maps and permutations of the residual stream, norm folding, per-head linear maps inside QK and
VO, FFN neuron permutation and scaling, residual rescaling). ``Xc``: probe rows (centred for LayerNorm),
``Xa``/``Xf``: with the attention/FFN norm gains folded, ``Mqk = sum_h Wq_h^T Wk_h``, ``Mvo = sum_h Wv_h^T Wo_h^T``,
``F``: the FFN's output on the rows, ``W(Z) = Z (Z^T Z + r I)^{-1/2}`` (rows whitened), ``Ec = W(Xc)``:

- v1 terms (shipped until terms/2): ``Xa Mqk Xa^T``, ``Xa Mvo Xc^T``, ``F Xc^T``;
- whitened (shipped, terms/2): ``Ea Mqk Ea^T``, ``Ea Mvo Ec^T``, ``W(F) Ec^T`` with ``Ea = Ec diag(g1)``;
- Gram terms (the issue's suggestion: a centred cosine of two Gram matrices is a linear CKA):
  ``(Xa Mqk)(Xa Mqk)^T``, ``(Xa Mvo)(Xa Mvo)^T``, ``F F^T``, and the embedding Gram ``Xc Xc^T``;
- whitened Gram terms: ``(Ea Mqk)(Ea Mqk)^T``, ``(Ea Mvo)(Ea Mvo)^T``.

Pairs as in ``benchmarks/lineage`` (calibration zoo only: derivatives of ``llama-base-s0`` and independent
pairs), layers paired by index (the pruned model by its known mapping). Reported per candidate: the smallest
derivative score, the largest independent score (all pairs, and pairs involving llama), and the margin.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from owner import build_probe_set, load_vocabulary
from owner._adapters import ArchInfo, LayerWeights
from owner._invariants import _group_sum, whiten
from owner._model import open_model
from owner._probes import map_probes
from protocol import ProbeSpec as ProbeSet

GROUPS = {
    "v1": ("qk", "vo", "ffn"),
    "whitened (terms/2)": ("qk_w", "vo_w", "ffn_w"),
    "Gram": ("qk_g", "vo_g", "ffn_g", "emb_g"),
    "whitened Gram": ("qk_gw", "vo_gw"),
}


def candidates(x: torch.Tensor, lw: LayerWeights, info: ArchInfo) -> dict[str, np.ndarray]:
    xr = x - x.mean(dim=1, keepdim=True) if info.norm == "layer" else x
    ec = whiten(xr)

    def fold(z: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        return z if info.norm == "post" or g is None else z * g

    xa, xf, ea = fold(xr, lw.g1), fold(xr, lw.g2), fold(ec, lw.g1)
    hq, hkv = info.n_heads, info.n_kv_heads
    wo_g = lw.wo.reshape(lw.wo.shape[0], hkv, hq // hkv, -1).sum(2).reshape(lw.wo.shape[0], -1)
    h = (xf @ lw.w_gate.T) * (xf @ lw.w_up.T) if lw.w_gate is not None else xf @ lw.w_up.T
    f = h @ lw.w_down.T
    out: dict[str, torch.Tensor] = {}
    for tag, rows, right in (("", xa, xr), ("_w", ea, ec)):
        q = _group_sum(rows @ lw.wq.T, hq, hkv)
        out["qk" + tag] = q @ (rows @ lw.wk.T).T
        v = rows @ lw.wv.T
        out["vo" + tag] = v @ _group_sum(right @ lw.wo, hq, hkv).T
        qk_rows, vo_rows = q @ lw.wk, v @ wo_g.T  # the rows mapped by Mqk and Mvo (n x d)
        gtag = "_g" if tag == "" else "_gw"
        out["qk" + gtag] = qk_rows @ qk_rows.T
        out["vo" + gtag] = vo_rows @ vo_rows.T
    out["ffn"] = f @ xr.T
    out["ffn_w"] = whiten(f) @ ec.T
    out["ffn_g"] = f @ f.T
    out["emb_g"] = xr @ xr.T
    return {k: v.numpy().astype(np.float32) for k, v in out.items()}


def _unit(t: np.ndarray, rows: np.ndarray) -> np.ndarray:
    a = np.asarray(t[np.ix_(rows, rows)], dtype=np.float64).ravel()
    a = a - a.mean()
    n = float(np.linalg.norm(a))
    return a / n if n > 0 else a


def _terms(path: Path, probes: ProbeSet, cache: dict[str, tuple[np.ndarray, list[dict[str, np.ndarray]]]]
           ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Presence mask and per-layer candidates of one model on ``probes`` (cached by name)."""
    if path.name not in cache:
        m = open_model(path)
        mp = map_probes(probes, load_vocabulary(m.root))
        present = np.array([i is not None for i in mp.ids])
        with torch.inference_mode():
            x = m.adapter.embedding_rows([i for i in mp.ids if i is not None])
            cache[path.name] = (present, [candidates(x, m.adapter.layer(k), m.adapter.info)
                                          for k in range(m.adapter.info.n_layers)])
    return cache[path.name]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--zoo", default="out/demo/zoo")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--out", default="docs/results/term_candidates.md")
    ap.add_argument("--from-json", default=None, help="re-render a previous run's JSON (with --seconds)")
    ap.add_argument("--seconds", type=float, default=0.0)
    args = ap.parse_args()
    t0 = time.time()
    zoo = Path(args.zoo)
    if args.from_json:
        write(json.loads(Path(args.from_json).read_text()), args, args.seconds)
        return
    entries = json.loads((zoo / "lineage.json").read_text())["models"]
    by = {m["name"]: m for m in entries}

    def root(name: str) -> str:
        while by[name]["parent"] is not None:
            name = by[name]["parent"]
        return name

    names = [m["name"] for m in entries if m["kind"] not in ("onnx-fp32", "onnx-int8", "int8", "bf16")]
    results: list[dict[str, Any]] = []
    torch.set_num_threads(1)
    for a in [m["name"] for m in entries if m["parent"] is None]:
        probes = build_probe_set(load_vocabulary(zoo / a), n=args.n)
        cache: dict[str, tuple[np.ndarray, list[dict[str, np.ndarray]]]] = {}
        pa, ta = _terms(zoo / a, probes, cache)
        for b in names:
            if b == a:
                continue
            if by[b]["parent"] == a:
                relation, kind = "derived", by[b]["kind"]
            elif root(b) != a:
                relation = "independent"
                kind = "same-family" if by[b]["family"] == by[a]["family"] else "cross-family"
            else:
                continue
            pb, tb = _terms(zoo / b, probes, cache)
            both = pa & pb
            if both.sum() < 64:
                continue
            ia, ib = (np.cumsum(pa) - 1)[both], (np.cumsum(pb) - 1)[both]
            pairs = [(i, i) for i in range(len(ta))] if len(ta) == len(tb) else [(0, 0), (1, 1), (3, 2)]
            scores = {k: float(np.mean([_unit(ta[x][k], ia) @ _unit(tb[y][k], ib) for x, y in pairs])) for k in ta[0]}
            results.append({"a": a, "b": b, "relation": relation, "kind": kind, "families": [by[a]["family"],
                            by[b]["family"]], "scores": scores})
            print(a, b, relation, " ".join(f"{k}={v:+.3f}" for k, v in scores.items()), flush=True)
    write(results, args, time.time() - t0)


def write(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    lines = ["# Candidate invariant terms on the lineage zoo", "",
             f"Command: `python -m benchmarks.lineage.candidates --n {args.n}` ({seconds:.0f} s, 2 cores). "
             "Definitions in the module docstring. Score = mean cosine over paired layers.", "",
             "| group | term | smallest derived | largest independent (all) | margin (all) "
             "| largest independent (llama) | margin (llama) |", "|---|---|---|---|---|---|---|"]
    for group, keys in GROUPS.items():
        for k in keys:
            der = [float(r["scores"][k]) for r in results if r["relation"] == "derived"]
            ind = [float(r["scores"][k]) for r in results if r["relation"] == "independent"]
            ind_l = [float(r["scores"][k]) for r in results
                     if r["relation"] == "independent" and "llama" in r["families"]]
            lines.append(f"| {group} | {k} | {min(der):.3f} | {max(ind):.3f} | {min(der) - max(ind):+.3f} | "
                         f"{max(ind_l):.3f} | {min(der) - max(ind_l):+.3f} |")
    lines += ["", "Smallest derived is heavy continued pretraining in every row. Unwhitened terms (v1) and Gram terms "
              "carry the data-imposed embedding structure (the embedding Gram alone scores 0.89 between the gpt2 "
              "seeds) and fail across the zoo. Whitening fixes that: every whitened term has a positive margin over "
              "every independent pair of the zoo. Kept (terms/2): the whitened products. The whitened Gram terms "
              "separate about as well (QK better, VO worse) but are positive for every pair (they are PSD) and would "
              "add three more n x n tensors to every submission, doubling what an owner discloses for overlapping "
              "evidence; not adopted, a candidate to revisit.", ""]
    out = Path(args.out)
    out.write_text("\n".join(lines), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
