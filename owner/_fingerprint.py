"""The owner's fingerprint of a model: invariant terms, a manifest describing them, and the weight commitment.

``fingerprint`` computes the terms on each probe set (a verifier's challenge names them; offline, the probe
set built from the model's own vocabulary) and describes them in a ``Manifest``: model shape facts, probe
coverage, layers, a table of the term tensors (name, dtype, shape, SHA-256) and the weight commitment, the
RFC 6962 root over every checkpoint tensor's (name, dtype, shape, SHA-256 of its bytes). ``build_bundle``
signs it into an offline ``Bundle``; ``owner._client`` streams the same thing to a verifier.

Checkpoint files are hashed by streaming (safetensors: each tensor's byte range read in blocks straight
from the file), the files in parallel on a thread pool (``hashlib`` releases the GIL).

This module must never put a weight tensor, or any piece of one, into a manifest or bundle: weights
contribute a 32-byte digest to the commitment and nothing else; only the ``n x n`` terms leave.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from owner._adapters import Method
from owner._agent import compute_invariants
from owner._invariants import TERMS, InvariantSet
from owner._model import OpenedModel, open_model
from owner._probes import ProbeSet
from owner.errors import CheckpointError, OwnerError, TokenizerError
from protocol import (
    DTYPE_ITEMSIZE,
    Bundle,
    Manifest,
    PrivateKey,
    ProbeSpec,
    ProtocolError,
    Tensor,
    TensorDigest,
    TermGroup,
    WeightCommitment,
    sorted_entries,
    tensor_name,
    weight_commitment,
)

AGENT_VERSION = "pawprint-agent/0.1.0"
HASH_BLOCK = 1 << 20
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
_BUNDLE_HEAD = b"\x85\xa6format"

Progress = Callable[[str, int, int], None]


class FingerprintError(OwnerError):
    """A fingerprint cannot be built: no usable probe set, an unhashable checkpoint, a malformed bundle."""


@dataclass(frozen=True)
class Fingerprint:
    """An unsigned manifest and its term tensors, keyed by the names in the manifest's table."""

    manifest: Manifest
    terms: Mapping[str, Tensor]


# ------------------------------------------------------------------------------------ weight commitment
def hash_checkpoint(model: OpenedModel, workers: int | None = None) -> list[TensorDigest]:
    """(name, dtype, shape, SHA-256 of the bytes) of every tensor of the checkpoint, in commitment order."""
    files = list(dict.fromkeys(model.source.files()))
    if model.format == "safetensors":
        hash_file: Callable[[Path], list[TensorDigest]] = _hash_safetensors
    elif model.format == "pytorch-bin":
        hash_file = _hash_torch_bin
    elif model.format == "onnx":
        hash_file = _hash_onnx
        files = files[:1]  # the graph; its external data files are read through it
    else:
        raise FingerprintError(f"{model.path}: no weight commitment for format {model.format!r}")
    n = max(1, min(len(files), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="pawprint-hash") as pool:
        per_file = list(pool.map(hash_file, files))
    try:
        return sorted_entries(d for digests in per_file for d in digests)
    except ProtocolError as e:
        raise FingerprintError(f"{model.path}: {e}") from e


def commit_checkpoint(model: OpenedModel, workers: int | None = None) -> WeightCommitment:
    """The weight commitment over every tensor of ``model``'s checkpoint."""
    digests = hash_checkpoint(model, workers)
    total = sum(math.prod(d.shape) * DTYPE_ITEMSIZE.get(d.dtype, 1) for d in digests)
    return WeightCommitment(root=weight_commitment(digests), tensors=len(digests), total_bytes=total)


def _hash_safetensors(path: Path) -> list[TensorDigest]:
    """Hash each tensor's byte range of a safetensors file, reading it in blocks (never whole)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: too short for a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _SAFETENSORS_MAX_HEADER):
                raise CheckpointError(f"{path}: safetensors header length {n} is out of range")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise CheckpointError(f"{path}: safetensors header is not JSON ({e})") from e
            if not isinstance(header, dict):
                raise CheckpointError(f"{path}: safetensors header is not an object")
            base = 8 + n
            entries = []
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                entries.append(_safetensors_entry(path, name, info, size - base))
            buf = bytearray(HASH_BLOCK)
            view = memoryview(buf)
            out = []
            for start, end, name, dtype, shape in sorted(entries, key=lambda e: e[0]):
                h = hashlib.sha256()
                f.seek(base + start)
                left = end - start
                while left:
                    got = f.readinto(view[: min(left, HASH_BLOCK)])
                    if not got:
                        raise CheckpointError(f"{path}: file ends inside tensor {name!r}")
                    h.update(view[:got])
                    left -= got
                out.append(TensorDigest(name, dtype, shape, h.digest()))
            return out
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    except ProtocolError as e:
        raise CheckpointError(f"{path}: {e}") from e


def _safetensors_entry(path: Path, name: str, info: Any, data_size: int) -> tuple[int, int, str, str, tuple[int, ...]]:
    try:
        dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed safetensors entry for {name!r}") from e
    ok = (
        isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
        and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_size
    )
    if not ok:
        raise CheckpointError(f"{path}: malformed safetensors entry for {name!r}")
    itemsize = DTYPE_ITEMSIZE.get(dtype)
    if itemsize is not None and end - start != math.prod(shape) * itemsize:
        raise CheckpointError(f"{path}: tensor {name!r} has {end - start} bytes, its dtype and shape need more or less")
    return start, end, name, dtype, shape


def _hash_torch_bin(path: Path) -> list[TensorDigest]:
    """Hash each tensor of a PyTorch state dict, memory-mapped (``weights_only``: no code is run)."""
    import torch

    from owner._source import torch_dtype_name

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe pickles
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    out = []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        h = hashlib.sha256()
        for i in range(0, raw.size, HASH_BLOCK):
            h.update(raw[i : i + HASH_BLOCK].data)
        out.append(TensorDigest(str(name), torch_dtype_name(t.dtype), tuple(t.shape), h.digest()))
    return out


_NUMPY_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8", "int16": "I16",
    "uint16": "U16", "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "bool": "BOOL",
}


def _hash_onnx(path: Path) -> list[TensorDigest]:
    """Hash every initializer of an ONNX graph (loaded one at a time through ``onnx.numpy_helper``)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise CheckpointError(f"{path}: not a readable ONNX model ({e})") from e
    out = []
    for init in model.graph.initializer:
        try:
            arr = np.ascontiguousarray(numpy_helper.to_array(init, base_dir=str(path.parent)))
        except Exception as e:  # missing external data files and unsupported types
            raise CheckpointError(f"{path}: cannot read initializer {init.name!r} ({e})") from e
        dtype = _NUMPY_TO_ST.get(arr.dtype.name, arr.dtype.name.upper())
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)
        digest = hashlib.sha256(data.data).digest()
        out.append(TensorDigest(init.name, dtype, tuple(int(d) for d in arr.shape), digest))
    return out


# ------------------------------------------------------------------------------------------ manifests
def probe_set_from_spec(spec: ProbeSpec) -> ProbeSet:
    """The owner agent's probe set for a probe set named in a challenge (same tokens, same id)."""
    try:
        probes = ProbeSet(spec.name, spec.version, spec.rule, spec.tokens)
    except ValueError as e:
        raise FingerprintError(f"probe set {spec.name!r} is malformed: {e}") from e
    if probes.id != spec.id:
        raise FingerprintError(f"probe set {spec.name!r} does not have the id it was sent with")
    return probes


def spec_from_probe_set(probes: ProbeSet) -> ProbeSpec:
    return ProbeSpec(probes.name, probes.version, probes.rule, tuple(probes.tokens))


def group_from_invariants(inv: InvariantSet) -> TermGroup:
    return TermGroup(
        probe_set=spec_from_probe_set(inv.probes), present=tuple(bool(p) for p in inv.present),
        layers=tuple(int(x) for x in inv.layers), method=inv.method, method_id=inv.method_id, terms=TERMS,
    )


def term_tensor(array: np.ndarray) -> Tensor:
    """A term as it travels: little-endian F32 bytes."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return Tensor("F32", tuple(int(d) for d in a.shape), a.tobytes())


def fingerprint(
    model: OpenedModel | Path | str,
    owner_key_id: str,
    *,
    now: int,
    probe_sets: Sequence[ProbeSpec] | None = None,
    layers: str | Sequence[int] | None = None,
    method: Method = "pawprint",
    nonce: bytes | None = None,
    keep_invariants: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Fingerprint:
    """Terms and unsigned manifest of ``model``.

    Without ``probe_sets`` the probe set is built from the model's own vocabulary. With several, a probe set
    of which the model has too few tokens is skipped (nothing could be compared on it); none usable is an
    error. ``now`` (Unix seconds) is passed in so that the result is reproducible.
    """
    m = model if isinstance(model, OpenedModel) else open_model(Path(model))
    wanted: list[ProbeSet | None] = [probe_set_from_spec(p) for p in probe_sets] if probe_sets else [None]
    invariants: list[InvariantSet] = []
    skipped: list[str] = []
    for probes in wanted:
        try:
            invariants.append(compute_invariants(m, probes=probes, layers=layers, method=method, progress=progress))
        except TokenizerError as e:
            if len(wanted) == 1:
                raise
            skipped.append(f"{probes.name if probes else 'default'}: {e}")
    if not invariants:
        reasons = "; ".join(skipped)
        raise FingerprintError(f"{m.root}: no probe set of the challenge is usable with this model ({reasons})")
    groups = tuple(group_from_invariants(inv) for inv in invariants)
    terms: dict[str, Tensor] = {}
    for i, inv in enumerate(invariants):
        for layer in inv.layers:
            for name in TERMS:
                terms[tensor_name(i, layer, name)] = term_tensor(inv.terms[(layer, name)])
    table = tuple(
        TensorDigest(name, t.dtype, t.shape, hashlib.sha256(t.data).digest())
        for name, t in terms.items()
    )
    commitment = commit_checkpoint(m, workers)
    model_facts: dict[str, str | int | bool] = {
        k: v for k, v in invariants[0].model.items() if isinstance(v, str | int)
    }
    try:
        manifest = Manifest(
            owner_key_id=owner_key_id, nonce=nonce, created_at=int(now), agent=AGENT_VERSION, model=model_facts,
            groups=groups, tensors=table, weight_commitment=commitment, keep_invariants=keep_invariants,
        )
        manifest.check_terms()
    except ProtocolError as e:
        raise FingerprintError(f"{m.root}: cannot describe the fingerprint ({e})") from e
    return Fingerprint(manifest, terms)


def build_bundle(
    model: OpenedModel | Path | str,
    key: PrivateKey,
    *,
    now: int,
    layers: str | Sequence[int] | None = None,
    probe_sets: Sequence[ProbeSpec] | None = None,
    method: Method = "pawprint",
    workers: int | None = None,
    progress: Progress | None = None,
) -> Bundle:
    """The signed offline bundle of ``model`` (kind ``bundle``: it answers no challenge)."""
    fp = fingerprint(
        model, key.key_id, now=now, probe_sets=probe_sets, layers=layers, method=method, workers=workers,
        progress=progress,
    )
    return Bundle.create(fp.manifest, fp.terms, key)


# ------------------------------------------------------------------------------- back to invariant sets
def invariants_from_group(manifest: Manifest, index: int, terms: Mapping[str, Tensor]) -> InvariantSet:
    """The ``InvariantSet`` of one group of a checked manifest (for ``owner.compare``).

    The caller has already checked the tensors against the manifest (names, dtypes, shapes, digests).
    """
    group = manifest.groups[index]
    try:
        probes = ProbeSet(group.probe_set.name, group.probe_set.version, group.probe_set.rule, group.probe_set.tokens)
    except ValueError as e:
        raise FingerprintError(f"group {index}: malformed probe set ({e})") from e
    arrays: dict[tuple[int, str], np.ndarray] = {}
    m = group.rows
    for layer in group.layers:
        for name in group.terms:
            t = terms[tensor_name(index, layer, name)]
            if t.dtype != "F32" or t.shape != (m, m):
                raise FingerprintError(f"group {index}: term {name} of layer {layer} is not F32 {m} x {m}")
            arrays[(layer, name)] = np.frombuffer(t.data, dtype="<f4").reshape(m, m)
    return InvariantSet(
        method=group.method, method_id=group.method_id, probes=probes, present=group.present, layers=group.layers,
        model=dict(manifest.model), terms=arrays,
    )


def bundle_invariants(bundle: Bundle) -> list[InvariantSet]:
    """Check a bundle's signature and terms, and return one ``InvariantSet`` per group (trust is not checked)."""
    try:
        manifest = bundle.open()
    except ProtocolError as e:
        raise FingerprintError(f"bundle does not verify: {e}") from e
    return [invariants_from_group(manifest, i, bundle.terms) for i in range(len(manifest.groups))]


def load_bundle(path: Path | str) -> Bundle:
    """Read a bundle file (``Bundle.from_bytes``); errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FingerprintError(f"{path}: cannot read bundle ({e.strerror or e})") from e
    try:
        return Bundle.from_bytes(data)
    except ProtocolError as e:
        raise FingerprintError(f"{path}: not a valid bundle file ({e})") from e


def is_bundle_file(path: Path | str) -> bool:
    """Whether ``path`` starts like a bundle file (a five-entry msgpack map whose first key is ``format``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head[:8] == _BUNDLE_HEAD
