"""Signed checkpoints of the registry's transparency log: C2SP tlog-checkpoint notes (c2sp.org/signed-note).

A checkpoint commits the log operator to the log's first ``size`` entries (through their RFC 6962 / 9162
Merkle root) at a time. It is a signed note (https://c2sp.org/signed-note) whose text follows
https://c2sp.org/tlog-checkpoint: UTF-8, ``\\n`` line ends, no other control character; the origin, the
tree size, the base64 root hash and one extension line, the time; a blank line; signature lines::

    pawprint/registry/4f9a1c0e2b7d3a55        origin: names the log (non-empty, no space, no '+')
    42                                        tree size, decimal, no leading zeros
    3kLmM1y0...Q=                             root hash, standard base64 with padding (32 bytes)
    1700000000                                extension line: time, Unix seconds, decimal

    — pawprint/registry/4f9a1c0e2b7d3a55 AbCdEf...==      the checkpoint key's Ed25519 line
    — pawprint/registry/4f9a1c0e2b7d3a55 XyZ...==         the log key's binding line

A signature line is an em dash (U+2014), a space, the key name (here the origin), a space, and the base64 of
a 4-byte key ID followed by the signature. Two lines by the log:

- **The checkpoint key's line**, a plain C2SP Ed25519 signature: RFC 8032 Ed25519 over the note text itself,
  key ID = ``SHA-256(origin || 0x0A || 0x01 || public key)[:4]``. Any signed-note verifier (Go's
  ``golang.org/x/mod/sumdb/note``, a C2SP witness) configured with the log's verifier key
  ``<origin>+<hex key ID>+<base64(0x01 || public key)>`` (``verifier_key``) checks it. Because the note
  spec signs raw text, the key is used for nothing else: the *checkpoint key*, derived from the log's key
  for that purpose alone (``checkpoint_signing_key``), never signs through ``PrivateKey.sign``.
- **The binding line**, how a holder of only the log's pawprint key (the trust store's log key) learns and
  trusts the checkpoint key: signature type 0xff, key ID ``SHA-256(origin || 0x0A || 0xff ||
  "pawprint/checkpoint-binding" || log public key)[:4]``, and ``checkpoint public key (32 bytes) ||
  signature (64)``, the signature by the log key, kind ``checkpoint``, over ``"pawprint checkpoint-key\\n"
  || checkpoint public key || note text``. Other verifiers ignore it, as the note spec says they must
  ignore unknown keys.

``SignedCheckpoint.verify(log_key)`` needs both lines (the binding, then the checkpoint key's line it
names); ``verify_with(name, key)`` checks only a plain Ed25519 line, as a witness does. Lines by other keys
are ignored (witnesses may cosign) but must be well formed; a line by a known key that does not verify
rejects the note.

**Before C2SP checkpoints** (pawprint 1 notes) the same text carried a single line: key ID = the first four
bytes of the log's pawprint key id, signature by the log key over ``domain_digest("checkpoint", text)``.
Such notes still verify (``verify`` accepts that line when no binding line is present) so a log and the
checkpoints auditors saved before stay readable; everything signed now is C2SP.

This module is pure: text in, values out. It never reads a file, a clock or the network; whoever holds a
checkpoint and the log's public key can check it with ``protocol`` alone. Parsing is strict (one spelling
of every number and hash); a malformed note is a ``CheckpointError``, a bad signature a ``SignatureError``
that says nothing about why.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from protocol._errors import FormatError, SignatureError
from protocol._hashing import DIGEST_SIZE, from_hex, sha256
from protocol._keys import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    NoteSigningKey,
    PrivateKey,
    PublicKey,
    verify,
    verify_note_signature,
)
from protocol._merkle import MAX_TREE_SIZE

CHECKPOINT_KIND = "checkpoint"
CHECKPOINT_KEY_PURPOSE = "checkpoint-note"  # what the checkpoint key is derived for (``derived_seed``)
KEY_HASH_SIZE = 4
MAX_CHECKPOINT_BYTES = 64 * 1024
MAX_SIGNATURE_LINES = 64  # the note spec: accept at least 16
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space
ED25519_TYPE = 0x01  # C2SP signed-note signature type of Ed25519
BINDING_TYPE = b"\xffpawprint/checkpoint-binding"  # 0xff: a type the note spec leaves to others
BINDING_PREFIX = b"pawprint checkpoint-key\n"  # no checkpoint text starts so: an origin has no space

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_NAME = re.compile(r"[^\s+]+")  # C2SP: non-empty, no whitespace, no plus sign
_HEX8 = re.compile(r"[0-9a-f]{8}")


class CheckpointError(FormatError):
    """A checkpoint note is malformed, lacks the expected signature line, or names another log."""


@dataclass(frozen=True)
class Checkpoint:
    """The body of a checkpoint: which log (``origin``), how many entries, their Merkle root, and when."""

    origin: str
    size: int
    root: bytes
    time: int

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        for name in ("size", "time"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TREE_SIZE:
                raise CheckpointError(f"checkpoint {name} must be an integer in 0..2^64-1, got {value!r:.40}")
        if not isinstance(self.root, bytes) or len(self.root) != DIGEST_SIZE:
            raise CheckpointError(f"checkpoint root must be {DIGEST_SIZE} bytes")

    def body(self) -> str:
        """The note text, four lines each ending in a newline: what the signatures cover."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n{self.time}\n"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name, the 4-byte key ID and the signature bytes."""

    name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_hash + self.signature).decode("ascii")
        return f"{SIGNATURE_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    """A parsed checkpoint note (signatures not yet checked) and its exact text."""

    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...]

    @property
    def text(self) -> str:
        return self.checkpoint.body() + "\n" + "".join(s.line() for s in self.signatures)

    def verify(self, log_key: PublicKey, *, origin: str | None = None) -> Checkpoint:
        """The checkpoint, once signed by the log whose pawprint key is ``log_key``: its binding line names a
        checkpoint key and that key's C2SP line verifies (or, for a note signed before C2SP checkpoints, the
        log key's own line verifies). ``origin``, if given, must be the checkpoint's. ``CheckpointError``
        when no line is by that log, ``SignatureError`` when a line by it does not verify."""
        cp = self.checkpoint
        if origin is not None and cp.origin != origin:
            raise CheckpointError(f"the checkpoint is of log {cp.origin!r:.80}, not of {origin!r:.80}")
        text = cp.body().encode("utf-8")
        bindings = self._lines(cp.origin, binding_key_hash(cp.origin, log_key))
        if bindings:
            for s in bindings:
                if len(s.signature) != PUBLIC_KEY_SIZE + SIGNATURE_SIZE:
                    raise SignatureError("signature verification failed")
                raw_key = s.signature[:PUBLIC_KEY_SIZE]
                verify(log_key, CHECKPOINT_KIND, BINDING_PREFIX + raw_key + text, s.signature[PUBLIC_KEY_SIZE:])
            checkpoint_keys = {s.signature[:PUBLIC_KEY_SIZE] for s in bindings}
            if len(checkpoint_keys) != 1:
                raise CheckpointError("the checkpoint's binding lines name different checkpoint keys")
            try:
                checkpoint_key = PublicKey(checkpoint_keys.pop())
            except FormatError as e:
                raise CheckpointError(f"the checkpoint's binding line names no valid key: {e}") from e
            if not self._lines(cp.origin, note_key_hash(cp.origin, checkpoint_key)):
                raise CheckpointError(f"the checkpoint has no signature line by the checkpoint key of the log key "
                                      f"{log_key.key_id}")
            return self.verify_with(cp.origin, checkpoint_key)
        legacy = self._lines(cp.origin, legacy_key_hash(log_key))
        if not legacy:
            raise CheckpointError(f"the checkpoint has no signature line by the log key {log_key.key_id}")
        for s in legacy:
            if len(s.signature) != SIGNATURE_SIZE:
                raise SignatureError("signature verification failed")
            verify(log_key, CHECKPOINT_KIND, text, s.signature)
        return cp

    def checkpoint_key(self, log_key: PublicKey) -> PublicKey | None:
        """The log's checkpoint key as this note's binding line names it, once the note verifies with
        ``log_key`` (``verify``); None for a note signed before C2SP checkpoints (no binding line)."""
        self.verify(log_key)
        cp = self.checkpoint
        lines = self._lines(cp.origin, binding_key_hash(cp.origin, log_key))
        return PublicKey(lines[0].signature[:PUBLIC_KEY_SIZE]) if lines else None

    def verify_with(self, name: str, key: PublicKey) -> Checkpoint:
        """The checkpoint, once a C2SP Ed25519 line by ``key`` under ``name`` verifies, as any signed-note
        verifier holding the verifier key ``verifier_key(name, key)`` checks it (a witness's cosignature, or
        the log's checkpoint key). Every line by that key must verify."""
        lines = self._lines(name, note_key_hash(name, key))
        if not lines:
            raise CheckpointError(f"the checkpoint has no signature line by {verifier_key(name, key)}")
        for s in lines:
            verify_note_signature(key, self.checkpoint.body().encode("utf-8"), s.signature)
        return self.checkpoint

    def _lines(self, name: str, key_hash: bytes) -> list[NoteSignature]:
        return [s for s in self.signatures if s.key_hash == key_hash and s.name == name]


# ------------------------------------------------------------------------------------------------ keys
def note_key_hash(name: str, public_key: PublicKey) -> bytes:
    """The C2SP key ID of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    return sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + public_key.raw)[:KEY_HASH_SIZE]


def binding_key_hash(name: str, log_key: PublicKey) -> bytes:
    """The key ID of the log key's binding line (signature type 0xff, see the module docstring)."""
    return sha256(name.encode("utf-8") + b"\n" + BINDING_TYPE + log_key.raw)[:KEY_HASH_SIZE]


def legacy_key_hash(public_key: PublicKey) -> bytes:
    """The key hash of a checkpoint line signed before C2SP checkpoints: the first bytes of the key id."""
    return from_hex(public_key.key_id)[:KEY_HASH_SIZE]


key_hash = legacy_key_hash  # the name it had before C2SP checkpoints


def checkpoint_signing_key(log_key: PrivateKey) -> NoteSigningKey:
    """The log's checkpoint key: derived from its pawprint key, used for checkpoint notes and nothing else."""
    return NoteSigningKey.derive(log_key, CHECKPOINT_KEY_PURPOSE)


def checkpoint_public_key(log_key: PrivateKey) -> PublicKey:
    return checkpoint_signing_key(log_key).public_key


def verifier_key(name: str, public_key: PublicKey) -> str:
    """The signed-note verifier key of an Ed25519 key: ``<name>+<hex key ID>+<base64(0x01 || key)>``,
    what a witness or Go's ``note.NewVerifier`` is configured with."""
    _check_key_name(name, "key name")
    blob = base64.b64encode(bytes([ED25519_TYPE]) + public_key.raw).decode("ascii")
    return f"{name}+{note_key_hash(name, public_key).hex()}+{blob}"


def parse_verifier_key(text: str) -> tuple[str, PublicKey]:
    """The name and Ed25519 key of a verifier key string (``verifier_key``); ``CheckpointError`` if it is
    malformed, of another signature type, or its key ID does not match."""
    return parse_typed_verifier_key(text, ED25519_TYPE, note_key_hash, "verifier key", CheckpointError)


def parse_typed_verifier_key(text: str, key_type: int, key_hash: Callable[[str, PublicKey], bytes], what: str,
                             error: type[CheckpointError]) -> tuple[str, PublicKey]:
    """``NAME+KEYID+BASE64(type || Ed25519 key)`` of signature type ``key_type`` whose key ID is
    ``key_hash(name, key)``: the name and key, or ``error``."""
    parts = text.split("+", 2) if isinstance(text, str) else []  # base64 may hold "+": split twice
    if len(parts) != 3 or _KEY_NAME.fullmatch(parts[0]) is None or _HEX8.fullmatch(parts[1]) is None:
        raise error(f"a {what} is NAME+KEYID+BASE64 (an 8-hex-digit key ID)")
    raw = strict_base64(parts[2], f"the {what}", error)
    if len(raw) != 1 + PUBLIC_KEY_SIZE or raw[0] != key_type:
        raise error(f"the {what} is not of type 0x{key_type:02x} with a 32-byte Ed25519 key")
    try:
        key = PublicKey(raw[1:])
    except FormatError as e:
        raise error(f"the {what}'s public key is not valid: {e}") from e
    if key_hash(parts[0], key).hex() != parts[1]:
        raise error(f"the {what}'s key ID does not match its name and key")
    return parts[0], key


def sign_checkpoint(checkpoint: Checkpoint, key: PrivateKey) -> SignedCheckpoint:
    """``checkpoint`` signed by the log whose pawprint key is ``key``: the checkpoint key's C2SP line, then
    the log key's binding line, both named after the origin."""
    text = checkpoint.body().encode("utf-8")
    note_key = checkpoint_signing_key(key)
    public = note_key.public_key
    name = checkpoint.origin
    standard = NoteSignature(name, note_key_hash(name, public), note_key.sign_note(text))
    binding = NoteSignature(name, binding_key_hash(name, key.public_key),
                            public.raw + key.sign(CHECKPOINT_KIND, BINDING_PREFIX + public.raw + text))
    return SignedCheckpoint(checkpoint, (standard, binding))


def cosign_checkpoint(signed: SignedCheckpoint, name: str, key: NoteSigningKey) -> SignedCheckpoint:
    """``signed`` with one more C2SP Ed25519 line, by ``key`` under ``name`` (a cosigner's)."""
    line = NoteSignature(name, note_key_hash(name, key.public_key),
                         key.sign_note(signed.checkpoint.body().encode("utf-8")))
    return SignedCheckpoint(signed.checkpoint, (*signed.signatures, line))


def parse_checkpoint(note: str | bytes) -> SignedCheckpoint:
    """Parse a checkpoint note strictly, without checking any signature (``SignedCheckpoint.verify`` does)."""
    text = _text(note)
    if not text.endswith("\n"):
        raise CheckpointError("a checkpoint ends with a newline")
    body, sep, rest = text[:-1].rpartition("\n\n")  # the note spec: the last blank line ends the text
    if not sep:
        raise CheckpointError("a checkpoint has a body, a blank line, then signature lines (no blank line found)")
    lines = body.split("\n")
    if "" in lines:
        raise CheckpointError("a checkpoint's text has no empty line")
    if len(lines) != 4:
        raise CheckpointError(f"a checkpoint body has 4 lines (origin, size, root hash, time), found {len(lines)}")
    origin, size, root, time = lines
    checkpoint = Checkpoint(origin, _decimal(size, "size"), _root(root), _decimal(time, "time"))
    sig_lines = rest.split("\n")
    if len(sig_lines) > MAX_SIGNATURE_LINES:
        raise CheckpointError(f"a checkpoint has at most {MAX_SIGNATURE_LINES} signature lines")
    return SignedCheckpoint(checkpoint, tuple(_signature_line(i, line) for i, line in enumerate(sig_lines, 1)))


def open_checkpoint(note: str | bytes, log_key: PublicKey, *, origin: str | None = None) -> Checkpoint:
    """Parse ``note`` and check it is signed by the log of ``log_key`` (and of log ``origin``, if given)."""
    return parse_checkpoint(note).verify(log_key, origin=origin)


# ---------------------------------------------------------------------------------------------- parsing
def _text(note: str | bytes) -> str:
    if isinstance(note, bytes):
        if len(note) > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes")
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"a checkpoint is UTF-8 text: {e}") from e
    elif not isinstance(note, str):
        raise CheckpointError(f"a checkpoint is text, not {type(note).__name__}")
    else:
        text = note
        try:
            # Strict: a lone surrogate (from a JSON "\ud800" escape, say) has no UTF-8 form, so a note holding
            # one could be parsed here but never written out or re-read as the same text.
            size = len(note.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise CheckpointError(f"a checkpoint is UTF-8 text: {e}") from e
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes")
    if any(c < " " and c != "\n" for c in text):
        raise CheckpointError("a checkpoint holds no control character other than newline")
    return text


def _check_key_name(name: object, what: str) -> None:
    if not isinstance(name, str) or _KEY_NAME.fullmatch(name) is None or not name.isprintable():
        raise CheckpointError(f"the {what} must be non-empty printable text without spaces or '+'")


def _check_origin(origin: object) -> None:
    if not isinstance(origin, str) or not origin:
        raise CheckpointError("the checkpoint's origin line is empty")
    if origin != origin.strip() or not origin.isprintable():
        raise CheckpointError("the checkpoint's origin has surrounding spaces or unprintable characters")
    if _KEY_NAME.fullmatch(origin) is None:
        raise CheckpointError("the checkpoint's origin must not contain spaces or '+'")


def _decimal(text: str, what: str) -> int:
    if _DECIMAL.fullmatch(text) is None:
        raise CheckpointError(f"the checkpoint's {what} line is not a decimal number without leading zeros")
    value = int(text)
    if value > MAX_TREE_SIZE:
        raise CheckpointError(f"the checkpoint's {what} does not fit in 64 bits")
    return value


def _root(text: str) -> bytes:
    raw = _base64(text, "root hash line")
    if len(raw) != DIGEST_SIZE:
        raise CheckpointError(f"the checkpoint's root hash is {len(raw)} bytes, expected {DIGEST_SIZE}")
    return raw


def _base64(text: str, what: str) -> bytes:
    return strict_base64(text, f"the checkpoint's {what}")


def strict_base64(text: str, what: str, error: type[CheckpointError] = CheckpointError) -> bytes:
    """Standard base64 with padding, in its one canonical spelling; ``error`` naming ``what`` otherwise."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise error(f"{what} is not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise error(f"{what} is not canonical base64")
    return raw


def _signature_line(number: int, line: str) -> NoteSignature:
    what = f"signature line {number}"
    if not line.startswith(SIGNATURE_PREFIX):
        raise CheckpointError(f"{what} does not start with an em dash and a space")
    parts = line[len(SIGNATURE_PREFIX):].split(" ")
    if len(parts) != 2 or _KEY_NAME.fullmatch(parts[0]) is None:
        raise CheckpointError(f"{what} is not '\u2014 NAME BASE64'")
    raw = _base64(parts[1], what)
    if len(raw) <= KEY_HASH_SIZE:
        raise CheckpointError(f"{what} is too short for a key hash and a signature")
    return NoteSignature(parts[0], raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:])
