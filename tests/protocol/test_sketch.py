"""The public, seeded two-sided sketch of a term (``protocol._sketch``): determinism, seeding, accuracy, errors."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from protocol._sketch import SketchError, sketch_cosine, sketch_matrix, sketch_term, sketched_values


def _centred_cosine(x: np.ndarray, y: np.ndarray) -> float:
    """The comparison's score on full terms (``verifier._ics.term_cosine``), written out independently."""
    a, b = x - x.mean(), y - y.mean()
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def _pair(rho: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n)) + 3.0  # an offset: the sketch must centre first
    y = rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal((n, n)) - 1.0
    return x, y


def test_same_inputs_same_bytes() -> None:
    x, _ = _pair(0.5, 64, 0)
    a = sketch_term(x, "probe-set-1", "attn_qk", 16)
    b = sketch_term(x.copy(), "probe-set-1", "attn_qk", 16)
    assert a.shape == (16, 16) and a.dtype == np.float64
    assert a.tobytes() == b.tobytes()


def test_stream_is_pinned() -> None:
    """The projections are a protocol fact: pinned by digest, and the first value re-derived from the spec
    (PCG64 seeded by the SHA-256 of the length-prefixed parts, top 53 bits + 0.5, Box-Muller's cosine branch)."""
    a = sketch_matrix("pin", "attn_qk", "rows", 10, 4)
    assert hashlib.sha256(a.astype("<f8").tobytes()).hexdigest() == (
        "720ceefcf09c2017104be9cb5465e6d7bdb09c3398345ea36119ce7f5f32336b")
    h = hashlib.sha256()
    for part in (b"pawprint/v1/term-sketch", b"pin", b"attn_qk", b"rows", b"10"):
        h.update(len(part).to_bytes(4, "big") + part)
    raw = np.random.PCG64(int.from_bytes(h.digest(), "big")).random_raw(2)
    u1, u2 = (((int(r) >> 11) + 0.5) * 2.0**-53 for r in raw)
    assert a[0, 0] == pytest.approx(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2), rel=1e-12)


def test_projection_is_standard_gaussian_and_nested() -> None:
    a = sketch_matrix("p", "ffn", "cols", 4000, 8)
    assert abs(float(a.mean())) < 0.01 and abs(float(a.std()) - 1.0) < 0.01
    assert np.array_equal(sketch_matrix("p", "ffn", "cols", 4000, 3), a[:3])  # nested in k
    assert not a.flags.writeable


def test_sketches_are_nested_in_k() -> None:
    """The sketch at k is k'/k times the top-left block of the one at k' > k: several sizes reveal no more."""
    x, _ = _pair(0.0, 50, 4)
    big = sketch_term(x, "p", "attn_vo", 24, present=[True] * 50)
    assert np.allclose(sketch_term(x, "p", "attn_vo", 8, present=[True] * 50), 3.0 * big[:8, :8])


def test_probe_set_term_and_side_each_change_the_projection() -> None:
    base = sketch_matrix("set-a", "attn_qk", "rows", 50, 8)
    for other in (sketch_matrix("set-b", "attn_qk", "rows", 50, 8), sketch_matrix("set-a", "attn_vo", "rows", 50, 8),
                  sketch_matrix("set-a", "attn_qk", "cols", 50, 8)):
        c = float(np.vdot(base, other) / (np.linalg.norm(base) * np.linalg.norm(other)))
        assert abs(c) < 0.1  # unrelated draws, not a shifted copy
    x, _ = _pair(0.5, 50, 1)
    sa, sb = sketch_term(x, "set-a", "attn_qk", 8), sketch_term(x, "set-b", "attn_qk", 8)
    assert not np.allclose(sa, sb)


def test_sketch_is_linear_and_shift_free() -> None:
    x, y = _pair(0.3, 40, 2)
    s = sketch_term(x, "p", "ffn", 8)
    assert np.allclose(sketch_term(2.5 * x + 7.0, "p", "ffn", 8), 2.5 * s)
    assert np.allclose(sketch_term(x + y, "p", "ffn", 8), s + sketch_term(y, "p", "ffn", 8))
    assert sketch_cosine(s, sketch_term(-3 * x, "p", "ffn", 8)) == pytest.approx(-1.0)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("k", [16, 32, 64])
def test_sketch_cosine_tracks_the_term_cosine(rho: float, k: int) -> None:
    """For terms of high effective rank the k x k entries of a two-sided Gaussian sketch are close to k^2
    independent samples of the pair, so the sketch cosine misses the centred terms' cosine by a spread of
    (1 - rho^2) / k (the sample correlation's; the rows shared by the entries make it 0.9-1.3 of that at n = 256,
    with tails to 4 spreads over 60 draws). Each draw is held to 6 spreads and the rms over 24 draws to 2; a
    sketch with mismatched projections, or without centring, misses by far more (checked below)."""
    spread = (1 - rho * rho) / k
    errs = []
    for seed in range(24):
        x, y = _pair(rho, 256, seed)
        full = _centred_cosine(x, y)
        est = sketch_cosine(sketch_term(x, f"set-{seed}", "attn_vo", k), sketch_term(y, f"set-{seed}", "attn_vo", k))
        assert abs(est - full) <= 6 * spread, (seed, est, full)
        errs.append(est - full)
    assert math.sqrt(float(np.mean(np.square(errs)))) <= 2 * spread


def test_the_accuracy_check_can_fail() -> None:
    """The tolerance above is tight enough to catch a wrong sketch: other projections for one side, or an
    uncentred term with a large mean."""
    x, y = _pair(0.9, 192, 0)
    full, spread = _centred_cosine(x, y), (1 - 0.81) / 32
    wrong_keys = sketch_cosine(sketch_term(x, "s", "attn_qk", 32), sketch_term(y, "s", "attn_vo", 32))
    assert abs(wrong_keys - full) > 6 * spread
    a, b = sketch_matrix("s", "ffn", "rows", 192, 32), sketch_matrix("s", "ffn", "cols", 192, 32)
    uncentred = sketch_cosine(a @ x @ b.T, a @ (y + 20.0) @ b.T)
    assert abs(uncentred - full) > 6 * spread


def test_present_tokens_pick_the_projection_columns() -> None:
    """A term over the present tokens is sketched as the zero-padded term over the whole probe set: the same
    number, whatever the absent tokens."""
    x, _ = _pair(0.0, 30, 3)
    present = np.ones(30, dtype=bool)
    present[[2, 7, 19]] = False
    small = x[np.ix_(present, present)]
    padded = np.zeros((30, 30))
    padded[np.ix_(present, present)] = small - small.mean()
    got = sketch_term(small, "p", "attn_qk", 6, present=tuple(bool(v) for v in present))
    assert np.allclose(got, sketch_term(padded, "p", "attn_qk", 6))  # padded sums to 0: centring leaves it
    a, b = sketch_matrix("p", "attn_qk", "rows", 30, 6), sketch_matrix("p", "attn_qk", "cols", 30, 6)
    assert np.allclose(got, a @ padded @ b.T / 6)
    # rectangular: rows and columns on their own present tokens
    cols = np.ones(30, dtype=bool)
    cols[:4] = False
    rect = x[np.ix_(present, cols)]
    assert sketch_term(rect, "p", "attn_qk", 6, present=present, present_cols=cols).shape == (6, 6)


@pytest.mark.parametrize(("term", "kwargs", "message"), [
    (np.zeros(5), {}, "2-D"),
    (np.zeros((0, 3)), {}, "2-D"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), {}, "non-finite"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), {}, "non-finite"),
    (np.array([["a", "b"], ["c", "d"]]), {}, "numeric"),
    (np.ones((3, 3), dtype=bool), {}, "numeric"),
    (np.eye(3), {"k": 1}, "k must be an integer >= 2"),
    (np.eye(3), {"k": True}, "k must be an integer >= 2"),
    (np.eye(3), {"k": 4.0}, "k must be an integer >= 2"),
    (np.eye(3), {"present": [True, True, False, False]}, "marks 2 tokens present"),
    (np.eye(3), {"present": [1, 1, 1]}, "booleans"),
    (np.eye(3), {"probe_set_id": ""}, "probe_set_id"),
    (np.eye(3), {"term_key": ""}, "term_key"),
])
def test_bad_input_gets_one_clear_error(term: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"probe_set_id": "p", "term_key": "ffn", "k": 4, **kwargs}
    with pytest.raises(SketchError, match=message):
        sketch_term(term, **args)  # type: ignore[arg-type]


def test_cosine_and_count_errors() -> None:
    with pytest.raises(SketchError, match="one shape"):
        sketch_cosine(np.eye(3), np.eye(4))
    with pytest.raises(SketchError, match="non-finite"):
        sketch_cosine(np.eye(2), np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(SketchError, match="side"):
        sketch_matrix("p", "ffn", "diagonal", 3, 2)
    with pytest.raises(SketchError, match="positive integer"):
        sketch_matrix("p", "ffn", "rows", 0, 2)
    assert sketch_cosine(np.zeros((2, 2)), np.eye(2)) == 0.0
    assert sketched_values(64, 96) == 64 * 64 * 96
