"""Qwen3 and OLMo-2 (QK-norm), Gemma-2 / Gemma-3 (sandwich norms; Gemma-3 also QK-norm), MPNet, and Phi-3/4 as
Microsoft ships them (fused ``qkv_proj`` / ``gate_up_proj``).

- each family is read from its ``transformers`` checkpoint by its own adapter;
- the QK-norm term is the model's own arithmetic: ``owner._invariants.qk_norm_term`` equals the product of the
  model's ``q_norm(q_proj(.))`` and ``k_norm(k_proj(.))`` modules on the probe rows;
- it ignores what the norm cancels (a positive scale of a head's ``Wq`` / ``Wk``, gains traded between
  ``q_norm`` and ``k_norm``), which moves the plain ``Ea Wq^T Wk Ea^T`` form, and the model barely notices;
- the general per-head ``qk-linear`` map no longer preserves a QK-norm model (why the attack suite restricts it);
- lineage: a noised copy of a base is ``derived`` against the shipped null, another seed is not.

Every attack on every family is run by ``tests/zoo/test_attacks.py`` and ``tests/owner/test_invariance.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from owner._invariants import layer_terms, qk_norm_term, whiten
from owner._model import open_model
from tests.owner.lineage_kit import lineage_verdict, noised_copy
from verifier import term_cosine
from zoo._attacks_arch import Rotary
from zoo._attacks_ops import _qk_map
from zoo.function import run_model

TinyModel = Callable[..., Path]
NEW = ("qwen3", "olmo2", "gemma2", "gemma3_text", "mpnet")
QK_NORM = ("qwen3", "olmo2", "gemma3_text")


@pytest.mark.parametrize("family", NEW)
def test_each_family_is_read_by_its_adapter(tiny_model: TinyModel, family: str) -> None:
    m = open_model(tiny_model(family))
    info = m.adapter.info
    assert info.family == family and info.n_layers == 3
    w = m.adapter.layer(1)
    assert (w.q_norm is not None) == (family in QK_NORM) and (w.k_norm is not None) == (family in QK_NORM)
    if family == "olmo2":  # no pre-norms; QK-norm over all heads
        assert w.g1 is None and w.g2 is None and w.q_norm is not None
        assert w.q_norm.shape == (info.n_heads * info.head_dim,)
    elif family in QK_NORM:
        assert w.q_norm is not None and w.q_norm.shape == (info.head_dim,)
    if family.startswith("gemma"):  # stored g - 1, applied 1 + w; g2 is the pre-FFN norm, not the post-attention one
        st = load_file(str(tiny_model(family) / "model.safetensors"))
        pre = st["model.layers.1.pre_feedforward_layernorm.weight"]
        assert w.g2 is not None and torch.equal(w.g2, 1.0 + pre)


def _eps_off(module: torch.nn.Module) -> None:
    for attr in ("variance_epsilon", "eps"):
        if hasattr(module, attr):
            setattr(module, attr, 0.0)


@pytest.mark.parametrize("family", QK_NORM)
def test_qk_norm_term_is_the_models_own_arithmetic(tiny_model: TinyModel, family: str) -> None:
    import transformers

    path = tiny_model(family)
    m = open_model(path)
    info = m.adapter.info
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = list(range(1, 301))
    er = whiten(m.adapter.embedding_rows(ids))
    n, dh, r = er.shape[0], info.head_dim, info.n_heads // info.n_kv_heads
    for layer in range(info.n_layers):
        w = m.adapter.layer(layer)
        attn = hf.model.layers[layer].self_attn
        _eps_off(attn.q_norm)
        _eps_off(attn.k_norm)
        xa = er if w.g1 is None else er * w.g1
        with torch.no_grad():
            if family == "olmo2":  # the norm reads all heads' projections at once
                q = attn.q_norm(attn.q_proj(xa)).reshape(n, -1, dh)
                k = attn.k_norm(attn.k_proj(xa)).reshape(n, -1, dh)
            else:
                q = attn.q_norm(attn.q_proj(xa).reshape(n, -1, dh))
                k = attn.k_norm(attn.k_proj(xa).reshape(n, -1, dh))
        want = sum((q[:, h] @ k[:, h // r].T for h in range(info.n_heads)), torch.zeros(n, n))
        got = qk_norm_term(er, w, info, w.g1)
        assert float((got - want).abs().max() / want.abs().max()) < 1e-5, (family, layer)


def _scale_qk(path: Path, dst: Path, family: str) -> Path:
    """A copy where the norms cancel what changed: each head's ``Wq`` rows (all of ``Wq`` for OLMo-2) scaled by
    its own factor, ``Wk`` by another, and a factor traded between ``q_norm`` and ``k_norm``."""
    shutil.copytree(path, dst)
    st = load_file(str(path / "model.safetensors"))
    cfg = json.loads((path / "config.json").read_text())
    dh = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    offset = 1.0 if family.startswith("gemma") else 0.0
    gen = torch.Generator().manual_seed(11)
    for name in [k for k in st if k.endswith("self_attn.q_proj.weight")]:
        p = name[: -len("q_proj.weight")]
        wq, wk = st[name], st[p + "k_proj.weight"]
        if family == "olmo2":
            st[name], st[p + "k_proj.weight"] = wq * 3.0, wk * 0.25
        else:
            st[name] = (wq.reshape(-1, dh, wq.shape[1]) * (0.5 + 4 * torch.rand(wq.shape[0] // dh, 1, 1,
                                                                                 generator=gen))).reshape(wq.shape)
            st[p + "k_proj.weight"] = wk * 2.0
        gq, gk = st[p + "q_norm.weight"] + offset, st[p + "k_norm.weight"] + offset
        # factors equal on both dims of a rotary pair (i, i + dh/2), or RoPE would not commute with them
        half = 2.0 ** torch.randint(-2, 3, (gk.numel() // dh, dh // 2), generator=gen).to(torch.float32)
        a = torch.cat([half, half], dim=1).reshape(-1)
        if family == "olmo2":  # one factor per KV-group dim, the same for the group's query heads
            a_k = a
            r = gq.numel() // gk.numel()
            a = a_k.reshape(-1, 1, dh).expand(-1, r, dh).reshape(-1)
            gk = gk / a_k
        else:
            gk = gk / a
        st[p + "q_norm.weight"], st[p + "k_norm.weight"] = gq * a - offset, gk - offset
    save_file(st, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("family", QK_NORM)
def test_term_ignores_what_the_qk_norm_cancels(tmp_path: Path, family: str) -> None:
    from zoo.tiny import make_tiny

    # The scales are cancelled up to the norms' epsilon. Random tiny OLMo-2 projections have a mean square near
    # its default 1e-5 (trained models: orders above), so the models here take a negligible one.
    src = make_tiny(family, tmp_path / "src", config_overrides={"rms_norm_eps": 1e-12})
    dst = _scale_qk(src, tmp_path / "scaled", family)
    ids = torch.randint(1, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    a, b = run_model(src, ids), run_model(dst, ids)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4
    ma, mb = open_model(src), open_model(dst)
    info = ma.adapter.info
    er = whiten(ma.adapter.embedding_rows(list(range(1, 301))))
    for layer in range(info.n_layers):
        wa, wb = ma.adapter.layer(layer), mb.adapter.layer(layer)
        ta, tb = qk_norm_term(er, wa, info, wa.g1), qk_norm_term(er, wb, info, wb.g1)
        assert float((ta - tb).abs().max() / ta.abs().max()) < 1e-5
        # the plain form (the norms ignored, as a LLaMA model's term is formed) moves under per-head scales; OLMo-2's
        # all-head norm only cancels one scale of all of Wq (or Wk), which a cosine ignores anyway
        plain = [layer_terms(er, replace(w, q_norm=None, k_norm=None), info)["attn_qk"] for w in (wa, wb)]
        if family != "olmo2":
            assert term_cosine(plain[0].numpy(), plain[1].numpy()) < 0.99, (family, layer)


def test_a_general_qk_map_breaks_a_qk_norm_model(tiny_model: TinyModel, tmp_path: Path) -> None:
    """The map ``qk-linear`` applies to LLaMA (a rotary-commuting scaled rotation per KV group on ``Wq`` with its
    inverse on ``Wk``) changes a Qwen3 model's output: RMS and gains do not commute with it."""
    src = tiny_model("qwen3")
    dst = Path(shutil.copytree(src, tmp_path / "general"))
    st = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(3)
    for p in [k[: -len("q_proj.weight")] for k in st if k.endswith("self_attn.q_proj.weight")]:
        wq = st[p + "q_proj.weight"].double().reshape(4, 16, -1)
        wk = st[p + "k_proj.weight"].double().reshape(2, 16, -1)
        for g in range(2):
            c = _qk_map(Rotary(16, "half"), 16, gen)
            wq[2 * g: 2 * g + 2] = c.T @ wq[2 * g: 2 * g + 2]
            wk[g] = torch.linalg.inv(c) @ wk[g]
        st[p + "q_proj.weight"], st[p + "k_proj.weight"] = wq.reshape(64, -1).float(), wk.reshape(32, -1).float()
    save_file(st, str(dst / "model.safetensors"), metadata={"format": "pt"})
    ids = torch.randint(1, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    a, b = run_model(src, ids), run_model(dst, ids)
    assert float((a - b).abs().max() / a.abs().max()) > 1e-2


@pytest.mark.parametrize("family", (*NEW, "phi3"))
def test_lineage(tiny_model: TinyModel, tmp_path: Path, family: str) -> None:
    """A noised copy (5 % noise on every tensor) of a base is ``derived``; another seed is not."""
    base = tiny_model(family)
    assert lineage_verdict(base, noised_copy(base, tmp_path / "derived")) == "derived"
    assert lineage_verdict(base, tiny_model(family, seed=1)) != "derived"


def test_phi3_and_phi4_as_shipped(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Microsoft's Phi-3 / Phi-4 checkpoints store ``qkv_proj`` (all query heads, then keys, then values) and
    ``gate_up_proj`` (gate, then up) fused; Phi-4-mini adds a partial rotary and a tied head. The adapter reads
    both and splits them as ``Phi3Attention`` / ``Phi3MLP`` do."""
    from zoo.tiny import TinySpec, make_tiny

    for path in (tiny_model("phi3"),
                 make_tiny("phi3", tmp_path / "phi4-mini", spec=TinySpec(),
                           config_overrides={"partial_rotary_factor": 0.75, "tie_word_embeddings": True})):
        st = load_file(str(path / "model.safetensors"))
        assert "model.layers.0.self_attn.qkv_proj.weight" in st and "model.layers.0.mlp.gate_up_proj.weight" in st
        assert not any(k.endswith((".q_proj.weight", ".gate_proj.weight", ".mlp.up_proj.weight")) for k in st)
        m = open_model(path)
        info = m.adapter.info
        w = m.adapter.layer(0)
        qkv, gu = st["model.layers.0.self_attn.qkv_proj.weight"], st["model.layers.0.mlp.gate_up_proj.weight"]
        q = info.n_heads * info.head_dim
        assert torch.equal(w.wq, qkv[:q]) and torch.equal(w.wv, qkv[q + info.n_kv_heads * info.head_dim:])
        assert w.w_gate is not None and torch.equal(w.w_gate, gu[: info.d_ffn]) and torch.equal(w.w_up, gu[info.d_ffn:])
