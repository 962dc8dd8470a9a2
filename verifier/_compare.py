"""Comparison of a submission with every registered base, and the provisional verdict rule.

For each base, each of its term groups is compared (``owner.compare``: ICS per term and layer on the probe
tokens both models have) with the submission's group on the same probe set and method; the best group
gives the base's scores. Scores are rounded to the protocol's decimal strings *before* the verdict is taken,
so the verdict can be re-derived from the receipt alone.

**Provisional verdict rule** (``VERDICT_RULE``; it will be replaced by calibrated verdicts against a
measured null distribution, with z-scores and p-values, and the rule id will change with it):

- a base is ``derived`` if ICS >= 0.5 and every term's cosine >= 0.3;
- ``independent`` if ICS < 0.2;
- ``inconclusive`` otherwise;
- overall: ``derived`` if any base is derived, ``independent`` if at least one base was compared and every
  compared base is independent, ``inconclusive`` otherwise (including when no base could be compared).

Pure logic: values in, values out. Nothing here reads files or keeps the submission's terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from owner import IncomparableError, InvariantSet, compare
from protocol import Match, TermScoreRecord, format_score, parse_score

DERIVED_ICS = Decimal("0.5")
DERIVED_MIN_TERM = Decimal("0.3")
INDEPENDENT_ICS = Decimal("0.2")
VERDICT_RULE = (
    "provisional-1(per base: derived if ics>=0.500000 and min_term>=0.300000, independent if ics<0.200000, "
    "else inconclusive; overall: any derived -> derived, all compared independent -> independent, "
    "else inconclusive)"
)


@dataclass(frozen=True)
class BaseModel:
    """A registered base as the comparison sees it: its identity and one invariant set per term group."""

    name: str
    entry: bytes
    vendor_key_id: str
    invariants: tuple[InvariantSet, ...]


def base_verdict(ics: Decimal, min_term: Decimal) -> str:
    if ics >= DERIVED_ICS and min_term >= DERIVED_MIN_TERM:
        return "derived"
    if ics < INDEPENDENT_ICS:
        return "independent"
    return "inconclusive"


def overall_verdict(matches: Sequence[Match]) -> str:
    verdicts = [m.verdict for m in matches]
    if "derived" in verdicts:
        return "derived"
    if verdicts and all(v == "independent" for v in verdicts):
        return "independent"
    return "inconclusive"


def compare_with_base(suspect: Sequence[InvariantSet], base: BaseModel) -> Match | None:
    """The best-scoring comparison of the submission's groups with ``base``'s, or ``None`` if no group of
    one can be compared with a group of the other (other probe sets or methods, too few common tokens)."""
    best: Match | None = None
    best_key: tuple[Decimal, Decimal] | None = None
    for b in base.invariants:
        for s in suspect:
            if s.probes.id != b.probes.id or s.method_id != b.method_id:
                continue
            try:
                result = compare(s, b)
            except IncomparableError:
                continue
            terms = tuple(
                TermScoreRecord(layer=t.layer_a, base_layer=t.layer_b, term=t.term, cosine=format_score(t.cosine))
                for t in result.terms
            )
            ics = format_score(result.ics)
            min_term = min((t.cosine for t in terms), key=parse_score)
            key = (parse_score(ics), parse_score(min_term))
            if best_key is None or key > best_key:
                best_key = key
                best = Match(
                    name=base.name, entry=base.entry, vendor_key_id=base.vendor_key_id, probe_set_id=b.probes.id,
                    ics=ics, min_term=min_term, common_probe_tokens=result.common_probe_tokens,
                    verdict=base_verdict(*key), terms=terms,
                )
    return best


def compare_with_bases(suspect: Sequence[InvariantSet], bases: Sequence[BaseModel]) -> list[Match]:
    """One match per comparable base, best ICS first (ties by name)."""
    matches = [m for m in (compare_with_base(suspect, b) for b in bases) if m is not None]
    matches.sort(key=lambda m: (-parse_score(m.ics), m.name))
    return matches


def recheck_verdict(matches: Sequence[Match], verdict: str, rule: str) -> bool | None:
    """Whether ``verdict`` and each match's verdict follow from the scores under ``rule``; ``None`` when the
    rule is not the one this verifier knows (an auditor then cannot re-derive it here)."""
    if rule != VERDICT_RULE:
        return None
    for m in matches:
        if m.verdict != base_verdict(parse_score(m.ics), parse_score(m.min_term)):
            return False
        if m.terms and parse_score(m.min_term) != min(parse_score(t.cosine) for t in m.terms):
            return False
    return verdict == overall_verdict(matches)
