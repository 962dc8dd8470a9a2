"""Hostile submissions over real sockets: each is refused with the right gRPC status and leaves nothing stored.

Every test builds a submission from the derived model's real fingerprint, breaks one thing, signs what an
attacker holding the named key could sign, streams it to a verifier on 127.0.0.1 and checks the status and
that the registry's rows and blobs did not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from owner._client import request_challenge, submission_requests
from owner._fingerprint import Fingerprint
from protocol import (
    Bundle,
    Challenge,
    Manifest,
    PrivateKey,
    SignedMessage,
    SubmissionLimits,
    Tensor,
    TensorDigest,
)
from protocol._pb import pawprint_pb2
from tests.verifier.fixtures import Env, Keys, start_env, stop_env
from verifier import ServerConfig

pytest_plugins = ["tests.verifier.fixtures"]

Code = grpc.StatusCode
Edit = Callable[[Manifest], Manifest]


def challenge(env: Env) -> Challenge:
    return request_challenge(env.stub, env.keys.verifier.public_key, env.keys.owner.key_id, 10)


def signed(manifest: Manifest, key: PrivateKey, kind: str = "manifest") -> SignedMessage:
    payload = manifest.encode()
    return SignedMessage(payload, key.sign(kind, payload), key.public_key)


def build(
    env: Env,
    fp: Fingerprint,
    *,
    key: PrivateKey | None = None,
    kind: str = "manifest",
    edit: Edit | None = None,
    terms: dict[str, Tensor] | None = None,
    chunk_bytes: int = 16 * 1024,
) -> list[pawprint_pb2.SubmitRequest]:
    """The request stream of a fresh, valid submission of ``fp``, with the given changes, re-signed."""
    key = key or env.keys.owner
    ch = challenge(env)
    manifest = dataclasses.replace(fp.manifest, nonce=ch.nonce, owner_key_id=key.key_id)
    if edit is not None:
        manifest = edit(manifest)
    return list(submission_requests(signed(manifest, key, kind), manifest, terms or dict(fp.terms), chunk_bytes))


def send(env: Env, requests: Iterable[pawprint_pb2.SubmitRequest]) -> Code:
    try:
        env.stub.Submit(iter(requests), timeout=30)
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return Code.OK


def refused(env: Env, requests: Iterable[pawprint_pb2.SubmitRequest], code: Code) -> None:
    before = env.registry.counts()
    assert send(env, requests) == code
    assert env.registry.counts() == before, "a refused submission left something stored"


def with_term(fp: Fingerprint, index: int, array: np.ndarray) -> tuple[Edit, dict[str, Tensor]]:
    """Replace term ``index`` by ``array`` and give the manifest its honest digest: only the content is bad."""
    entry = fp.manifest.tensors[index]
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    shape = tuple(int(d) for d in array.shape)
    terms = dict(fp.terms)
    terms[entry.name] = Tensor("F32", shape, data)
    table = list(fp.manifest.tensors)
    table[index] = TensorDigest(entry.name, "F32", shape, hashlib.sha256(data).digest())

    def edit(m: Manifest) -> Manifest:
        return dataclasses.replace(m, tensors=tuple(table))

    return edit, terms


def term_array(fp: Fingerprint, index: int) -> np.ndarray:
    t = fp.terms[fp.manifest.tensors[index].name]
    return np.frombuffer(t.data, dtype="<f4").reshape(t.shape).copy()


# ------------------------------------------------------------------------------------------- the control
def test_the_unbroken_submission_is_accepted_and_recorded(env: Env, derived_fingerprint: Fingerprint) -> None:
    before = env.registry.counts()
    assert send(env, build(env, derived_fingerprint)) == Code.OK
    after = env.registry.counts()
    assert after["submissions"] == before["submissions"] + 1
    assert after["blobs"] == before["blobs"], "the suspect's terms were kept without being asked for"


# ------------------------------------------------------------------------------------- keys and signatures
def test_unknown_key_is_unauthenticated(env: Env, derived_fingerprint: Fingerprint) -> None:
    refused(env, build(env, derived_fingerprint, key=env.keys.stranger), Code.UNAUTHENTICATED)


def test_vendor_key_cannot_submit(env: Env, derived_fingerprint: Fingerprint) -> None:
    refused(env, build(env, derived_fingerprint, key=env.keys.vendor), Code.PERMISSION_DENIED)


@pytest.mark.parametrize("kind", ["bundle", "receipt", "challenge", "registry-entry"])
def test_manifest_signed_as_another_kind_is_refused(env: Env, derived_fingerprint: Fingerprint, kind: str) -> None:
    refused(env, build(env, derived_fingerprint, kind=kind), Code.UNAUTHENTICATED)


def test_manifest_naming_another_owner_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    other = env.keys.stranger.key_id

    def edit(m: Manifest) -> Manifest:
        return dataclasses.replace(m, owner_key_id=other)

    refused(env, build(env, derived_fingerprint, edit=edit), Code.INVALID_ARGUMENT)


def test_offline_manifest_cannot_be_submitted(env: Env, derived_fingerprint: Fingerprint) -> None:
    refused(env, build(env, derived_fingerprint, edit=lambda m: dataclasses.replace(m, nonce=None)),
            Code.INVALID_ARGUMENT)


# ----------------------------------------------------------------------------------------------- nonces
def test_replayed_nonce_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    """A second, different manifest answering an answered challenge is refused. The same signed manifest
    again is a retry: it gets the first receipt, byte for byte, and nothing new is stored."""
    requests = build(env, derived_fingerprint)
    first = env.stub.Submit(iter(requests), timeout=30)
    before = env.registry.counts()
    again = env.stub.Submit(iter(requests[:1]), timeout=30)  # the header alone: the terms are not read again
    assert (again.payload, again.signature) == (first.payload, first.signature)
    assert env.registry.counts() == before
    nonce = Manifest.decode(requests[0].manifest.payload).nonce
    other = build(env, derived_fingerprint, edit=lambda m: dataclasses.replace(m, nonce=nonce, created_at=1))
    refused(env, other, Code.FAILED_PRECONDITION)


def test_foreign_nonce_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    foreign = bytes(range(32))
    refused(env, build(env, derived_fingerprint, edit=lambda m: dataclasses.replace(m, nonce=foreign)),
            Code.FAILED_PRECONDITION)


def test_nonce_of_another_verifier_is_refused(
    env: Env, derived_fingerprint: Fingerprint, keys: Keys, tmp_path: Path
) -> None:
    other = start_env(tmp_path / "other", keys)
    try:
        nonce = challenge(other).nonce
    finally:
        stop_env(other)
    refused(env, build(env, derived_fingerprint, edit=lambda m: dataclasses.replace(m, nonce=nonce)),
            Code.FAILED_PRECONDITION)


def test_expired_challenge_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint)
    env.clock.advance(env.service.config.challenge_ttl_s + 1)
    refused(env, requests, Code.DEADLINE_EXCEEDED)


def test_stream_past_its_deadline_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint)

    def slow() -> Iterator[pawprint_pb2.SubmitRequest]:
        yield requests[0]
        env.clock.advance(env.service.config.stream_timeout_s + 1)
        yield from requests[1:]

    refused(env, slow(), Code.DEADLINE_EXCEEDED)


# ---------------------------------------------------------------------------------------------- tensors
def test_tensor_not_matching_its_digest_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    terms = dict(derived_fingerprint.terms)
    name = derived_fingerprint.manifest.tensors[2].name
    data = bytearray(terms[name].data)
    data[100] ^= 1
    terms[name] = Tensor("F32", terms[name].shape, bytes(data))
    refused(env, build(env, derived_fingerprint, terms=terms), Code.INVALID_ARGUMENT)


def test_wrong_dtype_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    entry = derived_fingerprint.manifest.tensors[0]
    m = entry.shape[0]
    half = np.zeros((m, m), dtype="<f2").tobytes()
    terms = dict(derived_fingerprint.terms)
    terms[entry.name] = Tensor("F16", entry.shape, half)

    def edit(man: Manifest) -> Manifest:
        table = (TensorDigest(entry.name, "F16", entry.shape, hashlib.sha256(half).digest()), *man.tensors[1:])
        return dataclasses.replace(man, tensors=table)

    refused(env, build(env, derived_fingerprint, edit=edit, terms=terms), Code.INVALID_ARGUMENT)


@pytest.mark.parametrize("delta", [(-1, -1), (0, -1), (1, 1)])
def test_wrong_shape_is_refused(env: Env, derived_fingerprint: Fingerprint, delta: tuple[int, int]) -> None:
    a = term_array(derived_fingerprint, 1)
    m = a.shape[0]
    shaped = np.resize(a, (m + delta[0], m + delta[1]))
    edit, terms = with_term(derived_fingerprint, 1, shaped)
    refused(env, build(env, derived_fingerprint, edit=edit, terms=terms), Code.INVALID_ARGUMENT)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_term_is_refused(env: Env, derived_fingerprint: Fingerprint, bad: float) -> None:
    a = term_array(derived_fingerprint, 4)
    a[3, 5] = bad
    edit, terms = with_term(derived_fingerprint, 4, a)
    refused(env, build(env, derived_fingerprint, edit=edit, terms=terms), Code.INVALID_ARGUMENT)


# ------------------------------------------------------------------------------------------------ stream
def test_truncated_stream_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint)
    refused(env, requests[:-1], Code.INVALID_ARGUMENT)
    refused(env, requests[:1], Code.INVALID_ARGUMENT)


def test_chunks_out_of_order_are_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint, chunk_bytes=4096)
    swapped = [requests[0], requests[2], requests[1], *requests[3:]]
    refused(env, swapped, Code.INVALID_ARGUMENT)
    requests = build(env, derived_fingerprint, chunk_bytes=1 << 20)  # one chunk per tensor: swap tensors
    refused(env, [requests[0], requests[2], requests[1], *requests[3:]], Code.INVALID_ARGUMENT)


def test_duplicated_chunk_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint, chunk_bytes=4096)
    refused(env, [requests[0], requests[1], requests[1], *requests[2:]], Code.INVALID_ARGUMENT)


def test_stream_must_start_with_one_manifest(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint)
    refused(env, requests[1:], Code.INVALID_ARGUMENT)
    refused(env, [requests[0], requests[0], *requests[1:]], Code.INVALID_ARGUMENT)
    refused(env, [], Code.INVALID_ARGUMENT)


def test_bytes_after_the_last_tensor_are_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint)
    extra = pawprint_pb2.SubmitRequest(chunk=pawprint_pb2.TensorChunk(
        tensor_index=len(derived_fingerprint.manifest.tensors), offset=0, data=b"x"))
    refused(env, [*requests, extra], Code.INVALID_ARGUMENT)


def test_submission_over_the_size_limit_is_refused(
    keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint, tmp_path: Path
) -> None:
    total = derived_fingerprint.manifest.term_bytes
    limits = SubmissionLimits(max_manifest_bytes=1 << 20, max_total_bytes=total - 1, max_chunk_bytes=64 * 1024)
    small = start_env(tmp_path / "small", keys, bundle=base_bundle,
                      config=ServerConfig(insecure_loopback=True, limits=limits))
    try:
        refused(small, build(small, derived_fingerprint), Code.RESOURCE_EXHAUSTED)
        # a chunk larger than the challenge allows
        refused(small, build(small, derived_fingerprint, chunk_bytes=128 * 1024)[:2], Code.RESOURCE_EXHAUSTED)
    finally:
        stop_env(small)


def test_message_over_the_grpc_limit_is_refused(env: Env, derived_fingerprint: Fingerprint) -> None:
    requests = build(env, derived_fingerprint)
    huge = pawprint_pb2.SubmitRequest(chunk=pawprint_pb2.TensorChunk(
        tensor_index=0, offset=0, data=b"\0" * (env.service.config.max_message_bytes + 1)))
    refused(env, [requests[0], huge], Code.RESOURCE_EXHAUSTED)


# --------------------------------------------------------------------------------------------- bit flips
def _small_manifest(keys: Keys, nonce: bytes) -> tuple[Manifest, dict[str, Tensor]]:
    """A valid manifest as small as the format allows: two probe tokens, one layer, 2 x 2 terms."""
    from protocol import ProbeSpec, TermGroup, WeightCommitment

    rng = np.random.default_rng(0)
    group = TermGroup(ProbeSpec("p", 1, "r", ("a", "b")), (True, True), (0,), "pawprint", "m",
                      ("attn_qk", "attn_vo", "ffn"))
    terms = {n: Tensor("F32", (2, 2), rng.standard_normal((2, 2)).astype("<f4").tobytes())
             for n in group.tensor_names(0)}
    table = tuple(TensorDigest(n, "F32", (2, 2), hashlib.sha256(t.data).digest()) for n, t in terms.items())
    manifest = Manifest(keys.owner.key_id, nonce, 1, "a", {}, (group,), table,
                        WeightCommitment(b"\1" * 32, 1, 16, "w"))
    return manifest, terms


def _header(payload: bytes, signature: bytes, public_key: bytes) -> pawprint_pb2.SubmitRequest:
    return pawprint_pb2.SubmitRequest(manifest=pawprint_pb2.SignedPayload(
        payload=payload, signature=signature, public_key=public_key))


def _flips(data: bytes) -> Iterator[bytes]:
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        yield bytes(flipped)


def _send_all(env: Env, headers: Iterable[pawprint_pb2.SubmitRequest], batch: int = 64) -> set[Code]:
    """Send each header as its own submission, ``batch`` RPCs in flight at a time; the statuses seen."""
    codes: set[Code] = set()
    pending = list(headers)
    for i in range(0, len(pending), batch):
        futures = [env.stub.Submit.future(iter([h]), timeout=60) for h in pending[i : i + batch]]
        for f in futures:
            try:
                f.result()
                codes.add(Code.OK)
            except grpc.RpcError as e:
                codes.add(e.code())
    return codes


def test_every_single_bit_flip_is_refused(keys: Keys, tmp_path: Path) -> None:
    # An empty registry: the challenge names no probe set, so the tiny manifest is a valid submission (of the terms
    # themselves: sketch=0; a sketched one is a few kB).
    env = start_env(tmp_path / "flips", keys, config=ServerConfig(insecure_loopback=True, sketch=0))
    try:
        manifest, terms = _small_manifest(keys, challenge(env).nonce)
        good = signed(manifest, keys.owner)
        payload, sig, pub = good.payload, good.signature, good.public_key.raw
        assert len(payload) < 700
        statuses = {
            "manifest": _send_all(env, (_header(f, sig, pub) for f in _flips(payload))),
            "signature": _send_all(env, (_header(payload, f, pub) for f in _flips(sig))),
            "public key": _send_all(env, (_header(payload, sig, f) for f in _flips(pub))),
        }
        assert statuses == {k: {Code.UNAUTHENTICATED} for k in statuses}
        assert env.registry.counts() == {"bases": 0, "submissions": 0, "blobs": 0}
        # The nonce was never used by all those refusals: the unbroken submission still goes through.
        assert send(env, submission_requests(good, manifest, terms, 1024)) == Code.OK
        assert env.registry.counts()["submissions"] == 1
    finally:
        stop_env(env)


def test_stalled_stream_is_cut_off(keys: Keys, tmp_path: Path) -> None:
    """A client that stops sending must not hold a server thread past the stream deadline."""
    import threading
    import time

    env = start_env(tmp_path / "stall", keys, config=ServerConfig(insecure_loopback=True, stream_timeout_s=0.5,
                                                                  sketch=0))
    release = threading.Event()
    try:
        manifest, _ = _small_manifest(keys, challenge(env).nonce)
        good = signed(manifest, keys.owner)

        def stalled() -> Iterator[pawprint_pb2.SubmitRequest]:
            yield _header(good.payload, good.signature, good.public_key.raw)
            release.wait(30)

        started = time.monotonic()
        code = send(env, stalled())
        assert code == Code.CANCELLED and time.monotonic() - started < 10
        assert env.registry.counts() == {"bases": 0, "submissions": 0, "blobs": 0}
    finally:
        release.set()
        stop_env(env)
