"""Open a model for the owner agent: find its config, its tensor files and its tokenizer, pick the adapter.

Accepted inputs: a Hugging Face directory (``config.json`` with ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, ``pytorch_model.bin`` or sharded ``.bin`` with an index), a single weights file
(``.safetensors`` or ``.bin``) or an ONNX file with ``config.json`` beside it, a directory in the Optimum layout
(``model.onnx`` beside ``config.json``), or a Hugging Face repo id or cache folder found in the local cache
(``owner._hub.resolve_model``: nothing is downloaded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owner._adapters import Adapter, select_adapter
from owner._hub import resolve_model
from owner._multimodal import open_language_model
from owner._source import SafetensorsSource, TensorSource, TorchBinSource
from owner.errors import CheckpointError


@dataclass(frozen=True)
class OpenedModel:
    """A model ready for the agent: where it is, what format, its config, tensors and adapter."""

    path: Path
    root: Path  # the directory holding config.json and the tokenizer files
    format: str  # "safetensors" | "pytorch-bin" | "onnx" | "gguf" (then ``root`` is the .gguf file itself)
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
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent, "safetensors", SafetensorsSource([path])
    if path.is_file() and path.suffix == ".bin":
        return path.parent, "pytorch-bin", TorchBinSource([path])
    if path.is_file() and path.suffix != ".onnx":
        raise CheckpointError(f"{path}: not a model directory, a weights file (.safetensors, .bin) or an .onnx file")
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


def open_model(
    path: Path | str, *, revision: str | None = None, cache_dir: str | Path | None = None,
    lm_prefix: str | None = None,
) -> OpenedModel:
    """Open ``path`` lazily: only the config, file headers and the tokenizer are read here. ``path`` may also be
    a Hugging Face repo id or cache folder in the local cache (``revision``, ``cache_dir``: ``resolve_model``).
    The language model of a multimodal checkpoint is found by its config and structure (``owner._multimodal``);
    ``lm_prefix`` names its module path (e.g. ``language_model.``) where that is ambiguous."""
    path = resolve_model(path, revision=revision, cache_dir=cache_dir)
    if path.is_file() and path.suffix.lower() == ".gguf":  # config, tokenizer and tensors all in the one file
        from owner._gguf import GgufSource, metadata_errors

        gg = GgufSource(path)
        with metadata_errors(path):  # the adapters' "config.json" is the file's GGUF metadata here
            adapter = select_adapter(gg.config, gg, str(path))
        return OpenedModel(path=path, root=path, format="gguf", config=gg.config, source=gg, adapter=adapter)
    root = path.parent if path.is_file() else path
    config = read_config(root)
    root, fmt, source = _open_source(path, config)
    adapter = open_language_model(config, source, str(root / "config.json"), fmt=fmt, lm_prefix=lm_prefix)
    return OpenedModel(path=path, root=root, format=fmt, config=config, source=source, adapter=adapter)
