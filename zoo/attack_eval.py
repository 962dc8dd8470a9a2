"""Evaluate the attack suite: for one model and one attack, how far the function moved, how far the raw
parameters moved, and what each fingerprint method still sees.

Used by the attack tests and by ``benchmarks/attack_table.py``, which writes the committed results table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from owner import compute_invariants
from owner._model import open_model
from owner._probes import build_probe_set, load_vocabulary
from protocol import ProbeSpec as ProbeSet
from verifier import compare
from zoo.attacks import AttackNotApplicable, attack
from zoo.function import same_function


@dataclass(frozen=True)
class AttackRow:
    """One cell of the attack table. ``None`` scores mean the attack does not apply (``reason`` says why)."""

    family: str
    attack: str
    function_rel_diff: float | None
    raw_cosine: float | None
    pawprint_min: float | None
    pawprint_ics: float | None
    huref_min: float | None
    huref_ics: float | None
    huref_ffn_min: float | None
    reason: str = ""


def raw_parameter_cosine(a: Path, b: Path) -> float:
    """Cosine of the concatenated weight matrices (2-D tensors) the two checkpoints share by name and shape.

    Norm weights and biases are left out: they are few, positive-biased numbers (norm weights near 1) that
    would make even independent models look alike."""
    ma, mb = open_model(a), open_model(b)
    names = sorted(set(ma.source.names()) & set(mb.source.names()))
    dot = na = nb = 0.0
    for n in names:
        shape = ma.source.meta(n).shape
        if len(shape) != 2 or shape != mb.source.meta(n).shape:
            continue
        x = ma.source.tensor(n).double().ravel()
        y = mb.source.tensor(n).double().ravel()
        dot += float(x @ y)
        na += float(x @ x)
        nb += float(y @ y)
    return dot / float(np.sqrt(na * nb)) if na and nb else 0.0


def _scores(a: Path, b: Path, probes: ProbeSet, method: str) -> tuple[float, float, float]:
    r = compare(
        compute_invariants(a, probes=probes, method=method),  # type: ignore[arg-type]
        compute_invariants(b, probes=probes, method=method),  # type: ignore[arg-type]
    )
    ffn = min(t.cosine for t in r.terms if t.term == "ffn")
    return min(t.cosine for t in r.terms), r.ics, ffn


def evaluate_pair(a: Path, b: Path, family: str, label: str, probes: ProbeSet | None = None) -> AttackRow:
    probes = probes or build_probe_set(load_vocabulary(open_model(a).root), n=512, rule="all-hash-v1")
    p_min, p_ics, _ = _scores(a, b, probes, "pawprint")
    h_min, h_ics, h_ffn = _scores(a, b, probes, "huref-2024")
    return AttackRow(family, label, None, raw_parameter_cosine(a, b), p_min, p_ics, h_min, h_ics, h_ffn)


def evaluate_attack(src: Path, kind: str, workdir: Path, seed: int = 0) -> AttackRow:
    """Apply ``kind`` to ``src`` (written under ``workdir``) and score it."""
    family = str(open_model(src).adapter.info.family)
    dst = workdir / f"{src.name}-{kind}-s{seed}"
    try:
        result = attack(src, dst, kind, seed=seed)
    except AttackNotApplicable as e:
        return AttackRow(family, kind, None, None, None, None, None, None, None, reason=str(e))
    diff = same_function(src, dst, result, seed)
    row = evaluate_pair(src, dst, family, kind)
    return AttackRow(
        family, kind, diff, row.raw_cosine, row.pawprint_min, row.pawprint_ics, row.huref_min, row.huref_ics,
        row.huref_ffn_min,
    )

