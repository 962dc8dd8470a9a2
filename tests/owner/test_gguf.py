"""GGUF files (owner/_gguf.py): written from zoo models in llama.cpp's conventions (zoo/gguf_export.py), read back
into the same terms, quantised copies recognised as derived, every common quant type dequantised, bad files one
clear error line with exit status 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from owner import CheckpointError, compute_invariants, load_vocabulary, open_model
from owner._gguf import GgufSource, read_header, unpermute_rotary
from owner._vocab import read_gguf_vocabulary
from pawprint.cli import main
from zoo.gguf_export import export_gguf, permute_rotary

TinyModel = Callable[..., Path]
FIELDS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "g1", "g2")


@pytest.fixture(scope="module")
def ggufs(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    root = tmp_path_factory.mktemp("gguf")
    cache: dict[tuple[str, str], Path] = {}

    def get(family: str, qtype: str) -> Path:
        if (family, qtype) not in cache:
            cache[family, qtype] = export_gguf(tiny_model(family), root / f"{family}-{qtype}.gguf", qtype)
        return cache[family, qtype]

    return get


def compare_json(a: Path, b: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json", "-q"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_f32_gguf_reads_the_same_weights_and_terms(family: str, tiny_model: TinyModel, ggufs: Callable[..., Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    st, gg = open_model(tiny_model(family)), open_model(ggufs(family, "f32"))
    assert gg.format == "gguf" and gg.adapter.info == st.adapter.info
    for layer in range(st.adapter.info.n_layers):
        a, b = st.adapter.layer(layer), gg.adapter.layer(layer)
        for f in FIELDS:
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None and y is None) or torch.equal(x, y), (family, layer, f)
    ids = [3, 599, 40, 41, 42, 250]
    assert torch.equal(st.adapter.embedding_rows(ids), gg.adapter.embedding_rows(ids))
    # the tokenizer from the GGUF metadata is the same vocabulary as tokenizer.json's
    assert dict(read_gguf_vocabulary(gg.path).token_ids) == dict(load_vocabulary(st.root).token_ids)
    out = compare_json(tiny_model(family), gg.path, capsys)
    assert out["ics"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_header_reader_agrees_with_the_gguf_package(family: str, ggufs: Callable[..., Path]) -> None:
    path = ggufs(family, "q4_0")
    mine, theirs = read_header(path), gguf.GGUFReader(path)
    assert [(t.name, t.qtype, t.ne, t.offset, t.n_bytes) for t in mine.tensors] == [
        (t.name, t.tensor_type, tuple(int(x) for x in t.shape), int(t.data_offset), int(t.n_bytes))
        for t in theirs.tensors]
    assert mine.data_offset == theirs.data_offset
    for key, field in theirs.fields.items():
        if not key.startswith("GGUF."):
            assert mine.metadata[key] == field.contents(), key
    assert len(mine.metadata) == len([k for k in theirs.fields if not k.startswith("GGUF.")])


def test_f16_gguf_gives_the_same_terms(tiny_model: TinyModel, ggufs: Callable[..., Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = compare_json(tiny_model("llama"), ggufs("llama", "f16"), capsys)
    assert out["ics"] >= 0.999 and out["verdict"] == "derived"


def test_llama_qk_rows_are_stored_permuted_and_read_in_hf_order(tiny_model: TinyModel,
                                                                ggufs: Callable[..., Path]) -> None:
    """The file holds llama.cpp's rotary order (``LlamaModel.permute``); the reader gives Hugging Face's back."""
    st = open_model(tiny_model("llama"))
    info = st.adapter.info
    reader = gguf.GGUFReader(ggufs("llama", "f32"))
    raw = {t.name: np.array(t.data) for t in reader.tensors}
    hf_q = st.source.tensor("model.layers.1.self_attn.q_proj.weight").numpy()
    hf_k = st.source.tensor("model.layers.1.self_attn.k_proj.weight").numpy()
    assert np.array_equal(raw["blk.1.attn_q.weight"], permute_rotary(hf_q, info.n_heads, info.n_heads))
    assert np.array_equal(raw["blk.1.attn_k.weight"], permute_rotary(hf_k, info.n_heads, info.n_kv_heads))
    assert not np.array_equal(raw["blk.1.attn_k.weight"], hf_k)  # the permutation is not the identity here
    w = torch.arange(4 * 16 * 3, dtype=torch.float32).reshape(64, 3)
    assert torch.equal(unpermute_rotary(torch.from_numpy(permute_rotary(w.numpy(), 4)), 4), w)
    # qwen2 conversions are not permuted
    qreader = gguf.GGUFReader(ggufs("qwen2", "f32"))
    qk = next(np.array(t.data) for t in qreader.tensors if t.name == "blk.1.attn_k.weight")
    assert np.array_equal(qk, open_model(tiny_model("qwen2")).source.tensor(
        "model.layers.1.self_attn.k_proj.weight").numpy())


@pytest.mark.parametrize(("family", "qtype"), [("llama", "q8_0"), ("llama", "q4_0"), ("qwen2", "f16"),
                                               ("qwen2", "q4_0"), ("gpt2", "f16"), ("gpt2", "q8_0"),
                                               ("gpt2", "q4_0")])
def test_quantised_gguf_is_derived_and_an_independent_model_is_not(
    family: str, qtype: str, tiny_model: TinyModel, ggufs: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, q = tiny_model(family), ggufs(family, qtype)
    assert {t.tensor_type.name for t in gguf.GGUFReader(q).tensors} == {qtype.upper(), "F32"}
    out = compare_json(base, q, capsys)
    assert out["verdict"] == "derived" and out["p_value"] <= 1e-6, out
    assert out["ics"] >= {"f16": 0.999, "q8_0": 0.999, "q4_0": 0.95}[qtype]
    other = compare_json(tiny_model(family, seed=1), q, capsys)
    assert other["verdict"] != "derived" and other["p_value"] > 1e-3, other


def test_q4_k_copy_of_a_256_wide_model_is_derived(tiny_model: TinyModel, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A k-quant (Q4_K, the type most GGUF redistributions use) needs rows of whole 256-element super-blocks."""
    base = tiny_model("llama", hidden=256, ffn=512)
    q = export_gguf(base, tmp_path / "q4_k.gguf", "q4_k")
    assert {t.tensor_type.name for t in gguf.GGUFReader(q).tensors} == {"Q4_K", "F32"}
    st = open_model(base).source.tensor("model.layers.1.mlp.up_proj.weight")
    back = open_model(q).source.tensor("model.layers.1.mlp.up_proj.weight")
    step = (st.reshape(-1, 32).amax(1) - st.reshape(-1, 32).amin(1).clamp(max=0)) / 15
    assert ((back - st).abs().reshape(-1, 32).amax(1) <= step * 0.75 + 1e-3).all()  # within a step (fp16 scales)
    out = compare_json(base, q, capsys)
    assert out["verdict"] == "derived" and out["p_value"] <= 1e-6 and out["ics"] >= 0.95, out
    other = compare_json(tiny_model("llama", seed=1, hidden=256, ffn=512), q, capsys)
    assert other["verdict"] != "derived" and other["p_value"] > 1e-3, other


def _raw_tensor(qtype: str, rows: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Random stored bytes of a ``qtype`` tensor whose fp16 block scales are finite (any other bits are valid)."""
    q = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[q]
    raw = rng.integers(0, 256, size=(rows, width // block, size), dtype=np.uint8)
    scale = np.array([0.01], dtype=np.float16).view(np.uint8)
    # where each type keeps its fp16 scales (d / dmin): at the start for the legacy types, at the end for K-quants
    at = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [size - 4, size - 2],
          "Q3_K": [size - 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [size - 2]}[qtype]
    for off in at:
        raw[..., off:off + 2] = scale
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                                   "BF16", "F16"])
def test_every_common_type_is_dequantised_whole_and_by_rows(qtype: str, tmp_path: Path) -> None:
    """Tensors and embedding rows of each type read as the gguf package's own dequantiser gives them."""
    rng = np.random.default_rng(0)
    d, layers, heads, rows = 256, 1, 4, 300
    path = tmp_path / f"m-{qtype}.gguf"
    w = gguf.GGUFWriter(path, "llama")
    for k, v in [("embedding_length", d), ("block_count", layers), ("feed_forward_length", d),
                 ("attention.head_count", heads), ("attention.head_count_kv", heads)]:
        w.add_uint32(f"llama.{k}", v)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"▁w{i}" for i in range(rows)])
    stored: dict[str, np.ndarray] = {}

    def add(name: str, n_rows: int) -> None:
        if qtype in ("BF16", "F16"):
            x = rng.standard_normal((n_rows, d)).astype(np.float32)
            data = gguf.quants.quantize(x, gguf.GGMLQuantizationType[qtype])
        else:
            data = _raw_tensor(qtype, n_rows, d, rng)
        stored[name] = data
        w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[qtype])

    add("token_embd.weight", rows)
    for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        add(f"blk.0.{t}.weight", d)
    for t in ("attn_norm", "ffn_norm"):
        w.add_tensor(f"blk.0.{t}.weight", np.ones(d, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    src = open_model(path).source
    assert isinstance(src, GgufSource)
    qt = gguf.GGMLQuantizationType[qtype]
    want = torch.from_numpy(np.asarray(gguf.quants.dequantize(stored["token_embd.weight"], qt), np.float32))
    assert torch.isfinite(want).all() and want.abs().max() > 0
    assert torch.equal(src.tensor("model.embed_tokens.weight"), want)
    ids = [299, 0, 7, 8, 200, 7]
    assert torch.equal(src.rows("model.embed_tokens.weight", ids), want[ids])
    up = torch.from_numpy(np.asarray(gguf.quants.dequantize(stored["blk.0.ffn_up.weight"], qt), np.float32))
    assert torch.equal(src.tensor("model.layers.0.mlp.up_proj.weight"), up)
    q = torch.from_numpy(np.asarray(gguf.quants.dequantize(stored["blk.0.attn_q.weight"], qt), np.float32))
    assert torch.equal(src.tensor("model.layers.0.self_attn.q_proj.weight"), unpermute_rotary(q, heads))
    assert src.meta("model.layers.0.mlp.up_proj.weight").dtype == qtype


def test_owner_commands_accept_a_gguf_file(ggufs: Callable[..., Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    g = ggufs("llama", "q8_0")
    assert main(["owner", "inspect", str(g), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "gguf" in json.dumps(doc)
    roots = []
    for path in (g, g, ggufs("llama", "q4_0")):
        assert main(["owner", "digest", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["format"] == "gguf" and doc["weight_commitment"]["tensors"] == 30
        roots.append(doc["weight_commitment"]["root"])
    assert roots[0] == roots[1] != roots[2]  # deterministic, and over the stored (quantised) bytes
    inv = compute_invariants(g)
    assert inv.probes.tokens and len(inv.terms) > 0


def _write_gguf(path: Path, arch: str | None, tensors: bool = True) -> Path:
    w = gguf.GGUFWriter(path, arch or "llama")
    if arch is None:  # drop general.architecture (GGUFWriter always adds it)
        w.kv_data[0].pop("general.architecture")
    if tensors:
        w.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unreadable_gguf_is_one_line_naming_the_file_and_exit_2(
    ggufs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = ggufs("llama", "q8_0").read_bytes()
    cases = {
        "truncated-header.gguf": (good[:1000], "truncated or malformed"),
        "truncated-data.gguf": (good[:-500], "truncated"),
        "not-gguf.gguf": (b"hello world\n", "no GGUF magic"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    _write_gguf(tmp_path / "no-arch.gguf", None)
    cases["no-arch.gguf"] = (b"", "'general.architecture' is missing")
    _write_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    cases["rwkv.gguf"] = (b"", "architecture 'rwkv6' is not supported")
    _write_gguf(tmp_path / "no-blocks.gguf", "llama")
    cases["no-blocks.gguf"] = (b"", "'llama.embedding_length' is missing")
    for name, (_, why) in cases.items():
        capsys.readouterr()
        assert main(["owner", "inspect", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(tmp_path / name) in err and why in err, (name, err)
    with pytest.raises(CheckpointError, match="no GGUF magic"):
        GgufSource(tmp_path / "not-gguf.gguf")


def test_an_inconsistent_gguf_names_its_metadata_not_config_json(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The adapters check the config against the tensors; for a GGUF file that config is its metadata, and the
    error says so (there is no config.json to look at)."""

    def write(name: str, width: int, heads: int, kv: int) -> Path:
        w = gguf.GGUFWriter(tmp_path / name, "llama")
        w.add_embedding_length(width)
        w.add_block_count(1)
        w.add_head_count(heads)
        w.add_head_count_kv(kv)
        w.add_feed_forward_length(16)
        w.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return tmp_path / name

    cases = {write("wide.gguf", 16, 2, 2): "but the GGUF metadata of wide.gguf implies width 16",
             write("no-layers.gguf", 8, 2, 2): "(per the GGUF metadata of no-layers.gguf)",
             write("heads.gguf", 8, 4, 3): "heads.gguf: GGUF metadata: 4 attention heads are not a multiple of 3"}
    for path, why in cases.items():
        with pytest.raises(CheckpointError) as info:
            open_model(path)
        assert why in str(info.value) and "config.json" not in str(info.value), str(info.value)
        capsys.readouterr()
        assert main(["owner", "inspect", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and why in err and "config.json" not in err, err
