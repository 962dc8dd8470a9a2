"""Hashing helpers and domain separation."""

from __future__ import annotations

import hashlib

import pytest

from protocol import (
    SIGNATURE_KINDS,
    FormatError,
    UnknownKindError,
    domain_digest,
    from_hex,
    parse_digest_hex,
    sha256,
    sha256_hex,
    to_hex,
)


def test_sha256_known_answers() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert to_hex(sha256(b"abc")) == sha256_hex(b"abc")


def test_domain_digest_layout() -> None:
    assert domain_digest("manifest", b"xyz") == hashlib.sha256(b"pawprint/v1/manifest\x00xyz").digest()


def test_domain_digests_differ_by_kind() -> None:
    digests = {domain_digest(kind, b"same payload") for kind in SIGNATURE_KINDS}
    assert len(digests) == len(SIGNATURE_KINDS)


def test_kind_and_payload_cannot_trade_bytes() -> None:
    # the NUL separator stops "registry" + "-entry..." style ambiguity between kind and payload
    assert domain_digest("registry-entry", b"") != domain_digest("receipt", b"")
    assert domain_digest("probe-set", b"\x00a") != domain_digest("probe-set", b"a")


def test_the_closed_set_of_kinds() -> None:
    assert {"challenge", "manifest", "bundle", "receipt", "registry-entry", "checkpoint", "probe-set"} <= (
        SIGNATURE_KINDS
    )
    for kind in ("", "Manifest", "manifest\x00", "other", "pawprint/v1/manifest"):
        with pytest.raises(UnknownKindError):
            domain_digest(kind, b"")


def test_hex_is_strict() -> None:
    assert from_hex("00ff") == b"\x00\xff"
    assert parse_digest_hex("ab" * 32) == b"\xab" * 32
    for bad in ("0", "0g", "00FF", " 00", "00\n"):
        with pytest.raises(FormatError):
            from_hex(bad)
    for bad in ("ab" * 31, "ab" * 33, "AB" * 32):
        with pytest.raises(FormatError):
            parse_digest_hex(bad)
