"""Comparison of a submission with every registered base, and the calibrated verdict.

For each base, each of its term groups is compared with each of the submission's groups on the same probe
set and method: ICS per term on the probe tokens both models have, with layers matched order-preservingly
(``verifier._ics.match_layers``: equal depths pair one to one; a depth-pruned or depth-upscaled model's layers pair
with the base layers they came from, and the receipt names each pair). The comparison with the strongest
evidence (smallest p-value) gives the base's match.

Scores are rounded to ``VERDICT_PLACES`` (three) decimals, written as the protocol's six-place strings
(``0.123000``), *before* anything else is computed from them, so the z-scores, p-values and verdicts can be
re-derived from the receipt and the null alone (``recheck_verdict``). Three places is what the verdict needs and
no more (issue 16): a rounding of at most 5e-4 per term moves the combined z of the shipped null by at most
``score_rounding_z_bound`` (0.08), and every calibrated p-value in the lineage zoo is further than that from the
thresholds (``python -m benchmarks.privacy``); six places let an owner who chooses its submissions read the
registered bases' terms back (docs/results/privacy.md).
The test and the verdict rule are ``verifier._calibration``'s (measured null, per-layer z, combined p with
dependence between terms accounted for, Bonferroni over the bases compared).

Pure logic: values in, values out. Nothing here reads files or keeps the submission's terms (``BaseSketches``
keeps the registered bases' sketches).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from protocol import INSUFFICIENT_EVIDENCE, Match, TermScoreRecord, format_score, parse_score
from protocol.terms import InvariantSet, sketch_invariants
from verifier._calibration import (
    DEFAULT_THRESHOLDS,
    NullError,
    NullModel,
    Thresholds,
    assess,
    base_verdict,
    format_p,
    format_z,
    overall_verdict,
)
from verifier._ics import IncomparableError, compare

# Decimal places of the scores a receipt or ``compare`` states (in the protocol's six-place spelling).
VERDICT_PLACES = 3
_VERDICT_QUANTUM = Decimal(1).scaleb(-VERDICT_PLACES)


class BaseSketches:
    """The registered bases' groups as public sketches (``protocol.terms.sketch_invariants``), made when a
    sketched submission first meets them and kept (the ``maxsize`` most recent in memory; with ``load`` and
    ``save``, in the data directory too), keyed by the base's entry, the probe set and the size: a base is
    sketched once, not once per submission (a 4,096-token group takes seconds)."""

    def __init__(self, maxsize: int = 64, load: Callable[[bytes, str, int], bytes | None] | None = None,
                 save: Callable[[bytes, str, int, bytes], None] | None = None) -> None:
        self.maxsize = maxsize
        self._load, self._save = load, save
        self._kept: OrderedDict[tuple[bytes, str, int], InvariantSet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, base: BaseModel, group: InvariantSet, k: int) -> InvariantSet:
        key = (base.entry, group.probes.id, k)
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        sketched = self._stored(base.entry, group, k)
        if sketched is None:
            sketched = sketch_invariants(group, k)  # outside the lock: seconds for a large base
            if self._save is not None:
                self._save(base.entry, group.probes.id, k, b"".join(
                    np.ascontiguousarray(sketched.terms[key_], dtype="<f4").tobytes()
                    for key_ in group.group.term_keys()))
        with self._lock:
            self._kept[key] = sketched
            while len(self._kept) > self.maxsize:
                self._kept.popitem(last=False)
        return sketched

    def _stored(self, entry: bytes, group: InvariantSet, k: int) -> InvariantSet | None:
        data = self._load(entry, group.probes.id, k) if self._load is not None else None
        order = group.group.term_keys()
        if data is None or len(data) != len(order) * k * k * 4:
            return None  # none kept, or not what this group's sketch is: made again
        flat = np.frombuffer(data, dtype="<f4").reshape(len(order), k, k)
        sketched_group = dataclasses.replace(group.group, sketch=k)
        return InvariantSet(sketched_group, dict(group.model), {key: flat[i] for i, key in enumerate(order)})


@dataclass(frozen=True)
class BaseModel:
    """A registered base as the comparison sees it: its identity and one invariant set per term group."""

    name: str
    entry: bytes
    vendor_key_id: str
    invariants: tuple[InvariantSet, ...]


def verdict_score(value: float) -> str:
    """A score rounded to ``VERDICT_PLACES`` (half-to-even from the exact binary value), in the protocol's
    six-place spelling."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return format_score(value)  # its error
    return format_score(float(Decimal(value).quantize(_VERDICT_QUANTUM, ROUND_HALF_EVEN)))


def score_rounding_z_bound(null: NullModel, places: int = VERDICT_PLACES) -> float:
    """The most that rounding every score to ``places`` decimals can move the combined z of ``assess`` under
    ``null``: each term's z moves by at most half a unit of the last place over its predictive spread, and the
    combined z is their sum over ``sqrt(sum R)`` (negative correlations clipped, as ``assess`` does)."""
    half = 0.5 * 10.0 ** -places
    shift = sum(half / (t.sd * math.sqrt(1.0 + 1.0 / null.pairs)) for t in null.terms.values())
    r = [[max(0.0, min(1.0, x)) for x in row] for row in null.corr]
    return shift / math.sqrt(sum(sum(row) for row in r))


def _scored(terms: Sequence[TermScoreRecord]) -> list[tuple[str, float]]:
    return [(t.term, float(parse_score(t.cosine))) for t in terms]


def _calibrated(match: Match, null: NullModel | None) -> Match:
    """``match`` with per-term z, combined z and p against ``null`` (verdict left for ``decide``)."""
    if null is None:
        return match
    try:
        ev = assess(_scored(match.terms), null, match.common_probe_tokens)
    except NullError:
        return match
    terms = tuple(dataclasses.replace(t, z=format_z(z)) for t, z in zip(match.terms, ev.layer_z, strict=True))
    return dataclasses.replace(match, terms=terms, z=format_z(ev.z), p_value=format_p(ev.p_value))


def compare_with_base(
    suspect: Sequence[InvariantSet], base: BaseModel, null: NullModel | None = None,
    suspect_cache: dict[Any, Any] | None = None, sketches: BaseSketches | None = None,
) -> Match | None:
    """The comparison of the submission's groups with ``base``'s that gives the strongest evidence of
    derivation, or ``None`` if no group of one can be compared with a group of the other. A sketched group of
    the submission is compared with the base's group sketched the same way (``sketches`` keeps them)."""
    best: Match | None = None
    best_key: tuple[float, float] | None = None
    for b in base.invariants:
        for s in suspect:
            if s.probes.id != b.probes.id or s.method_id != b.method_id:
                continue
            try:
                other = b
                if s.group.sketch and not b.group.sketch:
                    other = (sketches or BaseSketches(0)).get(base, b, s.group.sketch)
                result = compare(s, other, layer_pairs="match", a_cache=suspect_cache)
            except IncomparableError:
                continue
            terms = tuple(
                TermScoreRecord(layer=t.layer_a, base_layer=t.layer_b, term=t.term, cosine=verdict_score(t.cosine))
                for t in result.terms
            )
            ics = verdict_score(result.ics)
            min_term = min((t.cosine for t in terms), key=parse_score)
            m = _calibrated(Match(
                name=base.name, entry=base.entry, vendor_key_id=base.vendor_key_id, probe_set_id=b.probes.id,
                ics=ics, min_term=min_term, common_probe_tokens=result.common_probe_tokens,
                verdict="inconclusive", terms=terms,
            ), null if null is not None and null.method_id == s.group.comparison_id else None)
            key = (-float(m.p_value) if m.p_value is not None else -1.0, float(parse_score(ics)))
            if best_key is None or key > best_key:
                best_key, best = key, m
    return best


def decide(matches: Sequence[Match], thresholds: Thresholds = DEFAULT_THRESHOLDS,
           bases: int | None = None) -> list[Match]:
    """Each match's verdict from its p-value, with the number of bases considered (K: ``bases``, default the
    matches) for Bonferroni; a match without a p-value (no null for its method) stays inconclusive."""
    k = max(len(matches), bases or 0)
    return [dataclasses.replace(m, verdict="inconclusive" if m.p_value is None
                                else base_verdict(float(m.p_value), k, thresholds)) for m in matches]


def compare_with_bases(
    suspect: Sequence[InvariantSet], bases: Sequence[BaseModel], null: NullModel | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS, screened: int | None = None,
    log_indices: Mapping[bytes, int] | None = None, sketches: BaseSketches | None = None,
) -> list[Match]:
    """One decided match per comparable base, strongest evidence first, then best ICS, then the earliest entry
    in the log, then name (deterministic). ``screened``: how many bases a screen chose ``bases`` from (the
    Bonferroni count). ``log_indices``: each base's entry in the log by manifest digest, set as each match's
    ``log_index``; so a later registration of the same weights (a squatter's copy, whatever its name) never
    comes before the earliest, as in the report's headline (verifier._report)."""
    cache: dict[Any, Any] = {}  # the suspect's standardised terms, made once for every base
    matches = [m for m in (compare_with_base(suspect, b, null, cache, sketches) for b in bases) if m is not None]
    if log_indices is not None:
        matches = [dataclasses.replace(m, log_index=log_indices[m.entry]) for m in matches]
    matches = decide(matches, thresholds, screened)
    matches.sort(key=_receipt_order)
    return matches


def _receipt_order(m: Match) -> tuple[float, Decimal, int, str]:
    """Lowest p-value, then highest ICS, then earliest log entry (a match naming none last), then name."""
    return (float(m.p_value) if m.p_value is not None else 2.0, -parse_score(m.ics),
            m.log_index if m.log_index is not None else 1 << 64, m.name)


def verdict_of(matches: Sequence[Match]) -> str:
    return overall_verdict([m.verdict for m in matches])


def recheck_verdict(
    matches: Sequence[Match], verdict: str, rule: str, null: NullModel | None = None, null_id: str | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS, screened: int | None = None, evidence: Sequence[str] = (),
    compared: int | None = None,
) -> bool | None:
    """Whether every z, p and verdict follows from the receipt's scores under ``rule`` and ``null``; with
    ``evidence`` (the receipt's failed evidence checks) the overall verdict must be ``insufficient-evidence``.
    ``compared``: the receipt's count of bases compared, where it states fewer matches (a sketching verifier
    leaves out the independent ones): the rest count as independent, and in Bonferroni's K.

    ``None`` when it cannot be re-derived here: another rule, or the receipt names a null (``null_id``)
    other than the one given.
    """
    if rule != thresholds.rule or null is None or (null_id is not None and null_id != null.null_id):
        return None
    for m in matches:
        if m.terms and parse_score(m.min_term) != min(parse_score(t.cosine) for t in m.terms):
            return False
        stripped = dataclasses.replace(m, z=None, p_value=None,
                                       terms=tuple(dataclasses.replace(t, z=None) for t in m.terms))
        if _calibrated(stripped, null) != m:
            return False
    withheld = max(0, (compared or 0) - len(matches))
    if list(matches) != decide(matches, thresholds, max(screened or 0, compared or 0) or None):
        return False
    return verdict == (INSUFFICIENT_EVIDENCE if evidence else
                       overall_verdict([m.verdict for m in matches] + ["independent"] * withheld))
