"""The encoders: shape, determinism, similarity kept, Gaussian outputs, the shipped weights, bad input."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.encoder_cnn import CnnEncoder, load_cnn_encoder
from protocol import TERMS, ProbeSpec
from protocol.terms import InvariantSet
from verifier import standardise
from verifier._encoder import (
    CNN_WEIGHTS,
    DEFAULT_ENCODER,
    ENCODER_DIM,
    Encoder,
    EncoderInputError,
    RandomProjectionEncoder,
    TermSketch,
    _weights_path,
    load_encoder,
    perturb_model,
    synthetic_model,
    synthetic_sketch,
    synthetic_terms,
    vector_digest,
)

N = 160


def make_inv(
    terms: Sequence[np.ndarray], present: Sequence[bool] | np.ndarray, layers: tuple[int, ...] = (2, 3)
) -> InvariantSet:
    probes = ProbeSpec("test", 1, "test", tuple(f"t{i}" for i in range(len(present))))
    keys = [(layer, name) for layer in layers for name in TERMS]
    return InvariantSet.create(method="pawprint", method_id="test", probes=probes,
                               present=tuple(bool(p) for p in present), layers=layers, model={},
                               terms=dict(zip(keys, terms, strict=False)))


def exact_cos(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    cs = []
    for x, y in zip(a, b, strict=True):
        zx, zy = standardise(x).ravel(), standardise(y).ravel()
        cs.append(float(zx @ zy / np.linalg.norm(zx) / np.linalg.norm(zy)))
    return float(np.mean(cs))


def batch_encode(enc: Encoder, u: np.ndarray) -> np.ndarray:
    """Many unit sketches at once through the encoder's batched path (one projection draw, one forward)."""
    assert isinstance(enc, RandomProjectionEncoder | CnnEncoder)
    return enc.project(u) if isinstance(enc, RandomProjectionEncoder) else enc.forward(u)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def encoders() -> dict[str, Encoder]:
    return {"random-v1": load_encoder("random-v1"), "cnn-v1": load_cnn_encoder()}


@pytest.fixture(scope="module")
def family() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    base = synthetic_model(rng, N, 32)
    return {
        "base": synthetic_terms(base),
        "near": synthetic_terms(perturb_model(base, rng, 0.15)),
        "far": synthetic_terms(perturb_model(base, rng, 0.6)),
        "other": synthetic_terms(synthetic_model(rng, N, 32)),
    }


ALL = np.ones(N, dtype=bool)


@pytest.mark.parametrize("name", ["random-v1", "cnn-v1"])
def test_shape_dtype_and_determinism(
    name: str, encoders: dict[str, Encoder], family: dict[str, list[np.ndarray]]
) -> None:
    enc = encoders[name]
    y1 = enc.encode_terms(family["base"], ALL)
    y2 = enc.encode_terms([t.copy() for t in family["base"]], ALL)
    assert y1.shape == (ENCODER_DIM,) and y1.dtype == np.float32
    assert y1.tobytes() == y2.tobytes()
    assert vector_digest(y1) == vector_digest(y2) == hashlib.sha256(y1.astype("<f4").tobytes()).digest()
    # Through an InvariantSet: same as the terms directly; float32 terms (as computed) are accepted.
    inv = make_inv([t.astype(np.float32) for t in family["base"]], ALL)
    y3 = enc.encode(inv)
    assert np.allclose(y3, y1, atol=1e-4)
    assert y3.tobytes() == enc.encode(inv).tobytes()


def test_cnn_does_not_depend_on_thread_count(encoders: dict[str, Encoder], family: dict[str, list[np.ndarray]]) -> None:
    enc = encoders["cnn-v1"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = enc.encode_terms(family["far"], ALL)
        torch.set_num_threads(2)
        b = enc.encode_terms(family["far"], ALL)
    finally:
        torch.set_num_threads(before)
    assert vector_digest(a) == vector_digest(b)


@pytest.mark.parametrize("name", ["random-v1", "cnn-v1"])
def test_related_terms_score_higher_than_unrelated(
    name: str, encoders: dict[str, Encoder], family: dict[str, list[np.ndarray]]
) -> None:
    enc = encoders[name]
    keys = list(family)
    y = batch_encode(enc, np.stack([TermSketch().reduce(family[k], ALL) for k in keys]))
    v = dict(zip(keys, y, strict=True))
    assert np.allclose(v["base"], enc.encode_terms(family["base"], ALL), atol=1e-5)  # the batch path is the same
    near, far, other = cos(v["base"], v["near"]), cos(v["base"], v["far"]), cos(v["base"], v["other"])
    assert near > far > other
    assert abs(other) < 0.2
    # The encoded cosine follows the terms' own cosine.
    for key, c in (("near", near), ("far", far), ("other", other)):
        assert abs(c - exact_cos(family["base"], family[key])) < 0.15, key
    # Odd: negated terms give the negated vector.
    neg = batch_encode(enc, -TermSketch().reduce(family["base"], ALL)[None])[0]
    assert np.allclose(neg, -v["base"], atol=1e-5)


def test_sketch_keeps_cosine_and_matches_the_factor_form(family: dict[str, list[np.ndarray]]) -> None:
    sk = TermSketch()
    u = {k: sk.reduce(t, ALL) for k, t in family.items()}
    for key in ("near", "far", "other"):
        sketched = float((u["base"] * u[key]).sum() / u["base"].shape[0])
        assert abs(sketched - exact_cos(family["base"], family[key])) < 0.08, key
    m = synthetic_model(np.random.default_rng(3), 96, 16)
    assert np.allclose(synthetic_sketch(m, sk), sk.reduce(synthetic_terms(m), np.ones(96, bool)), atol=1e-12)


def test_absent_tokens_are_zero_rows_and_columns() -> None:
    rng = np.random.default_rng(11)
    present = rng.random(N) < 0.8
    m = int(present.sum())
    terms = [rng.standard_normal((m, m)) for _ in range(6)]
    sk = TermSketch(16, 5)
    got = sk.reduce(terms, present)
    s1, s2 = sk.matrices(N)
    for t, g in zip(terms, got, strict=True):
        full = np.zeros((N, N))
        full[np.ix_(present, present)] = standardise(t)
        r = s1 @ full @ s2.T
        assert np.allclose(g, r / np.linalg.norm(r), atol=1e-12)


def test_random_projection_known_answer() -> None:
    # Pins the id's promise: numpy PCG64 normal streams for the sketch and the projection.
    m = synthetic_model(np.random.default_rng(2024), 64, 8)
    y = RandomProjectionEncoder().encode_terms(synthetic_terms(m), np.ones(64, bool))
    assert y[:4].tolist() == pytest.approx(GOLDEN_RANDOM_V1, abs=1e-5)


GOLDEN_RANDOM_V1 = [-0.2029268, -0.7655957, 1.3768451, 0.4097544]


@pytest.fixture(scope="module")
def independent_inputs() -> np.ndarray:
    """Unit sketches of 200 independent synthetic models (fresh draws)."""
    rng = np.random.default_rng(5)
    sk = TermSketch()
    return np.stack([synthetic_sketch(synthetic_model(rng, 128, (8, 16, 32)[i % 3]), sk) for i in range(200)])


@pytest.mark.parametrize("name", ["random-v1", "cnn-v1"])
def test_outputs_are_roughly_standard_normal(
    name: str, encoders: dict[str, Encoder], independent_inputs: np.ndarray
) -> None:
    y = batch_encode(encoders[name], independent_inputs)
    assert y.shape == (200, ENCODER_DIM)
    assert abs(y.mean()) < 0.2 and 0.7 < y.std() < 1.3
    assert np.abs(y.mean(axis=0)).max() < 0.5
    assert y.std(axis=0).min() > 0.6 and y.std(axis=0).max() < 1.5
    norms = np.linalg.norm(y, axis=1)
    assert 0.8 * np.sqrt(ENCODER_DIM) < norms.mean() < 1.2 * np.sqrt(ENCODER_DIM)


def test_shipped_weights_match_the_id(encoders: dict[str, Encoder]) -> None:
    path = _weights_path(CNN_WEIGHTS)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    enc = encoders["cnn-v1"]
    assert isinstance(enc, CnnEncoder)
    assert f"sha256={digest}" in enc.encoder_id and enc.encoder_id.startswith("cnn-v1(")
    assert all(len(e.encoder_id) <= 200 for e in encoders.values())  # receipts carry ids of at most 200 chars
    assert path.stat().st_size < 4_000_000
    rp = encoders["random-v1"]
    assert isinstance(rp, RandomProjectionEncoder)
    assert "k=64" in rp.encoder_id and "projection-seed=2" in rp.encoder_id and "sketch-seed=1" in rp.encoder_id
    assert load_encoder("default").encoder_id == load_encoder(DEFAULT_ENCODER).encoder_id
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("nope")
    # The CNN is evaluated in benchmarks, never loaded by the verifier (which needs no torch).
    with pytest.raises(ValueError, match=r"benchmarks/encoder_cnn\.py"):
        load_encoder("cnn-v1")


def test_a_tampered_weights_file_changes_the_id(tmp_path: Path, encoders: dict[str, Encoder]) -> None:
    from safetensors import safe_open
    from safetensors.torch import save

    src = _weights_path(CNN_WEIGHTS)
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1e-3
    dst = tmp_path / "w.safetensors"
    dst.write_bytes(save(tensors, metadata=meta))
    assert CnnEncoder(dst).encoder_id != encoders["cnn-v1"].encoder_id
    dst.write_bytes(save(tensors, metadata={"pawprint": meta["pawprint"].replace("pawprint-encoder/1", "other")}))
    with pytest.raises(ValueError, match="not a cnn-v1"):
        CnnEncoder(dst)


@pytest.mark.parametrize("name", ["random-v1", "cnn-v1"])
def test_bad_input_is_refused(name: str, encoders: dict[str, Encoder], family: dict[str, list[np.ndarray]]) -> None:
    enc = encoders[name]
    terms = family["base"]
    cases: list[tuple[list[np.ndarray], np.ndarray, str]] = [
        (terms[:5], ALL, "expected 6 terms"),
        ([*terms[:5], terms[5][:-1, :-1]], ALL, "shape"),
        ([*terms[:5], np.where(np.eye(N, dtype=bool), np.nan, terms[5])], ALL, "non-finite"),
        ([*terms[:5], np.full((N, N), 3.0)], ALL, "constant"),
        (terms, np.ones(N), "boolean"),
        (terms, np.ones(N + 1, dtype=bool), "shape"),
        ([t[:1, :1] for t in terms], np.eye(1, N, dtype=bool)[0], "at least 2"),
        ([t.astype(str) for t in terms], ALL, "dtype"),
    ]
    for bad_terms, present, msg in cases:
        with pytest.raises(EncoderInputError, match=msg):
            enc.encode_terms(bad_terms, present)
    with pytest.raises(EncoderInputError, match="layer position -2"):
        enc.encode(make_inv(terms[:3], ALL, layers=(3,)))
    inv = make_inv(terms, ALL)
    del inv.terms[(3, "ffn")]
    with pytest.raises(EncoderInputError, match="no term 'ffn'"):
        enc.encode(inv)
    with pytest.raises(EncoderInputError):
        vector_digest(np.array([np.inf], dtype=np.float32))
    with pytest.raises(EncoderInputError):
        vector_digest(np.zeros((2, 2), dtype=np.float32))
