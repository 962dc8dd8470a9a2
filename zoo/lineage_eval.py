"""Score the lineage zoo: every derivative against its parent, every unrelated pair, for a probe-set rule and a
fingerprint method. Used by ``benchmarks/zoo_lineage.py`` (committed results) and the lineage tests.

Procedure (the same for every pair): terms on all layers, probe set built from the first model's vocabulary by
the rule, layers matched order-preservingly (``match_layers``; equal depths match one to one), score per term =
mean cosine of that term over the matched layers, ICS = mean over all matched terms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owner import build_probe_set, compute_invariants, load_vocabulary
from owner.errors import TokenizerError
from protocol import TERMS
from verifier import compare, match_layers


@dataclass(frozen=True)
class PairScore:
    a: str
    b: str
    family_a: str
    family_b: str
    relation: str  # "derived" or "independent"
    kind: str  # the derivative's kind, or "same-family" / "cross-family"
    method: str
    rule: str
    ics: float
    terms: dict[str, float]
    layer_pairs: list[tuple[int, int]]
    common_tokens: int


def load_lineage(zoo: Path) -> list[dict[str, Any]]:
    return list(json.loads((zoo / "lineage.json").read_text())["models"])


def _root(name: str, by_name: dict[str, dict[str, Any]]) -> str:
    while by_name[name]["parent"] is not None:
        name = by_name[name]["parent"]
    return name


def score_zoo(
    zoo: Path, rule: str, method: str, n: int = 4096, log: Callable[[str], None] | None = None
) -> list[PairScore]:
    """Every (parent, child) pair and every (base, unrelated model) pair of the zoo."""
    models = load_lineage(zoo)
    by_name = {m["name"]: m for m in models}
    # Which pairs to score, grouped by the model whose vocabulary gives the probe set (its first member).
    todo: dict[str, list[tuple[str, str, str]]] = {}
    for m in models:
        if m["parent"] is not None:
            todo.setdefault(m["parent"], []).append((m["name"], "derived", m["kind"]))
    for base in [m["name"] for m in models if m["parent"] is None]:
        for m in models:
            if _root(m["name"], by_name) != base:
                kind = "same-family" if m["family"] == by_name[base]["family"] else "cross-family"
                todo.setdefault(base, []).append((m["name"], "independent", kind))

    out: list[PairScore] = []
    for a, others in todo.items():  # one probe set and one reference invariant set in memory at a time
        probes = build_probe_set(load_vocabulary(zoo / a), n=n, rule=rule)
        ia = compute_invariants(zoo / a, probes=probes, layers="all", method=method)  # type: ignore[arg-type]
        for b, relation, kind in others:
            try:
                ib = compute_invariants(zoo / b, probes=probes, layers="all", method=method)  # type: ignore[arg-type]
            except TokenizerError as e:
                if relation == "derived":
                    raise
                # Too few common probe tokens to compare at all: unrelated by construction, not scored.
                if log:
                    log(f"{method:10s} {rule:13s} {a:18s} {b:18s} {relation:11s} not comparable ({e})")
                continue
            pairs = match_layers(ia, ib)
            r = compare(ia, ib, layer_pairs=pairs)
            per_term = {t: sum(s.cosine for s in r.terms if s.term == t) / len(pairs) for t in TERMS}
            if log:
                log(f"{method:10s} {rule:13s} {a:18s} {b:18s} {relation:11s} ICS {r.ics:+.3f}")
            out.append(PairScore(a, b, by_name[a]["family"], by_name[b]["family"], relation, kind, method, rule,
                                 r.ics, per_term, pairs, r.common_probe_tokens))
    return out
