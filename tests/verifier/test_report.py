"""The dispute report (``verifier._report``): what the page says, that receipt text is escaped, that every check
shows (pictures, signature, log, verdict), that it is deterministic, and that it renders in a real browser."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks.report_sample import BrowserMissing, Sample, find_chromium, rendered_state, sample_receipts, screenshot
from protocol import RECEIPT_FORMAT, Receipt, SignedMessage, decode_map, encode, sign_message
from verifier._report import (
    CONTENT_SECURITY_POLICY,
    ReportError,
    chance_words,
    check_receipt,
    render_report,
    write_report,
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
