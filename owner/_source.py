"""Lazy tensor sources: read only the tensors the invariant terms need.

A ``TensorSource`` maps Hugging Face state-dict names to tensors without loading the checkpoint. Safetensors
files are read tensor by tensor with ``pread`` at the byte ranges their headers give, converted to fp32 piece by
piece (rows of the embedding are read in runs of nearby rows, never converting the whole matrix to fp32), and
``prefetch`` lets the kernel read the next layer while this one is computed; ``read_weight`` gives a weight in its
stored dtype, for callers that convert it a block at a time. PyTorch ``.bin`` files are loaded
with ``weights_only=True`` and ``mmap=True``. Nothing here sends anything anywhere: a source is a local reader.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from owner.errors import CheckpointError
from protocol import JsonError, loads_strict


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


_ST_TO_TORCH = {v: k for k, v in _TORCH_TO_ST.items()}
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_ST_MAX_HEADER = 100 * 1024 * 1024
# Reads are converted to fp32 in pieces of this many bytes, so a bf16 tensor costs its fp32 copy and one piece,
# not a whole stored copy on top.
READ_CHUNK = 16 * 1024 * 1024
# Embedding rows closer than this are read in one request (the gap is read and dropped).
ROW_GAP = 64


@dataclass(frozen=True)
class SafetensorsEntry:
    """Where one tensor's bytes lie in a safetensors file (``start``/``end`` relative to the data section)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def safetensors_layout(path: Path) -> tuple[int, list[SafetensorsEntry]]:
    """``(offset of the data section, entries)`` of a safetensors file, from its header alone, checked: a JSON
    object without duplicate keys, each entry a dtype, a shape and a byte range inside the file whose length
    matches the dtype and shape."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: too short for a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _ST_MAX_HEADER):
                raise CheckpointError(f"{path}: safetensors header length {n} is out of range")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        header = loads_strict(raw)
    except JsonError as e:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not an object")
    base = 8 + n
    entries = [_entry(path, k, v, size - base) for k, v in header.items() if k != "__metadata__"]
    return base, entries




def _entry(path: Path, name: str, info: Any, data_size: int) -> SafetensorsEntry:
    try:
        dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed safetensors entry for {name!r}") from e
    ok = (
        isinstance(dtype, str) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_size
    )
    if not ok:
        raise CheckpointError(f"{path}: malformed safetensors entry for {name!r}")
    itemsize = _ST_ITEMSIZE.get(dtype)
    if itemsize is not None and end - start != math.prod(shape) * itemsize:
        raise CheckpointError(f"{path}: tensor {name!r} has {end - start} bytes, its dtype and shape need more or less")
    return SafetensorsEntry(name, dtype, shape, start, end)


@dataclass(frozen=True)
class _Located:
    file: Path
    offset: int  # absolute, in the file
    entry: SafetensorsEntry


class SafetensorsSource:
    """One or more ``.safetensors`` files (a single file, or shards listed by an index).

    Headers are checked when the source is opened (by the ``safetensors`` library and against this module's own
    reading of the byte ranges). Tensors are then read with ``pread`` into freshly allocated fp32 tensors,
    converting from the stored dtype piece by piece: no memory map stays resident, and a bf16 tensor never
    exists whole in its stored form next to its fp32 copy.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        from safetensors import safe_open

        self._fds: dict[Path, int] = {}
        self._files = [Path(f) for f in files]
        self._where: dict[str, _Located] = {}
        for f in self._files:
            if not f.is_file():
                raise CheckpointError(f"{f}: checkpoint shard is missing")
            try:
                with safe_open(str(f), framework="pt") as h:
                    keys = set(h.keys())
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from e
            base, entries = safetensors_layout(f)
            if {ent.name for ent in entries} != keys:
                raise CheckpointError(f"{f}: safetensors header lists other tensors than the file holds")
            for ent in entries:
                if ent.name in self._where:
                    raise CheckpointError(f"{f}: tensor {ent.name!r} also appears in {self._where[ent.name].file}")
                self._where[ent.name] = _Located(f, base + ent.start, ent)

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

    def _locate(self, name: str) -> _Located:
        try:
            return self._where[name]
        except KeyError:
            raise CheckpointError(f"{self._files[0].parent}: checkpoint has no tensor {name!r}") from None

    def meta(self, name: str) -> TensorMeta:
        loc = self._locate(name)
        return TensorMeta(name, loc.entry.dtype, loc.entry.shape, loc.file)

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            try:
                fd = self._fds[file] = os.open(file, os.O_RDONLY)
            except OSError as e:
                raise CheckpointError(f"{file}: cannot open ({e.strerror or e})") from e
        return fd

    def _pread(self, file: Path, into: memoryview, offset: int) -> None:
        fd = self._fd(file)
        done = 0
        try:
            while done < len(into):
                got = os.preadv(fd, [into[done:]], offset + done)
                if got <= 0:
                    raise CheckpointError(f"{file}: file ends inside a tensor (truncated checkpoint)")
                done += got
        except OSError as e:
            raise CheckpointError(f"{file}: cannot read ({e.strerror or e})") from e

    def _float_dtype(self, name: str, loc: _Located) -> torch.dtype:
        dtype = _ST_TO_TORCH.get(loc.entry.dtype)
        if dtype is None or not dtype.is_floating_point:
            raise CheckpointError(
                f"{loc.file}: tensor {name!r} has dtype {loc.entry.dtype}, expected a floating-point weight"
            )
        return dtype

    def _read_fp32(self, loc: _Located, dtype: torch.dtype, offset: int, count: int, out: torch.Tensor) -> None:
        """Read ``count`` elements of ``dtype`` at byte ``offset`` of ``loc.file`` into fp32 ``out`` (flat)."""
        item = _ST_ITEMSIZE[loc.entry.dtype]
        if dtype == torch.float32:
            self._pread(loc.file, out.numpy().data.cast("B"), offset)
            return
        step = max(1, READ_CHUNK // item)
        buf = torch.empty(min(count, step) * item, dtype=torch.uint8)
        for i in range(0, count, step):
            k = min(step, count - i)
            piece = buf[: k * item]
            self._pread(loc.file, piece.numpy().data, offset + i * item)
            out[i : i + k].copy_(piece.view(dtype))

    def tensor(self, name: str) -> torch.Tensor:
        loc = self._locate(name)
        dtype = self._float_dtype(name, loc)
        out = torch.empty(loc.entry.shape, dtype=torch.float32)
        self._read_fp32(loc, dtype, loc.offset, out.numel(), out.view(-1))
        return out

    def stored(self, name: str) -> torch.Tensor:
        """The tensor in its stored dtype (no conversion), read the same way."""
        loc = self._locate(name)
        dtype = _ST_TO_TORCH.get(loc.entry.dtype)
        if dtype is None:
            raise CheckpointError(f"{loc.file}: tensor {name!r} has dtype {loc.entry.dtype}, which is not read")
        out = torch.empty(loc.entry.end - loc.entry.start, dtype=torch.uint8)
        self._pread(loc.file, out.numpy().data, loc.offset)
        return out.view(dtype).reshape(loc.entry.shape)

    def stored_float(self, name: str) -> torch.Tensor:
        """``stored``, for a tensor that must be a floating-point weight (else a ``CheckpointError``)."""
        self._float_dtype(name, self._locate(name))
        return self.stored(name)

    def rows(self, name: str, index: Sequence[int]) -> torch.Tensor:
        loc = self._locate(name)
        shape = loc.entry.shape
        if len(shape) != 2:
            raise CheckpointError(f"{loc.file}: tensor {name!r} has shape {shape}, expected a matrix")
        dtype = self._float_dtype(name, loc)
        idx = torch.as_tensor(list(index), dtype=torch.long)
        out = torch.empty((len(idx), shape[1]), dtype=torch.float32)
        if not len(idx):
            return out
        if int(idx.min()) < 0 or int(idx.max()) >= shape[0]:
            raise CheckpointError(f"{loc.file}: row index out of range for {name!r} with {shape[0]} rows")
        # Read runs of nearby rows (sorted), each in one request, and scatter them to their places.
        sorted_idx, order = torch.sort(idx)
        rows_sorted = sorted_idx.tolist()
        row_bytes = shape[1] * _ST_ITEMSIZE[loc.entry.dtype]
        start = 0
        while start < len(rows_sorted):
            end = start + 1
            while end < len(rows_sorted) and rows_sorted[end] - rows_sorted[end - 1] <= ROW_GAP:
                end += 1
            lo, hi = rows_sorted[start], rows_sorted[end - 1] + 1
            block = torch.empty((hi - lo, shape[1]), dtype=torch.float32)
            self._read_fp32(loc, dtype, loc.offset + lo * row_bytes, block.numel(), block.view(-1))
            out[order[start:end]] = block[sorted_idx[start:end] - lo]
            start = end
        return out

    def prefetch(self, names: Sequence[str]) -> None:
        """Ask the kernel to start reading ``names`` into the page cache (returns at once; a hint only)."""
        for name in names:
            loc = self._where.get(name)
            if loc is not None:
                with contextlib.suppress(OSError):
                    os.posix_fadvise(self._fd(loc.file), loc.offset, loc.entry.end - loc.entry.start,
                                     os.POSIX_FADV_WILLNEED)

    def files(self) -> list[Path]:
        return list(self._files)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


def read_weight(source: TensorSource, name: str) -> torch.Tensor:
    """A floating-point weight in the dtype it is stored in (bf16, fp16 or fp32), for callers that convert it to
    fp32 a block at a time (``owner._invariants``): a bf16 layer then costs its stored size, not twice it in fp32.
    Sources without a stored form (ONNX, whose initialisers may be quantised) give fp32."""
    if isinstance(source, SafetensorsSource | TorchBinSource):
        return source.stored_float(name)
    return source.tensor(name)


def prefetch(source: TensorSource, names: Sequence[str]) -> None:
    """Start reading ``names`` ahead where the source can (safetensors); a no-op for other sources."""
    if isinstance(source, SafetensorsSource):
        source.prefetch(names)


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

    def stored_float(self, name: str) -> torch.Tensor:
        """The tensor as stored (memory-mapped, no copy), checked to be a floating-point weight."""
        t, f = self._get(name)
        if not t.is_floating_point():
            raise CheckpointError(f"{f}: tensor {name!r} has dtype {t.dtype}, expected a floating-point weight")
        return t

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
