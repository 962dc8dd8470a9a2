"""``owner.compare`` reads terms in row blocks and centres them on the fly; every cosine it reports must be the
straightforward one: both terms restricted to the common probe tokens, standardised, cosine (``term_cosine``)."""

from __future__ import annotations

import numpy as np
import pytest

import verifier._ics as inv_mod
from owner._invariants import METHOD_IDS
from protocol import TERMS, ProbeSpec
from protocol.terms import InvariantSet
from verifier import compare, layer_similarity, match_layers, term_cosine

N = 48
TOKENS = tuple(f"tok{i:03d}" for i in range(N))


def _set(rng: np.random.Generator, layers: tuple[int, ...], present: np.ndarray, dtype: type = np.float32,
         like: InvariantSet | None = None, weight: float = 0.0) -> InvariantSet:
    rows = np.flatnonzero(present)
    terms = {}
    for layer in layers:
        for t in TERMS:
            full = rng.standard_normal((N, N)) + 3.0  # an offset: centring matters
            if like is not None and (layer, t) in like.terms:
                other = np.zeros((N, N))
                like_rows = np.flatnonzero(like.present)
                other[np.ix_(like_rows, like_rows)] = like.terms[(layer, t)]
                full = weight * other + (1 - weight) * full
            terms[(layer, t)] = full[np.ix_(rows, rows)].astype(dtype)
    return InvariantSet.create(method="pawprint", method_id=METHOD_IDS["pawprint"],
                               probes=ProbeSpec("p", 1, "test", TOKENS), present=tuple(bool(x) for x in present),
                               layers=layers, model={}, terms=terms)


def _straightforward(a: InvariantSet, b: InvariantSet, la: int, lb: int, name: str) -> float:
    common = [t for t in a.present_tokens if t in set(b.present_tokens)]
    ia = [a.present_tokens.index(t) for t in common]
    ib = [b.present_tokens.index(t) for t in common]
    return term_cosine(a.terms[(la, name)][np.ix_(ia, ia)], b.terms[(lb, name)][np.ix_(ib, ib)])


@pytest.mark.parametrize("block_entries", [1 << 20, 100, 1])  # one block; several with a remainder; row by row
def test_every_cosine_is_the_straightforward_one(monkeypatch: pytest.MonkeyPatch, block_entries: int) -> None:
    monkeypatch.setattr(inv_mod, "_BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(4)
    present_a = np.ones(N, dtype=bool)
    present_a[::5] = False
    present_b = np.ones(N, dtype=bool)
    present_b[1::7] = False
    a = _set(rng, (0, 1, 2), present_a)
    b = _set(rng, (3, 5), present_b, like=a, weight=0.0)
    related = _set(rng, (0, 2), present_a, like=a, weight=0.8)
    cache: dict[object, object] = {}
    for other in (b, related):
        for pairs in (None, "match", [(0, other.layers[0]), (2, other.layers[-1])]):
            result = compare(a, other, layer_pairs=pairs, a_cache=cache)
            assert result.common_probe_tokens == len(set(a.present_tokens) & set(other.present_tokens))
            for s in result.terms:
                assert s.cosine == pytest.approx(_straightforward(a, other, s.layer_a, s.layer_b, s.term), abs=1e-12)
            assert result.ics == pytest.approx(np.mean([s.cosine for s in result.terms]), abs=1e-15)
            assert compare(a, other, layer_pairs=pairs) == result  # the cache changes nothing
    # The related model's layers 0 and 2 are found among a's three.
    assert match_layers(related, a) == [(0, 0), (2, 2)]
    la, lb, sim = layer_similarity(a, related)
    assert (la, lb) == ((0, 1, 2), (0, 2))
    for i, x in enumerate(la):
        for j, y in enumerate(lb):
            want = np.mean([_straightforward(a, related, x, y, t) for t in TERMS])
            assert sim[i, j] == pytest.approx(want, abs=1e-12)


def test_terms_are_not_changed_and_a_constant_term_scores_zero() -> None:
    rng = np.random.default_rng(5)
    every = np.ones(N, dtype=bool)
    a = _set(rng, (0,), every, dtype=np.float64)  # float64 terms: a careless in-place centring would hit them
    b = _set(rng, (0,), every, dtype=np.float64)
    before = {k: v.copy() for k, v in a.terms.items()}
    b.terms[(0, "ffn")][:] = 2.5  # no variation: its cosine is 0, not NaN
    result = compare(a, b)
    assert all(np.array_equal(a.terms[k], before[k]) for k in before)
    scores = {s.term: s.cosine for s in result.terms}
    assert scores["ffn"] == 0.0
    assert scores["attn_qk"] == pytest.approx(_straightforward(a, b, 0, 0, "attn_qk"), abs=1e-12)
