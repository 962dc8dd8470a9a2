"""Names and precedence in the registry (issue 17, item 4): namespace claims, normalised names, links between
registrations of the same weights, and the report's headline naming the earliest entry.

The attacks of the issue, each now failing for the attacker: the same weights (the genuine vendor's terms,
re-signed by another vendor key) under ``acme/tiny-llama-base.`` and 9 other look-alikes inside ``acme/``, and
under ``meta-llama/Llama-4-405B`` by a key not bound to ``meta-llama/``, all claiming a release date of
2001-01-01. Refused by the verifier at registration, and found by an audit of the log alone when the log's
operator appends them anyway (signing with the live log key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

import pytest

from protocol import (
    CLAIM,
    NO_MANIFEST,
    REGISTER,
    STATEMENT_KIND,
    Bundle,
    Checkpoint,
    EntryError,
    LogCopy,
    LogEntry,
    LogRules,
    Match,
    MerkleTree,
    PrivateKey,
    Receipt,
    RegistryState,
    RegistryStatement,
    Role,
    SignedMessage,
    audit,
    audit_log,
    encode,
    leaf_hash,
    namespace_of,
    normalise_name,
    sign_checkpoint,
)
from tests.verifier.registry_kit import LOG_KEY, NOW, OTHER_VENDOR, VENDOR, register, tiny_bundle, trust
from verifier import AlreadyExists, InvalidSubmission, PermissionDenied, Registry
from verifier._report import OK, Check, ReportItem, _headline

ATTACKER = OTHER_VENDOR
META = PrivateKey.from_seed(b"\x16" * 32)
GENUINE = "acme/tiny-llama-base"
TRAILING_DOT = "acme/tiny-llama-base."
# Nine more look-alikes inside acme/: case, confusable letters and separators (ASCII, which a statement may
# carry), then full-width letters, a zero-width space and a Cyrillic a (which no statement may carry).
ASCII_LOOKALIKES = ("ACME/tiny-llama-base", "acme/Tiny-Llama-Base", "acme/tiny-IIama-base", "acme/tiny-1lama-base",
                    "acme/tlny-llama-base", "acme/tiny_llama_base")
UNICODE_LOOKALIKES = ("acme/\uff54\uff49\uff4e\uff59-llama-base", "acme/tiny\u200b-llama-base",
                      "acme/tiny-ll\u0430ma-base")
SQUAT_DATE = "2001-01-01"


def _trust():  # type: ignore[no-untyped-def]
    store = trust()
    store.add(META.public_key, Role.VENDOR, name="meta")
    return store


def claim(namespace: str, key: PrivateKey, signed_at: int = NOW) -> SignedMessage:
    return RegistryStatement(CLAIM, namespace, key.key_id, NO_MANIFEST, signed_at).sign(key)


def _raw_register(bundle_digest: bytes, name: str, key: PrivateKey) -> SignedMessage:
    """A registration signed over a hand-made payload: what an attacker sends to get past the statement's own
    checks (which refuse a non-ASCII name before anything is signed)."""
    payload = encode({"action": REGISTER, "description": "", "licence": "", "manifest_sha256": bundle_digest,
                      "name": name, "reason": "", "release_date": SQUAT_DATE, "signed_at": NOW,
                      "vendor_key_id": key.key_id, "version": 1})
    return SignedMessage(payload, key.sign(STATEMENT_KIND, payload), key.public_key)


def _registry(path: Path) -> Registry:
    ticks = itertools.count(NOW, 10)
    return Registry(path, log_key=LOG_KEY, clock=lambda: next(ticks))


@pytest.fixture
def genuine(tmp_path: Path) -> Registry:
    """acme claims acme/ and registers its base (entry 1); meta claims meta-llama/ (entry 2)."""
    reg = _registry(tmp_path / "data")
    store = _trust()
    reg.claim(claim("acme", VENDOR), store)
    bundle = tiny_bundle(1, VENDOR)
    assert reg.publish(register(bundle, GENUINE, release_date="2024-05-01"), bundle, store).index == 1
    reg.claim(claim("meta-llama", META), store)
    return reg


# ----------------------------------------------------------------------------------------- normalisation
def test_every_look_alike_has_the_genuine_names_skeleton() -> None:
    lookalikes = (TRAILING_DOT, *ASCII_LOOKALIKES, *UNICODE_LOOKALIKES)
    assert len(lookalikes) == 10
    assert {normalise_name(n) for n in lookalikes} == {normalise_name(GENUINE)}
    for other in ("acme/tiny-llama-large", "acme/tiny-llama-base-2", "acme2/tiny-llama-base", "tiny-llama-base"):
        assert normalise_name(other) != normalise_name(GENUINE), other
    assert normalise_name(" .acme./ tiny.llama.base! ") == normalise_name(GENUINE)
    assert normalise_name("modern") == normalise_name("modem") and normalise_name("vvide") == normalise_name("wide")
    assert namespace_of(GENUINE) == "acme" and namespace_of("llama-7b") is None


# ----------------------------------------------------------------------------------------- the attacks
def test_the_squatters_registrations_are_refused(genuine: Registry) -> None:
    store = _trust()
    copy = tiny_bundle(1, ATTACKER)  # the genuine weights and terms, re-signed by the attacker
    size = genuine.size()
    with pytest.raises(AlreadyExists, match="confusable with the registered name 'acme/tiny-llama-base'"):
        genuine.publish(register(copy, TRAILING_DOT, ATTACKER, release_date=SQUAT_DATE), copy, store)
    for name in ASCII_LOOKALIKES:
        with pytest.raises((AlreadyExists, PermissionDenied)):
            genuine.publish(register(copy, name, ATTACKER, release_date=SQUAT_DATE), copy, store)
    for name in UNICODE_LOOKALIKES:
        with pytest.raises(InvalidSubmission, match="not a valid base name"):
            genuine.publish(_raw_register(copy.manifest_digest, name, ATTACKER), copy, store)
    # A fresh name inside acme/ and the meta-llama/ name: the attacker's key is bound to neither namespace.
    with pytest.raises(PermissionDenied, match=r"claimed .* only keys bound to it publish under it"):
        genuine.publish(register(copy, "acme/tiny-llama-chat", ATTACKER, release_date=SQUAT_DATE), copy, store)
    with pytest.raises(PermissionDenied, match="'meta-llama'/ is claimed"):
        genuine.publish(register(copy, "meta-llama/Llama-4-405B", ATTACKER, release_date=SQUAT_DATE), copy, store)
    # Nor can the namespaces be claimed again, under any spelling.
    for namespace in ("acme", "ACME", "acrne", "meta_llama"):
        with pytest.raises(AlreadyExists, match="already claimed"):
            genuine.claim(claim(namespace, ATTACKER), store)
    assert genuine.size() == size  # nothing was appended


def test_the_genuine_vendor_publishes_under_its_namespace(genuine: Registry) -> None:
    store = _trust()
    other = tiny_bundle(2, VENDOR)
    published = genuine.publish(register(other, "acme/tiny-llama-chat"), other, store)
    assert not published.existing
    again = genuine.claim(claim("acme", VENDOR, NOW + 5), store)  # claiming again answers with the claim
    assert again.existing and again.index == 0


def test_a_namespace_cannot_be_claimed_over_another_vendors_names(tmp_path: Path) -> None:
    reg, store = _registry(tmp_path / "d"), _trust()
    bundle = tiny_bundle(3, VENDOR)
    reg.publish(register(bundle, "acme/first"), bundle, store)
    with pytest.raises(AlreadyExists, match="already holds names in 'acme'/"):
        reg.claim(claim("acme", ATTACKER), store)
    assert not reg.claim(claim("acme", VENDOR), store).existing  # the vendor already using it may claim it


def test_the_same_weights_elsewhere_are_linked_to_the_earliest_entry(genuine: Registry) -> None:
    store = _trust()
    copy = tiny_bundle(1, ATTACKER)
    index = genuine.publish(register(copy, "evil/tiny-llama-base", ATTACKER, release_date=SQUAT_DATE), copy,
                            store).index
    entry = LogEntry.from_bytes(genuine.entries(index, index + 1)[0])
    assert entry.linked_to == 1 and entry.format == 2  # recorded in the entry itself
    base = genuine.base("evil/tiny-llama-base")
    assert base is not None and base.linked_to == 1
    assert genuine.base(GENUINE).linked_to is None  # type: ignore[union-attr]
    # Terms alone link too: another commitment, the genuine terms.
    terms_only = tiny_bundle(1, META)
    opened = terms_only.open()
    manifest = dataclasses.replace(opened, weight_commitment=dataclasses.replace(
        opened.weight_commitment, root=hashlib.sha256(b"other weights").digest()))
    relinked = Bundle.create(manifest, dict(terms_only.terms), META)  # signed again over the changed manifest
    later = genuine.publish(register(relinked, "meta-llama/tiny", META), relinked, store).index
    assert LogEntry.from_bytes(genuine.entries(later, later + 1)[0]).linked_to == 1
    report = audit(LogCopy(genuine.latest_checkpoint(), genuine.entries(0)), genuine.latest_checkpoint(),
                   LOG_KEY.public_key)
    assert report.ok, report.problems


# --------------------------------------------------------------------------- the audit, from the log alone
def _checkpoint(origin: str, entries: list[bytes], size: int, time: int) -> str:
    return sign_checkpoint(Checkpoint(origin, size, MerkleTree(leaf_hash(e) for e in entries).root(size), time),
                           LOG_KEY).text


def _forced(genuine: Registry, statement: SignedMessage, manifest: SignedMessage | None,
            linked_to: int | None) -> list[str]:
    """The log's operator appends an entry the registry refuses, signing the checkpoint with the live log key;
    the audit's problems, from a checkpoint saved before it."""
    entries = genuine.entries(0)
    saved = genuine.latest_checkpoint()
    time = LogEntry.from_bytes(entries[-1]).logged_at + 10
    forced = [*entries, LogEntry(statement, manifest, time, linked_to, format=2).to_bytes()]
    current = _checkpoint(genuine.origin, forced, len(forced), time)
    proof = MerkleTree(leaf_hash(e) for e in forced).consistency_proof(len(entries), len(forced))
    return list(audit_log(saved, current, proof, forced, LOG_KEY.public_key).problems)


def test_an_audit_of_the_log_alone_finds_what_the_registry_refuses(genuine: Registry) -> None:
    copy = tiny_bundle(1, ATTACKER)
    squat = register(copy, TRAILING_DOT, ATTACKER, release_date=SQUAT_DATE)
    assert any("confusable" in p for p in _forced(genuine, squat, copy.signed, 1))
    meta = register(copy, "meta-llama/Llama-4-405B", ATTACKER, release_date=SQUAT_DATE)
    assert any("'meta-llama'/ is claimed" in p for p in _forced(genuine, meta, copy.signed, 1))
    hidden = register(copy, "evil/tiny-llama-base", ATTACKER, release_date=SQUAT_DATE)
    assert any("is linked to None, but the earliest" in p for p in _forced(genuine, hidden, copy.signed, None))
    assert any("is linked to 0" in p for p in _forced(genuine, hidden, copy.signed, 0))
    assert any("already claimed" in p for p in _forced(genuine, claim("Acme", ATTACKER), None, None))
    assert _forced(genuine, hidden, copy.signed, 1) == []  # the same entry, honestly linked, passes


def test_a_claim_is_a_vendors_statement_about_a_namespace() -> None:
    with pytest.raises(EntryError, match="names a namespace"):
        RegistryStatement(CLAIM, "acme/x", VENDOR.key_id, NO_MANIFEST, NOW)
    with pytest.raises(EntryError, match="32 zero bytes"):
        RegistryStatement(CLAIM, "acme", VENDOR.key_id, b"\x01" * 32, NOW)
    with pytest.raises(EntryError, match="description only"):
        RegistryStatement(CLAIM, "acme", VENDOR.key_id, NO_MANIFEST, NOW, release_date=SQUAT_DATE)
    by_log = RegistryStatement(CLAIM, "acme", VENDOR.key_id, NO_MANIFEST, NOW).sign(LOG_KEY)
    with pytest.raises(EntryError, match="must be signed by the vendor"):
        LogEntry(by_log, None, NOW, format=2).open(LOG_KEY.public_key)
    with pytest.raises(EntryError, match="is an entry of format"):
        LogEntry(claim("acme", VENDOR), None, NOW).open(LOG_KEY.public_key)


# --------------------------------------------------------------------------------------- backward compat
def test_a_log_of_the_first_format_still_opens_and_audits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data directory written before this change (entries of format 1, no links, no namespace rules) opens
    and audits; new entries are of format 2 and held to the new rules; a format-1 entry after them is not."""
    import verifier._log

    def legacy(statement: SignedMessage, manifest: SignedMessage | None, logged_at: int,
               linked_to: int | None = None, format: int = 2) -> LogEntry:
        return LogEntry(statement, manifest, logged_at)  # what the code before this change appended

    store, path = _trust(), tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(verifier._log, "LogEntry", legacy)
        m.setattr(LogRules, "check_name", lambda *_: None)  # the old code's weaker skeleton let these through
        old = _registry(path)
        a, b = tiny_bundle(1, VENDOR), tiny_bundle(1, ATTACKER)
        old.publish(register(a, "acme/base"), a, store)
        old.publish(register(b, "acme/base-", ATTACKER), b, store)  # confusable, same weights: allowed then
        old.close()
    reg = _registry(path)
    entries = reg.entries(0)
    assert [LogEntry.from_bytes(e).format for e in entries] == [1, 1]
    note = reg.latest_checkpoint()
    report = audit(LogCopy(note, entries), note, LOG_KEY.public_key)
    assert report.ok and any("first format" in n for n in report.notes)
    assert reg.base("acme/base-").linked_to == 0  # type: ignore[union-attr]  # derived, though not recorded
    c = tiny_bundle(5, VENDOR)
    with pytest.raises(AlreadyExists, match="confusable"):
        reg.publish(register(c, "acme/BASE"), c, store)
    reg.publish(register(c, "acme/other"), c, store)
    assert LogEntry.from_bytes(reg.entries(2, 3)[0]).format == 2
    report = audit(LogCopy(reg.latest_checkpoint(), reg.entries(0)), note, LOG_KEY.public_key)
    assert report.ok, report.problems
    rules = LogRules()
    downgraded = LogEntry(register(tiny_bundle(6, VENDOR), "acme/later"), tiny_bundle(6, VENDOR).signed, NOW + 99)
    for i, data in enumerate(reg.entries(0)):
        opened = LogEntry.from_bytes(data).open(LOG_KEY.public_key)
        rules.check(opened)
        rules.apply(i, opened)
    with pytest.raises(EntryError, match="after one of format"):
        rules.check(downgraded.open(LOG_KEY.public_key))


# ------------------------------------------------------------------------------------------ the headline
def _match(name: str, index: int) -> Match:
    return Match(name=name, entry=hashlib.sha256(name.encode()).digest(), vendor_key_id=VENDOR.key_id,
                 probe_set_id="p", ics="0.999000", min_term="0.990000", common_probe_tokens=2, verdict="derived",
                 terms=(), log_index=index, z="9.000", p_value="1.000e-20")


def test_the_headline_names_the_earliest_of_equally_strong_entries() -> None:
    """12 entries of the same weights, one p-value: the receipt lists them by name (the genuine entry 6th),
    the headline names the earliest entry in the log."""
    names = ["acme/tiny-llama-base", "a1-squat", "a2-squat", "a3-squat", "a4-squat", "a5-squat", "meta-llama/x",
             "z-squat", "y-squat", "x-squat", "w-squat", "v-squat"]
    matches = [_match(n, 0 if n == GENUINE else i + 3) for i, n in enumerate(names)]
    ordered = tuple(sorted(matches, key=lambda m: m.name))
    assert ordered[5].name == GENUINE  # where the issue found it
    receipt = Receipt(verifier_key_id=LOG_KEY.key_id, owner_key_id=VENDOR.key_id, nonce=b"\x00" * 32,
                      submission=b"\x01" * 32, weight_commitment=b"\x02" * 32,
                      registry=RegistryState(20, b"\x03" * 32), compared=12, matches=ordered, verdict="derived",
                      verdict_rule="r", method_ids=("m",), issued_at=NOW, kept_invariants=False)
    ok = Check(OK, "ok")
    html = _headline(ReportItem("r", receipt, b"", LOG_KEY.key_id, ok, ok, ok, ok))
    assert f'Derived from <span class="name">{GENUINE}</span> and 11 other base(s)' in html


# ------------------------------------------------------------------------------------------ the command line
def _cli(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from pawprint import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_registry_claim_on_the_command_line(tmp_path: Path) -> None:
    VENDOR.save(tmp_path / "vendor.key")
    ATTACKER.save(tmp_path / "attacker.key")
    _trust().save(tmp_path / "trust.json")
    where = ("--data", str(tmp_path / "d"), "--trust", str(tmp_path / "trust.json"))
    code, out, err = _cli("registry", "claim", "acme/", "-k", str(tmp_path / "vendor.key"), *where)
    assert code == 0, err
    assert f"acme/: claimed by key {VENDOR.key_id} in entry 0 (appended)" in out
    code, out, err = _cli("registry", "claim", "Acme", "-k", str(tmp_path / "attacker.key"), *where)
    assert code != 0 and "already claimed" in err
    code, out, err = _cli("registry", "claim", "acme/x", "-k", str(tmp_path / "vendor.key"), *where)
    assert code == 2 and "names a namespace" in err
    code, out, err = _cli("registry", "list", "--data", str(tmp_path / "d"))
    assert code == 0 and "acme/" in out and " claim " in out


def test_the_receipt_orders_equally_strong_matches_by_log_index() -> None:
    """A squatter's copy of the genuine weights, registered later under a name that sorts first: equal p-value
    and ICS, so the receipt's order (verifier._compare) puts the earlier entry first, as the headline does."""
    import numpy as np

    from protocol import ProbeSpec
    from protocol.terms import InvariantSet
    from verifier._calibration import NullModel, TermNull
    from verifier._compare import BaseModel, compare_with_bases

    rng = np.random.default_rng(0)
    m, names = 24, ("attn_qk", "attn_vo", "ffn")
    probes = ProbeSpec("p", 1, "test", tuple(f"t{i}" for i in range(m)))
    terms = {(layer, t): rng.standard_normal((m, m)).astype(np.float32) for layer in (0, 1) for t in names}
    invariants = (InvariantSet.create("pawprint", "m", probes, (True,) * m, (0, 1), {}, terms),)
    null = NullModel("m", "test", {t: TermNull(0.0, 0.2, 100) for t in names}, 100,
                     tuple(tuple(float(i == j) for j in range(3)) for i in range(3)), "test")
    genuine, squat = hashlib.sha256(b"genuine").digest(), hashlib.sha256(b"squat").digest()
    bases = [BaseModel("acme/aaa-first-alphabetically", squat, ATTACKER.key_id, invariants),
             BaseModel(GENUINE, genuine, VENDOR.key_id, invariants)]
    indices = {genuine: 3, squat: 7}
    for order in (bases, bases[::-1]):  # whichever order the registry hands them over in
        matches = compare_with_bases(invariants, order, null, log_indices=indices)
        assert [m.log_index for m in matches] == [3, 7]
        assert [m.name for m in matches] == [GENUINE, "acme/aaa-first-alphabetically"]
        assert matches[0].p_value == matches[1].p_value and matches[0].p_value is not None
        assert matches[0].ics == matches[1].ics == "1.000000" and matches[0].verdict == "derived"
    # Without log indices (compared outside a log) the order is still deterministic: by name.
    assert [m.name for m in compare_with_bases(invariants, bases[::-1], null)] == [bases[0].name, GENUINE]
