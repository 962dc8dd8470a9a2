"""``pawprint verifier refit-null``: a v2 null fitted on a registry's own independent bases (verifier._refit).

A small registry of tiny llama bases (six seeds: 15 independent pairs) with a squatter's derivative of one of
them registered as a base; the refitted null excludes the derivative's pairs, is deterministic, loads, and the
service signs receipts with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pawprint.cli import main
from protocol import TERMS
from tests.verifier.fixtures import perturb
from verifier import ServerConfig, VerifierService, load_null, recheck_verdict
from verifier._calibration import DATA_DIR
from verifier._pins import file_sha256
from verifier._refit import (
    EXPONENT_MIN_PAIRS,
    INDEPENDENT,
    BasePair,
    fit_registry_null,
    leave_one_out,
    overlap_exponents,
)
from zoo.trust_attacks import Lab

SEEDS = range(6)
V2 = DATA_DIR / "null-zoo-v2.json"  # the zoo's overlap-scaled null: what a refit without a floor starts from


@pytest.fixture(scope="module")
def registry(tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six independent tiny llama bases, then a perturbed copy of the first registered as a base ("squatter")."""
    root = tmp_path_factory.mktemp("refit")
    bases = [(f"llama-s{s}", tiny_model("llama", seed=s)) for s in SEEDS]
    bases.append(("squatter", perturb(bases[0][1], root / "squatter")))
    lab = Lab.create(root / "data", bases)
    lab.close()
    return root / "data"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["verifier", "refit-null", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _refit(capsys: pytest.CaptureFixture[str], data: Path, out: Path, *extra: str) -> dict[str, object]:
    rc, stdout, err = _run(capsys, "--data", str(data), "--out", str(out), "--json", *extra)
    assert rc == 0, err
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


def test_refits_from_the_registry_and_checks_calibration(registry: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """With a v2 current null (--null), the refit is a v2 null of the registry's pairs."""
    out = tmp_path / "null.json"
    doc = _refit(capsys, registry, out, "--null", str(V2))
    null = load_null(out)
    assert doc["null_id"] == null.null_id and null.null_id.startswith("null/2:") and doc["floor"] is None
    assert null.pairs == 15 and doc["counts"] == {"independent": 15, "excluded": 6, "incomparable": 0}
    assert null.source.startswith("refit from registry ") and "15 independent base pairs" in null.source
    shipped = load_null(V2)
    assert null.method_id == shipped.method_id
    # 15 pairs on one probe set: m does not vary, so the shipped exponents are kept (the stated rule)
    assert doc["exponents"]["rule"] == "kept"  # type: ignore[index]
    assert dict(null.m_exponents or {}) == dict(shipped.m_exponents or {})
    pairs = [p for p in doc["pairs"] if p["status"] == INDEPENDENT]  # type: ignore[attr-defined]
    assert null.ref_m == max(p["m"] for p in pairs)
    for t in TERMS:  # every pair shares ref_m here: the null is the plain mean and spread of their layer scores
        scores = np.array([c for p in pairs for term, c in p["scores"] if term == t])
        assert len(scores) == null.terms[t].samples == 30  # 15 pairs x 2 layers (last2)
        assert null.terms[t].mean == pytest.approx(scores.mean(), rel=1e-6)
        assert null.terms[t].sd == pytest.approx(scores.std(ddof=1), rel=1e-6)
    loo = doc["leave_one_out"]
    assert isinstance(loo, dict)
    assert loo["tests"] == 30 and loo["untested_bases"] == []  # each pair once per base left out
    for key in ("refit", "current"):
        for level in ("le_0.01", "le_0.05"):
            rate = loo[key][level]
            assert rate["of"] == 30 and 0 <= rate["count"] <= 30
    assert {t["p"] for t in loo["per_test"]} and all(0 < t["p"] < 1 for t in loo["per_test"])


def test_a_v3_current_null_keeps_its_sampling_spread_and_refits_the_floor(
        registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default (shipped v3) current null: the refit keeps its sampling spread, ref_m and exponents, and fits
    the mean, the floor (the pairs' variance beyond the sampling spread) and the correlation on the registry."""
    out = tmp_path / "null.json"
    doc = _refit(capsys, registry, out)
    null, current = load_null(out), load_null()
    assert current.floor is not None and null.floor is not None
    assert doc["null_id"] == null.null_id and null.null_id.startswith("null/3:") and doc["floor"] == dict(null.floor)
    assert null.pairs == 15 and (null.ref_m, null.m_exponents) == (current.ref_m, current.m_exponents)
    assert "floor, mean and correlation refitted" in null.source
    pairs = [p for p in doc["pairs"] if p["status"] == INDEPENDENT]  # type: ignore[attr-defined]
    for t in TERMS:
        scores = np.array([c for p in pairs for term, c in p["scores"] if term == t])
        s2 = np.mean([current.sampling_sd_at(t, p["m"]) ** 2 for p in pairs for term, _ in p["scores"] if term == t])
        assert null.terms[t].sd == current.terms[t].sd and null.terms[t].mean == pytest.approx(scores.mean())
        assert null.floor[t] == pytest.approx(np.sqrt(max(0.0, scores.var(ddof=1) - s2)), abs=1e-9)
    assert doc["leave_one_out"]["tests"] == 30  # type: ignore[index]


def test_a_registered_derivative_is_excluded_and_listed(registry: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    doc = _refit(capsys, registry, tmp_path / "null.json")
    by_pair = {(p["a"], p["b"]): p for p in doc["pairs"]}  # type: ignore[attr-defined]
    squat = by_pair[("llama-s0", "squatter")]
    assert squat["status"] == "excluded" and squat["verdict_current"] == "derived"
    assert "derived under null/3:" in squat["reason"]
    for s in SEEDS[1:]:  # its pairs with the others repeat llama-s0's: excluded too, not fitted twice
        assert by_pair[(f"llama-s{s}", "squatter")]["status"] == "excluded"
    assert all(p["status"] == INDEPENDENT for k, p in by_pair.items() if "squatter" not in k)
    rc, text, _ = _run(capsys, "--data", str(registry), "--out", str(tmp_path / "again.json"))
    assert rc == 0
    assert "excluded llama-s0 | squatter: derived under" in text
    assert "leave-one-base-out check: 30 tests" in text and "(nominal 1 %)" in text


def test_same_registry_same_bytes(registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    rc_a, out_a, _ = _run(capsys, "--data", str(registry), "--out", str(a), "--json")
    rc_b, out_b, _ = _run(capsys, "--data", str(registry), "--out", str(b), "--json")
    assert rc_a == rc_b == 0
    assert a.read_bytes() == b.read_bytes()
    assert out_a.replace(str(a), "X") == out_b.replace(str(b), "X")


def test_too_few_pairs_is_refused(registry: Path, tmp_path: Path, tiny_model: Callable[..., Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "null.json"
    rc, _, err = _run(capsys, "--data", str(registry), "--out", str(out), "--min-pairs", "16")
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 1 and "15 independent base pairs" in err and "at least 16 (--min-pairs)" in err
    # the default minimum (10): three bases give 3 pairs
    lab = Lab.create(tmp_path / "small", [(f"b{s}", tiny_model("llama", seed=s)) for s in range(3)])
    lab.close()
    rc, stdout, err = _run(capsys, "--data", str(tmp_path / "small"), "--out", str(out), "--json")
    assert rc == 2 and not out.exists()
    assert json.loads(stdout)["error"]["code"] == 2 and "at least 10" in err
    rc, _, err = _run(capsys, "--data", str(registry), "--out", str(out), "--min-pairs", "2")
    assert rc == 2 and "at least 3" in err  # no null is fitted on fewer than 3 pairs


@pytest.mark.parametrize("case", ["missing", "unreadable", "not-a-null", "no-out-dir"])
def test_bad_input_is_one_line_and_exit_2(case: str, registry: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, out, extra = registry, tmp_path / "null.json", []
    if case == "missing":
        data = tmp_path / "nowhere"
    elif case == "unreadable":
        data = tmp_path / "bad"
        data.mkdir()
        (data / "registry.sqlite3").write_bytes(b"not a database" * 100)
    elif case == "not-a-null":
        (tmp_path / "junk.json").write_text("{}")
        extra = ["--null", str(tmp_path / "junk.json")]
    else:
        out = tmp_path / "no" / "such" / "null.json"
    rc, _, err = _run(capsys, "--data", str(data), "--out", str(out), *extra)
    assert rc == 2 and err.startswith("pawprint: error: ") and err.count("\n") == 1, err
    assert str(data if case in ("missing", "unreadable") else out if case == "no-out-dir" else "junk.json") in err
    assert not out.exists()


def test_the_service_signs_with_the_refitted_null(registry: Path, tmp_path: Path, tiny_model: Callable[..., Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """What ``verifier serve --null FILE --null-sha256 HEX --sketch 0`` runs: receipts name the refitted null and
    re-derive."""
    out = tmp_path / "null.json"
    _refit(capsys, registry, out)
    null = load_null(out)
    lab = Lab.create(tmp_path / "lab", [])  # keys only; the service below serves the refit registry
    lab.close()
    from verifier import Registry

    reg = Registry(registry)
    try:
        # sketch=0: full terms, judged with --null (sketched submissions are judged with the sketch null)
        config = ServerConfig(insecure_loopback=True, null_path=str(out), null_sha256=file_sha256(out),
                              submission_budget=None, rate_limits=None, sketch=0)
        service = VerifierService(lab.verifier, lab.service.trust, reg, config, clock=lambda: 1_700_000_000.0)
        assert service.null.null_id == null.null_id
        served = dataclasses.replace(lab, service=service, registry=reg)
        derived = perturb(tiny_model("llama", seed=2), tmp_path / "derived", seed=7)
        for model, derivative in ((derived, True), (tiny_model("llama", seed=9), False)):
            fp = served.honest(model)
            receipt = served.submit((fp.manifest, fp.terms))
            assert receipt.null_id == null.null_id and receipt.compared == 7
            assert (receipt.verdict == "derived") is derivative
            assert recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule, null, receipt.null_id,
                                   screened=receipt.screened) is True
    finally:
        reg.close()


def _synthetic(rng: np.random.Generator, n: int, ms: list[int], a: dict[str, float], sd: float = 0.01,
               layers: int = 1) -> list[BasePair]:
    """``n`` independent pairs (each of two bases of its own) whose term cosines are N(0, (sd (m/4096)^-a)^2)."""
    out = []
    for i in range(n):
        m = ms[i % len(ms)]
        scores = tuple((t, float(sd * (m / 4096) ** -a[t] * rng.standard_normal())) for _ in range(layers)
                       for t in TERMS)
        out.append(BasePair(f"a{i}", f"b{i}", 2 * i, 2 * i + 1, INDEPENDENT, m=m, scores=scores, p_current=0.5))
    return out


def test_the_exponent_rule_refits_only_with_enough_pairs_spanning_m() -> None:
    """Below EXPONENT_MIN_PAIRS, or with m all alike, the exponents are kept; with enough pairs whose spread
    follows m ** -a, maximum likelihood finds a, and the null is wider at small m."""
    rng = np.random.default_rng(0)
    true = {"attn_qk": 0.5, "attn_vo": 1.0, "ffn": 0.25}
    keep = {"attn_qk": 0.1, "attn_vo": 0.2, "ffn": 0.3}
    few = overlap_exponents(_synthetic(rng, EXPONENT_MIN_PAIRS - 1, [256, 4096], true), keep)
    alike = overlap_exponents(_synthetic(rng, 200, [4096], true), keep)
    assert few.rule == alike.rule == "kept" and dict(few.values) == dict(alike.values) == keep
    # m differing only between probe sets (another population) is not evidence about the exponent
    split = [dataclasses.replace(p, probe_set_id=str(p.m)) for p in _synthetic(rng, 200, [256, 4096], true)]
    assert overlap_exponents(split, keep).rule == "kept"
    many = _synthetic(rng, 400, [128, 512, 2048, 4096], true)
    fitted = overlap_exponents(many, keep)
    assert fitted.rule == "fitted"
    for t in TERMS:
        assert abs(fitted.values[t] - true[t]) < 0.1, (t, fitted.values[t])
    null, _ = fit_registry_null(many, load_null(V2), keep, "synthetic")
    assert null.ref_m == 4096
    for t in TERMS:
        assert null.terms[t].sd == pytest.approx(0.01, rel=0.15)
        assert null.sd_at(t, 128) > 2 * null.sd_at(t, 4096)


def test_leave_one_out_is_calibrated_on_a_population_that_fits_the_model() -> None:
    """Pairs drawn from the null's own model (one layer, independent terms): the leave-one-base-out rates come
    out near the nominal 1 % and 5 %; the same pairs at a quarter of the spread would be far from it."""
    rng = np.random.default_rng(1)
    keep = dict(load_null(V2).m_exponents or {})
    pairs = _synthetic(rng, 150, [4096], keep)
    report = leave_one_out(pairs, lambda pop: fit_registry_null(pop, load_null(V2), keep, "x")[0])
    s = report.summary()
    assert s["tests"] == 300 and not s["untested_bases"]
    assert 0.02 <= s["refit"]["le_0.05"]["fraction"] <= 0.085, s["refit"]
    assert s["refit"]["le_0.01"]["fraction"] <= 0.025, s["refit"]
    narrow = fit_registry_null([dataclasses.replace(p, scores=tuple((t, c / 4) for t, c in p.scores))
                                for p in pairs], load_null(V2), keep, "x")[0]
    from verifier import assess

    wide = [assess(list(p.scores), narrow, p.m).p_value for p in pairs]
    assert sum(p <= 0.05 for p in wide) / len(wide) > 0.2  # a spread 4x too narrow: P(Z > 1.645/4) = 0.34
