"""The null refitted from the registry's own independent bases, and its leave-one-base-out calibration check.

The shipped null (``verifier/data/null-zoo-v2.json``) was fitted once on zoo models. A registry that holds real
bases holds its own calibration population: two vendors' bases are independent by registration. This module
scores every pair of registered bases with the comparison the service makes (``compare_with_base``: the later
registration as the submission, the earlier as the base; same probe set and method, layers matched, scores
rounded as a receipt states them), keeps the independent ones and fits a v2 null on them (``refit``); when the
current null is a v3 one (the shipped default), it keeps its sampling spread and refits the floor, the mean and
the between-term correlation on them (``verifier._calibration.fit_floor``).

**Which pairs count** (``score_base_pairs``), in log order:

- *incomparable*: the two bases share no probe set and method (terms are computed on a whole probe set, so a
  pair can only be scored where both bases brought groups on one), or the current null has no term for them;
- *excluded, derived*: the pair's verdict under the current null is ``derived`` with K = 1 (``p <= derived_p``:
  the liberal side, so that a squatter's derivative registered as a base is caught), or the two registrations
  are linked by the log (same weight commitment or a term digest, ``BaseEntry.linked_to``). The later base of
  such a pair is *dropped*: its pairs with every other base repeat the earlier one's and are excluded too, so one
  lineage is counted once;
- *independent*: every other pair. Only these are fitted.

**The fit** (``fit_registry_null``): ``ref_m`` is the most probe tokens any fitted pair shared (above it the
spread is not narrowed, as for the shipped null). Per term, the mean is the mean of the pairs' layer cosines
weighted by their inverse variance under the exponent (``(m / ref_m) ** 2a``; the plain mean when all pairs share
one ``m``); each cosine's deviation from it is rescaled to ``ref_m`` by the overlap exponent,
``mean + (c - mean) * (m / ref_m) ** a_t``, and ``fit_null`` fits mean, spread and between-term correlation on the
rescaled cosines. **The exponent rule**: the per-term exponents ``a_t`` are kept from the current null (the
shipped ones: fitted on zoo pairs subsampled to m = 64..1024) unless the population has at least
``EXPONENT_MIN_PAIRS`` independent pairs and, within one probe set, shared probe tokens spanning at least a factor
``EXPONENT_MIN_SPAN``; then each ``a_t`` is the maximum-likelihood slope of the spread against ``m``
(``sd ~ m ** -a``, one mean and spread per probe set, profile likelihood on a grid of step 0.001 in [0, 2]).
Between probe sets ``m`` moves with the population (other tokenizers, other models), so that variation is not used;
a registry whose pairs share one ``m`` per probe set tells nothing about the exponent.

**Minimum**: ``MIN_PAIRS`` independent pairs (an operator may lower it, never below ``fit_null``'s 3). The t
distribution of the test has ``pairs - 1`` degrees of freedom, so a null from few pairs has heavy tails: it is
conservative, not precise, and its pairs are not independent of one another (each base is in several).

**The calibration check** (``leave_one_out``): for each base, the null is refitted without any pair of that
base (same rules) and each of the base's independent pairs is tested against it (K = 1); each pair is thus tested
twice, once with each of its bases left out. The fractions at ``p <= 0.01`` and ``p <= 0.05`` are reported beside
the nominal 1 % and 5 %, and beside the same pairs' p under the current null (which was not fitted on them).
A base whose removal leaves fewer than 3 pairs is not tested (and is counted as such).

Pure logic: values in, values out; nothing here reads files. Deterministic: same bases, same null, same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol import TERMS, parse_score
from verifier._calibration import (
    DEFAULT_THRESHOLDS,
    NullError,
    NullModel,
    ScoredTerm,
    Thresholds,
    assess,
    base_verdict,
    fit_floor,
    fit_null,
    null_with_scaling,
)
from verifier._compare import BaseModel, compare_with_base

MIN_PAIRS = 10  # independent base pairs a refit needs by default (the CLI's --min-pairs)
FIT_MIN_PAIRS = 3  # fit_null's own minimum: below it nothing is fitted, whatever --min-pairs says
EXPONENT_MIN_PAIRS = 30  # independent pairs needed to refit the overlap exponents ...
EXPONENT_MIN_SPAN = 4.0  # ... whose shared probe tokens span at least this factor (max m / min m)
_EXPONENT_GRID = np.linspace(0.0, 2.0, 2001)

INDEPENDENT = "independent"
EXCLUDED = "excluded"
INCOMPARABLE = "incomparable"


@dataclass(frozen=True)
class RegisteredBase:
    """A registered base as the refit sees it: its comparison form, log index and link (``BaseEntry.linked_to``)."""

    model: BaseModel
    index: int
    linked_to: int | None = None

    @property
    def lineage_root(self) -> int:
        return self.index if self.linked_to is None else self.linked_to


@dataclass(frozen=True)
class BasePair:
    """One pair of registered bases: ``a`` registered first, ``b`` compared with it as a submission would be."""

    a: str
    b: str
    a_index: int
    b_index: int
    status: str  # INDEPENDENT (fitted), EXCLUDED or INCOMPARABLE
    reason: str = ""
    m: int | None = None  # common probe tokens
    probe_set_id: str | None = None
    probe_rule: str | None = None  # the rule of that probe set (the refitted null's ``probe_rule``)
    ics: float | None = None
    scores: tuple[ScoredTerm, ...] = ()  # as the receipt would state them (three decimals)
    p_current: float | None = None  # under the current null, as the receipt would state it
    verdict_current: str | None = None  # K = 1

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "a_index": self.a_index, "b_index": self.b_index, "status": self.status,
                "reason": self.reason, "m": self.m, "probe_set_id": self.probe_set_id, "probe_rule": self.probe_rule,
                "ics": self.ics, "scores": [[t, c] for t, c in self.scores],
                "p_current": self.p_current, "verdict_current": self.verdict_current}


def score_base_pairs(bases: Sequence[RegisteredBase], current: NullModel,
                     thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[BasePair]:
    """Every pair of ``bases`` (in log order), scored and classified (module docstring)."""
    ordered = sorted(bases, key=lambda b: b.index)
    raw: list[tuple[RegisteredBase, RegisteredBase, Any]] = []
    for j, later in enumerate(ordered):
        cache: dict[Any, Any] = {}  # the later base's standardised terms, made once for every earlier base
        for earlier in ordered[:j]:
            raw.append((earlier, later, compare_with_base(later.model.invariants, earlier.model, current, cache)))
    # The later base of a derived or linked pair is dropped: its other pairs repeat the earlier base's.
    dropped: dict[int, str] = {}
    first_reason: dict[tuple[int, int], str] = {}
    for a, b, match in raw:
        reason = ""
        if a.lineage_root == b.lineage_root:
            reason = "linked registrations (the log links them: same weight commitment or a term digest)"
        elif match is not None and match.p_value is not None and \
                base_verdict(float(match.p_value), 1, thresholds) == "derived":
            reason = f"derived under {current.null_id} (p = {match.p_value}, K = 1)"
        if reason:
            first_reason[(a.index, b.index)] = reason
            dropped.setdefault(b.index, f"{b.model.name} is derived from or linked to {a.model.name}")
    out: list[BasePair] = []
    for a, b, match in raw:
        common: dict[str, Any] = {"a": a.model.name, "b": b.model.name, "a_index": a.index, "b_index": b.index}
        if match is not None:
            rule = next((g.probes.rule for g in a.model.invariants if g.probes.id == match.probe_set_id), None)
            common.update(m=match.common_probe_tokens, probe_set_id=match.probe_set_id, probe_rule=rule,
                          ics=float(parse_score(match.ics)),
                          scores=tuple((t.term, float(parse_score(t.cosine))) for t in match.terms))
            if match.p_value is not None:
                common.update(p_current=float(match.p_value),
                              verdict_current=base_verdict(float(match.p_value), 1, thresholds))
        derived_why = first_reason.get((a.index, b.index))
        if derived_why is not None:
            out.append(BasePair(status=EXCLUDED, reason=derived_why, **common))
        elif match is None:
            out.append(BasePair(status=INCOMPARABLE, reason="no probe set and method in common", **common))
        elif match.p_value is None:
            out.append(BasePair(status=INCOMPARABLE, reason=f"the current null is for another method "
                                f"({current.method_id})", **common))
        elif a.index in dropped or b.index in dropped:
            why = dropped.get(a.index) or dropped[b.index]
            out.append(BasePair(status=EXCLUDED, reason=f"{why}: its pairs repeat the earlier base's", **common))
        else:
            out.append(BasePair(status=INDEPENDENT, **common))
    return out


# ------------------------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class Exponents:
    """The overlap exponents a refit used, and why (``kept`` from the current null, or ``fitted``)."""

    values: Mapping[str, float]
    rule: str  # "kept" or "fitted"
    note: str


def overlap_exponents(pairs: Sequence[BasePair], current: Mapping[str, float]) -> Exponents:
    """The exponent rule of the module docstring: only ``m``'s variation within a probe set counts (between probe
    sets, ``m`` changes with the population: other tokenizers, other models), each probe set with its own mean
    and spread."""
    groups: dict[str, list[BasePair]] = {}
    for p in pairs:
        if p.m:
            groups.setdefault(p.probe_set_id or "", []).append(p)
    span = max((max(p.m or 1 for p in g) / min(p.m or 1 for p in g) for g in groups.values()), default=1.0)
    if len(pairs) < EXPONENT_MIN_PAIRS or span < EXPONENT_MIN_SPAN:
        return Exponents({t: float(current[t]) for t in TERMS}, "kept",
                         f"kept from the current null ({len(pairs)} pairs, m spans x{span:.2f} within a probe set; "
                         f"refitting them needs >= {EXPONENT_MIN_PAIRS} pairs and a span >= x{EXPONENT_MIN_SPAN:g})")
    ref = max(p.m or 1 for p in pairs)
    fitted: dict[str, float] = {}
    for t in TERMS:
        nll = np.zeros_like(_EXPONENT_GRID)
        for g in groups.values():
            c = np.array([s for p in g for term, s in p.scores if term == t], dtype=np.float64)
            w = np.array([(p.m or 1) / ref for p in g for term, _ in p.scores if term == t], dtype=np.float64)
            r2 = (c - c.mean()) ** 2
            # -2 log L up to a constant, profiled over the group's spread at ref_m: N log s2(a) - 2 a sum(log w)
            s2 = (r2[None, :] * w[None, :] ** (2 * _EXPONENT_GRID[:, None])).mean(axis=1)
            nll += len(c) * np.log(np.maximum(s2, 1e-300)) - 2 * _EXPONENT_GRID * float(np.log(w).sum())
        fitted[t] = round(float(_EXPONENT_GRID[int(np.argmin(nll))]), 4)
    return Exponents(fitted, "fitted", f"fitted on {len(pairs)} pairs (m spans x{span:.2f} within a probe set; "
                                       "maximum likelihood)")


def current_exponents(current: NullModel, fallback: NullModel | None) -> Mapping[str, float]:
    """The overlap exponents to keep: the current null's if it has them (v2), else ``fallback``'s."""
    for n in (current, fallback):
        if n is not None and n.m_exponents is not None:
            return n.m_exponents
    raise NullError("neither the current null nor the fallback has overlap exponents (a v2 null)")


def fit_registry_null(pairs: Sequence[BasePair], current: NullModel, exponents: Mapping[str, float],
                      source: str) -> tuple[NullModel, Exponents]:
    """A v2 null fitted on ``pairs`` (independent ones; module docstring), with ``current``'s method; when
    ``current`` is a v3 null, a v3 null: its sampling spread kept, the floor, mean and correlation refitted."""
    if len(pairs) < FIT_MIN_PAIRS:
        raise NullError(f"a null needs at least {FIT_MIN_PAIRS} independent pairs, got {len(pairs)}")
    rule = ",".join(sorted({p.probe_rule for p in pairs if p.probe_rule})) or current.probe_rule
    if current.floor is not None:
        kept = Exponents(dict(current.m_exponents or {}), "kept",
                         "kept from the current v3 null with its sampling spread (the floor is refitted)")
        return fit_floor([(p.scores, int(p.m or current.ref_m or 1)) for p in pairs], current, rule, source), kept
    exps = overlap_exponents(pairs, exponents)
    ref_m = max(int(p.m or 0) for p in pairs)
    mean: dict[str, float] = {}
    for t in TERMS:  # inverse-variance weighted: a pair at small m has the wider spread
        c = np.array([s for p in pairs for term, s in p.scores if term == t], dtype=np.float64)
        w = np.array([(int(p.m or ref_m) / ref_m) ** (2 * exps.values[t]) for p in pairs for term, _ in p.scores
                      if term == t], dtype=np.float64)
        mean[t] = float((c * w).sum() / w.sum())
    rescaled = [[(t, mean[t] + (c - mean[t]) * (int(p.m or ref_m) / ref_m) ** exps.values[t]) for t, c in p.scores]
                for p in pairs]
    v1 = fit_null(rescaled, current.method_id, rule, source)
    flat = [t for t, n in v1.terms.items() if not (n.sd > 0 and math.isfinite(n.sd))]
    if flat:
        raise NullError(f"the independent pairs' scores do not vary on term(s) {', '.join(flat)}: no spread to fit")
    return null_with_scaling(v1, ref_m, exps.values, source), exps


# ------------------------------------------------------------------------------------------------ checking
def rate_at(ps: Sequence[float], alpha: float) -> dict[str, Any]:
    """How many of ``ps`` are at or below ``alpha``: count, of, fraction."""
    k = sum(p <= alpha for p in ps)
    return {"count": k, "of": len(ps), "fraction": round(k / len(ps), 6) if ps else None}


@dataclass(frozen=True)
class LooTest:
    left_out: str  # the base left out of the fit
    a: str
    b: str
    p: float
    p_current: float


@dataclass
class LooReport:
    tests: list[LooTest] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)  # bases whose removal left too few pairs

    def summary(self) -> dict[str, Any]:
        loo = [t.p for t in self.tests]
        cur = [t.p_current for t in self.tests]
        return {"tests": len(self.tests), "untested_bases": list(self.untested),
                "refit": {"le_0.01": rate_at(loo, 0.01), "le_0.05": rate_at(loo, 0.05)},
                "current": {"le_0.01": rate_at(cur, 0.01), "le_0.05": rate_at(cur, 0.05)},
                "nominal": {"le_0.01": 0.01, "le_0.05": 0.05}}


def leave_one_out(pairs: Sequence[BasePair], fit: Callable[[Sequence[BasePair]], NullModel]) -> LooReport:
    """The leave-one-base-out check of the module docstring; ``fit`` refits a null from a population."""
    report = LooReport()
    names: dict[str, int] = {}
    for p in pairs:
        names.setdefault(p.a, p.a_index)
        names.setdefault(p.b, p.b_index)
    for name in sorted(names, key=lambda n: names[n]):
        mine = [p for p in pairs if name in (p.a, p.b)]
        rest = [p for p in pairs if name not in (p.a, p.b)]
        if len(rest) < FIT_MIN_PAIRS:
            report.untested.append(name)
            continue
        null = fit(rest)
        for p in mine:
            report.tests.append(LooTest(name, p.a, p.b, assess(list(p.scores), null, p.m).p_value,
                                        float(p.p_current if p.p_current is not None else float("nan"))))
    return report
