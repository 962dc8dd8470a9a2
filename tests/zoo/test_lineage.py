"""Lineage on the quick zoo: derivatives made by real training stay close to their base, unrelated models do
not, and ONNX exports match their originals. The default zoo's full table (every kind, both methods, every
probe rule) is ``benchmarks/zoo_lineage.py``; the quick zoo is too small to separate heavy continued
pretraining, so that kind is checked there, not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import TERMS
from zoo.lineage_eval import PairScore, score_zoo


@pytest.fixture(scope="module")
def scores(quick_zoo: Path) -> list[PairScore]:
    return score_zoo(quick_zoo, "words-hash-v1", "pawprint")


def test_every_pair_is_scored(scores: list[PairScore]) -> None:
    kinds = {s.kind for s in scores if s.relation == "derived"}
    assert kinds == {"sft", "lora", "cpt-vocab", "cpt-heavy", "int8", "bf16", "pruned", "onnx-fp32", "onnx-int8"}
    assert any(s.kind == "same-family" for s in scores) and any(s.kind == "cross-family" for s in scores)


def test_llama_derivatives_score_above_unrelated_pairs_of_llama(scores: list[PairScore]) -> None:
    derived = [s for s in scores if s.relation == "derived" and s.kind != "cpt-heavy"]
    unrelated = [s for s in scores if s.relation == "independent" and "llama" in (s.family_a, s.family_b)]
    for t in TERMS:
        low = min(derived, key=lambda s: s.terms[t])
        high = max(unrelated, key=lambda s: s.terms[t])
        assert low.terms[t] > high.terms[t], (t, low, high)


def test_pruned_model_is_matched_layer_by_layer(scores: list[PairScore]) -> None:
    (pruned,) = [s for s in scores if s.kind == "pruned"]
    assert len(pruned.layer_pairs) == 2  # quick zoo: 3 layers, one dropped
    assert pruned.ics > 0.9


@pytest.mark.parametrize("kind", ["onnx-fp32", "onnx-int8", "int8", "bf16"])
def test_exports_and_round_trips_match_their_original(scores: list[PairScore], kind: str) -> None:
    (s,) = [s for s in scores if s.kind == kind]
    assert min(s.terms.values()) >= 0.99, s
