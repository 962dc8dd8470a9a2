"""Property-based fuzzing of every decoder and verifier entry point that reads bytes from someone else.

Two kinds of input: arbitrary bytes (or text, or values), and mutations of the valid files of the corpus
(bit flips, truncations, insertions, deletions, duplicated slices), plus structure-aware edits that put an
arbitrary msgpack value at any place of a valid message map. The properties:

- **no crash**: the only exceptions are the documented ones (``ProtocolError`` and its subclasses in
  ``protocol``, ``VerifierError`` in the verifier's checks, ``InvariantsFileError`` for invariants files);
  never an ``IndexError``, ``KeyError``, ``TypeError``, ``struct.error``, ``UnicodeDecodeError``,
  ``RecursionError`` or ``MemoryError`` leaking out;
- **no hang**: every example runs under a deadline;
- **no acceptance of a mutated input**: a mutated signed or hashed file either fails, or what it yields is
  exactly what the original yields (a cosigner's line, say, is outside what a signature covers).

Runs are derandomised and use no example database, so CI sees the same examples on every build; the example
counts keep the whole file to well under a minute on two shared cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owner._invfile import load_invariants
from owner.errors import InvariantsFileError
from protocol import (
    RECEIPT_FORMAT,
    Bundle,
    Challenge,
    LogEntry,
    Manifest,
    PrivateKey,
    ProtocolError,
    PublicKey,
    Receipt,
    RegistryStatement,
    Role,
    SignedMessage,
    SubmissionLimits,
    TrustStore,
    audit_log,
    decode,
    decode_map,
    encode,
    from_hex,
    leaf_hash,
    open_challenge,
    open_checkpoint,
    open_receipt,
    open_statement,
    parse_checkpoint,
    parse_score,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from protocol._messages import check_p, check_z
from protocol._pb import pawprint_pb2
from tests.test_corpus import CONTEXT, CORPUS, LOG_KEY, ORIGIN, TRUST, VERIFIER_KEY, _challenges
from verifier import check_bundle, check_header
from verifier._server import _from_pb
from verifier.errors import VerifierError

# PAWPRINT_FUZZ_SCALE=20 (say) runs 20 times the examples, randomised: for a long hunt, not for CI.
SCALE = int(os.environ.get("PAWPRINT_FUZZ_SCALE", "1"))
FUZZ = settings(
    derandomize=SCALE == 1, database=None, deadline=timedelta(seconds=2), max_examples=200 * SCALE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=80 * SCALE)  # entry points that do real work per example (signatures, files)


def corpus(path: str) -> bytes:
    return (CORPUS / path).read_bytes()


TRUST_ROLES = tuple(Role(r) for r in CONTEXT["bundle_roles"])
# The corpus owner's key (scripts/make_corpus.py derives every key this way): an owner may sign anything.
OWNER = PrivateKey.from_seed(hashlib.sha256(b"pawprint corpus key: owner").digest())
BUNDLE = corpus("bundle/valid.bundle")
MANIFEST_PB = corpus("manifest/valid.pb")
CHALLENGE_PB = corpus("challenge/valid.pb")
RECEIPT = corpus("receipt/valid.receipt")
NOTE = corpus("checkpoint/valid-5.note")
COSIGNED = corpus("checkpoint/cosigned.note")
STATEMENT_PB = corpus("statement/register.pb")
ENTRY = corpus("log_entry/admin.entry")
TRUST_JSON = corpus("trust/valid.json")
INVARIANTS = corpus("invariants/valid.safetensors")
INCLUSION = json.loads(corpus("inclusion_proof/entry4-of-5.json"))
CONSISTENCY = json.loads(corpus("consistency_proof/3-to-5.json"))


# ------------------------------------------------------------------------------------------- strategies
@st.composite
def mutated(draw: st.DrawFn, base: bytes, max_steps: int = 3) -> bytes:
    """``base`` after 1..max_steps mutations; never ``base`` itself."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_steps))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "byte", "duplicate")))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "duplicate" and data:
            data[at:at] = data[at:at + draw(st.integers(1, 16))]
    out = bytes(data)
    if out == base:
        out = base[:-1]
    return out


leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
          | st.binary(max_size=40))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place (map key or list index path) inside a decoded message."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def edited_map(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a decoded message) with one place replaced by an arbitrary value, or a field removed or added."""
    value = msgpack.unpackb(msgpack.packb(base, use_bin_type=True), raw=False)  # a deep copy
    path = draw(st.sampled_from(_paths(value)[1:]))
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    op = draw(st.sampled_from(("replace", "remove", "add")))
    if op == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    elif op == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(values)
    else:
        parent[path[-1]] = draw(values)
    return value


def _only(allowed: tuple[type[BaseException], ...], fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``None`` if it raised one of ``allowed``; anything else fails the test."""
    try:
        return fn()
    except allowed:
        return None


# ---------------------------------------------------------------------------------- canonical msgpack
@FUZZ
@given(st.binary(max_size=200) | mutated(encode({"a": [1, "x", b"\x00", None, True], "b": {"c": -5}})))
def test_decode_accepts_only_canonical_bytes(data: bytes) -> None:
    value = _only((ProtocolError,), lambda: decode(data))
    if value is not None:
        assert encode(value) == data


@FUZZ
@given(st.binary(max_size=64))
def test_decode_map_refuses_cleanly(data: bytes) -> None:
    _only((ProtocolError,), lambda: decode_map(b"\x81\xa1k" + data))


@FUZZ
@given(st.integers(1, 100_000), st.sampled_from((b"\x91", b"\x81\xa0", b"\xdc\x00\x01")))
def test_decode_depth_bombs(depth: int, opener: bytes) -> None:
    _only((ProtocolError,), lambda: decode(opener * depth + b"\xc0"))


# ---------------------------------------------------------------------------------------- messages
def _payload(signed_pb: bytes) -> dict[str, Any]:
    return decode_map(pawprint_pb2.SignedPayload.FromString(signed_pb).payload)


MESSAGE_PARSERS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], object]]] = [
    ("manifest", _payload(MANIFEST_PB), Manifest.from_map),
    ("challenge", _payload(CHALLENGE_PB), Challenge.from_map),
    ("receipt", decode_map(SignedMessage.from_bytes(RECEIPT, RECEIPT_FORMAT).payload), Receipt.from_map),
    ("statement", _payload(STATEMENT_PB), RegistryStatement.from_map),
]


@pytest.mark.parametrize(("name", "base", "parse"), MESSAGE_PARSERS, ids=[m[0] for m in MESSAGE_PARSERS])
@FUZZ
@given(data=st.data())
def test_message_parsers_refuse_cleanly(name: str, base: dict[str, Any], parse: Callable[[Any], object],
                                        data: st.DataObject) -> None:
    edited = data.draw(edited_map(base))
    parsed = _only((ProtocolError,), lambda: parse(edited))
    if parsed is not None:
        # What parses must be exactly what it encodes to: no field ignored, none normalised on the way in.
        assert decode(encode(parsed.to_map())) == edited


@pytest.mark.parametrize(("name", "base", "parse"), MESSAGE_PARSERS, ids=[m[0] for m in MESSAGE_PARSERS])
@FUZZ
@given(value=values)
def test_message_parsers_take_any_value(name: str, base: dict[str, Any], parse: Callable[[Any], object],
                                        value: Any) -> None:
    _only((ProtocolError,), lambda: parse(value))


@FUZZ
@given(st.text(max_size=16) | st.from_regex(r"-?[01]\.[0-9]{6}", fullmatch=True))
def test_score_strings(text: str) -> None:
    _only((ProtocolError,), lambda: parse_score(text))
    _only((ProtocolError,), lambda: check_z(text))
    _only((ProtocolError,), lambda: check_p(text))


@FUZZ
@given(st.from_regex(r"[0-9]\.[0-9]{3}e[+-][0-9]{2,3}", fullmatch=True))
def test_p_value_strings(text: str) -> None:
    _only((ProtocolError,), lambda: check_p(text))


# ------------------------------------------------------------------------------------------ bundles
@FEW
@given(mutated(BUNDLE))
def test_mutated_bundle_is_never_accepted(data: bytes) -> None:
    bundle = _only((ProtocolError,), lambda: Bundle.from_bytes(data))
    if bundle is None:
        return
    with pytest.raises(ProtocolError):
        bundle.open()
    with pytest.raises(VerifierError):
        check_bundle(bundle, TRUST, TRUST_ROLES)


@FEW
@given(data=st.data())
def test_edited_bundle_manifest_refused_cleanly(data: st.DataObject) -> None:
    """An owner may sign anything: a signed but malformed manifest must still fail cleanly."""
    bundle = Bundle.from_bytes(BUNDLE)
    payload = encode(data.draw(edited_map(decode_map(bundle.signed.payload))))
    signed = SignedMessage(payload, OWNER.sign("bundle", payload), OWNER.public_key)
    edited = Bundle(signed, bundle.terms)
    _only((ProtocolError,), edited.open)
    _only((VerifierError,), lambda: check_bundle(edited, TRUST, TRUST_ROLES))


@FEW
@given(st.binary(max_size=300))
def test_random_bytes_are_not_bundles(data: bytes) -> None:
    _only((ProtocolError,), lambda: Bundle.from_bytes(data))


# ---------------------------------------------------------------------------------- online manifests
@FEW
@given(mutated(MANIFEST_PB))
def test_mutated_online_manifest_is_never_accepted(data: bytes) -> None:
    from google.protobuf.message import DecodeError

    message = _only((DecodeError,), lambda: pawprint_pb2.SignedPayload.FromString(data))
    if message is None:
        return
    original = pawprint_pb2.SignedPayload.FromString(MANIFEST_PB)
    try:
        header = check_header(_from_pb(message), trust=TRUST, challenges=_challenges(),
                              limits=SubmissionLimits())
    except VerifierError:
        return
    # Protobuf may skip an unknown field a mutation created; what is signed must be untouched.
    assert (message.payload, message.signature, message.public_key) == (
        original.payload, original.signature, original.public_key)
    assert header.signed.payload == original.payload


@FEW
@given(data=st.data())
def test_signed_but_malformed_online_manifest_refused_cleanly(data: st.DataObject) -> None:
    payload = encode(data.draw(edited_map(_payload(MANIFEST_PB))))
    signed = SignedMessage(payload, OWNER.sign("manifest", payload), OWNER.public_key)
    _only((VerifierError,), lambda: check_header(signed, trust=TRUST, challenges=_challenges(),
                                                 limits=SubmissionLimits()))


@FEW
@given(mutated(CHALLENGE_PB))
def test_mutated_challenge_is_never_accepted(data: bytes) -> None:
    from google.protobuf.message import DecodeError

    message = _only((DecodeError,), lambda: pawprint_pb2.SignedPayload.FromString(data))
    if message is None or len(message.public_key) != 32:
        return
    signed = SignedMessage(message.payload, message.signature, PublicKey(message.public_key))
    challenge = _only((ProtocolError,), lambda: open_challenge(signed, VERIFIER_KEY))
    if challenge is not None:
        assert encode(challenge.to_map()) == _signed_pb_payload(CHALLENGE_PB)


def _signed_pb_payload(data: bytes) -> bytes:
    return pawprint_pb2.SignedPayload.FromString(data).payload


# ------------------------------------------------------------------------------------------ receipts
@FEW
@given(mutated(RECEIPT))
def test_mutated_receipt_is_never_accepted(data: bytes) -> None:
    signed = _only((ProtocolError,), lambda: SignedMessage.from_bytes(data, RECEIPT_FORMAT))
    if signed is None:
        return
    receipt = _only((ProtocolError,), lambda: open_receipt(signed, VERIFIER_KEY))
    assert receipt is None, "a mutated receipt file verified"


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_not_signed_files(data: bytes) -> None:
    _only((ProtocolError,), lambda: SignedMessage.from_bytes(data, RECEIPT_FORMAT))


# --------------------------------------------------------------------------------------- checkpoints
@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_random_checkpoint_notes(note: bytes | str) -> None:
    _only((ProtocolError,), lambda: parse_checkpoint(note))


any_char = st.characters(exclude_categories=())  # lone surrogates included: a str can hold them, UTF-8 cannot
# Characters the note format gives a meaning to, or that look like it, drawn far more often than at random.
SPECIAL = ("\ud800", "\udfff", "\u2014", " ", "\n", "\r", "+", "=", "\x00", "\u00a0", "\u2028")
note_char = st.one_of(st.sampled_from(SPECIAL), st.sampled_from(SPECIAL), any_char)


@st.composite
def edited_note(draw: st.DrawFn) -> str:
    """The cosigned note with a few characters (any code point, surrogates included) put into, or replaced
    in, one of its words: a note as a JSON document or another Python caller may hand it over, as ``str``."""
    words = re.split(r"([ \n])", COSIGNED.decode())  # separators kept, so "".join gives the note back
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.sampled_from([j for j, w in enumerate(words) if w not in ("", " ", "\n")]))
        at = draw(st.integers(0, len(words[i])))
        cut = at + draw(st.integers(0, 1))  # insert, or replace one character
        words[i] = words[i][:at] + draw(note_char) + words[i][cut:]
    return "".join(words)


@settings(FUZZ, max_examples=500 * SCALE)  # cheap: text parsing only
@given(st.text(any_char, max_size=300) | edited_note())
def test_parsed_notes_are_text_that_round_trips(note: str) -> None:
    parsed = _only((ProtocolError,), lambda: parse_checkpoint(note))
    if parsed is not None:
        assert parse_checkpoint(parsed.text.encode("utf-8")) == parsed


@FEW
@given(mutated(NOTE) | mutated(COSIGNED))
def test_mutated_checkpoint_is_never_accepted_as_other_content(data: bytes) -> None:
    cp = _only((ProtocolError,), lambda: open_checkpoint(data, LOG_KEY, origin=ORIGIN))
    if cp is not None:
        assert cp == open_checkpoint(NOTE, LOG_KEY, origin=ORIGIN)


# -------------------------------------------------------------------------------------------- proofs
hashes = st.binary(min_size=32, max_size=32)
sizes = st.integers(0, 2**64 - 1) | st.integers(0, 64)
any_size = sizes | st.integers(-5, -1) | st.integers(2**64, 2**65) | st.booleans()


@FUZZ
@given(st.binary(max_size=40), any_size, any_size, st.lists(st.binary(max_size=40), max_size=70),
       st.binary(max_size=40))
def test_inclusion_random(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
    _only((ProtocolError,), lambda: verify_inclusion(leaf, index, size, proof, root))
    _only((ProtocolError,), lambda: root_from_inclusion_proof(leaf, index, size, proof))


@FUZZ
@given(any_size, any_size, st.binary(max_size=40), st.binary(max_size=40),
       st.lists(st.binary(max_size=40), max_size=70))
def test_consistency_random(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> None:
    _only((ProtocolError,), lambda: verify_consistency(old, new, old_root, new_root, proof))


def _proof_mutations(proof: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    def flip(args: tuple[int, int]) -> list[bytes]:
        i, bit = args
        out = list(proof)
        b = bytearray(out[i % len(out)])
        b[bit // 8] ^= 1 << (bit % 8)
        out[i % len(out)] = bytes(b)
        return out

    return st.one_of(
        st.tuples(st.integers(0, 10), st.integers(0, 255)).map(flip),
        st.integers(0, len(proof) - 1).map(lambda n: proof[:n]),
        st.lists(hashes, min_size=1, max_size=3).map(lambda extra: proof + extra),
        st.permutations(proof).filter(lambda p: p != proof),
    )


INC_CP = open_checkpoint(INCLUSION["checkpoint"], LOG_KEY)
INC_LEAF = leaf_hash(from_hex(INCLUSION["entry"]))
INC_PROOF = [from_hex(p) for p in INCLUSION["proof"]]


def _flipped(h: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, 8 * len(h) - 1).map(lambda bit: bytes(
        b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(h)))


# Sizes are not mutated on their own: a proof binds a leaf to a root, and only the signed checkpoint binds
# that root to a size (the same path can verify for two sizes whose ragged right edges coincide).
@FUZZ
@given(st.one_of(
    _proof_mutations(INC_PROOF).map(lambda p: (INCLUSION["index"], p, INC_CP.root, INC_LEAF)),
    st.integers(0, 20).filter(lambda i: i != INCLUSION["index"]).map(lambda i: (i, INC_PROOF, INC_CP.root, INC_LEAF)),
    _flipped(INC_CP.root).map(lambda r: (INCLUSION["index"], INC_PROOF, r, INC_LEAF)),
    _flipped(INC_LEAF).map(lambda leaf: (INCLUSION["index"], INC_PROOF, INC_CP.root, leaf)),
))
def test_mutated_inclusion_proof_is_never_accepted(case: tuple[int, list[bytes], bytes, bytes]) -> None:
    index, proof, root, leaf = case
    verify_inclusion(INC_LEAF, INCLUSION["index"], INC_CP.size, INC_PROOF, INC_CP.root)  # the original holds
    with pytest.raises(ProtocolError):
        verify_inclusion(leaf, index, INC_CP.size, proof, root)


CON_OLD = open_checkpoint(CONSISTENCY["old"], LOG_KEY)
CON_NEW = open_checkpoint(CONSISTENCY["new"], LOG_KEY)
CON_PROOF = [from_hex(p) for p in CONSISTENCY["proof"]]


@FUZZ
@given(st.one_of(
    _proof_mutations(CON_PROOF).map(lambda p: (p, CON_OLD.root, CON_NEW.root)),
    _flipped(CON_OLD.root).map(lambda r: (CON_PROOF, r, CON_NEW.root)),
    _flipped(CON_NEW.root).map(lambda r: (CON_PROOF, CON_OLD.root, r)),
))
def test_mutated_consistency_proof_is_never_accepted(case: tuple[list[bytes], bytes, bytes]) -> None:
    proof, old_root, new_root = case
    verify_consistency(CON_OLD.size, CON_NEW.size, CON_OLD.root, CON_NEW.root, CON_PROOF)
    with pytest.raises(ProtocolError):
        verify_consistency(CON_OLD.size, CON_NEW.size, old_root, new_root, proof)


# ------------------------------------------------------------------------------------ statements, log
@FEW
@given(mutated(STATEMENT_PB))
def test_mutated_statement_is_never_accepted(data: bytes) -> None:
    from google.protobuf.message import DecodeError

    message = _only((DecodeError,), lambda: pawprint_pb2.SignedPayload.FromString(data))
    if message is None or len(message.public_key) != 32:
        return
    signed = SignedMessage(message.payload, message.signature, PublicKey(message.public_key))
    statement = _only((ProtocolError,), lambda: open_statement(signed))
    if statement is not None:
        assert encode(statement.to_map()) == _signed_pb_payload(STATEMENT_PB)


@FEW
@given(mutated(ENTRY))
def test_mutated_log_entry_is_never_accepted(data: bytes) -> None:
    entry = _only((ProtocolError,), lambda: LogEntry.from_bytes(data).open(LOG_KEY))
    if entry is not None:
        # Only the log's own time is outside the signatures; the leaf hash (what a proof covers) changes with it.
        original = LogEntry.from_bytes(ENTRY)
        assert (entry.record.statement, entry.record.manifest) == (original.statement, original.manifest)
        assert entry.logged_at != original.logged_at and entry.record.leaf_hash != original.leaf_hash


AUDIT = json.loads(corpus("audit/3-to-5.json"))
AUDIT_ENTRIES = [from_hex(e) for e in AUDIT["entries"]]


@settings(FEW, max_examples=25 * SCALE)  # each example checks every signature of the log
@given(st.integers(0, len(AUDIT_ENTRIES) - 1), st.data())
def test_audit_of_a_log_with_a_mutated_entry_fails_without_raising(index: int, data: st.DataObject) -> None:
    entries = list(AUDIT_ENTRIES)
    entries[index] = data.draw(mutated(entries[index]))
    report = audit_log(AUDIT["saved"], AUDIT["current"], [from_hex(p) for p in AUDIT["proof"]], entries, LOG_KEY,
                       trust=TRUST)
    assert not report.ok


@FEW
@given(st.binary(max_size=300) | mutated(AUDIT["saved"].encode()), st.binary(max_size=300)
       | mutated(AUDIT["current"].encode()), st.lists(st.binary(max_size=40), max_size=4))
def test_audit_with_hostile_checkpoints_fails_without_raising(saved: bytes, current: bytes,
                                                               proof: list[bytes]) -> None:
    report = audit_log(saved, current, proof, AUDIT_ENTRIES[:1], LOG_KEY)
    assert not report.ok


@FEW
@given(st.binary(max_size=300))
def test_random_bytes_are_not_log_entries(data: bytes) -> None:
    _only((ProtocolError,), lambda: LogEntry.from_bytes(data))


# ------------------------------------------------------------------------------------------ trust
@FUZZ
@given(st.binary(max_size=200) | mutated(TRUST_JSON))
def test_trust_store_refuses_cleanly(data: bytes) -> None:
    store = _only((ProtocolError,), lambda: TrustStore.from_json(data))
    if store is not None:
        # Whatever a mutation left acceptable (whitespace, a name) must not add trust.
        original = TrustStore.from_json(TRUST_JSON)
        for key in store:
            before = original.get(key.key_id)
            assert before is not None and key.roles <= before.roles and key.revoked >= before.revoked


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.floats(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=12))
def test_trust_store_any_json_value(value: Any) -> None:
    doc = {"format": "pawprint/trust-store/v1", "keys": [value]}
    _only((ProtocolError,), lambda: TrustStore.from_json(json.dumps(doc).encode()))
    _only((ProtocolError,), lambda: TrustStore.from_json(json.dumps(value).encode()))


def test_trust_store_depth_bomb() -> None:
    _only((ProtocolError,), lambda: TrustStore.from_json(b"[" * 5000))


# ---------------------------------------------------------------------------------------- invariants
@settings(FEW, max_examples=40 * SCALE)
@given(mutated(INVARIANTS, max_steps=2) | st.binary(max_size=64))
def test_invariants_file_refuses_cleanly(data: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _only((InvariantsFileError,), lambda: load_invariants(Path(name)))
    finally:
        os.unlink(name)

