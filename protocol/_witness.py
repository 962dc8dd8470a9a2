"""Witnesses of the registry log: C2SP tlog-cosignature lines, tlog-witness requests and the clients' policy.

A **witness** (``pawprint witness serve``) is a party other than the log operator that keeps, for each log it
knows, the latest checkpoint it cosigned, and cosigns a newer checkpoint only when a consistency proof shows
it extends that one (https://c2sp.org/tlog-witness). A log operator who shows two forks of its log to two
audiences can get at most one of them cosigned by each honest witness; a client that requires cosignatures
of ``k`` of ``n`` witnesses it trusts (``WitnessPolicy``) therefore refuses every fork but one as long as
fewer than ``k`` of them collude with the operator. That, and nothing more, is what witnesses add:

- they see checkpoints, never entries, so they vouch for *consistency*, not for what the entries say;
- a witness that is down leaves the checkpoint with fewer cosignatures: clients then refuse it (the policy is
  a liveness cost the operator pays, never a reason to accept less);
- each cosignature carries the witness's own clock (``time``), so a checkpoint cosigned at ``t`` existed by
  ``t`` whatever the log's clock says; pawprint's witnesses also refuse a checkpoint whose time line is in
  their future (beyond ``MAX_CLOCK_SKEW_S``) or earlier than the last one they cosigned for the log, so a
  backdated checkpoint is not cosigned.

**Cosignature lines** (https://c2sp.org/tlog-cosignature, signature type 0x04): a signed-note line by the
witness's name, whose bytes are the 4-byte key ID ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``, the
cosignature time as a big-endian uint64 and the Ed25519 signature over::

    cosignature/v1
    time <decimal time>
    <checkpoint body>

The witness's key is derived from its pawprint key for this purpose alone (``witness_signing_key``), so it
signs nothing else. Its verifier key is ``<name>+<hex key ID>+<base64(0x04 || public key)>``.

**add-checkpoint requests** (tlog-witness): ``old <size>``, one base64 consistency-proof hash per line, a
blank line, then the checkpoint note. This module only encodes and parses them; the witness server is in
``witness/`` and the log's side in ``verifier``.

Pure: text and bytes in, values out; it reads no file, clock or network (times are parameters).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from protocol._checkpoint import (
    KEY_HASH_SIZE,
    Checkpoint,
    CheckpointError,
    NoteSignature,
    SignedCheckpoint,
    parse_checkpoint,
    parse_typed_verifier_key,
    strict_base64,
)
from protocol._errors import SignatureError
from protocol._hashing import DIGEST_SIZE, sha256
from protocol._keys import SIGNATURE_SIZE, NoteSigningKey, PrivateKey, PublicKey, verify_note_signature
from protocol._merkle import MAX_TREE_SIZE
from protocol._trust import Role, TrustStore

COSIGNATURE_TYPE = 0x04  # C2SP tlog-cosignature
COSIGNATURE_SIZE = 8 + SIGNATURE_SIZE  # timestamp, then the Ed25519 signature
WITNESS_KEY_PURPOSE = "witness-cosignature"  # what a witness's cosigning key is derived for
MAX_CLOCK_SKEW_S = 300  # a witness refuses a checkpoint dated further than this into its future
MAX_PROOF_HASHES = 64  # a consistency proof of a tree of 2^64 entries has fewer
MAX_REQUEST_BYTES = 96 * 1024  # a checkpoint (64 KiB at most) and a proof
ADD_CHECKPOINT_PATH = "/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"  # a 409's body: the witness's latest size for the log

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_NAME = re.compile(r"[^\s+]+")


class WitnessError(CheckpointError):
    """A malformed cosignature, witness verifier key or add-checkpoint request."""


class WitnessPolicyError(SignatureError):
    """A checkpoint lacks the cosignatures a client's witness policy requires (a verification failure)."""


# ------------------------------------------------------------------------------------------------ keys
def witness_signing_key(key: PrivateKey) -> NoteSigningKey:
    """A witness's cosigning key: derived from its pawprint key, used for cosignatures and nothing else."""
    return NoteSigningKey.derive(key, WITNESS_KEY_PURPOSE)


def cosignature_key_hash(name: str, public_key: PublicKey) -> bytes:
    """The C2SP key ID of a cosignature key: ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``."""
    return sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_TYPE]) + public_key.raw)[:KEY_HASH_SIZE]


def witness_verifier_key(name: str, public_key: PublicKey) -> str:
    """``<name>+<hex key ID>+<base64(0x04 || public key)>``: how a witness's key is written down."""
    _check_name(name)
    blob = base64.b64encode(bytes([COSIGNATURE_TYPE]) + public_key.raw).decode("ascii")
    return f"{name}+{cosignature_key_hash(name, public_key).hex()}+{blob}"


def parse_witness_verifier_key(text: str) -> tuple[str, PublicKey]:
    """The name and key of a witness verifier key (``witness_verifier_key``); ``WitnessError`` otherwise."""
    return parse_typed_verifier_key(text, COSIGNATURE_TYPE, cosignature_key_hash, "witness verifier key",
                                    WitnessError)


# --------------------------------------------------------------------------------------- cosignatures
def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What a cosignature signs: ``cosignature/v1``, ``time <timestamp>``, then the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode("ascii") + checkpoint.body().encode("utf-8")


def cosign(checkpoint: Checkpoint, name: str, key: NoteSigningKey, timestamp: int) -> NoteSignature:
    """The witness ``name``'s cosignature line on ``checkpoint`` at ``timestamp`` (Unix seconds, its clock)."""
    _check_name(name)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TREE_SIZE:
        raise WitnessError(f"a cosignature time is an integer in 0..2^64-1, got {timestamp!r:.40}")
    signature = key.sign_note(cosigned_message(checkpoint, timestamp))
    return NoteSignature(name, cosignature_key_hash(name, key.public_key),
                         timestamp.to_bytes(8, "big") + signature)


def verify_cosignature(signed: SignedCheckpoint, name: str, key: PublicKey) -> int:
    """The time of the cosignature by ``key`` under ``name``, once every such line verifies (the latest, if
    several). ``WitnessError`` when there is none, ``SignatureError`` when one does not verify."""
    key_hash = cosignature_key_hash(name, key)
    lines = [s for s in signed.signatures if s.name == name and s.key_hash == key_hash]
    if not lines:
        raise WitnessError(f"the checkpoint has no cosignature by the witness {name}")
    times = []
    for s in lines:
        if len(s.signature) != COSIGNATURE_SIZE:
            raise SignatureError("signature verification failed")
        timestamp = int.from_bytes(s.signature[:8], "big")
        verify_note_signature(key, cosigned_message(signed.checkpoint, timestamp), s.signature[8:])
        times.append(timestamp)
    return max(times)


def with_cosignatures(signed: SignedCheckpoint, lines: Iterable[NoteSignature]) -> SignedCheckpoint:
    """``signed`` with ``lines`` added, each replacing an earlier line by the same key (name and key ID)."""
    new = list(lines)
    keys = {(s.name, s.key_hash) for s in new}
    kept = [s for s in signed.signatures if (s.name, s.key_hash) not in keys]
    return SignedCheckpoint(signed.checkpoint, (*kept, *new))


def parse_cosignature_lines(body: bytes | str) -> list[NoteSignature]:
    """The signature lines a witness answers an add-checkpoint request with (each ends with a newline)."""
    text = body.decode("utf-8", "strict") if isinstance(body, bytes) else body
    if not text.endswith("\n") or len(text) > MAX_REQUEST_BYTES:
        raise WitnessError("a witness answers with signature lines, each ending with a newline")
    # parse them as a note's signature lines, on a placeholder body
    placeholder = Checkpoint("x", 0, bytes(DIGEST_SIZE), 0).body()
    try:
        return list(parse_checkpoint(placeholder + "\n" + text).signatures)
    except CheckpointError as e:
        raise WitnessError(f"the witness's answer is not signature lines: {e}") from e


# ------------------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class Cosigned:
    """One witness's valid cosignature: who, and when by its clock."""

    name: str
    key_id: str
    time: int


@dataclass(frozen=True)
class WitnessPolicy:
    """"``threshold`` of these ``witnesses``": the cosignatures a client requires on a log checkpoint."""

    witnesses: tuple[tuple[str, PublicKey], ...]
    threshold: int

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, int) or isinstance(self.threshold, bool) or self.threshold < 1:
            raise WitnessError(f"a witness policy requires at least 1 cosignature, not {self.threshold!r:.20}")
        if self.threshold > len(self.witnesses):
            raise WitnessError(f"a policy of {self.threshold} cosignatures needs at least that many witnesses; "
                               f"{len(self.witnesses)} known")
        names = [n for n, _k in self.witnesses]
        if len(set(names)) != len(names):
            raise WitnessError("two witnesses of a policy have the same name")

    @classmethod
    def from_trust(cls, trust: TrustStore, threshold: int) -> WitnessPolicy:
        """``threshold`` of the trust store's witness keys (role ``witness``, not revoked); each key's name in
        the store is the witness's name in its cosignatures."""
        witnesses = []
        for entry in sorted(trust, key=lambda e: e.key_id):
            if Role.WITNESS in entry.roles and not entry.revoked:
                if entry.name is None:
                    raise WitnessError(f"the trust store's witness key {entry.key_id} has no name: a witness is "
                                       "known by the name it cosigns under")
                _check_name(entry.name)
                witnesses.append((entry.name, entry.public_key))
        if not witnesses:
            raise WitnessError("the trust store holds no witness key (role witness)")
        return cls(tuple(witnesses), threshold)

    def describe(self) -> str:
        return f"{self.threshold} of {len(self.witnesses)} witnesses ({', '.join(n for n, _k in self.witnesses)})"

    def check(self, note: str | bytes | SignedCheckpoint) -> list[Cosigned]:
        """The valid cosignatures of the policy's witnesses on ``note``; ``WitnessPolicyError`` unless there are
        at least ``threshold``. A line by a policy witness that does not verify is an error, not a miss: a
        note carrying a forged cosignature is refused."""
        signed = note if isinstance(note, SignedCheckpoint) else parse_checkpoint(note)
        found: list[Cosigned] = []
        missing: list[str] = []
        for name, key in self.witnesses:
            try:
                found.append(Cosigned(name, key.key_id, verify_cosignature(signed, name, key)))
            except WitnessError:
                missing.append(name)
            except SignatureError:
                raise WitnessPolicyError(
                    f"the checkpoint's cosignature by the witness {name} does not verify") from None
        if len(found) < self.threshold:
            raise WitnessPolicyError(
                f"the checkpoint of size {signed.checkpoint.size} is cosigned by {len(found)} of the "
                f"{self.threshold} witnesses required ({self.describe()}; missing: {', '.join(missing)}): "
                "a log showing different histories to different readers is not ruled out")
        return found


# --------------------------------------------------------------------------- add-checkpoint requests
@dataclass(frozen=True)
class AddCheckpoint:
    """A tlog-witness add-checkpoint request: the size the log believes the witness is at, the consistency
    proof from it, and the new checkpoint note (signatures unchecked)."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def to_bytes(self) -> bytes:
        lines = [f"old {self.old_size}"] + [base64.b64encode(h).decode("ascii") for h in self.proof]
        return ("\n".join(lines) + "\n\n" + self.note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request strictly; ``WitnessError`` (a 400) when malformed."""
    if not isinstance(body, bytes) or len(body) > MAX_REQUEST_BYTES:
        raise WitnessError(f"an add-checkpoint request is at most {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WitnessError(f"an add-checkpoint request is UTF-8 text: {e}") from e
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessError("an add-checkpoint request has an 'old' line, proof lines, a blank line and a note")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or _DECIMAL.fullmatch(lines[0][4:]) is None:
        raise WitnessError("an add-checkpoint request starts with 'old <size>' (decimal, no leading zeros)")
    old = int(lines[0][4:])
    if old > MAX_TREE_SIZE:
        raise WitnessError("the old size does not fit in 64 bits")
    if len(lines) - 1 > MAX_PROOF_HASHES:
        raise WitnessError(f"a consistency proof has at most {MAX_PROOF_HASHES} hashes")
    proof = []
    for i, line in enumerate(lines[1:], 1):
        raw = _b64(line, f"proof line {i}")
        if len(raw) != DIGEST_SIZE:
            raise WitnessError(f"proof line {i} is not a {DIGEST_SIZE}-byte hash")
        proof.append(raw)
    return AddCheckpoint(old, tuple(proof), note)


# ------------------------------------------------------------------------------------------- helpers
def _check_name(name: object) -> None:
    if not isinstance(name, str) or _KEY_NAME.fullmatch(name) is None or not name.isprintable():
        raise WitnessError("a witness name is non-empty printable text without spaces or '+'")


def _b64(text: str, what: str) -> bytes:
    return strict_base64(text, f"the {what}", WitnessError)
