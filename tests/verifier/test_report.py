"""The dispute report (``verifier._report``): what the page says, that receipt text is escaped, that every check
shows (pictures, signature, log, verdict), that it is deterministic, and that it renders in a real browser."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks.report_sample import (
    SAMPLE_TIME,
    BrowserMissing,
    Sample,
    find_chromium,
    rendered_state,
    sample_receipts,
    screenshot,
)
from pawprint.cli import main as pawprint_main
from pawprint.cli_receipt import print_receipt
from protocol import (
    FINDING_FORMAT,
    RECEIPT_FORMAT,
    WEIGHT_COMMITMENT_ID,
    AuditCheck,
    Finding,
    PrivateKey,
    Receipt,
    Role,
    SignedMessage,
    TrustStore,
    decode_map,
    encode,
    sign_finding,
    sign_message,
)
from protocol._messages import COMMITMENT_CLAIMS, OWNER_ATTESTED_POSSESSION
from protocol._possession import POSSESSION_ID
from verifier._report import (
    CONTENT_SECURITY_POLICY,
    ReportError,
    chance_words,
    check_findings,
    check_receipt,
    check_receipts,
    render_report,
    write_report,
    write_report_page,
)

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    # The derived receipt's base has a hostile name: every test below also checks it stays text.
    return sample_receipts(tmp_path_factory.mktemp("receipts"), derived_base=HOSTILE)


def _write(sample: Sample, out: Path, receipts: list[Path] | None = None, **keys: Any) -> str:
    keys = {"verifier_pub": sample.verifier_pub, "log_pub": sample.log_pub, "null_file": sample.null_file, **keys}
    write_report(receipts or list(sample.receipts), out, **keys)
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    _write(sample, out)
    return out


def _receipt(path: Path) -> Receipt:
    return Receipt.from_map(decode_map(SignedMessage.from_bytes(path.read_bytes(), RECEIPT_FORMAT).payload))


def _resigned(sample: Sample, receipt: Receipt, path: Path) -> Path:
    path.write_bytes(sign_message(receipt, sample.verifier_key).to_bytes(RECEIPT_FORMAT))
    return path


def _text(html: str) -> str:
    """The page's visible words, tags dropped and whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_page_states_each_verdict_in_words_and_numbers(sample: Sample, page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    text = _text(html)
    derived, independent = (_receipt(p) for p in sample.receipts)
    assert derived.verdict == "derived" and independent.verdict == "independent"
    assert [m.verdict for m in derived.matches] == ["derived", "inconclusive", "independent"]
    assert "Derived from &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Independent of every registered base" in text
    lead = derived.matches[0]
    assert lead.name == HOSTILE and lead.verdict == "derived" and lead.p_value is not None and lead.z is not None
    assert f"p = {lead.p_value}; z = {lead.z}" in text
    assert "a match this strong would happen by chance about once in 10" in text
    assert "Signature VALID" in text and "INVALID" not in text
    assert text.count("Re-derived: every z, p-value and verdict follows") == 2
    assert text.count("Valid: signed by the log key you gave") == 4  # summary and registry section, each
    assert "Not checked: no registry was given" in text
    # every match in the table, with its log entry
    for r in (derived, independent):
        for m in r.matches:
            assert f'<td class="num">#{m.log_index}</td>' in html
    assert "pawprint receipt verify derived.receipt --verifier-pub VERIFIER.pub" in text
    assert derived.null_id is not None and derived.null_id in text


def test_the_dogs_are_inline_and_checked_against_their_signed_digests(sample: Sample, page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    pngs = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]
    assert len(pngs) == 4  # submitted and best base, for each receipt
    signed = []
    for r in (_receipt(p) for p in sample.receipts):
        assert r.picture is not None and r.matches[0].picture is not None
        signed += [r.picture.picture_digest, r.matches[0].picture.picture_digest]
    assert [hashlib.sha256(p).digest() for p in pngs] == signed
    assert all(Image.open(io.BytesIO(p)).size == (256, 256) for p in pngs)
    assert html.count("redrawn dog matches the signed picture digest") == 4
    assert "Related models get similar dogs" in html and "The numbers decide" in html


def test_the_heatmap_has_a_coloured_cell_per_layer_pair_and_term(sample: Sample, page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    n_terms = sum(len(_receipt(p).matches[0].terms) for p in sample.receipts)
    cosine = re.findall(r'<td class="cell cosine" style="background:#[0-9a-f]{6};color:#[0-9a-f]{6}">'
                        r"(-?[01]\.[0-9]{6})</td>", html)
    z = re.findall(r'<td class="cell z" style="background:#[0-9a-f]{6};color:#[0-9a-f]{6}">(-?[0-9.]+)</td>', html)
    assert len(cosine) == len(z) == n_terms == 24
    assert cosine[0] == _receipt(sample.receipts[0]).matches[0].terms[0].cosine
    assert html.count('class="legend"') == 4


def test_receipt_text_is_escaped_and_nothing_is_loaded(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert HOSTILE not in html and "alert(1)" in html
    assert html.count("<script") == 1  # the page's own
    assert f'content="{CONTENT_SECURITY_POLICY}"' in html and "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert not re.search(r'(src|href)="(?!data:|#)', html), "a resource outside the page"
    assert "http://" not in html and "https://" not in html


def test_the_same_receipts_give_the_same_bytes(sample: Sample, page: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.html"
    _write(sample, again)
    assert again.read_bytes() == page.read_bytes()
    items = [check_receipt(p.read_bytes(), p.name) for p in sample.receipts]
    assert render_report(items) == render_report(items)


def test_a_picture_that_is_not_the_signed_one_is_flagged(sample: Sample, tmp_path: Path) -> None:
    r = _receipt(sample.receipts[0])
    assert r.picture is not None
    forged = dataclasses.replace(r.picture, picture_digest=hashlib.sha256(b"another dog").digest())
    path = _resigned(sample, dataclasses.replace(r, picture=forged), tmp_path / "forged.receipt")
    html = _write(sample, tmp_path / "r.html", [path])
    assert "WARNING: this is not the picture the verifier signed" in html and 'class="dog bad"' in html
    assert "the dog drawn from the vector is not the picture the verifier signed" in html
    assert "Signature VALID" in html  # the verifier signed the wrong digest: the signature cannot tell
    other = dataclasses.replace(r.picture, renderer_id="someone-elses-dog/9")
    path = _resigned(sample, dataclasses.replace(r, picture=other), tmp_path / "renderer.receipt")
    assert "drawn by renderer someone-elses-dog/9" in _write(sample, tmp_path / "r2.html", [path])


def test_a_bad_signature_cannot_be_missed(sample: Sample, tmp_path: Path) -> None:
    html = _write(sample, tmp_path / "wrong-key.html", verifier_pub=sample.log_pub)
    assert html.count("Signature INVALID") == 4  # banner and details, for each receipt
    assert "do not rely on this verdict" in html and "not by the verifier key you gave" in html
    # a payload changed after signing: invalid even with no trusted key at hand
    signed = SignedMessage.from_bytes(sample.receipts[0].read_bytes(), RECEIPT_FORMAT)
    changed = {**decode_map(signed.payload), "verdict": "independent"}
    altered = tmp_path / "altered.receipt"
    altered.write_bytes(dataclasses.replace(signed, payload=encode(changed)).to_bytes(RECEIPT_FORMAT))
    html = _write(sample, tmp_path / "altered.html", [altered], verifier_pub=None)
    assert "Signature INVALID" in html and "the file was changed after it was signed" in html


def test_unchecked_is_said_and_a_verdict_that_does_not_follow_is_flagged(sample: Sample, tmp_path: Path) -> None:
    html = _write(sample, tmp_path / "bare.html", verifier_pub=None, log_pub=None)
    assert "Signature NOT CHECKED" in html and "Not checked: no log public key was given." in html
    relabelled = dataclasses.replace(_receipt(sample.receipts[0]), verdict="inconclusive")
    path = _resigned(sample, relabelled, tmp_path / "relabelled.receipt")
    html = _write(sample, tmp_path / "relabelled.html", [path])
    assert "INCONSISTENT: the verdict does not follow" in html and "does not follow from the receipt" in html


def test_a_receipt_without_pictures_or_log(sample: Sample, tmp_path: Path) -> None:
    r = _receipt(sample.receipts[1])
    bare = dataclasses.replace(r, picture=None, checkpoint=None, matches=tuple(
        dataclasses.replace(m, picture=None, log_index=None) for m in r.matches))
    html = _write(sample, tmp_path / "bare.html", [_resigned(sample, bare, tmp_path / "bare.receipt")])
    assert "data:image/png" not in html and "No picture" in html and "This receipt carries no pictures" in html
    assert "made without a transparency log" in html
    # made under a rule without a null: no chance figures, no z, nothing re-derived
    provisional = dataclasses.replace(bare, null_id=None, verdict_rule="provisional-0", matches=tuple(
        dataclasses.replace(m, z=None, p_value=None, terms=tuple(dataclasses.replace(t, z=None) for t in m.terms))
        for m in bare.matches))
    html = _write(sample, tmp_path / "prov.html", [_resigned(sample, provisional, tmp_path / "prov.receipt")])
    assert "carries no calibrated chance figure" in html and "No z-scores: no null was used." in html
    assert "Not re-derived here" in html and 'class="cell z"' not in html


def test_inclusion_proofs_that_do_not_verify_are_shown_failed(sample: Sample, tmp_path: Path) -> None:
    class BogusLog:
        def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
            return b"not the entry", [b"\0" * 32]

    html = _write(sample, tmp_path / "log.html", [sample.receipts[0]], log_source=BogusLog())
    assert "Inclusion proofs:</b> FAILED: entry" in html


def test_not_a_receipt_is_refused(sample: Sample, tmp_path: Path) -> None:
    junk = tmp_path / "junk.receipt"
    junk.write_bytes(b"\x80")
    with pytest.raises(ReportError, match=r"junk\.receipt: not a receipt"):
        write_report([junk], tmp_path / "r.html")
    with pytest.raises(ReportError, match="no receipt"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(ReportError, match="cannot read"):
        write_report([tmp_path / "missing.receipt"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(ReportError, match="cannot write"):
        write_report([sample.receipts[1]], tmp_path / "no-such-dir" / "r.html")


def test_chance_in_words() -> None:
    assert chance_words("1.129e-54") == "about once in 10<sup>54</sup> comparisons of unrelated models"
    assert chance_words("1.000e-09") == "about once in a billion comparisons of unrelated models"
    assert chance_words("3.000e-07") == "about once in 3.3 million comparisons of unrelated models"
    assert chance_words("2.375e-03") == "about once in 420 comparisons of unrelated models"
    assert chance_words("4.413e-01") == "in about 44 out of 100 comparisons of unrelated models"
    assert chance_words("1.000e+00") == "in nearly every comparison of unrelated models"
    assert "too rare to compute" in chance_words("0.000e+00")


def _chromium() -> str:
    try:
        return find_chromium()
    except BrowserMissing as e:  # a missing browser is a broken set-up, not a reason to skip
        pytest.fail(f"the report's browser test needs headless Chromium: {e}")


def test_the_page_renders_in_a_real_browser(page: Path, tmp_path: Path) -> None:
    _chromium()
    assert rendered_state(page) == "ok"
    png = tmp_path / "shot.png"
    screenshot(page, png, width=1200, height=2400)
    with Image.open(png) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200, "the screenshot is (nearly) blank"
    # the marker is not vacuous: a picture that does not decode turns it to "error"
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text(encoding="utf-8").replace("base64,iVBOR", "base64,AAAA", 1), encoding="utf-8")
    assert rendered_state(broken) == "error"


# ------------------------------------------------------------------------------------------ auditors' findings
AUDITOR = PrivateKey.from_seed(b"\x71" * 32)


def _finding(receipt: Path, out: Path, *, key: PrivateKey = AUDITOR, outcome: str = "inconsistent") -> Path:
    """A signed finding about ``receipt`` as ``pawprint audit recompute --key`` writes one (no submission: the
    demo's test covers a finding with the owner's submission, made from real weights)."""
    r = _receipt(receipt)
    failed = outcome == "inconsistent"
    checks = (
        AuditCheck("weight-commitment", "pass", r.weight_commitment.hex(), r.weight_commitment.hex(), "exact",
                   "the weights' commitment against the receipt's"),
        AuditCheck("picture-vector", "fail" if failed else "pass", "vector sha256 00ff",
                   "relative L2 distance 4.100e-03" if failed else "relative L2 distance 1.0e-07",
                   "relative L2 <= 0.0001", f"encoding of the recomputed terms {HOSTILE}"),
    )
    summary = ("inconsistent: the owner's submission did not come from these weights (failed: picture-vector)"
               if failed else "consistent: the weights are the ones the receipt names and the submitted terms "
                              "come from them")
    finding = Finding(key.key_id, outcome, summary, checks, r.weight_commitment, WEIGHT_COMMITMENT_ID,
                      receipt.read_bytes(), None, ("what each signature covers",), SAMPLE_TIME + 3600)
    out.write_bytes(sign_finding(finding, key).to_bytes(FINDING_FORMAT))
    return out


def _audit_pub(tmp_path: Path, key: PrivateKey = AUDITOR) -> Path:
    path = tmp_path / f"auditor-{key.key_id[:8]}.pub"
    key.public_key.save(path)
    return path


def _with_findings(sample: Sample, out: Path, findings: list[Path], **keys: Any) -> str:
    items = check_receipts(list(sample.receipts), verifier_pub=sample.verifier_pub, log_pub=sample.log_pub,
                           null_file=sample.null_file)
    found = check_findings(findings, items, **keys)
    write_report_page(items, out, findings=found)
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def audited_page(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("audited")
    finding = _finding(sample.receipts[1], tmp / "independent.pawprint-finding")
    out = tmp / "audited.html"
    _with_findings(sample, out, [finding], auditor_pubs=[_audit_pub(tmp)], verifier_pub=sample.verifier_pub)
    return out


def test_a_finding_is_in_the_headline_of_the_receipt_it_concerns(audited_page: Path) -> None:
    html = audited_page.read_text(encoding="utf-8")
    first, second = html.split('<section class="receipt" id="receipt-2">')
    assert "Audit finding" not in first.split("</h1>", 1)[1].split('<section class="receipt" id="receipt-1">')[1]
    headline = second.split('<div class="verdict ', 1)[1].split('<p class="meaning">', 1)[0]
    text = unescape(_text(headline))
    assert "Audit finding: INCONSISTENT: this receipt does not hold up against the weights" in text
    assert "Disputed: an auditor's signed finding says this receipt does not hold up" in text
    assert "the owner's submission did not come from these weights (failed: picture-vector)" in text
    # the failed check with its numbers; the checks that passed named; the finding's text escaped
    assert "picture-vector : signed vector sha256 00ff; recomputed relative L2 distance 4.100e-03" in text
    assert "passed: weight-commitment" in text
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in headline
    # its signatures checked, and what each of the three covers
    assert f"Valid: signed by an auditor key you gave (key id {AUDITOR.key_id})" in text
    assert "The embedded receipt verifies" in text and "no owner's submission embedded" in text
    for who in ("Verifier's (the receipt)", "Owner's (the submission)", "Auditor's (this finding)"):
        assert who in text
    assert "the weights are not in it" in text and "equal to the receipt's" in text
    # the summary table says which receipt was audited
    summary = unescape(_text(html.split('<table class="summary">', 1)[1].split("</table>", 1)[0]))
    assert "Audit finding" in summary and summary.count("inconsistent") == 1


def test_a_finding_that_does_not_verify_is_marked_invalid(sample: Sample, tmp_path: Path) -> None:
    finding = _finding(sample.receipts[0], tmp_path / "f.pawprint-finding")
    # no auditor key: only unchecked
    html = _with_findings(sample, tmp_path / "a.html", [finding])
    assert "Not checked against a trusted key" in html and "was not checked against a key you trust" in html
    # another key pinned: invalid, loudly
    other = PrivateKey.from_seed(b"\x72" * 32)
    html = _with_findings(sample, tmp_path / "b.html", [finding], auditor_pubs=[_audit_pub(tmp_path, other)])
    assert "This audit finding is INVALID" in html and "not by the auditor key(s) you gave" in html
    assert "Disputed:" not in html  # an invalid finding disputes nothing
    # a trust store: trusted only for the auditor role
    store = TrustStore()
    store.add(AUDITOR.public_key, Role.VERIFIER, name="not an auditor")
    store.save(tmp_path / "trust.json")
    items = check_receipts(list(sample.receipts))
    [item] = check_findings([finding], items, trust_file=tmp_path / "trust.json")
    assert item.failed == ("signature",) and "not as auditor" in item.signature.text
    store.add(AUDITOR.public_key, Role.AUDITOR)
    store.save(tmp_path / "trust.json")
    [item] = check_findings([finding], items, trust_file=tmp_path / "trust.json")
    assert item.failed == () and "trusted as an auditor by your trust store" in item.signature.text
    # changed after signing (its outcome flipped): the auditor's signature fails even with no key at hand
    signed = SignedMessage.from_bytes(finding.read_bytes(), FINDING_FORMAT)
    flipped = {**decode_map(signed.payload), "outcome": "consistent",
               "checks": [{**c, "status": "pass"} for c in decode_map(signed.payload)["checks"]]}
    altered = tmp_path / "altered.pawprint-finding"
    altered.write_bytes(dataclasses.replace(signed, payload=encode(flipped)).to_bytes(FINDING_FORMAT))
    [item] = check_findings([altered], items)
    assert item.failed == ("signature",) and "changed after it was signed" in item.signature.text
    # the embedded receipt signed by another verifier key than the one given
    [item] = check_findings([finding], items, verifier_pub=sample.log_pub)
    assert item.failed == ("embedded",)


def test_a_finding_needs_its_receipt_and_must_be_a_finding(sample: Sample, tmp_path: Path) -> None:
    finding = _finding(sample.receipts[1], tmp_path / "f.pawprint-finding")
    items = check_receipts([sample.receipts[0]])
    with pytest.raises(ReportError, match=r"f\.pawprint-finding: the finding concerns a receipt that is not among"):
        check_findings([finding], items)
    with pytest.raises(ReportError, match="not an audit finding file"):
        check_findings([sample.receipts[0]], items)
    with pytest.raises(ReportError, match="cannot read the finding"):
        check_findings([tmp_path / "missing"], items)


def test_possession_is_stated_with_what_it_does_not_show(sample: Sample, tmp_path: Path) -> None:
    r = _receipt(sample.receipts[1])
    assert "not checked against any weights" in r.commitment_claim
    shown = dataclasses.replace(r, possession=f"{POSSESSION_ID};openings=3;chunk=64")
    assert shown.commitment_claim == COMMITMENT_CLAIMS[OWNER_ATTESTED_POSSESSION]
    assert "not checked against any weights" not in shown.commitment_claim
    html = _write(sample, tmp_path / "p.html", [_resigned(sample, shown, tmp_path / "p.receipt")])
    text = unescape(_text(html.split('<div class="verdict ', 1)[1].split('<p class="meaning">', 1)[0]))
    assert "Assurance: owner-attested" in text and "Possession shown:" in text
    assert "opened 3 chunk(s) of at most 64 bytes" in text and "held those chunks then" in text
    assert "does not show that the owner holds every byte, that the terms were computed from these weights" in text
    # and the command line's headline says the same
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_receipt(shown)
    printed = out.getvalue()
    assert "possession of the committed weights shown" in printed.split("\n")[1]
    assert "opened 3 chunk(s) of at most 64 bytes" in printed and "Not shown: that it holds every byte" in printed
    assert "not checked against any weights" not in printed


def test_report_command_refuses_an_invalid_finding_unless_allowed(sample: Sample, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    finding = _finding(sample.receipts[1], tmp_path / "f.pawprint-finding")
    page = tmp_path / "r.html"
    base = ["report", *map(str, sample.receipts), "-o", str(page), "--verifier-pub", str(sample.verifier_pub),
            "--finding", str(finding), "--json"]
    assert pawprint_main([*base, "--auditor-pub", str(_audit_pub(tmp_path))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["findings"][0]["receipt"] == "independent.receipt"
    assert out["findings"][0]["outcome"] == "inconsistent" and out["findings"][0]["failed_checks"] == ["picture-vector"]
    assert "Audit finding: INCONSISTENT" in page.read_text(encoding="utf-8")
    page.unlink()
    wrong = _audit_pub(tmp_path, PrivateKey.from_seed(b"\x72" * 32))
    assert pawprint_main([*base, "--auditor-pub", str(wrong)]) == 1
    assert "1 of 1 finding(s) invalid, no report written" in capsys.readouterr().err and not page.exists()
    assert pawprint_main([*base, "--auditor-pub", str(wrong), "--allow-invalid"]) == 0
    assert "pawprint: warning:" in capsys.readouterr().err and "This audit finding is INVALID" in page.read_text()
    # a finding without its receipt: bad input
    assert pawprint_main(["report", str(sample.receipts[0]), "-o", str(page), "--finding", str(finding)]) == 2
    assert "not among those given" in capsys.readouterr().err


def test_a_page_with_a_finding_renders_in_a_real_browser(audited_page: Path) -> None:
    _chromium()
    assert rendered_state(audited_page) == "ok"


def test_a_receipt_drawn_with_an_older_shipped_null_is_rederived_with_it() -> None:
    """After the default null changed (pawprint-null/2), a receipt that names the v1 null is re-derived with the
    v1 null the verifier still ships, not shown as 'not re-derived here'."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import make_corpus as corpus

    from verifier import Thresholds, decide, verdict_of
    from verifier._calibration import DATA_DIR, load_null, shipped_nulls
    from verifier._compare import _calibrated
    from verifier._report import OK, UNCHECKED, _verdict_check

    v1 = load_null(DATA_DIR / "null-zoo-v1.json")
    assert v1.null_id != load_null().null_id
    matches = decide([_calibrated(corpus._match(z=None, p_value=None, common_probe_tokens=2048), v1)])
    receipt = corpus._receipt(corpus._log(), matches=tuple(matches), verdict=verdict_of(matches),
                              verdict_rule=Thresholds().rule, null_id=v1.null_id)
    assert _verdict_check(receipt, load_null()).state == UNCHECKED
    assert _verdict_check(receipt, load_null(), shipped_nulls()).state == OK
