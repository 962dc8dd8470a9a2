"""GGUF files of today's families (issue 18): Qwen3, Gemma-2, Gemma-3, Phi-3 and OLMo-2 written in llama.cpp's
converter conventions (zoo/gguf_export.py) read back (owner/_gguf.py) into the same weights and terms as the
safetensors model; quantised copies are derived; the file holds llama.cpp's layout (names from the ``gguf``
package's own tensor map, Gemma's ``1 + w`` norms, no rotary permutation, Phi-3's fused tensors kept fused)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from owner import compute_invariants, load_vocabulary, open_model
from owner._gguf import _FAMILIES, GGUF_ARCHITECTURES
from owner._vocab import read_gguf_vocabulary
from pawprint.cli import main
from tests.owner.gguf_kit import check_commitment_is_stable
from tests.owner.lineage_kit import compare_json
from zoo.gguf_export import export_gguf

TinyModel = Callable[..., Path]
# zoo family -> GGUF general.architecture
ARCH = {"qwen3": "qwen3", "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3", "olmo2": "olmo2"}
FAMILIES = tuple(ARCH)
SUFFIXES = (".weight", ".bias")
FIELDS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "g1", "g2", "q_norm", "k_norm")


@pytest.fixture(scope="module")
def ggufs(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("gguf-families")
    cache: dict[tuple[str, str, int], Path] = {}

    def get(family: str, qtype: str, seed: int = 0) -> Path:
        if (family, qtype, seed) not in cache:
            out = root / f"{family}-s{seed}-{qtype}.gguf"
            cache[family, qtype, seed] = export_gguf(tiny_model(family, seed=seed), out, qtype)
        return cache[family, qtype, seed]

    return get


def _raw(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_gguf_reads_the_same_weights_and_terms(family: str, tiny_model: TinyModel,
                                                   ggufs: Callable[..., Path]) -> None:
    st, gg = open_model(tiny_model(family)), open_model(ggufs(family, "f32"))
    assert gg.format == "gguf" and gg.config["gguf_architecture"] == ARCH[family]
    assert type(gg.adapter) is type(st.adapter) and gg.adapter.info == st.adapter.info
    for layer in range(st.adapter.info.n_layers):
        a, b = st.adapter.layer(layer), gg.adapter.layer(layer)
        for f in FIELDS:
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None) == (y is None), (family, layer, f)
            if x is not None:  # Gemma's applied norms 1 + ((1 + w) - 1) are fp32's 1 + w exactly
                assert torch.equal(x, y), (family, layer, f)
    ids = [3, 599, 40, 41, 42, 250]
    assert torch.equal(st.adapter.embedding_rows(ids), gg.adapter.embedding_rows(ids))
    assert dict(read_gguf_vocabulary(gg.path).token_ids) == dict(load_vocabulary(st.root).token_ids)
    want = compute_invariants(st)
    got = compute_invariants(gg, probes=want.probes)
    assert got.group == want.group and set(got.terms) == set(want.terms) and want.terms
    for key, term in want.terms.items():
        np.testing.assert_allclose(got.terms[key], term, rtol=1e-5, atol=1e-5 * float(np.abs(term).max()))


@pytest.mark.parametrize("family", FAMILIES)
def test_quantised_gguf_is_derived_and_an_independent_model_is_not(
    family: str, tiny_model: TinyModel, ggufs: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    q = ggufs(family, "q8_0")
    assert {t.tensor_type.name for t in gguf.GGUFReader(q).tensors} == {"Q8_0", "F32"}
    out = compare_json(tiny_model(family), q, capsys)
    assert out["verdict"] == "derived" and out["p_value"] <= 1e-6 and out["ics"] >= 0.999, out
    other = compare_json(tiny_model(family, seed=1), q, capsys)
    assert other["verdict"] != "derived" and other["p_value"] > 1e-3, other


@pytest.mark.parametrize("family", FAMILIES)
def test_the_file_holds_llama_cpp_names_and_layout(family: str, tiny_model: TinyModel,
                                                   ggufs: Callable[..., Path]) -> None:
    """What is stored, checked tensor by tensor against the HF checkpoint: names as the ``gguf`` package's own
    ``TensorNameMap`` gives them for the architecture, q/k rows in HF order (these architectures use llama.cpp's
    NEOX rotary type, so the converter does not permute them), Gemma's norms as ``1 + w``, Phi-3's fused
    ``qkv_proj`` / ``gate_up_proj`` kept fused."""
    st = open_model(tiny_model(family)).source
    raw = _raw(ggufs(family, "f32"))
    arch = gguf.MODEL_ARCH[ARCH[family].upper()]
    names = gguf.get_tensor_name_map(arch, 3)
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
    seen = 0
    for hf in st.names():
        g = names.get_name(hf, try_suffixes=SUFFIXES)
        if g is None or g not in raw:
            assert hf == "lm_head.weight" and family.startswith("gemma"), hf  # Gemma's converter skips lm_head
            continue
        assert re.sub(r"blk\.\d+\.", "blk.{bid}.", g).removesuffix(".weight") in allowed, g
        want = st.tensor(hf).numpy()
        if family.startswith("gemma") and hf.endswith("norm.weight"):
            want = want + 1
        assert np.array_equal(raw[g], want), (family, hf, g)
        seen += 1
    assert seen == len(raw)
    if family == "phi3":
        assert "blk.0.attn_qkv.weight" in raw and "blk.0.ffn_gate.weight" not in raw
        assert raw["blk.0.ffn_up.weight"].shape[0] == 2 * open_model(tiny_model(family)).adapter.info.d_ffn
    if family in ("qwen3", "gemma3_text", "olmo2"):
        assert "blk.2.attn_q_norm.weight" in raw and "blk.2.attn_k_norm.weight" in raw
    if family.startswith("gemma"):
        assert {"blk.1.post_attention_norm.weight", "blk.1.post_ffw_norm.weight", "blk.1.ffn_norm.weight"} <= set(raw)


def test_reader_names_are_llama_cpp_names() -> None:
    """Every GGUF -> HF name pair the reader knows for these architectures is one the ``gguf`` package's
    ``TensorNameMap`` (llama.cpp's gguf-py) maps the HF name to, so the inverse is not our own invention."""
    for family, arch in ARCH.items():
        fam = _FAMILIES[arch]
        assert fam.model_type == family and not fam.permute_qk and not fam.conv1d
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], 1)
        for g, hf in fam.layer_names.items():
            assert names.get_name(f"model.layers.0.{hf}", try_suffixes=SUFFIXES) == f"blk.0.{g}", (arch, g, hf)
        for g, hf in fam.global_names.items():
            if not (hf == "lm_head.weight" and arch == "gemma2"):  # gemma2 has no output tensor in llama.cpp
                assert names.get_name(hf, try_suffixes=SUFFIXES) == g, (arch, g, hf)
        assert fam.norm_shift == (1.0 if arch.startswith("gemma") else 0.0)


def test_gemma_norm_shift_is_what_makes_the_terms_agree(tiny_model: TinyModel, ggufs: Callable[..., Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The file holds ``1 + w``; the reader gives back ``(1 + w) - 1``, within an ulp of 1 of HF's ``w``, and the
    weight the adapter applies, ``1 + that``, is HF's ``1 + w`` bit for bit (the subtraction is exact). Read
    without the shift, the applied weight would be ``2 + w`` and the terms would not agree."""
    gg = open_model(ggufs("gemma3_text", "f32"))
    st = open_model(tiny_model("gemma3_text"))
    raw = _raw(gg.path)
    for hf, g in [("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
                  ("model.layers.0.self_attn.q_norm.weight", "blk.0.attn_q_norm.weight"),
                  ("model.norm.weight", "output_norm.weight")]:
        back, w = gg.source.tensor(hf), st.source.tensor(hf)
        assert torch.equal(back, torch.from_numpy(raw[g]) - 1)
        assert torch.equal(1 + back, 1 + w) and (back - w).abs().max() <= 2**-24
        assert (torch.from_numpy(raw[g]) - w - 1).abs().max() <= 2**-24  # stored: 1 + w
    want = compute_invariants(st, layers=[0])
    got = compute_invariants(gg.path, probes=want.probes, layers=[0])
    monkeypatch.setitem(_FAMILIES, "gemma3", replace(_FAMILIES["gemma3"], norm_shift=0.0))
    unshifted = compute_invariants(gg.path, probes=want.probes, layers=[0])
    for key, term in want.terms.items():
        np.testing.assert_allclose(got.terms[key], term, rtol=1e-5, atol=1e-5 * float(np.abs(term).max()))
        assert not np.allclose(unshifted.terms[key], term, rtol=1e-2, atol=1e-2 * float(np.abs(term).max())), key


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text"])
def test_weight_commitment_is_stable_and_over_the_stored_bytes(family: str, tiny_model: TinyModel,
                                                              ggufs: Callable[..., Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    check_commitment_is_stable(ggufs(family, "f32"), ggufs(family, "q8_0"),
                               export_gguf(tiny_model(family), tmp_path / "again.gguf", "f32"), capsys)


def test_an_unsupported_architecture_is_one_line_listing_the_supported(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(path, "mamba")
    w.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    capsys.readouterr()
    assert main(["owner", "inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "architecture 'mamba' is not supported" in err, err
    assert all(a in err for a in ("qwen3", "gemma2", "gemma3", "phi3", "olmo2", "llama", "qwen2", "gpt2")), err
    assert set(ARCH.values()) <= set(GGUF_ARCHITECTURES)
