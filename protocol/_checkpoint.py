"""Signed checkpoints of the registry's transparency log: a text note, in the style of C2SP signed notes.

A checkpoint commits the log operator to the log's first ``size`` entries (through their RFC 9162 Merkle
root) at a time. Its text, UTF-8 with ``\\n`` line ends, is a body of exactly four lines, a blank line, and
one or more signature lines::

    pawprint/registry/4f9a1c0e2b7d3a55        origin: names the log (never empty, no trailing space)
    42                                        tree size, decimal, no leading zeros
    3kLmM1y0...Q=                             root hash, standard base64 with padding (32 bytes)
    1700000000                                time, Unix seconds, decimal

    — pawprint/registry/4f9a1c0e2b7d3a55 AbCdEf...==

A signature line is an em dash (U+2014), a space, the key name, a space, and the base64 of the 4-byte key
hash followed by the signature. Lines whose key hash is not the expected key's are ignored (other parties
may cosign), but they must be well formed.

**Not byte-compatible with Go's ``note`` package, deliberately.** pawprint never signs raw bytes: the
signature is Ed25519 over ``domain_digest("checkpoint", body)``, where ``body`` is the text up to and
including the fourth line's newline, so a checkpoint signature can never be replayed as any other pawprint
signature. For the same reason the key hash is the first four bytes of the pawprint key id (SHA-256 of the
raw public key), not C2SP's hash of name, type byte and key.

This module is pure: text in, values out. It never reads a file, a clock or the network; whoever holds a
checkpoint and the log's public key can check it with ``protocol`` alone. Parsing is strict (one spelling
of every number and hash); a malformed note is a ``CheckpointError``, a bad signature a ``SignatureError``
that says nothing about why.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from protocol._errors import FormatError, SignatureError
from protocol._hashing import DIGEST_SIZE, from_hex
from protocol._keys import SIGNATURE_SIZE, PrivateKey, PublicKey, verify
from protocol._merkle import MAX_TREE_SIZE

CHECKPOINT_KIND = "checkpoint"
KEY_HASH_SIZE = 4
MAX_CHECKPOINT_BYTES = 64 * 1024
MAX_SIGNATURE_LINES = 64
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_NAME = re.compile(r"[^\s+]+")  # C2SP: non-empty, no whitespace, no plus sign


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
        """The four body lines, each ending in a newline: the text the signatures cover."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n{self.time}\n"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name, the 4-byte key hash and the signature bytes."""

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
        """The checkpoint, once a line by ``log_key`` (named as the origin) verifies; ``origin``, if given,
        must be the checkpoint's. ``CheckpointError`` when no line is by that key, ``SignatureError`` when
        the line does not verify."""
        cp = self.checkpoint
        if origin is not None and cp.origin != origin:
            raise CheckpointError(f"the checkpoint is of log {cp.origin!r:.80}, not of {origin!r:.80}")
        wanted = key_hash(log_key)
        lines = [s for s in self.signatures if s.key_hash == wanted and s.name == cp.origin]
        if not lines:
            raise CheckpointError(f"the checkpoint has no signature line by the log key {log_key.key_id}")
        for s in lines:
            if len(s.signature) != SIGNATURE_SIZE:
                raise SignatureError("signature verification failed")
            verify(log_key, CHECKPOINT_KIND, cp.body().encode("utf-8"), s.signature)
        return cp


def key_hash(public_key: PublicKey) -> bytes:
    """The 4-byte key hash of a signature line: the first bytes of the pawprint key id."""
    return from_hex(public_key.key_id)[:KEY_HASH_SIZE]


def sign_checkpoint(checkpoint: Checkpoint, key: PrivateKey) -> SignedCheckpoint:
    """``checkpoint`` signed by the log's ``key``, the signature line named after the origin."""
    signature = key.sign(CHECKPOINT_KIND, checkpoint.body().encode("utf-8"))
    return SignedCheckpoint(checkpoint, (NoteSignature(checkpoint.origin, key_hash(key.public_key), signature),))


def parse_checkpoint(note: str | bytes) -> SignedCheckpoint:
    """Parse a checkpoint note strictly, without checking any signature (``SignedCheckpoint.verify`` does)."""
    text = _text(note)
    if not text.endswith("\n"):
        raise CheckpointError("a checkpoint ends with a newline")
    body, sep, rest = text.partition("\n\n")
    if not sep:
        raise CheckpointError("a checkpoint has a body, a blank line, then signature lines (no blank line found)")
    lines = body.split("\n")
    if len(lines) != 4:
        raise CheckpointError(f"a checkpoint body has 4 lines (origin, size, root hash, time), found {len(lines)}")
    origin, size, root, time = lines
    checkpoint = Checkpoint(origin, _decimal(size, "size"), _root(root), _decimal(time, "time"))
    sig_lines = rest.split("\n")[:-1]  # the text ends in "\n": the last piece is empty
    if not sig_lines:
        raise CheckpointError("a checkpoint has at least one signature line")
    if len(sig_lines) > MAX_SIGNATURE_LINES:
        raise CheckpointError(f"a checkpoint has at most {MAX_SIGNATURE_LINES} signature lines")
    return SignedCheckpoint(checkpoint, tuple(_signature_line(i, line) for i, line in enumerate(sig_lines, 1)))


def open_checkpoint(note: str | bytes, log_key: PublicKey, *, origin: str | None = None) -> Checkpoint:
    """Parse ``note`` and check it is signed by ``log_key`` (and of log ``origin``, if given)."""
    return parse_checkpoint(note).verify(log_key, origin=origin)


# ---------------------------------------------------------------------------------------------- parsing
def _text(note: str | bytes) -> str:
    if isinstance(note, bytes):
        if len(note) > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes")
        try:
            return note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"a checkpoint is UTF-8 text: {e}") from e
    if not isinstance(note, str):
        raise CheckpointError(f"a checkpoint is text, not {type(note).__name__}")
    try:
        # Strict: a lone surrogate (from a JSON "\ud800" escape, say) has no UTF-8 form, so a note holding one
        # could be parsed here but never written out or re-read as the same text.
        size = len(note.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise CheckpointError(f"a checkpoint is UTF-8 text: {e}") from e
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes")
    return note


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
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise CheckpointError(f"the checkpoint's {what} is not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"the checkpoint's {what} is not canonical base64")
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
