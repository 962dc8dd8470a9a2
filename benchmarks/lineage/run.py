"""Calibrated lineage verdicts on the zoo: fit the null on the calibration population, evaluate on held-out models.

    python -m benchmarks.lineage            # builds/reuses out/demo/zoo and out/heldout; ~20-30 min on 2 cores

Populations (all trained here, see ``zoo/build.py``):

- *calibration* (``out/demo/zoo``): bases with seeds 0 and 1 per family and the derivatives of
  ``llama-base-s0``. The null is fitted on its independent pairs only; these derivatives are the ones the term
  design was tuned on (reported, marked "tuned").
- *held-out* (``out/heldout``, ``pawprint zoo build --heldout``): bases with seeds 2-4 per family and the same
  derivative kinds made from ``llama-base-s2`` with new training seeds, plus every function-preserving attack
  applied to its SFT derivative (laundering). Nothing here was used to fit or tune anything.

Pairs: every derivative with its base (derived); independent: every pair of bases, and every derivative
with the bases of its family outside its tree (the hard case: same architecture and data). For each pair: terms
on all layers, probe set built from the first model's vocabulary, layers matched
order-preservingly, then ``verifier._calibration.assess`` against the null of the same method. Reported per
pair: ICS, per-term score, combined z and p, verdict (one base compared, K=1). Overall: AUC of the combined z
(derived vs independent), true-positive rate at zero false positives, and the false-positive rate of the
held-out independent pairs at several nominal levels. Both methods (``pawprint`` and ``huref-2024``) in the same
run, each with its own null.

Writes ``docs/results/lineage.md`` and ``.json`` and the shipped null ``verifier/data/null-zoo-v1.json``
(pawprint method) and ``verifier/data/null-zoo-huref-v1.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from owner import build_probe_set, compute_invariants, load_vocabulary
from owner._probes import DEFAULT_RULE
from owner.errors import TokenizerError
from protocol import TERMS
from protocol import ProbeSpec as ProbeSet
from protocol.terms import InvariantSet
from verifier import compare
from verifier._calibration import DATA_DIR, NullModel, assess, base_verdict, fit_null
from zoo.attacks import ATTACKS, AttackNotApplicable, attack
from zoo.build import build_zoo

METHODS = ("pawprint", "huref-2024")
NULL_FILES = {"pawprint": DATA_DIR / "null-zoo-v1.json", "huref-2024": DATA_DIR / "null-zoo-huref-v1.json"}
LEVELS = (0.05, 0.01, 1e-3, 1e-6)


@dataclass
class Model:
    name: str
    path: Path
    family: str
    root: str  # the base it descends from (itself for a base)
    kind: str  # base, a derivative kind, or attack:<kind>
    population: str  # calibration | heldout


@dataclass
class Pair:
    a: str
    b: str
    relation: str  # derived | independent
    kind: str
    split: str  # calibration | tuned | heldout
    method: str
    ics: float
    terms: dict[str, float]
    layer_pairs: list[tuple[int, int]]
    common_tokens: int
    scores: list[tuple[str, float]] = field(repr=False)
    z: float = 0.0
    p: float = 1.0
    term_z: dict[str, float] = field(default_factory=dict)
    verdict: str = ""


def load_models(zoo: Path, heldout: Path, attacked: Path, log: Callable[[str], None]) -> list[Model]:
    models: list[Model] = []
    for population, root_dir in (("calibration", zoo), ("heldout", heldout)):
        entries = json.loads((root_dir / "lineage.json").read_text())["models"]
        by = {m["name"]: m for m in entries}
        for m in entries:
            r = m["name"]
            while by[r]["parent"] is not None:
                r = by[r]["parent"]
            models.append(Model(m["name"], root_dir / m["name"], m["family"], r, m["kind"], population))
    # Laundering: every function-preserving attack applied to the held-out SFT derivative.
    sft = next(m for m in models if m.population == "heldout" and m.kind == "sft")
    for kind in ATTACKS:
        dst = attacked / f"{sft.name}+{kind}"
        if not (dst / "config.json").exists():
            try:
                attack(sft.path, dst, kind, seed=7)
            except AttackNotApplicable as e:
                log(f"attack {kind}: not applicable to {sft.family} ({e})")
                shutil.rmtree(dst, ignore_errors=True)
                continue
        models.append(Model(dst.name, dst, sft.family, sft.root, f"attack:{kind}", "heldout"))
    return models


def plan_pairs(models: list[Model]) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per probe-set model (a base): (other model, relation, kind, split)."""
    by = {m.name: m for m in models}
    bases = [m for m in models if m.kind == "base"]
    todo: dict[str, list[tuple[str, str, str, str]]] = {}
    for m in models:
        if m.kind != "base":
            split = "tuned" if m.population == "calibration" else "heldout"
            todo.setdefault(m.root, []).append((m.name, "derived", m.kind, split))
    seen: set[frozenset[str]] = set()
    for a in bases:
        for b in models:
            if b.name == a.name or b.root == a.name:
                continue
            if b.kind == "base":
                key = frozenset((a.name, b.name))
                if key in seen:
                    continue
                seen.add(key)
            elif b.kind.startswith("attack:") or b.family != a.family:
                # Attacks' unrelated pairs repeat the SFT's; derivatives are scored against the bases of their
                # own family (the hard case), the other families' bases pair with their bases.
                continue
            kind = "same-family" if b.family == a.family else "cross-family"
            both_cal = a.population == "calibration" and by[b.name].population == "calibration"
            todo.setdefault(a.name, []).append((b.name, "independent", kind, "calibration" if both_cal else "heldout"))
    return todo


def score_pairs(models: list[Model], method: str, n: int, log: Callable[[str], None]) -> list[Pair]:
    by = {m.name: m for m in models}
    out: list[Pair] = []
    plan = plan_pairs(models)
    # Bases of one family share a tokenizer, hence a probe set: group by it and compute each model's terms once
    # per probe set (the cache is dropped between groups to bound memory).
    groups: dict[str, list[str]] = {}
    probe_sets = {}
    for a in plan:
        probes = build_probe_set(load_vocabulary(by[a].path), n=n, rule=DEFAULT_RULE)
        probe_sets[a] = probes
        groups.setdefault(probes.id, []).append(a)
    for names in groups.values():
        terms = _Terms(by, method)
        for a in names:
            out += _score_group(a, plan[a], probe_sets[a], terms, method, log)
    return out


class _Terms:
    """All-layer invariants of the zoo's models on one probe set, each computed once."""

    def __init__(self, by: dict[str, Model], method: str) -> None:
        self.by, self.method, self.cache = by, method, dict[str, InvariantSet]()

    def __call__(self, name: str, probes: ProbeSet) -> InvariantSet:
        if name not in self.cache:
            self.cache[name] = compute_invariants(self.by[name].path, probes=probes, layers="all",
                                                  method=self.method)  # type: ignore[arg-type]
        return self.cache[name]


def comparable(a: str, others: list[tuple[str, str, str, str]], probes: ProbeSet,
               terms: Callable[[str, ProbeSet], InvariantSet], log: Callable[[str], None],
               prefix: str = "") -> Iterator[tuple[str, str, str, str, InvariantSet]]:
    """Each planned ``(b, relation, kind, split)`` of ``a`` with ``b``'s terms on ``probes``. A model whose
    tokenizer cannot take the probe set is logged and left out, unless it is a derivative (then it is an error)."""
    for b, relation, kind, split in others:
        try:
            ib = terms(b, probes)
        except TokenizerError as e:
            if relation == "derived":
                raise
            log(f"{prefix}{a:22s} {b:28s} not comparable ({e})")
            continue
        yield b, relation, kind, split, ib


def _score_group(a: str, others: list[tuple[str, str, str, str]], probes: ProbeSet,
                 terms: Callable[[str, ProbeSet], InvariantSet], method: str, log: Callable[[str], None]) -> list[Pair]:
    out: list[Pair] = []
    ia = terms(a, probes)
    for b, relation, kind, split, ib in comparable(a, others, probes, terms, log, f"{method:10s} "):
        out.append(_pair(ia, ib, a, b, relation, kind, split, method))
        p = out[-1]
        log(f"{method:10s} {a:22s} {b:28s} {relation:11s} {split:11s} ICS {p.ics:+.3f} "
            + " ".join(f"{t}={p.terms[t]:+.3f}" for t in TERMS))
    return out


def _pair(ia: InvariantSet, ib: InvariantSet, a: str, b: str, relation: str, kind: str, split: str,
          method: str) -> Pair:
    r = compare(ia, ib, layer_pairs="match")
    pairs = sorted({(s.layer_a, s.layer_b) for s in r.terms})
    per_term = {t: float(np.mean([s.cosine for s in r.terms if s.term == t])) for t in TERMS}
    return Pair(a, b, relation, kind, split, method, r.ics, per_term, pairs, r.common_probe_tokens,
                [(s.term, s.cosine) for s in r.terms])


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a derived pair's z > an independent pair's z), ties counted half."""
    if not pos or not neg:
        return float("nan")
    p = np.asarray(pos)[:, None]
    q = np.asarray(neg)[None, :]
    return float(((p > q).sum() + 0.5 * (p == q).sum()) / (p.size * q.size))


def evaluate(pairs: list[Pair], null: NullModel) -> dict[str, Any]:
    for p in pairs:
        ev = assess(p.scores, null)
        p.z, p.p, p.term_z = ev.z, ev.p_value, ev.term_z
        p.verdict = base_verdict(ev.p_value, 1)
    der = [p for p in pairs if p.relation == "derived"]
    ind = [p for p in pairs if p.relation == "independent"]
    held_ind = [p for p in ind if p.split == "heldout"]
    max_ind = max(p.z for p in ind)
    return {
        "auc": auc([p.z for p in der], [p.z for p in ind]),
        "auc_ics": auc([p.ics for p in der], [p.ics for p in ind]),
        "tpr_at_zero_fp": sum(p.z > max_ind for p in der) / len(der),
        "derived_called_derived": sum(p.verdict == "derived" for p in der),
        "derived": len(der),
        "independent_called_derived": sum(p.verdict == "derived" for p in ind),
        "independent": len(ind),
        "heldout_independent": len(held_ind),
        "heldout_fpr": {f"{a:g}": sum(p.p <= a for p in held_ind) / len(held_ind) for a in LEVELS},
        "largest_derived_p": max(p.p for p in der),
        "smallest_heldout_independent_p": min(p.p for p in held_ind),
    }


def render(results: dict[str, tuple[NullModel, list[Pair], dict[str, Any]]], args: argparse.Namespace,
           seconds: float) -> str:
    lines = [
        "# Calibrated lineage verdicts on the zoo",
        "",
        f"Command: `python -m benchmarks.lineage --n {args.n}` ({seconds:.0f} s; {platform.machine()}, "
        f"2 cores; Python {platform.python_version()}). Probe rule {DEFAULT_RULE}, n = {args.n}; all layers, "
        "matched order-preservingly.",
        "",
        "Null fitted on the calibration zoo's independent pairs (`out/demo/zoo`: seeds 0-1 of four families); "
        "evaluated on held-out models never used to fit or tune (`out/heldout`: seeds 2-4, derivatives of "
        "`llama-base-s2` with new training seeds, and every applicable function-preserving attack applied to its "
        "SFT derivative). Test and verdict rule: `verifier/_calibration.py` (per-layer z against the null, mean "
        "per term, Stouffer's sum corrected for the between-term correlation, Student t with pairs-1 degrees of "
        "freedom; derived if p <= 1e-6, independent if p >= 0.01, one base compared).",
        "",
        "## Summary",
        "",
        "| method | null id | null pairs | AUC (z) | AUC (ICS) | TPR at 0 FP | derived called derived "
        "| independent called derived | largest derived p | smallest held-out independent p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, (null, _, s) in results.items():
        lines.append(
            f"| {method} | `{null.null_id[:20]}...` | {null.pairs} | {s['auc']:.4f} | {s['auc_ics']:.4f} | "
            f"{s['tpr_at_zero_fp']:.3f} | {s['derived_called_derived']}/{s['derived']} | "
            f"{s['independent_called_derived']}/{s['independent']} | {s['largest_derived_p']:.2e} | "
            f"{s['smallest_heldout_independent_p']:.2e} |")
    lines += ["", "False-positive rate of the held-out independent pairs (share with p <= level; nominal = level):",
              "", "| method | held-out pairs | " + " | ".join(f"p <= {a:g}" for a in LEVELS) + " |",
              "|---|---|" + "---|" * len(LEVELS)]
    for method, (_, _, s) in results.items():
        lines.append(f"| {method} | {s['heldout_independent']} | "
                     + " | ".join(f"{s['heldout_fpr'][f'{a:g}']:.3f}" for a in LEVELS) + " |")
    for method, (null, pairs, _) in results.items():
        lines += ["", f"## {method}: null", "", "| term | mean | sd | layer scores |", "|---|---|---|---|"]
        lines += [f"| {t} | {n.mean:+.4f} | {n.sd:.4f} | {n.samples} |" for t, n in null.terms.items()]
        lines += ["", f"## {method}: derivatives", "",
                  "| split | kind | pair | " + " | ".join(TERMS) + " | ICS | z | p | verdict | layers matched |",
                  "|---|---|---|" + "---|" * len(TERMS) + "---|---|---|---|---|"]
        for p in sorted((p for p in pairs if p.relation == "derived"), key=lambda p: (p.split, p.kind)):
            lines.append(f"| {p.split} | {p.kind} | {p.a} -> {p.b} | "
                         + " | ".join(f"{p.terms[t]:.3f}" for t in TERMS)
                         + f" | {p.ics:.3f} | {p.z:.1f} | {p.p:.1e} | {p.verdict} | "
                         + " ".join(f"{x}-{y}" for x, y in p.layer_pairs) + " |")
        lines += ["", f"## {method}: independent pairs, most similar first (top 12 of each split)", "",
                  "| split | kind | pair | " + " | ".join(TERMS) + " | ICS | z | p | verdict |",
                  "|---|---|---|" + "---|" * len(TERMS) + "---|---|---|---|"]
        for split in ("calibration", "heldout"):
            ind = sorted((p for p in pairs if p.relation == "independent" and p.split == split), key=lambda p: -p.z)
            for p in ind[:12]:
                lines.append(f"| {split} | {p.kind} | {p.a} vs {p.b} | "
                             + " | ".join(f"{p.terms[t]:.3f}" for t in TERMS)
                             + f" | {p.ics:.3f} | {p.z:.2f} | {p.p:.2e} | {p.verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--zoo", default="out/demo/zoo")
    ap.add_argument("--heldout", default="out/heldout")
    ap.add_argument("--attacked", default="out/heldout-attacked")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--out", default="docs/results/lineage.md")
    ap.add_argument("--no-null-files", action="store_true", help="do not (re)write the shipped null files")
    args = ap.parse_args()
    t0 = time.time()
    zoo, held = Path(args.zoo), Path(args.heldout)
    build_zoo(zoo)
    build_zoo(held, heldout=True)
    models = load_models(zoo, held, Path(args.attacked), print)
    results: dict[str, tuple[NullModel, list[Pair], dict[str, Any]]] = {}
    for method in METHODS:
        pairs = score_pairs(models, method, args.n, print)
        cal = [p.scores for p in pairs if p.relation == "independent" and p.split == "calibration"]
        ia = compute_invariants(zoo / "llama-base-s0", layers=[0], method=method)  # type: ignore[arg-type]
        null = fit_null(cal, ia.method_id, DEFAULT_RULE,
                        f"lineage zoo calibration population, {len(cal)} independent pairs, n={args.n}, "
                        "python -m benchmarks.lineage")
        results[method] = (null, pairs, evaluate(pairs, null))
        if not args.no_null_files:
            NULL_FILES[method].parent.mkdir(parents=True, exist_ok=True)
            NULL_FILES[method].write_text(null.to_json(), encoding="utf-8")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, args, time.time() - t0), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({
        m: {"null_id": null.null_id, "summary": s,
            "pairs": [{k: v for k, v in asdict(p).items() if k != "scores"} for p in pairs]}
        for m, (null, pairs, s) in results.items()}, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
