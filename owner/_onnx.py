"""Read an ONNX export as a ``TensorSource`` whose tensors carry the Hugging Face names and layouts.

ONNX exporters rename and reshape weights: the legacy TorchScript exporter folds each ``Linear`` weight into an
anonymous transposed initializer (``onnx::MatMul_123``); the dynamo exporter calls them ``val_46`` and may
name a tied embedding ``lm_head.weight``; onnxruntime's int8 quantisation replaces them by ``*_quantized``
integers with scales. Initializer names therefore mean nothing here. Which weight is which is recovered from
the graph:

1. the op an initializer feeds, through ``Transpose``/``Cast``/``DequantizeLinear``, gives its role and its
   layout: ``Gather`` data (embedding), ``MatMul``/``Gemm``/``MatMulInteger``/``DynamicQuantizeMatMul`` B
   (linear weight), ``LayerNormalization`` scale/bias, the ``Mul`` after an RMS normalisation (norm weight),
   the ``Add`` after a matmul (its bias);
2. the module that op ran in gives the HF name: the TorchScript exporter writes it into node names
   (``/model/layers.0/self_attn/q_proj/MatMul``), the dynamo exporter into node metadata
   (``pkg.torch.onnx.name_scopes``);
3. where quantisation dropped that metadata, a weight is placed in its layer by its scoped neighbours and
   named by its order among the layer's matmuls (the per-family order in ``_FAMILIES``).

Layouts are then put back as HF stores them: ``Linear`` weights ``(out, in)``, GPT-2 ``Conv1D`` weights
``(in, out)``, Gemma norm weights as ``g - 1``; int8 weights are dequantised (``(q - zero_point) * scale``,
per tensor or per channel). Nothing is converted up front: the graph is read without its weights, and each
tensor is read (memory-mapped where stored as external data) and converted to fp32 only when asked for.

Real exports add wrinkles, each read from the graph: a wrapper around the model (a sentence-transformers
pipeline puts the layers under ``model.0.model.encoder.layer``; the layer container is the numbered path that
matches the config's layer count and the family's HF container, the prefix before it is dropped);
onnxruntime's weight-only ``MatMulNBits`` (2/4/8-bit blocks, unpacked low bits first); int8 weights
dequantised by plain ``Cast`` [``Sub``] ``Mul`` ops before or after the lookup; an unscoped lookup of
``input_ids`` (the family's token embedding); onnxruntime's fused BERT ops (``EmbedLayerNormalization``,
``Attention`` with a packed (in, q + k + v) weight split by columns, ``SkipLayerNormalization``,
``BiasGelu``); and nodes inside ``If`` branches (Optimum's merged decoder).

A graph that cannot be mapped raises ``CheckpointError`` naming the file and what is missing. This module
only reads local files; it never sends anything anywhere.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from owner._source import TensorMeta
from owner.errors import CheckpointError

# Operators that move a tensor's entries without changing them (followed from a lookup to its dequantisation).
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"})

# --------------------------------------------------------------------------------------------------------
# Family facts that the graph cannot tell: HF naming quirks and stored conventions.


@dataclass(frozen=True)
class _Family:
    # Linear modules of one layer, relative to the layer, in the order a forward pass runs them (used only
    # where the graph lost the module of a matmul, e.g. after dynamic quantisation of a dynamo export).
    layer_linears: tuple[str, ...] = ()
    # Linear modules outside the layers, in execution order (same use).
    top_linears: tuple[str, ...] = ("lm_head",)
    # Linear modules (relative to the layer) that HF stores (in, out): GPT-2's Conv1D.
    conv1d: frozenset[str] = frozenset()
    # Module path rewrites, graph -> HF checkpoint: the TorchScript exporter drops a parent that forward
    # skips (OPT calls ``self.model.decoder``), and transformers 5 renames some modules on load.
    renames: tuple[tuple[str, str], ...] = ()
    # HF stores norm weights as (applied scale - offset): Gemma applies ``1 + w``.
    norm_offset: float = 0.0
    # The output projection (graph path) that HF omits when tied to the embedding.
    head: str = "lm_head"
    # HF path of the numbered layer container: finds the layers under a wrapper (a sentence-transformers
    # ``model.0.model.encoder.layer``) and tells which prefix of the graph's module paths HF does not have.
    layers: str = ""
    # HF path of the token embedding: names a lookup of the input ids whose module the graph lost.
    embed: str = ""


_LLAMA_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_FUSED_LINEARS = ("self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                  "mlp.dense_4h_to_h")
_GPT2_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

_FAMILIES: dict[str, _Family] = {
    "llama": _Family(_LLAMA_LINEARS, layers="model.layers", embed="model.embed_tokens"),
    "mistral": _Family(_LLAMA_LINEARS, layers="model.layers", embed="model.embed_tokens"),
    "qwen2": _Family(_LLAMA_LINEARS, layers="model.layers", embed="model.embed_tokens"),
    "gemma": _Family(_LLAMA_LINEARS, norm_offset=1.0, layers="model.layers", embed="model.embed_tokens"),
    # Gemma-2/3 apply every RMSNorm (QK-norms and the sandwich norms too) as 1 + w, as Gemma does
    "gemma2": _Family(_LLAMA_LINEARS, norm_offset=1.0, layers="model.layers", embed="model.embed_tokens"),
    "gemma3_text": _Family(_LLAMA_LINEARS, norm_offset=1.0, layers="model.layers", embed="model.embed_tokens"),
    "qwen3": _Family(_LLAMA_LINEARS, layers="model.layers", embed="model.embed_tokens"),
    "olmo2": _Family(_LLAMA_LINEARS, layers="model.layers", embed="model.embed_tokens"),
    "phi3": _Family(("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"),
                    layers="model.layers", embed="model.embed_tokens"),
    "gpt2": _Family(_GPT2_LINEARS, conv1d=frozenset(_GPT2_LINEARS), layers="transformer.h", embed="transformer.wte"),
    "gpt_neox": _Family(("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
                         "mlp.dense_4h_to_h"), renames=(("lm_head", "embed_out"),),
                        layers="gpt_neox.layers", embed="gpt_neox.embed_in"),
    "gptj": _Family(("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "mlp.fc_in", "mlp.fc_out"),
                    layers="transformer.h", embed="transformer.wte"),
    "opt": _Family(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                    "fc1", "fc2"), renames=(("decoder", "model.decoder"),),
                   layers="model.decoder.layers", embed="model.decoder.embed_tokens"),
    "falcon": _Family(_FUSED_LINEARS, layers="transformer.h", embed="transformer.word_embeddings"),
    "bloom": _Family(_FUSED_LINEARS, layers="transformer.h", embed="transformer.word_embeddings"),
    "bert": _Family(("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense"),
                    top_linears=("pooler.dense",), head="", layers="encoder.layer",
                    embed="embeddings.word_embeddings"),
}

# --------------------------------------------------------------------------------------------------------
# Graph vocabulary.

_PASS_THROUGH = {"Transpose", "Cast", "Identity"}
# op type -> index of the weight input (the matrix B of x @ B)
_MATMULS = {"MatMul": 1, "Gemm": 1, "MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1,
            "MatMulNBits": 1}
# op type -> {input index: leaf name} for fused or plain normalisations
_NORM_OPS = {
    "LayerNormalization": {1: "weight", 2: "bias"},
    "SimplifiedLayerNormalization": {1: "weight"},
    "RMSNormalization": {1: "weight"},
    "SkipLayerNormalization": {2: "weight", 3: "bias"},
    "SkipSimplifiedLayerNormalization": {2: "weight"},
}
# ops whose presence upstream of a Mul marks the Mul as the scale of a normalisation
_NORMALISING = {"ReduceMean", "ReduceL2", "ReduceSumSquare", "LayerNormalization",
                "SimplifiedLayerNormalization", "RMSNormalization"}
_UNSUPPORTED = {"MatMulBnb4": "4-bit MatMulBnb4",
                "GatherBlockQuantized": "block-quantised Gather"}
# EmbedLayerNormalization input -> HF name beside the token embedding
_EMBED_LN = {2: "word_embeddings.weight", 3: "position_embeddings.weight", 4: "token_type_embeddings.weight",
             5: "LayerNorm.weight", 6: "LayerNorm.bias"}
_ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int8": "I8",
              "uint8": "U8", "int16": "I16", "int32": "I32", "int64": "I64"}


@dataclass(frozen=True)
class _Quant:
    """How stored integers become floats: ``(q - zero_point) * scale`` broadcast along ``axis``."""

    scale: str
    zero_point: str | None
    axis: int | None  # axis of the stored tensor the scale varies along; None: per tensor
    block: int = 0  # block size along ``axis`` for blocked quantisation (0: one scale per index)
    # onnxruntime's ``MatMulNBits`` (weight-only int8/int4): B stored (N, blocks, bytes) of ``bits``-bit
    # values packed low bits first, a scale (and zero point, packed alike; default 2^(bits-1)) per block of
    # ``block`` values along K; the HF (out, in) = (N, K) matrix is the stored rows unpacked and cut to K.
    bits: int = 0
    k: int = 0


@dataclass
class _Entry:
    """One HF tensor: which initializer holds it and how to turn it into the HF layout."""

    name: str
    init: str
    transpose: bool  # stored 2-D matrix is the transpose of the HF one
    quant: _Quant | None = None
    add: float = 0.0  # HF value = stored value (dequantised) + add
    shape: tuple[int, ...] = ()
    part: tuple[int, int] | None = None  # columns [a, b) of the stored tensor (a packed QKV weight or bias)


@dataclass
class _Use:
    """The op an initializer ends up feeding, and what happened on the way."""

    node: Any  # onnx.NodeProto
    index: int
    transposed: bool = False
    quant: _Quant | None = None
    plus_one: bool = False  # passed through ``Add(w, 1)`` (a Gemma norm not folded by the exporter)


@dataclass
class _Linear:
    init: str
    node: Any
    position: int
    effective_transposed: bool  # True when the stored tensor is B^T (B = (in, out) of x @ B)
    quant: _Quant | None
    module: str | None  # graph module path, None when the graph lost it
    cls: str | None = None  # module class from dynamo metadata, when present
    biases: list[str] = field(default_factory=list)


def is_onnx(path: Path) -> bool:
    """Whether ``path`` is an ONNX model file or a directory holding one (see ``find_onnx_model``)."""
    return find_onnx_model(Path(path)) is not None


def find_onnx_model(path: Path) -> Path | None:
    """The ``.onnx`` file for ``path``: the file itself, or in a directory ``model.onnx``, Optimum's
    ``decoder_model_merged.onnx`` (beside the unmerged decoders), or its only ``*.onnx`` file; ``None`` when
    there is none or the choice is ambiguous."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".onnx" else None
    if not path.is_dir():
        return None
    for name in ("model.onnx", "decoder_model_merged.onnx"):
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.glob("*.onnx") if p.is_file())
    return found[0] if len(found) == 1 else None


def _layer_count(config: dict[str, Any]) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        v = config.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _layer_prefix(module: str, container: str | None) -> str | None:
    """``model.layers.3.self_attn.q_proj`` -> ``model.layers.3`` (container ``model.layers``); None outside
    the numbered layers of ``container``."""
    if not container or not module.startswith(container + "."):
        return None
    index = module[len(container) + 1:].split(".", 1)[0]
    return f"{container}.{index}" if index.isdigit() else None


def _all_nodes(graph: Any) -> list[Any]:
    """The nodes of ``graph`` and of its subgraphs (``If`` branches, ``Loop``/``Scan`` bodies), in order."""
    out: list[Any] = []
    for node in graph.node:
        out.append(node)
        for a in node.attribute:
            if a.HasField("g"):
                out.extend(_all_nodes(a.g))
            for g in a.graphs:
                out.extend(_all_nodes(g))
    return out


class OnnxSource:
    """An ONNX model (fp32, fp16 or dynamically quantised int8) read as HF-named tensors.

    ``config`` is the parsed ``config.json`` of the model; its ``model_type`` selects the naming facts in
    ``_FAMILIES`` (models of other types are mapped from the graph alone).
    """

    def __init__(self, onnx_path: Path, config: dict[str, Any]) -> None:
        import onnx

        self._path = Path(onnx_path)
        self._dir = self._path.parent
        if not self._path.is_file():
            raise CheckpointError(f"{self._path}: ONNX model file is missing")
        try:
            model = onnx.load(str(self._path), load_external_data=False)
        except Exception as e:  # protobuf and onnx raise assorted types for corrupt files
            raise CheckpointError(f"{self._path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
        if not model.graph.node:
            raise CheckpointError(f"{self._path}: not a readable ONNX model (the graph has no nodes)")
        self._graph = model.graph
        self._config = config
        self._model_type = str(config.get("model_type", ""))
        self._family = _FAMILIES.get(self._model_type, _Family())
        # Weights are initializers. Constant nodes hold buffers (GPT-J's sinusoid table, masks), which HF
        # checkpoints do not store; they are read only as the small constants of patterns like Add(w, 1).
        self._inits: dict[str, Any] = {t.name: t for t in model.graph.initializer}
        self._consts: dict[str, Any] = {}
        # Nodes of subgraphs too: Optimum's merged decoder runs its two decoders as the branches of an ``If``,
        # reading the weights both share from the outer graph's initializers.
        self._nodes: list[Any] = _all_nodes(model.graph)
        for node in self._nodes:  # weights a merge left inside one branch
            for a in node.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    self._inits.update((t.name, t) for t in g.initializer)
        for node in self._nodes:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t"):
                        self._consts[node.output[0]] = a.t
        self._producer: dict[str, Any] = {}
        self._consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        self._position: dict[int, int] = {}
        for pos, node in enumerate(self._nodes):
            self._position[id(node)] = pos
            for out in node.output:
                self._producer[out] = node
            for k, name in enumerate(node.input):
                if name:
                    self._consumers[name].append((node, k))
            if node.op_type in _UNSUPPORTED:
                raise CheckpointError(
                    f"{self._path}: {_UNSUPPORTED[node.op_type]} weights ({node.name or node.op_type}) are not "
                    "supported; export the model in fp32, fp16 or int8"
                )
        self._scopes: dict[int, tuple[str | None, str | None]] = {}
        self._entries: dict[str, _Entry] = {}
        # no node keeps a scope (names and metadata stripped): the parameters' names are all that tell the modules
        self._stripped = not any(self._scope(node)[0] for node in self._nodes)
        self._container, self._wrapper = self._find_layers()
        self._map()

    # -- the mapping -----------------------------------------------------------------------------------
    def _scope(self, node: Any) -> tuple[str | None, str | None]:
        """(module path, module class) of the module a node ran in; (None, None) when unknown."""
        key = id(node)
        if key not in self._scopes:
            self._scopes[key] = self._read_scope(node)
        return self._scopes[key]

    @staticmethod
    def _read_scope(node: Any) -> tuple[str | None, str | None]:
        meta = {p.key: p.value for p in node.metadata_props}
        raw = meta.get("pkg.torch.onnx.name_scopes")
        if raw:  # dynamo exporter: full module paths, innermost module second to last (last is the op)
            try:
                scopes = ast.literal_eval(raw)
                classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
            except (ValueError, SyntaxError):
                return None, None
            if not isinstance(scopes, list) or len(scopes) < 2 or not all(isinstance(s, str) for s in scopes):
                return None, None
            module = scopes[-2]
            cls = classes[-2] if isinstance(classes, list) and len(classes) == len(scopes) else None
            return (module or None), (cls if isinstance(cls, str) else None)
        name = node.name
        if name.startswith("/") and name.count("/") >= 2:  # TorchScript exporter: /model/layers.0/mlp/MatMul
            return ".".join(name.strip("/").split("/")[:-1]) or None, None
        return None, None

    def _renamed(self, module: str) -> str:
        for old, new in self._family.renames:
            if module == old or module.startswith(old + "."):
                return new + module[len(old):]
        return module

    def _find_layers(self) -> tuple[str | None, str]:
        """(graph path of the numbered layer container, wrapper prefix HF does not have).

        Every numbered module path component is a candidate container (``model.0`` of a sentence-transformers
        wrapper is one, ``experts.3`` another). The container is the one whose indices are the config's
        layers and whose path ends with the family's HF container, then the one with the most indices.
        The wrapper is what the graph path has before the family's HF container.
        """
        n_layers = _layer_count(self._config)
        found: dict[str, set[int]] = defaultdict(set)
        modules = [self._scope(node)[0] for node in self._nodes]
        if self._stripped:  # the parameters' names still hold the paths
            modules = [name.rpartition(".")[0] for name in self._inits if _parameter_module(name, ("weight", "bias"))]
        for module in modules:
            if not module:
                continue
            parts = module.split(".")
            for i in range(1, len(parts)):
                if parts[i].isdigit():
                    found[".".join(parts[:i])].add(int(parts[i]))
        if not found:
            return None, ""

        def wrapper_of(container: str) -> str | None:
            target = self._family.layers
            if not target:
                return None
            parts = container.split(".")
            for i in range(len(parts)):
                if self._renamed(".".join(parts[i:])) == target:
                    return ".".join(parts[:i]) + "." if i else ""
            return None

        def rank(item: tuple[str, set[int]]) -> tuple[bool, bool, int, int]:
            container, indices = item
            exact = n_layers is not None and indices == set(range(n_layers))
            return exact, wrapper_of(container) is not None, len(indices), -container.count(".")

        container = max(found.items(), key=rank)[0]
        return container, wrapper_of(container) or ""

    def _hf(self, module: str) -> str:
        if self._wrapper and module.startswith(self._wrapper):
            module = module[len(self._wrapper):]
        return self._renamed(module)

    def _is_weight_init(self, name: str) -> bool:
        t = self._inits.get(name)
        if t is None:
            return False
        n = 1
        for d in t.dims:
            n *= d
        return n > 1 and t.data_type != 7 and t.data_type != 9  # not int64 shapes, not bool masks

    def _scalar(self, name: str) -> float | None:
        """The value of a one-element constant (initializer or Constant node), else None."""
        from onnx import numpy_helper

        t = self._inits.get(name, self._consts.get(name))
        if t is None or int(np.prod(t.dims)) != 1 or t.data_location == 1:
            return None
        try:
            return float(numpy_helper.to_array(t).reshape(-1)[0])
        except (ValueError, TypeError):
            return None

    def _uses(self, init: str) -> list[_Use]:
        """Follow ``init`` through layout and dequantisation ops to the ops that compute with it."""
        out: list[_Use] = []
        todo: list[tuple[str, bool, _Quant | None, bool]] = [(init, False, None, False)]
        while todo:
            value, transposed, quant, plus_one = todo.pop()
            for node, k in self._consumers.get(value, []):
                op = node.op_type
                if op in _PASS_THROUGH and k == 0:
                    t = transposed
                    if op == "Transpose":
                        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                        if perm not in (None, [1, 0]):
                            continue  # not a 2-D matrix transpose: not a weight layout we know
                        t = not transposed
                    todo.append((node.output[0], t, quant, plus_one))
                elif op == "DequantizeLinear" and k == 0 and quant is None:
                    todo.append((node.output[0], transposed, self._dequant_params(node, init, transposed), plus_one))
                elif (op in ("Sub", "Mul") and k == 0 and len(node.input) == 2 and self._integer(init)
                      and (quant is None or not quant.scale) and node.input[1] in self._inits):
                    # dequantisation written out as ops: Cast(q) [- zero point] * scale
                    if op == "Sub" and quant is None:
                        todo.append((node.output[0], transposed, _Quant("", node.input[1], None), plus_one))
                    elif op == "Mul":
                        todo.append((node.output[0], transposed, self._op_quant(init, node.input[1], transposed,
                                                                                quant), plus_one))
                elif (op == "Add" and not plus_one and len(node.input) == 2 and len(self._inits[init].dims) == 1
                      and self._scalar(node.input[1 - k]) == 1.0):
                    todo.append((node.output[0], transposed, quant, True))
                else:
                    out.append(_Use(node, k, transposed, quant, plus_one))
        return out

    def _integer(self, init: str) -> bool:
        return self._inits[init].data_type in (2, 3)  # uint8, int8

    def _op_quant(self, init: str, scale: str, transposed: bool, pending: _Quant | None) -> _Quant:
        """The quantisation of ``init`` dequantised by ops, from the shape of its scale (and zero point)."""
        zp = pending.zero_point if pending is not None else None
        stored = tuple(int(d) for d in self._inits[init].dims)
        for name in (scale, zp):
            if name is None:
                continue
            dims = tuple(int(d) for d in self._inits[name].dims)
            n = int(np.prod(dims)) if dims else 1
            if n != 1 and (len(stored) != 2 or n not in stored or max(dims) != n):
                raise CheckpointError(f"{self._path}: unsupported quantisation of {init!r} (scale {dims})")
        dims = tuple(int(d) for d in self._inits[scale].dims)
        n = int(np.prod(dims)) if dims else 1
        if n == 1:
            return _Quant(scale, zp, None)
        # the scale broadcasts against the (maybe transposed) matrix: (n,) or (1, n) along its last axis
        seen = 0 if len(dims) == 2 and dims[1] == 1 else 1
        return _Quant(scale, zp, (1 - seen) if transposed else seen)

    def _dequant_params(self, node: Any, init: str, transposed: bool = False) -> _Quant:
        scale = node.input[1]
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        attrs = {a.name: a for a in node.attribute}
        axis = attrs["axis"].i if "axis" in attrs else 1
        block = attrs["block_size"].i if "block_size" in attrs else 0
        stored = self._inits[init]
        rank = len(stored.dims)
        scale_t = self._inits.get(scale)
        if scale_t is None:
            raise CheckpointError(f"{self._path}: the scale of {init!r} ({scale!r}) is not a constant")
        per_tensor = len(scale_t.dims) == 0 or (len(scale_t.dims) == 1 and scale_t.dims[0] == 1 and not block)
        if per_tensor:
            return _Quant(scale, zp, None)
        axis %= max(rank, 1)
        if transposed and rank == 2:  # the axis is of the transposed matrix the DequantizeLinear sees
            axis = 1 - axis
        return _Quant(scale, zp, axis, block)

    def _matmul_integer_quant(self, node: Any, init: str, transposed: bool) -> _Quant:
        """Scale and zero point of B in ``MatMulInteger`` (ORT: the Mul of A's scale by B's scale feeds the
        Mul that rescales the integer product) or in the fused contrib matmuls (explicit inputs)."""
        op = node.op_type
        if op == "DynamicQuantizeMatMul":
            scale, zp = node.input[2], (node.input[3] if len(node.input) > 3 and node.input[3] else None)
        elif op == "MatMulIntegerToFloat":
            scale, zp = node.input[3], (node.input[5] if len(node.input) > 5 and node.input[5] else None)
        else:
            zp = node.input[3] if len(node.input) > 3 and node.input[3] else None
            scale = self._integer_product_scale(node)
            if scale is None:
                raise CheckpointError(
                    f"{self._path}: cannot find the scale of the int8 weight feeding {node.name or op!r}"
                )
        scale_t = self._inits.get(scale)
        if scale_t is None:
            raise CheckpointError(f"{self._path}: the scale of the int8 weight {init!r} is not a constant")
        n = 1
        for d in scale_t.dims:
            n *= d
        # per output column of B (in, out): axis 1 of the stored tensor, or 0 when it reaches B transposed
        return _Quant(scale, zp, None if n == 1 else (0 if transposed else 1))

    def _nbits_quant(self, node: Any, init: str) -> _Quant:
        attrs = {a.name: a.i for a in node.attribute if a.type == 2}  # INT attributes
        bits, block, k, n = attrs.get("bits", 4), attrs.get("block_size", 0), attrs.get("K", 0), attrs.get("N", 0)
        dims = tuple(int(d) for d in self._inits[init].dims)
        what = f"{self._path}: MatMulNBits weight {init!r} ({node.name or 'MatMulNBits'})"
        if bits not in (2, 4, 8) or block <= 0 or len(dims) != 3 or dims[0] != n or dims[1] * block < k \
                or dims[2] * 8 != block * bits or self._inits[init].data_type != 2:  # uint8
            raise CheckpointError(f"{what}: unsupported layout (bits={bits}, block_size={block}, K={k}, N={n}, "
                                  f"stored {dims})")
        if len(node.input) > 6 and node.input[6]:
            raise CheckpointError(f"{what}: a g_idx (act-order) permutation is not supported")
        scale = node.input[2] if len(node.input) > 2 else ""
        zp = node.input[3] if len(node.input) > 3 and node.input[3] else None
        if scale not in self._inits or (zp is not None and zp not in self._inits):
            raise CheckpointError(f"{what}: its scales or zero points are not constants")
        if zp is not None and self._inits[zp].data_type != 2:
            raise CheckpointError(f"{what}: float zero points are not supported")
        return _Quant(scale, zp, 0, block, bits, k)

    def _decode_nbits(self, e: _Entry, q: _Quant, stored: np.ndarray, index: list[int] | None) -> np.ndarray:
        """(N or len(index), K) fp32 from MatMulNBits rows ``stored`` (already restricted to ``index``)."""
        b = np.asarray(stored, dtype=np.uint8)
        rows, blocks = b.shape[0], b.shape[1]
        per = 8 // q.bits
        mask = (1 << q.bits) - 1
        if per == 1:
            vals = b.astype(np.float32)
        else:
            vals = np.stack([(b >> (q.bits * j)) & mask for j in range(per)], axis=-1).astype(np.float32)
        vals = vals.reshape(rows, blocks, q.block)
        scale = np.asarray(self._array(q.scale), dtype=np.float32).reshape(int(self._inits[e.init].dims[0]), -1)
        if q.zero_point is None:
            zp = np.full(scale.shape, float(1 << (q.bits - 1)), dtype=np.float32)
        else:
            packed = np.asarray(self._array(q.zero_point), dtype=np.uint8).reshape(scale.shape[0], -1)
            if per == 1:
                zp = packed.astype(np.float32)
            else:
                zp = np.stack([(packed >> (q.bits * j)) & mask for j in range(per)], axis=-1)
                zp = zp.reshape(scale.shape[0], -1)[:, :scale.shape[1]].astype(np.float32)
        if index is not None:
            scale, zp = scale[index], zp[index]
        x = (vals - zp[:, :blocks, None]) * scale[:, :blocks, None]
        return x.reshape(rows, blocks * q.block)[:, :q.k]

    def _integer_product_scale(self, node: Any) -> str | None:
        # MatMulInteger -> Cast -> Mul(., s) with s = Mul(a_scale, b_scale): b_scale is the constant one.
        frontier = [node.output[0]]
        for _ in range(3):
            nxt = []
            for value in frontier:
                for c, k in self._consumers.get(value, []):
                    if c.op_type == "Cast":
                        nxt.append(c.output[0])
                    elif c.op_type == "Mul":
                        other = c.input[1 - k]
                        if other in self._inits:
                            return str(other)
                        prod = self._producer.get(other)
                        if prod is not None and prod.op_type == "Mul":
                            consts = [x for x in prod.input if x in self._inits]
                            if len(consts) == 1:
                                return str(consts[0])
                            # A's scale is a constant too when A is itself a quantised initializer (the int8
                            # embedding straight into OLMo-2's first q_proj, no norm between): B's scale is the
                            # one named after B, as onnxruntime's quantiser names them (X_quantized, X_scale)
                            weight = str(node.input[1]).removesuffix("_quantized")
                            named = [x for x in consts if x == f"{weight}_scale"]
                            if len(named) == 1:
                                return str(named[0])
            frontier = nxt
        return None

    def _upstream_has(self, value: str, ops: set[str], depth: int) -> bool:
        seen: set[int] = set()
        frontier = [value]
        for _ in range(depth):
            nxt: list[str] = []
            for v in frontier:
                p = self._producer.get(v)
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                if p.op_type in ops:
                    return True
                if p.op_type in ("DynamicQuantizeLinear", "MatMul", "Gemm", "MatMulInteger"):
                    continue  # a normalisation beyond a matmul is another module's
                nxt.extend(x for x in p.input if x and x not in self._inits)
            frontier = nxt
        return False

    def _matmul_behind(self, value: str, linears: dict[int, _Linear]) -> _Linear | None:
        """The linear whose output reaches ``value`` through rescaling and reshaping only (its bias Add)."""
        for _ in range(4):
            p = self._producer.get(value)
            if p is None:
                return None
            if id(p) in linears:
                return linears[id(p)]
            if p.op_type not in ("Mul", "Cast", "Reshape", "Identity", "Squeeze", "Unsqueeze"):
                return None
            value = next((x for x in p.input if x and x not in self._inits), "")
        return None

    def _map(self) -> None:
        uses = {name: self._uses(name) for name in self._inits if self._is_weight_init(name)}
        # 1. matmul weights and embeddings (these also tell which initializers are quantisation parameters)
        linears: dict[int, _Linear] = {}
        embeddings: list[_Entry] = []
        fused: list[_Entry] = []  # weights of onnxruntime's fused ops (transformer optimiser)
        vectors: list[tuple[str, _Use]] = []
        quant_params: set[str] = set()
        for init, init_uses in uses.items():
            for u in init_uses:
                op = u.node.op_type
                if op in _MATMULS and u.index == _MATMULS[op]:
                    lin = self._linear(init, u)
                    linears[id(u.node)] = lin
                    quant = lin.quant
                elif op == "Gather" and u.index == 0 and len(self._inits[init].dims) == 2:
                    emb = self._embedding(init, u)
                    embeddings.append(emb)
                    quant = emb.quant
                elif op == "EmbedLayerNormalization" and u.index in _EMBED_LN and u.quant is None:
                    fused.append(self._embed_ln(init, u))
                    if u.index == 2:
                        embeddings.append(fused[-1])
                    continue
                elif op == "Attention" and u.index in (1, 2) and u.quant is None:
                    fused.extend(self._packed_qkv(init, u))
                    continue
                else:
                    vectors.append((init, u))
                    continue
                if quant is not None:
                    quant_params.update(x for x in (quant.scale, quant.zero_point) if x)
        if not embeddings:
            raise CheckpointError(
                f"{self._path}: no token embedding (a Gather reading a weight matrix) found in the graph; "
                "this does not look like an export of a language model"
            )
        if self._container is None:
            raise CheckpointError(
                f"{self._path}: no layer weights (module paths like 'layers.0') in the graph; this does not "
                "look like an export of a transformer"
            )
        # 2. vectors: norm weights, norm biases, and biases (attached to the linear they follow)
        named: dict[str, _Entry] = {}
        for init, u in vectors:
            if init not in quant_params and len(self._inits[init].dims) == 1:
                entry = self._vector(init, u, linears)
                if entry is not None:
                    self._add(named, entry)
        # 3. linear weights: named by their module, or by their order in the layer where the graph lost it
        self._name_linears(list(linears.values()), named)
        for emb in [*embeddings, *fused]:
            self._add(named, emb)
        # 4. a tied output projection: HF checkpoints omit it
        head = self._hf(self._family.head) + ".weight" if self._family.head else None
        if head and head in named:
            tied = self._config.get("tie_word_embeddings")
            if tied is True or (tied is None and named[head].init in {e.init for e in embeddings}):
                del named[head]
        for e in named.values():
            e.shape = self._hf_shape(e)
        self._entries = dict(sorted(named.items()))
        self._check_coverage()

    def _linear(self, init: str, u: _Use) -> _Linear:
        op = u.node.op_type
        quant = u.quant
        if op in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
            quant = self._matmul_integer_quant(u.node, init, u.transposed)
        if op == "MatMulNBits":
            quant = self._nbits_quant(u.node, init)
            module, cls = self._scope(u.node)
            return _Linear(init, u.node, self._position[id(u.node)], True, quant, module, cls)
        trans_b = op == "Gemm" and any(a.name == "transB" and a.i for a in u.node.attribute)
        module, cls = self._scope(u.node)
        return _Linear(init, u.node, self._position[id(u.node)], u.transposed != trans_b, quant, module, cls)

    def _embedding(self, init: str, u: _Use) -> _Entry:
        quant = u.quant
        if quant is None and self._inits[init].data_type in (2, 3):  # uint8/int8: dequantised after the lookup
            quant = self._gathered_quant(u.node, init)
        module, _ = self._scope(u.node)
        if module is None and self._stripped:  # no scopes left: the exporter still names the table's parameter
            module = _parameter_module(u.node.input[0]) or _parameter_module(init)
        if module is None and self._family.embed and self._container is not None and self._reads_input_ids(u.node):
            # the lookup of the input ids in a graph whose layers are scoped: the family's token embedding
            return _Entry(self._family.embed + ".weight", init, u.transposed, quant)
        if module is None:
            raise CheckpointError(
                f"{self._path}: an embedding lookup ({u.node.name or 'Gather'}) has no module scope in its "
                "node name or metadata; cannot tell which embedding it is"
            )
        return _Entry(self._hf(module) + ".weight", init, u.transposed, quant)

    def _embed_ln(self, init: str, u: _Use) -> _Entry:
        """A weight of onnxruntime's ``EmbedLayerNormalization`` (word, position, token-type embeddings and
        the LayerNorm after them), named beside the family's token embedding."""
        if not self._family.embed:
            raise CheckpointError(f"{self._path}: an EmbedLayerNormalization in a {self._model_type!r} model "
                                  "has no known embedding names")
        parent = self._family.embed.rpartition(".")[0]
        return _Entry(f"{parent}.{_EMBED_LN[u.index]}" if parent else _EMBED_LN[u.index], init, u.transposed)

    def _packed_qkv(self, init: str, u: _Use) -> list[_Entry]:
        """onnxruntime's fused ``Attention``: weight (in, q + k + v) and bias (q + k + v), split into the
        family's q, k and v linears of the layer the node's scoped neighbours are in."""
        node = u.node
        qkv = self._family.layer_linears[:3]
        where = f"{self._path}: fused Attention {node.name or 'Attention'}"
        if len(qkv) != 3 or not all(r.endswith(("query", "key", "value", "q_proj", "k_proj", "v_proj"))
                                    for r in qkv):
            raise CheckpointError(f"{where}: model_type {self._model_type!r} has no separate q, k, v to split into")
        if u.transposed:
            raise CheckpointError(f"{where}: a transposed packed weight is not supported")
        dims = tuple(int(d) for d in self._inits[init].dims)
        sizes = next((list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"), None)
        width = dims[-1]
        sizes = sizes or ([width // 3] * 3 if width % 3 == 0 else [])
        if len(sizes) != 3 or sum(sizes) != width:
            raise CheckpointError(f"{where}: cannot split {dims} into q, k and v")
        layer = next((found for m in self._neighbour_scopes(node)
                      if (found := _layer_prefix(m, self._container)) is not None), None)
        if layer is None:
            raise CheckpointError(f"{where}: no scoped node near it tells its layer")
        leaf = "weight" if u.index == 1 else "bias"
        out, start = [], 0
        for rel, n in zip(qkv, sizes, strict=True):
            # the packed weight is B = (in, out) of x @ B; HF stores (out, in)
            out.append(_Entry(f"{self._hf(layer)}.{rel}.{leaf}", init, u.index == 1, part=(start, start + n)))
            start += n
        return out

    def _reads_input_ids(self, gather: Any) -> bool:
        """Whether the indices of ``gather`` are the graph input ``input_ids`` (through casts and reshapes)."""
        value = gather.input[1]
        for _ in range(6):
            if value == "input_ids":
                return True
            p = self._producer.get(value)
            if p is None or p.op_type not in ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"):
                return False
            value = p.input[0]
        return False

    def _vector(self, init: str, u: _Use, linears: dict[int, _Linear]) -> _Entry | None:
        """The norm weight or norm bias ``init`` is, or None (a linear's bias is attached to it instead)."""
        node, op = u.node, u.node.op_type
        add = 0.0
        if op in _NORM_OPS and u.index in _NORM_OPS[op]:
            leaf = _NORM_OPS[op][u.index]
        elif ((op == "Gemm" and u.index == 2) or (op == "MatMulNBits" and u.index == 5)) and id(node) in linears:
            linears[id(node)].biases.append(init)
            return None
        elif (op, u.index) in (("BiasGelu", 1), ("FastGelu", 1), ("SkipLayerNormalization", 4),
                               ("SkipSimplifiedLayerNormalization", 4)):
            lin = self._matmul_behind(node.input[0], linears)  # the bias of the matmul feeding the fused op
            if lin is None:
                raise CheckpointError(f"{self._path}: the bias {init!r} of {node.name or op} follows no matmul")
            lin.biases.append(init)
            return None
        elif op == "Mul" and len(node.input) == 2:
            if not self._upstream_has(node.input[1 - u.index], _NORMALISING, depth=6):
                return None  # a constant that scales something else (rotary frequencies, ...)
            leaf = "weight"
            # HF value = applied scale - family offset; the stored value is the scale, or scale - 1 when the
            # graph adds the 1 itself
            add = (1.0 if u.plus_one else 0.0) - self._family.norm_offset
        elif op == "Add" and len(node.input) == 2 and not u.plus_one:
            lin = self._matmul_behind(node.input[1 - u.index], linears)
            if lin is not None:
                lin.biases.append(init)
                return None
            if not self._upstream_has(node.input[1 - u.index], _NORMALISING, depth=4):
                return None
            leaf = "bias"  # the shift of a LayerNorm written out as ops
        else:
            return None
        module, _ = self._scope(node)
        if module is None and op in _NORM_OPS and init.endswith("." + leaf) and \
                (_layer_prefix(init, self._container) is not None or self._stripped):
            # a fused normalisation (onnxruntime's optimiser) keeps no scope, but its parameter keeps the
            # state-dict name the exporter gave it, inside the layers (anywhere, in a graph stripped of scopes)
            module = init[:-len(leaf) - 1]
        if module is None:
            raise CheckpointError(
                f"{self._path}: a normalisation {leaf} ({node.name or op}) has no module scope in its node "
                "name or metadata"
            )
        return _Entry(f"{self._hf(module)}.{leaf}", init, False, u.quant, add)

    def _gathered_quant(self, gather: Any, init: str) -> _Quant:
        after = gather.output[0]
        for c, k in self._consumers.get(after, []):  # dequantised by ops: Cast [- zero point] * scale
            if c.op_type == "Cast" and k == 0:
                pending: _Quant | None = None
                for c2, k2 in self._consumers.get(c.output[0], []):
                    if c2.op_type == "Sub" and k2 == 0 and c2.input[1] in self._inits:
                        pending = _Quant("", c2.input[1], None)
                        c2 = next((x for x, kx in self._consumers.get(c2.output[0], []) if x.op_type == "Mul"), c2)
                    if c2.op_type == "Mul" and c2.input[1] in self._inits:
                        q = self._op_quant(init, c2.input[1], False, pending)
                        return q if q.axis is None else _Quant(q.scale, q.zero_point, 1)
        for c, k in self._consumers.get(gather.output[0], []):
            if c.op_type == "DequantizeLinear" and k == 0:
                q = self._dequant_params(c, init)
                if q.axis is None:
                    return q
                # a per-channel scale after a Gather varies along the embedding width (axis 1 stored)
                scale_len = int(self._inits[q.scale].dims[0]) if self._inits[q.scale].dims else 1
                if scale_len == self._inits[init].dims[1] and not q.block:
                    return _Quant(q.scale, q.zero_point, 1)
                raise CheckpointError(f"{self._path}: unsupported quantisation of the embedding {init!r}")
            if c.op_type in _LAYOUT_OPS and k == 0:
                # a lookup moved about before it is dequantised (onnxruntime quantises MPNet's relative-attention
                # bias as Gather -> Transpose -> DequantizeLinear): one scale for the whole tensor survives any
                # layout change; a per-channel scale's axis would not, so that is refused
                for c2, k2 in self._consumers.get(c.output[0], []):
                    if c2.op_type == "DequantizeLinear" and k2 == 0:
                        q = self._dequant_params(c2, init)
                        if q.axis is None and not q.block:
                            return q
                        raise CheckpointError(f"{self._path}: unsupported quantisation of the embedding {init!r} "
                                              f"(a per-channel scale after a {c.op_type})")
        raise CheckpointError(f"{self._path}: integer embedding {init!r} is never dequantised")

    def _add(self, named: dict[str, _Entry], e: _Entry) -> None:
        prev = named.get(e.name)
        if prev is not None and prev.init != e.init:
            raise CheckpointError(
                f"{self._path}: two different weights map to {e.name!r} ({prev.init!r} and {e.init!r})"
            )
        named.setdefault(e.name, e)

    def _name_linears(self, linears: list[_Linear], named: dict[str, _Entry]) -> None:
        fam = self._family
        template = set(fam.layer_linears)
        # A module path names a weight when the graph has it, it holds one weight, and it is not cut short at
        # the layer or a block of it (as when an attention module calls F.linear itself).
        by_module: dict[str, list[_Linear]] = defaultdict(list)
        for lin in linears:
            if lin.module is None and self._stripped and len(lin.biases) == 1:
                # an anonymous weight (``val_49``) in a graph stripped of scopes: its bias may still carry the
                # state-dict name the exporter gave it
                lin.module = _parameter_module(lin.biases[0], ("bias",))
            if lin.module is not None:
                by_module[lin.module].append(lin)
        for module, group in by_module.items():
            distinct = {g.init for g in group}
            layer = _layer_prefix(module, self._container)
            relative = module[len(layer) + 1:] if layer else module
            truncated = layer is not None and (relative == "" or any(t.startswith(relative + ".") for t in template))
            if len(distinct) > 1 or truncated:
                for g in group:
                    g.module = None
        unscoped = [lin for lin in linears if lin.module is None]
        if unscoped:
            self._place_by_order(unscoped, linears)
        for lin in linears:
            if lin.module is None:  # _place_by_order names every weight or raises; kept for the type checker
                raise CheckpointError(f"{self._path}: could not place the matmul weight {lin.init!r}")
            layer = _layer_prefix(lin.module, self._container)
            relative = lin.module[len(layer) + 1:] if layer else lin.module
            conv1d = (lin.cls or "").endswith("Conv1D") or (layer is not None and relative in fam.conv1d)
            # stored tensor is B or B^T (B = (in, out)); HF Linear stores B^T, Conv1D stores B
            transpose = lin.effective_transposed == conv1d
            module = self._hf(lin.module)
            self._add(named, _Entry(module + ".weight", lin.init, transpose, lin.quant))
            for b in lin.biases:
                self._add(named, _Entry(module + ".bias", b, False, None))

    def _place_by_order(self, unscoped: list[_Linear], linears: list[_Linear]) -> None:
        """Name matmul weights whose module the graph lost (ORT's quantised nodes carry no metadata).

        Each weight is put in a layer and a block of it (``self_attn``, ``mlp``...) by the nearest nodes
        that still have a scope, then named by graph order within that block. Graph order is execution
        order only within a block: parallel attention and MLP branches may interleave.
        """
        fam = self._family
        if not fam.layer_linears:
            raise CheckpointError(
                f"{self._path}: {len(unscoped)} matmul weights have no module scope in the graph (first: "
                f"{unscoped[0].node.name or unscoped[0].node.op_type!r}), and model_type "
                f"{self._model_type!r} has no known layer layout to place them by order"
            )
        taken: set[str] = {lin.module for lin in linears if lin.module is not None}
        blocks = sorted({r.rpartition(".")[0] for r in fam.layer_linears if "." in r}, key=len, reverse=True)
        groups: dict[tuple[str, str], list[_Linear]] = defaultdict(list)
        for lin in unscoped:
            layer, block = "", ""
            for module in self._neighbour_scopes(lin.node):
                found = _layer_prefix(module, self._container)
                if found is None:
                    continue
                if not layer:
                    layer = found
                if found != layer:
                    continue
                relative = module[len(found) + 1:]
                block = next((b for b in blocks if relative == b or relative.startswith(b + ".")), "")
                if block:
                    break
            groups[(layer, block)].append(lin)
        for (layer, block), group in groups.items():
            group.sort(key=lambda g: g.position)
            if layer:
                in_block = [r for r in fam.layer_linears if r.rpartition(".")[0] == block or
                            (not block and r.rpartition(".")[0] not in blocks)]
                free = [f"{layer}.{r}" for r in in_block if f"{layer}.{r}" not in taken]
            else:
                free = [r for r in fam.top_linears if r not in taken]
            if len(free) != len(group):
                where = f"block {block or '(layer)'} of layer {layer!r}" if layer else "outside the layers"
                raise CheckpointError(
                    f"{self._path}: {where} has {len(group)} matmul weights without a module scope, but a "
                    f"{self._model_type} model has {len(free)} there to place ({', '.join(free) or 'none'})"
                )
            for lin, module in zip(group, free, strict=True):
                lin.module = module
                taken.add(module)

    def _neighbour_scopes(self, node: Any) -> list[str]:
        """Module paths of the nearest scoped nodes after ``node``, then before it, nearest first."""
        out: list[str] = []
        for direction in ("down", "up"):
            seen = {id(node)}
            queue: deque[tuple[Any, int]] = deque([(node, 0)])
            while queue:
                cur, depth = queue.popleft()
                if depth > 0:
                    module, _ = self._scope(cur)
                    if module is not None:
                        out.append(module)
                        continue  # do not look past a scoped node
                if depth >= 12:
                    continue
                nxt: Iterator[Any]
                if direction == "down":
                    nxt = (c for o in cur.output for c, _ in self._consumers.get(o, []))
                else:
                    nxt = (self._producer[x] for x in cur.input if x in self._producer)
                for n in nxt:
                    if id(n) not in seen:
                        seen.add(id(n))
                        queue.append((n, depth + 1))
        return out

    def _check_coverage(self) -> None:
        n_layers = _layer_count(self._config)
        found: dict[str, set[str]] = defaultdict(set)
        main = self._hf(self._container or "")
        for name in self._entries:
            layer = _layer_prefix(name, main)
            if layer is not None and name.endswith(".weight"):
                found[layer].add(name[len(layer) + 1:-len(".weight")])
        if not found:
            raise CheckpointError(f"{self._path}: no layer weights (module paths like 'layers.0') in the graph")
        indices = {int(layer.rpartition(".")[2]) for layer in found}
        if n_layers is not None and indices != set(range(n_layers)):
            missing = sorted(set(range(n_layers)) - indices)
            raise CheckpointError(
                f"{self._path}: config.json has {n_layers} layers, but the graph has weights for layers "
                f"{sorted(indices)} of {main!r}" + (f" (missing {missing})" if missing else "")
            )
        required = self._family.layer_linears
        for i in sorted(indices):
            layer = f"{main}.{i}"
            lacking = [r for r in required if r not in found[layer]]
            if lacking:
                raise CheckpointError(
                    f"{self._path}: could not recover {', '.join(lacking)} of {self._hf(layer)!r} from the graph"
                )

    def _hf_shape(self, e: _Entry) -> tuple[int, ...]:
        dims = tuple(int(d) for d in self._inits[e.init].dims)
        if e.quant is not None and e.quant.bits:
            return dims[0], e.quant.k
        if e.part is not None:
            dims = (*dims[:-1], e.part[1] - e.part[0])
        return tuple(reversed(dims)) if e.transpose and len(dims) == 2 else dims

    # -- reading ---------------------------------------------------------------------------------------
    def _external_file(self, t: Any) -> Path | None:
        if t.data_location != 1:  # TensorProto.EXTERNAL
            return None
        info = {kv.key: kv.value for kv in t.external_data}
        location = Path(info.get("location", ""))
        # Checked by name, not by resolving: hub caches link model files to blobs elsewhere.
        if not location.parts or location.is_absolute() or ".." in location.parts:
            raise CheckpointError(
                f"{self._path}: external data of {t.name!r} has location {str(location)!r}; expected a file "
                "beside the model"
            )
        return self._dir / location

    def _array(self, name: str) -> np.ndarray:
        """The stored initializer as numpy (memory-mapped when it lives in an external data file)."""
        from onnx import helper, numpy_helper

        t = self._inits[name]
        f = self._external_file(t)
        try:
            if f is not None:
                info = {kv.key: kv.value for kv in t.external_data}
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
                shape = tuple(int(d) for d in t.dims)
                count = int(np.prod(shape)) if shape else 1
                if dtype.kind in "fiu" and dtype.itemsize * count == int(info.get("length", dtype.itemsize * count)):
                    offset = int(info.get("offset", 0))
                    return np.memmap(f, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape)
                return numpy_helper.to_array(t, base_dir=str(self._dir))
            return numpy_helper.to_array(t)
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self._path}: cannot read initializer {name!r} ({e})") from e

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self._path}: the graph has no tensor mapped to {name!r}") from None

    def _decode(self, e: _Entry, stored: np.ndarray, sel_axis: int | None, index: list[int] | None) -> np.ndarray:
        """Stored values (already restricted to ``index`` along ``sel_axis``) to fp32 HF values."""
        if e.quant is not None and e.quant.bits:
            x = self._decode_nbits(e, e.quant, stored, index if sel_axis == 0 else None)
        elif e.quant is None:
            x = np.asarray(stored).astype(np.float32)
        else:
            q = e.quant
            x = np.asarray(stored).astype(np.float32)
            scale = np.asarray(self._array(q.scale), dtype=np.float32)
            zp = np.asarray(self._array(q.zero_point), dtype=np.float32) if q.zero_point else None
            if not q.block:  # one scale per index along the axis, however the graph shaped it: (n,), (1, n)
                scale = scale.reshape(-1)
                zp = zp.reshape(-1) if zp is not None else None
            if q.axis is None:
                s = float(scale.reshape(-1)[0])
                z = float(zp.reshape(-1)[0]) if zp is not None else 0.0
                x = (x - z) * s
            else:
                if q.block:
                    n = self._inits[e.init].dims[q.axis]
                    scale = np.repeat(scale, q.block, axis=q.axis).take(range(n), axis=q.axis)
                    if zp is not None:
                        zp = np.repeat(zp, q.block, axis=q.axis).take(range(n), axis=q.axis)
                if scale.ndim == 1:
                    shape = [1] * x.ndim
                    shape[q.axis] = -1
                    if sel_axis == q.axis and index is not None:
                        scale = scale[index]
                        zp = zp[index] if zp is not None else None
                    scale = scale.reshape(shape)
                    zp = zp.reshape(shape) if zp is not None else None
                elif sel_axis is not None and index is not None:  # blocked: same shape as the stored tensor
                    scale = np.take(scale, index, axis=sel_axis)
                    zp = np.take(zp, index, axis=sel_axis) if zp is not None else None
                x = (x - (zp if zp is not None else 0.0)) * scale
        if e.add:
            x = x + np.float32(e.add)
        return x.T if e.transpose and x.ndim == 2 else x

    def names(self) -> list[str]:
        return list(self._entries)

    def meta(self, name: str) -> TensorMeta:
        e = self._entry(name)
        t = self._inits[e.init]
        try:
            from onnx import helper

            dtype = _ST_DTYPES.get(np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).name, str(t.data_type))
        except (KeyError, TypeError, ValueError):
            dtype = str(t.data_type)
        return TensorMeta(name, dtype, e.shape, self._external_file(t) or self._path)

    def _stored(self, e: _Entry) -> np.ndarray:
        stored = self._array(e.init)
        return stored[..., e.part[0]:e.part[1]] if e.part is not None else stored

    def tensor(self, name: str) -> torch.Tensor:
        e = self._entry(name)
        x = self._decode(e, self._stored(e), None, None)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def rows(self, name: str, index: Sequence[int]) -> torch.Tensor:
        e = self._entry(name)
        if len(e.shape) != 2:
            raise CheckpointError(f"{self._path}: tensor {name!r} has shape {e.shape}, expected a matrix")
        idx = [int(i) for i in index]
        if idx and (min(idx) < 0 or max(idx) >= e.shape[0]):
            raise CheckpointError(f"{self._path}: row index out of range for {name!r} with {e.shape[0]} rows")
        stored = self._stored(e)
        axis = 1 if e.transpose else 0  # HF rows are stored columns when the matrix is stored transposed
        part = np.take(stored, idx, axis=axis)
        x = self._decode(e, part, axis, idx)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(len(idx), e.shape[1])

    def files(self) -> list[Path]:
        out = [self._path]
        for t in self._inits.values():
            f = self._external_file(t)
            if f is not None and f not in out:
                out.append(f)
        return out


def _parameter_module(name: str, leaves: tuple[str, ...] = ("weight",)) -> str | None:
    """The module of a value named like a state-dict parameter (``embeddings.token_type_embeddings.weight``):
    the dynamo exporter names initializers so, and a weight-only quantiser that dequantises in the graph names the
    dequantised value after the parameter it replaces. Anonymous names (``val_49``, ``onnx::MatMul_12``) give None."""
    module, dot, leaf = name.rpartition(".")
    if not dot or leaf not in leaves or not module or ":" in module or "/" in module:
        return None
    return module
