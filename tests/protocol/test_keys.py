"""Ed25519 keys: the RFC 8032 vector, domain-separated signatures, and key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    SIGNATURE_KINDS,
    FormatError,
    KeyFileError,
    PrivateKey,
    PublicKey,
    SignatureError,
    UnknownKindError,
    domain_digest,
    key_id,
    sha256_hex,
    verify,
)

# RFC 8032 section 7.1, TEST 1 (empty message)
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# A fixed key keeps test failures reproducible.
FIXED_SEED = bytes(range(32))


def test_rfc8032_vector_and_key_id() -> None:
    raw = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    assert raw.sign(b"") == RFC8032_SIGNATURE  # cryptography is the Ed25519 we think it is
    key = PrivateKey.from_seed(RFC8032_SECRET)
    assert key.public_key.raw == RFC8032_PUBLIC
    assert key.key_id == sha256_hex(RFC8032_PUBLIC) == key_id(RFC8032_PUBLIC)
    assert len(key.key_id) == 64
    # our signature is plain Ed25519 over the domain digest, nothing else
    assert key.sign("manifest", b"") == raw.sign(domain_digest("manifest", b""))
    verify(key.public_key, "manifest", b"", key.sign("manifest", b""))
    # and a raw RFC signature is not a pawprint signature of anything
    for kind in SIGNATURE_KINDS:
        with pytest.raises(SignatureError):
            verify(key.public_key, kind, b"", RFC8032_SIGNATURE)


def test_sign_and_verify() -> None:
    key = PrivateKey.from_seed(FIXED_SEED)
    sig = key.sign("receipt", b"payload")
    assert len(sig) == 64
    key.public_key.verify("receipt", b"payload", sig)


def test_signature_for_one_kind_fails_for_every_other() -> None:
    key = PrivateKey.from_seed(FIXED_SEED)
    for signed_as in SIGNATURE_KINDS:
        sig = key.sign(signed_as, b"same bytes")
        for checked_as in SIGNATURE_KINDS - {signed_as}:
            with pytest.raises(SignatureError):
                verify(key.public_key, checked_as, b"same bytes", sig)


def test_every_verification_failure_is_the_same_opaque_error() -> None:
    key = PrivateKey.from_seed(FIXED_SEED)
    other = PrivateKey.generate()
    sig = key.sign("challenge", b"nonce")
    failures = [
        (other.public_key, "challenge", b"nonce", sig),  # wrong key
        (key.public_key, "challenge", b"nonce!", sig),  # wrong payload
        (key.public_key, "challenge", b"nonce", sig[:-1]),  # short
        (key.public_key, "challenge", b"nonce", sig + b"\x00"),  # long
        (key.public_key, "challenge", b"nonce", bytes(64)),
        (key.public_key, "challenge", b"nonce", bytes([sig[0] ^ 1]) + sig[1:]),
        (key.public_key, "challenge", b"nonce", "not bytes"),
    ]
    messages = set()
    for public_key, kind, payload, signature in failures:
        with pytest.raises(SignatureError) as info:
            verify(public_key, kind, payload, signature)  # type: ignore[arg-type]
        messages.add(str(info.value))
        assert info.value.__cause__ is None  # nothing about the reason leaks through chaining
    assert len(messages) == 1


def test_unknown_kind_is_a_programming_error() -> None:
    key = PrivateKey.from_seed(FIXED_SEED)
    with pytest.raises(UnknownKindError):
        key.sign("nonsense", b"")
    with pytest.raises(UnknownKindError):
        verify(key.public_key, "nonsense", b"", bytes(64))


def test_private_key_repr_does_not_leak() -> None:
    key = PrivateKey.from_seed(FIXED_SEED)
    assert FIXED_SEED.hex() not in repr(key)
    assert key.key_id in repr(key)


def test_public_key_values() -> None:
    pk = PrivateKey.from_seed(FIXED_SEED).public_key
    assert pk == PublicKey(pk.raw) and hash(pk) == hash(PublicKey(pk.raw))
    assert PublicKey.from_hex(pk.raw.hex()) == pk
    for bad in (b"", pk.raw + b"\x00", pk.raw[:31]):
        with pytest.raises(FormatError):
            PublicKey(bad)
    with pytest.raises(FormatError):
        PrivateKey.from_seed(b"short")


# -- files -----------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("passphrase", [None, b"correct horse", "c\u00f6rrect h\u00f6rse"])
def test_private_key_round_trip(tmp_path: Path, passphrase: bytes | str | None) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "owner.pem"
    key.save(path, passphrase)
    assert mode(path) == 0o600
    text = path.read_bytes()
    assert (b"ENCRYPTED" in text) == (passphrase is not None)
    loaded = PrivateKey.load(path, passphrase)
    assert loaded.key_id == key.key_id
    verify(key.public_key, "bundle", b"x", loaded.sign("bundle", b"x"))
    assert [p.name for p in tmp_path.iterdir()] == ["owner.pem"]  # no temp file left behind


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path, b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        PrivateKey.load(path, b"wrong")
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        PrivateKey.load(path)
    plain = tmp_path / "plain.pem"
    PrivateKey.generate().save(plain)
    with pytest.raises(KeyFileError, match="not encrypted"):
        PrivateKey.load(plain, b"unneeded")
    with pytest.raises(KeyFileError, match="empty"):
        PrivateKey.generate().save(tmp_path / "e.pem", b"")


def test_save_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = PrivateKey.generate()
    first.save(path)
    with pytest.raises(KeyFileError, match="exists"):
        PrivateKey.generate().save(path)
    assert PrivateKey.load(path).key_id == first.key_id
    second = PrivateKey.generate()
    second.save(path, overwrite=True)
    assert PrivateKey.load(path).key_id == second.key_id
    assert mode(path) == 0o600


def test_public_key_round_trip(tmp_path: Path) -> None:
    pk = PrivateKey.generate().public_key
    path = tmp_path / "vendor.pub"
    pk.save(path)
    assert path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert PublicKey.load(path) == pk
    assert PublicKey.from_pem(pk.to_pem()).key_id == pk.key_id


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        PrivateKey.load(tmp_path / "missing.pem")
    with pytest.raises(KeyFileError, match="cannot read"):
        PublicKey.load(tmp_path / "missing.pub")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError):
        PrivateKey.load(garbage)
    with pytest.raises(KeyFileError):
        PublicKey.load(garbage)
    # a valid key of another algorithm is refused, not misused
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_private = tmp_path / "ec.pem"
    ec_private.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyFileError, match="Ed25519"):
        PrivateKey.load(ec_private)
    ec_public = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFileError, match="Ed25519"):
        PublicKey.from_pem(ec_public)
    # a private key file is not a public key file
    private = tmp_path / "p.pem"
    PrivateKey.generate().save(private)
    with pytest.raises(KeyFileError):
        PublicKey.load(private)


# The eight points of small order (the torsion subgroup of edwards25519). Each verifies the signature
# (R = identity, S = 0) on every message, so none may be a key.
SMALL_ORDER = (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)


@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_small_order_public_keys_are_refused(raw: str) -> None:
    with pytest.raises(FormatError, match="small order"):
        PublicKey(bytes.fromhex(raw))


def test_non_canonical_and_off_curve_public_keys_are_refused() -> None:
    with pytest.raises(FormatError, match="non-canonical"):
        PublicKey(b"\xff" * 31 + b"\x7f")  # y >= p
    with pytest.raises(FormatError, match="not a point on the curve"):
        PublicKey(bytes.fromhex("02" + "00" * 31))
    for seed in range(64):  # every real key passes
        PublicKey(PrivateKey.from_seed(bytes([seed]) * 32).public_key.raw)
