"""GGUF files of the mixture-of-experts families (issue 18): Mixtral (``general.architecture`` "llama" with
experts), Qwen2-MoE ("qwen2moe"), Qwen3-MoE ("qwen3moe") and DeepSeek-V2/V3 ("deepseek2", latent attention),
written in llama.cpp's converter conventions (zoo/gguf_export.py: experts stacked into one 3-D tensor per
projection, routers kept F32, DeepSeek's ``kv_b_proj`` split into ``attn_k_b`` / ``attn_v_b``) read back
(owner/_gguf.py) into the same weights and terms as the safetensors model; quantised copies are derived; an
expert permutation applied before export (a function-preserving transform) leaves the terms where they were.

llama.cpp's qwen2moe / qwen3moe have no dense FFN tensors, so those two are built here with every layer sparse
(``mlp_only_layers = []``, as Qwen1.5-MoE and Qwen3-MoE ship); the zoo's versions with a dense layer 0 are refused
by the exporter."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from owner import compute_invariants, load_vocabulary, open_model
from owner._gguf import _FAMILIES, _MIXTRAL, GGUF_ARCHITECTURES
from owner._vocab import read_gguf_vocabulary
from owner.errors import CheckpointError
from pawprint.cli import main
from tests.owner.gguf_kit import check_commitment_is_stable
from tests.owner.lineage_kit import compare_json
from verifier import compare
from zoo.attacks import attack
from zoo.gguf_export import GgufExportError, export_gguf, permute_rotary
from zoo.tiny import make_tiny

TinyModel = Callable[..., Path]
# zoo family -> GGUF general.architecture
ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "deepseek_v2": "deepseek2",
        "deepseek_v3": "deepseek2"}
FAMILIES = tuple(ARCH)
ALL_SPARSE = {"qwen2_moe": {"mlp_only_layers": []}, "qwen3_moe": {"mlp_only_layers": []}}
SUFFIXES = (".weight", ".bias")
FIELDS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "g1", "g2", "q_norm", "k_norm")
EXPERT = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight")


@pytest.fixture(scope="module")
def models(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("moe-models")
    cache: dict[tuple[str, int], Path] = {}

    def get(family: str, seed: int = 0) -> Path:
        if family not in ALL_SPARSE:
            return tiny_model(family, seed=seed)
        if (family, seed) not in cache:
            cache[family, seed] = make_tiny(family, root / f"{family}-s{seed}", seed=seed,
                                            config_overrides=ALL_SPARSE[family])
        return cache[family, seed]

    return get


@pytest.fixture(scope="module")
def ggufs(models: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("gguf-moe")
    cache: dict[tuple[str, str, int, str], Path] = {}

    def get(family: str, qtype: str, seed: int = 0, kv_b: str = "split") -> Path:
        key = (family, qtype, seed, kv_b)
        if key not in cache:
            cache[key] = export_gguf(models(family, seed), root / f"{family}-s{seed}-{qtype}-{kv_b}.gguf", qtype,
                                     kv_b=kv_b)
        return cache[key]

    return get


def _raw(path: Path) -> dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _same(a: Any, b: Any, where: str) -> None:
    """Weights (tensors, tuples of them, MoE / MLA dataclasses) equal bit for bit, other fields equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, (where, a, b)


def _copy_fields(src: Any, w: Any, changed: dict[str, Any]) -> None:
    """The metadata of the GGUF ``src`` onto the writer ``w`` (its architecture already set), ``changed`` applied."""
    for key, f in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, changed.get(key, f.contents()), vtype, sub_type=sub)


def _close_terms(got: Any, want: Any) -> None:
    assert got.group == want.group and set(got.terms) == set(want.terms) and want.terms
    for key, term in want.terms.items():
        np.testing.assert_allclose(got.terms[key], term, rtol=1e-5, atol=1e-5 * float(np.abs(term).max()))


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_gguf_reads_the_same_weights_and_terms(family: str, models: Callable[..., Path],
                                                   ggufs: Callable[..., Path]) -> None:
    st, gg = open_model(models(family)), open_model(ggufs(family, "f32"))
    assert gg.format == "gguf" and gg.config["gguf_architecture"] == ARCH[family]
    assert gg.config["model_type"] == family
    assert type(gg.adapter) is type(st.adapter) and gg.adapter.info == st.adapter.info
    sparse = 0
    for layer in range(st.adapter.info.n_layers):
        a, b = st.adapter.layer(layer), gg.adapter.layer(layer)
        for f in (*FIELDS, "moe", "mla"):
            _same(getattr(a, f, None), getattr(b, f, None), f"{family} layer {layer} {f}")
        sparse += a.moe is not None
    assert sparse >= 2  # the experts were really compared
    ids = [3, 599, 40, 41, 42, 250]
    assert torch.equal(st.adapter.embedding_rows(ids), gg.adapter.embedding_rows(ids))
    assert dict(read_gguf_vocabulary(gg.path).token_ids) == dict(load_vocabulary(st.root).token_ids)
    want = compute_invariants(st)
    _close_terms(compute_invariants(gg, probes=want.probes), want)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_file_holds_llama_cpp_names_and_layout(family: str, models: Callable[..., Path],
                                                   ggufs: Callable[..., Path]) -> None:
    """What is stored, against the HF checkpoint: every name one llama.cpp's architecture has
    (``MODEL_TENSORS``); each projection's experts stacked on the first axis in expert order, ``(E, out, in)``;
    routers F32; Mixtral's q / k rows in GGML's rotary order; DeepSeek's ``kv_b_proj`` split per head."""
    path = models(family)
    sd = load_file(str(path / "model.safetensors"))
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    raw = _raw(ggufs(family, "f32"))
    arch = gguf.MODEL_ARCH[ARCH[family].upper()]
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
    for name in raw:
        assert re.sub(r"blk\.\d+\.", "blk.{bid}.", name).rsplit(".", 1)[0] in allowed, name
    hf_proj = ({"gate": "w1", "down": "w2", "up": "w3"} if family == "mixtral"
               else {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})
    hf_exp = "model.layers.{l}.block_sparse_moe.experts.{e}.{p}.weight" if family == "mixtral" else \
        "model.layers.{l}.mlp.experts.{e}.{p}.weight"
    n_exp = cfg.get("num_local_experts") or cfg.get("num_experts") or cfg["n_routed_experts"]
    stacks = 0
    for name, t in raw.items():
        m = EXPERT.fullmatch(name)
        if m is None:
            continue
        want = np.stack([sd[hf_exp.format(l=m.group(1), e=e, p=hf_proj[m.group(2)])].numpy() for e in range(n_exp)])
        assert np.array_equal(np.asarray(t.data).reshape(want.shape), want) and tuple(t.shape) == want.shape[::-1]
        stacks += 1
    assert stacks == 3 * sum(1 for n in raw if n.endswith("ffn_gate_inp.weight")) >= 6
    assert all(t.tensor_type.name == "F32" for n, t in raw.items() if n.endswith("ffn_gate_inp.weight"))
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    if family == "mixtral":
        q = sd["model.layers.1.self_attn.q_proj.weight"].numpy()
        k = sd["model.layers.1.self_attn.k_proj.weight"].numpy()
        assert np.array_equal(np.asarray(raw["blk.1.attn_q.weight"].data), permute_rotary(q, heads, heads))
        assert np.array_equal(np.asarray(raw["blk.1.attn_k.weight"].data), permute_rotary(k, heads, kv))
        assert not np.array_equal(permute_rotary(q, heads, heads), q)
    if family.startswith("deepseek"):
        assert "blk.1.attn_kv_b.weight" not in raw
        kv_b = sd["model.layers.1.self_attn.kv_b_proj.weight"].numpy()
        dn, dv, rank = cfg["qk_nope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
        per_head = kv_b.reshape(heads, dn + dv, rank)
        k_b, v_b = np.asarray(raw["blk.1.attn_k_b.weight"].data), np.asarray(raw["blk.1.attn_v_b.weight"].data)
        assert k_b.shape == (heads, rank, dn) and np.array_equal(k_b, per_head[:, :dn].transpose(0, 2, 1))
        assert v_b.shape == (heads, dv, rank) and np.array_equal(v_b, per_head[:, dn:])
        assert ("blk.1.exp_probs_b.bias" in raw) == (family == "deepseek_v3")
    if family == "qwen2_moe":
        assert raw["blk.1.ffn_gate_inp_shexp.weight"].shape.tolist() == [64, 1]


def test_reader_names_are_llama_cpp_names() -> None:
    """Every GGUF -> HF name the reader knows for these architectures is the one the ``gguf`` package's
    ``TensorNameMap`` maps the HF name to; for stacked experts, the merged name the converter maps."""
    cases = [(_MIXTRAL, "LLAMA", "layers.0.feed_forward.experts.{p}.weight", {"w1", "w2", "w3"}),
             (_FAMILIES["qwen2moe"], "QWEN2MOE", "model.layers.0.mlp.experts.{p}.weight", None),
             (_FAMILIES["qwen3moe"], "QWEN3MOE", "model.layers.0.mlp.experts.{p}.weight", None),
             (_FAMILIES["deepseek2"], "DEEPSEEK2", "model.layers.0.mlp.experts.{p}.weight", None)]
    for fam, arch, merged, _ in cases:
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], 1)
        for g, hf in fam.layer_names.items():
            hf = hf.replace("e_score_correction_bias", "e_score_correction.bias")  # the converter's rename
            assert names.get_name(f"model.layers.0.{hf}", try_suffixes=SUFFIXES) == f"blk.0.{g}", (arch, g, hf)
        assert len(fam.experts) == 3
        for g, hf in fam.experts.items():
            proj = hf.split(".")[-2]  # w1 / gate_proj ...
            assert names.get_name(merged.format(p=proj), try_suffixes=SUFFIXES) == f"blk.0.{g}", (arch, g, hf)
    assert {"qwen2moe", "qwen3moe", "deepseek2"} <= set(GGUF_ARCHITECTURES)


@pytest.mark.parametrize("family", FAMILIES)
def test_quantised_gguf_is_derived_and_an_independent_model_is_not(
    family: str, models: Callable[..., Path], ggufs: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Q8_0 experts are read one expert at a time from the stacked tensor; each is exactly the ``gguf`` package's
    dequantisation of that slice of the whole 3-D tensor. 8-bit rounding moves the routed outputs (near-tied
    top-k choices flip on some probe rows of these random tiny routers), hence ICS >= 0.99, not 0.999."""
    q = ggufs(family, "q8_0")
    raw = _raw(q)
    # 2-D and 3-D weights Q8_0, except (as the converter falls back) F16 where a row is not whole 32-blocks
    # (DeepSeek's attn_k_b rows of qk_nope_head_dim 16, attn_v_b rows of kv_lora_rank 24); routers, norms F32
    kinds = {n: t.tensor_type.name for n, t in raw.items()}
    assert set(kinds.values()) <= {"Q8_0", "F32", "F16"} and "Q8_0" in kinds.values()
    assert all(int(raw[n].shape[0]) % 32 for n, k in kinds.items() if k == "F16")
    assert all(kinds[n] == "Q8_0" for n in raw if EXPERT.fullmatch(n))
    src = open_model(q).source
    hf_proj = {"gate": ("gate_proj", "w1"), "up": ("up_proj", "w3"), "down": ("down_proj", "w2")}
    checked = 0
    for name in ("blk.2.ffn_gate_exps.weight", "blk.2.ffn_down_exps.weight"):
        t, proj = raw[name], hf_proj[EXPERT.fullmatch(name).group(2)]  # type: ignore[union-attr]
        whole = gguf.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(int(x) for x in t.shape[::-1]))
        for n in src.names():
            m = re.fullmatch(r"model\.layers\.2\..*experts\.(\d+)\.(\w+)\.weight", n)
            if m is not None and m.group(2) in proj:
                assert torch.equal(src.tensor(n), torch.from_numpy(whole[int(m.group(1))].astype(np.float32))), n
                checked += 1
    assert checked == 2 * whole.shape[0]
    out = compare_json(models(family), q, capsys)
    assert out["verdict"] == "derived" and out["p_value"] <= 1e-6 and out["ics"] >= 0.99, out
    other = compare_json(models(family, seed=1), q, capsys)
    assert other["verdict"] != "derived" and other["p_value"] > 1e-3, other


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_permuted_before_export_keep_the_terms(family: str, models: Callable[..., Path],
                                                       ggufs: Callable[..., Path], tmp_path: Path) -> None:
    """``expert-permute`` (experts with the router's rows, and DeepSeek-V3's score bias) on the checkpoint, then
    exported: the stacked tensors are really in another order, and the GGUF's terms are the original's."""
    src, dst = models(family), tmp_path / "permuted"
    attack(src, dst, "expert-permute", seed=3)
    out = export_gguf(dst, tmp_path / "permuted.gguf", "f32")
    before, after = _raw(ggufs(family, "f32")), _raw(out)
    moved = [n for n in before if EXPERT.fullmatch(n) and not np.array_equal(before[n].data, after[n].data)]
    assert len(moved) >= 6, moved
    probes = compute_invariants(src).probes
    r = compare(compute_invariants(src, probes=probes, layers="all"),
                compute_invariants(out, probes=probes, layers="all"))
    worst = min(r.terms, key=lambda t: t.cosine)
    assert worst.cosine >= 0.999, f"{family}: {worst}"


def test_deepseek_fused_and_split_kv_b_read_the_same(ggufs: Callable[..., Path]) -> None:
    """Converters before the MLA-absorption split wrote one ``attn_kv_b`` and the per-head sizes as
    ``key_length`` / ``value_length``; since, ``attn_k_b`` / ``attn_v_b``, ``key_length_mla`` /
    ``value_length_mla`` and one KV head. Both read to the same config and the same ``kv_b_proj``."""
    split, fused = open_model(ggufs("deepseek_v2", "f32")), open_model(ggufs("deepseek_v2", "f32", kv_b="fused"))
    h = gguf.GGUFReader(split.path)
    assert h.fields["deepseek2.attention.head_count_kv"].contents() == 1
    assert "deepseek2.attention.key_length_mla" in h.fields
    assert "blk.1.attn_kv_b.weight" in _raw(fused.path)
    assert "deepseek2.attention.key_length_mla" not in gguf.GGUFReader(fused.path).fields
    assert split.config == fused.config
    name = "model.layers.2.self_attn.kv_b_proj.weight"
    assert name in split.source.names() and split.source.meta(name).shape == fused.source.meta(name).shape
    assert torch.equal(split.source.tensor(name), fused.source.tensor(name))


def test_routing_flags_are_llama_cpps(ggufs: Callable[..., Path]) -> None:
    """What the file does not say is set as llama.cpp runs the architecture: qwen2moe's top-k not renormalised,
    qwen3moe's and Mixtral's renormalised; DeepSeek-V2 is the softmax router (V2's group-limited greedy when it
    has groups), V3 the sigmoid one with its score bias and routed scaling."""
    moe = {f: open_model(ggufs(f, "f32")).adapter.layer(2).moe for f in FAMILIES}
    got = {f: (m.scoring, m.norm_topk, m.n_group, m.topk_group, m.group_top, m.scale, m.score_bias is not None)
           for f, m in moe.items() if m is not None}
    assert got == {"mixtral": ("softmax", True, 1, 1, 2, 1.0, False),
                   "qwen2_moe": ("softmax", False, 1, 1, 2, 1.0, False),
                   "qwen3_moe": ("softmax", True, 1, 1, 2, 1.0, False),
                   "deepseek_v2": ("softmax", False, 3, 2, 1, 1.5, False),
                   "deepseek_v3": ("sigmoid", True, 2, 1, 2, 2.5, True)}


@pytest.mark.parametrize("family", ["mixtral", "deepseek_v3"])
def test_weight_commitment_is_stable_and_over_the_stored_bytes(family: str, models: Callable[..., Path],
                                                              ggufs: Callable[..., Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    check_commitment_is_stable(ggufs(family, "f32"), ggufs(family, "q8_0"),
                               export_gguf(models(family), tmp_path / "again.gguf", "f32"), capsys)


def test_dense_layers_in_qwen_moe_are_refused_by_the_exporter(tiny_model: TinyModel, tmp_path: Path) -> None:
    """The zoo's Qwen-MoE models keep layer 0 dense; llama.cpp's qwen2moe / qwen3moe have no tensor for it."""
    for family in ("qwen2_moe", "qwen3_moe"):
        with pytest.raises(GgufExportError, match="no dense FFN tensors"):
            export_gguf(tiny_model(family), tmp_path / f"{family}.gguf")


def test_a_stacked_expert_tensor_with_the_wrong_expert_count_is_one_clear_error(
    ggufs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``expert_count`` says 4; a file whose metadata says 5 cannot be sliced into experts: exit 2, one line."""
    src = gguf.GGUFReader(ggufs("mixtral", "f32"))
    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(path, "llama")
    _copy_fields(src, w, {"llama.expert_count": 5})
    for t in src.tensors:
        w.add_tensor(t.name, np.asarray(t.data).reshape(tuple(int(x) for x in t.shape[::-1])))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="expected 5 experts stacked"):
        open_model(path)
    capsys.readouterr()
    assert main(["owner", "inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "ffn_" in err, err


def test_a_mixtral_file_with_one_tensor_per_expert_reads_the_same(ggufs: Callable[..., Path], tmp_path: Path) -> None:
    """The first Mixtral converters (December 2023) wrote each expert as its own ``blk.N.ffn_gate.E.weight``; the
    same weights split that way read to the same experts as the stacked file."""
    src = gguf.GGUFReader(ggufs("mixtral", "f32"))
    path = tmp_path / "split-experts.gguf"
    w = gguf.GGUFWriter(path, "llama")
    _copy_fields(src, w, {})
    for t in src.tensors:
        data = np.asarray(t.data).reshape(tuple(int(x) for x in t.shape[::-1]))
        m = EXPERT.fullmatch(t.name)
        if m is None:
            w.add_tensor(t.name, data)
            continue
        for e in range(data.shape[0]):
            w.add_tensor(f"blk.{m.group(1)}.ffn_{m.group(2)}.{e}.weight", np.ascontiguousarray(data[e]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    split, stacked = open_model(path), open_model(ggufs("mixtral", "f32"))
    assert "blk.1.ffn_up.3.weight" in _raw(path) and not any(EXPERT.fullmatch(n) for n in _raw(path))
    assert split.source.names() == stacked.source.names()
    for layer in range(3):
        _same(split.adapter.layer(layer).moe, stacked.adapter.layer(layer).moe, f"layer {layer}")
