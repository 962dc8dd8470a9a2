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
    build_pair_probe_set,
    bundle_invariants,
    compute_invariants,
    is_bundle_file,
    is_invariants_file,
    load_bundle,
    load_invariants,
    load_vocabulary,
    open_model,
)
from owner._vocab import Vocabulary
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
    """Compare two models / invariants files. Without ``probes`` both sides use the same probe rows whichever
    comes first (``load_pair``), so ``compare_paths(a, b)`` and ``compare_paths(b, a)`` agree. Layers are
    matched order-preservingly (``match_layers``; equal depths pair one to one)."""
    inv_a, inv_b = load_pair(a, b, probes, layers, method, progress)
    return compare(inv_a, inv_b, layer_pairs="match")


def load_pair(
    a: Path, b: Path, probes: ProbeSpec | None = None, layers: str | Sequence[int] | None = None,
    method: Method = "pawprint", progress: Progress | None = None,
) -> tuple[InvariantSet, InvariantSet]:
    """The two invariant sets ``compare_paths`` compares, on the same probe rows whichever side comes first:
    ``probes`` if given; else the probe set of a side that is an invariants file or bundle (the other side is
    computed on it; A's if both are); else, for two models, one probe set built from both vocabularies
    (``owner.build_pair_probe_set``: tokens both have, chosen symmetrically)."""
    a, b = Path(a), Path(b)
    if probes is None:
        fixed_a, fixed_b = _is_fixed(a), _is_fixed(b)
        if fixed_b and not fixed_a:  # B's terms are given: A is computed on B's probe set
            inv_b = _load_side(b, None, layers, method, progress)
            m = inv_b.method if inv_b.method in METHODS else method
            return _load_side(a, inv_b.probes, layers, m, progress), inv_b
        if not fixed_a:
            probes = build_pair_probe_set(_vocabulary(a), _vocabulary(b))
    inv_a = _load_side(a, probes, layers, method, progress)
    m = inv_a.method if inv_a.method in METHODS else method
    return inv_a, _load_side(b, probes or inv_a.probes, layers, m, progress)


def _is_fixed(path: Path) -> bool:
    """Whether ``path`` holds computed terms (an invariants file or a bundle) rather than a model."""
    return path.is_file() and (is_invariants_file(path) or is_bundle_file(path))


def _vocabulary(path: Path) -> Vocabulary:
    """The vocabulary of the model at ``path``, found as the agent finds it (``open_model``'s root: a directory's
    tokenizer files, or a GGUF file's own tokenizer; opening reads headers only)."""
    return load_vocabulary(open_model(path).root)


