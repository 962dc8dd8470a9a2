"""The owner agent's pipeline: open a model, map the probe tokens, compute the invariant terms layer by layer.

Each layer's tensors are read in their stored dtype, used (converted to fp32 a matrix or an FFN block at a time)
and dropped before the next layer, so peak memory is about one stored layer plus the probe rows and the terms,
whatever the checkpoint's size. While a layer is computed, the kernel is asked to read the next one ahead
(``prefetch``); what does not depend on the layer (the whitened probe rows) is computed once. ``compute_invariants``
keeps the terms (as the fp32 arrays they were computed in, never copied); ``stream_invariants`` hands them out one
at a time, as they are computed, to a consumer that keeps none (``owner._fingerprint`` spools each to a file);
``write_invariants`` writes each to the invariants file as soon as it exists and keeps none, which is what a command
line that only writes the file needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from owner._adapters import ArchInfo, Method
from owner._invariants import METHOD_IDS, iter_layer_terms, resolve_layers, whiten
from owner._invfile import InvariantsWriter, invariants_metadata
from owner._model import OpenedModel, open_model
from owner._probes import build_probe_set, load_vocabulary, map_probes
from owner._source import prefetch
from protocol import TERMS, ProbeSpec, TermGroup
from protocol.terms import InvariantSet

Progress = Callable[[str, int, int], None]


def probe_set_for(model: OpenedModel, n: int = 4096) -> ProbeSpec:
    """The default probe set built from ``model``'s own vocabulary."""
    return build_probe_set(load_vocabulary(model.root), n=n)


def whitened_rows(x: torch.Tensor, info: ArchInfo, method: Method) -> torch.Tensor | None:
    """``W(Xc)``, which ``layer_terms`` would otherwise recompute for every layer (``None`` for huref-2024)."""
    if method == "huref-2024":
        return None
    x = x.to(torch.float32)
    return whiten(x - x.mean(dim=1, keepdim=True) if info.norm == "layer" else x)


@dataclass(frozen=True)
class _Plan:
    """What is fixed before any weight is read: the model, the probe tokens it has, the layers."""

    model: OpenedModel
    method: Method
    probes: ProbeSpec
    present: tuple[bool, ...]
    ids: list[int]
    layers: tuple[int, ...]

    @property
    def shape_facts(self) -> dict[str, Any]:
        return {"format": self.model.format, **self.model.adapter.info.as_dict()}


def _plan(
    model: OpenedModel | Path | str, probes: ProbeSpec | None, layers: str | Sequence[int] | None, method: Method,
) -> _Plan:
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
    return _Plan(m, method, probes, tuple(i is not None for i in mapping.ids), ids,
                 resolve_layers(layers, info.n_layers))


def _terms(plan: _Plan, progress: Progress | None) -> Iterator[tuple[int, str, torch.Tensor]]:
    """Every ``(layer, term name, term)`` of the plan, each as soon as it is computed."""
    m, method, chosen = plan.model, plan.method, plan.layers
    info = m.adapter.info
    with torch.inference_mode():
        x = m.adapter.embedding_rows(plan.ids)
        rows = whitened_rows(x, info, method)
        for k, layer in enumerate(chosen):
            if progress:
                progress(f"layer {layer}", k, len(chosen))
            lw = m.adapter.layer(layer, method, stored=True)
            if k + 1 < len(chosen):
                prefetch(m.source, m.adapter.layer_tensor_names(chosen[k + 1]))
            layer_terms = iter_layer_terms(x, lw, info, method, whiten_rows=rows)
            del lw  # the generator holds the only reference, and drops it once the FFN is done
            for name, t in layer_terms:
                yield layer, name, t
                del t  # before the next term is computed: a consumer that drops it holds one at a time
        if progress:
            progress("done", len(chosen), len(chosen))


@dataclass(frozen=True)
class InvariantStream:
    """An ``InvariantSet`` whose terms come one at a time: the group that describes them and the model's shape
    facts (both known before any weight is read), and an iterator of ``(layer, term name, array)``, each array
    ``m x m`` float32, yielded as soon as it is computed, in the group's order (layers, then ``TERMS``). A consumer
    that drops each array before asking for the next holds one term at a time."""

    group: TermGroup
    model: dict[str, Any]
    terms: Iterator[tuple[int, str, np.ndarray]]


def stream_invariants(
    model: OpenedModel | Path | str,
    probes: ProbeSpec | None = None,
    layers: str | Sequence[int] | None = None,
    method: Method = "pawprint",
    progress: Progress | None = None,
) -> InvariantStream:
    """``compute_invariants`` one term at a time. Everything that can be checked before a weight is read (the
    method, the probe tokens the model has, the layers) is checked here, so a ``TokenizerError`` for a probe set
    the model cannot use is raised by this call, not by the iterator."""
    plan = _plan(model, probes, layers, method)
    group = TermGroup(probe_set=plan.probes, present=tuple(bool(p) for p in plan.present),
                      layers=tuple(int(x) for x in plan.layers), method=method, method_id=METHOD_IDS[method],
                      terms=TERMS)

    def arrays() -> Iterator[tuple[int, str, np.ndarray]]:
        for layer, name, t in _terms(plan, progress):
            yield layer, name, np.asarray(t.numpy(), dtype=np.float32)  # no copy: t is fp32 already
            del t

    return InvariantStream(group, plan.shape_facts, arrays())


def compute_invariants(
    model: OpenedModel | Path | str,
    probes: ProbeSpec | None = None,
    layers: str | Sequence[int] | None = None,
    method: Method = "pawprint",
    progress: Progress | None = None,
) -> InvariantSet:
    """Invariant terms of ``model`` on ``probes`` (default: built from its vocabulary) for ``layers``."""
    stream = stream_invariants(model, probes, layers, method, progress)
    terms = {(layer, name): a for layer, name, a in stream.terms}
    return InvariantSet(stream.group, stream.model, terms)


@dataclass(frozen=True)
class WrittenInvariants:
    """What ``write_invariants`` wrote: an ``InvariantSet``'s description without its terms (they are in
    ``path``; ``load_invariants(path)`` reads them)."""

    path: Path
    method: str
    method_id: str
    probes: ProbeSpec
    present: tuple[bool, ...]
    layers: tuple[int, ...]
    model: dict[str, Any]

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.probes.tokens


def write_invariants(
    model: OpenedModel | Path | str,
    path: Path | str,
    probes: ProbeSpec | None = None,
    layers: str | Sequence[int] | None = None,
    method: Method = "pawprint",
    progress: Progress | None = None,
) -> WrittenInvariants:
    """``save_invariants(compute_invariants(...), path)`` without holding the terms: each is written to the file
    as soon as it is computed (same file, byte for byte). Atomic: on any error no file appears under ``path``."""
    plan = _plan(model, probes, layers, method)
    out = WrittenInvariants(Path(path), method, METHOD_IDS[method], plan.probes, plan.present, plan.layers,
                            plan.shape_facts)
    meta = invariants_metadata(out.method, out.method_id, out.probes, out.present, out.layers, out.model)
    with InvariantsWriter(out.path, meta) as f:
        for layer, name, t in _terms(plan, progress):
            f.write(layer, name, t.numpy())
            del t
    return out
