"""The verifier's exact comparison of one submission with its candidate bases at n = 4096 (2 layers x 3 terms,
layers matched as the verifier does): the previous arithmetic (every term of both sides standardised as a whole
float64 copy, the suspect's copies kept across bases: ``benchmarks.perf._before.compare_match``) against the
shipped one (``owner.compare``: row blocks centred on the fly, only the suspect's means and norms kept), in the
same run, on the same terms.

    python -m benchmarks.perf.compare --bases 4

Measured per variant: seconds per base (median over the bases; the first base pays for the suspect's cache, so
it is reported apart), and the peak of memory allocated during the comparisons (``tracemalloc``, which numpy
reports to; a separate pass, so that tracing does not slow the timed one), above the terms themselves. Done twice:
every probe token common to both sides, and the bases lacking 10 % of the tokens (the restricted-rows path). The
two arithmetics' cosines are checked to agree to 1e-9.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.perf._before import compare_match
from benchmarks.perf._common import MIB, RESULTS, loadavg, machine, machine_line, median, write_json
from benchmarks.perf.registry_scale import N, _inv, _mix, _terms


def _restricted(inv: Any, missing: float, seed: int) -> Any:
    """``inv`` without a random ``missing`` share of its probe tokens (as a model whose tokenizer lacks them)."""
    import dataclasses

    rng = np.random.default_rng(seed)
    keep = np.ones(N, dtype=bool)
    keep[rng.choice(N, int(missing * N), replace=False)] = False
    rows = np.flatnonzero(keep)
    terms = {k: np.ascontiguousarray(v[np.ix_(rows, rows)]) for k, v in inv.terms.items()}
    return dataclasses.replace(inv, present=tuple(bool(x) for x in keep), terms=terms)


def _now(suspect: Any, base: Any, cache: dict[Any, Any] | None) -> tuple[float, list[float]]:
    from verifier import compare

    result = compare(suspect, base, layer_pairs="match", a_cache=cache)
    return result.ics, [t.cosine for t in result.terms]


VARIANTS: dict[str, Callable[[Any, Any, dict[Any, Any] | None], tuple[float, list[float]]]] = {
    "before": compare_match, "now": _now}


def _run(suspect: Any, bases: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cosines: dict[str, list[float]] = {}
    for name, fn in VARIANTS.items():
        cache: dict[Any, Any] = {}
        times, got = [], []
        for b in bases:
            t0 = time.perf_counter()
            _, cos = fn(suspect, b, cache)
            times.append(time.perf_counter() - t0)
            got.extend(cos)
        cosines[name] = got
        tracemalloc.start()
        cache = {}
        for b in bases:
            fn(suspect, b, cache)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del cache
        out[name] = {"first_base_s": times[0], "next_bases_s": median(times[1:]), "peak_alloc_bytes": peak}
        print(f"  {name:>6}: first base {times[0]:.2f} s, next {out[name]['next_bases_s']:.2f} s per base, "
              f"peak allocated {peak / MIB:.0f} MiB (load {loadavg()[0]:.2f})", flush=True)
    diff = float(np.max(np.abs(np.array(cosines["before"]) - np.array(cosines["now"]))))
    assert diff < 1e-9, diff
    out["max_cosine_difference"] = diff
    out["speedup_next_bases"] = out["before"]["next_bases_s"] / out["now"]["next_bases_s"]
    out["speedup_first_base"] = out["before"]["first_base_s"] / out["now"]["first_base_s"]
    out["memory_ratio"] = out["before"]["peak_alloc_bytes"] / max(1, out["now"]["peak_alloc_bytes"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", type=int, default=4, help="candidate bases per submission (default 4, at least 2)")
    args = ap.parse_args(argv)
    if args.bases < 2:
        ap.error("--bases must be at least 2")
    doc: dict[str, Any] = {"command": f"python -m benchmarks.perf.compare --bases {args.bases}",
                           "machine": machine(), "loadavg": [loadavg()], "n": N, "bases": args.bases}
    print(machine_line(doc["machine"]), flush=True)
    base_terms = [_terms(100 + i) for i in range(args.bases)]
    suspect = _inv(_mix(base_terms[0], _terms(7), 0.7))
    bases = [_inv(t) for t in base_terms]
    del base_terms
    print(f"every token common ({N} x {N} terms):", flush=True)
    doc["all_tokens"] = _run(suspect, bases)
    print("the bases lack 10 % of the probe tokens:", flush=True)
    doc["tokens_missing"] = _run(suspect, [_restricted(b, 0.1, i) for i, b in enumerate(bases)])
    doc["loadavg"].append(loadavg())
    for case in ("all_tokens", "tokens_missing"):
        d = doc[case]
        print(f"{case}: {d['speedup_next_bases']:.2f}x faster per base after the first "
              f"({d['speedup_first_base']:.2f}x on the first), {d['memory_ratio']:.1f}x less memory allocated; "
              f"cosines agree to {d['max_cosine_difference']:.1e}")
    write_json(RESULTS / "perf_compare.json", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
