"""Private comparison under CKKS (issue 16 item 4 prototype: verifier._private, owner._private,
protocol._private_wire): the decrypted scores are the plaintext sketch cosines, the verdicts from them are the
plaintext verdicts, no slot of an answer holds more than the scores, and bad offers and answers are refused.

Tolerance: the decrypted cosines differ from the plaintext ones by the CKKS error at N = 8192, scale 2^40 (about
1e-6 here) plus the owner's smudging noise (standard deviation 1e-6): well under 2e-5, itself 25 times below the
5e-4 that the verdict's three-place rounding allows.
"""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts  # the private extra, installed by '.[dev]'
import tenseal.sealapi as sealapi

from benchmarks.sketches import compare_sketches, sketch_set
from owner._private import OwnerPolicy, answer_offer
from protocol import TERMS, ProbeSpec
from protocol._private_wire import (
    MAX_CIPHERTEXT_BYTES,
    SLOTS,
    Offer,
    OfferItem,
    PrivateWireError,
    decode_answer,
    decode_offer,
    encode_answer,
    encode_offer,
)
from protocol._sketch import sketch_cosine
from protocol.terms import InvariantSet
from verifier._calibration import assess, base_verdict, fit_null
from verifier._compare import verdict_score
from verifier._private import PrivateVerifier, matched_scores

N, WIDTH, K = 160, 24, 16
TOL = 2e-5
PROBES = ProbeSpec("private-test", 1, "test", tuple(f"t{i}" for i in range(N)))


def _weights(rng: np.random.Generator, layers: int) -> list[dict[str, np.ndarray]]:
    return [{t: rng.standard_normal((WIDTH, WIDTH)) for t in TERMS} for _ in range(layers)]


def _inv(rows: np.ndarray, weights: list[dict[str, np.ndarray]]) -> InvariantSet:
    layers = tuple(range(len(weights)))
    terms = {(layer, t): (rows @ w[t] @ rows.T).astype(np.float32) for layer, w in zip(layers, weights, strict=True)
             for t in TERMS}
    return InvariantSet.create(method="pawprint", method_id="test", probes=PROBES, present=(True,) * N,
                               layers=layers, model={"d_model": WIDTH}, terms=terms)


@pytest.fixture(scope="module")
def world() -> dict[str, InvariantSet]:
    """A base with two fine-tunes (40 % and 70 % of each weight's norm added) and eight independent models."""
    rng = np.random.default_rng(16)
    rows = rng.standard_normal((N, WIDTH))
    base = _weights(rng, 3)
    models = {"base": _inv(rows, base)}
    for name, amount in (("tune40", 0.4), ("tune70", 0.7)):
        models[name] = _inv(rows, [{t: w[t] + amount * rng.standard_normal((WIDTH, WIDTH)) for t in TERMS}
                                   for w in base])
    for i in range(8):
        models[f"ind{i}"] = _inv(rows, _weights(rng, 3))
    return models


@pytest.fixture(scope="module")
def verifier() -> PrivateVerifier:
    return PrivateVerifier()


def _answer(v: PrivateVerifier, offer: bytes, suspect: InvariantSet, seed: int = 0) -> dict[str, dict]:
    return v.scores(answer_offer(offer, sketch_set(suspect, K), PROBES.id, K, np.random.default_rng(seed)))


def test_decrypted_scores_equal_the_plaintext_sketch_cosines(world, verifier) -> None:
    bases = [("base", sketch_set(world["base"], K)), ("ind0", sketch_set(world["ind0"], K))]
    offer = verifier.offer(PROBES.id, K, bases)
    mine = sketch_set(world["tune40"], K)
    got = verifier.scores(answer_offer(offer, mine, PROBES.id, K, np.random.default_rng(1)))
    assert sorted(got) == ["base", "ind0"]
    errors = []
    for name, sk in bases:
        assert sorted(got[name]) == sorted((x, y, t) for x in range(3) for y in range(3) for t in TERMS)
        errors += [abs(c - sketch_cosine(mine[(x, t)], sk[(y, t)])) for (x, y, t), c in got[name].items()]
    assert max(errors) < TOL
    assert min(got["base"][(x, x, t)] for x in range(3) for t in TERMS) > 0.5  # a real signal, not noise
    assert max(abs(c) for c in got["ind0"].values()) < 0.5


def test_verdicts_from_decrypted_scores_equal_the_plaintext_verdicts(world, verifier) -> None:
    sk = {name: sketch_set(inv, K) for name, inv in world.items()}
    layers = world["base"].layers
    independent = [f"ind{i}" for i in range(6)]
    null_pairs = [compare_sketches(sk[a], sk[b], layers, layers)[0]
                  for i, a in enumerate(independent) for b in independent[i + 1:]]
    null = fit_null(null_pairs, "test", "test", "test_private_compare")
    offer = verifier.offer(PROBES.id, K, [("base", sk["base"]), ("ind7", sk["ind7"])])  # encrypted once

    def verdict(scores: list[tuple[str, float]]) -> tuple[str, float]:
        ev = assess([(t, float(verdict_score(c))) for t, c in scores], null)
        return base_verdict(ev.p_value, 2), ev.z

    seen = []
    for seed, suspect in enumerate(("tune40", "tune70", "ind6")):
        private = _answer(verifier, offer, world[suspect], seed)
        for base in ("base", "ind7"):
            plain_scores, plain_pairs = compare_sketches(sk[suspect], sk[base], layers, layers)
            priv_scores, priv_pairs = matched_scores(private[base], layers, layers)
            assert priv_pairs == plain_pairs
            (v_plain, z_plain), (v_priv, z_priv) = verdict(plain_scores), verdict(priv_scores)
            assert v_priv == v_plain, (suspect, base)
            assert abs(z_priv - z_plain) < 0.05
            seen.append((suspect, base, v_plain))
    verdicts = {(s, b): v for s, b, v in seen}
    assert verdicts[("tune40", "base")] == verdicts[("tune70", "base")] == "derived"
    assert all(v != "derived" for (s, b), v in verdicts.items() if not (b == "base" and s.startswith("tune")))


def _raw_slots(v: PrivateVerifier, vec: object) -> np.ndarray:
    ctx = v._ctx
    plain = sealapi.Plaintext()
    sealapi.Decryptor(ctx.seal_context().data, ctx.secret_key().data).decrypt(vec.ciphertext()[0], plain)
    return np.asarray(sealapi.CKKSEncoder(ctx.seal_context().data).decode_double(plain))


def test_no_slot_of_an_answer_holds_more_than_the_scores(world, verifier) -> None:
    offer = verifier.offer(PROBES.id, K, [("base", sketch_set(world["base"], K))])
    answer = decode_answer(answer_offer(offer, sketch_set(world["tune40"], K), PROBES.id, K,
                                        np.random.default_rng(2)))
    reps = SLOTS // (K * K)
    for item in answer.items:
        vec = ts.ckks_vector_from(verifier._ctx, item.ciphertext)
        scores = np.asarray(vec.decrypt()) / reps
        raw = _raw_slots(verifier, vec) / reps
        assert raw.size == SLOTS
        # every slot, not only the ones decrypt() returns, is one of the scores (pack_vectors repeats them)
        assert np.abs(raw[:, None] - scores[None, :]).min(axis=1).max() < TOL

    # why the vectors are tiled: TenSEAL's dot of an untiled vector leaves partial sums in the other slots, and
    # their differences are the owner's products one by one
    u = np.random.default_rng(3).standard_normal(K * K)
    s = np.random.default_rng(4).standard_normal(K * K)
    naive = ts.ckks_vector(verifier._ctx, u.tolist()).dot(s.tolist())
    raw = _raw_slots(verifier, naive)
    products = raw[: K * K - 1] - raw[1: K * K]
    assert np.abs(products / u[: K * K - 1] - s[: K * K - 1]).max() < 1e-3


def test_the_owner_sees_a_public_context_only(verifier) -> None:
    ctx = ts.context_from(verifier.public_context)
    assert ctx.is_public() and not ctx.has_secret_key()
    enc = ts.ckks_vector(ctx, [0.5] * 4)  # it can encrypt (the smudging noise) but not decrypt
    with pytest.raises(ValueError):
        enc.decrypt()


def test_offers_and_answers_that_are_refused(world, verifier) -> None:
    sk = sketch_set(world["base"], K)
    mine = sketch_set(world["tune40"], K)
    rng = np.random.default_rng(0)
    offer = verifier.offer(PROBES.id, K, [("base", sk)])
    with pytest.raises(PrivateWireError, match="probe set"):
        answer_offer(offer, mine, "another-probe-set", K, rng)
    with pytest.raises(PrivateWireError, match="at most 2 are answered"):
        answer_offer(offer, mine, PROBES.id, K, rng, OwnerPolicy(max_directions=2))
    with pytest.raises(PrivateWireError, match="at most 0 are answered"):
        answer_offer(offer, mine, PROBES.id, K, rng, OwnerPolicy(max_bases=0))
    parsed = decode_offer(offer)
    # a context that carries the secret key, and one with other parameters, are refused before any computation
    private_ctx = verifier._ctx.serialize(save_secret_key=True)
    with pytest.raises(PrivateWireError, match="secret key"):
        answer_offer(encode_offer(Offer(parsed.probe_set_id, K, private_ctx, parsed.items)), mine, PROBES.id, K, rng)
    weak = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40])
    weak.global_scale = 2.0**20
    weak.generate_galois_keys()
    with pytest.raises(PrivateWireError, match="pinned"):
        answer_offer(encode_offer(Offer(parsed.probe_set_id, K, weak.serialize(), parsed.items)), mine,
                     PROBES.id, K, rng)
    # sizes and shapes are checked while parsing
    with pytest.raises(PrivateWireError, match="ciphertext must be"):
        decode_offer(encode_offer(Offer(PROBES.id, K, b"c",
                                        (OfferItem("b", "ffn", 0, b"x" * (MAX_CIPHERTEXT_BYTES + 1)),))))
    with pytest.raises(PrivateWireError, match=r"not valid msgpack|version"):
        decode_offer(b"\xc1garbage")
    bad = encode_offer(Offer(PROBES.id, K, parsed.context, (OfferItem("b", "ffn", 0, b"not a ciphertext"),)))
    with pytest.raises(PrivateWireError, match="not a ciphertext"):
        answer_offer(bad, mine, PROBES.id, K, rng)
    # an answer that drops a term, or carries another owner's ciphertexts, is refused by the verifier
    answer = decode_answer(answer_offer(offer, mine, PROBES.id, K, rng))
    with pytest.raises(PrivateWireError, match="cover exactly"):
        verifier.scores(encode_answer(type(answer)(answer.probe_set_id, K, answer.items[1:])))
    other = PrivateVerifier()
    foreign = decode_answer(answer_offer(other.offer(PROBES.id, K, [("base", sk)]), mine, PROBES.id, K, rng))
    with pytest.raises(PrivateWireError, match="out of range"):
        verifier.scores(encode_answer(foreign))


def test_tiny_models_private_verdicts_equal_the_plain_ones(tiny_model, tmp_path, verifier) -> None:
    """Real tiny LLaMA models (session fixtures): a 5 % perturbation of the base and another seed, their real
    invariant terms sketched at k = 16; the verdict is drawn with the shipped null from both score sets (the
    mapping under test is decryption, not the null's fit to sketches)."""
    from owner import compute_invariants
    from tests.verifier.fixtures import perturb
    from verifier._calibration import load_null

    base_path = tiny_model("llama", seed=0)
    base = compute_invariants(base_path, layers="all")
    suspects = {"derived": compute_invariants(perturb(base_path, tmp_path / "derived"), base.probes, "all"),
                "independent": compute_invariants(tiny_model("llama", seed=1), base.probes, "all")}
    null = load_null()
    base_sk = sketch_set(base, K)
    offer = verifier.offer(base.probes.id, K, [("llama-base", base_sk)])
    verdicts = {}
    for seed, (name, inv) in enumerate(suspects.items()):
        mine = sketch_set(inv, K)
        got = verifier.scores(answer_offer(offer, mine, base.probes.id, K, np.random.default_rng(seed)))["llama-base"]
        assert max(abs(c - sketch_cosine(mine[(x, t)], base_sk[(y, t)])) for (x, y, t), c in got.items()) < TOL
        plain_scores, plain_pairs = compare_sketches(mine, base_sk, inv.layers, base.layers)
        priv_scores, priv_pairs = matched_scores(got, inv.layers, base.layers)
        assert priv_pairs == plain_pairs
        m = sum(a and b for a, b in zip(inv.present, base.present, strict=True))
        p_plain = assess([(t, float(verdict_score(c))) for t, c in plain_scores], null, m).p_value
        p_priv = assess([(t, float(verdict_score(c))) for t, c in priv_scores], null, m).p_value
        verdicts[name] = (base_verdict(p_plain, 1), base_verdict(p_priv, 1))
    assert verdicts["derived"] == ("derived", "derived")
    assert verdicts["independent"][0] == verdicts["independent"][1] != "derived"
