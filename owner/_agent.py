"""The owner agent's pipeline: open a model, map the probe tokens, compute the invariant terms layer by layer.

Each layer's tensors are read, converted to fp32, used and dropped before the next layer, so peak memory is about
one layer plus the probe rows and the terms, whatever the checkpoint's size. While a layer is computed, the
kernel is asked to read the next one ahead (``prefetch``); what does not depend on the layer (the whitened probe
rows) is computed once; the terms are kept as the fp32 arrays they were computed in, never copied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from owner._adapters import ArchInfo, Method
from owner._invariants import METHOD_IDS, InvariantSet, layer_terms, resolve_layers, whiten
from owner._model import OpenedModel, open_model
from owner._probes import ProbeSet, build_probe_set, load_vocabulary, map_probes
from owner._source import prefetch

Progress = Callable[[str, int, int], None]


def probe_set_for(model: OpenedModel, n: int = 4096) -> ProbeSet:
    """The default probe set built from ``model``'s own vocabulary."""
    return build_probe_set(load_vocabulary(model.root), n=n)


def whitened_rows(x: torch.Tensor, info: ArchInfo, method: Method) -> torch.Tensor | None:
    """``W(Xc)``, which ``layer_terms`` would otherwise recompute for every layer (``None`` for huref-2024)."""
    if method == "huref-2024":
        return None
    x = x.to(torch.float32)
    return whiten(x - x.mean(dim=1, keepdim=True) if info.norm == "layer" else x)


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
        rows = whitened_rows(x, info, method)
        terms: dict[tuple[int, str], np.ndarray] = {}
        for k, layer in enumerate(chosen):
            if progress:
                progress(f"layer {layer}", k, len(chosen))
            lw = m.adapter.layer(layer, method)
            if k + 1 < len(chosen):
                prefetch(m.source, m.adapter.layer_tensor_names(chosen[k + 1]))
            for name, t in layer_terms(x, lw, info, method, whiten_rows=rows).items():
                terms[(layer, name)] = np.asarray(t.numpy(), dtype=np.float32)  # no copy: t is fp32 already
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
