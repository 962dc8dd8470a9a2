"""Possession against framing: the chunked (weights-v2) commitment, the openings an owner makes in its manifest,
the verifier's check before any term is read, and the framer who copies another owner's commitment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from owner._client import request_challenge, submission_requests, submit, with_possession
from owner._fingerprint import commit_checkpoint, commit_checkpoint_chunked, fingerprint, read_tensor_bytes
from owner._model import open_model
from protocol import (
    DEFAULT_CHUNK_SIZE,
    ONLINE_MANIFEST_KIND,
    POSSESSION_ID,
    WEIGHT_COMMITMENT_ID,
    ChunkHasher,
    CommitmentError,
    Manifest,
    MerkleTree,
    PossessionError,
    Role,
    chunk_inclusion,
    chunk_tree_root,
    commitment_chunk_size,
    leaf_hash,
    prove_possession,
    sign_message,
    verify_inclusion,
    verify_possession,
    weight_commitment_id,
)
from protocol._pb import pawprint_pb2_grpc
from tests.verifier.fixtures import NOW, FakeClock, Keys, Models, answering
from verifier import Registry, ServerConfig, VerifierService, create_server

pytest_plugins = ["tests.verifier.fixtures"]

CHUNK = DEFAULT_CHUNK_SIZE


# ------------------------------------------------------------------------------------------- the tree
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 4096, 70_001])
def test_chunk_tree_is_rfc6962_over_the_chunks(n: int) -> None:
    data = os.urandom(n)
    leaves = [leaf_hash(data[i : i + 16]) for i in range(0, n, 16)] or [leaf_hash(b"")]
    ref = MerkleTree(leaves).root()
    h = ChunkHasher(16, block_bytes=256)  # small blocks: many full blocks, a partial one, fed in odd pieces
    for i in range(0, n, 999):
        h.update(data[i : i + 999])
    assert h.root() == ref == chunk_tree_root(data, 16)
    for index in sorted({0, len(leaves) // 3, len(leaves) - 1}):
        chunk, path = chunk_inclusion(data, 16, index, block_bytes=256)
        assert chunk == data[index * 16 : (index + 1) * 16]
        verify_inclusion(leaf_hash(chunk), index, len(leaves), path, ref)


def test_commitment_ids_v1_stays_readable_and_v2_names_its_chunk() -> None:
    assert commitment_chunk_size(WEIGHT_COMMITMENT_ID) is None
    assert weight_commitment_id(None) == WEIGHT_COMMITMENT_ID
    assert commitment_chunk_size(weight_commitment_id(64)) == 64
    for bad in (48, 8, 1 << 17):
        with pytest.raises(CommitmentError):
            weight_commitment_id(bad)
    with pytest.raises(CommitmentError):
        commitment_chunk_size("weights-v3:whatever")


def test_v2_commitment_differs_from_v1_and_proofs_check(models: Models) -> None:
    m = open_model(models.base)
    v1 = commit_checkpoint(m)
    v2, entries = commit_checkpoint_chunked(m, CHUNK)
    assert v2.id == weight_commitment_id(CHUNK) and v2.root != v1.root
    assert (v2.tensors, v2.total_bytes) == (v1.tensors, v1.total_bytes)
    nonce = bytes(range(32))
    proof = prove_possession(nonce, entries, CHUNK, lambda e: read_tensor_bytes(m, e.name))
    verify_possession(proof, nonce=nonce, root=v2.root, commitment_id=v2.id, tensors=v2.tensors)
    assert proof.revealed_bytes <= 3 * CHUNK
    # Another nonce selects other chunks: the old openings do not answer it.
    with pytest.raises(PossessionError):
        verify_possession(proof, nonce=b"\x01" * 32, root=v2.root, commitment_id=v2.id, tensors=v2.tensors)
    with pytest.raises(PossessionError, match="v1"):
        verify_possession(proof, nonce=nonce, root=v2.root, commitment_id=WEIGHT_COMMITMENT_ID, tensors=v2.tensors)


def test_chunk_roots_are_cached_per_file_and_chunk_size(models: Models, tmp_path: Path) -> None:
    """A second chunked commitment of an unchanged checkpoint reads the chunk roots from the cache (same root), and
    the v1 digests of the same file stay cached beside them."""
    from owner._fingerprint import CommitmentCache

    m = open_model(models.base)
    cache_file = tmp_path / "commitments.json"
    first, _ = commit_checkpoint_chunked(m, CHUNK, CommitmentCache(cache_file, clock=lambda: 4e9))
    v1 = commit_checkpoint(m, cache=CommitmentCache(cache_file, clock=lambda: 4e9))
    again = CommitmentCache(cache_file, clock=lambda: 4e9)
    second, _ = commit_checkpoint_chunked(m, CHUNK, again)
    assert second == first and again.hits == 1 and again.misses == 0
    v1_again = CommitmentCache(cache_file, clock=lambda: 4e9)
    assert commit_checkpoint(m, cache=v1_again) == v1 and v1_again.hits == 1
    other = CommitmentCache(cache_file, clock=lambda: 4e9)
    assert commit_checkpoint_chunked(m, 2 * CHUNK, other)[0].root != first.root and other.hits == 0


def test_a_tampered_chunk_or_path_is_refused(models: Models) -> None:
    m = open_model(models.base)
    v2, entries = commit_checkpoint_chunked(m, CHUNK)
    nonce = b"\x07" * 32
    proof = prove_possession(nonce, entries, CHUNK, lambda e: read_tensor_bytes(m, e.name))
    o = proof.openings[1]
    flipped = bytes([o.chunk[0] ^ 1]) + o.chunk[1:]
    bad_path = (bytes(32), *o.chunk_proof[1:]) if o.chunk_proof else (bytes(32),)
    for opening in (dataclasses.replace(o, chunk=flipped), dataclasses.replace(o, chunk_proof=bad_path),
                    dataclasses.replace(o, chunk_index=o.chunk_index + 1)):
        tampered = dataclasses.replace(proof, openings=(proof.openings[0], opening, *proof.openings[2:]))
        with pytest.raises(PossessionError):
            verify_possession(tampered, nonce=nonce, root=v2.root, commitment_id=v2.id, tensors=v2.tensors)


# ---------------------------------------------------------------------------------- over the wire
@pytest.fixture(scope="module")
def strict_verifier(tmp_path_factory: pytest.TempPathFactory, keys: Keys, base_bundle: object) -> Iterator[
        tuple[grpc.Channel, pawprint_pb2_grpc.VerifierStub]]:
    """A verifier that requires possession and trusts two owners: ``keys.owner`` and ``keys.stranger`` (the
    framer, a trusted owner with a model of its own)."""
    trust = keys.trust()
    trust.add(keys.stranger.public_key, Role.OWNER, name="framer")
    registry = Registry(tmp_path_factory.mktemp("strict"), clock=FakeClock())
    registry.add_base("llama-base", base_bundle, trust)  # type: ignore[arg-type]
    service = VerifierService(keys.verifier, trust, registry,
                              ServerConfig(insecure_loopback=True, require_possession=True), clock=FakeClock())
    server, port = create_server(service)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, pawprint_pb2_grpc.VerifierStub(channel)
    channel.close()
    server.stop(None)
    registry.close()


def _send(stub: pawprint_pb2_grpc.VerifierStub, manifest: Manifest, terms: object, key: object) -> grpc.StatusCode:
    signed = sign_message(manifest, key, ONLINE_MANIFEST_KIND)  # type: ignore[arg-type]
    try:
        stub.Submit(submission_requests(signed, manifest, terms, 1 << 20), timeout=60)  # type: ignore[arg-type]
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_owner_shows_possession_and_the_receipt_says_so(
        strict_verifier: tuple[grpc.Channel, pawprint_pb2_grpc.VerifierStub], keys: Keys, models: Models) -> None:
    channel, _ = strict_verifier
    result = submit(models.base, keys.owner, channel, keys.verifier.public_key, clock=lambda: NOW,
                    possession_chunk=CHUNK)
    v2, _ = commit_checkpoint_chunked(open_model(models.base), CHUNK)
    assert result.receipt.weight_commitment == v2.root
    assert result.receipt.possession == f"{POSSESSION_ID};openings=3;chunk={CHUNK}"
    assert result.manifest.possession is not None and result.manifest.possession.revealed_bytes <= 3 * CHUNK
    # An auditor recomputes the chunked commitment the possession record names, from the receipt alone.
    from pawprint.cli_audit import recompute

    audit = recompute(result.signed_receipt, keys.verifier.public_key, models.base)
    assert audit.outcome == "incomplete" and audit.model_commitment_id == v2.id
    assert audit.checks[0].name == "weight-commitment" and audit.checks[0].status == "pass"


def test_a_submission_without_possession_is_refused_when_required(
        strict_verifier: tuple[grpc.Channel, pawprint_pb2_grpc.VerifierStub], keys: Keys, models: Models) -> None:
    channel, _ = strict_verifier
    from owner._client import SubmissionError

    with pytest.raises(SubmissionError) as e:
        submit(models.base, keys.owner, channel, keys.verifier.public_key, clock=lambda: NOW, retries=0)
    assert e.value.code == "PERMISSION_DENIED"


def test_framing_with_a_copied_commitment_is_refused(
        strict_verifier: tuple[grpc.Channel, pawprint_pb2_grpc.VerifierStub], keys: Keys, models: Models) -> None:
    """The framer copies the victim's v2 commitment (as a receipt shows it) into a submission of its own model's
    terms: without openings, with openings of its own weights, and with the victim's openings from an earlier
    submission replayed: each is refused before a term is read."""
    _, stub = strict_verifier
    victim = open_model(models.base)
    victim_wc, victim_entries = commit_checkpoint_chunked(victim, CHUNK)
    framer_model = open_model(models.independent)
    old_nonce = b"\x05" * 32
    replayed = prove_possession(old_nonce, victim_entries, CHUNK, lambda e: read_tensor_bytes(victim, e.name))
    for attempt in ("none", "own-weights", "replayed"):
        challenge = request_challenge(stub, keys.verifier.public_key, keys.stranger.key_id, 30)
        fp = answering(fingerprint(framer_model, keys.stranger.key_id, now=NOW, probe_sets=challenge.probe_sets,
                                   layers=challenge.layers, nonce=challenge.nonce, chunk_size=CHUNK), challenge)
        if attempt == "own-weights":
            fp = with_possession(fp, framer_model, CHUNK)
        manifest = dataclasses.replace(fp.manifest, weight_commitment=victim_wc)
        if attempt == "replayed":
            manifest = dataclasses.replace(manifest, possession=replayed)
        assert _send(stub, manifest, fp.terms, keys.stranger) == grpc.StatusCode.PERMISSION_DENIED, attempt
    # The same framer with its own commitment and openings is accepted: the refusals were about the copy.
    challenge = request_challenge(stub, keys.verifier.public_key, keys.stranger.key_id, 30)
    fp = with_possession(answering(fingerprint(framer_model, keys.stranger.key_id, now=NOW,
                                               probe_sets=challenge.probe_sets, layers=challenge.layers,
                                               nonce=challenge.nonce, chunk_size=CHUNK), challenge),
                         framer_model, CHUNK)
    assert _send(stub, fp.manifest, fp.terms, keys.stranger) == grpc.StatusCode.OK


def test_a_tampered_opening_is_refused_over_the_wire(
        strict_verifier: tuple[grpc.Channel, pawprint_pb2_grpc.VerifierStub], keys: Keys, models: Models) -> None:
    _, stub = strict_verifier
    m = open_model(models.base)
    challenge = request_challenge(stub, keys.verifier.public_key, keys.owner.key_id, 30)
    fp = with_possession(answering(fingerprint(m, keys.owner.key_id, now=NOW, probe_sets=challenge.probe_sets,
                                               layers=challenge.layers, nonce=challenge.nonce, chunk_size=CHUNK),
                                   challenge), m, CHUNK)
    proof = fp.manifest.possession
    assert proof is not None
    o = proof.openings[0]
    bad = dataclasses.replace(o, chunk=bytes(len(o.chunk)) if any(o.chunk) else b"\x01" * len(o.chunk))
    manifest = dataclasses.replace(fp.manifest, possession=dataclasses.replace(proof, openings=(bad,
                                                                                               *proof.openings[1:])))
    assert _send(stub, manifest, fp.terms, keys.owner) == grpc.StatusCode.PERMISSION_DENIED


def test_without_possession_the_receipt_records_none(env: object, keys: Keys, models: Models) -> None:
    """A verifier that does not require it issues the receipt as before, with no possession record."""
    result = submit(models.base, keys.owner, env.channel, keys.verifier.public_key,  # type: ignore[attr-defined]
                    clock=lambda: NOW)
    assert result.receipt.possession is None
    assert result.manifest.weight_commitment.id == WEIGHT_COMMITMENT_ID


def test_possession_bytes_never_outside_the_openings(models: Models, keys: Keys, tmp_path: Path) -> None:
    """What a manifest with openings reveals of the weights is exactly the opened chunks (k x chunk bytes)."""
    m = open_model(models.base)
    fp = with_possession(fingerprint(m, keys.owner.key_id, now=NOW, nonce=b"\x03" * 32, chunk_size=CHUNK), m, CHUNK)
    proof = fp.manifest.possession
    assert proof is not None and len(proof.openings) == 3
    assert proof.revealed_bytes == sum(len(o.chunk) for o in proof.openings) <= 192
    payload = fp.manifest.encode()
    for o in proof.openings:
        assert o.chunk in read_tensor_bytes(m, o.tensor.name)
        assert o.chunk in payload


@pytest.mark.parametrize("bad", [None, 7, {"id": POSSESSION_ID}, {"id": POSSESSION_ID, "openings": [{}]},
                                 {"id": POSSESSION_ID, "openings": [{"chunk": b"", "chunk_index": -1,
                                                                     "chunk_proof": [], "tensor": {},
                                                                     "tensor_index": 0, "tensor_proof": []}]}])
def test_a_malformed_possession_field_is_a_message_error(bad: object, models: Models, keys: Keys) -> None:
    from protocol import MessageError, decode_map

    fp = fingerprint(models.base, keys.owner.key_id, now=NOW, nonce=b"\x03" * 32)
    value = decode_map(fp.manifest.encode())
    value["possession"] = bad
    with pytest.raises(MessageError, match="possession"):
        Manifest.from_map(value)
