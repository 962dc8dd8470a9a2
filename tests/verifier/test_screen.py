"""The registry screen: on synthetic terms, the true base of a derived model is always among the top-k
candidates (derivatives near and far, tokens missing), the estimate tracks exact ICS, and probe sets and
methods are never mixed."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from owner._fingerprint import Fingerprint
from owner._invariants import METHOD_IDS, TERMS
from protocol import (
    Bundle,
    PrivateKey,
    ProtocolError,
    Tensor,
    TensorDigest,
    open_challenge,
    open_receipt,
    sign_message,
)
from protocol import ProbeSpec as ProbeSet
from protocol.terms import InvariantSet
from tests.verifier.fixtures import FakeClock, Keys
from verifier import Chunk, Registry, ServerConfig, VerifierService, compare, decide, recheck_verdict
from verifier._screen import SLOTS, ScreenIndex, SketchSpec, positions, sketch

pytest_plugins = ["tests.verifier.fixtures"]

N = 160
RANK = 12
LAYERS = (6, 7)


def probes(name: str = "p") -> ProbeSet:
    return ProbeSet(name, 1, "synthetic", tuple(f"▁{name}{i:04d}" for i in range(N)))


def random_terms(rng: np.random.Generator) -> dict[tuple[int, str], np.ndarray]:
    """Low-rank plus noise, like real terms: token-token structure, not white noise."""
    out = {}
    for layer in LAYERS:
        for t in TERMS:
            u, v = rng.standard_normal((N, RANK)), rng.standard_normal((N, RANK))
            out[(layer, t)] = (u @ v.T + 0.3 * rng.standard_normal((N, N))).astype(np.float32)
    return out


def mix(a: dict[tuple[int, str], np.ndarray], b: dict[tuple[int, str], np.ndarray],
        weight: float) -> dict[tuple[int, str], np.ndarray]:
    """``weight`` of ``a`` and the rest of ``b``, each standardised first (cosine with ``a`` ~ ``weight`` /
    sqrt(weight^2 + (1 - weight)^2))."""
    def z(m: np.ndarray) -> np.ndarray:
        return (m - m.mean()) / m.std()

    return {k: (weight * z(a[k]) + (1 - weight) * z(b[k])).astype(np.float32) for k in a}


def inv_set(terms: dict[tuple[int, str], np.ndarray], p: ProbeSet, present: np.ndarray | None = None,
            layers: tuple[int, ...] = LAYERS) -> InvariantSet:
    mask = np.ones(N, dtype=bool) if present is None else present
    rows = np.flatnonzero(mask)
    return InvariantSet.create(
        method="pawprint", method_id=METHOD_IDS["pawprint"], probes=p, present=tuple(bool(x) for x in mask),
        layers=layers, model={}, terms={(la, t): terms[(la, t)][np.ix_(rows, rows)] for la in layers for t in TERMS},
    )


@pytest.fixture(scope="module")
def registry() -> tuple[ScreenIndex, list[dict[tuple[int, str], np.ndarray]]]:
    rng = np.random.default_rng(0)
    p = probes()
    bases = [random_terms(rng) for _ in range(120)]
    # same-data siblings: related to base 0 but not derived from it
    bases += [mix(bases[0], random_terms(rng), 0.15) for _ in range(10)]
    index = ScreenIndex(SketchSpec(samples=1024))
    for i, terms in enumerate(bases):
        index.add(f"base-{i}", [inv_set(terms, p)])
    return index, bases


@pytest.mark.parametrize("weight", [0.2, 0.35, 0.6, 0.9])
@pytest.mark.parametrize("true_base", [3, 77])
def test_the_true_base_is_among_the_candidates(
    registry: tuple[ScreenIndex, list[dict[tuple[int, str], np.ndarray]]], weight: float, true_base: int
) -> None:
    index, bases = registry
    rng = np.random.default_rng(true_base * 100 + int(weight * 10))
    suspect = inv_set(mix(bases[true_base], random_terms(rng), weight), probes())
    candidates = index.query([suspect], k=5)
    assert f"base-{true_base}" in [c.key for c in candidates]
    exact = compare(suspect, inv_set(bases[true_base], probes())).ics
    assert candidates[0].key == f"base-{true_base}"
    assert abs(candidates[0].estimate - exact) < 0.1


def test_missing_tokens_and_fewer_layers(
    registry: tuple[ScreenIndex, list[dict[tuple[int, str], np.ndarray]]]
) -> None:
    index, bases = registry
    rng = np.random.default_rng(5)
    present = rng.random(N) > 0.3  # a vocabulary without 30% of the probe tokens
    derived = mix(bases[42], random_terms(rng), 0.3)
    for layers in (LAYERS, LAYERS[-1:]):
        suspect = inv_set(derived, probes(), present, layers)
        keys = [c.key for c in index.query([suspect], k=5)]
        assert "base-42" in keys, layers


def test_unrelated_suspect_scores_low(registry: tuple[ScreenIndex, list[dict[tuple[int, str], np.ndarray]]]) -> None:
    index, _ = registry
    suspect = inv_set(random_terms(np.random.default_rng(99)), probes())
    candidates = index.query([suspect], k=3)
    assert len(candidates) == 3 and all(abs(c.estimate) < 0.1 for c in candidates)


def test_probe_sets_and_methods_are_not_mixed(
    registry: tuple[ScreenIndex, list[dict[tuple[int, str], np.ndarray]]]
) -> None:
    index, bases = registry
    other = inv_set(bases[3], probes("q"))
    assert index.query([other], k=5) == []
    huref = inv_set(bases[3], probes())
    huref = InvariantSet.create(method="huref-2024", method_id=METHOD_IDS["huref-2024"], probes=huref.probes,
                         present=huref.present, layers=huref.layers, model={}, terms=huref.terms)
    assert index.query([huref], k=5) == []
    # a suspect with groups on two probe sets is ranked on the one the bases share
    keys = [c.key for c in index.query([other, inv_set(bases[3], probes())], k=1)]
    assert keys == ["base-3"]


def test_sketches_are_deterministic_and_compact(
    registry: tuple[ScreenIndex, list[dict[tuple[int, str], np.ndarray]]]
) -> None:
    index, bases = registry
    spec = index.spec
    assert positions("abc", N, spec)[0].tolist() == positions("abc", N, spec)[0].tolist()
    assert positions("abc", N, spec)[0].tolist() != positions("abd", N, spec)[0].tolist()
    assert SketchSpec(samples=1024, seed=1).id != spec.id
    s = sketch(inv_set(bases[0], probes()), spec)
    assert s.values.shape == (SLOTS, spec.samples) and s.slots.all()
    assert np.allclose(np.linalg.norm(s.values, axis=1), 1.0, atol=1e-5)
    assert index.nbytes() == len(index) * (SLOTS * spec.samples * 2 + SLOTS)


# ------------------------------------------------------------------------------------ in the verifier
def _decoy(base: Bundle, key: PrivateKey, seed: int) -> Bundle:
    """A vendor bundle on the base's probe set and shapes with unrelated (random, low-rank) terms."""
    manifest = base.open()
    rng = np.random.default_rng(seed)
    terms, table = {}, []
    for t in manifest.tensors:
        n = t.shape[0]
        u, v = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
        data = (u @ v.T + 0.3 * rng.standard_normal((n, n))).astype("<f4").tobytes()
        terms[t.name] = Tensor("F32", t.shape, data)
        table.append(TensorDigest(t.name, "F32", t.shape, hashlib.sha256(data).digest()))
    commitment = dataclasses.replace(manifest.weight_commitment,
                                     root=hashlib.sha256(b"decoy%d" % seed).digest())
    return Bundle.create(dataclasses.replace(manifest, tensors=tuple(table), weight_commitment=commitment),
                         terms, key)


def test_a_large_registry_is_screened_and_the_receipt_says_so(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_terms: Fingerprint
) -> None:
    """With more bases than ``screen_k`` the verifier compares only the screen's candidates; the true base is
    among them, the verdict is derived, the receipt names how many bases were screened and by which rule,
    Bonferroni counts them all, and the verdict re-derives from the receipt. The sketches are stored at
    publish time and read back by the next start-up instead of decoding every base's terms."""
    registry = Registry(tmp_path / "data")
    trust = keys.trust()
    for i in range(12):
        registry.add_base(f"decoy-{i}", _decoy(base_bundle, keys.vendor, i), trust)
    registry.add_base("llama-base", base_bundle, trust)
    sketched = registry._db.execute("SELECT COUNT(DISTINCT entry_idx) FROM sketches").fetchone()[0]
    assert sketched == 13
    registry.close()

    registry = Registry(tmp_path / "data", cache_bases=0)
    # the screen reads full terms; a sketching verifier compares every base's sketch instead (no screen)
    config = ServerConfig(insecure_loopback=True, screen_k=4, screen_floor=0.5, sketch=0)
    service = VerifierService(keys.verifier, trust, registry, config, clock=FakeClock())
    challenge = open_challenge(service.challenge(), keys.verifier.public_key)
    manifest = dataclasses.replace(derived_terms.manifest, nonce=challenge.nonce)
    signed = sign_message(manifest, keys.owner, "manifest")
    chunks = [Chunk(i, 0, derived_terms.terms[t.name].data) for i, t in enumerate(manifest.tensors)]
    receipt = open_receipt(service.submit(signed, chunks), keys.verifier.public_key)
    registry.close()

    assert receipt.screened == 13 and receipt.screen_rule is not None and "k=4" in receipt.screen_rule
    assert receipt.compared == len(receipt.matches) == 4  # the decoys' estimates are far below the floor
    assert receipt.matches[0].name == "llama-base" and receipt.verdict == "derived"
    assert recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule, service.null, receipt.null_id,
                           screened=receipt.screened) is True
    assert decide(receipt.matches, bases=13) == list(receipt.matches)  # Bonferroni over all 13
    # A receipt claiming fewer bases screened than compared does not parse.
    with pytest.raises(ProtocolError):
        dataclasses.replace(receipt, screened=receipt.compared - 1)


def test_the_suspects_standardised_terms_are_made_once_with_the_same_results() -> None:
    rng = np.random.default_rng(9)
    p = probes()
    suspect = inv_set(random_terms(rng), p)
    mask = np.ones(N, dtype=bool)
    mask[::7] = False  # a base lacking some probe tokens: other common rows, another cache entry
    bases = [inv_set(random_terms(rng), p), inv_set(random_terms(rng), p), inv_set(random_terms(rng), p, mask)]
    cache: dict[object, object] = {}
    for b in bases:
        assert compare(suspect, b, layer_pairs="match", a_cache=cache) == compare(suspect, b, layer_pairs="match")
    assert len(cache) == 2  # full rows once (shared by the first two bases), the masked rows once


def test_the_cache_of_decoded_base_terms_is_bounded_in_bytes(
    tmp_path: Path, keys: Keys, base_bundle: Bundle
) -> None:
    """Decoded base terms are kept for the next submission, but never more bytes of them than ``cache_bytes``
    (at n = 4096 one base's terms are 384 MiB): the oldest go first, and a base too large for the bound is
    not kept at all. What is read back is the same either way."""
    trust = keys.trust()
    registry = Registry(tmp_path / "data")
    for i in range(3):
        registry.add_base(f"decoy-{i}", _decoy(base_bundle, keys.vendor, i), trust)
    registry.close()
    unbounded = Registry(tmp_path / "data")
    everything = {b.name: b.invariants for b in unbounded.snapshot()[1]}
    one = sum(t.nbytes for s in everything["decoy-0"] for t in s.terms.values())
    assert len(unbounded._cache) == 3 and unbounded._cached_bytes == 3 * one
    unbounded.close()

    bounded = Registry(tmp_path / "data", cache_bytes=2 * one)
    for _ in range(2):
        bases = {b.name: b.invariants for b in bounded.snapshot()[1]}
        assert bases.keys() == everything.keys()
        for name, sets in bases.items():
            for got, want in zip(sets, everything[name], strict=True):
                assert got.terms.keys() == want.terms.keys()
                assert all(np.array_equal(got.terms[k], want.terms[k]) for k in want.terms)
        assert len(bounded._cache) == 2 and bounded._cached_bytes == 2 * one  # the two latest stay
    bounded.close()

    too_small = Registry(tmp_path / "data", cache_bytes=one - 1)
    too_small.snapshot()
    assert len(too_small._cache) == 0 and too_small._cached_bytes == 0
    too_small.close()
