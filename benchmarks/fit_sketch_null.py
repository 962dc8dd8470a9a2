"""Fit the null that judges sketched submissions (issue 16), through the verifier's own comparison.

A verifier that asks for sketches (``verifier serve --sketch K``) compares each ``k x k`` sketch the owner sends
with the registered base's group sketched the same way (``protocol.terms.sketch_invariants``) and scores them
with ``verifier._ics.compare`` (the sketches centred and standardised, layers matched), so its null must be
fitted on exactly those scores: this script sketches the lineage zoo's models, scores every planned pair that
way, fits the null on the calibration population's independent pairs (``fit_null``, as the shipped full-term
null), and reports detection on every pair (calibration, held-out, laundered) under the fitted null. Full-term
scores are computed beside it for comparison.

    python -m benchmarks.fit_sketch_null [--k 256] [--zoo DIR] [--write-null]

``--zoo`` is the calibration zoo (default ``~/.cache/pawprint/sketch-zoo/default``, built by ``zoo.build`` when
absent; its held-out and laundered populations beside it as ``DIR-heldout`` and ``DIR-attacked``). With
``--write-null`` the null is written to ``verifier/data/null-zoo-sketch<K>-v1.json`` (then re-pin its digest in
``verifier/_pins.py``). Results: ``docs/results/sketch_null.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ZOO = Path.home() / ".cache" / "pawprint" / "sketch-zoo" / "default"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fit_sketch_null", description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--n", type=int, default=4096, help="probe tokens per set")
    p.add_argument("--zoo", type=Path, default=DEFAULT_ZOO)
    p.add_argument("--quick", action="store_true", help="build the quick zoo if absent (tests' scale)")
    p.add_argument("--write-null", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "sketch_null.md")
    args = p.parse_args(argv)

    from benchmarks.lineage.run import _pair, _Terms, comparable, evaluate, load_models, plan_pairs
    from owner import build_probe_set, load_vocabulary
    from owner._probes import DEFAULT_RULE
    from protocol.terms import sketch_invariants
    from verifier._calibration import fit_null, sketch_null_file
    from zoo.build import build_zoo

    started = time.time()
    cal, held, attacked = args.zoo, Path(f"{args.zoo}-heldout"), Path(f"{args.zoo}-attacked")
    build_zoo(cal, quick=args.quick)
    build_zoo(held, heldout=True, quick=args.quick)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    models = load_models(cal, held, attacked, log)
    by = {m.name: m for m in models}
    plan = plan_pairs(models)
    full_pairs, sketch_pairs = [], []
    comparison_id = ""
    for a in plan:
        probes = build_probe_set(load_vocabulary(by[a].path), n=args.n, rule=DEFAULT_RULE)
        terms = _Terms(by, "pawprint")
        ia = terms(a, probes)
        sa = sketch_invariants(ia, args.k)
        comparison_id = sa.group.comparison_id
        for b, relation, kind, split, ib in comparable(a, plan[a], probes, terms, log, "  "):
            full = _pair(ia, ib, a, b, relation, kind, split, "pawprint")
            sk = _pair(sa, sketch_invariants(ib, args.k), a, b, relation, kind, split, "pawprint")
            full_pairs.append(full)
            sketch_pairs.append(replace(sk, common_tokens=full.common_tokens))
            log(f"  {a:18s} {b:30s} {relation:11s} full ICS {full.ics:+.3f} | sketch ICS {sk.ics:+.3f}")
    method_id = ia.method_id
    nulls = {}
    doc: dict[str, Any] = {"command": "python -m benchmarks.fit_sketch_null " + " ".join(argv or sys.argv[1:]),
                           "k": args.k, "n": args.n, "zoo": str(cal), "modes": {}}
    for mode, pairs, mid in (("full", full_pairs, method_id), (f"sketch k={args.k}", sketch_pairs, comparison_id)):
        cal_scores = [q.scores for q in pairs if q.relation == "independent" and q.split == "calibration"]
        null = fit_null(cal_scores, mid, DEFAULT_RULE,
                        f"benchmarks.fit_sketch_null k={args.k} on {cal.name} ({len(cal_scores)} independent pairs)"
                        if mode != "full" else "full terms (comparison only)")
        nulls[mode] = null
        summary = evaluate(pairs, null)
        der = [q for q in pairs if q.relation == "derived"]
        ind = [q for q in pairs if q.relation == "independent"]
        doc["modes"][mode] = {
            "derived": len(der), "derived_called_derived": sum(q.verdict == "derived" for q in der),
            "independent": len(ind), "independent_called_derived": sum(q.verdict == "derived" for q in ind),
            "largest_derived_p": max(q.p for q in der), "smallest_independent_p": min(q.p for q in ind),
            "independent_at_p01": sum(q.p <= 0.01 for q in ind), "independent_at_p05": sum(q.p <= 0.05 for q in ind),
            "auc": summary["auc"], "null": json.loads(null.to_json()),
            "missed": [f"{q.a} / {q.b} ({q.kind}, p {q.p:.2e})" for q in der if q.verdict != "derived"],
        }
    doc["seconds"] = round(time.time() - started, 1)
    if args.write_null:
        path = sketch_null_file(args.k)
        path.write_text(nulls[f"sketch k={args.k}"].to_json(), encoding="utf-8")
        doc["null_file"] = str(path.relative_to(ROOT))
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    lines = [f"# The null for sketched submissions (issue 16): k = {args.k}", "",
             f"`{doc['command']}` ({doc['seconds']} s). Calibration zoo `{cal}` and its held-out and laundered "
             "populations; every pair scored through the verifier's comparison (`verifier._ics.compare` on "
             "`protocol.terms.sketch_invariants`), the null fitted on the calibration population's independent "
             "pairs. Derived at p <= 1e-6 (K = 1).", "",
             "| mode | derived called derived | independent called derived | independent at p <= 0.01 | at p <= 0.05 "
             "| largest derived p | smallest independent p | AUC | missed |", "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in doc["modes"].items():
        lines.append(f"| {mode} | {r['derived_called_derived']}/{r['derived']} | {r['independent_called_derived']}/"
                     f"{r['independent']} | {r['independent_at_p01']} | {r['independent_at_p05']} | "
                     f"{r['largest_derived_p']:.2e} | {r['smallest_independent_p']:.2e} | {r['auc']:.4f} | "
                     f"{'; '.join(r['missed']) or 'none'} |")
    lines += ["", "Null per term (mean, sd of an independent pair's score):", "", "| mode | " +
              " | ".join(nulls["full"].terms) + " |", "|---|" + "---|" * len(nulls["full"].terms)]
    for mode, null in nulls.items():
        lines.append(f"| {mode} | " + " | ".join(f"{t.mean:+.4f}, {t.sd:.4f}" for t in null.terms.values()) + " |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(args.out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
