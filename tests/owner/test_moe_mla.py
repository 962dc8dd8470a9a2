"""Mixture-of-experts FFNs (Mixtral, Qwen2-MoE, DeepSeek-V3) and DeepSeek latent attention (MLA).

- the routing rule of the FFN term is the model's own (transformers' router modules on the same rows);
- the MLA terms read the heads as the model splits them (transformers' projections on the same rows);
- the transforms only these families admit (``expert-permute``: experts with the router's rows;
  ``latent-rotate``: MLA's compressed latents) keep the function and every term, and other families refuse them;
- permuting the experts without the router's rows changes the function, and the FFN term sees it;
- lineage: a noised copy scores ``derived``, another seed does not.
The attacks every family admits (ffn-permute ... vocab-extend) run on these families in ``tests/zoo`` and
``tests/owner/test_invariance.py`` (they are in ``zoo.tiny.FAMILIES``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import build_probe_set, compute_invariants, load_vocabulary, open_model
from owner._invariants import mla_qk_term, mla_vo_factors, moe_routing
from verifier import assess, base_verdict, compare, load_null
from zoo.attacks import FAMILY_ATTACKS, AttackNotApplicable, attack
from zoo.function import same_function
from zoo.tiny import LATENT_ATTENTION_FAMILIES, MOE_FAMILIES

TinyModel = Callable[..., Path]
# router module of a sparse layer, by family (transformers' module names)
ROUTER = {"mixtral": "mlp.gate", "qwen2_moe": "mlp.gate", "deepseek_v3": "mlp.gate", "qwen3_moe": "mlp.gate",
          "deepseek_v2": "mlp.gate"}


def _hf(path: Path) -> torch.nn.Module:
    import transformers

    with open(path / "config.json", encoding="utf-8") as f:
        arch = json.load(f)["architectures"][0]
    model: torch.nn.Module = getattr(transformers, arch).from_pretrained(path).eval()
    return model


def _probes(model: Path):  # type: ignore[no-untyped-def]
    return build_probe_set(load_vocabulary(model), n=400, rule="all-hash-v1")


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_routing_is_the_models_own(tiny_model: TinyModel, family: str) -> None:
    path = tiny_model(family)
    m, hf = open_model(path), _hf(path)
    layer = m.adapter.info.n_layers - 1
    w = m.adapter.layer(layer)
    assert w.moe is not None
    xn = torch.randn(300, m.adapter.info.d_model, generator=torch.Generator().manual_seed(0))
    idx, weights = moe_routing(xn, w.moe)
    router = hf.get_submodule(f"model.layers.{layer}.{ROUTER[family]}")
    with torch.no_grad():
        out = router(xn)
    hf_w, hf_idx = out[1], out[2]  # (logits, top-k weights, top-k indices) for all three routers
    dense = torch.zeros(300, len(w.moe.experts)).scatter_(1, idx, weights)
    hf_dense = torch.zeros(300, len(w.moe.experts)).scatter_(1, hf_idx, hf_w.float())
    assert torch.allclose(dense, hf_dense, atol=1e-5), float((dense - hf_dense).abs().max())
    used = (dense > 0).sum(0)
    assert int((used > 0).sum()) >= 3  # the rows spread over the experts: routing is exercised


@pytest.mark.parametrize("family", LATENT_ATTENTION_FAMILIES)  # deepseek_v2 as V2-Lite: no query compression
def test_latent_attention_heads_are_split_as_the_model_splits_them(tiny_model: TinyModel, family: str) -> None:
    path = tiny_model(family)
    m, hf = open_model(path), _hf(path)
    w = m.adapter.layer(1)
    mla = w.mla
    assert mla is not None
    z = torch.randn(50, m.adapter.info.d_model, generator=torch.Generator().manual_seed(1))
    att = hf.get_submodule("model.layers.1.self_attn")
    h, dn, dr, dv = mla.n_heads, mla.nope_dim, mla.rope_dim, mla.v_dim
    with torch.no_grad():
        cq = z if mla.q_a is None else att.q_a_layernorm(att.q_a_proj(z))
        q = (att.q_proj if mla.q_a is None else att.q_b_proj)(cq).reshape(50, h, dn + dr)
        ckv, k_rot = att.kv_a_proj_with_mqa(z).split([mla.kv_rank, dr], dim=-1)
        kv = att.kv_b_proj(att.kv_a_layernorm(ckv)).reshape(50, h, dn + dv)
        k = torch.cat([kv[..., :dn], k_rot[:, None].expand(50, h, dr)], dim=-1)
        want_qk = torch.einsum("ihd,jhd->ij", q, k)  # the logit at relative position 0, unscaled
        want_v = kv[..., dn:].reshape(50, h * dv)
    got_qk = mla_qk_term(z, mla, None)
    got_v, o = mla_vo_factors(z, z, mla, w.wo, None)
    # transformers' latent RMSNorms add eps = 1e-6; the terms leave it out
    assert torch.allclose(got_qk, want_qk, rtol=1e-4, atol=1e-4 * float(want_qk.abs().max()))
    assert torch.allclose(got_v, want_v, rtol=1e-4, atol=1e-4 * float(want_v.abs().max()))
    assert torch.allclose(o, z @ w.wo)


def _cases() -> list[tuple[str, str]]:
    return [(f, "expert-permute") for f in MOE_FAMILIES] + [(f, "latent-rotate") for f in LATENT_ATTENTION_FAMILIES]


@pytest.mark.parametrize(("family", "kind"), _cases())
def test_family_transforms_keep_function_and_terms(tiny_model: TinyModel, tmp_path: Path, family: str,
                                                   kind: str) -> None:
    src, dst = tiny_model(family), tmp_path / kind
    result = attack(src, dst, kind, seed=3)
    assert same_function(src, dst, result, seed=0) <= 1e-4
    a, b = load_file(str(src / "model.safetensors")), load_file(str(dst / "model.safetensors"))
    moved = [k for k in a if a[k].ndim == 2 and not torch.allclose(a[k], b[k])]
    assert len(moved) >= 4, moved  # the weights really moved
    probes = _probes(src)
    r = compare(compute_invariants(src, probes=probes, layers="all"),
                compute_invariants(dst, probes=probes, layers="all"))
    worst = min(r.terms, key=lambda t: t.cosine)
    assert worst.cosine >= 0.999, f"{family}/{kind}: {worst}"


@pytest.mark.parametrize("kind", FAMILY_ATTACKS)
def test_other_families_refuse_the_family_transforms(tiny_model: TinyModel, tmp_path: Path, kind: str) -> None:
    family = "llama" if kind == "expert-permute" else "mixtral"
    with pytest.raises(AttackNotApplicable) as info:
        attack(tiny_model(family), tmp_path / kind, kind)
    assert info.value.family == family and ("experts" in info.value.reason or "latent" in info.value.reason)


def test_experts_permuted_without_the_router_change_function_and_term(tiny_model: TinyModel,
                                                                      tmp_path: Path) -> None:
    """The FFN term is not blind to expert identity: only the router-consistent permutation leaves it."""
    src = tiny_model("mixtral")
    dst = tmp_path / "swapped"
    shutil.copytree(src, dst)
    sd = load_file(str(src / "model.safetensors"))
    for layer in range(3):
        for wn in ("w1", "w2", "w3"):
            a, b = (f"model.layers.{layer}.block_sparse_moe.experts.{e}.{wn}.weight" for e in (0, 1))
            sd[a], sd[b] = sd[b], sd[a]
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    with torch.no_grad():
        logits = [_hf(p)(torch.arange(1, 40)[None]).logits for p in (src, dst)]
    assert float((logits[0] - logits[1]).abs().max() / logits[0].abs().max()) > 1e-2
    probes = _probes(src)
    r = compare(compute_invariants(src, probes=probes, layers="all"),
                compute_invariants(dst, probes=probes, layers="all"))
    assert min(t.cosine for t in r.terms if t.term == "ffn") < 0.99
    assert min(t.cosine for t in r.terms if t.term != "ffn") > 0.9999  # attention untouched


def _noised(src: Path, dst: Path, rel: float, seed: int) -> Path:
    shutil.copytree(src, dst)
    gen = torch.Generator().manual_seed(seed)
    sd = load_file(str(src / "model.safetensors"))
    out = {k: v + rel * v.std() * torch.randn(v.shape, generator=gen) if v.numel() > 1 else v for k, v in sd.items()}
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _verdict(base: Path, other: Path) -> tuple[str, float]:
    probes = _probes(base)
    r = compare(compute_invariants(base, probes=probes), compute_invariants(other, probes=probes))
    evidence = assess([(t.term, t.cosine) for t in r.terms], load_null(), r.common_probe_tokens)
    return base_verdict(evidence.p_value, 1), r.ics


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_lineage_noised_copy_derived_other_seed_not(tiny_model: TinyModel, tmp_path: Path, family: str) -> None:
    """5 % noise on every tensor (routing decisions near a tie flip) is ``derived`` against the shipped null;
    another seed of the same architecture is not."""
    base = tiny_model(family)
    verdict, ics = _verdict(base, _noised(base, tmp_path / "noised", rel=0.05, seed=5))
    assert verdict == "derived" and ics > 0.9, (verdict, ics)
    verdict, ics = _verdict(base, tiny_model(family, seed=1))
    assert verdict != "derived" and abs(ics) < 0.15, (verdict, ics)
