"""Ed25519 keys, and signatures that always carry a domain-separation kind.

A signature never covers raw bytes: ``PrivateKey.sign(kind, payload)`` signs
``domain_digest(kind, payload)``, so the same bytes signed as a "manifest" do not verify as a "receipt".
There is deliberately no way to sign without a kind with a ``PrivateKey``. The one exception is a
``NoteSigningKey`` (C2SP signed notes sign raw text): a key derived for that single purpose and used for
nothing else, so the domain separation is the key's.

A key is named by its key id, the hex SHA-256 of the raw 32-byte public key. Private keys are stored as
PKCS#8 PEM (optionally passphrase-encrypted) in files of mode 0600; public keys as SubjectPublicKeyInfo PEM.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol._errors import FormatError, KeyFileError, SignatureError
from protocol._files import atomic_write
from protocol._hashing import domain_digest, from_hex, sha256_hex

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"

# Edwards25519 (RFC 8032 section 5.1), for the public-key check below.
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _edwards_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P, (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P)


@functools.lru_cache(maxsize=4096)
def _point_problem(raw: bytes) -> str | None:
    """Why ``raw`` must not be accepted as a public key, or None. A key of small order (the identity, or a
    point of order 2, 4 or 8) verifies a signature anyone can make (R = identity, S = 0) on any message, so
    such a key could "sign" for nobody in particular and disown what it signed; a non-canonical or
    off-curve encoding is refused too. Checked by decoding the point and multiplying it by the cofactor 8."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return "a non-canonical encoding"
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P != 0:
        x = x * _SQRT_M1 % _P
        if (v * x * x - u) % _P != 0:
            return "not a point on the curve"
    if x == 0 and sign:
        return "a non-canonical encoding"
    if x & 1 != sign:
        x = _P - x
    q = (x, y)
    for _ in range(3):
        q = _edwards_add(q, q)
    if q == (0, 1):
        return "a point of small order (it would verify forged signatures)"
    return None

Passphrase = bytes | str | None


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key, held as its raw 32 bytes (what the key id is computed from)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_SIZE:
            raise FormatError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes")
        problem = _point_problem(self.raw)
        if problem is not None:
            raise FormatError(f"not a usable Ed25519 public key: {problem}")

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        return cls(from_hex(text, length=PUBLIC_KEY_SIZE))

    def to_pem(self) -> bytes:
        return _public(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyFileError(f"not a PEM public key: {e}") from e
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"not an Ed25519 public key (got {type(key).__name__})")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the SubjectPublicKeyInfo PEM atomically (mode 0644: a public key is public)."""
        atomic_write(path, self.to_pem(), mode=0o644)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicKey:
        return cls.from_pem(_read(path, "public key"))

    def verify(self, kind: str, payload: bytes, signature: bytes) -> None:
        """Raise ``SignatureError`` unless ``signature`` is this key's signature of ``(kind, payload)``."""
        verify(self, kind, payload, signature)


class PrivateKey:
    """An Ed25519 private key. Not a value: it does not compare equal to a copy, and its repr hides it."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError("PrivateKey wraps an Ed25519PrivateKey")
        self._key = key

    def __repr__(self) -> str:
        return f"PrivateKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        """The key for a 32-byte RFC 8032 seed: for fixed test keys and known-answer vectors only."""
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except (ValueError, TypeError) as e:
            raise FormatError(f"an Ed25519 seed is 32 bytes: {e}") from e

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(
            self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def sign(self, kind: str, payload: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``domain_digest(kind, payload)``."""
        return self._key.sign(domain_digest(kind, payload))

    def derived_seed(self, purpose: str) -> bytes:
        """The 32-byte seed of a key derived from this one for a single ``purpose`` (``NoteSigningKey``):
        ``SHA-256("pawprint/v1/derived-key" || 0x00 || purpose || 0x00 || seed)``. Deterministic, so the key
        needs no file of its own; one-way, so the derived key reveals nothing of this one."""
        seed = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())
        return hashlib.sha256(b"pawprint/v1/derived-key\0" + purpose.encode("ascii") + b"\0" + seed).digest()


    def to_pem(self, passphrase: Passphrase = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best scheme ``cryptography`` offers when a passphrase is given."""
        secret = _passphrase_bytes(passphrase)
        encryption: serialization.KeySerializationEncryption
        if secret is None:
            encryption = serialization.NoEncryption()
        elif not secret:
            raise KeyFileError("the passphrase is empty; pass None to store the key unencrypted")
        else:
            encryption = serialization.BestAvailableEncryption(secret)
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    @classmethod
    def from_pem(cls, data: bytes, passphrase: Passphrase = None) -> PrivateKey:
        secret = _passphrase_bytes(passphrase)
        encrypted = _ENCRYPTED_PEM in data
        # cryptography's own messages for these cases are TypeErrors about arguments; say what to do.
        if encrypted and not secret:
            raise KeyFileError("the private key is encrypted: a passphrase is needed")
        if not encrypted and secret is not None:
            raise KeyFileError("the private key is not encrypted, but a passphrase was given")
        try:
            key = serialization.load_pem_private_key(data, password=secret)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            if encrypted:
                raise KeyFileError("cannot decrypt the private key: wrong passphrase or corrupt file") from e
            raise KeyFileError(f"not a PEM private key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"not an Ed25519 private key (got {type(key).__name__})")
        return cls(key)

    def save(self, path: str | os.PathLike[str], passphrase: Passphrase = None, *, overwrite: bool = False) -> None:
        """Write the key atomically, mode 0600. Refuses to replace an existing file unless ``overwrite``:
        losing a private key to a typo is not recoverable."""
        try:
            atomic_write(path, self.to_pem(passphrase), mode=0o600, overwrite=overwrite)
        except FileExistsError as e:
            raise KeyFileError(f"{path} already exists; not overwriting a key file") from e

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: Passphrase = None) -> PrivateKey:
        data = _read(path, "private key")
        try:
            return cls.from_pem(data, passphrase)
        except KeyFileError as e:
            raise KeyFileError(f"{path}: {e}") from e


def key_id(raw_public_key: bytes) -> str:
    """Hex SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(raw_public_key) != PUBLIC_KEY_SIZE:
        raise FormatError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} raw bytes")
    return sha256_hex(raw_public_key)


def verify(public_key: PublicKey, kind: str, payload: bytes, signature: bytes) -> None:
    """Raise ``SignatureError`` unless ``signature`` is ``public_key``'s signature of ``(kind, payload)``.

    Every failure (wrong key, kind, payload, malformed signature or key) is the same opaque error: the
    peer learns nothing about which part was wrong. An unknown kind is a bug at the call site and raises
    ``UnknownKindError`` instead.
    """
    digest = domain_digest(kind, payload)
    try:
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise InvalidSignature
        _public(public_key.raw).verify(signature, digest)
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        raise SignatureError("signature verification failed") from None


def _public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _passphrase_bytes(passphrase: Passphrase) -> bytes | None:
    if passphrase is None or isinstance(passphrase, bytes):
        return passphrase
    return passphrase.encode("utf-8")


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {what} file {path}: {e.strerror or e}") from e


class NoteSigningKey:
    """An Ed25519 key that signs C2SP signed-note texts and nothing else.

    The note spec signs the raw note text, with no pawprint domain kind; so such a signature is made only by
    a key used for nothing else (domain separation by key): one derived from a pawprint key for that purpose
    (``PrivateKey.derived_seed``), which never signs anything through ``PrivateKey.sign``."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        try:
            self._key = Ed25519PrivateKey.from_private_bytes(seed)
        except (ValueError, TypeError) as e:
            raise FormatError(f"an Ed25519 seed is 32 bytes: {e}") from e

    def __repr__(self) -> str:
        return f"NoteSigningKey(key_id={self.public_key.key_id!r})"

    @classmethod
    def derive(cls, key: PrivateKey, purpose: str) -> NoteSigningKey:
        return cls(key.derived_seed(purpose))

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(
            self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def sign_note(self, text: bytes) -> bytes:
        """The 64-byte RFC 8032 Ed25519 signature of the note text itself."""
        return self._key.sign(text)


def verify_note_signature(public_key: PublicKey, text: bytes, signature: bytes) -> None:
    """``SignatureError`` unless ``signature`` is ``public_key``'s Ed25519 signature of the note ``text``."""
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError("signature verification failed")
    try:
        _public(public_key.raw).verify(signature, text)
    except InvalidSignature:
        raise SignatureError("signature verification failed") from None
