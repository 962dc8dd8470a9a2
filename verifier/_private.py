"""The verifier's side of the private comparison (issue 16, item 4, a measured prototype): keys, encrypted bases,
decrypted scores. No torch; stands on ``protocol`` alone.

``PrivateVerifier`` holds a CKKS secret key (parameters pinned in ``protocol._private_wire``: N = 8192, moduli
60/40/40/60 bits, scale 2^40, 128-bit security by the HE standard). ``offer`` encrypts each registered base's
unit-normalised term sketches (one ciphertext per base, base layer and term name; a registry would encrypt each
base once per key and keep the ciphertexts) beside the public context (public and Galois keys, never the secret
key); the owner answers with one ciphertext per base and term (``owner._private.answer_offer``); ``scores``
decrypts them into the sketch cosines ``(owner layer, base layer, term) -> cosine`` that the comparison scores
(``matched_scores``: the verifier's own order-preserving layer matching, as ``benchmarks.sketches``).

What each side learns, and what a malicious verifier could probe, is stated in ``owner._private``. In short: the
verifier learns the scores and never the owner's sketches (unless it sends chosen vectors instead of bases, one
direction per vector, bounded by the owner's policy); the owner learns the shape of the offer and nothing of the
bases; the scores are owner-attested. Not wired into the gRPC protocol (docs/results/private_compare.md says what
that would take).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from protocol import TERMS
from protocol._private_wire import (
    COEFF_MOD_BIT_SIZES,
    POLY_MODULUS_DEGREE,
    SCALE_BITS,
    SLOTS,
    Offer,
    OfferItem,
    PrivateWireError,
    check_context,
    decode_answer,
    encode_offer,
    tiled,
    unit_vector,
)
from verifier._ics import _match, _similarity

__all__ = ["PrivateVerifier", "matched_scores"]

Sketches = Mapping[tuple[int, str], np.ndarray]
Cosines = dict[tuple[int, int, str], float]
_SLACK = 1e-3  # CKKS error and the owner's smudging are about 1e-6


def _ts() -> Any:
    try:
        import tenseal
    except ImportError as e:  # the optional extra
        raise PrivateWireError("private comparison needs TenSEAL: pip install 'pawprint[private]'") from e
    return tenseal


class PrivateVerifier:
    """A CKKS key pair for one session of private comparisons (a fresh key per session: the key is what a
    registry's encrypted bases are bound to)."""

    def __init__(self) -> None:
        ts = _ts()
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, POLY_MODULUS_DEGREE, coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES))
        ctx.global_scale = 2.0**SCALE_BITS
        ctx.generate_galois_keys()
        check_context(ctx, public=False)
        self._ctx = ctx
        public = ctx.copy()
        public.make_context_public()
        self._public: bytes = public.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=True,
                                               save_relin_keys=False)
        self._offered: dict[tuple[str, str], tuple[int, ...]] = {}
        self._k = 0
        self._probe_set_id = ""

    @property
    def public_context(self) -> bytes:
        """The context the owner computes with: public key and Galois keys, no secret key."""
        return self._public

    def encrypt_base(self, name: str, sketches: Sketches) -> list[OfferItem]:
        """One ciphertext per ``(layer, term)`` of a base's sketches, each unit-normalised and tiled to every
        slot (a registry would make these once per key and keep them)."""
        ts = _ts()
        return [OfferItem(name, term, layer, ts.ckks_vector(self._ctx, tiled(unit_vector(s))).serialize())
                for (layer, term), s in sorted(sketches.items())]

    def offer(self, probe_set_id: str, k: int, bases: Sequence[tuple[str, Sketches]]) -> bytes:
        """The offer of ``bases`` (name, sketches at size ``k`` on ``probe_set_id``) for one owner."""
        items = [i for name, sk in bases for i in self.encrypt_base(name, sk)]
        return self.offer_items(probe_set_id, k, items)

    def offer_items(self, probe_set_id: str, k: int, items: Sequence[OfferItem]) -> bytes:
        """The offer of already encrypted items (``encrypt_base``'s, kept by a registry)."""
        for i in items:
            if i.term not in TERMS:
                raise PrivateWireError(f"base {i.base!r}: unknown term {i.term!r} at layer {i.layer}")
        self._k, self._probe_set_id = k, probe_set_id
        offered: dict[tuple[str, str], list[int]] = {}
        for i in items:
            offered.setdefault((i.base, i.term), []).append(i.layer)
        self._offered = {key: tuple(sorted(v)) for key, v in offered.items()}
        return encode_offer(Offer(probe_set_id, k, self._public, tuple(items)))

    def scores(self, answer_bytes: bytes) -> dict[str, Cosines]:
        """The decrypted sketch cosines by base: ``(owner layer, base layer, term) -> cosine``. The answer must
        cover exactly the offer's bases, terms and base layers."""
        ts = _ts()
        answer = decode_answer(answer_bytes)
        if answer.probe_set_id != self._probe_set_id or answer.k != self._k:
            raise PrivateWireError("the answer is for another probe set or k than the offer")
        got = {(i.base, i.term): i.base_layers for i in answer.items}
        if len(got) != len(answer.items) or got != self._offered:
            raise PrivateWireError("the answer does not cover exactly the offered bases, terms and layers")
        reps = SLOTS // (self._k * self._k)
        out: dict[str, Cosines] = {}
        for item in answer.items:
            try:
                enc = ts.ckks_vector_from(self._ctx, item.ciphertext)
                values = np.asarray(enc.decrypt(), dtype=np.float64) / reps
            except Exception as e:
                raise PrivateWireError(f"base {item.base!r} {item.term}: not a ciphertext under this key: {e}") \
                    from None
            if not np.all(np.abs(values) <= 1.0 + _SLACK):  # unit vectors: a wrong key decrypts to noise ~ 2^20
                raise PrivateWireError(f"base {item.base!r} {item.term}: decrypted scores out of range [-1, 1] "
                                       "(not a ciphertext under this key)")
            n = len(item.owner_layers)
            if values.size != len(item.base_layers) * n:
                raise PrivateWireError(f"base {item.base!r} {item.term}: {values.size} scores, not "
                                       f"{len(item.base_layers) * n}")
            cos = out.setdefault(item.base, {})
            for j, y in enumerate(item.base_layers):
                for i, x in enumerate(item.owner_layers):
                    cos[(x, y, item.term)] = float(values[j * n + i])
        return out


def matched_scores(cos: Mapping[tuple[int, int, str], float], owner_layers: Sequence[int],
                   base_layers: Sequence[int]) -> tuple[list[tuple[str, float]], list[tuple[int, int]]]:
    """The comparison's ``(term, cosine)`` scores over the order-preserving layer matching (``verifier._ics``'s
    own), in ``compare``'s order, and the matched ``(owner layer, base layer)`` pairs."""
    la, lb = list(owner_layers), list(base_layers)
    missing = [(x, y, t) for x in la for y in lb for t in TERMS if (x, y, t) not in cos]
    if missing:
        raise PrivateWireError(f"no score for {missing[0]}")
    pairs = _match(la, lb, _similarity(dict(cos), la, lb))
    return [(t, float(cos[(x, y, t)])) for x, y in pairs for t in TERMS], pairs
