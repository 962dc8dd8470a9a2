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
