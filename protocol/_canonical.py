"""Canonical msgpack: the one byte string that every signed pawprint structure has.

Values are ``None``, ``bool``, ``int`` (-2**63 .. 2**64-1), ``str``, ``bytes`` (msgpack bin), lists and maps
with ``str`` keys. There are no floats: a float has several encodings and several decimal spellings, so
signed structures carry real numbers as decimal strings or fixed-point integers. Tensors are maps
``{"data", "dtype", "shape"}`` holding raw little-endian bytes (see ``Tensor``).

The encoding is exactly ``msgpack.packb(value, use_bin_type=True)`` with every map's keys inserted in order
of their UTF-8 bytes; msgpack-python already writes integers and lengths in their shortest form. Other
modules rely on that equality (they may stream the same bytes with msgpack directly), so it must not drift.

Decoding never trusts the input: it parses with msgpack under size limits, then re-encodes and requires the
same bytes. Anything else (unsorted or duplicate keys, long-form integers or lengths, floats, ext types,
invalid UTF-8, trailing bytes, too deep or too large) raises ``CanonicalError``, so a signature over bytes
is a signature over exactly one value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from protocol._errors import CanonicalError

_V = TypeVar("_V")

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

# safetensors spellings. The itemsize is what tensor maps are checked against.
DTYPE_ITEMSIZE: Mapping[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class Limits:
    """Bounds on what ``decode`` accepts; pass larger ones for known-large messages (tensor chunks).

    ``encode`` checks only the depth (it encodes the caller's own values, and deep nesting is what could
    exhaust the stack); a value may therefore encode and still exceed the limits a peer decodes with.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_depth: int = 32  # nested containers; the top-level value is at depth 0
    max_container_len: int = 1 << 20  # entries of one list or map
    max_str_len: int = 1 << 20  # UTF-8 bytes of one string


DEFAULT_LIMITS = Limits()


def encode(value: object, *, max_depth: int = DEFAULT_LIMITS.max_depth) -> bytes:
    """The canonical msgpack bytes of ``value``; raises ``CanonicalError`` if it has no canonical form.

    Tuples are accepted as lists (and so decode as lists); ``bytearray`` and ``memoryview`` as bytes.
    """
    packed: bytes = msgpack.packb(_normalise(value, 0, max_depth), use_bin_type=True)
    return packed


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The value whose canonical encoding is exactly ``data``; raises ``CanonicalError`` otherwise.

    Returns ``Any`` because the shape of a message is checked by its own parser, not here.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CanonicalError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise CanonicalError(f"message of {len(data)} bytes exceeds the limit of {limits.max_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_unique_keys,
            ext_hook=_refuse_ext,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bytes,
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=0,
        )
    except CanonicalError:
        raise
    # msgpack reports every malformation (truncation, extra data, bad UTF-8, limits, nesting beyond its
    # own stack) as a ValueError subclass; nothing else is expected from it.
    except ValueError as e:
        raise CanonicalError(f"not valid msgpack: {e}") from e
    again = encode(value, max_depth=limits.max_depth)
    if again != data:
        raise CanonicalError(
            "not the canonical encoding (map keys out of order, or an integer or length in a longer form than needed)"
        )
    return value


def decode_map(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``decode`` for messages whose top level must be a map (every signed structure)."""
    value = decode(data, limits=limits)
    if not isinstance(value, dict):
        raise CanonicalError(f"expected a map at the top level, got {type(value).__name__}")
    return value


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # Re-encoding would catch duplicates too (the dict is shorter than the wire map), but this names them.
    result: dict[Any, Any] = {}
    for key, item in pairs:
        if key in result:
            raise CanonicalError(f"duplicate map key {key!r:.80}")
        result[key] = item
    return result


def _refuse_ext(code: int, data: bytes) -> object:
    raise CanonicalError(f"msgpack ext type {code} is not allowed")


def _normalise(value: object, depth: int, max_depth: int) -> object:
    """A copy of ``value`` in plain types with map keys sorted, checking every rule on the way down."""
    # bool before int: bool is a subclass of int but encodes differently.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise CanonicalError(f"integer {value} is outside the msgpack range")
        return int(value)  # drops IntEnum and other subclasses, which msgpack might treat differently
    if isinstance(value, float):
        raise CanonicalError(
            f"float {value!r} is not allowed in canonical msgpack; use a decimal string or fixed-point int"
        )
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CanonicalError(f"string {value!r:.80} is not valid UTF-8") from e
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    # Plain tuples only: a namedtuple (msgpack.ExtType is one) would silently lose its field names.
    if isinstance(value, list | dict) or type(value) is tuple:
        if depth >= max_depth:
            raise CanonicalError(f"nesting deeper than {max_depth} containers")
        if isinstance(value, dict):
            return _normalise_map(value, depth + 1, max_depth)
        return [_normalise(item, depth + 1, max_depth) for item in value]
    raise CanonicalError(f"type {type(value).__name__} has no canonical msgpack encoding")


def sorted_items(value: Mapping[Any, _V]) -> list[tuple[str, _V]]:
    """A map's items in canonical order: keys are strings of valid UTF-8 (``CanonicalError`` otherwise), sorted
    by their UTF-8 bytes. ``encode`` orders every map this way, and so does the streamed bundle writer."""
    keyed: list[tuple[bytes, str, _V]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise CanonicalError(f"map key {key!r:.80} is not a string")
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CanonicalError(f"map key {key!r:.80} is not valid UTF-8") from e
        keyed.append((raw, str(key), item))
    # Byte order of UTF-8 equals code point order, but sorting the bytes says what the spec says.
    keyed.sort(key=lambda entry: entry[0])
    return [(key, item) for _, key, item in keyed]


def _normalise_map(value: dict[object, object], depth: int, max_depth: int) -> dict[str, object]:
    return {key: _normalise(item, depth, max_depth) for key, item in sorted_items(value)}


@dataclass(frozen=True)
class Tensor:
    """A tensor as it travels: safetensors dtype name, shape, and raw little-endian bytes.

    The byte order cannot be checked here; producers must write little-endian (what safetensors and
    every platform pawprint runs on use).
    """

    dtype: str
    shape: tuple[int, ...]
    data: bytes | memoryview

    def __post_init__(self) -> None:
        itemsize = dtype_itemsize(self.dtype)
        if not isinstance(self.shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape
        ):
            raise CanonicalError(f"shape must be a tuple of non-negative ints, got {self.shape!r:.80}")
        if isinstance(self.data, memoryview):
            # A read-only view of bytes, e.g. a memory-mapped spool file (the verifier's large submissions).
            if not self.data.readonly or self.data.format != "B" or not self.data.c_contiguous or self.data.ndim != 1:
                raise CanonicalError("tensor data as a view must be a read-only, contiguous view of bytes")
        elif not isinstance(self.data, bytes):
            raise CanonicalError(f"tensor data must be bytes, got {type(self.data).__name__}")
        expected = math.prod(self.shape) * itemsize
        if len(self.data) != expected:
            raise CanonicalError(
                f"{self.dtype} tensor of shape {list(self.shape)} needs {expected} bytes, got {len(self.data)}"
            )

    def to_map(self) -> dict[str, object]:
        return {"data": self.data, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_map(cls, value: object) -> Tensor:
        """Parse a decoded tensor map, checking its keys, dtype, shape and length."""
        if not isinstance(value, dict) or set(value) != {"data", "dtype", "shape"}:
            raise CanonicalError("a tensor must be a map with exactly the keys data, dtype, shape")
        dtype, shape, data = value["dtype"], value["shape"], value["data"]
        if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(data, bytes):
            raise CanonicalError("tensor map fields have the wrong types (dtype str, shape list, data bin)")
        return cls(dtype, tuple(shape), data)


def dtype_itemsize(dtype: str) -> int:
    """Bytes per element of a safetensors dtype name; ``CanonicalError`` for an unknown one."""
    try:
        return DTYPE_ITEMSIZE[dtype]
    except (KeyError, TypeError) as e:
        raise CanonicalError(f"unknown dtype {dtype!r:.40}; known: {', '.join(DTYPE_ITEMSIZE)}") from e


def tensor_map(dtype: str, shape: Sequence[int], data: bytes | bytearray | memoryview) -> dict[str, object]:
    """The canonical map for a tensor, after checking ``len(data) == prod(shape) * itemsize``."""
    return Tensor(dtype, tuple(shape), bytes(data)).to_map()
