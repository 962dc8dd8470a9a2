"""Witness cosignatures (C2SP tlog-cosignature), add-checkpoint requests (C2SP tlog-witness) and the clients'
"k of these n witnesses" policy, as bytes: what each line and request is, what a forgery or a shortfall does."""

from __future__ import annotations

import base64
import hashlib

import pytest

from protocol import (
    AddCheckpoint,
    Checkpoint,
    CheckpointError,
    PrivateKey,
    Role,
    SignatureError,
    TrustStore,
    WitnessError,
    WitnessPolicy,
    WitnessPolicyError,
    cosign,
    parse_add_checkpoint,
    parse_checkpoint,
    parse_cosignature_lines,
    parse_witness_verifier_key,
    sign_checkpoint,
    verify_cosignature,
    with_cosignatures,
    witness_signing_key,
    witness_verifier_key,
)

LOG = PrivateKey.from_seed(b"\x31" * 32)
WITNESSES = [PrivateKey.from_seed(bytes([0x40 + i]) * 32) for i in range(3)]
NAMES = ["witness.example/a", "witness.example/b", "witness.example/c"]
CP = Checkpoint("pawprint/registry/test", 5, hashlib.sha256(b"root").digest(), 1_700_000_100)


def _signed() -> str:
    return sign_checkpoint(CP, LOG).text


def _cosigned(indices: list[int], at: int = 1_700_000_200) -> str:
    signed = parse_checkpoint(_signed())
    lines = [cosign(CP, NAMES[i], witness_signing_key(WITNESSES[i]), at) for i in indices]
    return with_cosignatures(signed, lines).text


def _trust(indices: list[int] = [0, 1, 2]) -> TrustStore:  # noqa: B006 - read only
    store = TrustStore()
    for i in indices:
        store.add(witness_signing_key(WITNESSES[i]).public_key, Role.WITNESS, name=NAMES[i])
    return store


def test_a_cosignature_line_is_the_c2sp_bytes() -> None:
    key = witness_signing_key(WITNESSES[0])
    line = cosign(CP, NAMES[0], key, 1_700_000_200)
    raw = base64.b64decode(line.line().split(" ")[2])
    # key ID: SHA-256(name || 0x0A || 0x04 || key)[:4]; then the big-endian uint64 time; then Ed25519
    assert raw[:4] == hashlib.sha256(NAMES[0].encode() + b"\n\x04" + key.public_key.raw).digest()[:4]
    assert int.from_bytes(raw[4:12], "big") == 1_700_000_200
    message = b"cosignature/v1\ntime 1700000200\n" + CP.body().encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(key.public_key.raw).verify(raw[12:], message)  # raises if not
    assert len(raw) == 4 + 8 + 64
    vkey = witness_verifier_key(NAMES[0], key.public_key)
    assert vkey.startswith(f"{NAMES[0]}+{raw[:4].hex()}+")
    assert parse_witness_verifier_key(vkey) == (NAMES[0], key.public_key)


def test_cosignatures_verify_and_a_changed_time_or_checkpoint_does_not() -> None:
    note = _cosigned([0])
    key = witness_signing_key(WITNESSES[0]).public_key
    assert verify_cosignature(parse_checkpoint(note), NAMES[0], key) == 1_700_000_200
    # the log's own signature still verifies with the cosignature beside it
    assert parse_checkpoint(note).verify(LOG.public_key) == CP
    line = note.rstrip("\n").split("\n")[-1]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1  # the time
    forged = note.replace(line, f"\u2014 {NAMES[0]} {base64.b64encode(bytes(raw)).decode()}")
    with pytest.raises(SignatureError):
        verify_cosignature(parse_checkpoint(forged), NAMES[0], key)
    other = Checkpoint(CP.origin, CP.size, hashlib.sha256(b"fork").digest(), CP.time)
    moved = sign_checkpoint(other, LOG).text.rstrip("\n") + "\n" + line + "\n"  # a cosignature moved to a fork
    with pytest.raises(SignatureError):
        verify_cosignature(parse_checkpoint(moved), NAMES[0], key)
    with pytest.raises(WitnessError, match="no cosignature by the witness"):
        verify_cosignature(parse_checkpoint(_signed()), NAMES[0], key)


def test_the_policy_counts_cosignatures_of_trusted_witnesses_only() -> None:
    policy = WitnessPolicy.from_trust(_trust(), 2)
    assert [c.name for c in policy.check(_cosigned([0, 2]))] == [NAMES[0], NAMES[2]]
    with pytest.raises(WitnessPolicyError, match=r"cosigned by 1 of the 2 witnesses required"):
        policy.check(_cosigned([1]))
    # a cosignature by a witness the client does not trust does not count
    stranger = PrivateKey.from_seed(b"\x55" * 32)
    signed = parse_checkpoint(_cosigned([0]))
    extra = cosign(CP, "witness.example/x", witness_signing_key(stranger), 1_700_000_300)
    with pytest.raises(WitnessPolicyError):
        policy.check(with_cosignatures(signed, [extra]))
    # nor does a witness's line under another witness's name
    impostor = cosign(CP, NAMES[1], witness_signing_key(stranger), 1_700_000_300)
    with pytest.raises(WitnessPolicyError):
        policy.check(with_cosignatures(signed, [impostor]))
    # a line by a policy witness that does not verify is refused, not skipped
    note = _cosigned([0, 1, 2])
    line = note.rstrip("\n").split("\n")[-1]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    with pytest.raises(WitnessPolicyError, match="does not verify"):
        policy.check(note.replace(line, f"\u2014 {NAMES[2]} {base64.b64encode(bytes(raw)).decode()}"))
    # revoked witnesses are not counted; impossible policies are refused up front
    store = _trust()
    store.revoke(witness_signing_key(WITNESSES[0]).public_key.key_id)
    with pytest.raises(WitnessPolicyError):
        WitnessPolicy.from_trust(store, 2).check(_cosigned([0, 1]))
    with pytest.raises(WitnessError, match="needs at least that many witnesses"):
        WitnessPolicy.from_trust(_trust([0]), 2)
    with pytest.raises(WitnessError, match="at least 1"):
        WitnessPolicy.from_trust(_trust(), 0)
    with pytest.raises(WitnessError, match="no witness key"):
        WitnessPolicy.from_trust(TrustStore(), 1)


def test_add_checkpoint_requests_round_trip_and_malformed_ones_are_refused() -> None:
    proof = (hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest())
    request = AddCheckpoint(3, proof, _signed())
    body = request.to_bytes()
    assert body.startswith(b"old 3\n" + base64.b64encode(proof[0]) + b"\n")
    assert parse_add_checkpoint(body) == request
    assert parse_add_checkpoint(AddCheckpoint(0, (), _signed()).to_bytes()).proof == ()
    for bad, match in [
        (b"old 03\n\n" + _signed().encode(), "old <size>"),
        (b"new 3\n\n" + _signed().encode(), "old <size>"),
        (b"old 3\n" + _signed().encode(), "proof line 1"),  # the note's own blank line ends the proof
        (b"old 3\nno blank line", "blank line"),
        (b"old 3\nnot base64!\n\n" + _signed().encode(), "not base64"),
        (b"old 3\n" + base64.b64encode(b"short") + b"\n\n" + _signed().encode(), "32-byte hash"),
        (b"old 3\n" + b"\n".join([base64.b64encode(proof[0])] * 65) + b"\n\n" + _signed().encode(), "at most 64"),
        (b"\xff" * 10, "UTF-8"),
        (b"old 1\n\n" + b"x" * 100_000, "at most"),
    ]:
        with pytest.raises(WitnessError, match=match):
            parse_add_checkpoint(bad)


def test_answers_are_signature_lines() -> None:
    line = cosign(CP, NAMES[0], witness_signing_key(WITNESSES[0]), 7)
    assert parse_cosignature_lines(line.line().encode()) == [line]
    for bad in (b"", b"hello\n", line.line().rstrip("\n").encode()):
        with pytest.raises(CheckpointError):
            parse_cosignature_lines(bad)
