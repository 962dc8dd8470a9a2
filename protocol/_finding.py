"""An auditor's signed finding: what a neutral party holding the weights found when it recomputed a receipt.

``pawprint audit recompute RECEIPT MODEL`` recomputes the weight commitment and the invariant terms from the
weights and checks them against what was signed. Its result, signed by the auditor's key (kind
``audit-finding``), is self-contained: it embeds the verifier's signed receipt file and, when the auditor had it,
the owner's signed submission (the manifest the receipt's ``submission`` digest names), so anyone can check
offline, with ``protocol`` alone (``open_finding``), who signed what:

- the **owner's** signature (in ``submission``) covers the manifest: the weight commitment it claimed, the
  challenge nonce, the probe sets and layers, and the SHA-256 of every term it sent;
- the **verifier's** signature (in ``receipt``) covers the receipt: the manifest's digest, the weight
  commitment, the per-base scores and the encoded vector of the submitted terms;
- the **auditor's** signature covers this finding: every check with the numbers it found, the tolerance it
  used, and the two embedded files. It is the auditor's word about the weights it was given (it names their
  recomputed commitment, ``model_commitment``); the weights themselves are not in it.

``outcome`` is ``inconsistent`` when a check failed (the owner's submission did not come from these weights, or
these weights are not the ones the receipt names), ``consistent`` when every check passed and the terms were
checked, and ``incomplete`` when nothing failed but the terms could not be checked (no submission given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol._canonical import decode_map, encode
from protocol._errors import FormatError
from protocol._hashing import DIGEST_SIZE, sha256
from protocol._keys import PrivateKey, PublicKey
from protocol._messages import (
    MESSAGE_VERSION,
    ONLINE_MANIFEST_KIND,
    RECEIPT_FORMAT,
    Manifest,
    MessageError,
    Receipt,
    SignedMessage,
    open_manifest,
    open_receipt,
)

FINDING_FORMAT = "pawprint-finding/1"
FINDING_KIND = "audit-finding"
SUBMISSION_FORMAT = "pawprint-submission/1"  # the owner's signed manifest of an online submission, as a file
OUTCOMES: tuple[str, ...] = ("consistent", "inconsistent", "incomplete")
CHECK_STATUSES: tuple[str, ...] = ("pass", "fail", "not-checked")
_MAX_TEXT = 2000
_MAX_CHECKS = 64


def _text(value: object, what: str, *, limit: int = _MAX_TEXT, empty: bool = True) -> str:
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise MessageError(f"{what}: expected {'a' if empty else 'a non-empty'} string of at most {limit} "
                           "characters")
    return value


def _fields(value: object, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(keys):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise MessageError(f"{what}: expected exactly the fields {', '.join(sorted(keys))}, got {got}")
    return value


@dataclass(frozen=True)
class AuditCheck:
    """One check of an audit: its name, ``pass``/``fail``/``not-checked``, what the signed record says
    (``signed``), what the weights gave (``recomputed``), the tolerance if any, and a sentence saying why."""

    name: str
    status: str
    signed: str
    recomputed: str
    tolerance: str
    detail: str

    def __post_init__(self) -> None:
        _text(self.name, "check.name", limit=80, empty=False)
        if self.status not in CHECK_STATUSES:
            raise MessageError(f"check.status must be one of {', '.join(CHECK_STATUSES)}")
        for key in ("signed", "recomputed", "tolerance", "detail"):
            _text(getattr(self, key), f"check.{key}")

    def to_map(self) -> dict[str, object]:
        return {"detail": self.detail, "name": self.name, "recomputed": self.recomputed, "signed": self.signed,
                "status": self.status, "tolerance": self.tolerance}

    @classmethod
    def from_map(cls, value: object, what: str = "check") -> AuditCheck:
        f = _fields(value, what, ("detail", "name", "recomputed", "signed", "status", "tolerance"))
        return cls(f["name"], f["status"], f["signed"], f["recomputed"], f["tolerance"], f["detail"])

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "signed": self.signed, "recomputed": self.recomputed,
                "tolerance": self.tolerance, "detail": self.detail}


@dataclass(frozen=True)
class Finding:
    """The auditor's signed result (see the module docstring)."""

    KIND: ClassVar[str] = FINDING_KIND

    auditor_key_id: str
    outcome: str
    summary: str
    checks: tuple[AuditCheck, ...]
    model_commitment: bytes  # the weight commitment recomputed from the weights the auditor was given
    model_commitment_id: str
    receipt: bytes  # the verifier's signed receipt file (RECEIPT_FORMAT)
    submission: bytes | None  # the owner's signed manifest file (SUBMISSION_FORMAT), if the auditor had it
    covers: tuple[str, ...]  # what each signature covers, in words
    issued_at: int
    version: int = MESSAGE_VERSION

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise MessageError(f"finding.outcome must be one of {', '.join(OUTCOMES)}")
        _text(self.summary, "finding.summary", empty=False)
        if not isinstance(self.checks, tuple) or not 0 < len(self.checks) <= _MAX_CHECKS:
            raise MessageError(f"finding.checks: 1 to {_MAX_CHECKS} checks")
        failed = any(c.status == "fail" for c in self.checks)
        if failed != (self.outcome == "inconsistent"):
            raise MessageError("finding.outcome is inconsistent exactly when a check failed")
        if not isinstance(self.model_commitment, bytes) or len(self.model_commitment) != DIGEST_SIZE:
            raise MessageError(f"finding.model_commitment must be {DIGEST_SIZE} bytes")
        _text(self.model_commitment_id, "finding.model_commitment_id", limit=300, empty=False)
        if not isinstance(self.receipt, bytes) or (self.submission is not None
                                                   and not isinstance(self.submission, bytes)):
            raise MessageError("finding.receipt and finding.submission must be bytes")
        if not isinstance(self.covers, tuple) or not all(isinstance(c, str) and c for c in self.covers):
            raise MessageError("finding.covers must be a tuple of sentences")
        if not isinstance(self.issued_at, int) or isinstance(self.issued_at, bool) or self.issued_at < 0:
            raise MessageError("finding.issued_at must be a non-negative integer")
        if self.version != MESSAGE_VERSION:
            raise MessageError(f"unsupported finding version {self.version!r:.20}")

    def to_map(self) -> dict[str, object]:
        return {
            "auditor_key_id": self.auditor_key_id, "checks": [c.to_map() for c in self.checks],
            "covers": list(self.covers), "issued_at": self.issued_at, "model_commitment": self.model_commitment,
            "model_commitment_id": self.model_commitment_id, "outcome": self.outcome, "receipt": self.receipt,
            "summary": self.summary, "version": self.version,
            **({} if self.submission is None else {"submission": self.submission}),
        }

    @classmethod
    def from_map(cls, value: object) -> Finding:
        what = "finding"
        has_submission = isinstance(value, dict) and "submission" in value
        f = _fields(value, what, ("auditor_key_id", "checks", "covers", "issued_at", "model_commitment",
                                  "model_commitment_id", "outcome", "receipt", "summary", "version",
                                  *(("submission",) if has_submission else ())))
        if f["version"] != MESSAGE_VERSION or isinstance(f["version"], bool):
            raise MessageError(f"{what}: unsupported version {f['version']!r:.20}")
        checks, covers = f["checks"], f["covers"]
        if not isinstance(checks, list) or not isinstance(covers, list):
            raise MessageError(f"{what}: checks and covers must be lists")
        try:
            return cls(_text(f["auditor_key_id"], f"{what}.auditor_key_id", limit=64, empty=False), f["outcome"],
                       f["summary"], tuple(AuditCheck.from_map(c, f"{what}.checks[{i}]") for i, c in enumerate(checks)),
                       f["model_commitment"], f["model_commitment_id"], f["receipt"],
                       f["submission"] if has_submission else None, tuple(covers), f["issued_at"])
        except (TypeError, ValueError) as e:
            raise MessageError(f"{what}: {e}") from e

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "summary": self.summary, "auditor_key_id": self.auditor_key_id,
                "model_commitment": self.model_commitment.hex(), "model_commitment_id": self.model_commitment_id,
                "checks": [c.as_dict() for c in self.checks], "covers": list(self.covers),
                "issued_at": self.issued_at, "has_submission": self.submission is not None}


def sign_finding(finding: Finding, key: PrivateKey) -> SignedMessage:
    if finding.auditor_key_id != key.key_id:
        raise MessageError("the finding names another auditor key than the one signing it")
    payload = encode(finding.to_map())
    return SignedMessage(payload, key.sign(FINDING_KIND, payload), key.public_key)


@dataclass(frozen=True)
class OpenedFinding:
    """A finding whose three signatures verified: the finding, its receipt and (if any) its submission."""

    finding: Finding
    auditor_key: PublicKey
    receipt: Receipt
    verifier_key: PublicKey
    submission: Manifest | None
    owner_key: PublicKey | None


def open_finding(signed: SignedMessage, auditor_key: PublicKey | None = None) -> OpenedFinding:
    """Check the auditor's signature (by ``auditor_key`` if given, else by the key the file carries), the
    embedded receipt's verifier signature, and the embedded submission's owner signature and that it is the
    manifest the receipt names. Whether the three keys are trusted is the caller's question."""
    signed.check(FINDING_KIND, auditor_key)
    finding = Finding.from_map(decode_map(signed.payload))
    if finding.auditor_key_id != signed.public_key.key_id:
        raise MessageError("the finding names another auditor key than the one that signed it")
    try:
        signed_receipt = SignedMessage.from_bytes(finding.receipt, RECEIPT_FORMAT)
    except FormatError as e:
        raise MessageError(f"finding.receipt: {e}") from e
    receipt = open_receipt(signed_receipt, signed_receipt.public_key)
    manifest: Manifest | None = None
    owner_key: PublicKey | None = None
    if finding.submission is not None:
        try:
            signed_manifest = SignedMessage.from_bytes(finding.submission, SUBMISSION_FORMAT)
        except FormatError as e:
            raise MessageError(f"finding.submission: {e}") from e
        manifest = open_manifest(signed_manifest, ONLINE_MANIFEST_KIND)
        if sha256(signed_manifest.payload) != receipt.submission:
            raise MessageError("finding.submission is not the manifest the receipt names")
        owner_key = signed_manifest.public_key
    return OpenedFinding(finding, signed.public_key, receipt, signed_receipt.public_key, manifest, owner_key)
