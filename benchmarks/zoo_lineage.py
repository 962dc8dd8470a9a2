"""Lineage separation on the zoo: derivatives vs unrelated pairs, per term, both methods, every probe rule.

    python -m benchmarks.zoo_lineage --zoo out/demo/zoo --out docs/results/zoo_lineage.md

Builds the default zoo first if it is not there (a few minutes on 2 cores; reused afterwards).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from owner._probes import PROBE_RULES
from protocol import TERMS
from zoo.build import build_zoo
from zoo.lineage_eval import PairScore, score_zoo

METHODS = ("pawprint", "huref-2024")


def _margin(scores: list[PairScore], same_family: bool = True) -> tuple[float, float, float]:
    """(ICS margin, worst per-term margin, largest independent ICS). With ``same_family`` the independent pairs
    are those that involve a family the derivatives belong to (the question a verdict on them faces)."""
    der = [s for s in scores if s.relation == "derived"]
    fams = {s.family_a for s in der}
    ind = [s for s in scores if s.relation == "independent" and (not same_family or {s.family_a, s.family_b} & fams)]
    ics_gap = min(s.ics for s in der) - max(s.ics for s in ind)
    term_gap = min(min(s.terms[t] for s in der) - max(s.terms[t] for s in ind) for t in TERMS)
    return ics_gap, term_gap, max(s.ics for s in ind)


def render(
    results: dict[tuple[str, str], list[PairScore]], zoo: Path, seconds: float, default_rule: str,
    out: Path = Path("docs/results/zoo_lineage.md"), extra: str = "",
) -> str:
    lines = [
        "# Lineage separation on the zoo",
        "",
        f"Command: `python -m benchmarks.zoo_lineage --zoo {zoo} {extra}--out {out}` "
        f"({seconds:.0f} s on 2 cores). Zoo: `pawprint zoo build` default (trained models, see its lineage.json).",
        "",
        "Each pair: terms on all layers, probe set built from the first model's vocabulary, "
        "layers matched order-preservingly; a term's score is its mean cosine over the matched layers. "
        "*Derived*: every model against its parent. *Independent*: every base against every model outside its "
        "lineage tree (same family = same architecture and data, other seed; cross family = other architecture).",
        "",
        "## Probe-set rules",
        "",
        "Margin = smallest derived score minus largest independent score (positive: perfectly separated). "
        "Rules are compared with the pawprint method; the published form is scored with the chosen rule.",
        "",
        "Columns *(llama)*: unrelated pairs involving the derivatives' family (llama); *(all)*: every unrelated "
        "pair of the zoo.",
        "",
        "| rule | method | ICS margin (llama) | per-term margin (llama) | largest independent ICS (llama) "
        "| ICS margin (all) | per-term margin (all) | largest independent ICS (all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (rule, method), scores in sorted(results.items()):
        g, tg, mx = _margin(scores)
        ga, tga, mxa = _margin(scores, same_family=False)
        lines.append(f"| {rule} | {method} | {g:+.3f} | {tg:+.3f} | {mx:.3f} | {ga:+.3f} | {tga:+.3f} | {mxa:.3f} |")
    best = max((r for r, m in results if m == "pawprint"), key=lambda r: _margin(results[(r, "pawprint")])[1])
    lines += ["", f"Largest per-term margin (llama) with the pawprint method: **{best}**. Tables below: rule "
              f"**{default_rule}**. When n is at least the number of qualifying plain-word tokens, words-hash-v1 "
              "and rare-ids-v1 select the same set (in another order) and score identically.", ""]
    for method in METHODS:
        if (default_rule, method) not in results:
            continue
        scores = results[(default_rule, method)]
        lines += [f"## {method}, rule {default_rule}: derivatives (smallest score per kind)", "",
                  "| kind | pair | " + " | ".join(TERMS) + " | ICS | layers matched |",
                  "|---|---|" + "---|" * len(TERMS) + "---|---|"]
        for s in [s for s in scores if s.relation == "derived"]:
            lines.append(f"| {s.kind} | {s.a} -> {s.b} | " + " | ".join(f"{s.terms[t]:.3f}" for t in TERMS)
                         + f" | {s.ics:.3f} | {' '.join(f'{a}-{b}' for a, b in s.layer_pairs)} |")
        lines += ["", f"## {method}, rule {default_rule}: largest independent score per family", "",
                  "| family | kind | " + " | ".join(TERMS) + " | ICS | pairs |",
                  "|---|---|" + "---|" * len(TERMS) + "---|---|"]
        ind = [s for s in scores if s.relation == "independent"]
        for fam in sorted({s.family_a for s in ind}):
            for kind in ("same-family", "cross-family"):
                group = [s for s in ind if s.family_a == fam and s.kind == kind]
                if not group:
                    continue
                lines.append(f"| {fam} | {kind} | " + " | ".join(f"{max(s.terms[t] for s in group):.3f}" for t in TERMS)
                             + f" | {max(s.ics for s in group):.3f} | {len(group)} |")
        der = [s for s in scores if s.relation == "derived"]
        lines += ["", f"Smallest derived: ICS {min(s.ics for s in der):.3f}; per term "
                  + ", ".join(f"{t} {min(s.terms[t] for s in der):.3f}" for t in TERMS)
                  + f". Largest independent: ICS {max(s.ics for s in ind):.3f}; per term "
                  + ", ".join(f"{t} {max(s.terms[t] for s in ind):.3f}" for t in TERMS) + ".", ""]
    return "\n".join(lines)


def _extra(args: argparse.Namespace) -> str:
    return (f"--n {args.n} " if args.n != 4096 else "") + ("--no-huref " if args.no_huref else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zoo", default="out/demo/zoo")
    ap.add_argument("--out", default="docs/results/zoo_lineage.md")
    ap.add_argument("--rules", default=",".join(PROBE_RULES))
    ap.add_argument("--n", type=int, default=4096, help="probe tokens per set (fewer than qualify makes rules differ)")
    ap.add_argument("--no-huref", action="store_true", help="compare the rules only")
    ap.add_argument("--from-json", default=None, help="re-render a previous run's JSON instead of scoring")
    ap.add_argument("--seconds", type=float, default=0.0, help="with --from-json: that run's duration")
    args = ap.parse_args()
    zoo = Path(args.zoo)
    out = Path(args.out)
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        loaded = {
            (k.split("/")[0], k.split("/")[1]): [
                PairScore(**{**s, "layer_pairs": [tuple(p) for p in s["layer_pairs"]]}) for s in v
            ]
            for k, v in raw.items()
        }
        chosen = next((r for r, m in loaded if m == "huref-2024"), next(iter(loaded))[0])
        out.write_text(render(loaded, zoo, args.seconds, chosen, out, _extra(args)), encoding="utf-8")
        return
    t0 = time.time()
    build_zoo(zoo)
    rules = args.rules.split(",")
    # Rules are compared with the pawprint method; the published form is scored with the chosen rule.
    results = {(rule, "pawprint"): score_zoo(zoo, rule, "pawprint", n=args.n, log=print) for rule in rules}
    best = max(rules, key=lambda r: _margin(results[(r, "pawprint")])[1])
    if not args.no_huref:
        results[(best, "huref-2024")] = score_zoo(zoo, best, "huref-2024", n=args.n, log=print)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, zoo, time.time() - t0, best, out, _extra(args)), encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps({f"{r}/{m}": [asdict(s) for s in v] for (r, m), v in results.items()}, indent=1), encoding="utf-8"
    )
    print(f"wrote {out}; best rule {best}")


if __name__ == "__main__":
    main()
