"""The claim at the heart of pawprint: every function-preserving attack leaves every pawprint term in place
(cosine >= 0.999 per term and layer) while independent initialisations score near 0.

Each attack is applied to a tiny random model of each family (norm weights away from 1); the attack tests in
``tests/zoo`` check that the attacked model computes the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from owner import build_probe_set, compute_invariants, load_vocabulary
from verifier import compare
from zoo.attacks import ATTACKS, AttackNotApplicable, attack
from zoo.tiny import FAMILIES

TinyModel = Callable[..., Path]

# Attacks that do not preserve a family's function (the attack suite refuses them, with its reason).
NOT_APPLICABLE = {
    ("gpt2", "ffn-scale"), ("gpt_neox", "ffn-scale"), ("gptj", "ffn-scale"), ("falcon", "ffn-scale"),
    ("bloom", "ffn-scale"), ("bert", "ffn-scale"), ("bloom", "head-permute"), ("bloom", "fold-rotate"),
    ("bert", "fold-rotate"), ("opt", "residual-scale"),
    ("mpt", "ffn-scale"), ("mpt", "head-permute"),  # GELU is not homogeneous; ALiBi slopes are per head index
    # output (sandwich) norms cannot be folded or rotated; QK-/output norms share one epsilon with the stream's
    ("qwen3", "residual-scale"), ("qwen3_moe", "residual-scale"), ("mpnet", "ffn-scale"), ("mpnet", "fold-rotate"),
    *((f, k) for f in ("olmo2", "gemma2", "gemma3_text") for k in ("fold-rotate", "residual-scale")),
}


def _probes(model: Path):  # type: ignore[no-untyped-def]
    return build_probe_set(load_vocabulary(model), n=400, rule="all-hash-v1")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_attack_keeps_every_term(tiny_model: TinyModel, tmp_path: Path, family: str) -> None:
    src = tiny_model(family)
    probes = _probes(src)
    base = compute_invariants(src, probes=probes, layers="all")
    applied = 0
    for kind in ATTACKS:
        dst = tmp_path / kind
        try:
            attack(src, dst, kind, seed=3)
        except AttackNotApplicable:
            assert (family, kind) in NOT_APPLICABLE, f"{kind} unexpectedly not applicable to {family}"
            continue
        assert (family, kind) not in NOT_APPLICABLE
        r = compare(base, compute_invariants(dst, probes=probes, layers="all"))
        assert r.common_probe_tokens == sum(base.present)
        worst = min(r.terms, key=lambda t: t.cosine)
        assert worst.cosine >= 0.999, f"{family}/{kind}: {worst}"
        applied += 1
    assert applied == len(ATTACKS) - sum(1 for f, _ in NOT_APPLICABLE if f == family)


def test_huref_form_breaks_under_fold_rotate(tiny_model: TinyModel, tmp_path: Path) -> None:
    """The published form's FFN term does not survive norm folding + rotation (the gap this project closes)."""
    src = tiny_model("llama")
    probes = _probes(src)
    attack(src, tmp_path / "rot", "fold-rotate", seed=3)
    r = compare(
        compute_invariants(src, probes=probes, method="huref-2024"),
        compute_invariants(tmp_path / "rot", probes=probes, method="huref-2024"),
    )
    assert max(t.cosine for t in r.terms if t.term == "ffn") < 0.5


def test_huref_thirds_split_breaks_neox_under_qk_maps(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Splitting GPT-NeoX's per-head fused QKV in thirds (as the reference code does) loses the invariance."""
    src = tiny_model("gpt_neox")
    probes = _probes(src)
    attack(src, tmp_path / "qk", "qk-linear", seed=3)
    r = compare(
        compute_invariants(src, probes=probes, method="huref-2024"),
        compute_invariants(tmp_path / "qk", probes=probes, method="huref-2024"),
    )
    assert min(t.cosine for t in r.terms if t.term == "attn_qk") < 0.9


@pytest.mark.parametrize("family", FAMILIES)
def test_independent_initialisations_score_near_zero(tiny_model: TinyModel, family: str) -> None:
    a, b = tiny_model(family), tiny_model(family, seed=1)
    probes = _probes(a)
    r = compare(compute_invariants(a, probes=probes), compute_invariants(b, probes=probes))
    assert abs(r.ics) < 0.15, r
    assert max(abs(t.cosine) for t in r.terms) < 0.3, r
