"""How the null's spread depends on the number of shared probe tokens ``m`` and the width ``d``; fits the null v2.

    python -m benchmarks.fit_null_scaling --write-null   # ~20 min on 2 busy cores; reuses the zoos built elsewhere

**Derivation.** Each term is an ``m x m`` matrix on the probe rows, standardised; for two independent models
the cosine is a sum over entries of products of two unrelated fields, so its spread is ``1/sqrt(D_eff)``
with ``D_eff`` the effective number of independent entries. Were the entries independent, ``D_eff = m^2``
(sd ``~ 1/m``). They are not: a term ``X W X^T`` lies in the span of the probe embeddings ``X`` (rank at most
``d``), and both models' embeddings carry the same token statistics, so ``D_eff`` grows more slowly than
``m^2`` and saturates with the width. We therefore model ``sd_t(m, d) = sd_t(m0, d0) (m/m0)^-a_t (d/d0)^-b_t``
and measure ``a_t`` and ``b_t`` on independent zoo pairs (the mean is measured the same way; the model keeps
the reference mean and only lets the spread move if the mean does not drift).

**Measurement.** Every pair of independent bases of a zoo (other seed, other family) is scored on the
probe set of one side (``n`` = ``--n`` tokens) with matched layers, as the verifier does; then the cosines are
recomputed on random subsets of ``m`` of the shared probe rows (``--draws`` per size, seeded), the same rows on
both sides of each term. ``a_t``: slope of ``log sd`` against ``log m`` within each zoo (zoos pooled, one
intercept each); ``b_t``: from the intercepts of zoos of different width at the same ``m``.

Writes ``docs/results/null_scaling.json`` and, with ``--write-null``, ``verifier/data/null-zoo-v2.json``: the
v1 null's reference (measured on the lineage zoo's calibration population, d0 = 128; those pairs shared
985-1857 probe tokens, not the nominal n = 4096, so ``m0`` is their largest ``m``, the conservative side) with
the fitted ``a_t``. The width exponent is reported but not applied: a receipt records the shared probe tokens
of each match, not the models' widths, and a verdict must be re-derivable from the receipt alone.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from owner import build_probe_set, compute_invariants, load_vocabulary
from owner._probes import DEFAULT_RULE
from owner.errors import TokenizerError
from protocol import TERMS
from protocol.terms import InvariantSet
from verifier import compare
from verifier._calibration import DATA_DIR, assess, base_verdict, load_null, null_with_scaling
from verifier._ics import term_cosine

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "pawprint" / "trust-zoo"
ZOOS = {"demo (d=128)": ROOT / "out" / "demo" / "zoo", "quick (d=32)": CACHE / "quick",
        "quick-heldout (d=32)": CACHE / "quick-heldout"}
SIZES = (64, 128, 256, 512, 1024)


def _bases(zoo: Path) -> list[dict[str, Any]]:
    models = json.loads((zoo / "lineage.json").read_text())["models"]
    return [m for m in models if m["kind"] == "base"]


def _rows(a: InvariantSet, b: InvariantSet) -> tuple[np.ndarray, np.ndarray]:
    rb = {t: i for i, t in enumerate(b.present_tokens)}
    ra = {t: i for i, t in enumerate(a.present_tokens)}
    common = [t for t in a.present_tokens if t in rb]
    return np.array([ra[t] for t in common]), np.array([rb[t] for t in common])


def score_zoo(zoo: Path, n: int, draws: int, seed: int, log: Any) -> list[dict[str, Any]]:
    """Cosines of every independent base pair, on all shared rows and on subsets of ``m`` rows."""
    bases = _bases(zoo)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for m in bases:
        by_family.setdefault(m["family"], []).append(m)
    done: set[frozenset[str]] = set()
    out: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for family, members in sorted(by_family.items()):
        probes = build_probe_set(load_vocabulary(zoo / members[0]["name"]), n=n, rule=DEFAULT_RULE)
        inv: dict[str, InvariantSet] = {}
        for m in bases:
            try:
                inv[m["name"]] = compute_invariants(zoo / m["name"], probes=probes, layers="all")
            except TokenizerError as e:
                log(f"  {m['name']} not on {family}'s probe set ({e})")
        for a in members:
            for b in bases:
                key = frozenset((a["name"], b["name"]))
                if a["name"] == b["name"] or key in done or b["name"] not in inv:
                    continue
                done.add(key)
                ia, ib = inv[a["name"]], inv[b["name"]]
                full = compare(ia, ib, layer_pairs="match")
                lp = sorted({(t.layer_a, t.layer_b) for t in full.terms})
                ra, rb = _rows(ia, ib)
                rec: dict[str, Any] = {"a": a["name"], "b": b["name"], "width": int(a["hidden"]),
                                       "kind": "same-family" if a["family"] == b["family"] else "cross-family",
                                       "m": len(ra), "layer_pairs": lp, "sub": {}}
                rec["sub"][str(len(ra))] = [[[t.term, t.cosine] for t in full.terms]]
                for size in SIZES:
                    if size >= len(ra):
                        continue
                    runs = []
                    for _ in range(draws):
                        pick = np.sort(rng.choice(len(ra), size=size, replace=False))
                        xa, xb = ra[pick], rb[pick]
                        runs.append([[t, term_cosine(ia.terms[(la, t)][np.ix_(xa, xa)],
                                                     ib.terms[(lb, t)][np.ix_(xb, xb)])]
                                     for la, lb in lp for t in TERMS])
                    rec["sub"][str(size)] = runs
                out.append(rec)
                log(f"  {a['name']:20s} {b['name']:20s} m={len(ra):5d} ICS {full.ics:+.4f}")
        del inv
    return out


def summarise(pairs: list[dict[str, Any]], kind: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Per subsample size m and term: mean, sd and count of the independent cosines (pairs of ``kind``, or
    all). Only the subsample sizes: every pair that shares more than m tokens contributes to size m."""
    acc: dict[str, dict[str, list[float]]] = {}
    for p in pairs:
        if kind is not None and p["kind"] != kind:
            continue
        for m, runs in p["sub"].items():
            if int(m) not in SIZES or int(m) == p["m"]:
                continue
            for run in runs:
                for term, c in run:
                    acc.setdefault(m, {t: [] for t in TERMS})[term].append(float(c))
    return {m: {t: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "n": len(v)} for t, v in d.items()}
            for m, d in sorted(acc.items(), key=lambda kv: int(kv[0])) if all(len(v) >= 6 for v in d.values())}


def fit(summaries: dict[str, dict[str, dict[str, dict[str, float]]]], widths: dict[str, int],
        ) -> dict[str, dict[str, float]]:
    """Per term: ``a`` (log sd against log m, one intercept per group: zoo and pair kind) and ``b`` (log of
    the intercepts against log width)."""
    out: dict[str, dict[str, float]] = {}
    groups = sorted(g for g in summaries if summaries[g])
    for t in TERMS:
        rows, ys = [], []
        for gi, g in enumerate(groups):
            for m, d in summaries[g].items():
                x = [0.0] * len(groups)
                x[gi] = 1.0
                rows.append([math.log(int(m)), *x])
                ys.append(math.log(d[t]["sd"]))
        coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
        icpt = {g: float(coef[1 + i]) for i, g in enumerate(groups)}
        b = float("nan")
        if len({widths[g] for g in groups}) >= 2:
            b = -float(np.polyfit([math.log(widths[g]) for g in groups], [icpt[g] for g in groups], 1)[0])
        out[t] = {"a": -float(coef[0]), "b": b, **{f"log_sd_at_m1[{g}]": icpt[g] for g in groups}}
    return out


def reference_m() -> int:
    """The most probe tokens any independent pair of the v1 null's calibration population shared
    (``docs/results/lineage.json``): the v1 spread is assigned to it, the conservative side."""
    d = json.loads((ROOT / "docs" / "results" / "lineage.json").read_text())
    return max(int(p["common_tokens"]) for p in d["pawprint"]["pairs"]
               if p["relation"] == "independent" and p["split"] == "calibration")


def calibrate(pairs: dict[str, list[dict[str, Any]]], nulls: dict[str, Any]) -> list[dict[str, Any]]:
    """False positives of each null on the zoos' independent pairs, per subsample size (K = 1)."""
    rows: list[dict[str, Any]] = []
    for z, ps in pairs.items():
        for label in [*(str(s) for s in SIZES), "all shared"]:
            for name, null in nulls.items():
                pv: list[float] = []
                for p in ps:
                    key = str(p["m"]) if label == "all shared" else label
                    for run in p["sub"].get(key, []):
                        pv.append(assess([(t, float(c)) for t, c in run], null, int(key)).p_value)
                if not pv:
                    continue
                k1, k5 = sum(x <= 0.01 for x in pv), sum(x <= 0.05 for x in pv)
                rows.append({"zoo": z, "m": label, "null": name, "n": len(pv),
                             "le01": f"{k1}/{len(pv)} ({100 * k1 / len(pv):.1f} %)",
                             "le05": f"{k5}/{len(pv)} ({100 * k5 / len(pv):.1f} %)",
                             "derived": sum(base_verdict(x, 1) == "derived" for x in pv)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="probe tokens per probe set (default 1024)")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "null_scaling.json"))
    ap.add_argument("--write-null", action="store_true", help="write verifier/data/null-zoo-v2.json")
    ap.add_argument("--reuse", action="store_true", help="reuse the scored pairs cached under out/null_scaling")
    args = ap.parse_args()
    t0 = time.time()
    pairs: dict[str, list[dict[str, Any]]] = {}
    widths: dict[str, int] = {}
    cache = ROOT / "out" / "null_scaling"
    cache.mkdir(parents=True, exist_ok=True)
    for name, zoo in ZOOS.items():
        raw = cache / f"pairs-{name.split()[0]}-n{args.n}-d{args.draws}-s{args.seed}.json"
        if args.reuse and raw.exists():
            pairs[name] = json.loads(raw.read_text())
        elif not (zoo / "lineage.json").exists():
            print(f"{name}: no zoo at {zoo} (build it: python -m benchmarks.lineage / the test fixtures); skipped")
            continue
        else:
            print(f"{name}: {zoo}")
            pairs[name] = score_zoo(zoo, args.n, args.draws, args.seed, print)
            raw.write_text(json.dumps(pairs[name]))
        widths[name] = pairs[name][0]["width"]
    summaries: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    group_width: dict[str, int] = {}
    for z, ps in pairs.items():
        for kind in ("same-family", "cross-family"):
            summaries[f"{z} {kind}"] = summarise(ps, kind)
            group_width[f"{z} {kind}"] = widths[z]
    exps = fit(summaries, group_width)
    for z, s in summaries.items():
        print(z)
        for m, d in s.items():
            print(f"  m={int(m):5d} " + "  ".join(f"{t}: mean {d[t]['mean']:+.4f} sd {d[t]['sd']:.4f}" for t in TERMS))
    for t, e in exps.items():
        print(f"{t}: sd ~ m^-{e['a']:.3f} d^-{e['b']:.3f}")
    v1 = load_null(DATA_DIR / "null-zoo-v1.json")
    ref_m = reference_m()
    v2 = null_with_scaling(v1, ref_m=ref_m, m_exponents={t: round(max(0.0, exps[t]["a"]), 4) for t in TERMS},
                           source=v1.source + f"; spread scaled by (min(m, {ref_m})/{ref_m})^-a per term, a fitted on "
                           f"{sum(len(p) for p in pairs.values())} independent zoo pairs subsampled to "
                           f"m = {SIZES[0]}..{args.n}, python -m benchmarks.fit_null_scaling --write-null")
    calibration = calibrate(pairs, {"v1": v1, "v2": v2})
    for row in calibration:
        print(f"  {row['zoo']:22s} m={row['m']:>10s} {row['null']}: p<=0.01 {row['le01']:>14s} "
              f"p<=0.05 {row['le05']:>14s} derived {row['derived']}")
    body = {"command": "python -m benchmarks.fit_null_scaling" + (" --write-null" if args.write_null else ""),
            "n": args.n, "draws": args.draws, "seed": args.seed, "widths": widths, "summaries": summaries,
            "exponents": exps, "seconds": round(time.time() - t0, 1), "calibration": calibration,
            "null_v2": v2.null_id, "ref_m": ref_m,
            "pairs": {z: [{k: v for k, v in p.items() if k != "sub"} for p in ps] for z, ps in pairs.items()}}
    Path(args.out).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    if args.write_null:
        path = DATA_DIR / "null-zoo-v2.json"
        path.write_text(v2.to_json())
        print(f"wrote {path} ({v2.null_id})")


if __name__ == "__main__":
    main()
