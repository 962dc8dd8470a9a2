"""The transparency log's formats, checked with ``protocol`` alone: checkpoint notes, vendor statements, log
entries, the pure audit, and the receipt's binding to a checkpoint.

The Merkle proofs themselves (every size to 555, every pair to 100, every mutation class, a naive reference)
are tested in ``tests/protocol/test_merkle.py``; here a checkpoint with a bad signature or a missing, extra or
misspelt line must be refused, and an audit must catch a log that was rewritten, shrank or forked.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest

from protocol import (
    EMPTY_ROOT,
    Checkpoint,
    CheckpointError,
    EntryError,
    LogEntry,
    LogRules,
    Match,
    MerkleTree,
    MessageError,
    PrivateKey,
    Receipt,
    RegistryState,
    RegistryStatement,
    SignatureError,
    TermScoreRecord,
    audit_log,
    binding_key_hash,
    check_base_name,
    checkpoint_public_key,
    decode_map,
    encode,
    leaf_hash,
    note_key_hash,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from tests.verifier.registry_kit import LOG_KEY, NOW, OTHER_VENDOR, VENDOR, register, revoke, tiny_bundle

ORIGIN = "pawprint/registry/test"
ROOT = bytes(range(32))


def note(size: int = 7, root: bytes = ROOT, time: int = NOW, key: PrivateKey = LOG_KEY) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root, time), key).text


# ----------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_text_is_four_lines_a_blank_line_and_signatures() -> None:
    text = note()
    lines = text.split("\n")
    assert lines[:5] == [ORIGIN, "7", base64.b64encode(ROOT).decode(), str(NOW), ""]
    assert lines[5].startswith(f"\u2014 {ORIGIN} ") and lines[6].startswith(f"\u2014 {ORIGIN} ")
    assert lines[7] == "" and len(lines) == 8
    # C2SP signed note: the checkpoint key's Ed25519 line (key ID of name, 0x0A, 0x01, key), then the log
    # key's binding line (checkpoint key and the log key's signature); tests/interop checks it with Go.
    blob = base64.b64decode(lines[5].split(" ")[2])
    assert blob[:4] == note_key_hash(ORIGIN, checkpoint_public_key(LOG_KEY)) and len(blob) == 68
    binding = base64.b64decode(lines[6].split(" ")[2])
    assert binding[:4] == binding_key_hash(ORIGIN, LOG_KEY.public_key) and len(binding) == 100
    assert binding[4:36] == checkpoint_public_key(LOG_KEY).raw
    cp = open_checkpoint(text, LOG_KEY.public_key)
    assert cp == Checkpoint(ORIGIN, 7, ROOT, NOW)
    assert parse_checkpoint(text).text == text  # one spelling
    assert open_checkpoint(text.encode(), LOG_KEY.public_key, origin=ORIGIN) == cp


def test_checkpoint_signature_is_domain_separated() -> None:
    body = Checkpoint(ORIGIN, 7, ROOT, NOW).body().encode()
    # The same bytes signed under another kind do not make a checkpoint signature.
    parsed = parse_checkpoint(note())
    standard, binding = parsed.signatures
    checkpoint_key = binding.signature[:32]
    forged = LOG_KEY.sign("receipt", b"pawprint checkpoint-key\n" + checkpoint_key + body)
    line = dataclasses.replace(binding, signature=checkpoint_key + forged)
    with pytest.raises(SignatureError):
        dataclasses.replace(parsed, signatures=(standard, line)).verify(LOG_KEY.public_key)
    # The checkpoint key is not the log key: the log key's own signature of the text is no C2SP line.
    assert checkpoint_public_key(LOG_KEY) != LOG_KEY.public_key


def test_checkpoint_with_a_bad_signature_is_refused() -> None:
    text = note()
    # The lowest bit of every character of the body (a changed origin also orphans the signature line)...
    for i in range(text.index("\n\n")):
        flipped = text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1 :]
        with pytest.raises((SignatureError, CheckpointError)):
            open_checkpoint(flipped, LOG_KEY.public_key)
    # ...and every bit of the signature.
    parsed = parse_checkpoint(text)
    for n, line in enumerate(parsed.signatures):
        for bit in range(len(line.signature) * 8):
            sig = bytearray(line.signature)
            sig[bit // 8] ^= 1 << (bit % 8)
            lines = list(parsed.signatures)
            lines[n] = dataclasses.replace(line, signature=bytes(sig))
            bad = dataclasses.replace(parsed, signatures=tuple(lines))
            with pytest.raises((SignatureError, CheckpointError)):
                open_checkpoint(bad.text, LOG_KEY.public_key)
    with pytest.raises(CheckpointError, match="no signature line by the log key"):
        open_checkpoint(text, VENDOR.public_key)  # signed, but by another key


@pytest.mark.parametrize("drop", range(7))
def test_checkpoint_with_a_missing_line_is_refused(drop: int) -> None:
    lines = note().split("\n")  # origin, size, root, time, blank, signature, binding, ""
    broken = "\n".join(lines[:drop] + lines[drop + 1 :])
    with pytest.raises(CheckpointError):
        open_checkpoint(broken, LOG_KEY.public_key)


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("\n7\n", "\n07\n"),                          # leading zero
    lambda t: t.replace("\n7\n", "\n+7\n"),
    lambda t: t.replace("\n7\n", "\n7 \n"),
    lambda t: t.replace(ORIGIN, ORIGIN + " "),                       # trailing space
    lambda t: t.replace(ORIGIN + "\n", "\n", 1),                     # empty origin
    lambda t: t.replace(f"\n{NOW}\n", f"\n{NOW}\nextra\n"),          # a fifth body line
    lambda t: t.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[:31]).decode()),
    lambda t: t.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT).decode().rstrip("=")),
    lambda t: t.replace("\u2014", "-"),                              # not an em dash
    lambda t: t.rstrip("\n"),                                        # no final newline
    lambda t: t.replace("\n", "\r\n"),
    lambda t: t + "\n",                                              # an empty signature line
    lambda t: t.replace("\n\n", "\n\n\n"),
    lambda t: t.replace("\n7\n", "\n18446744073709551616\n"),        # 2^64
])
def test_checkpoint_spelling_is_strict(edit: object) -> None:
    text = edit(note())  # type: ignore[operator]
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


def test_checkpoint_cosignatures_by_other_keys_are_ignored_but_must_be_well_formed() -> None:
    text = note()
    other = sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT, NOW), VENDOR).signatures[0].line()
    assert open_checkpoint(text + other, LOG_KEY.public_key) == open_checkpoint(text, LOG_KEY.public_key)
    assert open_checkpoint(text.replace("\n\n", "\n\n" + other), LOG_KEY.public_key).size == 7
    with pytest.raises(CheckpointError):
        parse_checkpoint(text + "\u2014 witness !!!\n")
    with pytest.raises(CheckpointError, match="of log"):
        open_checkpoint(text, LOG_KEY.public_key, origin="another/log")


def test_checkpoint_body_values_are_checked() -> None:
    for bad in (dict(size=-1), dict(size=2**64), dict(root=b"x"), dict(time=True), dict(origin="a b")):
        with pytest.raises(CheckpointError):
            Checkpoint(**{"origin": ORIGIN, "size": 1, "root": ROOT, "time": 1, **bad})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ statements, entries
def test_statement_round_trip_and_rules() -> None:
    bundle = tiny_bundle(1)
    signed = register(bundle, "llama-base", release_date="2024-05-01", description="a base\nwith two lines")
    statement = RegistryStatement.from_map(decode_map(signed.payload))
    assert encode(statement.to_map()) == signed.payload
    assert statement.metadata == {"licence": "apache-2.0", "release_date": "2024-05-01",
                                  "description": "a base\nwith two lines"}
    for bad in ({"release_date": "2024-5-1"}, {"release_date": "2024-02-30"}, {"name": "12"}, {"name": " x"},
                {"name": "ab" * 32}, {"action": "edit"}, {"reason": "why"},
                {"licence": "x" * 300}, {"description": "bell\a"}):
        with pytest.raises(EntryError):
            dataclasses.replace(statement, **bad)  # type: ignore[arg-type]
    with pytest.raises(EntryError):
        dataclasses.replace(statement, action="revoke")  # a revocation carries no licence
    check_base_name("llama-3.1-8b")


def test_entry_open_checks_both_signatures_and_that_they_agree() -> None:
    bundle = tiny_bundle(2)
    entry = LogEntry(register(bundle, "b"), bundle.signed, NOW)
    assert LogEntry.from_bytes(entry.to_bytes()) == entry and entry.leaf_hash == leaf_hash(entry.to_bytes())
    opened = entry.open()
    assert (opened.name, opened.vendor_key_id, opened.admitted_by_log) == ("b", VENDOR.key_id, False)
    assert opened.manifest is not None and opened.manifest.owner_key_id == VENDOR.key_id

    # A statement by the log's key (an administrator's entry) opens only with the log's key.
    by_log = LogEntry(RegistryStatement.from_map(decode_map(register(bundle, "b").payload)).sign(LOG_KEY),
                      bundle.signed, NOW)
    with pytest.raises(EntryError, match="neither"):
        by_log.open()
    assert by_log.open(LOG_KEY.public_key).admitted_by_log
    # Another vendor's statement about this vendor's manifest, or a statement naming another manifest.
    with pytest.raises(EntryError):
        LogEntry(register(bundle, "b", OTHER_VENDOR), bundle.signed, NOW).open(LOG_KEY.public_key)
    with pytest.raises(EntryError, match="another manifest"):
        LogEntry(register(tiny_bundle(3), "b"), bundle.signed, NOW).open()
    # Any changed byte of either signed part.
    for part in ("statement", "manifest"):
        signed = getattr(entry, part)
        tampered = dataclasses.replace(signed, payload=signed.payload[:-1] + bytes([signed.payload[-1] ^ 1]))
        with pytest.raises((SignatureError, EntryError)):
            dataclasses.replace(entry, **{part: tampered}).open()
    # A revocation carries no manifest and must be the vendor's.
    assert LogEntry(revoke(bundle, "b"), None, NOW).open().action == "revoke"
    with pytest.raises(EntryError):
        LogEntry(revoke(bundle, "b"), bundle.signed, NOW).open()


def test_log_rules() -> None:
    a, b = tiny_bundle(4), tiny_bundle(5)
    rules = LogRules()

    def apply(statement: object, manifest: object, index: int) -> None:
        entry = LogEntry(statement, manifest, NOW).open()  # type: ignore[arg-type]
        rules.check(entry)
        rules.apply(index, entry)

    apply(register(a, "a"), a.signed, 0)
    for statement, manifest, match in (
        (register(a, "a2"), a.signed, "already registered"),
        (register(b, "a"), b.signed, "unrevoked"),
        (register(tiny_bundle(6, OTHER_VENDOR), "a", OTHER_VENDOR), tiny_bundle(6, OTHER_VENDOR).signed, "held by"),
        (revoke(b, "a"), None, "not registered"),
    ):
        with pytest.raises(EntryError, match=match):
            rules.check(LogEntry(statement, manifest, NOW).open())
    apply(revoke(a, "a"), None, 1)
    with pytest.raises(EntryError):
        rules.check(LogEntry(revoke(a, "a"), None, NOW).open())  # revoked once
    apply(register(b, "a"), b.signed, 2)  # the vendor reuses its name once the old entry is revoked
    assert rules.active == {"a": 2} and rules.revoked == {0: 1}


# ----------------------------------------------------------------------------------------------- audit
def _log(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        bundle = tiny_bundle(100 + i)
        out.append(LogEntry(register(bundle, f"m{i}"), bundle.signed, NOW + i).to_bytes())
    return out


def _checkpoint(entries: list[bytes], size: int, time: int | None = None) -> str:
    # Entry i is logged at NOW + i: the checkpoint of ``size`` entries is signed when the last one was
    # appended, before the next one (an entry dated before a checkpoint that excludes it is backdated).
    return note(size, MerkleTree(leaf_hash(e) for e in entries).root(size), NOW + size if time is None else time)


def test_audit_passes_on_an_honest_log() -> None:
    entries = _log(7)
    tree = MerkleTree(leaf_hash(e) for e in entries)
    for old in (0, 1, 3, 7):
        report = audit_log(_checkpoint(entries, old), _checkpoint(entries, 7), tree.consistency_proof(old, 7),
                           entries, LOG_KEY.public_key)
        assert report.ok, report.problems
        assert (report.entries, report.registrations, report.vendors) == (7, 7, 1)


def test_audit_detects_a_rewritten_history() -> None:
    entries = _log(6)
    saved = _checkpoint(entries, 4)
    # The operator replaces entry 2 with another, validly signed, registration and re-signs a new checkpoint.
    other = tiny_bundle(999)
    rewritten = list(entries)
    rewritten[2] = LogEntry(register(other, "m2"), other.signed, NOW + 2).to_bytes()
    tree = MerkleTree(leaf_hash(e) for e in rewritten)
    report = audit_log(saved, _checkpoint(rewritten, 6), tree.consistency_proof(4, 6), rewritten,
                       LOG_KEY.public_key)
    assert not report.ok
    assert any("consistency proof" in p for p in report.problems)
    assert any("history was rewritten" in p for p in report.problems)
    # Serving the old entries with the new checkpoint does not help either.
    report = audit_log(saved, _checkpoint(rewritten, 6), tree.consistency_proof(4, 6), entries, LOG_KEY.public_key)
    assert any("do not hash to the root of its current checkpoint" in p for p in report.problems)


def test_audit_detects_shrinking_forks_bad_entries_and_bad_checkpoints() -> None:
    entries = _log(5)
    tree = MerkleTree(leaf_hash(e) for e in entries)
    current = _checkpoint(entries, 5)
    shrunk = audit_log(_checkpoint(entries, 5), _checkpoint(entries, 3), [], entries[:3], LOG_KEY.public_key)
    assert any("shrank" in p for p in shrunk.problems)
    forged = audit_log(_checkpoint(entries, 2), note(5, ROOT), tree.consistency_proof(2, 5), entries,
                       LOG_KEY.public_key)
    assert not forged.ok
    parsed = parse_checkpoint(current)
    sig = parsed.signatures[0]
    bad = dataclasses.replace(parsed, signatures=(dataclasses.replace(sig, signature=bytes(64)),
                                                  *parsed.signatures[1:])).text
    bad_sig = audit_log(_checkpoint(entries, 2), bad, tree.consistency_proof(2, 5), entries, LOG_KEY.public_key)
    assert any("current checkpoint's signature does not verify" in p for p in bad_sig.problems)
    missing = audit_log(_checkpoint(entries, 2), current.replace(f"{ORIGIN}\n", "", 1), [], entries,
                        LOG_KEY.public_key)
    assert any("current checkpoint is not valid" in p for p in missing.problems)
    wrong_key = audit_log(_checkpoint(entries, 2), current, tree.consistency_proof(2, 5), entries,
                          VENDOR.public_key)
    assert any("no signature line" in p for p in wrong_key.problems)
    garbled = list(entries)
    garbled[1] = garbled[1][:-1] + bytes([garbled[1][-1] ^ 1])
    report = audit_log(_checkpoint(entries, 1), current, tree.consistency_proof(1, 5), garbled, LOG_KEY.public_key)
    assert any(p.startswith("entry 1:") for p in report.problems)
    assert audit_log(_checkpoint(entries, 1), current, [], entries[:4], LOG_KEY.public_key).problems
    assert MerkleTree().root() == EMPTY_ROOT


def test_audit_replays_the_registry_rules() -> None:
    a = tiny_bundle(7)
    entries = [LogEntry(register(a, "a"), a.signed, NOW).to_bytes(),
               LogEntry(register(a, "a"), a.signed, NOW).to_bytes()]  # the same manifest twice
    tree = MerkleTree(leaf_hash(e) for e in entries)
    report = audit_log(note(0, EMPTY_ROOT), note(2, tree.root()), tree.consistency_proof(0, 2), entries,
                       LOG_KEY.public_key)
    assert any("already registered" in p for p in report.problems)


# --------------------------------------------------------------------------------------------- receipts
def test_receipt_binds_to_a_checkpoint_and_entry_indices() -> None:
    match = Match("base", b"\x04" * 32, VENDOR.key_id, "p", "0.912345", "0.500000", 4, "derived",
                  (TermScoreRecord(5, 5, "ffn", "0.500000"),), log_index=3)
    text = note(5, ROOT)
    receipt = Receipt(LOG_KEY.key_id, VENDOR.key_id, b"\x01" * 32, b"\x05" * 32, b"\x03" * 32,
                      RegistryState(5, ROOT), 1, (match,), "derived", "rule", ("m",), NOW, False, checkpoint=text)
    again = Receipt.from_map(decode_map(encode(receipt.to_map())))
    assert again == receipt and again.signed_checkpoint is not None
    assert receipt.as_dict()["checkpoint"] == text and receipt.as_dict()["matches"][0]["log_index"] == 3
    with pytest.raises(MessageError, match="does not match"):
        dataclasses.replace(receipt, registry=RegistryState(6, ROOT))
    with pytest.raises(MessageError, match="log index"):
        dataclasses.replace(receipt, matches=(dataclasses.replace(match, log_index=5),))
    with pytest.raises(MessageError, match="log index"):
        dataclasses.replace(receipt, matches=(dataclasses.replace(match, log_index=None),))
    with pytest.raises(MessageError):
        dataclasses.replace(receipt, checkpoint=text.replace("\n5\n", "\n05\n"))
    # Without a log, the fields are absent (one encoding per value; receipts from before the log still parse).
    unlogged = dataclasses.replace(receipt, checkpoint=None, matches=(dataclasses.replace(match, log_index=None),))
    data = encode(unlogged.to_map())
    assert "checkpoint" not in decode_map(data) and "log_index" not in decode_map(data)["matches"][0]
    assert Receipt.from_map(decode_map(data)) == unlogged
    with pytest.raises(MessageError):
        Receipt.from_map({**unlogged.to_map(), "checkpoint": None})
    with pytest.raises(MessageError):
        Match.from_map({**match.to_map(), "log_index": None})
