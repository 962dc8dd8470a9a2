"""Seeded two-sided Gaussian sketches of invariant terms (issue 16, item 2): pure numpy, no torch.

A term ``T`` (``m_r x m_c``, rows and columns on the present tokens of one probe set) is reduced to

    S = A_P (T - mean(T)) B_P^T / k            (k x k)

with ``A, B`` (``k x n``, ``n`` the probe set's tokens) standard Gaussian, restricted to the columns of the
tokens present (``A_P``, ``B_P``). ``A`` and ``B`` are *public and fixed*: drawn from a stream seeded by the
SHA-256 of a domain tag, the probe set's id and the term's key (``term_key``, the term's name such as
``attn_qk``, *not* its layer), never from a clock or a party's choice. So

- the same inputs give the same bytes (on one platform; see "Stream" below);
- every layer of a model, and every model on the probe set, is sketched with the same ``A, B`` per term name, so
  a derivative's layer ``i`` can be compared with its base's layer ``j`` (layer matching of pruned and upscaled
  models keeps working); a model sketched twice on one probe set gives the same sketch and reveals nothing new;
- the rows of ``A, B`` are nested in ``k``: the sketch at ``k`` is ``k'/k`` times the top-left block of the sketch
  at ``k' > k``, so sketches of one term at several sizes reveal no more than the largest.

**The statistic.** The comparison's score for a term is the cosine of the two centred terms (``verifier._ics``:
zero mean over the entries, cosine). On sketches it is ``sketch_cosine(Sa, Sb) = <Sa, Sb> / (|Sa| |Sb|)``
(Frobenius), the sketches of centred terms not centred again. Why it estimates the full-term cosine: for
independent standard Gaussian ``A, B``, ``E[A^T A] = k I``, so ``E <A X B^T, A Y B^T> = k^2 <X, Y>``, and with the
``1/k`` normalisation ``E <Sa, Sb> = <Xa, Xb>`` and ``E |S|^2 = |X|^2``: numerator and both norms are unbiased, and
the ratio concentrates around the terms' cosine ``rho``: with a spread of ``(1 - rho^2) / k`` for terms whose
effective rank is well above ``k`` (the ``k^2`` entries are then close to independent samples; pinned in
tests/protocol/test_sketch.py), wider for low-rank terms (measured on real and zoo terms in
docs/results/sketches.md). The error is fixed for a pair (the projections are), so a verdict on sketches needs a
null fitted on sketches at the same ``k``. The normalisation cancels in the cosine and only fixes the scale of
``<Sa, Sb>`` as an estimate of ``<Xa, Xb>``.

**What survives.** Every function-preserving transform the terms already cancel (the terms do not move, so
neither do their sketches); the cosine's invariance to scale (``S`` is linear in ``T``) and to a constant shift
(the term is centred before it is sketched). What does not: probe tokens present on one side only. The full
comparison restricts both terms to the common tokens and centres there; a sketch is centred on its own present
tokens and carries the others in its norm, so the sketch cosine is the cosine of the two terms zero-padded to the
probe set, which is smaller when the present sets differ (a vocabulary-extended derivative; other families).

**What a sketch discloses.** ``S = (A_P E) M (B_P E)^T / k`` for a term ``T = E M E^T`` seen through ``d``-wide
rows ``E``: exactly the weight product ``M`` projected on ``k`` random directions per side. With ``k >= d``
``M`` is recovered whole (``A_P E`` has full column rank); with ``k < d`` only that projection, about ``(k/d)^2``
of its energy. ``k`` must stay well below the width of the models it protects, and the probe sets a model may
be sketched on must be fixed: each probe set is another projection.

**Stream.** ``A`` and ``B`` are drawn from numpy's ``PCG64`` bit generator, whose raw output numpy keeps stable
across versions (unlike ``Generator.standard_normal``), turned into normals by Box-Muller here; the tests pin a
digest of the matrices so that a change in the stream fails loudly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["SKETCH_TAG", "SketchError", "sketch_cosine", "sketch_matrix", "sketch_term", "sketched_values"]

SKETCH_TAG = b"pawprint/v1/term-sketch"


class SketchError(ValueError):
    """A term or a sketch request that cannot be sketched (shape, values, sizes)."""


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) < 2:
        raise SketchError(f"sketch size k must be an integer >= 2, not {k!r}")
    return int(k)


def _seed(probe_set_id: str, term_key: str, side: str, n: int) -> int:
    if not isinstance(probe_set_id, str) or not probe_set_id:
        raise SketchError(f"probe_set_id must be a non-empty string, not {probe_set_id!r}")
    if not isinstance(term_key, str) or not term_key:
        raise SketchError(f"term_key must be a non-empty string, not {term_key!r}")
    h = hashlib.sha256()
    for part in (SKETCH_TAG, probe_set_id.encode(), term_key.encode(), side.encode(), str(n).encode()):
        h.update(len(part).to_bytes(4, "big") + part)  # length-prefixed: no two inputs give one message
    return int.from_bytes(h.digest(), "big")


def sketch_matrix(probe_set_id: str, term_key: str, side: str, n: int, k: int) -> np.ndarray:
    """The public ``k x n`` standard Gaussian projection of one side (``"rows"`` or ``"cols"``) of a term on a
    probe set of ``n`` tokens (float64, read-only). Row ``i`` does not depend on ``k`` (nested sketches)."""
    k = _check_k(k)
    if side not in ("rows", "cols"):
        raise SketchError(f"side must be 'rows' or 'cols', not {side!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or int(n) < 1:
        raise SketchError(f"the probe set size n must be a positive integer, not {n!r}")
    n = int(n)
    pairs = (k * n + 1) // 2
    raw = np.random.PCG64(_seed(probe_set_id, term_key, side, n)).random_raw(2 * pairs)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # uniform in (0, 1), never 0
    r = np.sqrt(-2.0 * np.log(u[0::2]))
    theta = 2.0 * math.pi * u[1::2]
    z = np.empty(2 * pairs)
    z[0::2], z[1::2] = r * np.cos(theta), r * np.sin(theta)
    out = z[: k * n].reshape(k, n)
    out.setflags(write=False)
    return out


def _mask(present: Sequence[bool] | np.ndarray | None, size: int, what: str) -> np.ndarray:
    if present is None:
        return np.ones(size, dtype=bool)
    p = np.asarray(present)
    if p.ndim != 1 or p.dtype != np.bool_:
        raise SketchError(f"{what} must be a 1-D sequence of booleans over the probe set")
    if int(p.sum()) != size:
        raise SketchError(f"the term has {size} {what.split('_')[-1]} but {what} marks {int(p.sum())} tokens present")
    return p


def sketch_term(
    term: np.ndarray, probe_set_id: str, term_key: str, k: int,
    present: Sequence[bool] | np.ndarray | None = None, present_cols: Sequence[bool] | np.ndarray | None = None,
) -> np.ndarray:
    """``A_P (T - mean T) B_P^T / k`` (``k x k`` float64): the public sketch of ``term`` (module docstring).

    ``present``: the probe set's tokens present on the term's rows (a boolean mask over the probe set, as
    ``InvariantSet.present``); ``None`` means every token, and then the term spans the whole probe set.
    ``present_cols``: the same for the columns, default ``present`` (the terms here are square).
    """
    k = _check_k(k)
    t = np.asarray(term)
    if t.ndim != 2 or 0 in t.shape:
        raise SketchError(f"a term must be a non-empty 2-D array, not shape {t.shape}")
    if not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)) or t.dtype == np.bool_:
        raise SketchError(f"a term must be numeric, not {t.dtype}")
    rows = _mask(present, t.shape[0], "present_rows") if present is not None else None
    cols_src = present_cols if present_cols is not None else present
    cols = _mask(cols_src, t.shape[1], "present_cols") if cols_src is not None else None
    n_rows = t.shape[0] if rows is None else rows.size
    n_cols = t.shape[1] if cols is None else cols.size
    x = t.astype(np.float64)
    if not np.isfinite(x).all():
        raise SketchError("the term has non-finite entries (NaN or infinity)")
    x -= x.mean()
    a = sketch_matrix(probe_set_id, term_key, "rows", n_rows, k)
    b = sketch_matrix(probe_set_id, term_key, "cols", n_cols, k)
    if rows is not None:
        a = a[:, rows]
    if cols is not None:
        b = b[:, cols]
    out: np.ndarray = (a @ x) @ b.T / k
    return out


def sketch_cosine(sa: np.ndarray, sb: np.ndarray) -> float:
    """The comparison's score on sketches: the cosine of two sketches of the same term name on the same probe
    set (``<Sa, Sb> / (|Sa| |Sb|)``, not centred again); 0 when either is zero."""
    a, b = np.asarray(sa, dtype=np.float64), np.asarray(sb, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise SketchError(f"sketches to compare must be 2-D of one shape, not {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise SketchError("a sketch has non-finite entries (NaN or infinity)")
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.vdot(a, b) / den) if den > 0 else 0.0


def sketched_values(k: int, terms: int) -> int:
    """The numbers a submission of ``terms`` sketched terms sends (``k^2`` each), to set beside ``m^2`` each."""
    return _check_k(k) ** 2 * int(terms)
