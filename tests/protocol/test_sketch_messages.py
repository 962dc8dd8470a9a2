"""The ``sketch`` fields of challenges and term groups (issue 16): absent when 0 (full-term messages keep their
bytes), checked on both construction and decoding, and the sketch of an invariant set is deterministic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from protocol import (
    SKETCH_MAX,
    SKETCH_MIN,
    Challenge,
    MessageError,
    ProbeSpec,
    RegistryState,
    SubmissionLimits,
    TermGroup,
    encode,
    sha256,
)
from protocol._canonical import decode_map
from protocol.terms import InvariantSet, sketch_invariants

PROBES = ProbeSpec("p", 1, "rule", tuple(f"t{i}" for i in range(40)))
PRESENT = tuple(i % 4 != 3 for i in range(40))


def _group(**changes: object) -> TermGroup:
    g = TermGroup(PROBES, PRESENT, (2, 3), "pawprint", "m/1", ("attn_qk", "attn_vo", "ffn"))
    return dataclasses.replace(g, **changes) if changes else g


def _challenge(**changes: object) -> Challenge:
    c = Challenge("ab" * 32, b"\1" * 32, 10, 20, (PROBES,), "last2", "pawprint", SubmissionLimits(),
                  RegistryState(0, sha256(b"")))
    return dataclasses.replace(c, **changes) if changes else c


def test_no_sketch_keeps_the_bytes_a_sketch_is_one_more_field() -> None:
    full, sketched = _group(), _group(sketch=64)
    assert "sketch" not in full.to_map() and sketched.to_map()["sketch"] == 64
    assert {k: v for k, v in sketched.to_map().items() if k != "sketch"} == full.to_map()
    assert TermGroup.from_map(decode_map(encode(sketched.to_map()))) == sketched
    assert TermGroup.from_map(decode_map(encode(full.to_map()))) == full
    assert full.side == full.rows == 30 and sketched.side == 64 and sketched.rows == 30
    assert full.comparison_id == "m/1" and sketched.comparison_id == "m/1+sketch/64"
    c = _challenge(sketch=256)
    assert "sketch" not in _challenge().to_map() and c.to_map()["sketch"] == 256
    assert Challenge.from_map(decode_map(encode(c.to_map()))) == c


@pytest.mark.parametrize("value, words", [(0, "at least 16"), (SKETCH_MIN - 1, "at least 16"),
                                          (SKETCH_MAX + 1, "at most 1024"), (True, "boolean"), ("64", "integer")])
def test_a_bad_sketch_field_is_refused_when_decoded(value: object, words: str) -> None:
    g = _group(sketch=64).to_map()
    g["sketch"] = value
    with pytest.raises(MessageError, match=words):
        TermGroup.from_map(g)
    c = _challenge(sketch=64).to_map()
    c["sketch"] = value
    with pytest.raises(MessageError, match=words):
        Challenge.from_map(c)


@pytest.mark.parametrize("value", [-1, 1, SKETCH_MIN - 1, SKETCH_MAX + 1, True, 2.0])
def test_a_bad_sketch_size_is_refused_when_built(value: object) -> None:
    with pytest.raises(MessageError, match="sketch"):
        _group(sketch=value)
    with pytest.raises(MessageError, match="sketch"):
        _challenge(sketch=value)


def _inv(seed: int) -> InvariantSet:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((30, 8))
    terms = {(layer, t): (x @ rng.standard_normal((8, 8)) @ x.T).astype(np.float32)
             for layer in (2, 3) for t in ("attn_qk", "attn_vo", "ffn")}
    return InvariantSet(_group(), {"d_model": 8}, terms)


def test_sketching_an_invariant_set_is_deterministic_and_marks_the_group() -> None:
    inv = _inv(0)
    a, b = sketch_invariants(inv, 32), sketch_invariants(inv, 32)
    assert a.group == _group(sketch=32)
    for key in inv.terms:
        assert a.terms[key].shape == (32, 32) and a.terms[key].dtype == np.dtype("<f4")
        assert a.terms[key].tobytes() == b.terms[key].tobytes()
    # another model's terms give other sketches; the same terms in another order of layers do not matter
    assert not np.array_equal(sketch_invariants(_inv(1), 32).terms[(2, "ffn")], a.terms[(2, "ffn")])
    with pytest.raises(MessageError, match="already sketched"):
        sketch_invariants(a, 32)
