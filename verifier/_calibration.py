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

**The null v2** (``pawprint-null/2``) knows the overlap: the spread of an independent pair's cosine grows as the
number of probe tokens both models share (``m``, each match's ``common_probe_tokens``) shrinks, roughly as
``1/sqrt(effective dimension)``. It keeps the v1 reference (mean and sd measured at ``ref_m`` shared tokens) and
a per-term exponent ``a_t`` fitted on independent zoo pairs subsampled to several ``m``
(``benchmarks/fit_null_scaling.py``): ``sd_t(m) = sd_t * (min(m, ref_m) / ref_m) ** -a_t``. Above ``ref_m`` the
spread is not narrowed (no extrapolation to the liberal side). The width is measured there too but not used: a
receipt records ``m`` for each match, not the models' widths, and its verdict must be re-derivable from it.
A v1 file reads as before and keeps its ``null_id`` (``null/1:...``); a v2 file's id is ``null/2:...``.

**The null v3** (``pawprint-null/3``) adds what zoo pairs cannot show: independent *real* pretraining runs share
structure that no amount of probe tokens averages away (models trained on natural language relate the same
tokens alike), so their cosines sit above the zoo's (``attn_vo`` and ``ffn`` at 0.01-0.04 where zoo pairs give
+-0.005) whatever ``m``. It is a two-component null: the v2 sampling spread, which follows ``m``, plus a per-term
*floor* ``tau_t`` that does not: ``sd_t(m) = sqrt(sd_v2,t(m) ** 2 + tau_t ** 2)``. ``fit_floor`` fits it from
independent real pairs (each with its ``m``): the mean and the between-term correlation are theirs, ``tau_t`` is
their excess variance over the sampling spread (method of moments, floored at 0), and ``pairs`` is their number,
so the t test's degrees of freedom are the real pairs', not the zoo's. The shipped
``null-zoo-real-v3.json`` is fitted on the real pairs of ``python -m benchmarks.real_models``
(``python -m benchmarks.fit_null_floor``, which also reports its leave-one-model-out calibration); ``pawprint
verifier refit-null`` refits the floor from a registry's own bases when the current null is a v3 one.

**Verdict rule** (``Thresholds``, configurable; the defaults are ``DEFAULT_THRESHOLDS``): with ``K`` bases
compared, a base is ``derived`` if ``p * K <= derived_p`` (Bonferroni over the registry: a large registry
does not make a chance match likely), ``independent`` if ``p >= independent_p``, else ``inconclusive``.

Pure logic: values in, values out; ``load_null`` is the one reader.
"""

from __future__ import annotations

import dataclasses
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
NULL_FORMAT_V2 = "pawprint-null/2"
NULL_FORMAT_V3 = "pawprint-null/3"
DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_NULL_FILE = DATA_DIR / "null-zoo-real-v3.json"


def sketch_null_file(k: int) -> Path:
    """Where the null shipped for sketched submissions of size ``k`` lies (``benchmarks/fit_sketch_null.py``)."""
    return DATA_DIR / f"null-zoo-sketch{k}-v1.json"


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
    ref_m: int | None = None  # v2: the shared probe tokens the terms' mean and sd were measured at
    m_exponents: Mapping[str, float] | None = None  # v2: per term, sd ~ m ** -a
    floor: Mapping[str, float] | None = None  # v3: per term, the between-run spread that m does not shrink

    @property
    def scaled(self) -> bool:
        return self.ref_m is not None

    @property
    def version(self) -> int:
        return 1 if self.ref_m is None else 2 if self.floor is None else 3

    def sampling_sd_at(self, term: str, m: int | None) -> float:
        """The sampling part of ``term``'s null spread at ``m`` shared probe tokens (v1: the same at every ``m``)."""
        sd = self.terms[term].sd
        if self.ref_m is None or self.m_exponents is None:
            return sd
        if m is None or m < 1:
            raise NullError(f"the null scales with the shared probe tokens (ref_m={self.ref_m}): "
                            "the comparison must give them")
        return float(sd * (min(m, self.ref_m) / self.ref_m) ** -self.m_exponents[term])

    def sd_at(self, term: str, m: int | None) -> float:
        """The spread of ``term``'s null cosine at ``m`` shared probe tokens: the sampling spread and, in a v3
        null, the floor beside it."""
        sd = self.sampling_sd_at(term, m)
        return sd if self.floor is None else float(math.hypot(sd, self.floor[term]))

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "format": (NULL_FORMAT, NULL_FORMAT_V2, NULL_FORMAT_V3)[self.version - 1],
            "method_id": self.method_id,
            "probe_rule": self.probe_rule,
            "pairs": self.pairs,
            "source": self.source,
            "terms": {t: {"mean": _r(n.mean), "sd": _r(n.sd), "samples": n.samples} for t, n in self.terms.items()},
            "corr": [[_r(c) for c in row] for row in self.corr],
        }
        if self.ref_m is not None:
            body["scaling"] = {"ref_m": self.ref_m,
                               "m_exponent": {t: _r(a) for t, a in (self.m_exponents or {}).items()}}
        if self.floor is not None:
            body["floor"] = {t: _r(v) for t, v in self.floor.items()}
        return json.dumps(body, sort_keys=True, indent=1) + "\n"

    @property
    def null_id(self) -> str:
        return f"null/{self.version}:" + hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    @classmethod
    def from_json(cls, text: str, what: str = "null model") -> NullModel:
        try:
            d = loads_strict(text)
            formats = (NULL_FORMAT, NULL_FORMAT_V2, NULL_FORMAT_V3)
            if not isinstance(d, dict) or d.get("format") not in formats:
                raise NullError(f"{what}: not a {', '.join(formats)} file")
            terms = {t: TermNull(float(v["mean"]), float(v["sd"]), int(v["samples"])) for t, v in d["terms"].items()}
            corr = tuple(tuple(float(c) for c in row) for row in d["corr"])
            ref_m: int | None = None
            exps: dict[str, float] | None = None
            floor: dict[str, float] | None = None
            if d["format"] in (NULL_FORMAT_V2, NULL_FORMAT_V3):
                ref_m = int(d["scaling"]["ref_m"])
                exps = {str(t): float(a) for t, a in d["scaling"]["m_exponent"].items()}
                if ref_m < 1 or set(exps) != set(TERMS) or not all(math.isfinite(a) and 0 <= a <= 2
                                                                   for a in exps.values()):
                    raise NullError(f"{what}: scaling needs ref_m >= 1 and an exponent in [0, 2] per term")
            elif "scaling" in d:
                raise NullError(f"{what}: a {NULL_FORMAT} file has no scaling")
            if d["format"] == NULL_FORMAT_V3:
                floor = {str(t): float(v) for t, v in d["floor"].items()}
                if set(floor) != set(TERMS) or not all(math.isfinite(v) and v >= 0 for v in floor.values()):
                    raise NullError(f"{what}: the floor needs a finite value >= 0 per term")
            elif "floor" in d:
                raise NullError(f"{what}: only a {NULL_FORMAT_V3} file has a floor")
            model = cls(str(d["method_id"]), str(d["probe_rule"]), terms, int(d["pairs"]), corr, str(d["source"]),
                        ref_m, exps, floor)
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


def null_with_scaling(null: NullModel, ref_m: int, m_exponents: Mapping[str, float], source: str) -> NullModel:
    """``null`` (measured at ``ref_m`` shared probe tokens) as a v2 null whose spread follows ``m``."""
    return dataclasses.replace(null, ref_m=int(ref_m), m_exponents={t: float(m_exponents[t]) for t in TERMS},
                               source=source)


def shipped_nulls() -> dict[str, NullModel]:
    """The nulls shipped with the verifier by ``null_id``: a receipt names the one its verdict was drawn
    with, and an older receipt keeps re-deriving with its own after the default changes."""
    out: dict[str, NullModel] = {}
    for p in sorted(DATA_DIR.glob("null-*.json")):
        n = load_null(p)
        out[n.null_id] = n
    return out


def load_null(path: Path | str | None = None, null_id: str | None = None) -> NullModel:
    """The null in ``path``; without a path, the shipped null named ``null_id`` (a receipt's) if there is
    one, else the default (``DEFAULT_NULL_FILE``)."""
    if path is None and null_id is not None:
        shipped = shipped_nulls()
        if null_id in shipped:
            return shipped[null_id]
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
    draft = NullModel(method_id, probe_rule, terms, len(pairs), _NO_CORR, source)
    return dataclasses.replace(draft, corr=_term_corr(draft, [(scores, None) for scores in pairs]))


_NO_CORR = tuple((1.0,) * len(TERMS) for _ in TERMS)  # a draft's correlation, before it is measured


def _term_corr(draft: NullModel, pairs: Sequence[tuple[Sequence[ScoredTerm], int | None]]) -> tuple[
        tuple[float, ...], ...]:
    """The between-term correlation of the pairs' per-term z under ``draft`` (its mean and spread)."""
    z = np.array([[_term_z(draft, scores, m)[t] for t in TERMS] for scores, m in pairs])
    corr = np.nan_to_num(np.asarray(np.corrcoef(z, rowvar=False), dtype=np.float64), nan=0.0)
    np.fill_diagonal(corr, 1.0)
    return tuple(tuple(float(v) for v in row) for row in corr)


def fit_floor(pairs: Sequence[tuple[Sequence[ScoredTerm], int]], sampling: NullModel, probe_rule: str,
              source: str) -> NullModel:
    """A v3 null (module docstring): ``sampling``'s overlap-scaled spread plus a floor fitted on independent real
    ``pairs``, each given as its (term, cosine) scores over matched layers and its shared probe tokens ``m``."""
    if not sampling.scaled:
        raise NullError("the floor sits beside an overlap-scaled (v2 or v3) null's sampling spread")
    if len(pairs) < 3:
        raise NullError(f"a null needs at least 3 independent pairs, got {len(pairs)}")
    terms: dict[str, TermNull] = {}
    floor: dict[str, float] = {}
    for t in TERMS:
        c = np.array([float(v) for scores, _ in pairs for term, v in scores if term == t], dtype=np.float64)
        s2 = np.array([sampling.sampling_sd_at(t, m) ** 2 for scores, m in pairs for term, _ in scores if term == t],
                      dtype=np.float64)
        if len(c) < 3:
            raise NullError(f"term {t}: fewer than 3 scores")
        floor[t] = float(math.sqrt(max(0.0, float(c.var(ddof=1)) - float(s2.mean()))))
        terms[t] = TermNull(float(c.mean()), sampling.terms[t].sd, len(c))
    draft = dataclasses.replace(sampling, probe_rule=probe_rule, terms=terms, pairs=len(pairs), floor=floor,
                                corr=_NO_CORR, source=source)
    return dataclasses.replace(draft, corr=_term_corr(draft, pairs))


# ------------------------------------------------------------------------------------------------ testing
@dataclass(frozen=True)
class Evidence:
    """The test of one comparison against the null."""

    layer_z: tuple[float, ...]  # per input score, in input order
    term_z: dict[str, float]
    z: float
    p_value: float


def _z(null: NullModel, term: str, cosine: float, m: int | None = None) -> float:
    n = null.terms[term]
    return (cosine - n.mean) / (null.sd_at(term, m) * math.sqrt(1.0 + 1.0 / null.pairs))


def _term_z(null: NullModel, scores: Iterable[ScoredTerm], m: int | None = None) -> dict[str, float]:
    acc: dict[str, list[float]] = {t: [] for t in TERMS}
    for term, c in scores:
        acc[term].append(_z(null, term, c, m))
    missing = [t for t, v in acc.items() if not v]
    if missing:
        raise NullError(f"no scores for term(s) {', '.join(missing)}")
    return {t: float(np.mean(v)) for t, v in acc.items()}


def assess(scores: Sequence[ScoredTerm], null: NullModel, common_probe_tokens: int | None = None) -> Evidence:
    """z per score and per term, the combined z and its one-sided p-value (module docstring).
    ``common_probe_tokens``: the probe tokens the scores were computed on (needed by a v2 null)."""
    unknown = {t for t, _ in scores} - set(TERMS)
    if unknown:
        raise NullError(f"the null has no term(s) {', '.join(sorted(unknown))}")
    layer_z = tuple(_z(null, t, c, common_probe_tokens) for t, c in scores)
    term_z = _term_z(null, scores, common_probe_tokens)
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
    out = {"null_id": null.null_id, "method_id": null.method_id, "probe_rule": null.probe_rule,
           "pairs": null.pairs, "source": null.source}
    if null.ref_m is not None:
        out["ref_m"] = null.ref_m
        out["m_exponents"] = dict(null.m_exponents or {})
    if null.floor is not None:
        out["floor"] = dict(null.floor)
    return out
