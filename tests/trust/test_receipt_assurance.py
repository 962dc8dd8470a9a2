"""The receipt's assurance level and evidence findings (``protocol._messages.Receipt``), checked on decode like
every field; receipts issued before the fields existed (the committed golden receipt) still decode, read as
``owner-attested``, and re-encode to the same bytes. Plus the evidence checks' pure parts
(``verifier._evidence``) on small inputs."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol import (
    INSUFFICIENT_EVIDENCE,
    OWNER_ATTESTED,
    RECEIPT_FORMAT,
    Challenge,
    MessageError,
    ProbeSpec,
    Receipt,
    RegistryState,
    SignedMessage,
    SubmissionLimits,
    TermGroup,
    decode_map,
    encode,
    read_bundle,
    sha256,
)
from protocol.terms import InvariantSet
from verifier import load_null
from verifier._compare import recheck_verdict
from verifier._evidence import (
    WHITENED_METHOD_PREFIX,
    check_matches,
    check_plausible,
    check_sufficient,
    requested_layers,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden_core"


@pytest.fixture(scope="module")
def legacy() -> tuple[SignedMessage, Receipt]:
    signed = SignedMessage.from_bytes((GOLDEN / "receipt.receipt").read_bytes(), RECEIPT_FORMAT)
    return signed, Receipt.from_map(decode_map(signed.payload))


def test_a_receipt_from_before_assurance_levels_reads_as_owner_attested(legacy: tuple[SignedMessage, Receipt]) -> None:
    signed, receipt = legacy
    assert receipt.assurance is None and receipt.evidence == ()
    assert receipt.assurance_level == OWNER_ATTESTED
    assert receipt.commitment_claim == "the owner's claim, not checked against any weights"
    view = receipt.as_dict()
    assert view["assurance"] == OWNER_ATTESTED and view["assurance_stated"] is False
    assert encode(receipt.to_map()) == signed.payload  # nothing added on the way through: same signed bytes


def test_receipt_verify_states_the_assurance_in_its_headline() -> None:
    r = subprocess.run([sys.executable, "-m", "pawprint", "receipt", "verify", str(GOLDEN / "receipt.receipt"),
                        "--verifier-pub", str(GOLDEN / "verifier.pub")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith("verdict    derived")
    assert lines[2].startswith("assurance  owner-attested; issued before levels were stated")
    assert lines[3].startswith("weights    commitment ") and lines[3].endswith(
        "the owner's claim, not checked against any weights")


def test_assurance_and_evidence_are_signed_fields_checked_on_decode(legacy: tuple[SignedMessage, Receipt]) -> None:
    _, old = legacy
    new = dataclasses.replace(old, assurance=OWNER_ATTESTED)
    assert Receipt.from_map(decode_map(encode(new.to_map()))) == new
    flagged = dataclasses.replace(new, verdict=INSUFFICIENT_EVIDENCE, evidence=("group 0: constant",))
    again = Receipt.from_map(decode_map(encode(flagged.to_map())))
    assert again == flagged and again.as_dict()["evidence"] == ["group 0: constant"]
    with pytest.raises(MessageError, match="assurance"):
        dataclasses.replace(new, assurance="audited-by-me")
    with pytest.raises(MessageError, match="exactly when"):
        dataclasses.replace(new, evidence=("a finding",))  # a finding under a verdict other than insufficient
    with pytest.raises(MessageError, match="exactly when"):
        dataclasses.replace(new, verdict=INSUFFICIENT_EVIDENCE)  # insufficient without saying why
    with pytest.raises(MessageError, match="evidence"):
        dataclasses.replace(flagged, evidence=("",))
    as_map = flagged.to_map()
    with pytest.raises(MessageError, match="evidence"):
        Receipt.from_map({**as_map, "evidence": []})
    with pytest.raises(MessageError):
        Receipt.from_map({**as_map, "evidence": [7]})
    with pytest.raises(MessageError, match="assurance"):
        Receipt.from_map({**as_map, "assurance": "fully-trusted"})
    with pytest.raises(MessageError, match=r"match\.verdict"):
        dataclasses.replace(old.matches[0], verdict=INSUFFICIENT_EVIDENCE)


def test_the_verdict_recheck_knows_insufficient_evidence(legacy: tuple[SignedMessage, Receipt]) -> None:
    _, r = legacy
    null = load_null(None, r.null_id)  # the null the receipt names (shipped, so it re-derives after a new default)
    assert recheck_verdict(r.matches, r.verdict, r.verdict_rule, null, r.null_id) is True
    assert recheck_verdict(r.matches, INSUFFICIENT_EVIDENCE, r.verdict_rule, null, r.null_id,
                           evidence=("x",)) is True
    assert recheck_verdict(r.matches, r.verdict, r.verdict_rule, null, r.null_id, evidence=("x",)) is False
    assert recheck_verdict(r.matches, INSUFFICIENT_EVIDENCE, r.verdict_rule, null, r.null_id) is False


def test_the_cli_headline_lists_the_findings(legacy: tuple[SignedMessage, Receipt]) -> None:
    from pawprint.cli_receipt import print_receipt

    _, old = legacy
    flagged = dataclasses.replace(old, assurance=OWNER_ATTESTED, verdict=INSUFFICIENT_EVIDENCE,
                                  evidence=("group 0 layer 1 ffn: constant",))
    out = io.StringIO()
    with redirect_stdout(out):
        print_receipt(flagged)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"verdict    {INSUFFICIENT_EVIDENCE}")
    assert lines[1].startswith("assurance  owner-attested: ")
    assert "evidence   group 0 layer 1 ffn: constant" in lines


# ------------------------------------------------------------------------------------- the checks themselves
def test_requested_layers_resolve_as_the_owners_agent_does() -> None:
    assert requested_layers("last2", 5) == (3, 4)
    assert requested_layers("last2", 1) == (0,)
    assert requested_layers("all", 3) == (0, 1, 2)
    assert requested_layers("0,-1,9", 4) == (0, 3)


def _challenge(layers: str) -> Challenge:
    return Challenge("0" * 64, b"\1" * 32, 1, 2, (), layers, "pawprint", SubmissionLimits(),
                     RegistryState(0, sha256(b"")))


def test_sufficiency_needs_facts_layers_and_probe_rows() -> None:
    """On the golden bundle's manifest (two layers of 3 x 3 synthetic terms), its model facts edited per case."""
    manifest = read_bundle(GOLDEN / "bundle.bundle").open()
    g = manifest.groups[0]
    assert g.layers == (0, 1) and g.rows == 3

    def findings(layers: str, groups: tuple[TermGroup, ...] | None = None, **facts: object) -> list[str]:
        edited = dataclasses.replace(manifest, model={**manifest.model, **facts},
                                     **({} if groups is None else {"groups": groups, "tensors": ()}))
        return check_sufficient(edited, _challenge(layers))

    assert findings("all", n_layers=2, d_model=64) == [
        f"group 0 ({g.probe_set.name}): 3 of {len(g.probe_set.tokens)} probe tokens present; the floor is 32"]
    assert any("model facts" in f for f in findings("all", n_layers="two", d_model=64))
    assert any("layers [2, 3] asked for by the challenge (all) are missing" in f
               for f in findings("all", n_layers=4, d_model=64))
    assert any("beyond the stated 1 layers" in f for f in findings("last2", n_layers=1, d_model=64))
    one = (dataclasses.replace(g, layers=(1,)),)
    assert any("1 layer(s); at least 2" in f for f in findings("last2", one, n_layers=2, d_model=64))
    assert findings("all", (), n_layers=2, d_model=64) == ["no term groups: nothing was compared"]


def _inv(terms: dict[tuple[int, str], np.ndarray], method_id: str) -> InvariantSet:
    m = next(iter(terms.values())).shape[0]
    probes = ProbeSpec("p", 1, "test", tuple(f"t{i}" for i in range(m)))
    group = TermGroup(probe_set=probes, present=(True,) * m, layers=(0, 1), method="pawprint", method_id=method_id,
                      terms=("attn_qk", "attn_vo", "ffn"))
    return InvariantSet(group, {}, terms)


def test_plausibility_on_synthetic_terms_of_a_known_width() -> None:
    """Terms ``E M E^T`` with ``E`` whitened ``m x d`` rows and the FFN term a product of two whitened row
    sets pass; the same with noise, a scale, or a wider width than declared do not."""
    rng = np.random.default_rng(0)
    m, d = 96, 16

    def whitened() -> np.ndarray:
        q, _ = np.linalg.qr(rng.standard_normal((m, d)))
        return q

    e = whitened()
    honest = {(layer, name): (e @ rng.standard_normal((d, d)) @ e.T if name != "ffn" else whitened() @ e.T)
              for layer in (0, 1) for name in ("attn_qk", "attn_vo", "ffn")}
    method = WHITENED_METHOD_PREFIX + "test)"
    assert check_plausible(_inv(honest, method), d, b"seed") == []
    noisy = {k: v + 0.1 * v.std() * rng.standard_normal(v.shape) for k, v in honest.items()}
    assert any("outside one 16-dimensional" in f for f in check_plausible(_inv(noisy, method), d, b"seed"))
    scaled = {k: 3 * v for k, v in honest.items()}
    assert any("spectral norm" in f for f in check_plausible(_inv(scaled, method), d, b"seed"))
    assert check_plausible(_inv(scaled, "huref-2024/1(x)"), d, b"seed") == []  # the bound is the whitened method's
    assert any("outside one 8-dimensional" in f for f in check_plausible(_inv(honest, method), 8, b"seed"))


def test_independent_needs_every_base_compared_on_enough_tokens(legacy: tuple[SignedMessage, Receipt]) -> None:
    _, r = legacy
    m = dataclasses.replace(r.matches[0], verdict="independent", common_probe_tokens=40)
    bases = {m.entry: (m.name, {m.probe_set_id: 100})}
    assert check_matches([m], bases) == []
    assert check_matches([dataclasses.replace(m, common_probe_tokens=19)], bases) == [
        f"base {m.name}: 19 common probe tokens; independent needs 32"]
    assert "not compared" in check_matches([m], {**bases, b"\1" * 32: ("other", {})})[0]
    assert check_matches([dataclasses.replace(m, verdict="derived", common_probe_tokens=1)], bases) == []


@pytest.mark.parametrize("family", ["gemma3_text", "deepseek_v3", "llama"])
def test_honest_terms_of_normalised_attention_families_are_plausible(tiny_model: Any, family: str) -> None:
    """QK-norm and latent-attention terms are not bilinear in the probe rows; the shared-subspace check leaves
    exactly those terms out for those families (an honest model is never refused), and still checks the rest."""
    from owner import compute_invariants

    inv = compute_invariants(tiny_model(family), probes=None, layers="all", method="pawprint")
    width = int(inv.model["d_model"])
    assert width < inv.group.rows  # the check can bite here
    assert check_plausible(inv, width, b"seed") == []
    noisy = dict(inv.terms)
    (key, t), *_ = [(k, v) for k, v in noisy.items() if k[1] == "ffn"]
    noisy[key] = t + np.random.default_rng(0).standard_normal(t.shape).astype(t.dtype) * float(np.std(t))
    found = check_plausible(InvariantSet(inv.group, inv.model, noisy), width, b"seed")
    assert any("outside one" in f or "spectral norm" in f for f in found)
