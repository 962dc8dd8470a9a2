"""Open a model for the owner agent: find its config, its tensor files and its tokenizer, pick the adapter.

Accepted inputs: a Hugging Face directory (``config.json`` with ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, ``pytorch_model.bin`` or sharded ``.bin`` with an index), an ONNX file with
``config.json`` beside it, or a directory in the Optimum layout (``model.onnx`` beside ``config.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owner._adapters import Adapter, select_adapter
from owner._source import SafetensorsSource, TensorSource, TorchBinSource
from owner.errors import CheckpointError


@dataclass(frozen=True)
class OpenedModel:
    """A model ready for the agent: where it is, what format, its config, tensors and adapter."""

    path: Path
    root: Path  # the directory holding config.json and the tokenizer files
    format: str  # "safetensors" | "pytorch-bin" | "onnx"
    config: dict[str, Any]
    source: TensorSource
    adapter: Adapter


def read_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: config.json is missing (needed to know the architecture)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config


def _open_source(path: Path, config: dict[str, Any]) -> tuple[Path, str, TensorSource]:
    """Find the tensor files for ``path`` and open them lazily."""
    if path.is_file() and path.suffix != ".onnx":
        raise CheckpointError(f"{path}: not a model directory or an .onnx file")
    if path.is_file() or (not _has_hf_weights(path) and any(path.glob("*.onnx"))):
        from owner import _onnx  # onnx is imported only for ONNX models

        onnx_file = _onnx.find_onnx_model(path)
        if onnx_file is None:
            raise CheckpointError(f"{path}: more than one .onnx model; name the file to use")
        return onnx_file.parent, "onnx", _onnx.OnnxSource(onnx_file, config)
    root = path
    if (root / "model.safetensors.index.json").is_file():
        return root, "safetensors", SafetensorsSource.from_index(root / "model.safetensors.index.json")
    if (root / "model.safetensors").is_file():
        return root, "safetensors", SafetensorsSource([root / "model.safetensors"])
    if (root / "pytorch_model.bin.index.json").is_file():
        return root, "pytorch-bin", TorchBinSource.from_index(root / "pytorch_model.bin.index.json")
    if (root / "pytorch_model.bin").is_file():
        return root, "pytorch-bin", TorchBinSource([root / "pytorch_model.bin"])
    singles = sorted(root.glob("*.safetensors"))
    if len(singles) == 1:
        return root, "safetensors", SafetensorsSource(singles)
    raise CheckpointError(
        f"{root}: no weights found (expected model.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin, pytorch_model.bin.index.json or an .onnx model)"
    )


def _has_hf_weights(root: Path) -> bool:
    return any((root / n).is_file() for n in (
        "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
    ))


def open_model(path: Path | str) -> OpenedModel:
    """Open ``path`` lazily: only the config, file headers and the tokenizer are read here."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    root = path.parent if path.is_file() else path
    config = read_config(root)
    root, fmt, source = _open_source(path, config)
    adapter = select_adapter(config, source, str(root / "config.json"))
    return OpenedModel(path=path, root=root, format=fmt, config=config, source=source, adapter=adapter)
