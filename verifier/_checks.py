"""Everything the verifier checks before it computes anything: pure functions over bytes and values.

Order matters, cheapest and most fundamental first, so that a forger learns as little as possible and a
large stream is refused before it is read: size of the manifest, signature (under kind ``manifest``, by the
key sent with it), the manifest's shape, the key (known and trusted as an owner), the nonce (issued here,
unused, unexpired), the terms table against the groups and the challenge, the limits. Then, on the stream,
every chunk's order and size, and every tensor's SHA-256 and finiteness as it completes.

Nothing here stores anything or touches the network; a failure is a ``VerifierError`` whose class fixes the
gRPC status. Signature failures stay opaque (``Unauthenticated("signature verification failed")``).
"""

from __future__ import annotations

import hashlib
import mmap
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from protocol import (
    OFFLINE_MANIFEST_KIND,
    ONLINE_MANIFEST_KIND,
    TERMS,
    Bundle,
    Challenge,
    Manifest,
    MessageError,
    ProtocolError,
    PublicKey,
    Role,
    SignatureError,
    SignedMessage,
    SubmissionLimits,
    Tensor,
    TrustStore,
    dtype_itemsize,
)
from protocol import check_finite as protocol_check_finite
from verifier._challenges import ChallengeStore
from verifier.errors import InvalidSubmission, LimitExceeded, PermissionDenied, Unauthenticated, VerifierError

# The only term layout the comparison understands; a group naming other terms is refused.
EXPECTED_TERMS: tuple[str, ...] = TERMS
MIN_PROBE_ROWS = 1


@dataclass(frozen=True)
class Header:
    """A submission's header after every check: the manifest, its signed bytes and the challenge it answers."""

    manifest: Manifest
    signed: SignedMessage
    challenge: Challenge
    nonce: bytes


def require_trusted(trust: TrustStore, key_id: str, role: Role) -> PublicKey:
    """The key if trusted for ``role``: unknown or revoked is ``Unauthenticated``, another role
    ``PermissionDenied``."""
    entry = trust.get(key_id)
    if entry is None or entry.revoked:
        raise Unauthenticated("the signing key is not known to this verifier")
    if role not in entry.roles:
        raise PermissionDenied(f"the signing key is not trusted as {role.value}")
    return entry.public_key


def open_signed_manifest(signed: SignedMessage, kind: str, limits: SubmissionLimits) -> Manifest:
    """Size, signature and shape of a signed manifest (trust is the caller's next step)."""
    if len(signed.payload) > limits.max_manifest_bytes:
        raise LimitExceeded(f"the manifest is {len(signed.payload)} bytes; the limit is {limits.max_manifest_bytes}")
    try:
        signed.check(kind)
    except SignatureError as e:
        raise Unauthenticated("signature verification failed") from e
    try:
        manifest = Manifest.decode(signed.payload)
    except ProtocolError as e:
        raise InvalidSubmission(f"malformed manifest: {e}") from e
    if manifest.owner_key_id != signed.public_key.key_id:
        raise InvalidSubmission("the manifest names another owner key than the one that signed it")
    return manifest


def check_terms_table(manifest: Manifest, limits: SubmissionLimits) -> None:
    """The tensor table is the groups' terms (F32, ``m x m``, or ``k x k`` sketches) and fits the limits."""
    for i, group in enumerate(manifest.groups):
        if group.terms != EXPECTED_TERMS:
            raise InvalidSubmission(f"group {i}: terms {list(group.terms)}, expected {list(EXPECTED_TERMS)}")
        if group.rows < MIN_PROBE_ROWS:
            raise InvalidSubmission(f"group {i}: the model has none of the probe tokens")
    try:
        manifest.check_terms()
    except ProtocolError as e:
        raise InvalidSubmission(str(e)) from e
    if len(manifest.tensors) > limits.max_tensors:
        raise LimitExceeded(f"{len(manifest.tensors)} tensors; the limit is {limits.max_tensors}")
    for t in manifest.tensors:
        size = tensor_bytes(t.dtype, t.shape)
        if size > limits.max_tensor_bytes:
            raise LimitExceeded(f"tensor {t.name} is {size} bytes; the limit is {limits.max_tensor_bytes}")
    if manifest.term_bytes > limits.max_total_bytes:
        raise LimitExceeded(f"the terms total {manifest.term_bytes} bytes; the limit is {limits.max_total_bytes}")


def check_header(
    signed: SignedMessage, *, trust: TrustStore, challenges: ChallengeStore, limits: SubmissionLimits
) -> Header:
    """Every check on a submission's first message; the nonce is checked but not yet used."""
    manifest = open_signed_manifest(signed, ONLINE_MANIFEST_KIND, limits)
    require_trusted(trust, manifest.owner_key_id, Role.OWNER)
    if manifest.nonce is None:
        raise InvalidSubmission("the manifest answers no challenge (an offline bundle cannot be submitted)")
    challenge = challenges.peek(manifest.nonce)
    check_terms_table(manifest, challenge.limits)
    offered = {p.id for p in challenge.probe_sets}
    for i, group in enumerate(manifest.groups):
        if group.method != challenge.method:
            raise InvalidSubmission(f"group {i}: method {group.method!r}; the challenge asked for {challenge.method!r}")
        if group.sketch != challenge.sketch:  # the verifier, not the owner, chooses what is sent (issue 16)
            asked = f"sketches of size {challenge.sketch}" if challenge.sketch else "the terms, not sketches"
            sent = f"sketches of size {group.sketch}" if group.sketch else "the terms"
            raise InvalidSubmission(f"group {i}: sent {sent}; the challenge asked for {asked}")
        if offered and group.probe_set.id not in offered:
            raise InvalidSubmission(f"group {i}: probe set {group.probe_set.name!r} is not one the challenge named")
    return Header(manifest, signed, challenge, manifest.nonce)


def tensor_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * dtype_itemsize(dtype)


def check_finite(name: str, dtype: str, data: bytes | memoryview) -> None:
    """``protocol.check_finite`` (F32, no NaN or infinity), refused as INVALID_ARGUMENT."""
    try:
        protocol_check_finite(name, dtype, data)
    except MessageError as e:
        raise InvalidSubmission(str(e)) from e


class TensorReceiver:
    """Reassembles the streamed tensors in manifest order, checking each chunk and each finished tensor.

    Chunks must come tensor by tensor, in table order, each starting where the last ended, none empty or
    larger than the limit; a finished tensor must hash to its digest and be finite.

    Memory: each tensor's buffer is allocated once at its declared size (sizes are checked against the limits
    before the stream is read). With ``spool_dir``, a tensor larger than ``spool_over`` bytes is written to an
    anonymous temporary file there instead (unlinked from the start, so nothing outlives the process, a crash
    included) and handed on as a read-only memory map: a large submission then sits in the page cache, which
    the kernel may drop and re-read, not in the verifier's own memory.
    """

    def __init__(self, manifest: Manifest, limits: SubmissionLimits, *, spool_dir: Path | None = None,
                 spool_over: int = 1 << 20) -> None:
        self._table = manifest.tensors
        self._sizes = [tensor_bytes(t.dtype, t.shape) for t in self._table]
        self._limits = limits
        self._spool_dir = spool_dir
        self._spool_over = spool_over
        self._index = 0
        self._filled = 0
        self._buf: bytearray | None = None
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._done: dict[str, Tensor] = {}
        self.received = 0
        self.spooled = 0  # bytes written to spool files

    def add(self, index: int, offset: int, data: bytes) -> None:
        if self._index >= len(self._table):
            raise InvalidSubmission("a chunk after the last tensor was complete")
        name = self._table[self._index].name
        if index != self._index:
            raise InvalidSubmission(f"chunk for tensor {index} while tensor {self._index} ({name}) is incomplete")
        if offset != self._filled:
            raise InvalidSubmission(f"tensor {name}: chunk at offset {offset}, expected {self._filled}")
        if not data:
            raise InvalidSubmission(f"tensor {name}: empty chunk")
        if len(data) > self._limits.max_chunk_bytes:
            raise LimitExceeded(f"a chunk of {len(data)} bytes; the limit is {self._limits.max_chunk_bytes}")
        size = self._sizes[self._index]
        if offset + len(data) > size:
            raise InvalidSubmission(f"tensor {name}: more bytes than its dtype and shape ({size})")
        if offset == 0:
            self._open(size)
        if self._file is not None:
            self._file.write(data)
        else:
            assert self._buf is not None
            self._buf[offset : offset + len(data)] = data
        self._filled += len(data)
        self._hash.update(data)
        self.received += len(data)
        if self._filled == size:
            self._finish_tensor()

    def _open(self, size: int) -> None:
        if self._spool_dir is not None and size > self._spool_over:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            # Open across add() calls; closed by _finish_tensor or close() (and unlinked from the start).
            self._file = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115
        else:
            self._buf = bytearray(size)

    def _finish_tensor(self) -> None:
        entry = self._table[self._index]
        if self._hash.digest() != entry.sha256:
            self.close()
            raise InvalidSubmission(f"tensor {entry.name}: bytes do not match the manifest's SHA-256")
        data: bytes | memoryview
        if self._file is not None:
            self._file.flush()
            mapped = mmap.mmap(self._file.fileno(), self._filled, access=mmap.ACCESS_READ)
            self._file.close()  # the mapping keeps the (already unlinked) file until it is released
            self._file = None
            self.spooled += self._filled
            data = memoryview(mapped)
        else:
            assert self._buf is not None
            data = bytes(self._buf)
            self._buf = None
        check_finite(entry.name, entry.dtype, data)
        self._done[entry.name] = Tensor(entry.dtype, entry.shape, data)
        self._index += 1
        self._filled = 0
        self._hash = hashlib.sha256()

    def close(self) -> None:
        """Drop a spool file in progress (a refused or broken stream)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> dict[str, Tensor]:
        """The tensors, once every one is complete; a stream that ended early is ``InvalidSubmission``."""
        if self._index < len(self._table):
            self.close()
            raise InvalidSubmission(
                f"the stream ended after {self._index} of {len(self._table)} tensors (truncated submission)"
            )
        return dict(self._done)


def check_bundle(bundle: Bundle, trust: TrustStore, roles: tuple[Role, ...]) -> Manifest:
    """An offline bundle: signature (kind ``bundle``) by a key trusted for one of ``roles``, a well-formed
    terms table, every term matching its digest, finite."""
    limits = SubmissionLimits(max_manifest_bytes=1 << 30, max_tensors=1 << 20, max_tensor_bytes=1 << 40,
                              max_total_bytes=1 << 42)
    manifest = open_signed_manifest(bundle.signed, OFFLINE_MANIFEST_KIND, limits)
    if manifest.nonce is not None:
        raise InvalidSubmission("a bundle file must not carry a challenge nonce")
    last: VerifierError | None = None
    for role in roles:
        try:
            require_trusted(trust, manifest.owner_key_id, role)
            break
        except (Unauthenticated, PermissionDenied) as e:
            last = e
    else:
        if last is not None:
            raise last
    check_terms_table(manifest, limits)
    try:
        bundle.open()
    except ProtocolError as e:
        raise InvalidSubmission(f"bundle terms do not match the manifest: {e}") from e
    for entry in manifest.tensors:
        check_finite(entry.name, entry.dtype, bundle.terms[entry.name].data)
    return manifest


def terms_of(manifest: Manifest, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The terms in table order (what a content-addressed blob stores)."""
    return {t.name: terms[t.name] for t in manifest.tensors}
