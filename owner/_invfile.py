"""Invariants files: the terms of one model as a safetensors file with their metadata in its header.

Only the ``n x n`` invariant terms are stored (never a weight tensor). Written atomically (temp file in the
same directory, fsync, rename) so an interrupted write never leaves a half file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from owner._invariants import TERMS, InvariantSet
from owner._probes import ProbeSet
from owner.errors import InvariantsFileError

FORMAT = "pawprint-invariants/1"


def _key(layer: int, term: str) -> str:
    return f"layer{layer}.{term}"


def save_invariants(inv: InvariantSet, path: Path) -> None:
    from safetensors.numpy import save

    meta = {
        "format": FORMAT,
        "method": inv.method,
        "method_id": inv.method_id,
        "probe_set": {
            "id": inv.probes.id, "name": inv.probes.name, "version": inv.probes.version, "rule": inv.probes.rule,
        },
        "tokens": list(inv.tokens),
        "present": [bool(p) for p in inv.present],
        "layers": list(inv.layers),
        "model": inv.model,
    }
    tensors = {_key(layer, name): np.ascontiguousarray(a) for (layer, name), a in sorted(inv.terms.items())}
    data = save(tensors, metadata={"pawprint": json.dumps(meta, sort_keys=True, ensure_ascii=False)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        meta = json.loads(raw)
    except ValueError as e:
        raise InvariantsFileError(f"{path}: malformed invariants metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvariantsFileError(f"{path}: unknown invariants format {meta.get('format')!r}")
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
        probes = ProbeSet(str(ps["name"]), int(ps["version"]), str(ps["rule"]), tuple(str(t) for t in meta["tokens"]))
        if probes.id != ps["id"]:
            raise InvariantsFileError(f"{path}: probe tokens do not match the recorded probe set id")
        present = tuple(bool(p) for p in meta["present"])
        layers = tuple(int(x) for x in meta["layers"])
        if len(present) != len(probes.tokens):
            raise InvariantsFileError(f"{path}: presence mask and probe tokens differ in length")
        m = sum(present)
        terms: dict[tuple[int, str], np.ndarray] = {}
        for layer in layers:
            for name in TERMS:
                a = arrays[_key(layer, name)]
                if a.shape != (m, m) or not np.isfinite(a).all():
                    raise InvariantsFileError(
                        f"{path}: term {_key(layer, name)} has shape {a.shape} (expected {(m, m)}) or non-finite"
                    )
                terms[(layer, name)] = a
        return InvariantSet(
            method=str(meta["method"]), method_id=str(meta["method_id"]), probes=probes, present=present,
            layers=layers,
            model=dict(meta["model"]), terms=terms,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvariantsFileError(f"{path}: malformed invariants file ({e!r})") from e
