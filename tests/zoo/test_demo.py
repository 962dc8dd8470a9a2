"""The main job end to end on the quick zoo: laundering, comparison, and the two-party flow over mutual TLS."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from protocol import RECEIPT_FORMAT, Receipt, SignedMessage, decode_map
from zoo.demo import run_demo


def test_demo_runs_end_to_end(quick_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, int, int]] = []
    assert run_demo(tmp_path, quick=True, zoo_dir=quick_zoo,
                    progress=lambda label, done, total: calls.append((label, done, total))) == 0
    out, err = capsys.readouterr()
    assert "every step keeps the model's function" in out
    # the zoo step reports model by model (here every model is reused), and no library draws its own bars
    assert calls[-1] == ("done", calls[-1][2], calls[-1][2])
    assert "llama-base-s0: cached" in [label for label, _, _ in calls]
    assert "Loading weights" not in err and "it/s]" not in err
    receipts = sorted((tmp_path / "flow" / "receipts").glob("*/*.pawprint-receipt"))
    assert {r.parent.name for r in receipts} == {
        "llama-base-s0-laundered", "llama-sft", "llama-pruned", "llama-cpt-heavy", "llama-base-s1"
    }
    assert out.count("receipt verified offline (signature) and against the registry log") == 5
    assert "audit passed: the log grew from 1 to 4 entries consistently" in out
    # the laundered copy is recognised as its base, and the unregistered independent seed is not
    laundered = out.split("owner submits llama-base-s0-laundered")[1].split("owner submits")[0]
    assert "verdict    derived" in laundered
    independent = out.split("owner submits llama-base-s1")[1]
    assert "verdict    derived" not in independent
    # pictures beside every receipt, and one report for all of them
    for r in receipts:
        assert r.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
        # a sheet beside the best match's dog; an independent model's receipt states no match (the verdict needs
        # no score), so it has its own dog only
        signed = SignedMessage.from_bytes(r.read_bytes(), RECEIPT_FORMAT)
        receipt = Receipt.from_map(decode_map(signed.payload))
        assert (r.parent / f"{r.stem}-sheet.png").exists() == bool(receipt.matches)
        assert bool(receipt.matches) == (receipt.verdict != "independent")
    assert "base(s) independent, not listed" in independent
    report = (tmp_path / "flow" / "report.html").read_text()
    assert "<h2>Receipt 6 of 6 " in report and "Signature VALID" in report and "INVALID" not in report
    assert "dispute report" in out and str(tmp_path / "flow" / "report.html") in out
    # the dispute: the thief's decoy gets a valid owner-attested receipt; the audit from its real weights does not
    # reproduce it, and says so in a signed finding
    dispute = out.split("the dispute: a thief holds llama-sft")[1]
    assert "verdict    independent" in dispute and "assurance  owner-attested" in dispute
    assert "inconsistent" in dispute.split("recomputes the receipt")[1]
    assert (tmp_path / "flow" / "audit-finding.pawprint-finding").exists()
    # the report shows the finding in the headline of the thief's receipt (the sixth), and only there
    assert report.count('<div class="finding ') == 1
    thief = report.split('<section class="receipt" id="receipt-6">')[1]
    headline = unescape(re.sub(r"<[^>]+>", " ", thief.split('<p class="meaning">', 1)[0]))
    assert "Audit finding: INCONSISTENT" in headline
    assert "these weights are not the ones the receipt names (failed: weight-commitment)" in headline
    assert "Valid: signed by auditor key" in headline and "trusted as an auditor by your trust store" in headline
    assert "the owner's submission verifies" in headline and "Assurance: owner-attested" in headline
    for who in ("Verifier's (the receipt)", "Owner's (the submission)", "Auditor's (this finding)"):
        assert who in headline
    assert "finding" in out.split("dispute report (one HTML file")[1]
