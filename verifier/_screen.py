"""A fast screen over compact per-base summaries, so that a submission is compared exactly with a few bases
instead of every base of a large registry.

Exact comparison (``verifier.compare``) reads each base's full terms (6 x n x n fp32: 384 MiB at n = 4096) and
standardises them: seconds per base and terabytes for a 10,000-base registry. The screen keeps, per base and
probe set, a *sketch*: each of the last two layers' three terms (six slots, paired from the end as
``verifier.compare`` pairs layers by default), standardised over all its entries (zero mean, unit standard
deviation, as ICS does), read at ``samples`` fixed positions ``(i, j)`` of the probe set and scaled to unit norm.
The positions are drawn from the probe set's id and the sketch's seed, so every model sketched on a probe set
is read at the same token pairs. The dot product of two sketches' slots estimates the cosine of the two
standardised terms (a Pearson correlation over the sampled entries; standard error about ``1/sqrt(samples)``),
and their mean over the slots both have estimates ICS. A query ranks every base on the suspect's probe sets
and returns the ``k`` best; the caller then compares those exactly, so the screen only decides which bases
are compared, never a score or a verdict.

Probe tokens a model lacks are masked: positions with either token absent count as zero in its sketch, and a
slot is scaled to unit norm over the positions it has, which keeps the ranking among bases on one probe set
(the suspect's mask is the same for all of them).

Pure logic: arrays and invariant sets in, candidates out; nothing is read from or written to disk here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from protocol.terms import TERMS, InvariantSet

SLOTS = 2 * len(TERMS)


@dataclass(frozen=True)
class SketchSpec:
    """How sketches are made; ``id`` records every parameter that changes one."""

    samples: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError("a sketch needs at least one sample")

    @property
    def id(self) -> str:
        return f"entry-sample/1(samples={self.samples},slots=last2x{len(TERMS)},seed={self.seed})"


def positions(probe_set_id: str, n_tokens: int, spec: SketchSpec) -> tuple[np.ndarray, np.ndarray]:
    """The ``spec.samples`` token pairs ``(i, j)`` (indices into the probe set) every sketch on it reads."""
    digest = hashlib.sha256(f"{spec.id}\0{probe_set_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return rng.integers(0, n_tokens, spec.samples), rng.integers(0, n_tokens, spec.samples)


@dataclass(frozen=True)
class Sketch:
    """One invariant set's sketch: ``values (SLOTS, samples)`` float32, each present slot of unit norm."""

    probe_set_id: str
    method_id: str
    values: np.ndarray = field(repr=False)
    slots: np.ndarray = field(repr=False)  # bool (SLOTS,): which slots the model has


def sketch(inv: InvariantSet, spec: SketchSpec) -> Sketch:
    """The sketch of ``inv``: see the module docstring."""
    n = len(inv.tokens)
    rows = np.cumsum(inv.present) - 1
    rows[~np.asarray(inv.present, dtype=bool)] = -1
    i, j = positions(inv.probes.id, n, spec)
    ri, rj = rows[i], rows[j]
    valid = (ri >= 0) & (rj >= 0)
    values = np.zeros((SLOTS, spec.samples), dtype=np.float32)
    slots = np.zeros(SLOTS, dtype=bool)
    layers = list(inv.layers)[-2:]
    first = SLOTS - len(TERMS) * len(layers)
    for li, layer in enumerate(layers):
        for ti, name in enumerate(TERMS):
            s = first + li * len(TERMS) + ti
            m = inv.term(layer, name)
            mean = float(m.mean(dtype=np.float64))
            sd = float(m.std(dtype=np.float64))
            if sd <= 0 or not valid.any():
                continue
            v = np.zeros(spec.samples, dtype=np.float64)
            v[valid] = (m[ri[valid], rj[valid]].astype(np.float64) - mean) / sd
            norm = float(np.linalg.norm(v))
            if norm > 0:
                values[s] = v / norm
                slots[s] = True
    return Sketch(inv.probes.id, inv.method_id, values, slots)


@dataclass(frozen=True)
class Candidate:
    """A base the screen passes on for exact comparison, with the screen's estimate of its ICS."""

    key: Hashable
    estimate: float


@dataclass
class _Shelf:
    """The sketches of every base on one (probe set, method), stacked: ``values (N, SLOTS, samples)`` float16."""

    keys: list[Hashable] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    slots: list[np.ndarray] = field(default_factory=list)
    _stacked: tuple[np.ndarray, np.ndarray] | None = None

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stacked is None or self._stacked[0].shape[0] != len(self.keys):
            self._stacked = (np.stack(self.values), np.stack(self.slots))
            self.values = list(self._stacked[0])  # views into the stack: memory is held once
            self.slots = list(self._stacked[1])
        return self._stacked


class ScreenIndex:
    """Sketches of registered bases, grouped by (probe set, method); ``query`` returns the best ``k``."""

    def __init__(self, spec: SketchSpec | None = None) -> None:
        self.spec = spec or SketchSpec()
        self._shelves: dict[tuple[str, str], _Shelf] = {}

    def add(self, key: Hashable, invariant_sets: Iterable[InvariantSet]) -> None:
        """Index every group of one base (a base may carry terms on several probe sets)."""
        for inv in invariant_sets:
            self.add_sketch(key, sketch(inv, self.spec))

    def add_sketch(self, key: Hashable, s: Sketch) -> None:
        if s.values.shape != (SLOTS, self.spec.samples):
            raise ValueError(f"sketch of shape {s.values.shape}, this index holds {(SLOTS, self.spec.samples)}")
        shelf = self._shelves.setdefault((s.probe_set_id, s.method_id), _Shelf())
        shelf.keys.append(key)
        shelf.values.append(s.values.astype(np.float16))
        shelf.slots.append(s.slots.copy())

    def __len__(self) -> int:
        return len({k for shelf in self._shelves.values() for k in shelf.keys})

    def nbytes(self) -> int:
        """Memory held by the sketches (values and slot masks)."""
        total = 0
        for shelf in self._shelves.values():
            values, slots = shelf.stacked()
            total += values.nbytes + slots.nbytes
        return total

    def scores(self, suspect: Sketch, chunk: int = 4096) -> tuple[list[Hashable], np.ndarray]:
        """Every base on the suspect's (probe set, method) and its estimated ICS (``-inf`` where no slot is
        shared)."""
        shelf = self._shelves.get((suspect.probe_set_id, suspect.method_id))
        if shelf is None or not shelf.keys:
            return [], np.zeros(0)
        values, slots = shelf.stacked()
        q = suspect.values.astype(np.float32)
        out = np.empty(len(shelf.keys))
        for a in range(0, len(shelf.keys), chunk):
            block = values[a : a + chunk].astype(np.float32)  # (c, SLOTS, samples)
            dots = np.einsum("bsk,sk->bs", block, q)
            both = slots[a : a + chunk] & suspect.slots
            count = both.sum(axis=1)
            est = np.where(both, dots, 0.0).sum(axis=1) / np.maximum(count, 1)
            out[a : a + chunk] = np.where(count > 0, est, -np.inf)
        return shelf.keys, out

    def query(self, suspect: Sequence[InvariantSet], k: int) -> list[Candidate]:
        """The ``k`` bases with the highest estimated ICS over the suspect's groups (best group per base)."""
        best: dict[Hashable, float] = {}
        for inv in suspect:
            keys, est = self.scores(sketch(inv, self.spec))
            for key, e in zip(keys, est, strict=True):
                if e > best.get(key, -np.inf):
                    best[key] = float(e)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        return [Candidate(key, e) for key, e in ranked if np.isfinite(e)]
