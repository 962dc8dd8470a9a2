"""The owner agent's pipeline: open a model, map the probe tokens, compute the invariant terms layer by layer.

Each layer's tensors are read (memory-mapped), converted to fp32, used and dropped before the next layer, so
peak memory is about one layer plus the probe rows, whatever the checkpoint's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from owner._adapters import Method
from owner._invariants import METHOD_IDS, InvariantSet, layer_terms, resolve_layers
from owner._model import OpenedModel, open_model
from owner._probes import ProbeSet, build_probe_set, load_vocabulary, map_probes

Progress = Callable[[str, int, int], None]


def probe_set_for(model: OpenedModel, n: int = 4096) -> ProbeSet:
    """The default probe set built from ``model``'s own vocabulary."""
    return build_probe_set(load_vocabulary(model.root), n=n)


def compute_invariants(
    model: OpenedModel | Path | str,
    probes: ProbeSet | None = None,
    layers: str | Sequence[int] | None = None,
    method: Method = "pawprint",
    progress: Progress | None = None,
) -> InvariantSet:
    """Invariant terms of ``model`` on ``probes`` (default: built from its vocabulary) for ``layers``."""
    if method not in METHOD_IDS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHOD_IDS)}")
    m = model if isinstance(model, OpenedModel) else open_model(model)
    vocab = load_vocabulary(m.root)
    probes = probes or build_probe_set(vocab)
    mapping = map_probes(probes, vocab)
    ids = [i for i in mapping.ids if i is not None]
    info = m.adapter.info
    if max(ids) >= info.vocab_size or max(ids) >= m.source.meta(m.adapter.embedding_name()).shape[0]:
        from owner.errors import TokenizerError

        raise TokenizerError(
            f"{m.root}: the tokenizer maps probe tokens to ids beyond the embedding's "
            f"{m.source.meta(m.adapter.embedding_name()).shape[0]} rows (tokenizer and weights do not match)"
        )
    chosen = resolve_layers(layers, info.n_layers)
    with torch.inference_mode():
        x = m.adapter.embedding_rows(ids)
        terms: dict[tuple[int, str], np.ndarray] = {}
        for k, layer in enumerate(chosen):
            if progress:
                progress(f"layer {layer}", k, len(chosen))
            lw = m.adapter.layer(layer, method)
            for name, t in layer_terms(x, lw, info, method).items():
                terms[(layer, name)] = t.numpy().astype(np.float32)
            del lw
        if progress:
            progress("done", len(chosen), len(chosen))
    return InvariantSet(
        method=method,
        method_id=METHOD_IDS[method],
        probes=probes,
        present=tuple(i is not None for i in mapping.ids),
        layers=chosen,
        model={"format": m.format, **info.as_dict()},
        terms=terms,
    )
