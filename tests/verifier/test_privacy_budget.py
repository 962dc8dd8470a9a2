"""Answer with less (issue 16): scores rounded to what the verdict needs, no scores in an insufficient-evidence
receipt, and per-key submission budgets on by default that count degenerate and near-duplicate submissions and
refuse them past the budget."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from owner._fingerprint import build_bundle
from protocol import PrivateKey, Role, TrustStore, format_score, parse_score
from verifier import Registry, ServerConfig, VerifierService
from verifier._access import DAY_S, RateLimits, SubmissionBudget, SubmissionGuard, terms_sketch
from verifier._calibration import load_null
from verifier._compare import VERDICT_PLACES, score_rounding_z_bound, verdict_score
from verifier.errors import ConfigError, LimitExceeded
from zoo import trust_attacks as A


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_scores_are_rounded_to_three_places_in_the_protocol_spelling() -> None:
    assert VERDICT_PLACES == 3
    assert verdict_score(0.123456) == "0.123000"
    assert verdict_score(0.12351) == "0.124000"
    assert verdict_score(0.1235) == "0.123000"  # the binary 0.1235 lies a little below .1235
    assert verdict_score(-0.0004) == "0.000000"  # one spelling of zero
    assert verdict_score(0.99951) == "1.000000"
    assert parse_score(verdict_score(0.5)) == parse_score(format_score(0.5))
    with pytest.raises(Exception, match="finite"):
        verdict_score(float("nan"))


def test_rounding_bound_is_small_against_the_shipped_null() -> None:
    null = load_null(Path(__file__).resolve().parents[2] / "verifier" / "data" / "null-zoo-v1.json")
    bound = score_rounding_z_bound(null)
    assert 0.01 < bound < 0.1  # 3 places; 0.0775 for null-zoo-v1
    assert score_rounding_z_bound(null, 6) == pytest.approx(bound / 1000)


def test_budgets_are_on_by_default_and_checked() -> None:
    config = ServerConfig(insecure_loopback=True)
    assert config.rate_limits == RateLimits(per_caller=False)
    assert config.submission_budget == SubmissionBudget()
    assert SubmissionBudget().submissions_per_day == 200 and SubmissionBudget().suspicious_per_day == 20
    with pytest.raises(ConfigError):
        SubmissionBudget(submissions_per_day=0)
    with pytest.raises(ConfigError):
        SubmissionBudget(near_duplicate_cosine=1.5)


def _terms(seed: int, n: int = 24) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(f"t{i}", rng.standard_normal((n, n)).astype(np.float32)) for i in range(3)]


def test_sketch_is_fixed_and_sees_near_duplicates() -> None:
    a, b = _terms(1), _terms(2)
    sa = terms_sketch(a)
    assert np.array_equal(sa, terms_sketch(a))
    assert float(np.linalg.norm(sa)) == pytest.approx(1.0)
    # scale and shift (the comparison ignores both) do not change it
    assert float(sa @ terms_sketch([(k, 3 * t + 1) for k, t in a])) == pytest.approx(1.0, abs=1e-6)
    near = [(k, t + 0.02 * np.random.default_rng(9).standard_normal(t.shape)) for k, t in a]
    assert float(sa @ terms_sketch(near)) > 0.99
    assert abs(float(sa @ terms_sketch(b))) < 0.5


def test_guard_counts_suspicious_submissions_and_refuses_past_the_budget() -> None:
    clock = Clock()
    guard = SubmissionGuard(SubmissionBudget(submissions_per_day=10, suspicious_per_day=2), clock)
    key, other = "a" * 64, "b" * 64
    assert guard.record(key, terms_sketch(_terms(1)), degenerate=False) is None
    assert guard.record(key, terms_sketch(_terms(1)), degenerate=False) == "near-duplicate"
    assert guard.record(key, terms_sketch(_terms(2)), degenerate=True) == "degenerate"
    with pytest.raises(LimitExceeded, match="degenerate or near-duplicate"):
        guard.record(key, terms_sketch(_terms(3)), degenerate=True)
    with pytest.raises(LimitExceeded, match="retry in"):
        guard.admit(key)  # a key caught probing is not answered for the rest of the day
    guard.admit(other)  # another key is not
    assert guard.record(other, terms_sketch(_terms(1)), degenerate=False) is None
    clock.now += DAY_S
    guard.admit(key)
    for i in range(10):
        guard.admit(other)
        guard.record(other, terms_sketch(_terms(100 + i)), degenerate=False)
    with pytest.raises(LimitExceeded, match="10 submissions per key per day"):
        guard.admit(other)


def test_budgets_survive_a_restart_and_are_shared_by_processes_on_one_directory(tmp_path: Path) -> None:
    """The budget used to live in the serving process: a restart reset it, and each of N processes serving one
    data directory gave a key its own budget (N times the probing). Now the counts are in the data directory."""
    clock = Clock()
    budget = SubmissionBudget(submissions_per_day=3, suspicious_per_day=1)
    key = "c" * 64
    first = Registry(tmp_path / "d")
    guard = SubmissionGuard(budget, clock, first)
    for i in range(2):
        guard.admit(key)
        guard.record(key, terms_sketch(_terms(200 + i)), degenerate=False)
    guard.admit(key)
    guard.record(key, terms_sketch(_terms(300)), degenerate=True)  # the one suspicious submission allowed
    first.close()
    restarted = Registry(tmp_path / "d")  # a new process on the same directory
    again = SubmissionGuard(budget, clock, restarted)
    with pytest.raises(LimitExceeded, match="3 submissions per key per day"):
        again.admit(key)
    other = SubmissionGuard(budget, clock, Registry(tmp_path / "d"))  # and any other process serving it
    with pytest.raises(LimitExceeded):
        other.admit(key)
    clock.now += DAY_S + 1  # a day later the key may submit again, and the old events are forgotten
    again.admit(key)
    again.record(key, terms_sketch(_terms(400)), degenerate=False)
    assert [sus for _t, sus in restarted.budget_events(key, 0.0)] == [False]
    restarted.close()


def _lab(data: Path, base: Path) -> A.Lab:
    """``zoo.trust_attacks.Lab.create`` with every default of the configuration but the null, which is named
    (the shipped v1; nothing here depends on the verdict's calibration)."""
    vendor, owner, framer, verifier = (PrivateKey.from_seed(bytes([i]) * 32) for i in (11, 12, 13, 14))
    trust = TrustStore()
    trust.add(vendor.public_key, Role.VENDOR, name="vendor")
    trust.add(owner.public_key, Role.OWNER, name="owner")
    trust.add(framer.public_key, Role.OWNER, name="framer")
    trust.add(verifier.public_key, Role.VERIFIER, name="verifier")
    registry = Registry(data, clock=lambda: float(A.NOW))
    registry.add_base("llama-base", build_bundle(base, vendor, now=A.NOW), trust)
    null = Path(__file__).resolve().parents[2] / "verifier" / "data" / "null-zoo-v1.json"
    counter = iter(range(1, 1 << 30))
    service = VerifierService(verifier, trust, registry, ServerConfig(insecure_loopback=True, null_path=str(null)),
                              clock=lambda: float(A.NOW),
                              rng=lambda n: hashlib.sha256(b"lab%d" % next(counter)).digest()[:n])
    return A.Lab(service, registry, owner, framer, vendor, verifier)


def test_one_hot_probing_gets_no_scores_and_is_refused(tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    """The issue's attack through the real service with its defaults: degenerate submissions are answered
    insufficient-evidence without a single score, and refused once the key's budget is spent; an honest
    submission from another key still gets its scores (rounded to three places)."""
    base, held = tiny_model("llama", 0), tiny_model("llama", 1)
    lab = _lab(tmp_path / "lab", base)
    try:
        fp = lab.honest(held)
        budget = SubmissionBudget().suspicious_per_day
        for _ in range(budget):
            r = lab.submit(A.one_hot(fp))
            assert r.verdict == "insufficient-evidence" and r.evidence
            assert r.matches == () and r.compared == 0
        with pytest.raises(LimitExceeded):
            lab.submit(A.one_hot(fp))
        with pytest.raises(LimitExceeded):
            lab.submit((fp.manifest, fp.terms))  # the key is refused for the day, honest terms or not
        honest = lab.submit((fp.manifest, fp.terms), key=lab.framer)
        # an independent model: compared, counted, and (from a sketching verifier, the default) no score stated
        assert honest.verdict == "independent" and honest.compared == 1 and honest.matches == ()
        derived = lab.honest(base)
        related = lab.submit((derived.manifest, derived.terms), key=lab.framer)
        assert related.verdict == "derived" and related.matches
        for t in related.matches[0].terms:
            assert t.cosine.endswith("000")  # rounded to three places
    finally:
        lab.close()
