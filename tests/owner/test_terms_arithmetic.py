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
    hq, hkv = info.n_heads, info.n_kv_heads
    qk = _group_sum(xa @ w.wq.T, hq, hkv) @ (xa @ w.wk.T).T
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
