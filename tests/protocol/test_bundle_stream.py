"""The streamed bundle writer (``protocol.write_bundle``/``stream_bundle``) writes exactly ``Bundle.to_bytes()``:
on every golden and corpus bundle that parses, on generated ones (any names, dtypes, shapes; every msgpack length
form), atomically, and without copying a term's data."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol._bundle_io as bundle_io
from protocol import (
    DTYPE_ITEMSIZE,
    Bundle,
    CanonicalError,
    PrivateKey,
    ProtocolError,
    SignedMessage,
    Tensor,
    stream_bundle,
    write_bundle,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = PrivateKey.generate().public_key


def _bundle_files() -> list[Path]:
    return sorted([*(ROOT / "tests" / "golden_core").glob("*.bundle"), *(ROOT / "tests" / "corpus").rglob("*.bundle")])


def _parsed() -> Iterator[tuple[Path, bytes, Bundle]]:
    for path in _bundle_files():
        data = path.read_bytes()
        try:
            bundle = Bundle.from_bytes(data)
        except ProtocolError:
            continue  # a hostile corpus case that is no bundle at all
        yield path, data, bundle


def streamed(bundle: Bundle) -> bytes:
    f = io.BytesIO()
    n = stream_bundle(f, bundle)
    assert n == len(f.getvalue())
    return f.getvalue()


def test_golden_and_corpus_bundles_are_written_byte_for_byte(tmp_path: Path) -> None:
    cases = list(_parsed())
    names = {p.name for p, _, _ in cases}
    assert {"bundle.bundle", "bundle-tampered.bundle"} <= names  # the golden files are among them
    assert len(cases) >= 10
    for path, data, bundle in cases:
        assert streamed(bundle) == data, path
        out = tmp_path / path.name
        assert write_bundle(out, bundle) == len(data)
        assert out.read_bytes() == data, path


def _signed(payload: bytes, signature: bytes) -> SignedMessage:
    return SignedMessage(payload, signature, KEY)


_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=12)
_dtypes = st.sampled_from(sorted(DTYPE_ITEMSIZE))
_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def _tensors(draw: st.DrawFn) -> Tensor:
    dtype, shape = draw(_dtypes), draw(_shapes)
    n = DTYPE_ITEMSIZE[dtype]
    for d in shape:
        n *= d
    data = draw(st.binary(min_size=n, max_size=n))
    if draw(st.booleans()):
        return Tensor(dtype, shape, memoryview(data))
    return Tensor(dtype, shape, data)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=300), signature=st.binary(min_size=64, max_size=64),
    terms=st.dictionaries(_names, _tensors(), max_size=20),
)
def test_generated_bundles_stream_as_to_bytes(payload: bytes, signature: bytes, terms: dict[str, Tensor]) -> None:
    bundle = Bundle(_signed(payload, signature), terms)
    assert streamed(bundle) == bundle.to_bytes()


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
@pytest.mark.parametrize("count", [0, 1, 15, 16, 17])
def test_every_length_form(size: int, count: int) -> None:
    """bin 8/16/32 for the data, fixmap and map16 for the terms map: the shortest form, as ``packb`` writes."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    terms = {f"t{i:02d}": Tensor("U8", (size,), data) for i in range(count)}
    bundle = Bundle(_signed(b"\x80", b"\0" * 64), terms)
    out = streamed(bundle)
    assert out == bundle.to_bytes()
    assert out == msgpack.packb(msgpack.unpackb(out), use_bin_type=True)


def test_terms_are_sorted_by_utf8_bytes_not_insertion() -> None:
    t = Tensor("U8", (1,), b"x")
    terms = {"\uff21": t, "b": t, "\u00e9": t, "a": t, "": t, "\U0001f600": t}
    bundle = Bundle(_signed(b"\x80", b"\0" * 64), terms)
    assert streamed(bundle) == bundle.to_bytes()


def test_data_is_written_from_its_own_buffer() -> None:
    big = memoryview(bytes(1 << 20))
    bundle = Bundle(_signed(b"\x80", b"\0" * 64), {"a": Tensor("U8", (1 << 20,), big)})
    pieces = list(bundle_io.bundle_pieces(bundle))
    assert any(p is big for p in pieces)  # the view itself: never copied, never joined into a larger piece
    assert max(len(p) for p in pieces if p is not big) < 200


def test_errors_before_writing_leave_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "b.bundle"
    out.write_bytes(b"old")
    bad = Bundle(_signed(b"\x80", b"\0" * 64), {1: Tensor("U8", (1,), b"x")})  # type: ignore[dict-item]
    with pytest.raises(CanonicalError):
        write_bundle(out, bad)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bundle"]


def test_a_failure_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "b.bundle"
    out.write_bytes(b"old")
    bundle = Bundle(_signed(b"\x80", b"\0" * 64), {"a": Tensor("U8", (4,), b"abcd")})

    original = bundle_io.bundle_pieces

    def failing(b: Bundle) -> Iterator[bytes | memoryview]:
        yield next(original(b))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_io, "bundle_pieces", failing)
    with pytest.raises(OSError, match="No space"):
        write_bundle(out, bundle)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bundle"]


def test_written_file_mode_and_replacement(tmp_path: Path) -> None:
    out = tmp_path / "b.bundle"
    out.write_bytes(b"old")
    bundle = Bundle(_signed(b"\x80", b"\0" * 64), {"a": Tensor("U8", (4,), b"abcd")})
    write_bundle(out, bundle)
    assert out.read_bytes() == bundle.to_bytes()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    write_bundle(out, bundle, mode=0o600)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_a_short_writing_raw_file_gets_every_byte() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.got = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            view = memoryview(b)  # type: ignore[arg-type]
            self.got += view[:7]
            return min(7, len(view))

    bundle = Bundle(_signed(b"\x80" * 3, b"\1" * 64), {"a": Tensor("U8", (100,), bytes(100))})
    f = Trickle()
    assert stream_bundle(f, bundle) == len(bundle.to_bytes())  # type: ignore[arg-type]
    assert bytes(f.got) == bundle.to_bytes()
