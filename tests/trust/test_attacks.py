"""Issue 15's attacks by a dishonest owner, each against an in-process verifier (``zoo.trust_attacks.Lab``) whose
registry holds the quick zoo's bases: every attack is refused, flagged ``insufficient-evidence``, or receives an
``owner-attested`` receipt whose headline says that nobody checked the terms against the weights (those only an
audit from the weights can expose: listed in docs/results/trust.md).

The stolen model is the quick zoo's ``llama-sft`` (derived from ``llama-base-s0``: its honest receipt says
``derived``); the other model is ``llama-base-s1`` (an independent seed).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from owner._fingerprint import Fingerprint
from protocol import INSUFFICIENT_EVIDENCE, OWNER_ATTESTED, RECEIPT_FORMAT, Receipt
from verifier._report import check_receipt, render_report
from verifier.errors import PermissionDenied
from zoo import trust_attacks as A


def _bases(zoo: Path) -> list[tuple[str, Path]]:
    return [("llama-base", zoo / "llama-base-s0"), ("gpt2-base", zoo / "gpt2-base-s0")]


@pytest.fixture(scope="module")
def lab(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[A.Lab]:
    lab = A.Lab.create(tmp_path_factory.mktemp("trust"), _bases(quick_zoo))
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def stolen(lab: A.Lab, quick_zoo: Path) -> Fingerprint:
    return lab.honest(quick_zoo / "llama-sft")


@pytest.fixture(scope="module")
def other(lab: A.Lab, quick_zoo: Path) -> Fingerprint:
    return lab.honest(quick_zoo / "llama-base-s1")


def _headline(receipt: Receipt) -> str:
    from pawprint.cli_receipt import print_receipt

    out = io.StringIO()
    with redirect_stdout(out):
        print_receipt(receipt)
    return out.getvalue()


def test_the_honest_stolen_model_is_derived_and_the_receipt_says_whose_claim_it_is(
    lab: A.Lab, stolen: Fingerprint, other: Fingerprint
) -> None:
    receipt = lab.submit((stolen.manifest, stolen.terms))
    assert receipt.verdict == "derived" and receipt.evidence == ()
    assert receipt.assurance == OWNER_ATTESTED
    assert receipt.weight_commitment == stolen.manifest.weight_commitment.root
    text = _headline(receipt)
    assert text.splitlines()[0].startswith("verdict    derived")
    assert "assurance  owner-attested" in text and "the owner's claim, not checked against any weights" in text
    honest_other = lab.submit((other.manifest, other.terms))
    assert honest_other.verdict == "independent" and honest_other.evidence == ()


CAUGHT: dict[str, tuple[Callable[[Fingerprint, Fingerprint], A.Submission], str]] = {
    "noise-32x": (lambda s, o: A.noisy(s, 32), "spectral norm"),
    "noise-64x": (lambda s, o: A.noisy(s, 64), "spectral norm"),
    "constant": (lambda s, o: A.constant(s), "constant"),
    "one-hot": (lambda s, o: A.one_hot(s), "exact zeros"),
    "15-probe-tokens": (lambda s, o: A.few_probe_tokens(s), "probe tokens present; the floor is 32"),
    "no-groups": (lambda s, o: A.no_groups(s), "no term groups"),
    "two-models-mixed": (lambda s, o: A.mixed_models(s, o), "outside one 32-dimensional subspace"),
}


@pytest.mark.parametrize("name", list(CAUGHT))
def test_the_evidence_checks_refuse_a_verdict(lab: A.Lab, stolen: Fingerprint, other: Fingerprint,
                                              name: str) -> None:
    make, finding = CAUGHT[name]
    receipt = lab.submit(make(stolen, other))
    assert receipt.verdict == INSUFFICIENT_EVIDENCE, receipt.evidence
    assert any(finding in f for f in receipt.evidence), receipt.evidence
    assert receipt.assurance == OWNER_ATTESTED
    assert f"verdict    {INSUFFICIENT_EVIDENCE}" in _headline(receipt)


def test_leaving_out_a_bases_probe_set_is_not_independence(lab: A.Lab, stolen: Fingerprint) -> None:
    """The thief drops the term group on its base's probe set, so that base is never compared: whichever group
    it drops, the receipt is not ``independent``, and the base left uncompared is named."""
    assert len(stolen.manifest.groups) == 2
    receipts = [lab.submit(A.drop_group(stolen, i)) for i in range(2)]
    assert all(r.verdict != "independent" for r in receipts), [(r.verdict, r.evidence) for r in receipts]
    assert any(any("llama-base: not compared" in f for f in r.evidence) for r in receipts), \
        [r.evidence for r in receipts]


def test_noise_also_breaks_the_shared_subspace(lab: A.Lab, stolen: Fingerprint) -> None:
    """With the probe rows (122) outnumbering the width (32), noise is caught a second way, independent of the
    FFN norm bound."""
    receipt = lab.submit(A.noisy(stolen, 32))
    assert any("outside one 32-dimensional subspace" in f for f in receipt.evidence)


def test_layer_zero_only_with_false_metadata(quick_zoo: Path, tmp_path: Path) -> None:
    """The challenge asks for every layer; the thief sends layer 0 only and states one layer, another family and
    a width above the probe rows: one layer is below the floor. With the true layer count the missing layers
    are named."""
    lab = A.Lab.create(tmp_path, [("llama-base", quick_zoo / "llama-base-s0")], layers="all")
    try:
        fp = lab.honest(quick_zoo / "llama-sft")
        receipt = lab.submit(A.first_layer_only(fp))
        assert receipt.verdict == INSUFFICIENT_EVIDENCE
        assert any("1 layer(s); at least 2" in f for f in receipt.evidence), receipt.evidence
        truthful = A.first_layer_only(fp, family="llama", width=32)
        manifest = dataclasses.replace(truthful[0], model={**truthful[0].model, "n_layers": 3})
        receipt = lab.submit((manifest, truthful[1]))
        assert any("layers [1, 2] asked for by the challenge (all) are missing" in f for f in receipt.evidence)
        honest = lab.submit((fp.manifest, fp.terms))
        assert honest.verdict == "derived" and honest.evidence == ()
    finally:
        lab.close()


AUDIT_ONLY: dict[str, Callable[[Fingerprint, Fingerprint], A.Submission]] = {
    "another-models-terms": lambda s, o: A.another_models_terms(s, o),
    "permuted-probe-rows": lambda s, o: A.permuted_rows(s),
    "rotated-probe-rows": lambda s, o: A.rotated_rows(s),
}


@pytest.mark.parametrize("name", list(AUDIT_ONLY))
def test_consistent_decoys_get_an_owner_attested_receipt_that_says_so(
    lab: A.Lab, stolen: Fingerprint, other: Fingerprint, name: str, tmp_path: Path
) -> None:
    """No check on the terms alone catches these: the receipt is ``owner-attested``, names the stolen weights'
    commitment as the owner's claim, and says in the CLI headline and the report's headline that nobody
    recomputed the terms from the weights (only ``pawprint audit recompute`` does)."""
    signed = lab.submit_signed(AUDIT_ONLY[name](stolen, other))
    item = check_receipt(signed.to_bytes(RECEIPT_FORMAT), "decoy", verifier_key=lab.verifier.public_key)
    receipt = item.receipt
    assert receipt.verdict != "derived"  # the decoy hides the lineage ...
    assert receipt.assurance == OWNER_ATTESTED  # ... and the receipt says what stands behind it
    assert receipt.weight_commitment == stolen.manifest.weight_commitment.root
    text = _headline(receipt)
    assert "owner-attested" in text and "no one has recomputed them from the weights" in text
    html = render_report([item])
    assert "Assurance: owner-attested" in html and "pawprint audit recompute" in html


def test_framing_with_a_copied_commitment(lab: A.Lab, stolen: Fingerprint, other: Fingerprint,
                                          quick_zoo: Path, tmp_path: Path) -> None:
    """A second trusted owner key sends a derived model's terms under the independent model's commitment: the
    receipt is signed, but it names the framer's key, shows no possession and is owner-attested; a verifier
    that requires possession refuses it."""
    framed = A.another_models_terms(other, stolen)
    receipt = lab.submit(framed, lab.framer)
    assert receipt.verdict == "derived" and receipt.weight_commitment == other.manifest.weight_commitment.root
    assert receipt.owner_key_id == lab.framer.key_id and receipt.possession is None
    assert receipt.assurance == OWNER_ATTESTED
    guarded = A.Lab.create(tmp_path, _bases(quick_zoo), require_possession=True)
    try:
        with pytest.raises(PermissionDenied, match="possession"):
            guarded.submit(framed, guarded.framer)
    finally:
        guarded.close()


AUDITED: dict[str, tuple[Callable[[Fingerprint, Fingerprint], A.Submission], str]] = {
    "honest": (lambda s, o: (s.manifest, s.terms), "consistent"),
    **{name: (make, "inconsistent") for name, make in AUDIT_ONLY.items()},
}


@pytest.mark.parametrize("name", list(AUDITED))
def test_the_audit_from_the_weights_exposes_a_decoy(lab: A.Lab, stolen: Fingerprint, other: Fingerprint,
                                                    quick_zoo: Path, name: str) -> None:
    """``pawprint audit recompute`` (``pawprint.cli_audit.recompute``) with the committed weights and the owner's
    signed submission: the honest submission is consistent, every decoy the evidence checks let through is not."""
    from pawprint.cli_audit import recompute

    make, outcome = AUDITED[name]
    signed = lab.submit_signed(make(stolen, other))
    assert lab.last_submission is not None
    result = recompute(signed, lab.verifier.public_key, quick_zoo / "llama-sft", submission=lab.last_submission)
    assert result.outcome == outcome, result.summary
    commitment = next(c for c in result.checks if c.name == "weight-commitment")
    assert commitment.status == "pass"  # the stolen weights are the committed ones: only the terms give it away


def test_the_audit_exposes_framing(lab: A.Lab, stolen: Fingerprint, other: Fingerprint, quick_zoo: Path) -> None:
    """The framed owner's own weights do not reproduce the terms the framer sent under their commitment."""
    from pawprint.cli_audit import recompute

    signed = lab.submit_signed(A.another_models_terms(other, stolen), lab.framer)
    assert lab.last_submission is not None
    result = recompute(signed, lab.verifier.public_key, quick_zoo / "llama-base-s1", submission=lab.last_submission)
    assert result.outcome == "inconsistent", result.summary
