"""The null v2 (verifier._calibration): its spread follows the number of shared probe tokens ``m``, v1 files and
their ids are unchanged, and a verdict drawn with it is re-derivable from the receipt."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from protocol import TERMS, Match, TermScoreRecord, format_score
from verifier import (
    DEFAULT_THRESHOLDS,
    NullError,
    assess,
    base_verdict,
    decide,
    fit_null,
    load_null,
    recheck_verdict,
    shipped_nulls,
    verdict_of,
)
from verifier._calibration import DATA_DIR, NullModel, null_with_scaling
from verifier._compare import _calibrated

MEANS = {"attn_qk": 0.01, "attn_vo": 0.001, "ffn": 0.002}
SD_REF = {"attn_qk": 0.025, "attn_vo": 0.005, "ffn": 0.005}
EXP = {"attn_qk": 0.3, "attn_vo": 0.5, "ffn": 0.45}
REF_M = 4096


def _pairs(rng: np.random.Generator, n: int, m: int, layers: int = 2) -> list[list[tuple[str, float]]]:
    """Independent pairs whose spread follows m ** -EXP (one shared per-pair offset per term: layers of a
    pair are dependent, as in the zoo)."""
    out = []
    for _ in range(n):
        sd = {t: SD_REF[t] * (m / REF_M) ** -EXP[t] for t in TERMS}
        base = {t: rng.normal(MEANS[t], sd[t]) for t in TERMS}
        out.append([(t, float(base[t] + rng.normal(0, 0.1 * sd[t]))) for _ in range(layers) for t in TERMS])
    return out


@pytest.fixture(scope="module")
def v1() -> NullModel:
    return fit_null(_pairs(np.random.default_rng(0), 80, REF_M), "m/1", "rare-ids-v1", "synthetic, m = 4096")


@pytest.fixture(scope="module")
def v2(v1: NullModel) -> NullModel:
    return null_with_scaling(v1, REF_M, EXP, "synthetic, scaled")


def test_v1_file_and_id_are_unchanged() -> None:
    v1 = load_null(DATA_DIR / "null-zoo-v1.json")
    assert v1.null_id == "null/1:9c980bb9ed8f65d823dfe9b3156532cb"  # the id old receipts carry
    assert not v1.scaled and v1.sd_at("ffn", None) == v1.sd_at("ffn", 10) == v1.terms["ffn"].sd
    assert (DATA_DIR / "null-zoo-v1.json").read_text() == v1.to_json()


def test_v2_round_trips_and_has_its_own_id(v2: NullModel, tmp_path: Path) -> None:
    f = tmp_path / "n.json"
    f.write_text(v2.to_json())
    again = load_null(f)
    assert again.to_json() == v2.to_json() and again.null_id == v2.null_id and v2.null_id.startswith("null/2:")
    assert json.loads(v2.to_json())["format"] == "pawprint-null/2"


def test_spread_grows_as_shared_tokens_shrink_and_is_never_narrowed(v2: NullModel) -> None:
    for t in TERMS:
        assert v2.sd_at(t, REF_M) == pytest.approx(v2.terms[t].sd)
        assert v2.sd_at(t, REF_M // 16) == pytest.approx(v2.terms[t].sd * 16 ** EXP[t])
        assert v2.sd_at(t, 100 * REF_M) == pytest.approx(v2.terms[t].sd)  # no extrapolation above ref_m
    with pytest.raises(NullError, match="shared probe tokens"):
        assess([(t, 0.0) for t in TERMS], v2)


def test_bad_scaling_is_refused(v2: NullModel, tmp_path: Path) -> None:
    body = json.loads(v2.to_json())
    f = tmp_path / "n.json"
    for broken in ({**body, "scaling": {"ref_m": 0, "m_exponent": body["scaling"]["m_exponent"]}},
                   {**body, "scaling": {"ref_m": 4096, "m_exponent": {"ffn": 0.5}}},
                   {**body, "scaling": {"ref_m": 4096, "m_exponent": {t: 3.0 for t in TERMS}}}):
        f.write_text(json.dumps(broken))
        with pytest.raises(NullError, match="scaling"):
            load_null(f)
    f.write_text(json.dumps({**body, "format": "pawprint-null/1"}))
    with pytest.raises(NullError, match="no scaling"):
        load_null(f)
    del body["scaling"]
    f.write_text(json.dumps(body))
    with pytest.raises(NullError, match="malformed"):
        load_null(f)


@pytest.mark.parametrize("m", [128, 512])
def test_v2_is_calibrated_at_small_overlap_where_v1_is_not(v1: NullModel, v2: NullModel, m: int) -> None:
    """Independent pairs sharing few probe tokens: the v1 null (fitted at 4096) calls far too many of them
    significant; v2 stays within the nominal rates."""
    ps1 = np.array([assess(s, v1).p_value for s in _pairs(np.random.default_rng(m), 400, m)])
    ps2 = np.array([assess(s, v2, m).p_value for s in _pairs(np.random.default_rng(m), 400, m)])
    assert (ps1 <= 0.05).mean() > 0.15
    assert (ps2 <= 0.05).mean() <= 0.05 + 0.02 and (ps2 <= 0.01).mean() <= 0.01 + 0.01
    assert ps2.min() > 1e-6


def test_a_derivative_stays_derived_at_small_overlap(v2: NullModel) -> None:
    scores = [(t, c) for _ in range(2) for t, c in zip(TERMS, (0.6, 0.5, 0.55), strict=True)]
    assert base_verdict(assess(scores, v2, 256).p_value, 1) == "derived"


def _match(null: NullModel, cosines: tuple[float, float, float], m: int) -> Match:
    terms = tuple(TermScoreRecord(layer, layer, t, format_score(c))
                  for layer in (2, 3) for t, c in zip(TERMS, cosines, strict=True))
    raw = Match("b", b"\1" * 32, "a" * 64, "p", format_score(float(np.mean(cosines))),
                format_score(min(cosines)), m, "inconclusive", terms)
    return _calibrated(raw, null)


def test_receipt_p_uses_its_shared_tokens_and_rederives(v2: NullModel) -> None:
    few, many = _match(v2, (0.09, 0.015, 0.02), 200), _match(v2, (0.09, 0.015, 0.02), 4096)
    assert few.p_value is not None and many.p_value is not None
    assert float(few.p_value) > float(many.p_value)  # the same cosines mean less on fewer tokens
    matches = decide([few, _match(v2, (0.9, 0.8, 0.85), 300)])
    assert recheck_verdict(matches, verdict_of(matches), DEFAULT_THRESHOLDS.rule, v2, v2.null_id) is True
    # the same receipt with its shared tokens altered no longer re-derives
    forged = [dataclasses.replace(matches[0], common_probe_tokens=4096), matches[1]]
    assert recheck_verdict(forged, verdict_of(forged), DEFAULT_THRESHOLDS.rule, v2, v2.null_id) is False
    # and a receipt drawn with v1 names v1, which is still shipped: it re-derives with its own null
    v1 = shipped_nulls()["null/1:9c980bb9ed8f65d823dfe9b3156532cb"]
    old = decide([_match(v1, (0.09, 0.015, 0.02), 200)])
    assert recheck_verdict(old, verdict_of(old), DEFAULT_THRESHOLDS.rule, v1, v1.null_id) is True
    assert recheck_verdict(old, verdict_of(old), DEFAULT_THRESHOLDS.rule, v2, v1.null_id) is None


def test_shipped_nulls_keep_old_ids_and_v2_scales_v1() -> None:
    shipped = shipped_nulls()
    assert "null/1:9c980bb9ed8f65d823dfe9b3156532cb" in shipped
    default = load_null(DATA_DIR / "null-zoo-v2.json")
    assert default.scaled and default.null_id in shipped and load_null().null_id in shipped
    v1 = shipped["null/1:9c980bb9ed8f65d823dfe9b3156532cb"]
    # v2 keeps v1's reference measurements; only the dependence on m is added
    assert default.terms == v1.terms and default.pairs == v1.pairs and default.corr == v1.corr
    # m0: the most probe tokens a pair of v1's calibration population shared (they shared 985-1857)
    assert default.ref_m == 1857 and all(0 < a <= 2 for a in (default.m_exponents or {}).values())
