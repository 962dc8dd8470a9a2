"""Sketched submissions end to end (issue 16): a verifier started with ``sketch=256`` asks for public 256 x 256
sketches of the terms, compares them with its bases sketched the same way under the shipped sketch null, and
keeps its verdicts; the evidence checks still refuse degenerate, noised and mixed sketches; a submission must send
what the challenge asked for; over real gRPC the owner's agent sends sketches, never the terms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from owner import submit
from owner._fingerprint import Fingerprint, fingerprint, sketch_fingerprint
from protocol import INSUFFICIENT_EVIDENCE
from tests.verifier.fixtures import Keys, Models, start_env, stop_env
from verifier import ServerConfig, VerifierService, recheck_verdict
from verifier._calibration import DATA_DIR, load_null, sketch_null_file
from verifier.errors import ConfigError, InvalidSubmission
from zoo import trust_attacks as A

pytest_plugins = ["tests.verifier.fixtures"]

K = 256
SKETCH_NULL = sketch_null_file(K)


@pytest.fixture(scope="module")
def lab(quick_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[A.Lab]:
    lab = A.Lab.create(tmp_path_factory.mktemp("sketch"), [("llama-base", quick_zoo / "llama-base-s0"),
                                                          ("gpt2-base", quick_zoo / "gpt2-base-s0")], sketch=K)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def stolen(lab: A.Lab, quick_zoo: Path) -> Fingerprint:
    return lab.honest(quick_zoo / "llama-sft")


def test_honest_sketches_keep_the_verdicts(lab: A.Lab, stolen: Fingerprint, quick_zoo: Path) -> None:
    for g in stolen.manifest.groups:
        assert g.sketch == K and g.rows < K  # the quick zoo's probe sets are smaller than the sketch
    assert {t.shape for t in stolen.manifest.tensors} == {(K, K)}
    derived = lab.submit((stolen.manifest, stolen.terms))
    assert derived.verdict == "derived" and derived.evidence == ()
    top = derived.matches[0]
    assert top.name == "llama-base" and top.p_value is not None and float(top.p_value) <= 1e-6
    assert derived.method_ids == tuple(sorted({g.comparison_id for g in stolen.manifest.groups}))
    assert all(m.endswith(f"+sketch/{K}") for m in derived.method_ids)
    assert derived.null_id == load_null(SKETCH_NULL).null_id != load_null().null_id
    # the compared probe tokens are the models' real overlap, not the sketch size
    assert top.common_probe_tokens == stolen.manifest.groups[0].rows
    # the independent base (gpt2-base) is counted, not listed: no scores for an independent match
    assert derived.compared == 2 and [m.name for m in derived.matches] == ["llama-base"]
    null = load_null(SKETCH_NULL)
    assert recheck_verdict(derived.matches, derived.verdict, derived.verdict_rule, null, derived.null_id,
                           compared=derived.compared) is True
    other = lab.honest(quick_zoo / "llama-base-s1")
    independent = lab.submit((other.manifest, other.terms))
    assert independent.verdict == "independent" and independent.evidence == ()
    assert independent.compared == 2 and independent.matches == ()
    assert recheck_verdict((), "independent", independent.verdict_rule, null, independent.null_id, compared=2) is True
    assert recheck_verdict((), "inconclusive", independent.verdict_rule, null, independent.null_id,
                           compared=2) is False


@pytest.mark.parametrize("attack, words", [
    (lambda fp: A.noisy(fp, 32), "sketched energy lies outside"),
    (A.constant, "constant"),
    (A.one_hot, "exact zeros"),
])
def test_the_evidence_checks_bite_on_sketches(lab: A.Lab, stolen: Fingerprint, attack: object, words: str) -> None:
    receipt = lab.submit(attack(stolen))  # type: ignore[operator]
    assert receipt.verdict == INSUFFICIENT_EVIDENCE and receipt.matches == ()
    assert any(words in f for f in receipt.evidence)


def test_sketches_of_two_models_mixed_are_flagged(lab: A.Lab, stolen: Fingerprint, quick_zoo: Path) -> None:
    receipt = lab.submit(A.mixed_models(stolen, lab.honest(quick_zoo / "llama-base-s1")))
    assert receipt.verdict == INSUFFICIENT_EVIDENCE
    assert any("sketched energy lies outside" in f for f in receipt.evidence)


def test_a_submission_sends_what_the_challenge_asked(lab: A.Lab, quick_zoo: Path) -> None:
    full = fingerprint(quick_zoo / "llama-sft", lab.owner.key_id, now=A.NOW, nonce=b"\0" * 32)
    with pytest.raises(InvalidSubmission, match=f"asked for sketches of size {K}"):
        lab.submit((full.manifest, full.terms))
    smaller = sketch_fingerprint(full, 64)
    words = f"sent sketches of size 64; the challenge asked for sketches of size {K}"
    with pytest.raises(InvalidSubmission, match=words):
        lab.submit((smaller.manifest, smaller.terms))


def test_the_configuration_is_checked(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(ConfigError, match="--sketch must be 0"):
        ServerConfig(insecure_loopback=True, sketch=8).check()
    from verifier import Registry

    registry = Registry(tmp_path / "data")
    try:
        with pytest.raises(ConfigError, match="no null is shipped for sketches of size 128"):
            VerifierService(keys.verifier, keys.trust(), registry, ServerConfig(insecure_loopback=True, sketch=128))
        with pytest.raises(ConfigError, match="fitted for"):  # a full-term null cannot judge sketches
            VerifierService(keys.verifier, keys.trust(), registry,
                            ServerConfig(insecure_loopback=True, sketch=K,
                                         sketch_null_path=str(DATA_DIR / "null-zoo-v1.json")))
    finally:
        registry.close()


def test_the_owners_agent_sends_sketches_over_grpc(tmp_path: Path, keys: Keys, models: Models,
                                                   base_bundle: object) -> None:
    env = start_env(tmp_path / "v", keys, bundle=base_bundle,  # type: ignore[arg-type]
                    config=ServerConfig(insecure_loopback=True, sketch=K))
    try:
        derived = submit(models.derived, keys.owner, env.channel, keys.verifier.public_key, timeout_s=60)
        independent = submit(models.independent, keys.owner, env.channel, keys.verifier.public_key, timeout_s=60)
    finally:
        stop_env(env)
    for result in (derived, independent):
        assert result.challenge.sketch == K
        assert all(g.sketch == K for g in result.manifest.groups)
        assert {t.shape for t in result.manifest.tensors} == {(K, K)}
    assert derived.receipt.verdict == "derived"
    assert independent.receipt.verdict != "derived"


def test_the_audit_recomputes_sketches(lab: A.Lab, stolen: Fingerprint, quick_zoo: Path) -> None:
    """``audit recompute`` sketches the recomputed terms as the submission was sketched: the honest submission is
    consistent, another model's sketches under the stolen model's commitment are not."""
    from pawprint.cli_audit import recompute

    honest = lab.submit_signed((stolen.manifest, stolen.terms))
    assert lab.last_submission is not None
    result = recompute(honest, lab.verifier.public_key, quick_zoo / "llama-sft", submission=lab.last_submission)
    assert result.outcome == "consistent", result.summary
    decoy = lab.submit_signed(A.another_models_terms(stolen, lab.honest(quick_zoo / "llama-base-s1")))
    result = recompute(decoy, lab.verifier.public_key, quick_zoo / "llama-sft", submission=lab.last_submission)
    assert result.outcome == "inconsistent", result.summary


def test_base_sketches_are_kept_in_the_data_directory(lab: A.Lab, stolen: Fingerprint) -> None:
    """A base is sketched once: the sketches a submission needed are in the data directory, and what is read
    back from there is byte for byte what sketching again gives (a restart or another process need not)."""
    from protocol.terms import sketch_invariants
    from verifier._compare import BaseSketches

    lab.submit((stolen.manifest, stolen.terms))
    snap = lab.registry.log_snapshot(terms=True)
    base = next(b for b in snap.bases if b.name == "llama-base")
    group = base.invariants[0]
    stored = lab.registry.store.term_sketch(base.entry, group.probes.id, K)
    assert stored is not None and len(stored) == len(group.terms) * K * K * 4
    calls: list[tuple[bytes, str, int]] = []

    def load(entry: bytes, probe_set_id: str, k: int) -> bytes | None:
        calls.append((entry, probe_set_id, k))
        return stored

    reread = BaseSketches(load=load).get(base, group, K)
    fresh = sketch_invariants(group, K)
    assert calls == [(base.entry, group.probes.id, K)] and reread.group == fresh.group
    assert all(reread.terms[key].tobytes() == fresh.terms[key].tobytes() for key in fresh.terms)
    # a stored value of the wrong size is not trusted: the group is sketched again
    again = BaseSketches(load=lambda *key: b"\0" * 8).get(base, group, K)
    assert all(again.terms[key].tobytes() == fresh.terms[key].tobytes() for key in fresh.terms)


def test_a_sketched_submission_reads_no_base_terms_once_the_bases_are_sketched(
        quick_zoo: Path, tmp_path: Path) -> None:
    """The stored sketches are all a sketched comparison needs: a verifier restarted on the data directory (no
    base in memory) answers without reading a single base's terms, with the same receipt scores."""
    first = A.Lab.create(tmp_path / "lab", [("llama-base", quick_zoo / "llama-base-s0")], sketch=K)
    try:
        stolen = first.honest(quick_zoo / "llama-sft")
        before = first.submit((stolen.manifest, stolen.terms))
    finally:
        first.close()
    again = A.Lab.create(tmp_path / "lab", [], sketch=K)  # the same data directory, a fresh registry object
    reads: list[str] = []
    get = again.registry.blobs.get

    def counted(blob_id: str) -> bytes:
        reads.append(blob_id)
        return get(blob_id)

    again.registry.blobs.get = counted  # type: ignore[method-assign]
    try:
        after = again.submit((stolen.manifest, stolen.terms))
    finally:
        again.close()
    assert reads == []
    assert after.verdict == before.verdict == "derived"
    assert [m.terms for m in after.matches] == [m.terms for m in before.matches]
