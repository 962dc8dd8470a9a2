"""Private comparison (issue 16, item 4, a measured prototype): the CKKS parameters and the two messages.

The verifier holds a CKKS secret key (``verifier._private``). It sends an **offer**: its public context (public
key and Galois keys, never the secret key) and one ciphertext per registered base, base layer and term name,
holding that base term's unit-normalised sketch (``protocol._sketch``), flattened and tiled to fill every slot.
The owner (``owner._private``) multiplies each by its own unit-normalised sketch of the same term name (tiled the
same way, in plaintext), sums every slot (TenSEAL's ``dot``: after the rotations every slot holds the whole sum,
so no partial sum is left in any slot), packs the ``owner layers x base layers`` sums of one base and term into
one ciphertext, adds a fresh public-key encryption of small Gaussian noise, and returns that **answer**. The
verifier decrypts exactly the sketch cosines the comparison scores (``benchmarks.sketches.compare_sketches``)
and nothing else. What each side learns is stated in ``owner._private`` and docs/results/private_compare.md.

**Parameters (128-bit security).** Polynomial modulus degree ``N = 8192`` (4096 slots), coefficient moduli of
60, 40, 40 and 60 bits (200 bits in all, the last one the special prime of key switching), scale ``2^40``. The
Homomorphic Encryption Security Standard (Albrecht et al., 2018, table 1, ternary and Gaussian secrets) gives
at most 218 bits of ``log q`` for 128-bit classical security at ``N = 8192``; SEAL's own default check
(``sec_level_type::tc128``, ``CoeffModulus::MaxBitCount(8192) = 218``) accepts the context. Two rescalings are
needed (the plaintext product, then the mask of ``pack_vectors``), hence the two 40-bit primes; the 60-bit first
prime leaves about 20 bits of integer part and precision for scores in [-1, 1]. Both sides pin these values:
an offer with other parameters is refused (``check_context``), so neither side can be led to weaker ones.

Every size read is bounded before anything is parsed (``MAX_*``); ciphertexts travel as TenSEAL's own
``serialize()`` bytes inside a msgpack map. Nothing here is signed: wiring it into the gRPC protocol (signed
messages, the round trips) is described in docs/results/private_compare.md and is not done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "COEFF_MOD_BIT_SIZES", "HE_STANDARD_128_MAX_LOG_Q", "MAX_ANSWER_BYTES", "MAX_CIPHERTEXT_BYTES",
    "MAX_CONTEXT_BYTES", "MAX_ITEMS", "MAX_OFFER_BYTES", "POLY_MODULUS_DEGREE", "SCALE_BITS", "SLOTS", "Answer",
    "AnswerItem", "Offer", "OfferItem", "PrivateWireError", "check_context", "decode_answer", "decode_offer",
    "encode_answer", "encode_offer", "group_items", "tiled", "unit_vector",
]

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
SCALE_BITS = 40
SLOTS = POLY_MODULUS_DEGREE // 2
# HE Security Standard (2018), table 1: the largest log2(q) for 128-bit classical security, by N.
HE_STANDARD_128_MAX_LOG_Q = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

MAX_CONTEXT_BYTES = 48 << 20  # the public context with Galois keys is about 34 MB at N = 8192
MAX_CIPHERTEXT_BYTES = 512 << 10  # a fresh ciphertext at N = 8192 with three data primes is about 330 KB
MAX_ITEMS = 4096  # ciphertexts in one message
_ITEM_OVERHEAD = 64 << 10  # names and layer lists of one item
MAX_OFFER_BYTES = MAX_CONTEXT_BYTES + MAX_ITEMS * (MAX_CIPHERTEXT_BYTES + _ITEM_OVERHEAD)
MAX_ANSWER_BYTES = MAX_ITEMS * (MAX_CIPHERTEXT_BYTES + _ITEM_OVERHEAD)
_MAX_NAME = 256
_VERSION = 1


class PrivateWireError(ValueError):
    """An offer or answer that is malformed, too large, or made with other parameters."""


def unit_vector(sketch: np.ndarray) -> np.ndarray:
    """A sketch flattened (row-major) and scaled to unit norm: inner products of these are sketch cosines."""
    s = np.asarray(sketch, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 2:
        raise PrivateWireError(f"a sketch must be a square k x k array (k >= 2), not shape {s.shape}")
    if not np.isfinite(s).all():
        raise PrivateWireError("a sketch has non-finite entries")
    v = s.ravel()
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise PrivateWireError("a zero sketch has no direction")
    out: np.ndarray = v / norm
    return out


def tiled(vector: np.ndarray) -> list[float]:
    """``vector`` repeated to fill the ``SLOTS`` slots (its length must divide ``SLOTS``): after the plaintext
    product and TenSEAL's all-slot sum every slot holds ``SLOTS / len`` times the inner product."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    if v.size == 0 or v.size > SLOTS or SLOTS % v.size:
        raise PrivateWireError(f"a sketch of {v.size} values does not tile {SLOTS} slots (k must be a power of 2 "
                               f"up to {int(SLOTS ** 0.5)})")
    out: list[float] = np.tile(v, SLOTS // v.size).tolist()
    return out


def check_context(ctx: Any, *, public: bool) -> None:
    """Raise ``PrivateWireError`` unless ``ctx`` (a ``tenseal.Context``) is CKKS with exactly the pinned
    parameters, Galois keys and (``public``) no secret key."""
    try:
        seal = ctx.seal_context().data
        parms = seal.key_context_data().parms()
        degree = int(parms.poly_modulus_degree())
        total = int(seal.key_context_data().total_coeff_modulus_bit_count())
        levels = int(seal.first_context_data().chain_index())
        ok = bool(seal.parameters_set())
        scale = float(ctx.global_scale)
    except Exception as e:  # a context of another scheme or a broken one
        raise PrivateWireError(f"not a usable CKKS context: {e}") from None
    if not ok or degree != POLY_MODULUS_DEGREE or total != sum(COEFF_MOD_BIT_SIZES) or levels != 2:
        raise PrivateWireError(f"CKKS parameters other than the pinned ones (N={degree}, log q={total}, "
                               f"levels={levels}; want N={POLY_MODULUS_DEGREE}, moduli {COEFF_MOD_BIT_SIZES})")
    if total > HE_STANDARD_128_MAX_LOG_Q[degree]:
        raise PrivateWireError(f"log q = {total} exceeds the 128-bit bound {HE_STANDARD_128_MAX_LOG_Q[degree]}")
    if scale != 2.0**SCALE_BITS:
        raise PrivateWireError(f"the context's scale is {scale}, not 2^{SCALE_BITS}")
    if not ctx.has_galois_keys() or not ctx.has_public_key():
        raise PrivateWireError("the context lacks its public key or Galois keys")
    if public and ctx.has_secret_key():
        raise PrivateWireError("the context carries a secret key")


@dataclass(frozen=True)
class OfferItem:
    """One base term's encrypted sketch: ``base`` (the registry's name for it), the term name, the base layer."""

    base: str
    term: str
    layer: int
    ciphertext: bytes


@dataclass(frozen=True)
class Offer:
    probe_set_id: str
    k: int
    context: bytes
    items: tuple[OfferItem, ...]


@dataclass(frozen=True)
class AnswerItem:
    """The packed scores of one base and term: slot ``j * len(owner_layers) + i`` holds ``SLOTS / k^2`` times
    the cosine of owner layer ``owner_layers[i]`` with base layer ``base_layers[j]``."""

    base: str
    term: str
    base_layers: tuple[int, ...]
    owner_layers: tuple[int, ...]
    ciphertext: bytes


@dataclass(frozen=True)
class Answer:
    probe_set_id: str
    k: int
    items: tuple[AnswerItem, ...]


def _name(x: object, what: str) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= _MAX_NAME:
        raise PrivateWireError(f"{what} must be a string of 1 to {_MAX_NAME} characters")
    return x


def _int(x: object, what: str, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise PrivateWireError(f"{what} must be an integer in [{lo}, {hi}]")
    return x


def _ct(x: object) -> bytes:
    if not isinstance(x, bytes) or not 0 < len(x) <= MAX_CIPHERTEXT_BYTES:
        raise PrivateWireError(f"a ciphertext must be 1 to {MAX_CIPHERTEXT_BYTES} bytes")
    return x


def _layers(x: object, what: str) -> tuple[int, ...]:
    if not isinstance(x, list) or not 0 < len(x) <= SLOTS:
        raise PrivateWireError(f"{what} must be a non-empty list")
    out = tuple(_int(v, what, 0, 1 << 20) for v in x)
    if len(set(out)) != len(out):
        raise PrivateWireError(f"{what} repeat a layer")
    return out


def _unpack(data: bytes, limit: int, what: str) -> dict[str, Any]:
    if not isinstance(data, bytes) or len(data) > limit:
        raise PrivateWireError(f"{what} must be at most {limit} bytes")
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_CONTEXT_BYTES,
                            max_str_len=_MAX_NAME, max_array_len=MAX_ITEMS, max_map_len=16)
    except Exception as e:
        raise PrivateWireError(f"{what} is not valid msgpack: {e}") from None
    if not isinstance(m, dict) or m.get("v") != _VERSION:
        raise PrivateWireError(f"{what} is not a version-{_VERSION} map")
    return m


def _header(m: Mapping[str, Any], keys: set[str], what: str) -> tuple[str, int]:
    if set(m) != keys:
        raise PrivateWireError(f"{what} has fields {sorted(m)}, not {sorted(keys)}")
    return _name(m["probe_set_id"], "probe_set_id"), _int(m["k"], "k", 2, int(SLOTS**0.5))


def encode_offer(offer: Offer) -> bytes:
    out: bytes = msgpack.packb({
        "v": _VERSION, "probe_set_id": offer.probe_set_id, "k": offer.k, "context": offer.context,
        "items": [[i.base, i.term, i.layer, i.ciphertext] for i in offer.items]}, use_bin_type=True)
    return out


def decode_offer(data: bytes) -> Offer:
    """An offer from its bytes, every field and size checked (the ciphertexts themselves are parsed by the
    owner against the context)."""
    m = _unpack(data, MAX_OFFER_BYTES, "an offer")
    probe_set_id, k = _header(m, {"v", "probe_set_id", "k", "context", "items"}, "an offer")
    ctx = m["context"]
    if not isinstance(ctx, bytes) or not 0 < len(ctx) <= MAX_CONTEXT_BYTES:
        raise PrivateWireError(f"the context must be 1 to {MAX_CONTEXT_BYTES} bytes")
    items = m["items"]
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise PrivateWireError(f"an offer carries 1 to {MAX_ITEMS} items")
    out = []
    for it in items:
        if not isinstance(it, list) or len(it) != 4:
            raise PrivateWireError("an offer item is [base, term, layer, ciphertext]")
        out.append(OfferItem(_name(it[0], "base"), _name(it[1], "term"), _int(it[2], "layer", 0, 1 << 20),
                             _ct(it[3])))
    if len({(i.base, i.term, i.layer) for i in out}) != len(out):
        raise PrivateWireError("an offer repeats a (base, term, layer)")
    return Offer(probe_set_id, k, ctx, tuple(out))


def encode_answer(answer: Answer) -> bytes:
    out: bytes = msgpack.packb({
        "v": _VERSION, "probe_set_id": answer.probe_set_id, "k": answer.k,
        "items": [[i.base, i.term, list(i.base_layers), list(i.owner_layers), i.ciphertext] for i in answer.items]},
        use_bin_type=True)
    return out


def decode_answer(data: bytes) -> Answer:
    m = _unpack(data, MAX_ANSWER_BYTES, "an answer")
    probe_set_id, k = _header(m, {"v", "probe_set_id", "k", "items"}, "an answer")
    items = m["items"]
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise PrivateWireError(f"an answer carries 1 to {MAX_ITEMS} items")
    out = []
    for it in items:
        if not isinstance(it, list) or len(it) != 5:
            raise PrivateWireError("an answer item is [base, term, base_layers, owner_layers, ciphertext]")
        bl, ol = _layers(it[2], "base_layers"), _layers(it[3], "owner_layers")
        if len(bl) * len(ol) > SLOTS:
            raise PrivateWireError(f"an answer item packs more than {SLOTS} scores")
        out.append(AnswerItem(_name(it[0], "base"), _name(it[1], "term"), bl, ol, _ct(it[4])))
    return Answer(probe_set_id, k, tuple(out))


def group_items(items: Sequence[OfferItem]) -> dict[tuple[str, str], list[OfferItem]]:
    """Offer items by ``(base, term)``, each list in layer order."""
    groups: dict[tuple[str, str], list[OfferItem]] = {}
    for i in items:
        groups.setdefault((i.base, i.term), []).append(i)
    return {key: sorted(v, key=lambda i: i.layer) for key, v in groups.items()}
