"""The owner's side of the private comparison (issue 16, item 4, a measured prototype): encrypted inner products.

The verifier sends an offer (``protocol._private_wire``): its public CKKS context and, per registered base, base
layer and term name, a ciphertext of that base term's unit-normalised sketch. ``answer_offer`` multiplies each by
the owner's own unit-normalised sketch of the same term name, for every owner layer, sums all slots, packs the
sums of one base and term into one ciphertext, adds a fresh encryption of small Gaussian noise, and returns the
answer. The owner's sketches never leave it in the clear; the base sketches are never decrypted here (the owner
has no secret key).

**What each side learns.**

- *The owner* sees only ciphertexts under the verifier's key (IND-CPA under RLWE at the pinned 128-bit
  parameters), the public context, and the offer's shape: how many bases, their names as the offer gives them,
  the layers of each and ``k``. Not one value of a base's sketch.
- *An honest verifier* decrypts the ``owner layers x base layers x terms`` sketch cosines of each base: exactly
  the scores the comparison needs (``benchmarks.sketches.compare_sketches``), to about 1e-6 (CKKS error, measured
  in docs/results/private_compare.md), and nothing else in any slot: TenSEAL's all-slot sum leaves the whole sum in
  every slot of a tiled vector, and ``pack_vectors`` masks before it packs. (A plain TenSEAL ``dot`` of an
  untiled vector leaves *partial* sums in the other slots, whose differences are the owner's products one by one;
  the prototype does not use it, and tests/verifier/test_private_compare.py reads every slot to show it.)
  The product's ciphertext is a linear function of the verifier's ciphertexts; the fresh public-key encryption
  added at the end re-randomises it, and its noise (``smudge``: standard deviation in cosine units, default 1e-6,
  below the 5e-4 a verdict's rounding allows) smudges the CKKS error that depends on the owner's plaintext. That is a
  heuristic, not proven circuit privacy (statistical smudging would need noise about 2^40 times the error).
- *A malicious verifier* can encrypt chosen vectors instead of real bases: each item is one direction ``u`` of
  its choosing and yields ``<u, s_x>`` for every owner layer ``x`` of that term. ``k^2`` independent directions
  recover the owner's sketch of the term for every layer exactly, which is what the plain sketch mode sends
  anyway; fewer recover its projection on their span (about ``q / k^2`` of the energy for ``q`` directions;
  measured in docs/results/private_compare.md). The owner cannot tell a real base from a chosen vector; what bounds
  the probe is ``OwnerPolicy``: at most ``max_directions`` items per term per offer (default 256: for ``k = 32``
  a quarter of the energy, cosine 0.5), and the owner keeping its own count across sessions (not built here).
- *The verifier about the owner's honesty*: nothing. The owner could return ciphertexts of any numbers; the
  scores are owner-attested, as the terms are today.

Randomness: the noise values come from ``rng`` (a parameter); the encryption randomness is TenSEAL's own, from
the operating system, so answers differ byte-wise run to run by design (semantic security needs it) while the
decrypted scores agree to the CKKS error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol._private_wire import (
    SLOTS,
    Answer,
    AnswerItem,
    PrivateWireError,
    check_context,
    decode_offer,
    encode_answer,
    group_items,
    tiled,
    unit_vector,
)

__all__ = ["DEFAULT_SMUDGE", "OwnerPolicy", "answer_offer"]

DEFAULT_SMUDGE = 1e-6


@dataclass(frozen=True)
class OwnerPolicy:
    """What the owner accepts in one offer: at most ``max_directions`` base layers (encrypted vectors) per term
    name, at most ``max_bases`` bases."""

    max_directions: int = 256
    max_bases: int = 128


def _ts() -> Any:
    try:
        import tenseal
    except ImportError as e:  # the optional extra
        raise PrivateWireError("private comparison needs TenSEAL: pip install 'pawprint[private]'") from e
    return tenseal


def answer_offer(
    offer_bytes: bytes, sketches: Mapping[tuple[int, str], np.ndarray], probe_set_id: str, k: int,
    rng: np.random.Generator, policy: OwnerPolicy = OwnerPolicy(), smudge: float = DEFAULT_SMUDGE,
) -> bytes:
    """The encrypted scores of the owner's ``sketches`` (``(layer, term name) -> k x k`` sketch on
    ``probe_set_id``) against every base of the offer; ``PrivateWireError`` on an offer it will not answer."""
    ts = _ts()
    offer = decode_offer(offer_bytes)
    if offer.probe_set_id != probe_set_id or offer.k != k:
        raise PrivateWireError(f"the offer is for probe set {offer.probe_set_id!r} at k={offer.k}, "
                               f"not {probe_set_id!r} at k={k}")
    if not 0.0 <= smudge <= 1e-3:
        raise PrivateWireError("smudge must be in [0, 1e-3]")
    groups = group_items(offer.items)
    bases = {b for b, _ in groups}
    if len(bases) > policy.max_bases:
        raise PrivateWireError(f"the offer names {len(bases)} bases; at most {policy.max_bases} are answered")
    per_term: dict[str, int] = {}
    for (_, term), items in groups.items():
        per_term[term] = per_term.get(term, 0) + len(items)
    for term, count in per_term.items():
        if count > policy.max_directions:
            raise PrivateWireError(f"the offer sends {count} vectors for term {term!r}; at most "
                                   f"{policy.max_directions} are answered")
    mine: dict[str, dict[int, list[float]]] = {}
    for (layer, term), s in sorted(sketches.items()):
        if np.asarray(s).shape != (k, k):
            raise PrivateWireError(f"the owner's sketch of layer {layer} {term} is not {k} x {k}")
        mine.setdefault(term, {})[layer] = tiled(unit_vector(s))
    try:
        ctx = ts.context_from(offer.context)
    except Exception as e:
        raise PrivateWireError(f"the offer's context does not load: {e}") from None
    check_context(ctx, public=True)
    out = []
    for (base, term), items in sorted(groups.items()):
        if term not in mine:
            raise PrivateWireError(f"the offer asks for term {term!r}, which the owner has no sketch of")
        owner_layers = tuple(sorted(mine[term]))
        if len(items) * len(owner_layers) > SLOTS:
            raise PrivateWireError(f"base {base!r} {term}: more than {SLOTS} scores to pack")
        sums: list[Any] = []
        for item in items:
            try:
                enc = ts.ckks_vector_from(ctx, item.ciphertext)
            except Exception as e:
                raise PrivateWireError(f"base {base!r} {term} layer {item.layer}: not a ciphertext: {e}") from None
            if enc.size() != SLOTS:
                raise PrivateWireError(f"base {base!r} {term} layer {item.layer}: {enc.size()} slots, not {SLOTS}")
            sums.extend(enc.dot(mine[term][x]) for x in owner_layers)
        packed = ts.CKKSVector.pack_vectors(sums)
        noise = rng.standard_normal(len(sums)) * (smudge * (SLOTS // (k * k)))  # in cosine units once decoded
        packed = packed + ts.ckks_vector(ctx, noise.tolist())  # fresh randomness: re-randomises the product
        out.append(AnswerItem(base, term, tuple(i.layer for i in items), owner_layers, packed.serialize()))
    return encode_answer(Answer(probe_set_id, k, tuple(out)))
