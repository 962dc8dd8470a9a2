"""The owner agent's gRPC client: one submission to a verifier, from challenge to checked receipt.

``submit`` asks for a challenge and checks it is signed by the verifier key the owner expects, computes the
terms on the challenge's probe sets and layers (``owner._fingerprint``), signs the manifest (kind
``manifest``, carrying the nonce), streams it and then the term tensors in chunks no larger than the
challenge allows, and checks the receipt: signed by the same verifier, for this nonce, this manifest and
this weight commitment.

The channel comes from ``protocol.wire.open_channel`` (TLS with the given CA, a client certificate for mutual
TLS; plaintext only when explicitly asked for and only to 127.0.0.1 or ::1), and a refusal's retry hint from
its ``google.rpc.RetryInfo`` status detail (``protocol.wire.failure_of``).

What leaves this process is the signed manifest (digests and shape facts) and the invariant terms. It must
never send a weight tensor: the privacy test records every byte sent and checks. The one exception is asked for
explicitly: with ``possession_chunk`` the weight commitment is chunked (``weights-v2``) and the manifest opens
``DEFAULT_OPENINGS`` chunks of that many bytes (3 x 64 = 192 bytes by default), chosen by the challenge nonce and
the commitment (``protocol._possession``), to show the verifier the owner holds the weights it commits to.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from owner._adapters import Method
from owner._fingerprint import Fingerprint, Progress, fingerprint, read_tensor_bytes, sketch_fingerprint
from owner._model import OpenedModel, open_model
from owner.errors import OwnerError
from protocol import (
    ONLINE_MANIFEST_KIND,
    Challenge,
    Manifest,
    PrivateKey,
    ProtocolError,
    PublicKey,
    PublisherSignature,
    Receipt,
    SignedMessage,
    Tensor,
    open_challenge,
    open_receipt,
    prove_possession,
    sha256,
    sign_message,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import failure_of, signed_to_pb

log = logging.getLogger("pawprint.owner")
# Statuses after which the very same signed submission may be sent again (see ``submit``).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})

DEFAULT_TIMEOUT_S = 600.0


class SubmissionError(OwnerError):
    """The exchange with the verifier failed; ``code`` is the gRPC status name when the verifier refused."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SubmitResult:
    """A completed submission: the checked receipt, its signed bytes, and what was sent."""

    receipt: Receipt
    signed_receipt: SignedMessage
    manifest: Manifest
    challenge: Challenge
    # The owner's signed manifest as sent: what an auditor needs beside the receipt (``pawprint audit``).
    signed_manifest: SignedMessage | None = None


def _rpc_error(what: str, e: grpc.RpcError, target: str | None = None) -> SubmissionError:
    failure = failure_of(e, what, "the verifier", target=target)
    return SubmissionError(str(failure), failure.code)


def request_challenge(
    stub: pawprint_pb2_grpc.VerifierStub, verifier_key: PublicKey, owner_key_id: str, timeout_s: float,
    target: str | None = None,
) -> Challenge:
    """A challenge from the verifier, checked to be signed by ``verifier_key``."""
    try:
        reply = stub.GetChallenge(pawprint_pb2.ChallengeRequest(owner_key_id=owner_key_id), timeout=timeout_s)
    except grpc.RpcError as e:
        raise _rpc_error("challenge", e, target) from e
    try:
        signed = SignedMessage(bytes(reply.payload), bytes(reply.signature), PublicKey(bytes(reply.public_key)))
        return open_challenge(signed, verifier_key)
    except ProtocolError as e:
        raise SubmissionError(f"the challenge is not signed by the expected verifier key ({e})") from e


def submission_requests(
    signed_manifest: SignedMessage, manifest: Manifest, terms: Mapping[str, Tensor], chunk_bytes: int
) -> Iterator[pawprint_pb2.SubmitRequest]:
    """The stream: the signed manifest, then each tensor of ``manifest``'s table in order, in chunks."""
    yield pawprint_pb2.SubmitRequest(manifest=signed_to_pb(signed_manifest))
    for index, entry in enumerate(manifest.tensors):
        data = memoryview(terms[entry.name].data)
        for offset in range(0, len(data), chunk_bytes):
            yield pawprint_pb2.SubmitRequest(chunk=pawprint_pb2.TensorChunk(
                tensor_index=index, offset=offset, data=bytes(data[offset : offset + chunk_bytes]),
            ))


def check_receipt(signed: SignedMessage, verifier_key: PublicKey, signed_manifest: SignedMessage,
                  manifest: Manifest, challenge: Challenge) -> Receipt:
    """The receipt, checked: the verifier's signature, this nonce, this manifest, this weight commitment, this
    display name and publisher signature (or none, as the manifest had)."""
    try:
        receipt = open_receipt(signed, verifier_key)
    except ProtocolError as e:
        raise SubmissionError(f"the receipt does not verify against the verifier key ({e})") from e
    if receipt.nonce != challenge.nonce or receipt.submission != sha256(signed_manifest.payload):
        raise SubmissionError("the receipt is for another submission (nonce or manifest digest differ)")
    if receipt.owner_key_id != manifest.owner_key_id or receipt.weight_commitment != manifest.weight_commitment.root:
        raise SubmissionError("the receipt names another owner key or weight commitment")
    if receipt.model_name != manifest.display_name:
        raise SubmissionError("the receipt names the model otherwise than the signed manifest did")
    if receipt.publisher_signature != manifest.publisher_signature:
        raise SubmissionError("the receipt states another publisher signature than the signed manifest did")
    return receipt


def with_possession(fp: Fingerprint, model: OpenedModel, chunk_size: int) -> Fingerprint:
    """``fp`` with a possession proof in its manifest: the chunks its nonce and chunked commitment select,
    opened from ``model``'s checkpoint (only the selected tensors are read again)."""
    manifest = fp.manifest
    if manifest.nonce is None or not fp.chunked:
        raise SubmissionError("a possession proof answers a challenge with a chunked (weights-v2) commitment")
    try:
        proof = prove_possession(manifest.nonce, fp.chunked, chunk_size,
                                 lambda entry: read_tensor_bytes(model, entry.name))
        return dataclasses.replace(fp, manifest=dataclasses.replace(manifest, possession=proof))
    except ProtocolError as e:
        raise SubmissionError(f"cannot open the committed weights: {e}") from e


def retry_wait(e: grpc.RpcError, attempt: int, base_wait_s: float) -> float | None:
    """How long to wait before sending the same submission again after ``e`` (attempt ``attempt``, from 0), or
    ``None`` if waiting does not help.

    UNAVAILABLE (a restart, a lost connection) and ABORTED (a race with another copy of itself) are retried with
    doubling waits. RESOURCE_EXHAUSTED is retried only when it is transient: a rate limit, which names its wait
    in a ``google.rpc.RetryInfo`` status detail (the longer of it and the doubling wait is taken), or grpc's own
    refusal past the server's ``max_concurrent_rpcs`` (grpc's text, the only message looked at). A size limit or
    any other refusal is final.
    """
    code = e.code() if callable(getattr(e, "code", None)) else None
    failure = failure_of(e, "submission", "the verifier")
    busy = code == grpc.StatusCode.RESOURCE_EXHAUSTED and (
        failure.retry_after_s is not None or "Concurrent RPC limit" in str(failure))
    if code not in RETRYABLE and not busy:
        return None
    wait = float(base_wait_s * 2**attempt)
    return max(wait, failure.retry_after_s) if failure.retry_after_s is not None else wait


def submit(
    model: OpenedModel | Path | str,
    key: PrivateKey,
    channel: grpc.Channel,
    verifier_key: PublicKey,
    *,
    clock: Callable[[], float] = time.time,
    keep_invariants: bool = False,
    method: Method = "pawprint",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    progress: Progress | None = None,
    retries: int = 3,
    retry_wait_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    display_name: str | None = None,
    target: str | None = None,
    publisher_signature: PublisherSignature | None = None,
    possession_chunk: int | None = None,
) -> SubmitResult:
    """Run one whole exchange over ``channel`` and return the checked receipt. A submission cut off by the
    network or a verifier restart (UNAVAILABLE), racing another copy of itself (ABORTED) or refused because
    the verifier is busy or the key over its rate (RESOURCE_EXHAUSTED saying so) is sent again as it was, up
    to ``retries`` times with doubling waits (or the wait the verifier names); it is answered at most once.
    ``display_name`` names the model in the signed manifest (``fingerprint``); the receipt carries it back as
    ``model_name``. ``publisher_signature`` (``owner._model_signing.verify_publisher_signature``, run first)
    states in the manifest that a publisher's model_signing signature of the model's files was verified; the
    receipt carries it back. ``target`` (the channel's HOST:PORT) is named when the verifier cannot be reached.
    ``possession_chunk`` (bytes, a power of two) commits to the weights with a chunked commitment and opens a few
    chunks of that size in the manifest (``with_possession``); the receipt then says possession was shown."""
    stub = pawprint_pb2_grpc.VerifierStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
    challenge = request_challenge(stub, verifier_key, key.key_id, timeout_s, target)
    if possession_chunk is not None and not isinstance(model, OpenedModel):
        model = open_model(Path(model))
    fp = fingerprint(
        model, key.key_id, now=int(clock()), probe_sets=challenge.probe_sets or None, layers=challenge.layers,
        method=method, nonce=challenge.nonce, keep_invariants=keep_invariants, workers=workers, progress=progress,
        display_name=display_name, publisher_signature=publisher_signature, chunk_size=possession_chunk,
    )
    if challenge.sketch:  # the verifier asks for public sketches of the terms (issue 16), not the terms
        fp = sketch_fingerprint(fp, challenge.sketch)
    if possession_chunk is not None:
        assert isinstance(model, OpenedModel)
        fp = with_possession(fp, model, possession_chunk)
    manifest = fp.manifest
    limits = challenge.limits
    if manifest.term_bytes > limits.max_total_bytes or len(manifest.tensors) > limits.max_tensors:
        raise SubmissionError(
            f"the terms ({len(manifest.tensors)} tensors, {manifest.term_bytes} bytes) exceed the verifier's limits"
        )
    signed_manifest = sign_message(manifest, key, ONLINE_MANIFEST_KIND)
    if len(signed_manifest.payload) > limits.max_manifest_bytes:
        raise SubmissionError(f"the manifest ({len(signed_manifest.payload)} bytes) exceeds the verifier's limit")
    # The signed manifest is the submission's idempotency key: sending the same stream again after a lost
    # connection, a verifier restart or a concurrent attempt is answered with the one receipt it earned.
    for attempt in range(retries + 1):
        requests = submission_requests(signed_manifest, manifest, fp.terms, limits.max_chunk_bytes)
        try:
            # A retry waits for the channel to reconnect (a restarting verifier) instead of failing at once.
            reply = stub.Submit(requests, timeout=timeout_s, wait_for_ready=attempt > 0)
            break
        except grpc.RpcError as e:
            code = e.code() if callable(getattr(e, "code", None)) else None
            wait = retry_wait(e, attempt, retry_wait_s)
            if wait is None or attempt == retries:
                failure = failure_of(e, "submission", "the verifier", target=target)
                raise SubmissionError(str(failure), failure.code) from e
            log.warning("submission: the verifier answered %s; sending the same signed submission again in "
                        "%.1f s (attempt %d of %d)", code.name if code else "?", wait, attempt + 2, retries + 1)
            sleep(wait)
    try:
        signed_receipt = SignedMessage(bytes(reply.payload), bytes(reply.signature), PublicKey(bytes(reply.public_key)))
    except ProtocolError as e:
        raise SubmissionError(f"the verifier's reply is malformed ({e})") from e
    receipt = check_receipt(signed_receipt, verifier_key, signed_manifest, manifest, challenge)
    if manifest.possession is not None and receipt.possession is None:
        log.warning("submission: the verifier's receipt does not record the possession proof that was sent")
    return SubmitResult(receipt, signed_receipt, manifest, challenge, signed_manifest)
