"""A term group's tensors as numpy arrays: the value the owner's agent computes and the verifier compares.

``InvariantSet`` is a ``TermGroup`` (the protocol's description of terms computed on one probe set: which
probe tokens the model has, the layers, the method) together with the model's shape facts and the ``m x m``
arrays themselves. The owner's agent builds one from the weights (``owner.compute_invariants``); a manifest's
group becomes one on the other side (``terms_from_group``, zero-copy views of the checked tensor bytes).
``sketch_invariants`` turns a full-term set into its public ``k x k`` sketches (``protocol._sketch``): what the
owner sends when the challenge asks for sketches, and what the verifier makes of a base to compare with them.

This is the only module of ``protocol`` that needs numpy, and ``import protocol`` does not load it: import
``protocol.terms`` where arrays are wanted. No torch, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol._canonical import Tensor
from protocol._messages import TERMS, Manifest, MessageError, ProbeSpec, TermGroup
from protocol._sketch import sketch_term

__all__ = ["TERMS", "InvariantSet", "group_terms", "sketch_invariants", "term_tensor", "terms_from_group"]


@dataclass(frozen=True)
class InvariantSet:
    """A model's invariant terms on one probe set: the group that describes them, the model's shape facts,
    and the term arrays by ``(layer, term name)`` (each ``m x m`` float32, ``m`` the probe tokens present)."""

    group: TermGroup
    model: dict[str, Any] = field(compare=False)
    terms: dict[tuple[int, str], np.ndarray] = field(compare=False, repr=False)

    @classmethod
    def create(
        cls, method: str, method_id: str, probes: ProbeSpec, present: tuple[bool, ...], layers: tuple[int, ...],
        model: Mapping[str, Any], terms: dict[tuple[int, str], np.ndarray],
    ) -> InvariantSet:
        """An invariant set of the three ``TERMS`` per layer from its parts."""
        group = TermGroup(
            probe_set=probes, present=tuple(bool(p) for p in present), layers=tuple(int(x) for x in layers),
            method=method, method_id=method_id, terms=TERMS,
        )
        return cls(group, dict(model), terms)

    @property
    def method(self) -> str:
        return self.group.method

    @property
    def method_id(self) -> str:
        return self.group.method_id

    @property
    def probes(self) -> ProbeSpec:
        return self.group.probe_set

    @property
    def present(self) -> tuple[bool, ...]:
        return self.group.present

    @property
    def layers(self) -> tuple[int, ...]:
        return self.group.layers

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.group.probe_set.tokens

    @property
    def present_tokens(self) -> list[str]:
        return [t for t, p in zip(self.tokens, self.present, strict=True) if p]

    def term(self, layer: int, name: str) -> np.ndarray:
        return self.terms[(layer, name)]


def term_tensor(array: np.ndarray) -> Tensor:
    """A term as it travels: little-endian F32 bytes."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return Tensor("F32", tuple(int(d) for d in a.shape), a.tobytes())


def terms_from_group(manifest: Manifest, index: int, terms: Mapping[str, Tensor]) -> InvariantSet:
    """The ``InvariantSet`` of group ``index`` of a manifest whose tensors the caller has already checked
    (``protocol.check_tensors``: names, dtypes, shapes, digests). The arrays are read-only views of the bytes.
    """
    group = manifest.groups[index]
    arrays: dict[tuple[int, str], np.ndarray] = {}
    m = group.side
    for (layer, name), tname in zip(group.term_keys(), group.tensor_names(index), strict=True):
        t = terms[tname]
        if t.dtype != "F32" or t.shape != (m, m):
            raise MessageError(f"group {index}: term {name} of layer {layer} is not F32 {m} x {m}")
        arrays[(layer, name)] = np.frombuffer(t.data, dtype="<f4").reshape(m, m)
    return InvariantSet(group, dict(manifest.model), arrays)


def group_terms(manifest: Manifest, terms: Mapping[str, Tensor]) -> list[InvariantSet]:
    """``terms_from_group`` for every group of the manifest, in order."""
    return [terms_from_group(manifest, i, terms) for i in range(len(manifest.groups))]


def sketch_invariants(inv: InvariantSet, k: int) -> InvariantSet:
    """``inv`` with every term replaced by its public ``k x k`` sketch (float32, as it travels) and its group
    marked ``sketch=k``. The projections depend only on the probe set, the term's name and ``k``
    (``protocol._sketch``), so the same terms always give the same sketches, on either side."""
    group = inv.group
    if group.sketch:
        raise MessageError(f"the terms are already sketched (k = {group.sketch})")
    sketched = dataclasses.replace(group, sketch=k)  # checks k
    present = np.asarray(group.present, dtype=bool)
    terms = {key: np.ascontiguousarray(sketch_term(t, group.probe_set.id, key[1], k, present), dtype="<f4")
             for key, t in inv.terms.items()}
    return InvariantSet(sketched, dict(inv.model), terms)
