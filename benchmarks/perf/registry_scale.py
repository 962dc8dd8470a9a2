"""Answering one submission against a 10,000-base registry: the screen (``verifier._screen``) then exact ICS on
its top-k, against exact comparison with every base (extrapolated from timed comparisons).

    python -m benchmarks.perf.registry_scale --bases 10000 --k 16

Terms are n = 4096 (the default probe set), 2 layers x 3 terms. A handful of bases have full synthetic terms
(low rank plus noise, like real terms: token-token structure): the true base of each suspect and same-data
"siblings" correlated with it (ICS about 0.15 with the base). The other bases are unrelated models whose
sketches are drawn directly (independent standard normal entries at the sampled positions, which is what an
unrelated model's standardised terms give there); materialising 10,000 x 384 MiB of terms is exactly what the
screen exists to avoid. Suspects are derived from the true base at several strengths (ICS with it from about
0.2 to 0.9).

Measured: sketching a base (once, when it is registered), the index's memory, a query (sketch the suspect, score
every base, top-k), exact ``owner.compare`` per base (median of a few), reading one base's terms back from disk
(384 MiB, cold and warm), and whether each suspect's true base is among the candidates with its estimate next
to its exact ICS. Exact comparison against every base = N x (read + compare), and N x 384 MiB held or re-read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.perf._common import GIB, MIB, OUT, RESULTS, evict, loadavg, machine, machine_line, median, write_json

N = 4096
RANK = 64
LAYERS = (20, 21)


def _probes() -> Any:
    from protocol import ProbeSpec as ProbeSet

    return ProbeSet("perf-synthetic", 1, "synthetic", tuple(f"▁tok{i:05d}" for i in range(N)))


def _terms(seed: int) -> dict[tuple[int, str], np.ndarray]:
    from protocol import TERMS

    rng = np.random.default_rng(seed)
    out = {}
    for layer in LAYERS:
        for t in TERMS:
            u = rng.standard_normal((N, RANK), dtype=np.float32)
            v = rng.standard_normal((N, RANK), dtype=np.float32)
            m = u @ v.T
            m += 2.0 * rng.standard_normal((N, N), dtype=np.float32)
            out[(layer, t)] = m
    return out


def _mix(a: dict[tuple[int, str], np.ndarray], b: dict[tuple[int, str], np.ndarray], w: float) -> dict[
        tuple[int, str], np.ndarray]:
    def z(m: np.ndarray) -> np.ndarray:
        return (m - m.mean()) / m.std()

    return {k: (w * z(a[k]) + (1 - w) * z(b[k])).astype(np.float32) for k in a}


def _inv(terms: dict[tuple[int, str], np.ndarray]) -> Any:
    from owner._invariants import METHOD_IDS
    from protocol.terms import InvariantSet

    return InvariantSet.create(method="pawprint", method_id=METHOD_IDS["pawprint"], probes=_probes(),
                               present=(True,) * N, layers=LAYERS, model={}, terms=terms)


def run(n_bases: int, k: int, samples: int, siblings: int) -> dict[str, Any]:
    from owner._invariants import METHOD_IDS
    from verifier import compare
    from verifier._screen import SLOTS, ScreenIndex, Sketch, SketchSpec, sketch

    spec = SketchSpec(samples=samples)
    index = ScreenIndex(spec)
    probe_id = _probes().id
    method_id = METHOD_IDS["pawprint"]
    doc: dict[str, Any] = {"bases": n_bases, "k": k, "n": N, "sketch": spec.id, "loadavg": [loadavg()]}

    # the bases with full terms: the true base and its same-data siblings
    real: dict[str, Any] = {}
    t_sketch = []
    true_terms = _terms(1)
    real["base-true"] = _inv(true_terms)
    for s in range(siblings):
        real[f"base-sibling-{s}"] = _inv(_mix(true_terms, _terms(100 + s), 0.15))
    for key, inv in real.items():
        t0 = time.perf_counter()
        index.add_sketch(key, sketch(inv, spec))
        t_sketch.append(time.perf_counter() - t0)
    # the unrelated bases: their sketches drawn directly
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    for b in range(n_bases - len(real)):
        v = rng.standard_normal((SLOTS, samples), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        index.add_sketch(f"base-{b:05d}", Sketch(probe_id, method_id, v, np.ones(SLOTS, dtype=bool)))
    doc["index_fill_s"] = time.perf_counter() - t0
    doc["sketch_one_base_s"] = median(t_sketch)
    doc["index_bytes"] = index.nbytes()
    doc["index_bytes_per_base"] = index.nbytes() / len(index)
    doc["loadavg"].append(loadavg())

    # one base's terms on disk, as the registry keeps them: reading them back
    blob = OUT / "registry-scale-blob.npy"
    np.save(blob, np.stack([real["base-true"].term(la, t) for la, t in sorted(real["base-true"].terms)]))
    evict([blob])
    t0 = time.perf_counter()
    np.load(blob)
    read_cold = time.perf_counter() - t0
    read_warm = min(_timed(lambda: np.load(blob)) for _ in range(2))
    blob.unlink()
    doc["blob_bytes"] = 6 * N * N * 4
    doc["read_blob_cold_s"], doc["read_blob_warm_s"] = read_cold, read_warm

    suspects: list[dict[str, Any]] = []
    compare_times: list[float] = []
    fast_times: list[float] = []
    for w in (0.2, 0.5, 0.9):
        inv = _inv(_mix(true_terms, _terms(int(1000 * w)), w))
        t0 = time.perf_counter()
        sk = sketch(inv, spec)
        t_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        keys, est = index.scores(sk)
        order = np.argsort(-est)[:k]
        t_score = time.perf_counter() - t0
        cands = [str(keys[i]) for i in order]
        exact: dict[str, float] = {}
        units = _units(inv)
        for key in cands:
            if key in real:
                t0 = time.perf_counter()
                exact[key] = compare(inv, real[key]).ics
                compare_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                fast = _ics_prestandardised(units, real[key])
                fast_times.append(time.perf_counter() - t0)
                assert abs(fast - exact[key]) < 1e-4, (fast, exact[key])
        rank = cands.index("base-true") + 1 if "base-true" in cands else None
        names = [str(x) for x in keys]
        unrelated = [float(e) for x, e in zip(names, est, strict=True) if not x.startswith(("base-true", "base-sib"))]
        suspects.append({
            "weight": w, "sketch_s": t_s, "score_all_s": t_score, "true_base_rank": rank,
            "true_estimate": float(est[names.index("base-true")]), "true_exact_ics": exact.get("base-true"),
            "best_unrelated_estimate": max(unrelated),
            "siblings_exact_ics": {x: v for x, v in exact.items() if x.startswith("base-sibling")},
        })
        print(f"  suspect w={w}: true base rank {rank}, estimate {suspects[-1]['true_estimate']:.3f} vs exact "
              f"{exact.get('base-true')}, query {t_s + t_score:.3f} s, load {loadavg()[0]:.2f}", flush=True)
    doc["suspects"] = suspects
    doc["compare_one_base_s"] = median(compare_times)
    doc["compare_one_base_prestandardised_s"] = median(fast_times)
    doc["loadavg"].append(loadavg())

    q = median([s["sketch_s"] + s["score_all_s"] for s in suspects])
    per_base_exact = doc["compare_one_base_s"] + read_warm
    doc["screened_answer_s"] = q + k * per_base_exact
    doc["screened_answer_cold_s"] = q + k * (doc["compare_one_base_s"] + read_cold)
    doc["exact_all_s_extrapolated"] = n_bases * per_base_exact
    doc["exact_all_cold_s_extrapolated"] = n_bases * (doc["compare_one_base_s"] + read_cold)
    doc["exact_all_bytes"] = n_bases * doc["blob_bytes"]
    doc["speedup"] = doc["exact_all_s_extrapolated"] / doc["screened_answer_s"]
    fast = doc["compare_one_base_prestandardised_s"] + read_warm
    doc["screened_answer_prestandardised_s"] = q + k * fast
    doc["exact_all_prestandardised_s_extrapolated"] = n_bases * fast
    doc["query_s"] = q
    return doc


def _units(inv: Any) -> dict[tuple[int, str], np.ndarray]:
    """The suspect's terms standardised and scaled to unit norm once (every token present here, so no rows are
    dropped), float32: what ``owner.compare`` recomputes, in float64, for every base."""
    out = {}
    for key, m in inv.terms.items():
        z = m.astype(np.float32).ravel()
        z = z - np.float32(z.mean(dtype=np.float64))
        out[key] = z / np.float32(np.linalg.norm(z))
    return out


def _ics_prestandardised(units: dict[tuple[int, str], np.ndarray], base: Any) -> float:
    """ICS against ``base`` with the suspect's unit terms given (the base's could be stored the same way)."""
    cos = []
    for key, u in units.items():
        b = base.terms[key].ravel()
        b = b - np.float32(b.mean(dtype=np.float64))
        cos.append(float(u @ b) / float(np.linalg.norm(b)))
    return float(np.mean(cos))


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bases", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--siblings", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    m = machine()
    print(machine_line(m))
    doc = run(args.bases, args.k, args.samples, args.siblings)
    doc["machine"] = m
    doc["command"] = " ".join(["python -m benchmarks.perf.registry_scale", *sys.argv[1:]])
    doc["seconds"] = time.perf_counter() - t0
    write_json(args.out or RESULTS / "perf_registry_scale.json", doc)
    print(json.dumps({k: v for k, v in doc.items() if k not in ("machine", "suspects")}, indent=1))
    print(f"index {doc['index_bytes'] / MIB:.0f} MiB; exact-all would hold {doc['exact_all_bytes'] / GIB:.0f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
