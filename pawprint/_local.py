"""Comparing two models on this machine: model directories, ONNX files, invariants files or bundles.

What ``pawprint compare`` runs: the owner's agent computes (or reads) each side's terms, the verifier's ICS
compares them. It needs both the owner and the verifier extras; neither package imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from owner import (
    METHODS,
    Method,
    Progress,
    bundle_invariants,
    compute_invariants,
    is_bundle_file,
    is_invariants_file,
    load_bundle,
    load_invariants,
)
from protocol import ProbeSpec
from protocol.terms import InvariantSet
from verifier import Comparison, compare


def _load_side(
    path: Path, probes: ProbeSpec | None, layers: str | Sequence[int] | None, method: Method,
    progress: Progress | None,
) -> InvariantSet:
    if path.is_file() and is_invariants_file(path):
        return load_invariants(path)
    if path.is_file() and is_bundle_file(path):
        # A bundle's signature is checked by `pawprint bundle verify`; compare reads its terms.
        groups = bundle_invariants(load_bundle(path))
        if probes is not None:
            for g in groups:
                if g.probes.id == probes.id:
                    return g
        return groups[0]
    return compute_invariants(path, probes=probes, layers=layers, method=method, progress=progress)


def compare_paths(
    a: Path, b: Path, probes: ProbeSpec | None = None, layers: str | Sequence[int] | None = None,
    method: Method = "pawprint", progress: Progress | None = None,
) -> Comparison:
    """Compare two models / invariants files. Without ``probes`` the probe set comes from A (its invariants
    file's probe set, or one built from its vocabulary), and B is computed on the same tokens. Layers are
    matched order-preservingly (``match_layers``; equal depths pair one to one)."""
    inv_a, inv_b = load_pair(a, b, probes, layers, method, progress)
    return compare(inv_a, inv_b, layer_pairs="match")


def load_pair(
    a: Path, b: Path, probes: ProbeSpec | None = None, layers: str | Sequence[int] | None = None,
    method: Method = "pawprint", progress: Progress | None = None,
) -> tuple[InvariantSet, InvariantSet]:
    """The two invariant sets ``compare_paths`` compares (B on A's probe set)."""
    inv_a = _load_side(Path(a), probes, layers, method, progress)
    m = inv_a.method if inv_a.method in METHODS else method
    return inv_a, _load_side(Path(b), probes or inv_a.probes, layers, m, progress)


