"""Owners may name their model (issue 20): the manifest's signed ``display_name``, copied by the verifier into the
receipt's ``model_name``, shown in the report (escaped, as named by the owner) and on dog sheets (never cut).

The field is optional and absent (not nil) when unset, so every message without a name keeps its bytes; names
are checked for form (``protocol.check_display_name``) wherever a manifest or receipt is built or parsed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import re
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from benchmarks.report_sample import Sample, sample_receipts
from owner._client import SubmissionError, check_receipt, submission_requests, submit
from owner._fingerprint import Fingerprint, FingerprintError, build_bundle, fingerprint
from protocol import (
    MAX_DISPLAY_NAME,
    RECEIPT_FORMAT,
    Manifest,
    MessageError,
    PrivateKey,
    ProbeSpec,
    Receipt,
    RegistryState,
    SignedMessage,
    TensorDigest,
    TermGroup,
    WeightCommitment,
    check_display_name,
    decode_map,
    encode,
    open_manifest,
    open_receipt,
    sign_message,
)
from tests.verifier.fixtures import NOW, Env, Keys, Models
from verifier import receipt_sheet
from verifier._render import CONTINUED, sheet_labels, sheet_text, wrap_label
from verifier._report import OWNER_NAMED, write_report

pytest_plugins = ["tests.verifier.fixtures"]

KEY = PrivateKey.from_seed(b"\x07" * 32)
NAME = "Acme Chat 7B (fine-tuned, v2) — café 日本 🐕"

BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
HOSTILE = [
    pytest.param("", id="empty"),
    pytest.param("x" * (MAX_DISPLAY_NAME + 1), id="too-long"),
    pytest.param("e\u0301", id="not-NFC"),
    pytest.param(" lead", id="leading-space"),
    pytest.param("trail ", id="trailing-space"),
    pytest.param("two  spaces", id="double-space"),
    pytest.param("tab\there", id="tab"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("nul\x00", id="nul"),
    pytest.param("del\x7f", id="del"),
    pytest.param("c1\x85", id="c1-control"),
    pytest.param("zero\u200bwidth", id="zero-width-space"),
    pytest.param("joiner\u200d", id="zero-width-joiner"),
    pytest.param("bom\ufeff", id="bom"),
    pytest.param("line\u2028sep", id="line-separator"),
    pytest.param("no\u00a0break", id="nbsp"),
    pytest.param("private\ue000", id="private-use"),
    pytest.param("surrogate\ud800", id="surrogate"),
    pytest.param("rlm\u200f", id="rlm"),
    *(pytest.param(f"evil{c}gpt", id=f"bidi-U+{ord(c):04X}") for c in BIDI),
]
GOOD = ["a", "x" * MAX_DISPLAY_NAME, NAME, "meta-llama/Llama-3.1-8B", '<script>alert("x")</script> & co']


# ------------------------------------------------------------------------------------------------ messages
def _manifest(display_name: str | None = None, nonce: bytes | None = b"\x02" * 32) -> Manifest:
    probe = ProbeSpec("words-hash-v1-n4", 1, "words-hash-v1", ("▁one", "▁two", "▁three", "▁four"))
    group = TermGroup(probe, (True, False, True, True), (4, 5), "pawprint", "pawprint-terms/1",
                      ("attn_qk", "attn_vo", "ffn"))
    table = tuple(TensorDigest(n, "F32", (3, 3), hashlib.sha256(bytes(range(36))).digest())
                  for n in group.tensor_names(0))
    return Manifest(KEY.key_id, nonce, 123, "agent/1", {"family": "llama", "n_layers": 6}, (group,), table,
                    WeightCommitment(b"\x03" * 32, 10, 4000), display_name=display_name)


def _receipt(model_name: str | None = None) -> Receipt:
    return Receipt(KEY.key_id, KEY.key_id, b"\x01" * 32, b"\x05" * 32, b"\x03" * 32, RegistryState(0, b"\x06" * 32),
                   0, (), "independent", "rule", ("pawprint-terms/1",), 200, False, model_name=model_name)


@pytest.mark.parametrize("name", GOOD)
def test_a_named_manifest_and_receipt_round_trip(name: str) -> None:
    assert check_display_name(name) == name
    for message, key in ((_manifest(name), "display_name"), (_receipt(name), "model_name")):
        data = encode(message.to_map())
        assert decode_map(data)[key] == name
        again = type(message).from_map(decode_map(data))
        assert again == message and encode(again.to_map()) == data
    signed = sign_message(_manifest(name), KEY, "manifest")
    assert open_manifest(signed, "manifest").display_name == name
    receipt = open_receipt(sign_message(_receipt(name), KEY), KEY.public_key)
    assert receipt.model_name == name and receipt.as_dict()["model_name"] == name


def test_without_a_name_the_field_is_absent_and_the_bytes_are_as_before() -> None:
    bare, named = _manifest(), _manifest(NAME)
    assert "display_name" not in bare.to_map() and bare.display_name is None
    # the named encoding is the unnamed one plus one key: nothing else moves
    assert encode({k: v for k, v in named.to_map().items() if k != "display_name"}) == bare.encode()
    assert Manifest.decode(bare.encode()) == bare
    r = _receipt()
    assert "model_name" not in r.to_map() and r.as_dict()["model_name"] is None
    assert encode({k: v for k, v in _receipt(NAME).to_map().items() if k != "model_name"}) == encode(r.to_map())


def test_the_golden_messages_keep_their_bytes() -> None:
    """Every golden receipt and bundle made before names existed parses with no name and re-encodes to the
    bytes that were signed (``tests/test_corpus.py`` checks the corpus is regenerated byte for byte)."""
    from protocol import Bundle

    root = Path(__file__).resolve().parents[1]
    receipts = [root / "golden_core" / "receipt.receipt",
                *(root / "corpus" / "receipt" / f"{n}.receipt" for n in ("valid", "valid-minimal"))]
    for path in receipts:
        payload = SignedMessage.from_bytes(path.read_bytes(), RECEIPT_FORMAT).payload
        r = Receipt.from_map(decode_map(payload))
        assert r.model_name is None and encode(r.to_map()) == payload
    bundle = Bundle.from_bytes((root / "golden_core" / "bundle.bundle").read_bytes())
    m = bundle.open()
    assert m.display_name is None and m.encode() == bundle.signed.payload


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_everywhere(name: str) -> None:
    with pytest.raises(MessageError):
        check_display_name(name)
    with pytest.raises(MessageError, match=r"manifest\.display_name"):
        _manifest(name)
    with pytest.raises(MessageError, match=r"receipt\.model_name"):
        _receipt(name)
    # signed by a hostile owner and parsed: refused too, not cleaned up
    with pytest.raises(MessageError):
        Manifest.from_map({**_manifest().to_map(), "display_name": name})
    with pytest.raises(MessageError):
        Receipt.from_map({**_receipt().to_map(), "model_name": name})


@pytest.mark.parametrize("value", [None, 7, b"bytes", ["a"], True])
def test_a_name_that_is_not_text_is_refused(value: object) -> None:
    # nil included: absent is the one encoding of "no name"
    with pytest.raises(MessageError, match="display_name"):
        Manifest.from_map({**_manifest().to_map(), "display_name": value})
    with pytest.raises(MessageError, match="model_name"):
        Receipt.from_map({**_receipt().to_map(), "model_name": value})


def test_the_optional_key_does_not_open_the_door_to_unknown_keys() -> None:
    for m in (_manifest(NAME).to_map(), _manifest().to_map()):
        with pytest.raises(MessageError, match="unexpected"):
            Manifest.from_map({**m, "name": "x"})
    with pytest.raises(MessageError, match="unexpected"):
        Receipt.from_map({**_receipt(NAME).to_map(), "display_name": NAME})  # the manifest's key, not the receipt's
    with pytest.raises(MessageError, match="unexpected"):
        Manifest.from_map({**_manifest().to_map(), "model_name": NAME})  # and the other way round


# --------------------------------------------------------------------------------------------------- owner
def test_fingerprint_checks_the_name_before_opening_the_model(tmp_path: Path) -> None:
    with pytest.raises(FingerprintError, match=r"display name.*U\+202E"):
        fingerprint(tmp_path / "no-such-model", KEY.key_id, now=NOW, display_name="gpt\u202eevil")


def test_a_bundle_carries_the_name_its_owner_gave(models: Models, keys: Keys) -> None:
    bundle = build_bundle(models.base, keys.vendor, now=NOW, display_name=NAME)
    assert bundle.open().display_name == NAME


# -------------------------------------------------------------------------------------------- the verifier
def test_a_named_submission_gets_a_receipt_naming_the_model(env: Env, models: Models, keys: Keys) -> None:
    named = submit(models.derived, keys.owner, env.channel, keys.verifier.public_key, clock=env.clock,
                   timeout_s=60, display_name=NAME)
    assert named.manifest.display_name == NAME
    assert named.receipt.model_name == NAME and named.receipt.verdict == "derived"
    assert decode_map(named.signed_receipt.payload)["model_name"] == NAME
    assert named.receipt.as_dict()["model_name"] == NAME
    bare = submit(models.derived, keys.owner, env.channel, keys.verifier.public_key, clock=env.clock, timeout_s=60)
    assert bare.receipt.model_name is None and "model_name" not in decode_map(bare.signed_receipt.payload)
    # the owner's client holds the verifier to the name it signed
    renamed = sign_message(dataclasses.replace(named.receipt, model_name="another"), keys.verifier)
    signed_manifest = sign_message(named.manifest, keys.owner, "manifest")
    with pytest.raises(SubmissionError, match="names the model otherwise"):
        check_receipt(renamed, keys.verifier.public_key, signed_manifest, named.manifest, named.challenge)


@pytest.mark.parametrize("name", ["evil\u202egpt", "a\x00b", "e\u0301"], ids=["bidi", "nul", "not-NFC"])
def test_a_signed_manifest_with_a_hostile_name_is_refused_and_nothing_stored(
        env: Env, derived_fingerprint: Fingerprint, name: str) -> None:
    from owner._client import request_challenge

    ch = request_challenge(env.stub, env.keys.verifier.public_key, env.keys.owner.key_id, 10)
    manifest = dataclasses.replace(derived_fingerprint.manifest, nonce=ch.nonce)
    payload = encode({**manifest.to_map(), "display_name": name})  # a hostile agent signs what it likes
    signed = SignedMessage(payload, env.keys.owner.sign("manifest", payload), env.keys.owner.public_key)
    before = env.registry.counts()
    with pytest.raises(grpc.RpcError) as caught:
        env.stub.Submit(iter(submission_requests(signed, manifest, dict(derived_fingerprint.terms), 16 * 1024)),
                        timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "display_name" in (caught.value.details() or "")
    assert env.registry.counts() == before


# -------------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return sample_receipts(tmp_path_factory.mktemp("receipts"))


def _load(path: Path) -> Receipt:
    return Receipt.from_map(decode_map(SignedMessage.from_bytes(path.read_bytes(), RECEIPT_FORMAT).payload))


def _renamed(sample: Sample, path: Path, name: str | None, out: Path) -> Path:
    out.write_bytes(sign_message(dataclasses.replace(_load(path), model_name=name), sample.verifier_key)
                    .to_bytes(RECEIPT_FORMAT))
    return out


def test_the_report_names_the_model_escaped_and_as_the_owners_word(sample: Sample, tmp_path: Path) -> None:
    hostile = '<img src=x onerror="alert(1)"> & Acme\'s 7B'
    named = _renamed(sample, sample.receipts[0], hostile, tmp_path / "named.receipt")
    bare = _renamed(sample, sample.receipts[1], None, tmp_path / "bare.receipt")
    out = tmp_path / "report.html"
    write_report([named, bare], out, verifier_pub=sample.verifier_pub, log_pub=sample.log_pub,
                 null_file=sample.null_file)
    html = out.read_text(encoding="utf-8")
    escaped = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; Acme&#x27;s 7B"
    assert hostile not in html and "<img src=x" not in html and escaped in html
    # the headline names it, as the owner's word
    assert re.search(r'<div class="verdict-subject">Model: <span class="name">' + re.escape(escaped) +
                     r'</span> <span class="small owner-named">\(' + re.escape(OWNER_NAMED) + r"\)</span></div>",
                     html)
    assert f"The submitted model, which its owner calls <b>{escaped}</b>, descends from" in html
    # the listing of receipts names each model; the unnamed one is said to be unnamed, by its digest
    assert re.search(r"<th>Model \(named by the owner\)</th>", html)
    assert f'<td><span class="name">{escaped}</span></td>' in html and "<td><i>unnamed</i></td>" in html
    submission = _load(bare).submission.hex()[:16]
    assert f"an unnamed model (submission <span class=\"mono\">{submission}&hellip;</span>" in html
    assert html.count("<script") == 1  # the page's own, still


# -------------------------------------------------------------------------------------------------- sheets
def _pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as im:
        return im.convert("RGB").tobytes()


def test_sheets_tell_apart_two_long_names_that_differ_only_at_the_end(sample: Sample) -> None:
    r = _load(sample.receipts[0])
    stem = "Acme Large Language Model fine-tuned on internal support tickets, release candidate " * 3
    a, b = (stem[: MAX_DISPLAY_NAME - 1] + c for c in "AB")
    assert len(a) == len(b) == MAX_DISPLAY_NAME and a[:-1] == b[:-1]
    sheet_a, sheet_b = (receipt_sheet(dataclasses.replace(r, model_name=n)) for n in (a, b))
    assert sheet_a is not None and sheet_b is not None and _pixels(sheet_a) != _pixels(sheet_b)
    # the whole name is written, over as many lines as it takes, and the base's name too
    labels = sheet_labels([(None, [f"submitted: {a}"])])[0]
    assert len(labels) > 1 and _unwrap(labels) == f"submitted: {a}"
    base = dataclasses.replace(r.matches[0], name="acme/" + "x" * 100 + "-end")
    sheet = receipt_sheet(dataclasses.replace(r, matches=(base, *r.matches[1:])))
    assert sheet is not None and _pixels(sheet) != _pixels(receipt_sheet(r) or b"")


def test_sheets_write_characters_the_font_lacks_as_code_points() -> None:
    # the sheet's font draws ASCII only: "é" and "è" would be the same box
    assert sheet_text("café") == "caf\\u00e9" and sheet_text("cafè") == "caf\\u00e8"
    assert sheet_text("🐕\\") == "\\U0001f415\\\\"


def _unwrap(lines: list[str]) -> str:
    """The text ``wrap_label``'s lines spell: a line ending in an odd number of backslashes continues a word."""
    out = lines[0]
    for line in lines[1:]:
        trailing = len(out) - len(out.rstrip("\\"))
        out = out[: -len(CONTINUED)] + line if trailing % 2 else f"{out} {line}"
    return out


@given(st.text(alphabet=st.sampled_from("ab -\\é🐕\x00"), max_size=40), st.integers(1, 16))
def test_wrapping_keeps_every_character(text: str, width: int) -> None:
    lines = wrap_label(text, width, len)
    assert _unwrap(lines) == sheet_text(text)
    # no line wider than asked, unless one character's escape alone is wider
    assert all(len(line) <= width or len(line.rstrip("\\")) <= 10 for line in lines)


def test_wrapping_a_name_in_the_sheets_font_keeps_two_names_apart() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        a = "".join(rnd.choice("ab c") for _ in range(rnd.randint(30, 90)))
        b = a[:-1] + ("d" if a[-1] != "d" else "e")
        la, lb = (sheet_labels([(None, [x])])[0] for x in (a, b))
        assert la != lb
