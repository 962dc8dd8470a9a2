"""SHA-256 helpers and the domain-separated digest that every pawprint signature covers.

``domain_digest(kind, payload)`` is ``SHA-256(b"pawprint/v1/" + kind + b"\\0" + payload)``. The kind comes
from a closed set, so a signature over one kind of message can never be presented as a signature over
another (a receipt replayed as a registry entry, say). Adding a kind is a protocol change: do it here.
"""

from __future__ import annotations

import hashlib
import re

from protocol._errors import FormatError, UnknownKindError

DIGEST_SIZE = 32
DOMAIN_PREFIX = b"pawprint/v1/"

# Everything that is ever signed ("report": the verifier's signed comparison of two models in a dispute).
SIGNATURE_KINDS: frozenset[str] = frozenset(
    {
        "audit-finding",
        "bundle",
        "challenge",
        "checkpoint",
        "manifest",
        "probe-set",
        "receipt",
        "registry-entry",
        "report",
    }
)

_HEX = re.compile(r"[0-9a-f]*")


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The SHA-256 digest of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def to_hex(data: bytes) -> str:
    """Lowercase hex, the only spelling pawprint writes."""
    return data.hex()


def from_hex(text: str, *, length: int | None = None) -> bytes:
    """Parse lowercase hex (optionally of exactly ``length`` bytes).

    Uppercase and whitespace are refused rather than normalised: a digest has one spelling, so two
    strings naming the same digest can never compare unequal somewhere else.
    """
    if not isinstance(text, str) or len(text) % 2 or _HEX.fullmatch(text) is None:
        raise FormatError(f"not lowercase hex: {text!r:.80}")
    data = bytes.fromhex(text)
    if length is not None and len(data) != length:
        raise FormatError(f"expected {length} bytes of hex, got {len(data)}")
    return data


def parse_digest_hex(text: str) -> bytes:
    """Parse a hex SHA-256 digest (64 lowercase hex characters)."""
    return from_hex(text, length=DIGEST_SIZE)


def domain_digest(kind: str, payload: bytes) -> bytes:
    """``SHA-256(b"pawprint/v1/" + kind + b"\\0" + payload)``; ``kind`` must be in ``SIGNATURE_KINDS``."""
    if kind not in SIGNATURE_KINDS:
        known = ", ".join(sorted(SIGNATURE_KINDS))
        raise UnknownKindError(f"unknown signature kind {kind!r:.40}; known: {known}")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    h = hashlib.sha256(DOMAIN_PREFIX)
    h.update(kind.encode("ascii"))
    h.update(b"\0")
    h.update(payload)
    return h.digest()
