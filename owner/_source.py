"""Lazy, memory-mapped tensor sources: read only the tensors the invariant terms need.

A ``TensorSource`` maps Hugging Face state-dict names to tensors without loading the checkpoint: safetensors
files are memory-mapped and read tensor by tensor (rows of the embedding are gathered from a slice, never
converting the whole matrix to fp32); PyTorch ``.bin`` files are loaded with ``weights_only=True`` and
``mmap=True``. Nothing here sends anything anywhere: a source is a local reader.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from owner.errors import CheckpointError


@dataclass(frozen=True)
class TensorMeta:
    """What is known about a stored tensor before reading it."""

    name: str
    dtype: str  # safetensors spelling: F32, F16, BF16, I8, ...
    shape: tuple[int, ...]
    file: Path


class TensorSource(Protocol):
    """Read access to a checkpoint's tensors by (Hugging Face) name."""

    def names(self) -> list[str]: ...

    def meta(self, name: str) -> TensorMeta: ...

    def tensor(self, name: str) -> torch.Tensor:
        """The whole tensor, converted to fp32."""
        ...

    def rows(self, name: str, index: Sequence[int]) -> torch.Tensor:
        """Rows ``index`` of a 2-D tensor, converted to fp32 (only those rows are converted)."""
        ...

    def files(self) -> list[Path]:
        """Every file holding tensors of this checkpoint (for the weight commitment)."""
        ...


_TORCH_TO_ST = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
    torch.bool: "BOOL",
}


def torch_dtype_name(dtype: torch.dtype) -> str:
    return _TORCH_TO_ST.get(dtype, str(dtype).removeprefix("torch."))


def _check_float(name: str, t: torch.Tensor, file: Path) -> torch.Tensor:
    if not t.is_floating_point():
        raise CheckpointError(f"{file}: tensor {name!r} has dtype {t.dtype}, expected a floating-point weight")
    return t.to(torch.float32)


class SafetensorsSource:
    """One or more ``.safetensors`` files (a single file, or shards listed by an index)."""

    def __init__(self, files: Sequence[Path]) -> None:
        from safetensors import safe_open

        self._files = [Path(f) for f in files]
        self._handles: dict[Path, Any] = {}
        self._where: dict[str, Path] = {}
        for f in self._files:
            if not f.is_file():
                raise CheckpointError(f"{f}: checkpoint shard is missing")
            try:
                h = safe_open(str(f), framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from e
            self._handles[f] = h
            for k in h.keys():  # noqa: SIM118 - safe_open objects are not mappings
                if k in self._where:
                    raise CheckpointError(f"{f}: tensor {k!r} also appears in {self._where[k]}")
                self._where[k] = f

    @classmethod
    def from_index(cls, index_file: Path) -> SafetensorsSource:
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            weight_map: dict[str, str] = index["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_file}: not a valid safetensors index ({e})") from e
        shards = sorted(set(weight_map.values()))
        src = cls([index_file.parent / s for s in shards])
        missing = [k for k in weight_map if k not in src._where]
        if missing:
            raise CheckpointError(
                f"{index_file}: {len(missing)} tensors listed in the index are absent from the shards "
                f"(first: {missing[0]!r})"
            )
        return src

    def names(self) -> list[str]:
        return sorted(self._where)

    def _handle(self, name: str) -> tuple[Any, Path]:
        try:
            f = self._where[name]
        except KeyError:
            raise CheckpointError(f"{self._files[0].parent}: checkpoint has no tensor {name!r}") from None
        return self._handles[f], f

    def meta(self, name: str) -> TensorMeta:
        h, f = self._handle(name)
        sl = h.get_slice(name)
        return TensorMeta(name, str(sl.get_dtype()), tuple(int(x) for x in sl.get_shape()), f)

    def tensor(self, name: str) -> torch.Tensor:
        h, f = self._handle(name)
        try:
            t = h.get_tensor(name)
        except Exception as e:
            raise CheckpointError(f"{f}: cannot read tensor {name!r} ({e})") from e
        return _check_float(name, t, f)

    def rows(self, name: str, index: Sequence[int]) -> torch.Tensor:
        h, f = self._handle(name)
        sl = h.get_slice(name)
        shape = sl.get_shape()
        if len(shape) != 2:
            raise CheckpointError(f"{f}: tensor {name!r} has shape {tuple(shape)}, expected a matrix")
        idx = list(index)
        if idx and (min(idx) < 0 or max(idx) >= shape[0]):
            raise CheckpointError(f"{f}: row index out of range for {name!r} with {shape[0]} rows")
        out = torch.empty((len(idx), shape[1]), dtype=torch.float32)
        # Gather contiguous runs so that only the needed rows are touched in the memory map.
        order = sorted(range(len(idx)), key=lambda i: idx[i])
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and idx[order[end]] == idx[order[end - 1]] + 1:
                end += 1
            lo, hi = idx[order[start]], idx[order[end - 1]] + 1
            block = _check_float(name, sl[lo:hi], f)
            for k in range(start, end):
                out[order[k]] = block[idx[order[k]] - lo]
            start = end
        return out

    def files(self) -> list[Path]:
        return list(self._files)


class TorchBinSource:
    """``pytorch_model.bin`` (or shards with an index), loaded with ``weights_only=True`` and memory-mapped."""

    def __init__(self, files: Sequence[Path]) -> None:
        self._files = [Path(f) for f in files]
        self._tensors: dict[str, torch.Tensor] = {}
        self._where: dict[str, Path] = {}
        for f in self._files:
            if not f.is_file():
                raise CheckpointError(f"{f}: checkpoint shard is missing")
            try:
                sd = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # torch raises many types for corrupt or unsafe pickles
                raise CheckpointError(f"{f}: not a readable PyTorch weights file ({e})") from e
            if not isinstance(sd, dict):
                raise CheckpointError(f"{f}: expected a state dict, found {type(sd).__name__}")
            for k, v in sd.items():
                if not isinstance(v, torch.Tensor):
                    continue
                if k in self._where:
                    raise CheckpointError(f"{f}: tensor {k!r} also appears in {self._where[k]}")
                self._tensors[k] = v
                self._where[k] = f

    @classmethod
    def from_index(cls, index_file: Path) -> TorchBinSource:
        try:
            weight_map: dict[str, str] = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_file}: not a valid PyTorch index ({e})") from e
        return cls([index_file.parent / s for s in sorted(set(weight_map.values()))])

    def names(self) -> list[str]:
        return sorted(self._tensors)

    def _get(self, name: str) -> tuple[torch.Tensor, Path]:
        try:
            return self._tensors[name], self._where[name]
        except KeyError:
            raise CheckpointError(f"{self._files[0].parent}: checkpoint has no tensor {name!r}") from None

    def meta(self, name: str) -> TensorMeta:
        t, f = self._get(name)
        return TensorMeta(name, torch_dtype_name(t.dtype), tuple(t.shape), f)

    def tensor(self, name: str) -> torch.Tensor:
        t, f = self._get(name)
        return _check_float(name, t, f)

    def rows(self, name: str, index: Sequence[int]) -> torch.Tensor:
        t, f = self._get(name)
        if t.dim() != 2:
            raise CheckpointError(f"{f}: tensor {name!r} has shape {tuple(t.shape)}, expected a matrix")
        idx = torch.as_tensor(list(index), dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= t.shape[0]):
            raise CheckpointError(f"{f}: row index out of range for {name!r} with {t.shape[0]} rows")
        return _check_float(name, t.index_select(0, idx), f)

    def files(self) -> list[Path]:
        return list(self._files)
