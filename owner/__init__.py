"""The owner's agent: runs next to the weights and computes only invariant terms.

Pipeline: ``open_model`` finds the config, tensor files (safetensors, PyTorch .bin, ONNX) and tokenizer and picks
the architecture adapter from ``config.json``; ``compute_invariants`` maps the probe tokens (by string) to the
model's ids, reads the probe rows and the selected layers lazily, and forms the ``n x n`` terms (a
``protocol.terms.InvariantSet``); ``write_invariants`` writes the terms to a file as they are computed;
``build_bundle`` signs them for offline use and ``submit`` answers a verifier's challenge. It must
never send or store a raw weight tensor: only terms and digests leave. Comparing terms is the verifier's
(``verifier.compare``); the owner never imports ``verifier``.

Importing ``owner`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: OpenMP threads that
spin at barriers stall LAPACK's ``eigh`` (the whitening) for seconds whenever another process holds a core
(docs/results/perf.md, section 2); sleeping threads cost about 0.3 s per ``eigh`` at d = 2048 on an idle machine
and nothing else measurable. The OpenMP runtime reads the variable when torch loads it, so this only takes effect
if ``owner`` is imported before torch; a program that imports torch first should set it itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before the imports below, which load torch

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from owner._adapters import METHODS, SUPPORTED_FAMILIES, ArchInfo, Method
from owner._agent import Progress, WrittenInvariants, compute_invariants, probe_set_for, write_invariants
from owner._client import SubmissionError, SubmitResult, submit
from owner._fingerprint import build_bundle, bundle_invariants, is_bundle_file, load_bundle
from owner._hub import resolve_model
from owner._invariants import METHOD_IDS, TERMS
from owner._invfile import is_invariants_file, load_invariants, save_invariants
from owner._model import OpenedModel, open_model
from owner._probes import (
    DEFAULT_RULE,
    build_pair_probe_set,
    build_probe_set,
    load_probe_set,
    load_vocabulary,
    map_probes,
    save_probe_set,
)
from owner.errors import (
    CheckpointError,
    InvariantsFileError,
    OwnerError,
    TokenizerError,
    UnsupportedModelError,
)


def inspect_model(
    path: Path, layers: str | Sequence[int] | None = None, lm_prefix: str | None = None
) -> dict[str, Any]:
    """What the agent would read from ``path`` and what it knows of the model, without reading weights
    (``lm_prefix``: where the language model of a multimodal checkpoint is, as ``open_model`` takes it)."""
    from owner._invariants import resolve_layers

    m = open_model(path, lm_prefix=lm_prefix)
    vocab = load_vocabulary(m.root)
    probes = build_probe_set(vocab)
    mapping = map_probes(probes, vocab)
    chosen = resolve_layers(layers, m.adapter.info.n_layers)
    to_read = m.adapter.tensor_names(chosen)
    metas = {n: m.source.meta(n) for n in m.source.names()}
    sizes = {n: _nbytes(mt.dtype, mt.shape) for n, mt in metas.items()}
    return {
        "path": str(path),
        "format": m.format,
        "architecture": m.adapter.info.as_dict(),
        "layers": list(chosen),
        "tokenizer": {"source": str(vocab.source), "style": vocab.style, "tokens": len(vocab)},
        "probe_set": {"name": probes.name, "id": probes.id, "tokens": len(probes), "coverage": mapping.coverage},
        "tensors_total": len(metas),
        "bytes_total": sum(sizes.values()),
        "bytes_to_read": sum(sizes[n] for n in to_read),
        "tensors_to_read": [
            {"name": n, "dtype": metas[n].dtype, "shape": list(metas[n].shape)} for n in to_read
        ],
    }


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8, "BOOL": 1}


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * _ITEMSIZE.get(dtype, 4)


__all__ = [
    "DEFAULT_RULE",
    "METHODS",
    "METHOD_IDS",
    "SUPPORTED_FAMILIES",
    "TERMS",
    "ArchInfo",
    "CheckpointError",
    "InvariantsFileError",
    "Method",
    "OpenedModel",
    "OwnerError",
    "Progress",
    "SubmissionError",
    "SubmitResult",
    "TokenizerError",
    "UnsupportedModelError",
    "WrittenInvariants",
    "build_bundle",
    "build_pair_probe_set",
    "build_probe_set",
    "bundle_invariants",
    "compute_invariants",
    "inspect_model",
    "is_bundle_file",
    "is_invariants_file",
    "load_bundle",
    "load_invariants",
    "load_probe_set",
    "load_vocabulary",
    "map_probes",
    "open_model",
    "probe_set_for",
    "resolve_model",
    "save_invariants",
    "save_probe_set",
    "submit",
    "write_invariants",
]
