"""Qwen3-MoE (Qwen3's QK-norm attention + routed experts, no shared expert) and DeepSeek-V2 (latent attention as
V3, softmax router with V2's group-limited greedy choice, V2-Lite without query compression).

What the shared suites already run on both (they are in ``zoo.tiny.FAMILIES`` / ``MOE_FAMILIES`` /
``LATENT_ATTENTION_FAMILIES``): every attack of ``zoo.attacks.ATTACKS`` keeps the function
(``tests/zoo/test_attacks.py``) and every term (``tests/owner/test_invariance.py``, cosine >= 0.999), an
independent seed scores near 0, the terms agree with the straightforward formulas
(``tests/owner/test_terms_arithmetic.py``), the routing is transformers' own, ``expert-permute`` and
``latent-rotate`` keep function and terms, the latent-attention terms split heads as transformers does (V2-Lite's
``q_proj`` path included), and a noised copy is ``derived`` while another seed is not
(``tests/owner/test_moe_mla.py``). Here: what is particular to these two families.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from owner import build_probe_set, compute_invariants, load_vocabulary, open_model
from owner._invariants import moe_routing
from owner.errors import CheckpointError
from protocol.terms import InvariantSet
from verifier import compare
from verifier._evidence import check_plausible
from zoo.tiny import make_tiny

TinyModel = Callable[..., Path]
FAMILIES = ("qwen3_moe", "deepseek_v2")


def _probes(model: Path):  # type: ignore[no-untyped-def]
    return build_probe_set(load_vocabulary(model), n=400, rule="all-hash-v1")


def _hf(path: Path) -> torch.nn.Module:
    import transformers

    arch = json.loads((path / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    model: torch.nn.Module = getattr(transformers, arch).from_pretrained(path).eval()
    return model


def test_layers_are_read_as_the_model_builds_them(tiny_model: TinyModel) -> None:
    """Layer 0 dense (``mlp_only_layers`` / ``first_k_dense_replace``), the others sparse; Qwen3-MoE keeps its
    QK-norm weights in sparse layers too and has no shared expert; DeepSeek-V2 here has no query compression."""
    q = open_model(tiny_model("qwen3_moe")).adapter
    for layer in range(3):
        w = q.layer(layer)
        assert w.q_norm is not None and w.k_norm is not None and w.q_norm.shape == (16,)
        assert (w.moe is None) == (layer == 0)
    moe = q.layer(2).moe
    assert moe is not None and len(moe.experts) == 4 and moe.shared == () and moe.shared_gate is None
    assert (moe.scoring, moe.norm_topk, moe.n_group) == ("softmax", True, 1)

    d = open_model(tiny_model("deepseek_v2")).adapter
    for layer in range(3):
        w = d.layer(layer)
        assert w.mla is not None and w.mla.q_a is None and w.mla.q_a_norm is None
        assert (w.moe is None) == (layer == 0)
    moe = d.layer(1).moe
    assert moe is not None and moe.score_bias is None and len(moe.shared) == 1
    assert (moe.scoring, moe.norm_topk, moe.scale, moe.n_group, moe.topk_group, moe.group_top) == (
        "softmax", False, 1.5, 3, 2, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_terms_are_computed_on_every_layer(tiny_model: TinyModel, family: str) -> None:
    inv = compute_invariants(tiny_model(family), probes=_probes(tiny_model(family)), layers="all")
    assert inv.model["family"] == family
    assert sorted({k[0] for k in inv.terms}) == [0, 1, 2]
    for t in inv.terms.values():
        assert np.isfinite(t).all() and float(np.abs(t).max()) > 0


def _route_like_hf(path: Path, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    m, hf = open_model(path), _hf(path)
    moe = m.adapter.layer(layer).moe
    assert moe is not None
    xn = torch.randn(300, m.adapter.info.d_model, generator=torch.Generator().manual_seed(0))
    idx, weights = moe_routing(xn, moe)
    with torch.no_grad():
        _, hf_w, hf_idx = hf.get_submodule(f"model.layers.{layer}.mlp.gate")(xn)
    e = len(moe.experts)
    return (torch.zeros(300, e).scatter_(1, idx, weights), torch.zeros(300, e).scatter_(1, hf_idx, hf_w.float()))


def test_v2_group_rule_differs_from_v3_and_matches_the_model(tiny_model: TinyModel) -> None:
    """V2's group-limited greedy scores a group by its best expert; V3's rule (sum of the best two) would pick
    other experts on some rows of this model, so the rule is exercised, and ours is transformers'."""
    from dataclasses import replace

    path = tiny_model("deepseek_v2")
    ours, theirs = _route_like_hf(path, 2)
    assert torch.allclose(ours, theirs, atol=1e-5)
    moe = open_model(path).adapter.layer(2).moe
    assert moe is not None
    xn = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    v3_idx, _ = moe_routing(xn, replace(moe, group_top=2))
    v3 = torch.zeros(300, len(moe.experts)).scatter_(1, v3_idx, 1.0)
    assert int(((ours > 0).float() != v3).any(dim=1).sum()) > 0


def test_v2_greedy_router_matches_the_model(tmp_path: Path) -> None:
    """``topk_method: greedy`` (V2-Lite): top-k over all experts whatever ``n_group`` says."""
    path = make_tiny("deepseek_v2", tmp_path / "greedy", config_overrides=dict(topk_method="greedy"))
    moe = open_model(path).adapter.layer(1).moe
    assert moe is not None and moe.n_group == 1
    ours, theirs = _route_like_hf(path, 1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def _edit_config(src: Path, dst: Path, **fields: object) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    for k, v in fields.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return dst


def test_qwen3_moe_reads_the_hub_spelling_of_the_expert_count(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Published Qwen3-MoE configs say ``num_experts``; transformers 5 writes ``num_local_experts``."""
    src = tiny_model("qwen3_moe")
    hub = _edit_config(src, tmp_path / "hub", num_experts=4, num_local_experts=None)
    probes = _probes(src)
    r = compare(compute_invariants(src, probes=probes, layers="all"), compute_invariants(hub, probes=probes,
                                                                                        layers="all"))
    assert min(t.cosine for t in r.terms) > 0.999999


def test_v2_unknown_router_is_refused_with_one_clear_error(tiny_model: TinyModel, tmp_path: Path) -> None:
    bad = _edit_config(tiny_model("deepseek_v2"), tmp_path / "bad", topk_method="noaux_tc")
    with pytest.raises(CheckpointError, match="topk_method 'noaux_tc' is not a DeepSeek-V2 router"):
        open_model(bad).adapter.layer(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_evidence_checks_refuse_no_honest_model_and_still_bite(tiny_model: TinyModel, family: str) -> None:
    """The shared-subspace check leaves out the measured non-bilinear terms only (``_OUTSIDE_SPAN``): honest
    models of three seeds pass; noise on the FFN term (still checked) is found."""
    for seed in (0, 1, 2):
        path = tiny_model(family, seed=seed)
        inv = compute_invariants(path, probes=_probes(path), layers="all", method="pawprint")
        width = int(inv.model["d_model"])
        assert width < inv.group.rows  # the check can bite here
        assert check_plausible(inv, width, b"seed") == [], (family, seed)
    noisy = dict(inv.terms)
    key = next(k for k in noisy if k[1] == "ffn")
    t = noisy[key]
    noisy[key] = t + np.random.default_rng(0).standard_normal(t.shape).astype(t.dtype) * float(np.std(t))
    found = check_plausible(InvariantSet(inv.group, inv.model, noisy), width, b"seed")
    assert any("outside one" in f or "spectral norm" in f for f in found)
