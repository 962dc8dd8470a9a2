"""The signed messages (``protocol._messages``): round trips, strict parsing, the score rule, kinds and files."""

from __future__ import annotations

import dataclasses
import hashlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    BUNDLE_FORMAT,
    RECEIPT_FORMAT,
    Bundle,
    Challenge,
    Manifest,
    Match,
    MessageError,
    PrivateKey,
    ProbeSpec,
    ProtocolError,
    Receipt,
    RegistryState,
    SignatureError,
    SignedMessage,
    SubmissionLimits,
    Tensor,
    TensorDigest,
    TermGroup,
    TermScoreRecord,
    WeightCommitment,
    decode_map,
    encode,
    format_score,
    open_challenge,
    open_manifest,
    open_receipt,
    parse_score,
    sign_message,
)

KEY = PrivateKey.from_seed(b"\x07" * 32)
OTHER = PrivateKey.from_seed(b"\x08" * 32)
TERMS = ("attn_qk", "attn_vo", "ffn")


def probe() -> ProbeSpec:
    return ProbeSpec("words-hash-v1-n4", 1, "words-hash-v1", ("▁one", "▁two", "▁three", "▁four"))


def challenge() -> Challenge:
    return Challenge(KEY.key_id, b"\x01" * 32, 100, 1000, (probe(),), "last2", "pawprint", SubmissionLimits(),
                     RegistryState(0, b"\x00" * 32))


def manifest_and_terms(nonce: bytes | None = b"\x02" * 32) -> tuple[Manifest, dict[str, Tensor]]:
    group = TermGroup(probe(), (True, False, True, True), (4, 5), "pawprint", "pawprint-terms/1", TERMS)
    terms = {n: Tensor("F32", (3, 3), bytes(range(36))) for n in group.tensor_names(0)}
    table = tuple(TensorDigest(n, "F32", (3, 3), hashlib.sha256(t.data).digest()) for n, t in terms.items())
    manifest = Manifest(KEY.key_id, nonce, 123, "agent/1", {"family": "llama", "n_layers": 6, "gated_ffn": True},
                        (group,), table, WeightCommitment(b"\x03" * 32, 10, 4000))
    return manifest, terms


def receipt() -> Receipt:
    match = Match("base", b"\x04" * 32, OTHER.key_id, probe().id, "0.912345", "0.500000", 4, "derived",
                  (TermScoreRecord(5, 5, "ffn", "0.500000"),))
    return Receipt(KEY.key_id, OTHER.key_id, b"\x01" * 32, b"\x05" * 32, b"\x03" * 32, RegistryState(1, b"\x06" * 32),
                   1, (match,), "derived", "rule", ("pawprint-terms/1",), 200, False)


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("make", [challenge, lambda: manifest_and_terms()[0], lambda: manifest_and_terms(None)[0],
                                  receipt])
def test_round_trip_through_canonical_bytes(make: object) -> None:
    message = make()  # type: ignore[operator]
    data = encode(message.to_map())
    again = type(message).from_map(decode_map(data))
    assert again == message
    assert encode(again.to_map()) == data


def test_probe_spec_id_is_the_plain_msgpack_hash_the_owner_used() -> None:
    # ProbeSpec is the one probe-set type now; its id must stay the id the owner's former ProbeSet computed
    # (plain msgpack of the four fields), or every registered probe set would change id.
    import hashlib

    import msgpack

    spec = probe()
    plain = {"name": spec.name, "rule": spec.rule, "tokens": list(spec.tokens), "version": spec.version}
    assert spec.id == hashlib.sha256(msgpack.packb(plain, use_bin_type=True)).hexdigest()


# ------------------------------------------------------------------------------------------ strict parsing
def test_unknown_missing_and_mistyped_fields_are_refused() -> None:
    m = manifest_and_terms()[0].to_map()
    with pytest.raises(MessageError, match="unexpected"):
        Manifest.from_map({**m, "extra": 1})
    with pytest.raises(MessageError, match="missing"):
        Manifest.from_map({k: v for k, v in m.items() if k != "agent"})
    with pytest.raises(MessageError, match="created_at"):
        Manifest.from_map({**m, "created_at": "123"})
    with pytest.raises(MessageError, match="boolean"):
        Manifest.from_map({**m, "created_at": True})
    with pytest.raises(MessageError, match="nonce"):
        Manifest.from_map({**m, "nonce": b"short"})
    with pytest.raises(MessageError, match="version"):
        Manifest.from_map({**m, "version": 2})
    with pytest.raises(MessageError, match="owner_key_id"):
        Manifest.from_map({**m, "owner_key_id": "A" * 64})
    group = m["groups"][0]  # type: ignore[index]
    with pytest.raises(MessageError, match="present"):
        Manifest.from_map({**m, "groups": [{**group, "present": [True]}]})


def test_terms_table_must_follow_the_groups() -> None:
    manifest, _ = manifest_and_terms()
    manifest.check_terms()
    t = manifest.tensors
    for broken in (
        t[1:],
        (t[1], t[0], *t[2:]),
        (dataclasses.replace(t[0], dtype="F16"), *t[1:]),
        (dataclasses.replace(t[0], shape=(3, 4)), *t[1:]),
    ):
        with pytest.raises(MessageError):
            dataclasses.replace(manifest, tensors=broken).check_terms()


# ------------------------------------------------------------------------------------------------ scores
def test_score_spelling() -> None:
    assert format_score(0.9123454) == "0.912345"
    assert format_score(-0.0000001) == "0.000000"
    assert format_score(1.0) == "1.000000" and format_score(-1) == "-1.000000"
    assert format_score(0.0000005) == "0.000000"  # the binary value is just below half: exact rounding
    for bad in (float("nan"), float("inf"), 1.5, -1.0000006):
        with pytest.raises(MessageError):
            format_score(bad)
    for bad in ("-0.000000", "0.91", "1.000001", "+0.100000", "0.1000000", " 0.100000", 0.5):
        with pytest.raises(MessageError):
            parse_score(bad)


@given(st.floats(min_value=-1, max_value=1))
def test_score_round_trip(x: float) -> None:
    s = format_score(x)
    assert abs(parse_score(s) - Decimal(x)) <= Decimal("0.0000005")
    assert format_score(float(parse_score(s))) == s


# ------------------------------------------------------------------------------------ signatures and kinds
def test_challenge_and_receipt_open_only_with_the_verifier_key() -> None:
    signed = sign_message(challenge(), KEY)
    assert open_challenge(signed, KEY.public_key) == challenge()
    with pytest.raises(SignatureError):
        open_challenge(signed, OTHER.public_key)
    with pytest.raises(SignatureError):  # a challenge is not a receipt
        open_receipt(signed, KEY.public_key)
    forged = sign_message(challenge(), OTHER)  # signed by a key the challenge does not name
    with pytest.raises(MessageError):
        open_challenge(forged, OTHER.public_key)


def test_online_and_offline_manifests_are_different_kinds() -> None:
    manifest, _ = manifest_and_terms()
    with pytest.raises(MessageError):
        sign_message(manifest, KEY)  # a manifest must say which kind it is
    online = sign_message(manifest, KEY, "manifest")
    assert open_manifest(online, "manifest") == manifest
    with pytest.raises(SignatureError):
        open_manifest(online, "bundle")
    with pytest.raises(MessageError):
        open_manifest(online, "receipt")


def test_bundle_file_round_trip_and_checks() -> None:
    manifest, terms = manifest_and_terms(None)
    bundle = Bundle.create(manifest, terms, KEY)
    data = bundle.to_bytes()
    again = Bundle.from_bytes(data)
    assert again.open() == manifest and again.to_bytes() == data
    assert decode_map(data)["format"] == BUNDLE_FORMAT
    with pytest.raises(MessageError):
        Bundle.create(manifest_and_terms()[0], terms, KEY)  # an offline bundle carries no nonce
    bad = dict(terms)
    name = next(iter(bad))
    bad[name] = Tensor("F32", (3, 3), bytes(36))
    with pytest.raises(MessageError, match="SHA-256"):
        Bundle(bundle.signed, bad).open()
    with pytest.raises(ProtocolError):
        Bundle.from_bytes(data[:-1])
    flipped = bytearray(data)
    flipped[40] ^= 1
    with pytest.raises(ProtocolError):
        Bundle.from_bytes(bytes(flipped)).open()


def test_receipt_file_round_trip() -> None:
    signed = sign_message(receipt(), KEY)
    data = signed.to_bytes(RECEIPT_FORMAT)
    assert SignedMessage.from_bytes(data, RECEIPT_FORMAT) == signed
    with pytest.raises(MessageError):
        SignedMessage.from_bytes(data, BUNDLE_FORMAT)
    assert open_receipt(SignedMessage.from_bytes(data, RECEIPT_FORMAT), KEY.public_key) == receipt()
