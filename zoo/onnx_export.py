"""Export a Hugging Face checkpoint to ONNX, optionally quantised to int8, as a model owner might ship it.

The owner agent must read ONNX exports (``owner._onnx``); this module makes them for tests and the zoo, with
both of torch's exporters: the legacy TorchScript one (``dynamo=False``), which folds every ``Linear`` weight
into an anonymous transposed initializer (``onnx::MatMul_123``) and names nodes by module scope
(``/model/layers.0/self_attn/q_proj/MatMul``), and the ``torch.export`` based one (``dynamo=True``), which names
nodes ``node_linear_3`` and keeps the module scope only in node metadata. ``int8=True`` runs onnxruntime's
dynamic quantisation on the result (``MatMulInteger`` with int8 weights and per-tensor or per-channel scales).

Export is for tests and building the zoo: it loads the model with ``transformers`` and never sends anything.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from zoo.progress import quiet_libraries

Exporter = Literal["torchscript", "dynamo"]
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")

# Files copied beside ``model.onnx`` in the Optimum directory layout (those that exist).
_SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
)
# A fixed dummy input: short, no padding, ids well inside every tiny vocabulary.
_SEQ = 8


def _load_model(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    import transformers

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    # Eager attention keeps the exported graphs to plain ops every exporter and opset supports.
    kw: dict[str, Any] = dict(dtype=torch.float32, attn_implementation="eager")
    model: Any
    with quiet_libraries():  # no "Loading weights" bar of transformers' own
        if config.get("model_type") == "bert":
            model = transformers.BertModel.from_pretrained(model_dir, **kw)
        elif config.get("model_type") == "mpnet":  # an encoder as sentence-transformers runs it
            model = transformers.MPNetModel.from_pretrained(model_dir, **kw)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    model.config.use_cache = False
    return model.eval(), config


def _inputs(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    ids = torch.arange(1, _SEQ + 1, dtype=torch.long).unsqueeze(0)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if config.get("model_type") == "bert":
        # Without an explicit input the token-type embedding is folded to one constant row.
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


def _export_fp32(model: Any, inputs: dict[str, torch.Tensor], path: Path,
                 exporter: Exporter) -> None:
    names = list(inputs)
    # Dynamic batch and sequence axes, as real exports have; they also keep position embeddings from being
    # constant-folded to the rows of the dummy input.
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            # The legacy exporter fills every parameter of ``forward`` with its default and passes them all
            # by position, which some ``transformers`` wrappers reject; give it a forward taking exactly the
            # inputs, set on the instance so that module scopes (and hence node names) are unchanged.
            full_forward = model.forward

            def forward(*args: torch.Tensor) -> Any:
                return full_forward(**dict(zip(names, args, strict=True)))

            model.forward = forward
            try:
                torch.onnx.export(
                    model, tuple(inputs.values()), str(path), input_names=names, output_names=["output"],
                    dynamic_axes=axes, dynamo=False,
                )
            finally:
                del model.forward
        else:
            batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=4096)
            shapes = {n: {0: batch, 1: seq} for n in names}
            program = torch.onnx.export(
                model, (), kwargs=inputs, dynamic_shapes=shapes, dynamo=True, verbose=False,
            )
            if program is None:
                raise RuntimeError("the dynamo exporter returned no program")
            program.save(str(path), external_data=True)


class _DropPreprocessHint(logging.Filter):
    """onnxruntime logs a hint to run its pre-processing on the root logger at every call; the hint is
    about speed, and pre-processing would rewrite the graph the owner agent reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx(src: Path, out: Path, *, per_channel: bool = False) -> Path:
    """Quantise the ``.onnx`` model ``src`` to int8 with onnxruntime's dynamic quantisation, into ``out``.

    Every MatMul (and Gemm) with a constant weight becomes ``MatMulInteger`` on int8 weights with a scale per
    tensor, or per output channel with ``per_channel``; embeddings become uint8 with a ``DequantizeLinear``
    after the lookup. Activations stay float. The result is one file.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = Path(src), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(src, out, weight_type=QuantType.QInt8, per_channel=per_channel,
                         use_external_data_format=False)
    finally:
        logging.getLogger().removeFilter(hint)
    return out


def export_onnx(
    model_dir: Path,
    out: Path,
    *,
    int8: bool = False,
    exporter: str = "torchscript",
    per_channel: bool = False,
) -> Path:
    """Export the HF model in ``model_dir`` to ONNX and return the ``.onnx`` file written.

    ``out`` ending in ``.onnx`` is the file to write; otherwise it is a directory in the Optimum layout
    (``model.onnx`` beside ``config.json`` and the tokenizer files). The dynamo exporter keeps the weights in
    an external data file beside the graph (``<name>.data``). ``int8`` quantises the weights of every MatMul
    dynamically (int8, per tensor, or per output channel with ``per_channel``); the result is one file.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    model_dir, out = Path(model_dir), Path(out)
    if out.suffix == ".onnx":
        target = out
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        target = out / "model.onnx"
        for name in _SIDE_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, out / name)
    model, config = _load_model(model_dir)
    inputs = _inputs(config)
    chosen: Exporter = "dynamo" if exporter == "dynamo" else "torchscript"
    if not int8:
        _export_fp32(model, inputs, target, chosen)
        return target
    with tempfile.TemporaryDirectory(prefix="pawprint-onnx-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        _export_fp32(model, inputs, fp32, chosen)
        quantize_onnx(fp32, target, per_channel=per_channel)
    return target


# --------------------------------------------------------------------------------------------------------
# ONNX files as other real exporters write them (issue 18): a sentence-transformers model exported whole,
# onnxruntime's weight-only (MatMulNBits) quantisation, and int8 weights dequantised by plain ops.


def export_sentence_transformer(model_dir: Path, out: Path, *, exporter: str = "torchscript") -> Path:
    """Wrap the BERT checkpoint in ``model_dir`` as a sentence-transformers model (``Transformer`` + mean
    ``Pooling``, built by the ``sentence_transformers`` package) and export the whole pipeline to ``out``
    (a ``.onnx`` file, or a directory with ``model.onnx`` and the side files) as people export it: a module
    whose ``model`` is the ``SentenceTransformer``, so that every module path starts ``model.0.model.``.
    The output is the pooled sentence embedding."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    model_dir, out = Path(model_dir), Path(out)
    if out.suffix == ".onnx":
        target = out
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        target = out / "model.onnx"
        for name in _SIDE_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, out / name)
    with quiet_libraries(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = Transformer(str(model_dir), model_kwargs={"attn_implementation": "eager"})
        pooling = Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[transformer, pooling], device="cpu").eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            embedding: torch.Tensor = self.model(features)["sentence_embedding"]
            return embedding

    inputs = _inputs({"model_type": "bert"})
    names = list(inputs)
    wrapper = _Encoder(st).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(wrapper, tuple(inputs.values()), str(target), input_names=names,
                              output_names=["sentence_embedding"],
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names}, dynamo=False)
        else:
            batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=512)
            program = torch.onnx.export(wrapper, tuple(inputs.values()), input_names=names,
                                        dynamic_shapes={n: {0: batch, 1: seq} for n in names}, dynamo=True,
                                        verbose=False)
            if program is None:
                raise RuntimeError("the dynamo exporter returned no program")
            program.save(str(target), external_data=True)
    return target


def quantize_weight_only(src: Path, out: Path, *, bits: int = 8, block_size: int = 32,
                         symmetric: bool = True) -> Path:
    """Quantise the MatMul weights of ``src`` with onnxruntime's weight-only quantiser (``MatMulNBits``:
    ``bits``-bit blocks of ``block_size`` along K, a scale per block, zero points when asymmetric), as
    ``onnxruntime.quantization.matmul_nbits_quantizer`` writes them; one file in ``out``."""
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    src, out = Path(src), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = mq.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, bits=bits,
                                             quant_format=QuantFormat.QOperator, op_types_to_quantize=("MatMul",))
    level = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").level
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    try:
        quantizer = mq.MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
        quantizer.process()
    finally:
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(level)
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def dequantize_by_ops(src: Path, out: Path, *, lookup_first: bool = False, strip_scopes: bool = False) -> Path:
    """Rewrite ``src`` so that every weight matrix of a ``Gather`` or ``MatMul`` is stored int8 (symmetric,
    a scale per row of an embedding and per output column of a matmul weight) and dequantised by plain ops,
    ``Cast(q) * scale``, in new nodes with no name or metadata, and the embedding lookups lose their module
    scope: the pattern of the onnxruntime int8 weight-only file in issue 18 (``int8 -> Cast -> Mul``, no scope).
    With ``lookup_first`` an embedding is looked up in int8 and the rows dequantised after the ``Gather``
    (``Gather(q) -> Cast -> Mul``, a scale per column). With ``strip_scopes`` every node is renamed
    ``node_<Op>_<k>`` and loses its metadata, as in the real int8 all-MiniLM-L6-v2 file of issue 18: only the
    initializers' names (the dynamo exporter's state-dict names for biases, norms and embeddings; ``val_<k>`` for
    transposed matmul weights) are left to tell the modules. Tool-free on purpose: it reproduces a graph shape,
    not a quantiser."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, out = Path(src), Path(out)
    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, k))
    new_nodes: list[Any] = []
    for name, t in list(inits.items()):
        consumers = uses.get(name, [])
        if len(t.dims) != 2 or t.data_type != TensorProto.FLOAT or not consumers:
            continue
        kinds = {(n.op_type, k) for n, k in consumers}
        if kinds <= {("Gather", 0)}:
            axis = 1  # a scale per row (per token)
        elif kinds <= {("MatMul", 1)}:
            axis = 0  # B is (in, out): a scale per output column
        else:
            continue
        w = numpy_helper.to_array(t).astype(np.float32)
        if axis == 1 and lookup_first:
            scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0  # per column: survives the lookup
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            graph.initializer.remove(t)
            graph.initializer.extend([numpy_helper.from_array(q, name + "_int8"),
                                      numpy_helper.from_array(scale.astype(np.float32), name + "_scale")])
            for node, _ in consumers:
                rows = node.output[0]
                node.input[0], node.output[0], node.name = name + "_int8", rows + "_int8", ""
                del node.metadata_props[:]
                after = [helper.make_node("Cast", [rows + "_int8"], [rows + "_cast"], to=TensorProto.FLOAT),
                         helper.make_node("Mul", [rows + "_cast", name + "_scale"], [rows])]
                at = list(graph.node).index(node) + 1
                for k, extra in enumerate(after):
                    graph.node.insert(at + k, extra)
            continue
        scale = np.maximum(np.abs(w).max(axis=axis, keepdims=True), 1e-12) / 127.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(t)
        graph.initializer.extend([numpy_helper.from_array(q, name + "_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), name + "_scale")])
        new_nodes += [helper.make_node("Cast", [name + "_int8"], [name + "_cast"], to=TensorProto.FLOAT),
                      helper.make_node("Mul", [name + "_cast", name + "_scale"], [name])]
        for node, _ in consumers:
            if node.op_type == "Gather":
                node.name = ""
                del node.metadata_props[:]
    for node in reversed(new_nodes):
        graph.node.insert(0, node)
    if strip_scopes:
        for k, node in enumerate(graph.node):
            node.name = f"node_{node.op_type}_{k}"
            del node.metadata_props[:]
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def optimize_transformer(src: Path, out: Path, config: dict[str, Any]) -> Path:
    """Run onnxruntime's transformer optimiser (``onnxruntime.transformers.optimizer``) on the BERT export
    ``src``: ``EmbedLayerNormalization``, ``Attention`` with a packed (in, q + k + v) weight, ``BiasGelu`` and
    ``SkipLayerNormalization`` nodes, as fused-attention exports ship. One file in ``out``."""
    from onnxruntime.transformers import optimizer

    src, out = Path(src), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet_libraries(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimizer.optimize_model(str(src), model_type="bert", num_heads=int(config["num_attention_heads"]),
                                         hidden_size=int(config["hidden_size"]), opt_level=0)
    model.save_model_to_file(str(out))
    return out


def merge_as_branches(src: Path, out: Path) -> Path:
    """A merged decoder laid out as Optimum's ``merge_decoders`` writes ``decoder_model_merged.onnx``: an
    ``If`` on a boolean input ``use_cache_branch`` whose two branches are decoder graphs reading one shared
    set of initializers from the outer graph. Built by hand (Optimum is not a dependency here): both branches
    are the graph of ``src`` (the second with its value names prefixed to keep them apart; node names, which
    carry the module scopes, are kept), where Optimum would put the with-past and the without-past export.
    One file in ``out``."""
    import onnx
    from onnx import TensorProto, helper

    src, out = Path(src), Path(out)
    model = onnx.load(str(src))
    g = model.graph
    outer = {i.name for i in g.input} | {t.name for t in g.initializer}

    def branch(prefix: str) -> Any:
        nodes = []
        for node in g.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.input[:] = [x if (not x or x in outer) else prefix + x for x in node.input]
            n.output[:] = [prefix + x for x in node.output]
            nodes.append(n)
        outputs = [helper.make_tensor_value_info(prefix + o.name, o.type.tensor_type.elem_type, None)
                   for o in g.output]
        return helper.make_graph(nodes, f"{prefix or 'with_past'}branch", [], outputs)

    flag = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    merged_out = [helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None) for o in g.output]
    node = helper.make_node("If", ["use_cache_branch"], [o.name for o in g.output], name="optimum::if",
                            then_branch=branch(""), else_branch=branch("nopast::"))
    graph = helper.make_graph([node], "merged", [*g.input, flag], merged_out, list(g.initializer))
    merged = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(out))
    return out
