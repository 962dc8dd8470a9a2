"""Writing a bundle file without building it in memory: the canonical bytes, streamed.

A bundle's terms are most of its size (six 4096 x 4096 float32 terms are 384 MiB whatever the model's size), and
``Bundle.to_bytes`` holds the whole canonical encoding as one ``bytes`` object, on top of the terms and msgpack's
own buffer. ``stream_bundle`` writes the same bytes piece by piece to a binary file: the msgpack headers of the
outer map and of the terms map, then each key and value, each tensor's bytes written straight from its buffer
(``bytes`` or a read-only ``memoryview``, e.g. of a numpy array or a memory-mapped file); ``write_bundle`` does
so atomically (a temporary file in the same directory, fsynced, renamed over the target, the directory fsynced:
as ``atomic_write``).

The output is exactly ``Bundle.to_bytes()``: the canonical msgpack of ``{"format", "manifest", "public_key",
"signature", "terms"}``, keys in order of their UTF-8 bytes ("terms" last), the terms map sorted by name the same
way, each tensor the map ``{"data", "dtype", "shape"}``. Every piece other than a tensor's data is encoded by
``encode`` itself, so the rules (shortest lengths and integers, bin type for bytes) are the canonical module's; the
only hand-written headers are the two map headers (through msgpack's own ``Packer``) and the bin header of each
tensor's data, whose three forms are msgpack's (``bin 8/16/32``: the shortest that holds the length).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import msgpack

from protocol._canonical import Tensor, encode, sorted_items
from protocol._errors import CanonicalError, FormatError, ProtocolError
from protocol._files import atomic_file
from protocol._messages import BUNDLE_FORMAT, Bundle

_MAP_HEADER = msgpack.Packer(use_bin_type=True)


def _bin_header(n: int) -> bytes:
    """msgpack's header of a ``bin`` of ``n`` bytes, in its shortest form (what ``packb`` writes)."""
    if n < 1 << 8:
        return b"\xc4" + struct.pack(">B", n)
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    if n < 1 << 32:
        return b"\xc6" + struct.pack(">I", n)
    raise CanonicalError(f"a tensor of {n} bytes is larger than msgpack's bin type holds (4 GiB)")


def _map_header(n: int) -> bytes:
    header: bytes = _MAP_HEADER.pack_map_header(n)
    return header


def _sorted_terms(terms: Mapping[str, Tensor]) -> list[tuple[str, Tensor]]:
    """The terms in canonical order (``sorted_items``), each checked to be a ``Tensor``."""
    items = sorted_items(terms)
    for name, t in items:
        if not isinstance(t, Tensor):
            raise CanonicalError(f"term {name!r:.80} is not a Tensor ({type(t).__name__})")
    return items


def bundle_pieces(bundle: Bundle) -> Iterator[bytes | memoryview]:
    """The canonical bytes of ``bundle`` in order, as pieces whose concatenation is ``bundle.to_bytes()``.

    The head (format, manifest, key, signature) and each tensor's small fields are encoded up front, so an error
    (a name that is no string, a tensor too large for msgpack) is raised before the first piece is yielded; a
    tensor's data is yielded as the object it is held in (never copied).
    """
    signed = bundle.signed
    head = [
        _map_header(5),
        encode("format"), encode(BUNDLE_FORMAT),
        encode("manifest"), encode(signed.payload),
        encode("public_key"), encode(signed.public_key.raw),
        encode("signature"), encode(signed.signature),
        encode("terms"), _map_header(len(bundle.terms)),
    ]
    tensors = [
        (encode(name) + b"\x83" + encode("data") + _bin_header(len(t.data)), t.data,
         encode("dtype") + encode(t.dtype) + encode("shape") + encode(list(t.shape)))
        for name, t in _sorted_terms(bundle.terms)
    ]
    yield b"".join(head)
    for before, data, after in tensors:
        yield before
        yield data
        yield after


def stream_bundle(f: BinaryIO, bundle: Bundle) -> int:
    """Write ``bundle.to_bytes()`` to the binary file ``f`` piece by piece; returns the number of bytes written."""
    written = 0
    for piece in bundle_pieces(bundle):
        view = memoryview(piece)
        while view:  # a raw (unbuffered) file may write less than it was given
            n = f.write(view)
            if n is None:  # a non-blocking raw file that could not write now: not a file a bundle goes to
                raise OSError("the file accepted no bytes")
            view = view[n:]
            written += n
    return written


def write_bundle(path: str | os.PathLike[str], bundle: Bundle, *, mode: int = 0o644) -> int:
    """Write ``bundle``'s file to ``path`` atomically, streamed (``stream_bundle``); returns its size in bytes.

    The bytes are exactly ``bundle.to_bytes()``; a reader (or a crash) sees the old file or the new one, never
    half of either; a failure leaves no temporary file behind.
    """
    with atomic_file(path, mode=mode) as f:
        size = stream_bundle(f, bundle)
    return size


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """A bundle file, parsed (``Bundle.from_bytes``) but not checked (``verify_bundle`` does that); every error
    is a ``FormatError`` that names the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read bundle ({e.strerror or e})") from e
    try:
        return Bundle.from_bytes(data)
    except ProtocolError as e:
        raise FormatError(f"{path}: not a valid bundle file ({e})") from e
