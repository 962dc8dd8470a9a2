"""The encoder: a model's invariant terms -> a 512-d vector distributed like N(0, I) that keeps their similarity
(related models -> high cosine, independent ones -> near 0). It feeds the picture (SCIENCE.md, "Encoder and
picture"); the numbers (ICS) remain the evidence, the vector only illustrates them.

Pipeline, the same for both encoders:

1. Terms. By default the last two selected layers (``inv.layers[-2:]``) x ``TERMS`` = six ``m x m`` arrays over
   the ``m`` probe tokens the model has. Each is standardised over its own entries (zero mean, unit sd, as
   ``verifier._ics.standardise``) and then placed in probe-set order over all ``n`` probe tokens, absent
   tokens as zero rows and columns, so two models with the same probe set share coordinates.
2. Linear reduction to a fixed size (:class:`TermSketch`). A standardised term ``Z`` (``n x n``) becomes
   ``R = S1 Z S2^T`` (``k x k``, default ``k = 64``) with ``S1, S2`` two *independent* ``k x n`` standard
   Gaussian matrices drawn from ``(seed, n)``. Since ``vec(R) = (S2 (x) S1) vec(Z)`` and
   ``E[(S2 (x) S1)^T (S2 (x) S1)] = k^2 I``, ``E<R_a, R_b> = k^2 <Z_a, Z_b>``: inner products, hence cosines, are
   kept in expectation, with error ~1/k (measured on the zoo at k=64: rms 0.010, worst 0.04). Two independent
   sides because one ``S`` on both sides adds a bias ``k tr(Z_a) tr(Z_b)`` from the terms' diagonals (small
   on the zoo, +0.002, but not bounded in general). Block pooling over consecutive probe positions, the
   obvious alternative, is less faithful (rms 0.018, worst 0.18 at k=64; ``docs/results/encoder.md``).
   Zero rows and columns for absent tokens are the same as dropping the matching columns of ``S1, S2``,
   which is how it is computed (``2 k m^2`` flops per term, no ``n x n`` array). Each ``R`` is scaled to unit
   Frobenius norm: then the mean over terms of ``<R_a, R_b>`` approximates ICS, the mean of the term cosines.
3. Encoder. ``RandomProjectionEncoder`` (training-free): ``y = G u`` with ``u`` the concatenated unit
   sketches divided by ``sqrt(#terms)`` (a unit vector) and ``G`` a ``512 x (#terms k^2)`` standard Gaussian
   matrix drawn from a seed: each ``y_i = g_i . u`` is exactly N(0, 1) over ``G`` and, by Johnson-Lindenstrauss,
   ``cos(y_a, y_b) = u_a . u_b +- ~1/sqrt(512)``. ``CnnEncoder`` (``benchmarks/encoder_cnn.py``, not used by the
   verifier, which needs no torch): a small convolutional network on the
   ``#terms x k x k`` sketches, trained only on synthetic terms (products of Gaussian matrices; positives are
   perturbed copies, negatives fresh draws) by ``benchmarks/train_encoder.py`` with a contrastive loss and an
   adversarial loss that pushes its outputs toward N(0, I), as HuRef does. It is odd by construction,
   ``f(x) = sqrt(512) r / ||r||`` with ``r = g(x) - g(-x)``, so negated terms give the negated vector, and
   its norm is fixed at the value a 512-d N(0, I) vector concentrates at (22.6 +- 0.7).

What a vector can show: two independent N(0, I) vectors in 512-d have cosine 0 +- 0.044, whatever the
encoder, so models whose ICS is below about 0.1 (the zoo's heavy continued pretraining) cannot be told from
unrelated ones by their vectors; ICS can. The default encoder is chosen by measurement (``DEFAULT_ENCODER``).

Every parameter that changes the output is in the encoder's id (``encoder_id``); the CNN's id carries the
SHA-256 of its weights file. Outputs are computed in float64 and rounded to float32, so the same input gives
the same bytes (``vector_digest``). Bad input raises :class:`EncoderInputError` (a ``ValueError``).

This module never reads weights of a language model: it sees only invariant terms.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from protocol.terms import TERMS, InvariantSet
from verifier.errors import VerifierError

__all__ = [
    "CNN_WEIGHTS",
    "DEFAULT_ENCODER",
    "DEFAULT_TERM_KEYS",
    "ENCODER_DIM",
    "ENCODER_NAMES",
    "Encoder",
    "EncoderInputError",
    "RandomProjectionEncoder",
    "SyntheticModel",
    "TermSketch",
    "load_encoder",
    "perturb_model",
    "synthetic_model",
    "synthetic_sketch",
    "synthetic_terms",
    "terms_of",
    "vector_digest",
]

ENCODER_DIM = 512
SKETCH_K = 64
SKETCH_SEED = 1
PROJECTION_SEED = 2
CNN_WEIGHTS = "encoder-cnn-v1.safetensors"
WEIGHTS_FORMAT = "pawprint-encoder/1"

TermKey = tuple[int, str]
"""(position in ``inv.layers``, negative from the end; term name)."""
DEFAULT_TERM_KEYS: tuple[TermKey, ...] = tuple((pos, name) for pos in (-2, -1) for name in TERMS)

# Domain tags keep the random streams of the sketch, the projection and the synthetic data apart.
_TAG_SKETCH = 0x736B
_TAG_PROJECTION = 0x7270


class EncoderInputError(VerifierError):
    """The input cannot be encoded: wrong term shapes, missing layers or terms, non-finite or constant terms."""

    status = "INVALID_ARGUMENT"


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


_SHORT = {"attn_qk": "qk", "attn_vo": "vo", "ffn": "ffn"}


def _keys_label(keys: Sequence[TermKey]) -> str:
    """Compact, since ids travel in receipts (at most 200 characters): ``L-2.qk+L-2.vo+...``."""
    return "+".join(f"L{pos}.{_SHORT.get(name, name)}" for pos, name in keys)


def terms_of(inv: InvariantSet, term_keys: Sequence[TermKey] = DEFAULT_TERM_KEYS) -> list[np.ndarray]:
    """The terms of ``inv`` named by ``term_keys`` (positions in ``inv.layers``, negative from the end)."""
    out: list[np.ndarray] = []
    for pos, name in term_keys:
        if not -len(inv.layers) <= pos < len(inv.layers):
            raise EncoderInputError(
                f"the encoder needs layer position {pos} but the invariants have {len(inv.layers)} layer(s) "
                f"{list(inv.layers)}"
            )
        layer = inv.layers[pos]
        try:
            out.append(inv.term(layer, name))
        except KeyError:
            raise EncoderInputError(f"the invariants have no term {name!r} for layer {layer}") from None
    return out


def _present_mask(present: np.ndarray | Sequence[bool]) -> np.ndarray:
    p = np.asarray(present)
    if p.ndim != 1 or p.size == 0 or p.dtype != np.bool_:
        raise EncoderInputError(f"present must be a non-empty 1-D boolean mask, got dtype {p.dtype}, shape {p.shape}")
    if int(p.sum()) < 2:
        raise EncoderInputError(f"at least 2 probe tokens must be present, got {int(p.sum())}")
    return p


@functools.lru_cache(maxsize=8)
def _sketch_matrices(k: int, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    s1 = _rng(_TAG_SKETCH, seed, n, 1).standard_normal((k, n))
    s2 = _rng(_TAG_SKETCH, seed, n, 2).standard_normal((k, n))
    s1.setflags(write=False)
    s2.setflags(write=False)
    return s1, s2


@dataclass(frozen=True)
class TermSketch:
    """The linear reduction ``Z (n x n) -> S1 Z S2^T (k x k)``, independent Gaussian ``S1, S2`` from ``(seed, n)``."""

    k: int = SKETCH_K
    seed: int = SKETCH_SEED

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"sketch size k must be an integer >= 2, not {self.k!r}")

    @property
    def label(self) -> str:
        return f"k={self.k},sketch-seed={self.seed}"

    def matrices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(S1, S2)``, each ``k x n`` standard Gaussian, float64, read-only."""
        return _sketch_matrices(self.k, self.seed, int(n))

    def reduce(self, terms: Sequence[np.ndarray], present: np.ndarray | Sequence[bool]) -> np.ndarray:
        """``(#terms, k, k)`` float64: each term standardised, zero-expanded to the probe set, sketched, scaled
        to unit Frobenius norm. ``present`` is the mask over the probe set; terms are over present tokens."""
        p = _present_mask(present)
        m = int(p.sum())
        if len(terms) == 0:
            raise EncoderInputError("no terms to encode")
        s1, s2 = self.matrices(p.size)
        a, b = s1[:, p], s2[:, p]
        out = np.empty((len(terms), self.k, self.k))
        for i, t in enumerate(terms):
            arr = np.asarray(t)
            if arr.shape != (m, m):
                raise EncoderInputError(
                    f"term {i} has shape {arr.shape}; expected {(m, m)} (the {m} present probe tokens)"
                )
            if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
                raise EncoderInputError(f"term {i} has non-numeric dtype {arr.dtype}")
            z = arr.astype(np.float64)
            if not np.isfinite(z).all():
                raise EncoderInputError(f"term {i} has non-finite entries")
            z -= z.mean()
            if not z.std() > 0:
                raise EncoderInputError(f"term {i} is constant: nothing to encode")
            r = (a @ z) @ b.T  # dividing z by its sd first would not change r / ||r||
            out[i] = r / np.linalg.norm(r)
        return out


@runtime_checkable
class Encoder(Protocol):
    """Maps a model's invariant terms to a float32 vector of ``ENCODER_DIM`` values, distributed like N(0, I)."""

    @property
    def encoder_id(self) -> str: ...

    def encode(self, inv: InvariantSet) -> np.ndarray: ...

    def encode_terms(self, terms: Sequence[np.ndarray], present: np.ndarray | Sequence[bool]) -> np.ndarray: ...


def _checked_output(y: np.ndarray) -> np.ndarray:
    out = np.asarray(y, dtype=np.float64).astype("<f4")
    if out.shape != (ENCODER_DIM,) or not np.isfinite(out).all():
        raise EncoderInputError("the encoder produced a non-finite vector (degenerate input)")
    return out


# ------------------------------------------------------------------------------------------ random projection
@functools.lru_cache(maxsize=8)
def _projection_block(seed: int, k: int, term: int) -> np.ndarray:
    g = _rng(_TAG_PROJECTION, seed, k, term).standard_normal((ENCODER_DIM, k * k))
    g.setflags(write=False)
    return g


@dataclass(frozen=True)
class RandomProjectionEncoder:
    """Training-free: ``y = G u``, ``G`` standard Gaussian (``512 x #terms k^2``), ``u`` the unit concatenation of
    the unit sketches. Each output coordinate is exactly N(0, 1) over ``G``; cosines are kept (JL)."""

    k: int = SKETCH_K
    sketch_seed: int = SKETCH_SEED
    projection_seed: int = PROJECTION_SEED
    term_keys: tuple[TermKey, ...] = DEFAULT_TERM_KEYS
    sketch: TermSketch = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sketch", TermSketch(self.k, self.sketch_seed))
        object.__setattr__(self, "term_keys", tuple((int(p), str(n)) for p, n in self.term_keys))
        if not self.term_keys:
            raise ValueError("term_keys must name at least one term")

    @property
    def encoder_id(self) -> str:
        return (
            f"random-v1(dim={ENCODER_DIM},{self.sketch.label},projection-seed={self.projection_seed},"
            f"rng=numpy-pcg64-normal,terms={_keys_label(self.term_keys)})"
        )

    def encode(self, inv: InvariantSet) -> np.ndarray:
        # A sketched group's terms are k x k public sketches (protocol._sketch): encoded as terms over k
        # positions, all present, so that two sketches of one size on one probe set share coordinates.
        present = np.ones(inv.group.sketch, dtype=bool) if inv.group.sketch else np.asarray(inv.present, dtype=bool)
        return self.encode_terms(terms_of(inv, self.term_keys), present)

    def encode_terms(self, terms: Sequence[np.ndarray], present: np.ndarray | Sequence[bool]) -> np.ndarray:
        if len(terms) != len(self.term_keys):
            raise EncoderInputError(f"expected {len(self.term_keys)} terms ({_keys_label(self.term_keys)}), "
                                    f"got {len(terms)}")
        u = self.sketch.reduce(terms, present)
        return _checked_output(self.project(u))

    def project(self, u: np.ndarray) -> np.ndarray:
        """Unit sketches ``(..., #terms, k, k)`` -> float64 ``(..., 512)`` (no rounding). ``G`` is one
        ``512 x k^2`` block per term, drawn once per process and kept (16 MiB each at k = 64): drawing it
        was most of a submission's time in the verifier (benchmarks/load.py)."""
        lead, n_terms = u.shape[:-3], u.shape[-3]
        kk = self.k * self.k
        flat = u.reshape(-1, n_terms, kk)
        y = np.zeros((flat.shape[0], ENCODER_DIM))
        for t in range(n_terms):
            y += flat[:, t] @ _projection_block(self.projection_seed, self.k, t).T
        return (y / math.sqrt(n_terms)).reshape(*lead, ENCODER_DIM)


# ----------------------------------------------------------------------------------------------- loading
ENCODER_NAMES: tuple[str, ...] = ("random-v1",)
DEFAULT_ENCODER = "random-v1"
"""Chosen by measurement (``benchmarks/encoder_eval.py``, results in ``docs/results/encoder.md``): on the zoo
its cosine tracks ICS with rms error 0.033 (cnn-v1: 0.053), it keeps weakly related pairs (heavy continued
pretraining, ICS 0.08) above 0 where cnn-v1 maps them to about 0, and its outputs are as Gaussian as true
N(0, I) samples (cnn-v1's are more correlated with each other: independent inputs' cosine sd 0.062 vs 0.045)."""


def _weights_path(filename: str) -> Path:
    return Path(str(resources.files("verifier") / "data" / filename))


@functools.lru_cache(maxsize=4)
def load_encoder(name: str = "default") -> Encoder:
    """An encoder by name: ``"random-v1"`` or ``"default"`` (the same). ``cnn-v1`` lives in ``benchmarks``."""
    if name == "default":
        name = DEFAULT_ENCODER
    if name == "random-v1":
        return RandomProjectionEncoder()
    if name == "cnn-v1":
        raise ValueError("the cnn-v1 encoder is not the verifier's: random-v1 was chosen over it by measurement, "
                         "and the CNN (which needs torch) is kept for evaluation in benchmarks/encoder_cnn.py")
    raise ValueError(f"unknown encoder {name!r}; expected 'default' or one of {', '.join(ENCODER_NAMES)}")


def vector_digest(v: np.ndarray) -> bytes:
    """SHA-256 of the canonical bytes of a vector: little-endian float32, C order."""
    a = np.asarray(v)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
        raise EncoderInputError(f"a digest needs a finite 1-D float vector, got dtype {a.dtype}, shape {a.shape}")
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).digest()


# ----------------------------------------------------------------------------------- synthetic terms
# Training (benchmarks/train_encoder.py), tests and benchmarks draw terms from the same simple model of a
# transformer's terms: products of Gaussian matrices on Gaussian probe rows, two layers.


@dataclass(frozen=True)
class SyntheticModel:
    """Gaussian probe rows ``x (n x d)`` and, per layer, the factors of its three terms:
    ``qk = x (Aq Ak^T + a I) x^T``, ``vo = x (Av Ao + b I) x^T``, ``ffn = ((x G) * (x U)) W x^T``."""

    x: np.ndarray
    layers: tuple[dict[str, np.ndarray], ...]


def synthetic_model(rng: np.random.Generator, n: int, d: int, n_layers: int = 2) -> SyntheticModel:
    """A fresh draw (an independently trained model). Token rows have log-normal norms; the attention
    products get a random identity component, since real ones have diagonals far from zero."""
    scale = np.exp(0.3 * rng.standard_normal((n, 1)))
    x = rng.standard_normal((n, d)) * scale
    r, h = max(1, d // 2), 2 * d
    layers = []
    for _ in range(n_layers):
        layers.append({
            "aq": rng.standard_normal((d, r)) / math.sqrt(d),
            "ak": rng.standard_normal((d, r)) / math.sqrt(d),
            "a": rng.standard_normal((1, 1)) * 0.5,
            "av": rng.standard_normal((d, r)) / math.sqrt(d),
            "ao": rng.standard_normal((r, d)) / math.sqrt(r),
            "b": rng.standard_normal((1, 1)) * 0.5,
            "g": rng.standard_normal((d, h)) / math.sqrt(d),
            "u": rng.standard_normal((d, h)) / math.sqrt(d),
            "w": rng.standard_normal((h, d)) / math.sqrt(h),
        })
    return SyntheticModel(x, tuple(layers))


def perturb_model(m: SyntheticModel, rng: np.random.Generator, level: float) -> SyntheticModel:
    """A derivative (fine-tuning-like): every factor and the probe rows plus ``level`` times Gaussian noise of
    the factor's own scale."""

    def noisy(a: np.ndarray) -> np.ndarray:
        sd = float(a.std()) if a.size > 1 else 0.5
        return a + level * sd * rng.standard_normal(a.shape)

    rows = np.linalg.norm(m.x, axis=1, keepdims=True) / math.sqrt(m.x.shape[1])
    x = m.x + level * rows * rng.standard_normal(m.x.shape)
    return SyntheticModel(x, tuple({key: noisy(a) for key, a in layer.items()} for layer in m.layers))


def _factors(x: np.ndarray, layer: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each term as ``L @ Rt.T`` with ``L, Rt`` of ``n`` rows (qk, vo, ffn)."""
    d = x.shape[1]
    eye = np.eye(d)
    hid = (x @ layer["g"]) * (x @ layer["u"])
    return [
        (x @ (layer["aq"] @ layer["ak"].T + layer["a"][0, 0] * eye), x),
        (x @ (layer["av"] @ layer["ao"] + layer["b"][0, 0] * eye), x),
        (hid @ layer["w"], x),
    ]


def synthetic_terms(m: SyntheticModel) -> list[np.ndarray]:
    """The full ``n x n`` terms (layer by layer: qk, vo, ffn), float64."""
    return [left @ right.T for layer in m.layers for left, right in _factors(m.x, layer)]


def synthetic_sketch(m: SyntheticModel, sketch: TermSketch) -> np.ndarray:
    """``sketch.reduce(synthetic_terms(m), all present)`` computed from the factors, without any ``n x n``
    array: ``S1 (L R^T - mu 1 1^T) S2^T = (S1 L)(S2 R)^T - mu (S1 1)(S2 1)^T``."""
    n = m.x.shape[0]
    s1, s2 = sketch.matrices(n)
    one1, one2 = s1.sum(axis=1), s2.sum(axis=1)
    out = []
    for layer in m.layers:
        for left, right in _factors(m.x, layer):
            mu = float(left.sum(axis=0) @ right.sum(axis=0)) / (n * n)
            r = (s1 @ left) @ (s2 @ right).T - mu * np.outer(one1, one2)
            out.append(r / np.linalg.norm(r))
    return np.stack(out)
