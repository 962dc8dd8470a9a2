"""Invariants files: the terms of one model as a safetensors file with their metadata in its header.

Only the ``n x n`` invariant terms are stored (never a weight tensor). The file is written as a stream: the
header first (every term's shape is known before the first is computed), then each term at its offset as soon as
it exists (``InvariantsWriter``), so a writer holds one term at a time, never the whole file; the bytes are those
``safetensors`` itself would write for the same tensors and metadata. Written atomically (temp file in the same
directory, fsync, rename) so an interrupted write never leaves a half file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from owner.errors import InvariantsFileError
from protocol import TERMS, JsonError, ProbeSpec, ProtocolError, loads_strict
from protocol.terms import InvariantSet

FORMAT = "pawprint-invariants/1"


def _key(layer: int, term: str) -> str:
    return f"layer{layer}.{term}"


def invariants_metadata(
    method: str, method_id: str, probes: ProbeSpec, present: Sequence[bool], layers: Sequence[int],
    model: dict[str, Any],
) -> dict[str, Any]:
    """What an invariants file's header records besides the terms."""
    return {
        "format": FORMAT,
        "method": method,
        "method_id": method_id,
        "probe_set": {"id": probes.id, "name": probes.name, "version": probes.version, "rule": probes.rule},
        "tokens": list(probes.tokens),
        "present": [bool(p) for p in present],
        "layers": list(layers),
        "model": model,
    }


class InvariantsWriter:
    """An invariants file written term by term: ``write(layer, name, array)`` for every term of every layer in
    ``meta``, in any order, then ``close()`` (or use it as a context manager, which removes the temporary file if
    the block raises). The header is written first, as ``safetensors`` lays it out: compact JSON, the metadata
    first, the tensors sorted by name with consecutive byte ranges, padded with spaces to a multiple of 8."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        n = sum(bool(p) for p in meta["present"])
        self._shape = (n, n)
        self._size = n * n * 4
        keys = sorted(_key(int(layer), name) for layer in meta["layers"] for name in TERMS)
        header: dict[str, Any] = {"__metadata__": {"pawprint": json.dumps(meta, sort_keys=True, ensure_ascii=False)}}
        self._offsets: dict[str, int] = {}
        for i, key in enumerate(keys):
            header[key] = {"dtype": "F32", "shape": [n, n], "data_offsets": [i * self._size, (i + 1) * self._size]}
            self._offsets[key] = i * self._size
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self._base = 8 + len(raw)
        self._written: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._f: BinaryIO | None = os.fdopen(fd, "wb")
        try:
            self._f.write(len(raw).to_bytes(8, "little") + raw)
            self._f.truncate(self._base + len(keys) * self._size)
        except BaseException:
            self.abort()
            raise

    def write(self, layer: int, name: str, term: np.ndarray) -> None:
        """Write one term (an ``n x n`` float32 array) at its place in the file."""
        key = _key(layer, name)
        if self._f is None:
            raise ValueError(f"{self.path}: the writer is closed")
        if key not in self._offsets:
            raise ValueError(f"{self.path}: {key} is not a term of this file")
        a = np.ascontiguousarray(term, dtype="<f4")
        if a.shape != self._shape:
            raise ValueError(f"{self.path}: {key} has shape {a.shape}, expected {self._shape}")
        self._f.seek(self._base + self._offsets[key])
        self._f.write(a.data.cast("B"))
        self._written.add(key)

    def close(self) -> None:
        """Check every term was written, make the file durable and give it its name."""
        if self._f is None:
            return
        missing = sorted(set(self._offsets) - self._written)
        if missing:
            self.abort()
            raise ValueError(f"{self.path}: {len(missing)} terms were not written (first: {missing[0]})")
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial file (the final name is never touched)."""
        if self._f is not None:
            self._f.close()
            self._f = None
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> InvariantsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_invariants(inv: InvariantSet, path: Path) -> None:
    meta = invariants_metadata(inv.method, inv.method_id, inv.probes, inv.present, inv.layers, inv.model)
    with InvariantsWriter(Path(path), meta) as out:
        for (layer, name), a in inv.terms.items():
            out.write(layer, name, a)


def is_invariants_file(path: Path) -> bool:
    try:
        return _read_meta(Path(path)) is not None
    except InvariantsFileError:
        return False


def _read_meta(path: Path) -> dict[str, Any] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("pawprint")
    except Exception as e:  # safetensors raises its own types for non-safetensors input
        raise InvariantsFileError(f"{path}: not an invariants file ({e})") from e
    if raw is None:
        return None
    try:
        meta = loads_strict(raw)
    except JsonError as e:
        raise InvariantsFileError(f"{path}: malformed invariants metadata ({e})") from e
    if not isinstance(meta, dict):
        raise InvariantsFileError(f"{path}: malformed invariants metadata (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise InvariantsFileError(f"{path}: unknown invariants format {meta.get('format')!r:.80}")
    return meta


def load_invariants(path: Path) -> InvariantSet:
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise InvariantsFileError(f"{path}: no such file")
    meta = _read_meta(path)
    if meta is None:
        raise InvariantsFileError(f"{path}: a safetensors file without pawprint invariants metadata")
    try:
        arrays = load_file(str(path))
        ps = meta["probe_set"]
        probes = ProbeSpec(str(ps["name"]), int(ps["version"]), str(ps["rule"]), tuple(str(t) for t in meta["tokens"]))
        if probes.id != ps["id"]:
            raise InvariantsFileError(f"{path}: probe tokens do not match the recorded probe set id")
        if not isinstance(meta["present"], list) or not all(isinstance(p, bool) for p in meta["present"]):
            raise InvariantsFileError(f"{path}: the presence mask must be a list of true/false")
        present = tuple(meta["present"])
        raw_layers = meta["layers"]
        if (not isinstance(raw_layers, list) or not raw_layers
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in raw_layers)
                or raw_layers != sorted(set(raw_layers))):
            raise InvariantsFileError(f"{path}: layers must be distinct non-negative integers in increasing order")
        layers = tuple(raw_layers)
        if not isinstance(meta["model"], dict):
            raise InvariantsFileError(f"{path}: the model description must be a JSON object")
        if len(present) != len(probes.tokens):
            raise InvariantsFileError(f"{path}: presence mask and probe tokens differ in length")
        m = sum(present)
        terms: dict[tuple[int, str], np.ndarray] = {}
        for layer in layers:
            for name in TERMS:
                a = arrays[_key(layer, name)]
                if a.dtype != np.float32:
                    raise InvariantsFileError(f"{path}: term {_key(layer, name)} is {a.dtype}, expected float32")
                if a.shape != (m, m) or not np.isfinite(a).all():
                    raise InvariantsFileError(
                        f"{path}: term {_key(layer, name)} has shape {a.shape} (expected {(m, m)}) or non-finite"
                    )
                terms[(layer, name)] = a
        return InvariantSet.create(
            method=str(meta["method"]), method_id=str(meta["method_id"]), probes=probes, present=present,
            layers=layers,
            model=dict(meta["model"]), terms=terms,
        )
    except (KeyError, TypeError, ValueError, ProtocolError) as e:
        raise InvariantsFileError(f"{path}: malformed invariants file ({e!r})") from e
