"""Canonical msgpack: round trips, equality with plain msgpack, and refusal of every non-canonical form."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    CanonicalError,
    Limits,
    Tensor,
    decode,
    decode_map,
    dtype_itemsize,
    encode,
    tensor_map,
)

INT_MIN, INT_MAX = -(2**63), 2**64 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.text()
    | st.binary()
    # bias towards the boundaries between msgpack integer forms
    | st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -32, -33, -128, -129, -(2**31)])
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)
maps = st.dictionaries(st.text(max_size=8), values, max_size=6)


def sorted_copy(value: Any) -> Any:
    """The value with every map's keys inserted in UTF-8 byte order: what plain msgpack must match."""
    if isinstance(value, dict):
        return {k: sorted_copy(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list):
        return [sorted_copy(v) for v in value]
    return value


@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


@given(values)
def test_encoding_equals_plain_msgpack_with_sorted_keys(value: Any) -> None:
    assert encode(value) == msgpack.packb(sorted_copy(value), use_bin_type=True)


@given(maps)
def test_key_order_of_the_input_does_not_matter(value: dict[str, Any]) -> None:
    reversed_value = dict(reversed(list(value.items())))
    assert encode(reversed_value) == encode(value)


@given(st.dictionaries(st.text(max_size=4), st.integers(0, 3), min_size=2, max_size=6))
def test_unsorted_keys_are_rejected(value: dict[str, int]) -> None:
    keys = sorted(value, key=lambda k: k.encode())
    unsorted = {k: value[k] for k in reversed(keys)}
    with pytest.raises(CanonicalError):
        decode(msgpack.packb(unsorted, use_bin_type=True))


def test_keys_sort_by_utf8_bytes() -> None:
    value = {"\u00e9": 1, "z": 2, "Z": 3, "\U0001f600": 4, "": 5}
    data = encode(value)
    assert list(decode(data)) == ["", "Z", "z", "\u00e9", "\U0001f600"]


# -- integers in longer forms than needed -------------------------------------------------------------------

# (format byte, struct code, lo, hi) of every msgpack integer form
INT_FORMS = [
    (0xCC, ">B", 0, 2**8 - 1),
    (0xCD, ">H", 0, 2**16 - 1),
    (0xCE, ">I", 0, 2**32 - 1),
    (0xCF, ">Q", 0, 2**64 - 1),
    (0xD0, ">b", -(2**7), 2**7 - 1),
    (0xD1, ">h", -(2**15), 2**15 - 1),
    (0xD2, ">i", -(2**31), 2**31 - 1),
    (0xD3, ">q", -(2**63), 2**63 - 1),
]


@given(st.integers(INT_MIN, INT_MAX), st.sampled_from(INT_FORMS))
def test_every_non_minimal_integer_form_is_rejected(n: int, form: tuple[int, str, int, int]) -> None:
    code, fmt, lo, hi = form
    if not lo <= n <= hi:
        return
    data = bytes([code]) + struct.pack(fmt, n)
    if data == encode(n):
        assert decode(data) == n
    else:
        with pytest.raises(CanonicalError):
            decode(data)


def test_hand_made_non_minimal_forms() -> None:
    for data in [
        b"\xcc\x05",  # 5 as uint8
        b"\xd0\x05",  # 5 as int8
        b"\xd0\xff",  # -1 as int8 (negative fixint exists)
        b"\xcd\x00\xff",  # 255 as uint16
        b"\xd9\x01a",  # "a" as str8
        b"\xc5\x00\x01x",  # b"x" as bin16
        b"\xdc\x00\x01\x01",  # [1] as array16
        b"\xde\x00\x01\xa1a\x01",  # {"a": 1} as map16
    ]:
        with pytest.raises(CanonicalError):
            decode(data)


# -- other forms with no canonical meaning ------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, 0.0, float("nan"), {"a": [1, 2.0]}])
def test_floats_are_not_encodable(value: Any) -> None:
    with pytest.raises(CanonicalError, match="float"):
        encode(value)


@given(st.floats(allow_nan=False))
def test_floats_are_rejected_on_decode(x: float) -> None:
    with pytest.raises(CanonicalError, match="float"):
        decode(msgpack.packb(x))
    with pytest.raises(CanonicalError, match="float"):
        decode(b"\xca" + struct.pack(">f", 1.0))  # float32 too


def test_duplicate_keys_are_rejected() -> None:
    with pytest.raises(CanonicalError, match="duplicate"):
        decode(b"\x82\xa1a\x01\xa1a\x02")
    with pytest.raises(CanonicalError, match="duplicate"):
        decode(b"\x81\xa1x\x82\xa1a\x01\xa1a\x01")  # nested, and with equal values


@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_rejected(value: Any, extra: bytes) -> None:
    with pytest.raises(CanonicalError):
        decode(encode(value) + extra)


@given(values)
def test_truncated_input_is_rejected(value: Any) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(CanonicalError):
            decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"\xa1\xff",  # str holding invalid UTF-8
        b"\xa3\xed\xa0\x80",  # UTF-8 of a lone surrogate
        msgpack.packb(b"\xff", use_bin_type=False),  # bytes sent as a raw str
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\xd6\xff\x00\x00\x00\x01",  # timestamp ext (-1)
        b"\xc7\x00\x05",  # empty ext8
        msgpack.packb({1: 2}),  # int map key
        msgpack.packb({b"a": 1}, use_bin_type=True),  # bin map key
        b"\xc1",  # never-used byte
        b"",
    ],
)
def test_malformed_input_is_rejected(data: bytes) -> None:
    with pytest.raises(CanonicalError):
        decode(data)


def test_every_failure_is_chained_from_the_cause() -> None:
    with pytest.raises(CanonicalError) as info:
        decode(b"\xa1\xff")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    "value",
    [
        {1: "int key"},
        {b"k": "bytes key"},
        "\ud800",
        {"\ud800": 1},
        2**64,
        -(2**63) - 1,
        object(),
        {1, 2},
        msgpack.ExtType(1, b""),
    ],
)
def test_values_without_canonical_form_are_refused(value: Any) -> None:
    with pytest.raises(CanonicalError):
        encode(value)


def test_accepted_python_types_normalise() -> None:
    assert encode((1, 2)) == encode([1, 2])
    assert encode(bytearray(b"ab")) == encode(memoryview(b"ab")) == encode(b"ab")
    assert encode(True) == b"\xc3" and encode(1) == b"\x01"  # bool is not confused with int
    assert decode(bytearray(encode({"a": 1}))) == {"a": 1}


# -- limits -------------------------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\x00"


def test_depth_limit() -> None:
    limits = Limits(max_depth=4)
    assert decode(nested(4), limits=limits) == [[[[0]]]]
    with pytest.raises(CanonicalError, match="nesting"):
        decode(nested(5), limits=limits)
    # deeper than msgpack's own stack, and deep enough to break naive recursion: still the one error
    for depth in (1000, 5000):
        with pytest.raises(CanonicalError):
            decode(nested(depth))
    with pytest.raises(CanonicalError, match="nesting"):
        encode([[[1]]], max_depth=2)


def test_size_limits() -> None:
    with pytest.raises(CanonicalError, match="exceeds"):
        decode(encode(b"x" * 100), limits=Limits(max_bytes=50))
    with pytest.raises(CanonicalError):
        decode(encode(list(range(11))), limits=Limits(max_container_len=10))
    with pytest.raises(CanonicalError):
        decode(encode({str(i): i for i in range(11)}), limits=Limits(max_container_len=10))
    with pytest.raises(CanonicalError):
        decode(encode("y" * 11), limits=Limits(max_str_len=10))
    # a header announcing a huge array must not allocate it
    with pytest.raises(CanonicalError):
        decode(b"\xdd\xff\xff\xff\xff")
    assert decode(encode(list(range(10))), limits=Limits(max_container_len=10)) == list(range(10))


def test_decode_map_requires_a_map() -> None:
    assert decode_map(encode({"a": 1})) == {"a": 1}
    with pytest.raises(CanonicalError, match="map"):
        decode_map(encode([1]))


# -- tensors ------------------------------------------------------------------------------------------------


def test_tensor_map_shape_and_encoding() -> None:
    data = struct.pack("<6f", *range(6))
    m = tensor_map("F32", (2, 3), data)
    assert m == {"data": data, "dtype": "F32", "shape": [2, 3]}
    assert encode(m) == msgpack.packb({"data": data, "dtype": "F32", "shape": [2, 3]}, use_bin_type=True)
    assert Tensor.from_map(decode(encode(m))) == Tensor("F32", (2, 3), data)


@pytest.mark.parametrize(
    ("dtype", "shape", "size"),
    [
        ("F16", (4,), 8),
        ("BF16", (2, 2), 8),
        ("I8", (3,), 3),
        ("F32", (), 4),
        ("I64", (0, 5), 0),
        ("BOOL", (2,), 2),
    ],
)
def test_tensor_map_accepts_matching_lengths(dtype: str, shape: tuple[int, ...], size: int) -> None:
    assert tensor_map(dtype, shape, bytes(size))["data"] == bytes(size)


@pytest.mark.parametrize(
    ("dtype", "shape", "size"),
    [("F32", (2, 3), 23), ("F32", (2, 3), 25), ("F16", (), 4), ("X9", (1,), 1), ("F32", (-1,), 0)],
)
def test_tensor_map_refuses_mismatches(dtype: str, shape: tuple[int, ...], size: int) -> None:
    with pytest.raises(CanonicalError):
        tensor_map(dtype, shape, bytes(size))


@pytest.mark.parametrize(
    "value",
    [
        {"data": b"", "dtype": "F32"},
        {"data": b"", "dtype": "F32", "shape": [0], "extra": 1},
        {"data": "x", "dtype": "I8", "shape": [1]},
        {"data": b"x", "dtype": "I8", "shape": [True]},
        {"data": b"x", "dtype": "I8", "shape": 1},
        [1],
    ],
)
def test_tensor_from_map_refuses_malformed(value: Any) -> None:
    with pytest.raises(CanonicalError):
        Tensor.from_map(value)


@settings(max_examples=50)
@given(st.lists(st.integers(0, 4), max_size=4), st.sampled_from(["F32", "F16", "BF16", "I8", "I64"]))
def test_tensor_maps_round_trip(shape: list[int], dtype: str) -> None:
    size = dtype_itemsize(dtype)
    for d in shape:
        size *= d
    m = tensor_map(dtype, shape, bytes(range(256)) * (size // 256) + bytes(size % 256))
    assert decode(encode(m)) == m
