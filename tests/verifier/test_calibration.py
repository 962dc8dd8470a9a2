"""Calibrated verdicts: the null model file, the test's statistics and the verdict rule (verifier._calibration,
verifier._compare)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from protocol import TERMS, Match, MessageError, TermScoreRecord, check_p, check_z, format_score
from verifier import (
    DEFAULT_THRESHOLDS,
    NullError,
    Thresholds,
    assess,
    base_verdict,
    decide,
    fit_null,
    load_null,
    overall_verdict,
    recheck_verdict,
)
from verifier._calibration import DEFAULT_NULL_FILE, NullModel, format_p, format_z
from verifier._compare import _calibrated

MEANS = {"attn_qk": 0.02, "attn_vo": 0.003, "ffn": 0.005}
SDS = {"attn_qk": 0.03, "attn_vo": 0.006, "ffn": 0.01}


def _null_pairs(rng: np.random.Generator, n_pairs: int, layers: int = 4) -> list[list[tuple[str, float]]]:
    return [[(t, float(rng.normal(MEANS[t], SDS[t]))) for _ in range(layers) for t in TERMS] for _ in range(n_pairs)]


@pytest.fixture(scope="module")
def null() -> NullModel:
    return fit_null(_null_pairs(np.random.default_rng(0), 60), "m/1", "rare-ids-v1", "synthetic test null")


def test_fit_recovers_the_null_and_round_trips(null: NullModel, tmp_path: Path) -> None:
    for t in TERMS:
        assert null.terms[t].mean == pytest.approx(MEANS[t], abs=SDS[t] * 0.3)
        assert null.terms[t].sd == pytest.approx(SDS[t], rel=0.2)
        assert null.terms[t].samples == 240
    assert null.pairs == 60
    f = tmp_path / "null.json"
    f.write_text(null.to_json())
    again = load_null(f)
    assert again.null_id == null.null_id and again.to_json() == null.to_json()
    assert null.null_id.startswith("null/1:")


def test_bad_null_files_are_refused(null: NullModel, tmp_path: Path) -> None:
    f = tmp_path / "n.json"
    with pytest.raises(NullError, match="cannot read"):
        load_null(f)
    body = json.loads(null.to_json())
    for broken, why in [
        ({**body, "format": "other"}, "not a pawprint-null/1"),
        ({**body, "terms": {"ffn": body["terms"]["ffn"]}}, "every term"),
        ({**body, "pairs": 2}, "at least 3 pairs"),
        ({**body, "terms": {**body["terms"], "ffn": {**body["terms"]["ffn"], "sd": 0}}}, "positive spread"),
        ({**body, "corr": "x"}, "every term|malformed"),
    ]:
        f.write_text(json.dumps(broken))
        with pytest.raises(NullError, match=why):
            load_null(f)
    f.write_text("{not json")
    with pytest.raises(NullError, match="malformed"):
        load_null(f)
    with pytest.raises(NullError, match="at least 3"):
        fit_null(_null_pairs(np.random.default_rng(1), 2), "m/1", "r", "s")


def test_null_pairs_are_not_called_derived_and_p_values_are_calibrated(null: NullModel) -> None:
    """Fresh pairs drawn from the null: p-values at most nominally small (the test is conservative)."""
    ps = np.array([assess(s, null).p_value for s in _null_pairs(np.random.default_rng(7), 400)])
    assert (ps <= 0.05).mean() <= 0.05 + 0.02
    assert (ps <= 0.01).mean() <= 0.01 + 0.01
    assert ps.min() > DEFAULT_THRESHOLDS.derived_p


def test_a_weak_but_consistent_derivative_is_derived(null: NullModel) -> None:
    """cpt-heavy-like scores: small cosines (0.08-0.13), far above the null on every term."""
    scores = [(t, c) for _ in range(4) for t, c in zip(TERMS, (0.13, 0.08, 0.04), strict=True)]
    ev = assess(scores, null)
    assert ev.p_value < 1e-6 and ev.z > 5
    assert set(ev.term_z) == set(TERMS) and len(ev.layer_z) == len(scores)
    assert base_verdict(ev.p_value, 1) == "derived"
    # one term alone a little high (same-data seeds) is not enough
    seeds = [(t, c) for _ in range(4) for t, c in zip(TERMS, (0.09, 0.004, 0.006), strict=True)]
    assert base_verdict(assess(seeds, null).p_value, 1) != "derived"


def test_verdict_rule_thresholds_and_bonferroni() -> None:
    assert base_verdict(1e-7, 1) == "derived"
    assert base_verdict(1e-7, 20) == "inconclusive"  # 20 bases compared: 2e-6 > 1e-6
    assert base_verdict(0.5, 1) == "independent"
    assert base_verdict(0.001, 1) == "inconclusive"
    assert base_verdict(1e-3, 1, Thresholds(derived_p=1e-2, independent_p=0.1)) == "derived"
    with pytest.raises(ValueError, match="thresholds"):
        Thresholds(derived_p=0.1, independent_p=0.01)
    assert overall_verdict(["independent", "derived"]) == "derived"
    assert overall_verdict(["independent", "independent"]) == "independent"
    assert overall_verdict(["independent", "inconclusive"]) == "inconclusive"
    assert overall_verdict([]) == "inconclusive"


def _match(null: NullModel, cosines: tuple[float, float, float]) -> Match:
    terms = tuple(TermScoreRecord(layer, layer, t, format_score(c))
                  for layer in (2, 3) for t, c in zip(TERMS, cosines, strict=True))
    m = Match("b", b"\1" * 32, "a" * 64, "p", format_score(float(np.mean(cosines))),
              format_score(min(cosines)), 100, "inconclusive", terms)
    return _calibrated(m, null)


def test_receipt_verdicts_can_be_rederived(null: NullModel) -> None:
    matches = decide([_match(null, (0.9, 0.8, 0.85)), _match(null, (0.01, 0.0, 0.002))])
    assert [m.verdict for m in matches] == ["derived", "independent"]
    assert all(m.z is not None and m.p_value is not None and all(t.z for t in m.terms) for m in matches)
    rule = DEFAULT_THRESHOLDS.rule
    assert recheck_verdict(matches, "derived", rule, null, null.null_id) is True
    assert recheck_verdict(matches, "independent", rule, null, null.null_id) is False
    forged = dataclasses.replace(matches[1], p_value=format_p(1e-9))
    assert recheck_verdict([matches[0], forged], "derived", rule, null, null.null_id) is False
    relabelled = dataclasses.replace(matches[1], verdict="derived")
    assert recheck_verdict([matches[0], relabelled], "derived", rule, null, null.null_id) is False
    assert recheck_verdict(matches, "derived", "another-rule", null, null.null_id) is None
    assert recheck_verdict(matches, "derived", rule, null, "null/1:someoneelse") is None


def test_protocol_strings_for_z_and_p() -> None:
    assert format_z(3.14159) == "3.142" and format_z(-0.0001) == "0.000" and format_z(1e9) == "1000000.000"
    assert format_p(1e-9) == "1.000e-09" and format_p(0.5) == "5.000e-01"
    assert check_z("12.500") == "12.500" and check_p("1.000e-300")
    for bad in ("1.5", "-0.000", "abc", 3.0):
        with pytest.raises(MessageError):
            check_z(bad)
    for bad in ("0.5", "2.000e+00", "1e-5", None):
        with pytest.raises(MessageError):
            check_p(bad)
    with pytest.raises(MessageError, match="together"):
        Match("b", b"\1" * 32, "a" * 64, "p", "0.100000", "0.100000", 10, "inconclusive", (), z="1.000")


def test_the_shipped_v2_null_is_the_lineage_benchmarks() -> None:
    """The v2 null (the default's sampling spread) holds the measurements benchmarks/lineage fitted and documented
    (the v1 file, whose id docs/results/lineage.json records), plus only the overlap scaling of pawprint-null/2."""
    null = load_null(DEFAULT_NULL_FILE.parent / "null-zoo-v2.json")
    assert null.pairs >= 20 and "benchmarks.lineage" in null.source
    assert DEFAULT_NULL_FILE.exists() and null.scaled
    doc = (Path(__file__).resolve().parents[2] / "docs" / "results" / "lineage.json").read_text()
    measured = load_null(DEFAULT_NULL_FILE.parent / "null-zoo-v1.json")
    assert json.loads(doc)["pawprint"]["null_id"] == measured.null_id
    assert (null.terms, null.corr, null.pairs, null.method_id) == (
        measured.terms, measured.corr, measured.pairs, measured.method_id)
