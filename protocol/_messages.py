"""The signed messages of the owner-verifier protocol: Challenge, Manifest, Bundle and Receipt.

Each message is a frozen dataclass with ``to_map``/``from_map``; its signed form is the canonical msgpack of
``to_map()`` (``encode``), signed under the message's domain-separation kind:

- ``Challenge`` (kind ``challenge``, signed by the verifier): a fresh 32-byte nonce, issue and expiry times,
  the probe sets (token strings), the layer policy and method, the submission limits, and the registry state
  the submission will be compared against.
- ``Manifest``: what the owner's agent computed, signed by the owner. Online it answers a challenge (it
  carries the nonce) and is signed as ``manifest``; in an offline bundle file it has no nonce and is signed
  as ``bundle``, so neither can be passed off as the other. It lists the term groups (probe set, which probe
  tokens the model has, layers, method), a table of the term tensors (name, dtype, shape, SHA-256) in the
  order they are streamed, the weight commitment over every checkpoint tensor, the model's shape facts, the
  agent version, the time and, if the owner named the model, its ``display_name`` (below).
- ``Bundle``: a signed manifest with its key and the term tensors; ``to_bytes`` is the offline file format,
  the canonical msgpack of ``{"format", "manifest", "public_key", "signature", "terms"}`` (``protocol._bundle_io``
  writes the same bytes to a file streamed).
- ``Receipt`` (kind ``receipt``, signed by the verifier): the submission digest, nonce, weight commitment,
  registry state, every match with its scores, the verdict and the rule that produced it, method ids, time.
  A receipt binds to the registry's transparency log: ``checkpoint`` is the log's signed checkpoint note the
  comparison used (its size and root are the registry state), and each match names its base's entry index
  (``log_index``), so anyone can fetch that entry's inclusion proof and check it against the checkpoint.
  Both fields are absent (not nil) from a receipt made without a log: one encoding per value.

**Display names.** An owner may name the model it submits: ``Manifest.display_name``, signed with the rest of
the manifest, which the verifier copies into the receipt as ``Receipt.model_name``. The name is what the owner
asserts, checked by nobody: show it as "named by the owner", escaped. It is absent (not nil) when there is none,
so a manifest or receipt without a name keeps the bytes it had before names existed. A name is refused unless
it is non-empty NFC text of at most ``MAX_DISPLAY_NAME`` characters, every one printable (``str.isprintable``:
no control, format, surrogate, private-use or unassigned code point, hence no bidi embedding, override or
isolate, no zero-width character, no line break), with single spaces between words and none at either end
(``check_display_name``): two names that read differently must not look alike through invisible characters.
"Unassigned" is as the running Python's Unicode database says: a character newer than it is refused, never
let through.

**Publisher signatures.** An owner whose model a publisher signed with OpenSSF ``model_signing`` may say so:
``Manifest.publisher_signature`` (a ``PublisherSignature``), signed with the rest of the manifest, which the
verifier copies into the receipt as ``Receipt.publisher_signature``. It states that the owner's agent verified
that signature (the SHA-256 of the signature file, the id of the publisher's key, the in-toto statement it
signs) over the model's files and checked that every file whose tensors the weight commitment covers is one of
the signed files. The verifier cannot check it (it never sees a file): it is the owner's agent's word, and
anyone holding the model files and the signature file can check both again (``pawprint bundle verify BUNDLE
--model MODEL --model-signature SIG --signature-key PEM``; for a receipt, ``pawprint owner digest MODEL
--model-signature SIG --signature-key PEM`` gives the same weight commitment and signature digests). Absent
(not nil) when there is none, as display names.

**Possession.** An owner may show it holds the weights it commits to: ``Manifest.possession`` (a
``protocol._possession.PossessionProof``), signed with the rest of the manifest, opens a few small chunks of the
weights, selected by the challenge nonce and the claimed root, against a chunked (``weights-v2``) commitment. The
verifier checks it before reading a term and states it in ``Receipt.possession`` (the scheme, the number of
openings, the chunk size). Both are absent (not nil) when there is none, as display names.

**The number rule.** Signed structures hold no floats. Times are integer Unix seconds; sizes are integer
bytes; scores (cosines and ICS, all in [-1, 1]) are decimal strings with exactly six digits after the point,
the exact binary value rounded half-to-even (``format_score``): ``"0.912345"``, ``"-0.031250"``, never
``"-0.000000"``. A verdict is derived from these rounded decimals, so anyone can re-derive it from the
receipt alone.

Parsing is strict: a map must have exactly the fields of its version (an unknown field is an error, not
ignored), every field its type; each failure is a ``MessageError``. This module does no I/O and never
imports numpy or torch: an auditor checks receipts and bundles with ``protocol`` alone.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar, TypeVar

from protocol._canonical import Limits, Tensor, decode_map, dtype_itemsize, encode
from protocol._checkpoint import SignedCheckpoint, parse_checkpoint
from protocol._commitment import WEIGHT_COMMITMENT_ID, TensorDigest
from protocol._errors import CanonicalError, CommitmentError, FormatError, SignatureError
from protocol._hashing import DIGEST_SIZE, sha256, sha256_hex
from protocol._keys import PrivateKey, PublicKey, verify
from protocol._possession import PossessionProof

MESSAGE_VERSION = 1
NONCE_SIZE = 32
BUNDLE_FORMAT = "pawprint-bundle/1"
RECEIPT_FORMAT = "pawprint-receipt/1"

# Kinds: an online manifest answers a challenge; an offline bundle's manifest is signed as "bundle".
ONLINE_MANIFEST_KIND = "manifest"
OFFLINE_MANIFEST_KIND = "bundle"

# A receipt's verdict: one of a match's, or ``insufficient-evidence`` when the verifier's evidence checks
# (``verifier._evidence``) found the submission too thin or implausible to say ``independent`` (or anything).
INSUFFICIENT_EVIDENCE = "insufficient-evidence"
MATCH_VERDICTS: tuple[str, ...] = ("derived", "independent", "inconclusive")
VERDICTS: tuple[str, ...] = (*MATCH_VERDICTS, INSUFFICIENT_EVIDENCE)

# What stands behind a receipt (docs/threat-model.md). ``owner-attested``: the terms and the weight commitment are
# what the owner's agent sent, signed by the owner's key; the verifier checked signatures, the challenge and the
# evidence checks, never the weights. ``audited``: a neutral party holding the weights recomputed the commitment
# and the terms and found them equal to what was signed. A receipt without the field was issued before levels
# were stated: it is ``owner-attested`` (the only level a verifier has ever issued).
OWNER_ATTESTED = "owner-attested"
AUDITED = "audited"
ASSURANCE_LEVELS: tuple[str, ...] = (OWNER_ATTESTED, AUDITED)
# ``OWNER_ATTESTED_POSSESSION`` is not a level: it words an ``owner-attested`` commitment when the receipt records
# possession (``Receipt.possession``): the owner opened a few chunks, chosen by the verifier's fresh nonce, against
# it, so at submission time it held those chunks of weights with this commitment. That rules out a commitment
# merely copied from someone else's receipt; it does not show that the owner holds every byte, that the terms were
# computed from these weights, or that it came by them lawfully (a thief holding stolen weights shows possession).
OWNER_ATTESTED_POSSESSION = "owner-attested+possession"
COMMITMENT_CLAIMS: dict[str, str] = {
    OWNER_ATTESTED: "the owner's claim, not checked against any weights",
    OWNER_ATTESTED_POSSESSION: "the owner's claim; at submission time the owner held the few chunks of weights with "
                               "this commitment that the verifier's challenge picked and checked (not proof that it "
                               "holds every byte, that the terms were computed from these weights, or that it came "
                               "by them lawfully)",
    AUDITED: "recomputed from the weights by an auditor",
}
MAX_EVIDENCE_FINDINGS = 32
MAX_FINDING_CHARS = 300

# The invariant terms of one layer, in the order they are computed, streamed and compared (SCIENCE.md).
TERMS: tuple[str, ...] = ("attn_qk", "attn_vo", "ffn")

SCORE_PLACES = 6
_SCORE_QUANTUM = Decimal(1).scaleb(-SCORE_PLACES)
_SCORE = re.compile(rf"-?[01]\.[0-9]{{{SCORE_PLACES}}}")
_Z = re.compile(r"-?(0|[1-9][0-9]{0,6})\.[0-9]{3}")
_P = re.compile(r"[0-9]\.[0-9]{3}e[+-][0-9]{2,3}")


def check_z(text: object, what: str = "z") -> str:
    """A z-score string as the calibrated verdict writes it (three decimals)."""
    if not isinstance(text, str) or _Z.fullmatch(text) is None or text == "-0.000":
        raise MessageError(f"{what}: not a z-score string (three decimal places): {text!r:.40}")
    return text


def check_p(text: object, what: str = "p_value") -> str:
    """A p-value string as the calibrated verdict writes it (``d.ddde[+-]xx``, in [0, 1])."""
    if not isinstance(text, str) or _P.fullmatch(text) is None or not 0 <= float(text) <= 1:
        raise MessageError(f"{what}: not a p-value string (d.ddde+-xx in [0, 1]): {text!r:.40}")
    return text
_KEY_ID = re.compile(r"[0-9a-f]{64}")

MAX_DISPLAY_NAME = 200  # characters (code points)
# The kinds of publisher signature a manifest may state (``PublisherSignature.format``).
PUBLISHER_SIGNATURE_FORMAT = "model_signing/v1"
PUBLISHER_SIGNATURE_FORMATS: tuple[str, ...] = (PUBLISHER_SIGNATURE_FORMAT,)
# Bidi embeddings, overrides and isolates: already refused as non-printable (category Cf); named for the message.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Large enough for a bundle of 4096 x 4096 terms over many layers; the caller passes its own otherwise.
BUNDLE_LIMITS = Limits(max_bytes=8 * 1024**3)

Scalar = str | int | bool
_T = TypeVar("_T")


class MessageError(FormatError):
    """A message is well encoded but not a valid message of its type and version."""


# --------------------------------------------------------------------------------------------- scores
def format_score(value: float) -> str:
    """A score in [-1, 1] as its decimal string (six places, half-to-even from the exact binary value)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise MessageError(f"a score must be a real number, got {type(value).__name__}")
    exact = Decimal(value)  # exact binary value: no dependence on repr
    if not exact.is_finite() or not -1 <= exact.quantize(_SCORE_QUANTUM, ROUND_HALF_EVEN) <= 1:
        raise MessageError(f"a score must be finite and in [-1, 1], got {value!r}")
    rounded = exact.quantize(_SCORE_QUANTUM, ROUND_HALF_EVEN)
    if rounded.is_zero():
        rounded = abs(rounded)  # one spelling of zero
    return f"{rounded:.{SCORE_PLACES}f}"


def parse_score(text: object) -> Decimal:
    """The value of a score string written by ``format_score``; ``MessageError`` for any other spelling."""
    if not isinstance(text, str) or _SCORE.fullmatch(text) is None or text == "-0.000000":
        raise MessageError(f"not a score string (six decimal places in [-1, 1]): {text!r:.40}")
    value = Decimal(text)
    if not -1 <= value <= 1:
        raise MessageError(f"score {text} is outside [-1, 1]")
    return value


# ----------------------------------------------------------------------------------------- the reader
class _Fields:
    """Typed access to the fields of one decoded map, naming the message and field in every error."""

    def __init__(self, value: object, what: str, fields: Iterable[str], *, versioned: bool = False) -> None:
        if not isinstance(value, dict):
            raise MessageError(f"{what}: expected a map, got {type(value).__name__}")
        self.what = what
        self.value: dict[str, Any] = value
        if versioned:
            version = value.get("version")
            if version != MESSAGE_VERSION or isinstance(version, bool):
                raise MessageError(f"{what}: unsupported version {version!r:.20} (this agent speaks {MESSAGE_VERSION})")
        expected = set(fields)
        if set(value) != expected:
            missing = sorted(expected - set(value))
            extra = sorted(set(value) - expected)
            raise MessageError(f"{what}: wrong fields (missing {missing}, unexpected {extra})")

    def _get(self, key: str, kind: type | tuple[type, ...], label: str) -> Any:
        item = self.value[key]
        if isinstance(item, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise MessageError(f"{self.what}.{key}: expected {label}, got a boolean")
        if not isinstance(item, kind):
            raise MessageError(f"{self.what}.{key}: expected {label}, got {type(item).__name__}")
        return item

    def text(self, key: str, *, nonempty: bool = True) -> str:
        item: str = self._get(key, str, "a string")
        if nonempty and not item:
            raise MessageError(f"{self.what}.{key}: must not be empty")
        return item

    def key_id(self, key: str) -> str:
        item = self.text(key)
        if _KEY_ID.fullmatch(item) is None:
            raise MessageError(f"{self.what}.{key}: not a key id (64 lowercase hex characters)")
        return item

    def integer(self, key: str, *, minimum: int = 0) -> int:
        item: int = self._get(key, int, "an integer")
        if item < minimum:
            raise MessageError(f"{self.what}.{key}: must be at least {minimum}, got {item}")
        return item

    def flag(self, key: str) -> bool:
        item: bool = self._get(key, bool, "true or false")
        return item

    def raw(self, key: str, length: int | None = None) -> bytes:
        item: bytes = self._get(key, bytes, "bytes")
        if length is not None and len(item) != length:
            raise MessageError(f"{self.what}.{key}: expected {length} bytes, got {len(item)}")
        return item

    def optional_bytes(self, key: str, length: int) -> bytes | None:
        return None if self.value[key] is None else self.raw(key, length)

    def items(self, key: str) -> list[Any]:
        item: list[Any] = self._get(key, list, "a list")
        return item


def _parse(what: str, fn: Callable[..., _T], *args: Any) -> _T:
    """Run a constructor, turning the value errors it raises into ``MessageError``."""
    try:
        return fn(*args)
    except MessageError:
        raise
    except (CanonicalError, CommitmentError, FormatError, ValueError, TypeError) as e:
        raise MessageError(f"{what}: {e}") from e


def _check_key_id(what: str, value: str) -> None:
    if not isinstance(value, str) or _KEY_ID.fullmatch(value) is None:
        raise MessageError(f"{what}: not a key id (64 lowercase hex characters)")


def check_display_name(value: object, what: str = "display_name") -> str:
    """``value`` if it is an acceptable display name for a model (see the module docstring); ``MessageError``
    naming what is wrong otherwise. The owner asserts the name: it is untrusted text, checked only for form."""
    if not isinstance(value, str):
        raise MessageError(f"{what}: must be text, got {type(value).__name__}")
    if not value:
        raise MessageError(f"{what}: must not be empty")
    if len(value) > MAX_DISPLAY_NAME:
        raise MessageError(f"{what}: {len(value)} characters, at most {MAX_DISPLAY_NAME} allowed")
    bidi = next((c for c in value if c in _BIDI_CONTROLS), None)
    if bidi is not None:
        raise MessageError(f"{what}: bidirectional control character U+{ord(bidi):04X} is not allowed")
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise MessageError(f"{what}: character U+{ord(bad):04X} (category {unicodedata.category(bad)}) is not "
                           "printable text")
    if not unicodedata.is_normalized("NFC", value):
        raise MessageError(f"{what}: not in Unicode normal form NFC")
    if value != value.strip(" ") or "  " in value:
        raise MessageError(f"{what}: spaces only singly, between words (none at either end)")
    return value


def _check_digest(what: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
        raise MessageError(f"{what}: must be {DIGEST_SIZE} raw bytes")


def _check_count(what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MessageError(f"{what}: must be a non-negative integer, got {value!r:.40}")


# ------------------------------------------------------------------------------------------ probe sets
@dataclass(frozen=True)
class ProbeSpec:
    """A probe set: a named, versioned list of unique token strings in canonical spelling, with the rule that
    chose them. The one probe-set type of the project: the owner's agent builds it from a vocabulary
    (``owner.build_probe_set``), challenges, manifests and bundles carry it, the verifier compares on it.

    ``id`` is the hex SHA-256 of the canonical msgpack of ``{"name", "rule", "tokens", "version"}``, so it
    records the rule and every token, in order. Tokens are NFC strings with spaces spelled ``▁`` (the
    canonical spelling of ``owner._vocab``): a set that is not canonical is refused here, wherever it comes from.
    """

    name: str
    version: int
    rule: str
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not isinstance(self.rule, str) or not self.rule:
            raise MessageError("a probe set needs a non-empty name and rule")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 0:
            raise MessageError(f"probe set version must be a non-negative integer, got {self.version!r:.20}")
        if not isinstance(self.tokens, tuple) or not all(isinstance(t, str) and t for t in self.tokens):
            raise MessageError("probe tokens must be a tuple of non-empty strings")
        for t in self.tokens:
            if " " in t or not unicodedata.is_normalized("NFC", t):
                raise MessageError(f"probe token {t!r:.40} is not canonical (NFC, spaces spelled '▁')")
        if len(set(self.tokens)) != len(self.tokens):
            raise MessageError(f"probe set {self.name!r:.40} repeats a token")

    def __len__(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def id(self) -> str:
        return sha256_hex(encode(self.to_map()))

    def to_map(self) -> dict[str, object]:
        return {"name": self.name, "rule": self.rule, "tokens": list(self.tokens), "version": self.version}

    @classmethod
    def from_map(cls, value: object, what: str = "probe set") -> ProbeSpec:
        f = _Fields(value, what, ("name", "rule", "tokens", "version"))
        tokens = f.items("tokens")
        if not all(isinstance(t, str) for t in tokens):
            raise MessageError(f"{what}.tokens: expected a list of strings")
        return _parse(what, cls, f.text("name"), f.integer("version"), f.text("rule"), tuple(tokens))


# ----------------------------------------------------------------------------------------- challenge
@dataclass(frozen=True)
class SubmissionLimits:
    """What a verifier accepts in one submission; announced in the challenge, enforced on the stream."""

    max_manifest_bytes: int = 4 * 1024 * 1024
    max_tensors: int = 1024
    max_tensor_bytes: int = 256 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    max_chunk_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_manifest_bytes", "max_tensors", "max_tensor_bytes", "max_total_bytes", "max_chunk_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MessageError(f"limits.{name} must be a positive integer, got {value!r:.20}")

    def to_map(self) -> dict[str, object]:
        return {
            "max_chunk_bytes": self.max_chunk_bytes,
            "max_manifest_bytes": self.max_manifest_bytes,
            "max_tensor_bytes": self.max_tensor_bytes,
            "max_tensors": self.max_tensors,
            "max_total_bytes": self.max_total_bytes,
        }

    @classmethod
    def from_map(cls, value: object, what: str = "limits") -> SubmissionLimits:
        keys = ("max_chunk_bytes", "max_manifest_bytes", "max_tensor_bytes", "max_tensors", "max_total_bytes")
        f = _Fields(value, what, keys)
        return _parse(what, cls, *(f.integer(k, minimum=1) for k in (
            "max_manifest_bytes", "max_tensors", "max_tensor_bytes", "max_total_bytes", "max_chunk_bytes")))


@dataclass(frozen=True)
class RegistryState:
    """Which registry a comparison used: its number of entries and the Merkle root over their digests."""

    size: int
    root: bytes

    def __post_init__(self) -> None:
        _check_count("registry.size", self.size)
        _check_digest("registry.root", self.root)

    def to_map(self) -> dict[str, object]:
        return {"root": self.root, "size": self.size}

    @classmethod
    def from_map(cls, value: object, what: str = "registry") -> RegistryState:
        f = _Fields(value, what, ("root", "size"))
        return cls(f.integer("size"), f.raw("root", DIGEST_SIZE))


# The sketch sizes a message may name (issue 16): a sketch below 16 loses the verdict (docs/results/sketches.md),
# and one as large as a model's width discloses its weight products whole (protocol._sketch).
SKETCH_MIN, SKETCH_MAX = 16, 1024
# The size a verifier asks for unless told otherwise: the smallest that kept every verdict of the default-scale
# zoo (docs/results/sketches.md, docs/results/sketch_null.md).
DEFAULT_SKETCH = 256


def check_sketch_size(value: object, what: str) -> None:
    """``value`` is 0 (no sketch) or an integer sketch size in ``[SKETCH_MIN, SKETCH_MAX]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{what} must be an integer, got {type(value).__name__}")
    if value != 0 and not SKETCH_MIN <= value <= SKETCH_MAX:
        raise MessageError(f"{what} must be 0 (no sketch) or between {SKETCH_MIN} and {SKETCH_MAX}, got {value}")


def _sketch_field(f: _Fields, present: bool) -> int:
    """An optional ``sketch`` field: present only when nonzero (one encoding per value)."""
    if not present:
        return 0
    k = f.integer("sketch", minimum=SKETCH_MIN)
    if k > SKETCH_MAX:
        raise MessageError(f"{f.what}.sketch: must be at most {SKETCH_MAX}, got {k}")
    return k


@dataclass(frozen=True)
class Challenge:
    """The verifier's signed challenge. ``layers`` is a layer policy (``"last2"``, ``"all"`` or indices)."""

    KIND: ClassVar[str] = "challenge"

    verifier_key_id: str
    nonce: bytes
    issued_at: int
    expires_at: int
    probe_sets: tuple[ProbeSpec, ...]
    layers: str
    method: str
    limits: SubmissionLimits
    registry: RegistryState
    version: int = MESSAGE_VERSION
    # 0: send the terms; k: send each term's public k x k sketch (issue 16). The verifier chooses; absent from
    # the map when 0.
    sketch: int = 0

    def __post_init__(self) -> None:
        _check_key_id("challenge.verifier_key_id", self.verifier_key_id)
        check_sketch_size(self.sketch, "challenge.sketch")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise MessageError(f"challenge.nonce must be {NONCE_SIZE} bytes")
        _check_count("challenge.issued_at", self.issued_at)
        _check_count("challenge.expires_at", self.expires_at)
        if self.expires_at <= self.issued_at:
            raise MessageError("challenge expires before it is issued")
        if len({p.id for p in self.probe_sets}) != len(self.probe_sets):
            raise MessageError("challenge lists a probe set twice")
        if self.version != MESSAGE_VERSION:
            raise MessageError(f"unsupported challenge version {self.version!r:.20}")

    def to_map(self) -> dict[str, object]:
        return {
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "layers": self.layers,
            "limits": self.limits.to_map(),
            "method": self.method,
            "nonce": self.nonce,
            "probe_sets": [p.to_map() for p in self.probe_sets],
            "registry": self.registry.to_map(),
            "verifier_key_id": self.verifier_key_id,
            "version": self.version,
            **({"sketch": self.sketch} if self.sketch else {}),
        }

    @classmethod
    def from_map(cls, value: object) -> Challenge:
        what = "challenge"
        sketched = isinstance(value, dict) and "sketch" in value
        f = _Fields(value, what, (
            "expires_at", "issued_at", "layers", "limits", "method", "nonce", "probe_sets", "registry",
            "verifier_key_id", "version", *(("sketch",) if sketched else ())), versioned=True)
        probe_sets = tuple(
            ProbeSpec.from_map(p, f"{what}.probe_sets[{i}]") for i, p in enumerate(f.items("probe_sets"))
        )
        return _parse(what, cls,
            f.key_id("verifier_key_id"), f.raw("nonce", NONCE_SIZE), f.integer("issued_at"), f.integer("expires_at"),
            probe_sets, f.text("layers"), f.text("method"), SubmissionLimits.from_map(f.value["limits"]),
            RegistryState.from_map(f.value["registry"]), MESSAGE_VERSION, _sketch_field(f, sketched),
        )


# ------------------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class TermGroup:
    """Terms computed on one probe set: which of its tokens the model has, the layers and the method.

    The group's tensors are named ``g<index>.layer<L>.<term>`` for each layer, then each term, in order; each
    is an F32 ``m x m`` matrix with ``m`` the number of probe tokens present.
    """

    probe_set: ProbeSpec
    present: tuple[bool, ...]
    layers: tuple[int, ...]
    method: str
    method_id: str
    terms: tuple[str, ...]
    # 0: the terms themselves (``m x m``); k: each term's public sketch (``k x k``, ``protocol._sketch``), as
    # the challenge asked (issue 16). Absent from the map when 0, so full-term messages keep their bytes.
    sketch: int = 0

    def __post_init__(self) -> None:
        check_sketch_size(self.sketch, "group.sketch")
        if not isinstance(self.present, tuple) or not all(isinstance(p, bool) for p in self.present):
            raise MessageError("group.present must be a tuple of booleans")
        if len(self.present) != len(self.probe_set.tokens):
            raise MessageError(
                f"group.present has {len(self.present)} entries for {len(self.probe_set.tokens)} probe tokens"
            )
        if not isinstance(self.layers, tuple) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in self.layers
        ):
            raise MessageError("group.layers must be a tuple of non-negative integers")
        if list(self.layers) != sorted(set(self.layers)):
            raise MessageError("group.layers must be strictly increasing")
        if not isinstance(self.terms, tuple) or not all(isinstance(t, str) and t for t in self.terms):
            raise MessageError("group.terms must be a tuple of term names")
        if len(set(self.terms)) != len(self.terms):
            raise MessageError("group.terms repeats a term")
        for name in ("method", "method_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise MessageError(f"group.{name} must be a non-empty string")

    @property
    def rows(self) -> int:
        """``m``, the number of probe tokens present (the side of every term matrix of a full-term group)."""
        return sum(self.present)

    @property
    def comparison_id(self) -> str:
        """What the scores of this group are comparable with, and the null that judges them: the method id,
        with the sketch size for a sketched group (``<method_id>+sketch/<k>``)."""
        return f"{self.method_id}+sketch/{self.sketch}" if self.sketch else self.method_id

    @property
    def side(self) -> int:
        """The side of every term matrix of this group: ``m``, or the sketch size ``k`` of a sketched group."""
        return self.sketch or self.rows

    def term_keys(self) -> list[tuple[int, str]]:
        """``(layer, term)`` of every term matrix, in the order the group's tensors are named and sent."""
        return [(layer, term) for layer in self.layers for term in self.terms]

    def tensor_names(self, index: int) -> list[str]:
        return [tensor_name(index, layer, term) for layer, term in self.term_keys()]

    def to_map(self) -> dict[str, object]:
        return {
            "layers": list(self.layers),
            "method": self.method,
            "method_id": self.method_id,
            "present": list(self.present),
            "probe_set": self.probe_set.to_map(),
            "terms": list(self.terms),
            **({"sketch": self.sketch} if self.sketch else {}),
        }

    @classmethod
    def from_map(cls, value: object, what: str = "group") -> TermGroup:
        sketched = isinstance(value, dict) and "sketch" in value
        f = _Fields(value, what, ("layers", "method", "method_id", "present", "probe_set", "terms",
                                  *(("sketch",) if sketched else ())))
        present, layers, terms = f.items("present"), f.items("layers"), f.items("terms")
        if not all(isinstance(p, bool) for p in present):
            raise MessageError(f"{what}.present: expected a list of booleans")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise MessageError(f"{what}.layers: expected a list of integers")
        if not all(isinstance(t, str) for t in terms):
            raise MessageError(f"{what}.terms: expected a list of strings")
        return _parse(what, cls,
            ProbeSpec.from_map(f.value["probe_set"], f"{what}.probe_set"), tuple(present), tuple(layers),
            f.text("method"), f.text("method_id"), tuple(terms), _sketch_field(f, sketched),
        )


def tensor_name(group: int, layer: int, term: str) -> str:
    """The name of one term tensor in manifests and bundles."""
    return f"g{group}.layer{layer}.{term}"


@dataclass(frozen=True)
class WeightCommitment:
    """The Merkle root over every checkpoint tensor (``protocol.weight_commitment``), with its id and size."""

    root: bytes
    tensors: int
    total_bytes: int
    id: str = WEIGHT_COMMITMENT_ID

    def __post_init__(self) -> None:
        _check_digest("weight_commitment.root", self.root)
        _check_count("weight_commitment.tensors", self.tensors)
        _check_count("weight_commitment.total_bytes", self.total_bytes)
        if not isinstance(self.id, str) or not self.id:
            raise MessageError("weight_commitment.id must be a non-empty string")

    def to_map(self) -> dict[str, object]:
        return {"id": self.id, "root": self.root, "tensors": self.tensors, "total_bytes": self.total_bytes}

    @classmethod
    def from_map(cls, value: object, what: str = "weight_commitment") -> WeightCommitment:
        f = _Fields(value, what, ("id", "root", "tensors", "total_bytes"))
        return cls(f.raw("root", DIGEST_SIZE), f.integer("tensors"), f.integer("total_bytes"), f.text("id"))


def _digest_map(d: TensorDigest) -> dict[str, object]:
    return {"dtype": d.dtype, "name": d.name, "sha256": d.sha256, "shape": list(d.shape)}


def _digest_from_map(value: object, what: str) -> TensorDigest:
    f = _Fields(value, what, ("dtype", "name", "sha256", "shape"))
    shape = f.items("shape")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in shape):
        raise MessageError(f"{what}.shape: expected a list of integers")
    return _parse(what, TensorDigest,
                  f.text("name"), f.text("dtype"), tuple(shape), f.raw("sha256", DIGEST_SIZE))


@dataclass(frozen=True)
class PublisherSignature:
    """A publisher's OpenSSF ``model_signing`` signature of the model's files, as the owner's agent verified it.

    What it claims: the owner's agent verified this signature (``model_signing``'s own verification, under the
    publisher's key ``signer``) over the model's files, and every file whose tensors the manifest's weight
    commitment covers is one of the ``files`` it signs. The verifier cannot check that (it never sees a file):
    it copies the statement into the receipt as the owner signed it. Anyone holding the model files and the
    signature file can check both again (``pawprint bundle verify BUNDLE --model MODEL --model-signature SIG
    --signature-key PEM``).

    - ``format``: ``"model_signing/v1"`` (a key-based ``model_signing`` signature, a Sigstore bundle holding a
      DSSE envelope over an in-toto statement);
    - ``bundle_sha256``: SHA-256 of the signature file's bytes;
    - ``signer``: the verifying key's id, the hex SHA-256 of its public key (DER SubjectPublicKeyInfo);
    - ``files``: how many files the signature signs (at least one);
    - ``statement_sha256``: SHA-256 of the in-toto statement (the DSSE payload) the signature signs.
    """

    format: str
    bundle_sha256: bytes
    signer: str
    files: int
    statement_sha256: bytes

    def __post_init__(self) -> None:
        what = "publisher_signature"
        if not isinstance(self.format, str) or self.format not in PUBLISHER_SIGNATURE_FORMATS:
            raise MessageError(f"{what}.format: {self.format!r:.40} is not a known signature format "
                               f"({', '.join(PUBLISHER_SIGNATURE_FORMATS)})")
        _check_digest(f"{what}.bundle_sha256", self.bundle_sha256)
        _check_key_id(f"{what}.signer", self.signer)
        _check_count(f"{what}.files", self.files)
        if self.files < 1:
            raise MessageError(f"{what}.files: a signature signs at least one file")
        _check_digest(f"{what}.statement_sha256", self.statement_sha256)

    def to_map(self) -> dict[str, object]:
        return {"bundle_sha256": self.bundle_sha256, "files": self.files, "format": self.format,
                "signer": self.signer, "statement_sha256": self.statement_sha256}

    @classmethod
    def from_map(cls, value: object, what: str = "publisher_signature") -> PublisherSignature:
        f = _Fields(value, what, ("bundle_sha256", "files", "format", "signer", "statement_sha256"))
        return _parse(what, cls, f.text("format"), f.raw("bundle_sha256", DIGEST_SIZE), f.key_id("signer"),
                      f.integer("files", minimum=1), f.raw("statement_sha256", DIGEST_SIZE))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {"format": self.format, "bundle_sha256": self.bundle_sha256.hex(), "signer": self.signer,
                "files": self.files, "statement_sha256": self.statement_sha256.hex(),
                "verified_by": "the owner's agent (the verifier sees no file)"}


@dataclass(frozen=True)
class Manifest:
    """What the owner's agent computed, without a single weight: see the module docstring.

    ``model`` holds the model's shape facts (family, layer count, widths, vocabulary size, format) as strings,
    integers and booleans. ``keep_invariants`` asks the verifier to keep the terms after the verdict.
    """

    owner_key_id: str
    nonce: bytes | None
    created_at: int
    agent: str
    model: Mapping[str, Scalar] = field(hash=False)
    groups: tuple[TermGroup, ...]
    tensors: tuple[TensorDigest, ...]
    weight_commitment: WeightCommitment
    keep_invariants: bool = False
    version: int = MESSAGE_VERSION
    display_name: str | None = None  # the owner's name for the model: asserted, not verified; absent if none
    # A publisher's model_signing signature of the committed files, verified by the owner's agent; absent if none
    publisher_signature: PublisherSignature | None = None
    # Chunks of the committed weights opened against a weights-v2 commitment (protocol._possession); absent if none
    possession: PossessionProof | None = None

    def __post_init__(self) -> None:
        _check_key_id("manifest.owner_key_id", self.owner_key_id)
        if self.possession is not None and not isinstance(self.possession, PossessionProof):
            raise MessageError("manifest.possession must be a PossessionProof or absent")
        if self.display_name is not None:
            check_display_name(self.display_name, "manifest.display_name")
        if self.publisher_signature is not None and not isinstance(self.publisher_signature, PublisherSignature):
            raise MessageError("manifest.publisher_signature must be a PublisherSignature or absent")
        if self.nonce is not None and (not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE):
            raise MessageError(f"manifest.nonce must be {NONCE_SIZE} bytes or absent")
        _check_count("manifest.created_at", self.created_at)
        if not isinstance(self.agent, str) or not self.agent:
            raise MessageError("manifest.agent must be a non-empty string")
        if not isinstance(self.model, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in self.model.items()
        ):
            raise MessageError("manifest.model must map strings to strings, integers or booleans")
        if not isinstance(self.keep_invariants, bool):
            raise MessageError("manifest.keep_invariants must be true or false")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise MessageError("manifest.tensors lists a tensor twice")
        if self.version != MESSAGE_VERSION:
            raise MessageError(f"unsupported manifest version {self.version!r:.20}")

    @property
    def term_bytes(self) -> int:
        """Total bytes of the term tensors the manifest announces (as their dtypes and shapes say)."""
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n * dtype_itemsize(t.dtype)
        return total

    def check_terms(self) -> None:
        """The tensor table must be exactly the groups' terms, in order, each F32 ``m x m``.

        Kept out of ``__post_init__`` so that a malformed table can be built, signed and shown to be refused.
        """
        expected: list[tuple[str, tuple[int, ...]]] = []
        for i, group in enumerate(self.groups):
            expected += [(name, (group.side, group.side)) for name in group.tensor_names(i)]
        if [t.name for t in self.tensors] != [name for name, _ in expected]:
            raise MessageError("manifest.tensors does not list the groups' terms in order (g<i>.layer<L>.<term>)")
        for t, (_, shape) in zip(self.tensors, expected, strict=True):
            if t.dtype != "F32":
                raise MessageError(f"term {t.name}: dtype {t.dtype}, expected F32")
            if t.shape != shape:
                raise MessageError(f"term {t.name}: shape {list(t.shape)}, expected {list(shape)}")

    def to_map(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "created_at": self.created_at,
            "groups": [g.to_map() for g in self.groups],
            "keep_invariants": self.keep_invariants,
            "model": dict(self.model),
            "nonce": self.nonce,
            "owner_key_id": self.owner_key_id,
            "tensors": [_digest_map(t) for t in self.tensors],
            "version": self.version,
            "weight_commitment": self.weight_commitment.to_map(),
            # Absent rather than nil when there is none: one encoding per value, and a manifest without a name
            # keeps the bytes (so the signature and digest) it had before names existed.
            **({} if self.display_name is None else {"display_name": self.display_name}),
            **({} if self.publisher_signature is None else {"publisher_signature": self.publisher_signature.to_map()}),
            **({} if self.possession is None else {"possession": self.possession.to_map()}),
        }

    def encode(self) -> bytes:
        return encode(self.to_map())

    @classmethod
    def from_map(cls, value: object) -> Manifest:
        what = "manifest"
        named = isinstance(value, dict) and "display_name" in value
        published = isinstance(value, dict) and "publisher_signature" in value
        possessed = isinstance(value, dict) and "possession" in value
        f = _Fields(value, what, (
            "agent", "created_at", "groups", "keep_invariants", "model", "nonce", "owner_key_id", "tensors",
            "version", "weight_commitment", *(("display_name",) if named else ()),
            *(("publisher_signature",) if published else ()), *(("possession",) if possessed else ())),
            versioned=True)
        model = f.value["model"]
        if not isinstance(model, dict):
            raise MessageError(f"{what}.model: expected a map")
        groups = tuple(TermGroup.from_map(g, f"{what}.groups[{i}]") for i, g in enumerate(f.items("groups")))
        tensors = tuple(_digest_from_map(t, f"{what}.tensors[{i}]") for i, t in enumerate(f.items("tensors")))
        return _parse(what, cls,
            f.key_id("owner_key_id"), f.optional_bytes("nonce", NONCE_SIZE), f.integer("created_at"), f.text("agent"),
            model, groups, tensors, WeightCommitment.from_map(f.value["weight_commitment"]),
            f.flag("keep_invariants"), MESSAGE_VERSION,
            f.text("display_name") if named else None,
            PublisherSignature.from_map(f.value["publisher_signature"], f"{what}.publisher_signature")
            if published else None,
            _parse(f"{what}.possession", PossessionProof.from_map, f.value["possession"]) if possessed else None,
        )

    @classmethod
    def decode(cls, data: bytes, limits: Limits | None = None) -> Manifest:
        return cls.from_map(decode_map(data, limits=limits or Limits()))


# ------------------------------------------------------------------------------------------- signing
@dataclass(frozen=True)
class SignedMessage:
    """Canonical payload bytes, the signature over them under some kind, and the signer's public key."""

    payload: bytes
    signature: bytes
    public_key: PublicKey

    def check(self, kind: str, expected: PublicKey | None = None) -> None:
        """``SignatureError`` unless the signature is good for ``kind`` (and the key is ``expected``, if given)."""
        if expected is not None and expected.raw != self.public_key.raw:
            raise SignatureError("signature verification failed")
        verify(self.public_key, kind, self.payload, self.signature)

    def to_bytes(self, fmt: str) -> bytes:
        """A file holding this signed message (``fmt`` is e.g. ``RECEIPT_FORMAT``)."""
        return encode({"format": fmt, "payload": self.payload, "public_key": self.public_key.raw,
                       "signature": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes, fmt: str) -> SignedMessage:
        f = _Fields(decode_map(data), fmt, ("format", "payload", "public_key", "signature"))
        if f.value["format"] != fmt:
            raise MessageError(f"not a {fmt} file (format {f.value['format']!r:.40})")
        return cls(f.raw("payload"), f.raw("signature"), _parse(fmt, PublicKey, f.raw("public_key")))


def sign_message(message: Challenge | Manifest | Receipt, key: PrivateKey, kind: str | None = None) -> SignedMessage:
    """Encode ``message`` canonically and sign it under ``kind`` (default: the message's own kind; a manifest
    must say which of ``ONLINE_MANIFEST_KIND`` and ``OFFLINE_MANIFEST_KIND`` it is)."""
    if kind is None:
        if isinstance(message, Manifest):
            raise MessageError("a manifest is signed as 'manifest' (online) or 'bundle' (offline): pass kind")
        kind = message.KIND
    payload = encode(message.to_map())
    return SignedMessage(payload, key.sign(kind, payload), key.public_key)


def open_challenge(signed: SignedMessage, verifier_key: PublicKey) -> Challenge:
    """The challenge, after checking it is signed by ``verifier_key`` and names it."""
    signed.check(Challenge.KIND, verifier_key)
    challenge = Challenge.from_map(decode_map(signed.payload))
    if challenge.verifier_key_id != verifier_key.key_id:
        raise MessageError("the challenge names another verifier key than the one that signed it")
    return challenge


def open_manifest(signed: SignedMessage, kind: str, limits: Limits | None = None) -> Manifest:
    """The manifest, after checking the signature (under ``kind``) by the key it names as the owner's.

    Only the signature is checked here: whether the key is trusted is the caller's question.
    """
    if kind not in (ONLINE_MANIFEST_KIND, OFFLINE_MANIFEST_KIND):
        raise MessageError(f"a manifest is signed as {ONLINE_MANIFEST_KIND!r} or {OFFLINE_MANIFEST_KIND!r}")
    signed.check(kind)
    manifest = Manifest.decode(signed.payload, limits)
    if manifest.owner_key_id != signed.public_key.key_id:
        raise MessageError("the manifest names another owner key than the one that signed it")
    return manifest


def open_receipt(signed: SignedMessage, verifier_key: PublicKey) -> Receipt:
    """The receipt, after checking it is signed by ``verifier_key`` and names it."""
    signed.check(Receipt.KIND, verifier_key)
    receipt = Receipt.from_map(decode_map(signed.payload))
    if receipt.verifier_key_id != verifier_key.key_id:
        raise MessageError("the receipt names another verifier key than the one that signed it")
    return receipt


# --------------------------------------------------------------------------------------------- bundle
@dataclass(frozen=True)
class Bundle:
    """A signed manifest (offline: kind ``bundle``; no nonce), its owner's public key and the term tensors.

    ``open`` checks the signature and that the terms are exactly the manifest's table (names, dtypes, shapes,
    SHA-256); whether the key is trusted, and whether the terms are finite, is for the caller to check.
    """

    signed: SignedMessage
    terms: Mapping[str, Tensor] = field(hash=False)

    @classmethod
    def create(cls, manifest: Manifest, terms: Mapping[str, Tensor], key: PrivateKey) -> Bundle:
        if manifest.nonce is not None:
            raise MessageError("an offline bundle's manifest answers no challenge: its nonce must be absent")
        return cls(sign_message(manifest, key, OFFLINE_MANIFEST_KIND), dict(terms))

    @property
    def manifest_digest(self) -> bytes:
        """SHA-256 of the manifest's canonical bytes: the bundle's name in registries and receipts."""
        return sha256(self.signed.payload)

    def open(self) -> Manifest:
        manifest = open_manifest(self.signed, OFFLINE_MANIFEST_KIND, BUNDLE_LIMITS)
        if manifest.nonce is not None:
            raise MessageError("an offline bundle must not carry a challenge nonce")
        manifest.check_terms()
        check_tensors(manifest, self.terms)
        return manifest

    def to_bytes(self) -> bytes:
        """The bundle file's bytes, all in memory; ``protocol.write_bundle`` writes the same bytes to a file
        streamed (each term written from its own buffer), which is what to use for a bundle of real size."""
        return encode({
            "format": BUNDLE_FORMAT,
            "manifest": self.signed.payload,
            "public_key": self.signed.public_key.raw,
            "signature": self.signed.signature,
            "terms": {name: t.to_map() for name, t in self.terms.items()},
        })

    @classmethod
    def from_bytes(cls, data: bytes, limits: Limits = BUNDLE_LIMITS) -> Bundle:
        what = "bundle"
        f = _Fields(decode_map(data, limits=limits), what, ("format", "manifest", "public_key", "signature", "terms"))
        if f.value["format"] != BUNDLE_FORMAT:
            raise MessageError(f"not a bundle file (format {f.value['format']!r:.40}, expected {BUNDLE_FORMAT})")
        terms_map = f.value["terms"]
        if not isinstance(terms_map, dict):
            raise MessageError(f"{what}.terms: expected a map")
        terms = {name: _parse(f"{what}.terms[{name!r:.40}]", Tensor.from_map, t) for name, t in terms_map.items()}
        key = _parse(what, PublicKey, f.raw("public_key"))
        return cls(SignedMessage(f.raw("manifest"), f.raw("signature"), key), terms)


def check_tensors(manifest: Manifest, terms: Mapping[str, Tensor]) -> None:
    """The terms must be exactly the manifest's tensor table: same names, dtypes, shapes and SHA-256."""
    if set(terms) != {t.name for t in manifest.tensors}:
        raise MessageError("the bundle's terms are not exactly the tensors its manifest lists")
    for entry in manifest.tensors:
        t = terms[entry.name]
        if t.dtype != entry.dtype or t.shape != entry.shape:
            raise MessageError(f"term {entry.name}: {t.dtype} {list(t.shape)} does not match the manifest")
        if sha256(t.data) != entry.sha256:
            raise MessageError(f"term {entry.name}: bytes do not match the manifest's SHA-256")


# -------------------------------------------------------------------------------------------- receipt
PICTURE_DIM = 512


@dataclass(frozen=True)
class Picture:
    """A model's terms encoded as a vector (``PICTURE_DIM`` little-endian float32) and the dog drawn from it.

    ``vector_digest`` is the SHA-256 of ``vector``; ``picture_digest`` the SHA-256 of the PNG the renderer
    ``renderer_id`` draws from it (deterministic, so anyone can redraw the picture and check it).
    """

    encoder_id: str
    renderer_id: str
    vector: bytes
    vector_digest: bytes
    picture_digest: bytes

    def __post_init__(self) -> None:
        for what, v in (("picture.encoder_id", self.encoder_id), ("picture.renderer_id", self.renderer_id)):
            if not isinstance(v, str) or not 0 < len(v) <= 200:
                raise MessageError(f"{what} must be a short non-empty string")
        if not isinstance(self.vector, bytes) or len(self.vector) != 4 * PICTURE_DIM:
            raise MessageError(f"picture.vector must be {PICTURE_DIM} float32 values ({4 * PICTURE_DIM} bytes)")
        if not all(math.isfinite(x) for x in struct.unpack(f"<{PICTURE_DIM}f", self.vector)):
            raise MessageError("picture.vector has a non-finite value")
        _check_digest("picture.vector_digest", self.vector_digest)
        _check_digest("picture.picture_digest", self.picture_digest)
        if sha256(self.vector) != self.vector_digest:
            raise MessageError("picture.vector_digest is not the SHA-256 of picture.vector")

    def to_map(self) -> dict[str, object]:
        return {"encoder_id": self.encoder_id, "picture_digest": self.picture_digest,
                "renderer_id": self.renderer_id, "vector": self.vector, "vector_digest": self.vector_digest}

    @classmethod
    def from_map(cls, value: object, what: str = "picture") -> Picture:
        f = _Fields(value, what, ("encoder_id", "picture_digest", "renderer_id", "vector", "vector_digest"))
        return _parse(what, cls, f.text("encoder_id"), f.text("renderer_id"), f.raw("vector", 4 * PICTURE_DIM),
                      f.raw("vector_digest", DIGEST_SIZE), f.raw("picture_digest", DIGEST_SIZE))

    def as_dict(self) -> dict[str, Any]:
        return {"encoder_id": self.encoder_id, "renderer_id": self.renderer_id,
                "vector_digest": self.vector_digest.hex(), "picture_digest": self.picture_digest.hex()}


@dataclass(frozen=True)
class TermScoreRecord:
    """One term's cosine between the submission (``layer``) and a base (``base_layer``)."""

    layer: int
    base_layer: int
    term: str
    cosine: str
    z: str | None = None  # against the verdict's null (absent when no null was used)

    def __post_init__(self) -> None:
        _check_count("score.layer", self.layer)
        _check_count("score.base_layer", self.base_layer)
        parse_score(self.cosine)
        if self.z is not None:
            check_z(self.z, "score.z")

    def to_map(self) -> dict[str, object]:
        return {"base_layer": self.base_layer, "cosine": self.cosine, "layer": self.layer, "term": self.term,
                **({} if self.z is None else {"z": self.z})}

    @classmethod
    def from_map(cls, value: object, what: str = "score") -> TermScoreRecord:
        has_z = isinstance(value, dict) and "z" in value
        f = _Fields(value, what, ("base_layer", "cosine", "layer", "term", *(("z",) if has_z else ())))
        return _parse(what, cls, f.integer("layer"), f.integer("base_layer"), f.text("term"), f.text("cosine"),
                      f.text("z") if has_z else None)


@dataclass(frozen=True)
class Match:
    """The comparison of the submission with one registered base: ICS, the weakest term, every term."""

    name: str
    entry: bytes  # the base's manifest digest
    vendor_key_id: str
    probe_set_id: str
    ics: str
    min_term: str
    common_probe_tokens: int
    verdict: str
    terms: tuple[TermScoreRecord, ...]
    log_index: int | None = None  # the base's entry in the registry log (None: compared outside a log)
    z: str | None = None  # combined z against the receipt's null (None: no calibrated verdict)
    p_value: str | None = None
    picture: Picture | None = None  # the base's encoded vector and dog

    def __post_init__(self) -> None:
        _check_digest("match.entry", self.entry)
        if (self.z is None) != (self.p_value is None):
            raise MessageError("match.z and match.p_value come together")
        if self.z is not None:
            check_z(self.z, "match.z")
            check_p(self.p_value, "match.p_value")
        if self.log_index is not None:
            _check_count("match.log_index", self.log_index)
        _check_key_id("match.vendor_key_id", self.vendor_key_id)
        parse_score(self.ics)
        parse_score(self.min_term)
        _check_count("match.common_probe_tokens", self.common_probe_tokens)
        if self.verdict not in MATCH_VERDICTS:
            raise MessageError(f"match.verdict must be one of {', '.join(MATCH_VERDICTS)}")

    def to_map(self) -> dict[str, object]:
        return {
            "common_probe_tokens": self.common_probe_tokens,
            "entry": self.entry,
            "ics": self.ics,
            "min_term": self.min_term,
            "name": self.name,
            "probe_set_id": self.probe_set_id,
            "terms": [t.to_map() for t in self.terms],
            "vendor_key_id": self.vendor_key_id,
            "verdict": self.verdict,
            # Absent rather than nil when there is none: one encoding per value, and receipts made before
            # the registry was a log still parse.
            **({} if self.log_index is None else {"log_index": self.log_index}),
            **({} if self.z is None else {"z": self.z, "p_value": self.p_value}),
            **({} if self.picture is None else {"picture": self.picture.to_map()}),
        }

    @classmethod
    def from_map(cls, value: object, what: str = "match") -> Match:
        indexed = isinstance(value, dict) and "log_index" in value
        calibrated = isinstance(value, dict) and ("z" in value or "p_value" in value)
        pictured = isinstance(value, dict) and "picture" in value
        f = _Fields(value, what, (
            "common_probe_tokens", "entry", "ics", "min_term", "name", "probe_set_id", "terms", "vendor_key_id",
            "verdict", *(("log_index",) if indexed else ()), *(("p_value", "z") if calibrated else ()),
            *(("picture",) if pictured else ())))
        terms = tuple(TermScoreRecord.from_map(t, f"{what}.terms[{i}]") for i, t in enumerate(f.items("terms")))
        log_index = f.integer("log_index") if indexed else None
        return _parse(what, cls,
            f.text("name"), f.raw("entry", DIGEST_SIZE), f.key_id("vendor_key_id"), f.text("probe_set_id"),
            f.text("ics"), f.text("min_term"), f.integer("common_probe_tokens"), f.text("verdict"), terms, log_index,
            f.text("z") if calibrated else None, f.text("p_value") if calibrated else None,
            Picture.from_map(f.value["picture"], f"{what}.picture") if pictured else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (scores as numbers)."""
        return {
            "name": self.name,
            "entry": self.entry.hex(),
            "vendor_key_id": self.vendor_key_id,
            "probe_set_id": self.probe_set_id,
            "ics": float(parse_score(self.ics)),
            "min_term": float(parse_score(self.min_term)),
            "common_probe_tokens": self.common_probe_tokens,
            "verdict": self.verdict,
            "z": None if self.z is None else float(self.z),
            "p_value": None if self.p_value is None else float(self.p_value),
            "picture": None if self.picture is None else self.picture.as_dict(),
            "log_index": self.log_index,
            "terms": [
                {"layer": t.layer, "base_layer": t.base_layer, "term": t.term, "cosine": float(parse_score(t.cosine)),
                 "z": None if t.z is None else float(t.z)}
                for t in self.terms
            ],
        }


@dataclass(frozen=True)
class Receipt:
    """The verifier's signed answer to one submission. ``submission`` is the SHA-256 of the manifest bytes."""

    KIND: ClassVar[str] = "receipt"

    verifier_key_id: str
    owner_key_id: str
    nonce: bytes
    submission: bytes
    weight_commitment: bytes
    registry: RegistryState
    compared: int
    matches: tuple[Match, ...]
    verdict: str
    verdict_rule: str
    method_ids: tuple[str, ...]
    issued_at: int
    kept_invariants: bool
    version: int = MESSAGE_VERSION
    checkpoint: str | None = None  # the registry log's signed checkpoint note the comparison used
    null_id: str | None = None  # the measured null the verdict was calibrated against
    picture: Picture | None = None  # the submission's encoded vector and dog
    # With a large registry the verifier screens every base on compact sketches and compares the candidates
    # exactly: ``screened`` bases were considered (the Bonferroni count), ``compared`` of them exactly, by the
    # rule ``screen_rule``. Absent when every base was compared exactly.
    screened: int | None = None
    screen_rule: str | None = None
    # The submitted manifest's ``display_name``, copied as the owner signed it: asserted, not verified. Absent
    # when the manifest had none.
    model_name: str | None = None
    # The submitted manifest's ``publisher_signature``, copied as the owner signed it: the owner's agent verified
    # it over the model's files; the verifier, which sees no file, did not. Absent when the manifest had none.
    publisher_signature: PublisherSignature | None = None
    # What stands behind the receipt (``ASSURANCE_LEVELS``). Absent in receipts issued before levels were stated,
    # which read as ``owner-attested`` (``assurance_level``).
    assurance: str | None = None
    # The verifier's evidence checks that failed (one line each); the verdict is ``insufficient-evidence``
    # exactly when there is one. Absent (empty) when every check passed.
    evidence: tuple[str, ...] = ()
    # Set when the owner showed it holds the committed weights (chunks opened against a weights-v2 commitment and
    # checked by this verifier, protocol._possession): "<possession id>;openings=<k>;chunk=<bytes>". Absent when
    # not shown.
    possession: str | None = None

    def __post_init__(self) -> None:
        _check_key_id("receipt.verifier_key_id", self.verifier_key_id)
        if self.possession is not None and (not isinstance(self.possession, str)
                                            or not 0 < len(self.possession) <= 300):
            raise MessageError("receipt.possession must be a short string or absent")
        if self.assurance is not None and self.assurance not in ASSURANCE_LEVELS:
            raise MessageError(f"receipt.assurance must be one of {', '.join(ASSURANCE_LEVELS)} or absent")
        if not isinstance(self.evidence, tuple) or len(self.evidence) > MAX_EVIDENCE_FINDINGS or not all(
            isinstance(e, str) and 0 < len(e) <= MAX_FINDING_CHARS for e in self.evidence
        ):
            raise MessageError(f"receipt.evidence must be at most {MAX_EVIDENCE_FINDINGS} short non-empty strings")
        if bool(self.evidence) != (self.verdict == INSUFFICIENT_EVIDENCE):
            raise MessageError(f"receipt.verdict is {INSUFFICIENT_EVIDENCE} exactly when receipt.evidence "
                               "names a failed check")
        if self.model_name is not None:
            check_display_name(self.model_name, "receipt.model_name")
        if self.publisher_signature is not None and not isinstance(self.publisher_signature, PublisherSignature):
            raise MessageError("receipt.publisher_signature must be a PublisherSignature or absent")
        if (self.screened is None) != (self.screen_rule is None):
            raise MessageError("receipt.screened and receipt.screen_rule come together")
        if self.screened is not None:
            _check_count("receipt.screened", self.screened)
            if self.screened < self.compared:
                raise MessageError("receipt.screened cannot be fewer than the bases compared")
            if not isinstance(self.screen_rule, str) or not 0 < len(self.screen_rule) <= 200:
                raise MessageError("receipt.screen_rule must be a short string")
        if self.null_id is not None and (not isinstance(self.null_id, str) or not 0 < len(self.null_id) <= 200):
            raise MessageError("receipt.null_id must be a short string or absent")
        _check_key_id("receipt.owner_key_id", self.owner_key_id)
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise MessageError(f"receipt.nonce must be {NONCE_SIZE} bytes")
        _check_digest("receipt.submission", self.submission)
        _check_digest("receipt.weight_commitment", self.weight_commitment)
        _check_count("receipt.compared", self.compared)
        _check_count("receipt.issued_at", self.issued_at)
        if self.verdict not in VERDICTS:
            raise MessageError(f"receipt.verdict must be one of {', '.join(VERDICTS)}")
        if not isinstance(self.kept_invariants, bool):
            raise MessageError("receipt.kept_invariants must be true or false")
        if self.version != MESSAGE_VERSION:
            raise MessageError(f"unsupported receipt version {self.version!r:.20}")
        if self.checkpoint is not None:
            self._check_checkpoint(self.checkpoint)

    def _check_checkpoint(self, note: str) -> None:
        """The checkpoint must be a well-formed note of exactly the registry state the receipt names, and every
        match's log index must fall inside it. Its log signature is checked by whoever holds the log's key."""
        if not isinstance(note, str):
            raise MessageError("receipt.checkpoint must be a checkpoint note (text) or absent")
        try:
            cp = parse_checkpoint(note).checkpoint
        except FormatError as e:
            raise MessageError(f"receipt.checkpoint: {e}") from e
        if cp.size != self.registry.size or cp.root != self.registry.root:
            raise MessageError("receipt.checkpoint does not match the registry state the receipt names")
        for m in self.matches:
            if m.log_index is None or m.log_index >= cp.size:
                raise MessageError(f"match {m.name!r:.40}: no log index inside the receipt's checkpoint")

    @property
    def assurance_level(self) -> str:
        """The receipt's assurance level; ``owner-attested`` for a receipt issued before levels were stated."""
        return self.assurance if self.assurance is not None else OWNER_ATTESTED

    @property
    def commitment_claim(self) -> str:
        """Whose claim the weight commitment is, in words (and, for an owner's claim, whether possession was shown)."""
        if self.assurance_level == OWNER_ATTESTED and self.possession is not None:
            return COMMITMENT_CLAIMS[OWNER_ATTESTED_POSSESSION]
        return COMMITMENT_CLAIMS[self.assurance_level]

    @property
    def signed_checkpoint(self) -> SignedCheckpoint | None:
        """The parsed checkpoint note (signatures unchecked), if the receipt carries one."""
        return None if self.checkpoint is None else parse_checkpoint(self.checkpoint)

    def to_map(self) -> dict[str, object]:
        return {
            "compared": self.compared,
            "issued_at": self.issued_at,
            "kept_invariants": self.kept_invariants,
            "matches": [m.to_map() for m in self.matches],
            "method_ids": list(self.method_ids),
            "nonce": self.nonce,
            "owner_key_id": self.owner_key_id,
            "registry": self.registry.to_map(),
            "submission": self.submission,
            "verdict": self.verdict,
            "verdict_rule": self.verdict_rule,
            "verifier_key_id": self.verifier_key_id,
            "version": self.version,
            "weight_commitment": self.weight_commitment,
            **({} if self.checkpoint is None else {"checkpoint": self.checkpoint}),  # absent, as Match.log_index
            **({} if self.null_id is None else {"null_id": self.null_id}),
            **({} if self.picture is None else {"picture": self.picture.to_map()}),
            **({} if self.screened is None else {"screened": self.screened, "screen_rule": self.screen_rule}),
            **({} if self.model_name is None else {"model_name": self.model_name}),
            **({} if self.publisher_signature is None else {"publisher_signature": self.publisher_signature.to_map()}),
            **({} if self.assurance is None else {"assurance": self.assurance}),
            **({"evidence": list(self.evidence)} if self.evidence else {}),
            **({} if self.possession is None else {"possession": self.possession}),
        }

    @classmethod
    def from_map(cls, value: object) -> Receipt:
        what = "receipt"
        logged = isinstance(value, dict) and "checkpoint" in value
        calibrated = isinstance(value, dict) and "null_id" in value
        pictured = isinstance(value, dict) and "picture" in value
        screened = isinstance(value, dict) and ("screened" in value or "screen_rule" in value)
        named = isinstance(value, dict) and "model_name" in value
        published = isinstance(value, dict) and "publisher_signature" in value
        assured = isinstance(value, dict) and "assurance" in value
        flagged = isinstance(value, dict) and "evidence" in value
        possessed = isinstance(value, dict) and "possession" in value
        f = _Fields(value, what, (
            "compared", "issued_at", "kept_invariants", "matches", "method_ids", "nonce", "owner_key_id", "registry",
            "submission", "verdict", "verdict_rule", "verifier_key_id", "version", "weight_commitment",
            *(("checkpoint",) if logged else ()), *(("null_id",) if calibrated else ()),
            *(("picture",) if pictured else ()), *(("screen_rule", "screened") if screened else ()),
            *(("model_name",) if named else ()), *(("publisher_signature",) if published else ()),
            *(("assurance",) if assured else ()), *(("evidence",) if flagged else ()),
            *(("possession",) if possessed else ())), versioned=True)
        checkpoint = f.text("checkpoint") if logged else None
        evidence = tuple(f.items("evidence")) if flagged else ()
        if flagged and not evidence:
            raise MessageError(f"{what}.evidence: present but empty (an empty list is left out)")
        matches = tuple(Match.from_map(m, f"{what}.matches[{i}]") for i, m in enumerate(f.items("matches")))
        method_ids = f.items("method_ids")
        if not all(isinstance(m, str) for m in method_ids):
            raise MessageError(f"{what}.method_ids: expected a list of strings")
        return _parse(what, cls,
            f.key_id("verifier_key_id"), f.key_id("owner_key_id"), f.raw("nonce", NONCE_SIZE),
            f.raw("submission", DIGEST_SIZE), f.raw("weight_commitment", DIGEST_SIZE),
            RegistryState.from_map(f.value["registry"]), f.integer("compared"), matches, f.text("verdict"),
            f.text("verdict_rule"), tuple(method_ids), f.integer("issued_at"), f.flag("kept_invariants"),
            MESSAGE_VERSION, checkpoint, f.text("null_id") if calibrated else None,
            Picture.from_map(f.value["picture"], f"{what}.picture") if pictured else None,
            f.integer("screened") if screened else None, f.text("screen_rule") if screened else None,
            f.text("model_name") if named else None,
            PublisherSignature.from_map(f.value["publisher_signature"], f"{what}.publisher_signature")
            if published else None,
            f.text("assurance") if assured else None, evidence,
            f.text("possession") if possessed else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "version": self.version,
            "verdict": self.verdict,
            "verdict_rule": self.verdict_rule,
            "matches": [m.as_dict() for m in self.matches],
            "compared": self.compared,
            "verifier_key_id": self.verifier_key_id,
            "owner_key_id": self.owner_key_id,
            "nonce": self.nonce.hex(),
            "submission": self.submission.hex(),
            "weight_commitment": self.weight_commitment.hex(),
            "registry": {"size": self.registry.size, "root": self.registry.root.hex()},
            "method_ids": list(self.method_ids),
            "issued_at": self.issued_at,
            "kept_invariants": self.kept_invariants,
            "checkpoint": self.checkpoint,
            "null_id": self.null_id,
            "picture": None if self.picture is None else self.picture.as_dict(),
            "screened": self.screened,
            "screen_rule": self.screen_rule,
            "model_name": self.model_name,  # named by the owner, not verified
            # verified by the owner's agent over the model's files, not by the verifier
            "publisher_signature": None if self.publisher_signature is None else self.publisher_signature.as_dict(),
            "assurance": self.assurance_level,
            "assurance_stated": self.assurance is not None,  # false: issued before levels were stated
            "weight_commitment_is": self.commitment_claim,
            "evidence": list(self.evidence),
            # shown to this verifier by opening chunks of the committed weights (None: not shown)
            "possession": self.possession,
        }
