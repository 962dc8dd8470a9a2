"""How the terms are computed is not what they are: ``owner._invariants.layer_terms`` (weights in their stored
dtype converted a block at a time, GQA summed in the weights, the FFN accumulated over blocks of hidden units,
whitening applied in fp32) agrees with the straightforward formulas of its docstring, written out below on fp32
weights, for every family and both methods; and the streamed invariants file is the file ``safetensors`` writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import compute_invariants, load_invariants, open_model, save_invariants, write_invariants
from owner._adapters import ArchInfo, LayerWeights, Method
from owner._agent import whitened_rows
from owner._invariants import TERMS, WHITEN_RIDGE, iter_layer_terms, layer_terms
from owner._invfile import InvariantsWriter, invariants_metadata
from verifier import term_cosine
from zoo.tiny import FAMILIES

TinyModel = Callable[..., Path]
METHODS: tuple[Method, ...] = ("pawprint", "huref-2024")


def _whiten_reference(z: torch.Tensor) -> torch.Tensor:
    g = (z.T @ z).to(torch.float64)
    w, v = torch.linalg.eigh(g)
    w = w.clamp(min=0.0)
    mean = float(w.mean())
    if mean <= 0.0:
        return z
    return (z.to(torch.float64) @ ((v * (w + WHITEN_RIDGE * mean).rsqrt()) @ v.T)).to(torch.float32)


def _group_sum(x: torch.Tensor, n_heads: int, n_kv: int) -> torch.Tensor:
    return x.reshape(x.shape[0], n_kv, n_heads // n_kv, -1).sum(dim=2).reshape(x.shape[0], -1)


def _qk_norm_reference(xa: torch.Tensor, w: LayerWeights, info: ArchInfo) -> torch.Tensor:
    """QK-norm's ``attn_qk``: ``sum_h qn_h kn_(h // r)^T``, the norm per head or over all heads (by its size)."""
    assert w.q_norm is not None and w.k_norm is not None
    n, dh, r = xa.shape[0], info.head_dim, info.n_heads // info.n_kv_heads

    def normed(z: torch.Tensor, g: torch.Tensor, heads: int) -> torch.Tensor:
        zz = z.reshape(n, heads, dh) if g.numel() == dh else z.reshape(n, 1, -1)
        return (zz / zz.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-30) * g).reshape(n, heads, dh)

    q, k = normed(xa @ w.wq.T, w.q_norm, info.n_heads), normed(xa @ w.wk.T, w.k_norm, info.n_kv_heads)
    return sum((q[:, h] @ k[:, h // r].T for h in range(info.n_heads)), torch.zeros(n, n))


def _rms_rows(z: torch.Tensor) -> torch.Tensor:
    return z / z.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-30)


def _moe_mla_reference(xa: torch.Tensor, xf: torch.Tensor, xr: torch.Tensor, er: torch.Tensor, w: LayerWeights,
                       info: ArchInfo, method: Method) -> dict[str, torch.Tensor]:
    """Mixture-of-experts FFNs and latent attention (``owner._invariants.moe_ffn_output``, ``mla_qk_term``,
    ``mla_vo_factors``): every expert on every row, weighted by a dense ``n x E`` routing matrix; MLA per head."""
    n = xa.shape[0]
    if w.mla is not None:
        m = w.mla
        h, dn, dr, dv = m.n_heads, m.nope_dim, m.rope_dim, m.v_dim
        cq = xa if m.q_a is None else _rms_rows(xa @ m.q_a.T) * m.q_a_norm
        q = (cq @ m.q_b.T).reshape(n, h, dn + dr)
        z = xa @ m.kv_a.T
        kv = (_rms_rows(z[:, : m.kv_rank]) * m.kv_a_norm @ m.kv_b.T).reshape(n, h, dn + dv)
        qk = sum((q[:, i, :dn] @ kv[:, i, :dn].T + q[:, i, dn:] @ z[:, m.kv_rank :].T for i in range(h)),
                 torch.zeros(n, n))
        o = (er @ w.wo).reshape(n, h, dv)
        vo = sum((kv[:, i, dn:] @ o[:, i].T for i in range(h)), torch.zeros(n, n))
    else:
        hq, hkv = info.n_heads, info.n_kv_heads
        qk = _group_sum(xa @ w.wq.T, hq, hkv) @ (xa @ w.wk.T).T
        if w.q_norm is not None and w.k_norm is not None and method != "huref-2024":  # Qwen3-MoE
            qk = _qk_norm_reference(xa, w, info)
        vo = (xa @ w.wv.T) @ _group_sum(er @ w.wo, hq, hkv).T

    def gated(g: torch.Tensor, u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return (xf @ (g.T * u.T) if method == "huref-2024" else (xf @ g.T) * (xf @ u.T)) @ d.T

    if w.moe is None:
        assert w.w_gate is not None
        f = gated(w.w_gate, w.w_up, w.w_down)
    else:
        moe = w.moe
        xn = xf / xr.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-30)  # zero rows (padding) stay 0
        logits = xn @ moe.router.T
        scores = logits.softmax(-1) if moe.scoring == "softmax" else logits.sigmoid()
        choice = scores + (moe.score_bias if moe.score_bias is not None else 0.0)
        e, per = len(moe.experts), len(moe.experts) // moe.n_group
        if moe.n_group > 1:
            group = choice.reshape(n, moe.n_group, per).topk(moe.group_top, dim=-1).values.sum(-1)
            allowed = torch.zeros(n, moe.n_group, dtype=torch.bool)
            allowed[torch.arange(n)[:, None], group.topk(moe.topk_group, dim=-1).indices] = True
            choice = torch.where(allowed.repeat_interleave(per, dim=1), choice, torch.zeros_like(choice))
        chosen = torch.zeros(n, e, dtype=torch.bool)
        chosen[torch.arange(n)[:, None], choice.topk(moe.top_k, dim=-1).indices] = True
        route = torch.where(chosen, scores, torch.zeros_like(scores))
        if moe.norm_topk:
            route = route / (route.sum(-1, keepdim=True) + 1e-20)
        route = route * moe.scale
        f = sum((route[:, i : i + 1] * gated(*moe.experts[i]) for i in range(e)), torch.zeros(n, xf.shape[1]))
        for s in moe.shared:
            out = gated(*s)
            f = f + (out * (xn @ moe.shared_gate.T).sigmoid() if moe.shared_gate is not None else out)
    ffn = (f if method == "huref-2024" else _whiten_reference(f)) @ er.T
    return {"attn_qk": qk, "attn_vo": vo, "ffn": ffn}


def _reference_terms(x: torch.Tensor, w: LayerWeights, info: ArchInfo, method: Method) -> dict[str, torch.Tensor]:
    """The terms as the module docstring defines them: whole fp32 matrices, GQA summed on the products, the whole
    ``n x h`` FFN intermediate, the whitening applied in fp64."""
    if method == "huref-2024":
        xa = xf = xr = er = x
    else:
        xr = x - x.mean(dim=1, keepdim=True) if info.norm == "layer" else x
        er = _whiten_reference(xr)
        if info.norm == "post":
            xa, xf = er, xr
        else:
            xa = er * w.g1 if w.g1 is not None else er
            xf = xr * w.g2 if w.g2 is not None else xr
    if w.moe is not None or w.mla is not None:
        return _moe_mla_reference(xa, xf, xr, er, w, info, method)
    hq, hkv = info.n_heads, info.n_kv_heads
    qk = _group_sum(xa @ w.wq.T, hq, hkv) @ (xa @ w.wk.T).T
    if w.q_norm is not None and w.k_norm is not None and method != "huref-2024":
        qk = _qk_norm_reference(xa, w, info)
    vo = (xa @ w.wv.T) @ _group_sum(er @ w.wo, hq, hkv).T
    if w.w_gate is None:
        h = xf @ w.w_up.T
    elif method == "huref-2024":
        h = xf @ (w.w_gate.T * w.w_up.T)
    else:
        h = (xf @ w.w_gate.T) * (xf @ w.w_up.T)
    f = h @ w.w_down.T
    ffn = (f if method == "huref-2024" else _whiten_reference(f)) @ er.T
    return {"attn_qk": qk, "attn_vo": vo, "ffn": ffn}


def _agree(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], where: str) -> None:
    assert list(got) == list(TERMS), where
    for name in TERMS:
        a, b = got[name].numpy(), want[name].numpy()
        assert a.dtype == np.float32 and a.shape == b.shape, f"{where}/{name}"
        cos = term_cosine(a, b)
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        assert cos >= 1 - 1e-9 and rel < 1e-4, f"{where}/{name}: cosine 1 - {1 - cos:.1e}, max rel. error {rel:.1e}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_terms_agree_with_the_straightforward_formulas(tiny_model: TinyModel, family: str, method: Method) -> None:
    m = open_model(tiny_model(family))
    info = m.adapter.info
    with torch.inference_mode():
        x = m.adapter.embedding_rows(range(min(200, info.vocab_size)))
        rows = whitened_rows(x, info, method)
        for layer in range(info.n_layers):
            want = _reference_terms(x, m.adapter.layer(layer, method), info, method)
            stored = m.adapter.layer(layer, method, stored=True)
            # blocks of 24 units leave a remainder of the tiny models' 128 (several blocks, one partial)
            for block in (24, 1024):
                _agree(layer_terms(x, stored, info, method, whiten_rows=rows, block=block), want,
                       f"{family}/{method}/layer {layer}/block {block}")
            _agree(layer_terms(x, stored, info, method), want, f"{family}/{method}/layer {layer}/rows whitened here")


def _bf16_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    sd = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("family", ["llama", "phi3", "gpt2", "falcon"])
def test_bf16_weights_stay_bf16_until_used(tiny_model: TinyModel, tmp_path: Path, family: str) -> None:
    m = open_model(_bf16_copy(tiny_model(family), tmp_path / "bf16"))
    info = m.adapter.info
    stored = m.adapter.layer(info.n_layers - 1, stored=True)
    assert stored.wq.dtype == stored.w_up.dtype == stored.w_down.dtype == torch.bfloat16
    assert stored.g1 is None or stored.g1.dtype == torch.float32  # norm gains are read in fp32
    full = m.adapter.layer(info.n_layers - 1)
    assert full.wq.dtype == full.w_down.dtype == torch.float32
    assert torch.equal(full.w_down, stored.w_down.float())
    with torch.inference_mode():
        x = m.adapter.embedding_rows(range(150))
        for method in METHODS:
            _agree(layer_terms(x, stored, info, method, block=48), _reference_terms(x, full, info, method),
                   f"{family}/{method}/bf16")


def test_terms_are_yielded_one_at_a_time(tiny_model: TinyModel) -> None:
    m = open_model(tiny_model("llama"))
    with torch.inference_mode():
        x = m.adapter.embedding_rows(range(100))
        it = iter_layer_terms(x, m.adapter.layer(0, stored=True), m.adapter.info)
        assert next(it)[0] == "attn_qk"
        assert [name for name, _ in it] == ["attn_vo", "ffn"]


@pytest.mark.parametrize("method", METHODS)
def test_streamed_file_is_the_safetensors_file(tiny_model: TinyModel, tmp_path: Path, method: Method) -> None:
    """``write_invariants`` (each term written as computed) and ``save_invariants`` write the bytes that
    ``safetensors.numpy.save`` gives for the same terms and metadata, and the same bytes on every run."""
    from safetensors.numpy import save

    model = tiny_model("gpt_neox")
    inv = compute_invariants(model, layers="all", method=method)
    meta = invariants_metadata(inv.method, inv.method_id, inv.probes, inv.present, inv.layers, inv.model)
    expected = save({f"layer{la}.{t}": a for (la, t), a in inv.terms.items()},
                    metadata={"pawprint": json.dumps(meta, sort_keys=True, ensure_ascii=False)})
    save_invariants(inv, tmp_path / "saved.safetensors")
    written = write_invariants(model, tmp_path / "streamed.safetensors", layers="all", method=method)
    write_invariants(model, tmp_path / "again.safetensors", layers="all", method=method)
    assert (tmp_path / "saved.safetensors").read_bytes() == expected
    assert (tmp_path / "streamed.safetensors").read_bytes() == expected
    assert (tmp_path / "again.safetensors").read_bytes() == expected
    assert written.layers == inv.layers and written.present == inv.present and written.probes == inv.probes
    back = load_invariants(tmp_path / "streamed.safetensors")
    assert back.method_id == inv.method_id and back.model == inv.model
    assert all(np.array_equal(back.terms[k], inv.terms[k]) for k in inv.terms)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.safetensors", "saved.safetensors",
                                                          "streamed.safetensors"]


def test_an_interrupted_write_leaves_no_file(tiny_model: TinyModel, tmp_path: Path) -> None:
    inv = compute_invariants(tiny_model("llama"))
    meta = invariants_metadata(inv.method, inv.method_id, inv.probes, inv.present, inv.layers, inv.model)
    target = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeError), InvariantsWriter(target, meta) as w:
        (layer, name), a = next(iter(inv.terms.items()))
        w.write(layer, name, a)
        raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="not written"), InvariantsWriter(target, meta) as w:
        w.write(layer, name, a)
    with pytest.raises(ValueError, match="shape"), InvariantsWriter(target, meta) as w:
        w.write(layer, name, a[:-1])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("env", "expected"), [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")])
def test_importing_owner_first_makes_openmp_threads_sleep(env: dict[str, str], expected: str) -> None:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, owner, torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=base | env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
