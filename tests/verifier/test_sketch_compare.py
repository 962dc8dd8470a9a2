"""The comparison on sketches (``benchmarks.sketches.compare_sketches``): the verifier's layer matching and term
scores, with the cosines taken on public sketches instead of full terms."""

from __future__ import annotations

import numpy as np

from benchmarks.sketches import compare_sketches, sketch_set
from protocol import TERMS, ProbeSpec
from protocol.terms import InvariantSet
from verifier import compare

N, WIDTH = 160, 24


def _model(rng: np.random.Generator, layers: int) -> list[dict[str, np.ndarray]]:
    """Per layer, a d x d weight product per term (what the terms see through the probe rows)."""
    return [{t: rng.standard_normal((WIDTH, WIDTH)) for t in TERMS} for _ in range(layers)]


def _inv(rows: np.ndarray, weights: list[dict[str, np.ndarray]], layers: tuple[int, ...],
         present: np.ndarray) -> InvariantSet:
    probes = ProbeSpec("sketch-test", 1, "test", tuple(f"t{i}" for i in range(N)))
    x = rows[present]
    terms = {(layer, t): (x @ w[t] @ x.T).astype(np.float32) for layer, w in zip(layers, weights, strict=True)
             for t in TERMS}
    return InvariantSet.create(method="pawprint", method_id="test", probes=probes,
                               present=tuple(bool(p) for p in present), layers=layers,
                               model={"d_model": WIDTH}, terms=terms)


def test_sketch_comparison_matches_layers_and_tracks_scores_like_the_full_one() -> None:
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((N, WIDTH))
    every = np.ones(N, dtype=bool)
    base_w = _model(rng, 5)
    base = _inv(rows, base_w, (0, 1, 2, 3, 4), every)
    # a depth-pruned fine-tune: layers 1 and 3 dropped, the rest moved by 40 % of their norm
    kept = [0, 2, 4]
    tuned = [{t: w[t] + 0.4 * rng.standard_normal((WIDTH, WIDTH)) for t in TERMS} for w in (base_w[i] for i in kept)]
    suspect = _inv(rows, tuned, (0, 1, 2), every)
    other = _inv(rows, _model(rng, 3), (0, 1, 2), every)

    for b, want_pairs in ((base, [(0, 0), (1, 2), (2, 4)]), (other, None)):
        full = compare(suspect, b, layer_pairs="match")
        full_pairs = sorted({(t.layer_a, t.layer_b) for t in full.terms})
        scores, pairs = compare_sketches(sketch_set(suspect, 64), sketch_set(b, 64), suspect.layers, b.layers)
        if want_pairs is not None:
            assert full_pairs == want_pairs
            assert pairs == want_pairs  # the sketches find the layers the pruning kept
        full_scores = [(t.term, t.cosine) for t in full.terms]
        if pairs == full_pairs:
            assert [t for t, _ in scores] == [t for t, _ in full_scores]  # compare's order
            diffs = [abs(c - f) for (_, c), (_, f) in zip(scores, full_scores, strict=True)]
            # rank-24 terms: the sketch sees W through k x 24 Gaussian maps, so the spread is set by 24, not k^2
            # (0.07 at most here); a sketch with the wrong projections misses by about the cosine itself (0.9)
            assert max(diffs) < 0.15
    related = np.mean([c for _, c in compare_sketches(sketch_set(suspect, 64), sketch_set(base, 64),
                                                      suspect.layers, base.layers)[0]])
    unrelated = np.mean([c for _, c in compare_sketches(sketch_set(suspect, 64), sketch_set(other, 64),
                                                        suspect.layers, other.layers)[0]])
    assert related > 0.8 and abs(unrelated) < 0.1


def test_sketch_set_uses_the_probe_set_and_present_tokens() -> None:
    rng = np.random.default_rng(6)
    rows = rng.standard_normal((N, WIDTH))
    present = np.ones(N, dtype=bool)
    present[::7] = False
    w = _model(rng, 2)
    inv = _inv(rows, w, (0, 1), present)
    sk = sketch_set(inv, 16)
    assert sorted(sk) == sorted(inv.terms) and all(s.shape == (16, 16) for s in sk.values())
    # the same weights seen on every token: the absent tokens only add rows, the cosine stays high
    full = _inv(rows, w, (0, 1), np.ones(N, dtype=bool))
    scores, pairs = compare_sketches(sk, sketch_set(full, 16), inv.layers, full.layers)
    assert pairs == [(0, 0), (1, 1)] and min(c for _, c in scores) > 0.7


def test_sketch_sets_at_several_sizes_equal_sketching_at_each() -> None:
    from benchmarks.sketches import sketch_sets

    rng = np.random.default_rng(7)
    inv = _inv(rng.standard_normal((N, WIDTH)), _model(rng, 2), (0, 1), np.ones(N, dtype=bool))
    many = sketch_sets(inv, (8, 32, 16))
    for k in (8, 16, 32):
        one = sketch_set(inv, k)
        assert all(np.allclose(many[k][key], one[key]) for key in one)
