"""Calibrated verdicts: a measured null distribution of term scores, z-scores, p-values and the verdict rule.

**The null** (``NullModel``) is the distribution of one term's cosine on one matched layer pair between
models known to be independent: same architecture and data with another seed, and other families. Per term
it keeps the mean and standard deviation of those cosines, the number of independent pairs they came from
(``pairs``) and the correlation between the terms' per-pair mean z-scores. It is fitted by
``fit_null`` from scored pairs (``benchmarks/lineage`` fits the shipped one on the lineage zoo's calibration
population), saved as canonical JSON, and named by the SHA-256 of that JSON (``null_id``), which receipts
carry so a verdict can be re-derived.

**The test** of one comparison (``assess``), one-sided (derivation raises similarity):

1. per matched layer pair and term, ``z = (cosine - mean_t) / (sd_t * sqrt(1 + 1/pairs))`` (the predictive
   spread of a new independent pair, since ``mean_t`` and ``sd_t`` are estimates);
2. per term, the mean of its z over the matched layers (``z_t``). Layers of one model are positively
   dependent; the mean of unit-variance z-scores has variance at most 1, so treating ``z_t`` as unit-variance
   is the conservative limit (full dependence across layers);
3. the terms combined by Stouffer's sum corrected for their correlation (Strube 1985):
   ``Z = sum_t z_t / sqrt(sum_{t,t'} R_{tt'})`` with ``R`` the null's between-term correlation (negative
   entries clipped to 0, again the conservative side);
4. ``p = P(T > Z)`` for Student's t with ``pairs - 1`` degrees of freedom (heavier tails than the normal for a
   null fitted on few pairs).

**Verdict rule** (``Thresholds``, configurable; the defaults are ``DEFAULT_THRESHOLDS``): with ``K`` bases
compared, a base is ``derived`` if ``p * K <= derived_p`` (Bonferroni over the registry: a large registry
does not make a chance match likely), ``independent`` if ``p >= independent_p``, else ``inconclusive``.

Pure logic: values in, values out; ``load_null`` is the one reader.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from protocol import TERMS, JsonError, loads_strict
from verifier.errors import VerifierError

NULL_FORMAT = "pawprint-null/1"
DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_NULL_FILE = DATA_DIR / "null-zoo-v1.json"


class NullError(VerifierError):
    """A null model file is missing, malformed, or does not fit the comparison."""

    status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Thresholds:
    derived_p: float = 1e-6
    independent_p: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.derived_p < self.independent_p < 1:
            raise ValueError("thresholds must satisfy 0 < derived_p < independent_p < 1, "
                             f"got derived_p={self.derived_p}, independent_p={self.independent_p}")

    @property
    def rule(self) -> str:
        return (f"calibrated-1(per base: derived if p*K<={self.derived_p:g}, independent if p>="
                f"{self.independent_p:g}, else inconclusive; K = bases compared; overall: any derived -> derived, "
                "all compared independent -> independent, else inconclusive)")


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class TermNull:
    mean: float
    sd: float
    samples: int  # layer-pair cosines the mean and sd come from


@dataclass(frozen=True)
class NullModel:
    """The measured null of one method on one probe rule (see the module docstring)."""

    method_id: str
    probe_rule: str
    terms: Mapping[str, TermNull]
    pairs: int
    corr: tuple[tuple[float, ...], ...]  # between-term correlation, in ``TERMS`` order
    source: str

    def to_json(self) -> str:
        body = {
            "format": NULL_FORMAT,
            "method_id": self.method_id,
            "probe_rule": self.probe_rule,
            "pairs": self.pairs,
            "source": self.source,
            "terms": {t: {"mean": _r(n.mean), "sd": _r(n.sd), "samples": n.samples} for t, n in self.terms.items()},
            "corr": [[_r(c) for c in row] for row in self.corr],
        }
        return json.dumps(body, sort_keys=True, indent=1) + "\n"

    @property
    def null_id(self) -> str:
        return "null/1:" + hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    @classmethod
    def from_json(cls, text: str, what: str = "null model") -> NullModel:
        try:
            d = loads_strict(text)
            if not isinstance(d, dict) or d.get("format") != NULL_FORMAT:
                raise NullError(f"{what}: not a {NULL_FORMAT} file")
            terms = {t: TermNull(float(v["mean"]), float(v["sd"]), int(v["samples"])) for t, v in d["terms"].items()}
            corr = tuple(tuple(float(c) for c in row) for row in d["corr"])
            model = cls(str(d["method_id"]), str(d["probe_rule"]), terms, int(d["pairs"]), corr, str(d["source"]))
        except NullError:
            raise
        except (JsonError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise NullError(f"{what}: malformed ({e})") from None
        if set(model.terms) != set(TERMS) or len(model.corr) != len(TERMS) or any(len(r) != len(TERMS)
                                                                                   for r in model.corr):
            raise NullError(f"{what}: must give every term of {', '.join(TERMS)}")
        if model.pairs < 3 or any(not (n.sd > 0 and math.isfinite(n.mean)) for n in model.terms.values()):
            raise NullError(f"{what}: needs at least 3 pairs and a positive spread per term")
        return model


def _r(x: float) -> float:
    """Stored values rounded to 9 significant digits: the same fit gives the same bytes across platforms."""
    return float(f"{x:.9g}")


def load_null(path: Path | str | None = None) -> NullModel:
    p = Path(path) if path is not None else DEFAULT_NULL_FILE
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise NullError(f"{p}: cannot read the null model ({e.strerror or e})") from None
    return NullModel.from_json(text, str(p))


# ------------------------------------------------------------------------------------------------ fitting
ScoredTerm = tuple[str, float]  # (term, cosine) of one matched layer pair


def fit_null(pairs: Sequence[Sequence[ScoredTerm]], method_id: str, probe_rule: str, source: str) -> NullModel:
    """The null from independent pairs, each given as its (term, cosine) scores over matched layers."""
    if len(pairs) < 3:
        raise NullError(f"a null needs at least 3 independent pairs, got {len(pairs)}")
    by_term: dict[str, list[float]] = {t: [] for t in TERMS}
    for scores in pairs:
        for term, c in scores:
            if term in by_term:
                by_term[term].append(float(c))
    terms: dict[str, TermNull] = {}
    for t, values in by_term.items():
        if len(values) < 3:
            raise NullError(f"term {t}: fewer than 3 scores")
        a = np.asarray(values, dtype=np.float64)
        terms[t] = TermNull(float(a.mean()), float(a.std(ddof=1)), len(values))
    draft = NullModel(method_id, probe_rule, terms, len(pairs), tuple((1.0,) * len(TERMS) for _ in TERMS), source)
    z = np.array([[_term_z(draft, scores)[t] for t in TERMS] for scores in pairs])
    corr = np.nan_to_num(np.asarray(np.corrcoef(z, rowvar=False), dtype=np.float64), nan=0.0)
    np.fill_diagonal(corr, 1.0)
    rows = tuple(tuple(float(v) for v in row) for row in corr)
    return NullModel(method_id, probe_rule, terms, len(pairs), rows, source)


# ------------------------------------------------------------------------------------------------ testing
@dataclass(frozen=True)
class Evidence:
    """The test of one comparison against the null."""

    layer_z: tuple[float, ...]  # per input score, in input order
    term_z: dict[str, float]
    z: float
    p_value: float


def _z(null: NullModel, term: str, cosine: float) -> float:
    n = null.terms[term]
    return (cosine - n.mean) / (n.sd * math.sqrt(1.0 + 1.0 / null.pairs))


def _term_z(null: NullModel, scores: Iterable[ScoredTerm]) -> dict[str, float]:
    acc: dict[str, list[float]] = {t: [] for t in TERMS}
    for term, c in scores:
        acc[term].append(_z(null, term, c))
    missing = [t for t, v in acc.items() if not v]
    if missing:
        raise NullError(f"no scores for term(s) {', '.join(missing)}")
    return {t: float(np.mean(v)) for t, v in acc.items()}


def assess(scores: Sequence[ScoredTerm], null: NullModel) -> Evidence:
    """z per score and per term, the combined z and its one-sided p-value (module docstring)."""
    unknown = {t for t, _ in scores} - set(TERMS)
    if unknown:
        raise NullError(f"the null has no term(s) {', '.join(sorted(unknown))}")
    layer_z = tuple(_z(null, t, c) for t, c in scores)
    term_z = _term_z(null, scores)
    r = np.clip(np.asarray(null.corr, dtype=np.float64), 0.0, 1.0)
    z = float(sum(term_z[t] for t in TERMS) / math.sqrt(float(r.sum())))
    p = float(stats.t.sf(z, df=max(1, null.pairs - 1)))
    return Evidence(layer_z, term_z, z, p)


def base_verdict(p_value: float, bases_compared: int, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> str:
    if p_value * max(1, bases_compared) <= thresholds.derived_p:
        return "derived"
    if p_value >= thresholds.independent_p:
        return "independent"
    return "inconclusive"


def overall_verdict(verdicts: Sequence[str]) -> str:
    if "derived" in verdicts:
        return "derived"
    if verdicts and all(v == "independent" for v in verdicts):
        return "independent"
    return "inconclusive"


# ------------------------------------------------------------------------------------ the receipts' strings
def format_z(z: float) -> str:
    """A z-score as the protocol writes it (three decimals, clamped to +-1e6)."""
    z = max(-1e6, min(1e6, z))
    s = f"{z:.3f}"
    return "0.000" if s == "-0.000" else s


def format_p(p: float) -> str:
    """A p-value as the protocol writes it (four significant digits, scientific)."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"a p-value must be in [0, 1], got {p!r}")
    return f"{p:.3e}"


def describe(null: NullModel) -> dict[str, Any]:
    return {"null_id": null.null_id, "method_id": null.method_id, "probe_rule": null.probe_rule,
            "pairs": null.pairs, "source": null.source}
