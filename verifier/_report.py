"""The dispute report: one self-contained HTML page that explains signed receipts to someone who is not an expert.

``write_report`` reads receipt files, checks what the keys it is given allow (the verifier's signature; the
log's signature on the checkpoint; each matched base's inclusion proof, when a registry is given; the verdict
re-derived from the scores, when the null is at hand) and writes one HTML file atomically. ``check_receipt``
turns one receipt file's bytes into a checked ``ReportItem`` and ``render_report`` is the pure part: items in,
page out. The page reads top-down from plain words to details: the verdict and what it means, the two dogs,
the numbers with a heat map, the registry, the signature, and how to check it all again offline.

An auditor's signed finding (``pawprint audit recompute``, ``protocol.Finding``) is shown in the headline of the
receipt it embeds (``check_findings`` matches them by the receipt's signed bytes): its outcome, the checks that
failed, whether its three signatures verify (the auditor's, against a pinned key or a trust store's ``auditor``
role; the verifier's on the embedded receipt; the owner's on the embedded submission) and what each covers.

What the page must never do:

- load anything: the dogs are PNG ``data:`` URIs drawn here from the signed vectors (and checked against the
  signed digests), the CSS is inline, the one inline script only records whether the page rendered (for the
  browser test), and a Content-Security-Policy forbids everything else, scripts other than that one included;
- show a receipt's text unescaped: base names, term names and rule strings come from whoever registered a
  base or ran the verifier, and the model's name (``model_name``) from its owner, who asserts it: it is shown
  as "named by the owner", never as something the verifier checked;
- depend on when or where it was made: the same receipts and checks give the same bytes (the only times
  shown are the receipts' own).

A sample report (made-up receipts, fixed keys) and its screenshot in headless Chromium are tooling, not part
of the page: ``python -m benchmarks.report_sample --sample DIR``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np

from protocol import (
    DOMAIN_PREFIX,
    FINDING_FORMAT,
    FINDING_KIND,
    INSUFFICIENT_EVIDENCE,
    ONLINE_MANIFEST_KIND,
    OWNER_ATTESTED,
    RECEIPT_FORMAT,
    SUBMISSION_FORMAT,
    CheckpointError,
    Cosigned,
    Finding,
    LogCheckFailed,
    LogReader,
    Match,
    Picture,
    ProtocolError,
    PublicKey,
    Receipt,
    Role,
    SignatureError,
    SignedMessage,
    TrustStore,
    WitnessPolicy,
    atomic_write,
    check_receipt_entries,
    decode_map,
    open_manifest,
    open_note,
    open_receipt,
    parse_checkpoint,
    parse_score,
    sha256,
)
from verifier._calibration import NullError, NullModel, load_null, shipped_nulls
from verifier._compare import recheck_verdict
from verifier._render import RENDERER_ID, render_png
from verifier.errors import VerifierError

DEFAULT_TITLE = "pawprint dispute report"
PICTURE_SIZE = 256  # the size ``picture_digest`` is taken at (``render_png``'s default)

OK, FAILED, UNCHECKED = "ok", "failed", "unchecked"

TERM_WORDS = {
    "attn_qk": "attention: which tokens look at which (query-key)",
    "attn_vo": "attention: what is passed along (value-output)",
    "ffn": "feed-forward layer",
}


class ReportError(VerifierError):
    """A receipt file cannot be read as a receipt, or the report cannot be made or looked at."""

    status = "INVALID_ARGUMENT"


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``state`` is ``OK``, ``FAILED`` or ``UNCHECKED``; ``text`` says it in words."""

    state: str
    text: str


@dataclass(frozen=True)
class ReportItem:
    """One receipt as the page shows it: what it says and what was checked about it."""

    label: str  # how the reader calls it (the file name)
    receipt: Receipt
    payload: bytes  # the signed canonical bytes
    signer_key_id: str  # the key stored in the file (whoever it is)
    signature: Check
    checkpoint: Check
    inclusion: Check
    verdict_check: Check
    witnessed: tuple[Cosigned, ...] | None = None  # the checkpoint's cosignatures, under the reader's policy

    CHECKS = ("signature", "checkpoint", "inclusion", "verdict_check")

    @property
    def failed(self) -> tuple[str, ...]:
        """The checks that FAILED (not those left unchecked), by name."""
        return tuple(name for name in self.CHECKS if getattr(self, name).state == FAILED)


@dataclass(frozen=True)
class FindingItem:
    """An auditor's signed finding (``protocol.Finding``, from ``pawprint audit recompute``) as the page shows it,
    in the headline of the receipt it embeds (``receipt_sha256``: the SHA-256 of that receipt's signed bytes)."""

    label: str  # the file name
    finding: Finding
    signer_key_id: str  # the key stored in the file (whoever it is)
    receipt_sha256: bytes
    verifier_key_id: str  # the key the embedded receipt carries
    owner_key_id: str | None  # the key the embedded submission carries, if the auditor had it
    signature: Check  # the auditor's signature, and whether its key is one the reader trusts
    embedded: Check  # the verifier's signature on the embedded receipt and the owner's on the submission

    CHECKS = ("signature", "embedded")

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(name for name in self.CHECKS if getattr(self, name).state == FAILED)


# ------------------------------------------------------------------------------------------------ checking
def check_receipt(
    data: bytes, label: str, *, verifier_key: PublicKey | None = None, log_key: PublicKey | None = None,
    log_source: LogReader | None = None, null: NullModel | None = None,
    shipped: Mapping[str, NullModel] | None = None, witnesses: WitnessPolicy | None = None,
) -> ReportItem:
    """A receipt file's bytes, decoded and checked as far as the keys, registry and null given allow
    (``shipped``: nulls by id; a receipt naming one of them is re-derived with it rather than with ``null``).

    A bad signature does not stop the report (showing it is the point); bytes that are not a receipt do
    (``ReportError``).
    """
    try:
        signed = SignedMessage.from_bytes(data, RECEIPT_FORMAT)
        receipt = Receipt.from_map(decode_map(signed.payload))
    except ProtocolError as e:
        raise ReportError(f"{label}: not a receipt file ({e})") from e
    checkpoint, witnessed = _checkpoint_check(receipt, log_key, witnesses)
    return ReportItem(
        label, receipt, signed.payload, signed.public_key.key_id, _signature_check(signed, receipt, verifier_key),
        checkpoint, _inclusion_check(receipt, log_source), _verdict_check(receipt, null, shipped), witnessed,
    )


def _signature_check(signed: SignedMessage, receipt: Receipt, key: PublicKey | None) -> Check:
    try:
        signed.check(Receipt.KIND)  # against the key stored in the file
    except SignatureError:
        return Check(FAILED, "INVALID: the signature does not match the receipt's contents; the file was changed "
                             "after it was signed, or the signature is forged.")
    if key is None:
        return Check(UNCHECKED, "Not checked against a trusted key: the signature matches the key stored in the file "
                                f"(key id {signed.public_key.key_id}), but no verifier public key was given, so "
                                "this does not show who signed it. Pass the verifier's public key to check.")
    if key.raw != signed.public_key.raw:
        return Check(FAILED, f"INVALID: signed by key {signed.public_key.key_id}, not by the verifier key you "
                             f"gave ({key.key_id}).")
    if receipt.verifier_key_id != key.key_id:
        return Check(FAILED, "INVALID: the receipt names another verifier key than the one that signed it.")
    return Check(OK, f"Valid: signed by the verifier key you gave (key id {key.key_id}); nothing in it was changed "
                     "after signing.")


def _checkpoint_check(receipt: Receipt, log_key: PublicKey | None,
                      witnesses: WitnessPolicy | None) -> tuple[Check, tuple[Cosigned, ...] | None]:
    if receipt.checkpoint is None:
        return Check(UNCHECKED, "The receipt names no registry log checkpoint (it was made without a log)."), None
    cosigned: tuple[Cosigned, ...] | None = None
    seen = ""
    if witnesses is not None:
        try:
            cosigned = tuple(witnesses.check(receipt.checkpoint))
        except (SignatureError, CheckpointError) as e:
            return Check(FAILED, f"INVALID: {e}."), None
        seen = (" Cosigned by " + ", ".join(f"{c.name} ({_time(c.time)})" for c in cosigned)
                + f", as your policy requires ({witnesses.describe()}).")
    if log_key is None:
        return Check(UNCHECKED, "Not checked: no log public key was given." + seen), cosigned
    try:
        open_note(receipt.checkpoint, log_key)
    except LogCheckFailed as e:
        return Check(FAILED, f"INVALID: {e}."), None
    return Check(OK, f"Valid: signed by the log key you gave (key id {log_key.key_id})." + seen), cosigned


def _inclusion_check(receipt: Receipt, source: LogReader | None) -> Check:
    if receipt.checkpoint is None:
        return Check(UNCHECKED, "Nothing to prove against: the receipt names no log checkpoint.")
    if source is None:
        return Check(UNCHECKED, "Not checked: no registry was given to fetch the proofs from.")
    try:
        proven = check_receipt_entries(source, receipt)
    except LogCheckFailed as e:
        return Check(FAILED, f"FAILED: {e}.")
    except VerifierError as e:
        return Check(UNCHECKED, f"Could not be checked: {e}.")
    indices = ", ".join(f"#{p.index}" for p in proven) or "none"
    return Check(OK, f"Verified: every matched base is in the log at this checkpoint (entries {indices}).")


def _verdict_check(receipt: Receipt, null: NullModel | None,
                   shipped: Mapping[str, NullModel] | None = None) -> Check:
    if shipped and receipt.null_id is not None and receipt.null_id in shipped:
        null = shipped[receipt.null_id]
    if null is None:
        return Check(UNCHECKED, "Not re-derived: no null model was at hand.")
    consistent = recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule, null, receipt.null_id,
                                 screened=receipt.screened, evidence=receipt.evidence, compared=receipt.compared)
    if consistent is None:
        return Check(UNCHECKED, f"Not re-derived here: the receipt's rule or null ({receipt.null_id or 'none'}) is "
                                f"not the one at hand ({null.null_id}).")
    if not consistent:
        return Check(FAILED, "INCONSISTENT: the verdict does not follow from the scores in the receipt under its "
                             "own rule.")
    return Check(OK, f"Re-derived: every z, p-value and verdict follows from the scores in the receipt "
                     f"(null {null.null_id}).")


def check_receipts(
    receipts: Sequence[Path], *, verifier_pub: Path | None = None, log_pub: Path | None = None,
    log_source: LogReader | None = None, null_file: Path | None = None, witnesses: WitnessPolicy | None = None,
) -> list[ReportItem]:
    """Check each receipt file as the report shows it (``check_receipt``).

    ``verifier_pub``: the verifier public key to check the signatures against; ``log_pub``: the registry
    log's public key, for the checkpoints; ``log_source``: a registry to fetch inclusion proofs from (the CLI's
    ``--registry`` or ``--data``); ``null_file``: the null to re-derive the verdicts with (default: the
    verifier's shipped null, if installed). What is not given is shown as not checked.
    """
    if not receipts:
        raise ReportError("no receipt to report on")
    verifier_key = PublicKey.load(verifier_pub) if verifier_pub is not None else None
    log_key = PublicKey.load(log_pub) if log_pub is not None else None
    null = _null(null_file)
    shipped = shipped_nulls() if null_file is None else {}  # a receipt re-derives with the shipped null it names
    items = []
    for path in receipts:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ReportError(f"{path}: cannot read the receipt ({e.strerror or e})") from None
        try:
            items.append(check_receipt(data, Path(path).name, verifier_key=verifier_key, log_key=log_key,
                                       log_source=log_source, null=null, shipped=shipped,
                                       witnesses=witnesses))
        except ReportError as e:  # the page calls a receipt by its file name; an error names the whole path
            raise ReportError(f"{path}: {str(e).split(': ', 1)[-1]}") from e
    return items


def check_finding(
    data: bytes, label: str, *, auditor_keys: Sequence[PublicKey] = (), trust: TrustStore | None = None,
    verifier_key: PublicKey | None = None,
) -> FindingItem:
    """A finding file's bytes, decoded and checked: the auditor's signature, against ``auditor_keys`` (pinned
    keys) or a key ``trust`` holds for the ``auditor`` role (else shown as not checked), and the embedded receipt's
    and submission's signatures (``protocol.open_finding``; the receipt's against ``verifier_key`` if given).
    A bad signature does not stop the report; bytes that are not a finding do (``ReportError``)."""
    try:
        signed = SignedMessage.from_bytes(data, FINDING_FORMAT)
        finding = Finding.from_map(decode_map(signed.payload))
        inner = SignedMessage.from_bytes(finding.receipt, RECEIPT_FORMAT)
    except ProtocolError as e:
        raise ReportError(f"{label}: not an audit finding file ({e})") from e
    owner_key_id = None
    if finding.submission is not None:
        try:
            owner_key_id = SignedMessage.from_bytes(finding.submission, SUBMISSION_FORMAT).public_key.key_id
        except ProtocolError:
            owner_key_id = None
    return FindingItem(label, finding, signed.public_key.key_id, sha256(inner.payload), inner.public_key.key_id,
                       owner_key_id, _auditor_check(signed, finding, auditor_keys, trust),
                       _embedded_check(finding, inner, verifier_key))


def _auditor_check(signed: SignedMessage, finding: Finding, keys: Sequence[PublicKey],
                   trust: TrustStore | None) -> Check:
    try:
        signed.check(FINDING_KIND)  # against the key stored in the file
    except SignatureError:
        return Check(FAILED, "INVALID: the auditor's signature does not match the finding's contents; the file was "
                             "changed after it was signed, or the signature is forged.")
    key_id = signed.public_key.key_id
    if finding.auditor_key_id != key_id:
        return Check(FAILED, "INVALID: the finding names another auditor key than the one that signed it.")
    if any(k.raw == signed.public_key.raw for k in keys):
        return Check(OK, f"Valid: signed by an auditor key you gave (key id {key_id}).")
    if trust is not None:
        try:
            trust.require(key_id, Role.AUDITOR)
        except ProtocolError as e:
            return Check(FAILED, f"INVALID: signed by key {key_id}, which your trust store does not trust as an "
                                 f"auditor ({e}).")
        entry = trust.get(key_id)
        name = f" ({entry.name})" if entry is not None and entry.name else ""
        return Check(OK, f"Valid: signed by auditor key {key_id}{name}, trusted as an auditor by your trust store.")
    if keys:
        return Check(FAILED, f"INVALID: signed by key {key_id}, not by the auditor key(s) you gave "
                             f"({', '.join(k.key_id for k in keys)}).")
    return Check(UNCHECKED, f"Not checked against a trusted key: the signature matches the key stored in the file "
                            f"(key id {key_id}), which does not show who signed it. Pass the auditor's public key "
                            "or a trust store that lists it as an auditor.")


def _embedded_check(finding: Finding, inner: SignedMessage, verifier_key: PublicKey | None) -> Check:
    """The verifier's signature on the embedded receipt and the owner's on the embedded submission, which must be
    the manifest the receipt names (as ``protocol.open_finding``, whatever the auditor's signature)."""
    try:
        receipt = open_receipt(inner, inner.public_key)
    except ProtocolError as e:
        return Check(FAILED, f"INVALID: the embedded receipt does not verify ({e}).")
    if verifier_key is not None and verifier_key.raw != inner.public_key.raw:
        return Check(FAILED, f"INVALID: the embedded receipt is signed by key {inner.public_key.key_id}, not by the "
                             f"verifier key you gave ({verifier_key.key_id}).")
    owner = "no owner's submission embedded (the auditor did not have it)"
    if finding.submission is not None:
        try:
            manifest = SignedMessage.from_bytes(finding.submission, SUBMISSION_FORMAT)
            open_manifest(manifest, ONLINE_MANIFEST_KIND)
        except ProtocolError as e:
            return Check(FAILED, f"INVALID: the embedded owner's submission does not verify ({e}).")
        if sha256(manifest.payload) != receipt.submission:
            return Check(FAILED, "INVALID: the embedded owner's submission is not the manifest the receipt names.")
        owner = (f"the owner's submission verifies (owner key {manifest.public_key.key_id}) and is the one the "
                 "receipt names")
    pinned = "" if verifier_key is not None else " (key taken from the file)"
    return Check(OK, f"The embedded receipt verifies (verifier key {inner.public_key.key_id}{pinned}); {owner}.")


def check_findings(
    findings: Sequence[Path], items: Sequence[ReportItem], *, auditor_pubs: Sequence[Path] = (),
    trust_file: Path | None = None, verifier_pub: Path | None = None,
) -> list[FindingItem]:
    """Check each finding file (``check_finding``) and match it to the receipt it embeds among ``items``
    (``ReportError`` if it is not one of them: the page shows a finding with its receipt)."""
    keys = [PublicKey.load(p) for p in auditor_pubs]
    trust = TrustStore.load(trust_file) if trust_file is not None else None
    verifier_key = PublicKey.load(verifier_pub) if verifier_pub is not None else None
    by_digest = {sha256(item.payload): item for item in items}
    out = []
    for path in findings:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ReportError(f"{path}: cannot read the finding ({e.strerror or e})") from None
        try:
            found = check_finding(data, Path(path).name, auditor_keys=keys, trust=trust, verifier_key=verifier_key)
        except ReportError as e:
            raise ReportError(f"{path}: {str(e).split(': ', 1)[-1]}") from e
        if found.receipt_sha256 not in by_digest:
            raise ReportError(f"{path}: the finding concerns a receipt that is not among those given (its receipt's "
                              f"signed bytes have SHA-256 {found.receipt_sha256.hex()}): add that receipt file")
        out.append(found)
    return out


def write_report_page(items: Sequence[ReportItem], out: Path, *, title: str | None = None,
                      findings: Sequence[FindingItem] = ()) -> None:
    """Write the report of checked receipts (``check_receipts``) and findings (``check_findings``) to ``out``
    atomically."""
    page = render_report(list(items), title=title, findings=findings).encode("utf-8")
    try:
        atomic_write(out, page)
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report ({e.strerror or e})") from None


def write_report(
    receipts: Sequence[Path], out: Path, *, verifier_pub: Path | None = None, log_pub: Path | None = None,
    log_source: LogReader | None = None, null_file: Path | None = None, title: str | None = None,
) -> list[ReportItem]:
    """``check_receipts`` then ``write_report_page``; the checked items are returned."""
    items = check_receipts(receipts, verifier_pub=verifier_pub, log_pub=log_pub, log_source=log_source,
                           null_file=null_file)
    write_report_page(items, out, title=title)
    return items


def _null(path: Path | None) -> NullModel | None:
    if path is not None:
        return load_null(path)  # asked for by name: a missing file is an error
    try:
        return load_null()
    except NullError:
        return None


# ------------------------------------------------------------------------------------------------ pictures
@functools.lru_cache(maxsize=64)
def _png(vector: bytes) -> bytes:
    """The dog of a picture vector (little-endian float32), as the verifier draws it (cached: ~0.3 s each)."""
    return render_png(np.frombuffer(vector, dtype="<f4"), PICTURE_SIZE)


@dataclass(frozen=True)
class _Drawn:
    png: bytes | None
    passed: tuple[str, ...]
    problems: tuple[str, ...]


def _draw(picture: Picture) -> _Drawn:
    passed: list[str] = []
    problems: list[str] = []
    if hashlib.sha256(picture.vector).digest() == picture.vector_digest:
        passed.append("vector matches its signed digest")
    else:
        problems.append("the vector does not match its signed digest")
    if picture.renderer_id != RENDERER_ID:
        problems.append(f"drawn by renderer {picture.renderer_id}, but this report has {RENDERER_ID}")
    try:
        png = _png(picture.vector)
    except ValueError as e:
        return _Drawn(None, tuple(passed), (*problems, f"the vector cannot be drawn ({e})"))
    if hashlib.sha256(png).digest() == picture.picture_digest:
        passed.append("redrawn dog matches the signed picture digest")
    else:
        problems.append("the dog drawn from the vector is not the picture the verifier signed (digest differs)")
    return _Drawn(png, tuple(passed), tuple(problems))


# ------------------------------------------------------------------------------------------------ numbers
def _best(matches: Sequence[Match]) -> Match | None:
    """The strongest evidence of derivation: lowest p-value, then highest ICS (the receipt's own order)."""
    if not matches:
        return None
    return min(matches, key=lambda m: (Decimal(m.p_value) if m.p_value is not None else Decimal(2),
                                       -parse_score(m.ics), _log_order(m)))


def _log_order(m: Match) -> int:
    """A match's place in the log (earliest first; a match naming no entry last)."""
    return m.log_index if m.log_index is not None else 1 << 64


_SCALES = ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand"))


def chance_words(p_value: str) -> str:
    """``p_value`` in words: how often unrelated models would match this strongly by chance (HTML)."""
    p = Decimal(p_value)
    if p <= 0:
        return "less than once in 10<sup>300</sup> comparisons of unrelated models (too rare to compute)"
    if p >= Decimal("0.995"):
        return "in nearly every comparison of unrelated models"
    if p >= Decimal("0.01"):
        return f"in about {max(1, round(p * 100))} out of 100 comparisons of unrelated models"
    odds = float(f"{1 / p:.2g}")  # two significant digits, rounded before choosing the words
    if odds < 1e3:
        return f"about once in {odds:,.0f} comparisons of unrelated models"
    if odds < 1e15:
        scale, word = next((v, w) for v, w in _SCALES if odds >= v)
        count = "a" if odds == scale else f"{odds / scale:g}"
        return f"about once in {count} {word} comparisons of unrelated models"
    return f"about once in 10<sup>{round(-math.log10(p))}</sup> comparisons of unrelated models"


def _z_words(z: str) -> str:
    value = float(z)
    side = "above" if value >= 0 else "below"
    return (f"the scores sit {abs(value):g} standard deviations {side} what unrelated models typically score")


_RULE = re.compile(r"derived if p\*K<=([0-9.e+-]+), independent if p>=([0-9.e+-]+)")


def _rule_words(rule: str, compared: int, screened: int | None = None, screen_rule: str | None = None) -> str:
    m = _RULE.search(rule)
    if m is None:
        return f"The verdict rule, as the receipt states it: <code>{_e(rule)}</code>."
    derived, independent = _e(m.group(1)), _e(m.group(2))
    considered = (
        f"compared the model with <b>{compared}</b> registered base(s)" if screened is None else
        f"screened all <b>{screened}</b> registered bases on compact sketches and compared the <b>{compared}</b> "
        f"closest exactly (screen <code>{_e(screen_rule or '')}</code>); K counts all {screened}")
    return (
        f"<p>The verdict rule. The verifier {considered}. Trying "
        f"many bases makes a chance match somewhere more likely, so each base's p-value is multiplied by that "
        f"number (K) first. A base is called <b>derived</b> when p &times; K &le; {derived}, "
        f"<b>independent</b> when p &ge; {independent}, and <b>inconclusive</b> in between. The receipt as a "
        f"whole says derived if any base is derived, independent if every base is, and inconclusive "
        f"otherwise.</p><p class=\"small\">Exact rule: <code>{_e(rule)}</code></p>"
    )


# colour ramps (ColorBrewer Blues/Reds, Oranges/Greys for the negative side)
_COS_UP = ("#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b")
_COS_DOWN = ("#f7fbff", "#fdd0a2", "#e6550d")
_Z_UP = ("#fff5f0", "#fcbba1", "#fb6a4a", "#cb181d", "#67000d")
_Z_DOWN = ("#fff5f0", "#bdbdbd")
Z_TOP = 10.0  # z at and beyond which the colour is darkest
Z_BOTTOM = -3.0


def _rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def _ramp(stops: Sequence[str], t: float) -> str:
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    a, b = _rgb(stops[i]), _rgb(stops[i + 1])
    f = t - i
    return "#{:02x}{:02x}{:02x}".format(*(round(x + (y - x) * f) for x, y in zip(a, b, strict=True)))


def _cos_colour(c: float) -> str:
    return _ramp(_COS_UP, c) if c >= 0 else _ramp(_COS_DOWN, -c)


def _z_colour(z: float) -> str:
    return _ramp(_Z_UP, z / Z_TOP) if z >= 0 else _ramp(_Z_DOWN, z / Z_BOTTOM)


def _ink(background: str) -> str:
    r, g, b = _rgb(background)
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#111111"


# ------------------------------------------------------------------------------------------------ HTML
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _time(t: int) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_MARK = {OK: "&#10003;", FAILED: "&#10007;", UNCHECKED: "&#8226;"}


def _check_line(what: str, check: Check) -> str:
    return (f'<li class="check {check.state}"><span class="mark">{_MARK[check.state]}</span> '
            f"<b>{_e(what)}:</b> {_e(check.text)}</li>")


OWNER_NAMED = "named by the owner, not verified"


def _model_name(r: Receipt) -> str:
    """How the page names the submitted model (HTML): the owner's name for it, marked as theirs, or its digest."""
    if r.model_name is None:
        return (f'an unnamed model (submission <span class="mono">{r.submission.hex()[:16]}&hellip;</span>; its '
                "owner gave it no name)")
    return f'<span class="name">{_e(r.model_name)}</span> <span class="small owner-named">({OWNER_NAMED})</span>'


def _headline(item: ReportItem, findings: Sequence[FindingItem] = ()) -> str:
    r = item.receipt
    best = _best(r.matches)
    subject = "The submitted model" if r.model_name is None else (
        f"The submitted model, which its owner calls <b>{_e(r.model_name)}</b>,")
    if r.verdict == "derived":
        # Equal p-values are broken by log index: the earliest registration leads, so that a later one of the
        # same weights (a squatter's copy, linked to it in the log) never takes its place in the headline.
        derived = sorted((m for m in r.matches if m.verdict == "derived"),
                         key=lambda m: (Decimal(m.p_value) if m.p_value is not None else Decimal(2), _log_order(m)))
        lead = derived[0] if derived else best
        name = lead.name if lead is not None else "?"
        more = f" and {len(derived) - 1} other base(s)" if len(derived) > 1 else ""
        word = f'Derived from <span class="name">{_e(name)}</span>{more}'
        meaning = (f"{subject} descends from the registered base model <b>{_e(name)}</b>: it was made "
                   "from that model's weights (by fine-tuning, merging, pruning, compressing or similar), not "
                   "trained independently.")
    elif r.verdict == "independent":
        lead = best
        word = "Independent of every registered base"
        meaning = (f"{subject} resembles none of the {r.compared} registered base model(s) it was "
                   "compared with more than unrelated models resemble each other. This says nothing about models "
                   "that are not in the registry.")
    elif r.verdict == INSUFFICIENT_EVIDENCE:
        lead = best
        word = "Insufficient evidence"
        meaning = ("The verifier's evidence checks found the submitted terms too few or not plausible as the output "
                   "of the stated model, so no verdict is given: " + "; ".join(_e(f) for f in r.evidence) + ".")
    else:
        lead = best
        word = "Inconclusive"
        meaning = ("The evidence is too strong to call the model independent of every base, but not strong enough "
                   "to call it derived from one" + (f"; the closest base is <b>{_e(best.name)}</b>." if best else
                                                     ": no registered base could be compared with it."))
    if lead is None and r.compared and r.verdict == "independent":
        chance = (f"Against each of the {r.compared} base(s) compared, a match this weak is what unrelated models "
                  "give (p at or above the rule's independence threshold). " + WITHHELD_WORDS)
    elif lead is None:
        chance = "No registered base could be compared with this model (no common probe set or method)."
    elif lead.p_value is None or lead.z is None:
        chance = (f"This receipt carries no calibrated chance figure (made under rule "
                  f"<code>{_e(r.verdict_rule)}</code>); its scores are below.")
    else:
        target = "this base" if r.verdict == "derived" else f"the closest base, <b>{_e(lead.name)}</b>"
        chance = (f"Against {target}: a match this strong would happen by chance {chance_words(lead.p_value)} "
                  f"(p = {_e(lead.p_value)}; z = {_e(lead.z)}: {_z_words(lead.z)}).")
    warn = ""
    if item.signature.state == FAILED:
        warn = ('<p class="alarm">The signature on this receipt is INVALID: do not rely on this verdict or on '
                "anything else in this section.</p>")
    elif item.verdict_check.state == FAILED:
        warn = '<p class="alarm">This verdict does not follow from the receipt\'s own numbers (see the checks).</p>'
    audit = "".join(_finding_block(f) for f in findings)
    if any(f.finding.outcome == "inconsistent" and not f.failed for f in findings):
        audit = ('<p class="alarm">Disputed: an auditor\'s signed finding says this receipt does not hold up against '
                 "the model's weights (below). The verdict above is what the owner's submission earned, not a fact "
                 "about those weights.</p>" + audit)
    return (f'<div class="verdict {_e(r.verdict)}"><div class="verdict-subject">Model: {_model_name(r)}</div>'
            f'<div class="verdict-word">{word}</div>{_assurance(r)}{audit}'
            f'<p class="meaning">{meaning}</p><p class="chance">{chance}</p>{warn}</div>')


_OUTCOME_WORDS = {
    "inconsistent": "INCONSISTENT: this receipt does not hold up against the weights",
    "consistent": "CONSISTENT: recomputed from the weights, the submission checks out",
    "incomplete": "INCOMPLETE: the weights match the commitment; the terms were not checked",
}


def _finding_block(f: FindingItem) -> str:
    """An auditor's finding, in the headline of the receipt it concerns: its outcome, the checks that failed, and
    what each of the three signatures covers (HTML)."""
    fd = f.finding
    state = FAILED if f.failed else f.signature.state
    trust = {OK: "", UNCHECKED: " (the auditor's key was not checked against a key you trust)",
             FAILED: ""}[state]
    warn = ""
    if f.failed:
        warn = ('<p class="alarm">This audit finding is INVALID: '
                + _e(" ".join(getattr(f, c).text for c in f.failed)) + " Do not rely on it.</p>")
    failed = [c for c in fd.checks if c.status == "fail"]
    rows = "".join(
        f'<li class="check failed"><span class="mark">{_MARK[FAILED]}</span> <b>{_e(c.name)}</b>: signed '
        f"{_e(c.signed)}; recomputed {_e(c.recomputed)} (tolerance {_e(c.tolerance)}). {_e(c.detail)}</li>"
        for c in failed)
    passed = [c.name for c in fd.checks if c.status == "pass"]
    unchecked = [c.name for c in fd.checks if c.status == "not-checked"]
    others = ""
    if passed:
        others += f'<li class="check ok"><span class="mark">{_MARK[OK]}</span> passed: {_e(", ".join(passed))}</li>'
    if unchecked:
        others += (f'<li class="check unchecked"><span class="mark">{_MARK[UNCHECKED]}</span> not checked: '
                   f"{_e(', '.join(unchecked))}</li>")
    match = ("equal to" if fd.model_commitment == _receipt_commitment(fd) else "NOT equal to")
    covers = (
        '<table class="kv small covers"><tr><th>Signature</th><th>Key</th><th>What it covers</th></tr>'
        f"<tr><th>Verifier's (the receipt)</th><td class=\"mono\">{_e(f.verifier_key_id)}</td><td>the receipt: the "
        "verdict and scores, the submission's digest, the weight commitment the owner claimed and the encoded "
        "vector of the submitted terms. Not the weights: the verifier never saw them.</td></tr>"
        "<tr><th>Owner's (the submission)</th><td class=\"mono\">"
        + (_e(f.owner_key_id) if f.owner_key_id else "&ndash;")
        + "</td><td>" + ("the manifest the owner's agent sent: the weight commitment it claimed, the challenge nonce, "
                         "the probe sets, layers and method, and the SHA-256 of every term it sent." if f.owner_key_id
                         else "not embedded: the auditor did not have the owner's submission, so the terms were not "
                              "checked.")
        + "</td></tr>"
        f"<tr><th>Auditor's (this finding)</th><td class=\"mono\">{_e(f.signer_key_id)}</td><td>each check above "
        "with the numbers the auditor recomputed from the weights it was given (their commitment "
        f'<span class="mono">{fd.model_commitment.hex()[:16]}&hellip;</span>, {match} the receipt\'s), the '
        "tolerances, and the two embedded files. It is the auditor's word about those weights; the weights are not "
        "in it.</td></tr></table>")
    return (
        f'<div class="finding {_e(fd.outcome)}{" invalid" if f.failed else ""}">'
        f'<div class="finding-title">Audit finding: {_e(_OUTCOME_WORDS[fd.outcome])}</div>'
        f'<p><b>{_e(fd.summary)}</b></p>{warn}'
        f'<ul class="checks">{_check_line("Auditor signature", f.signature)}'
        f'{_check_line("Embedded receipt and submission", f.embedded)}{rows}{others}</ul>'
        f'<p class="small">Finding <span class="mono">{_e(f.label)}</span>, issued {_time(fd.issued_at)} by auditor '
        f'key <span class="mono">{_e(f.signer_key_id)}</span>{_e(trust)}. Check it offline: '
        f"<code>pawprint audit verify-finding {_e(shlex.quote(f.label))} --auditor-pub AUDITOR.pub "
        f"--verifier-pub VERIFIER.pub</code></p>{covers}</div>"
    )


def _receipt_commitment(fd: Finding) -> bytes | None:
    try:
        return Receipt.from_map(decode_map(SignedMessage.from_bytes(fd.receipt, RECEIPT_FORMAT).payload)
                                ).weight_commitment
    except ProtocolError:
        return None


def _assurance(r: Receipt) -> str:
    """What stands behind the receipt, in the headline (docs/threat-model.md)."""
    legacy = "" if r.assurance is not None else " (issued before assurance levels were stated)"
    if r.assurance_level == OWNER_ATTESTED:
        text = ("the terms and the weight commitment are what the model's owner sent; nobody has recomputed them "
                "from the weights. A dishonest owner can obtain this receipt for terms that are not its model's "
                "own; an audit from the weights (<code>pawprint audit recompute</code>) settles it.")
    else:
        text = "a neutral party recomputed the terms and the weight commitment from the weights."
    shown = "" if r.possession is None else f" <b>Possession shown:</b> {_e(possession_words(r.possession))}"
    return (f'<p class="assurance"><b>Assurance: {_e(r.assurance_level)}</b>{_e(legacy)}: {text} '
            f'Weight commitment <span class="mono">{r.weight_commitment.hex()[:16]}…</span>: '
            f"{_e(r.commitment_claim)}.{shown}</p>")


def possession_words(record: str) -> str:
    """What a receipt's possession record (``"<id>;openings=<k>;chunk=<bytes>"``) shows, and what it does not."""
    fields = dict(part.split("=", 1) for part in record.split(";")[1:] if "=" in part)
    k, chunk = fields.get("openings", "?"), fields.get("chunk", "?")
    return (f"at submission time the owner opened {k} chunk(s) of at most {chunk} bytes of the committed weights, "
            "picked by the verifier's fresh challenge, and the verifier checked them against the commitment: the "
            "owner held those chunks then, so the commitment was not merely copied from someone else's receipt. It "
            "does not show that the owner holds every byte, that the terms were computed from these weights, or "
            "that it came by them lawfully (a thief holding stolen weights can show possession).")


def _signature_banner(check: Check) -> str:
    title = {OK: "Signature VALID", FAILED: "Signature INVALID", UNCHECKED: "Signature NOT CHECKED"}[check.state]
    return (f'<div class="sig {check.state}" role="status"><span class="sig-title">{_MARK[check.state]} '
            f'{title}</span><span class="sig-text">{_e(check.text)}</span></div>')


def _figure(who: str, alt: str, picture: Picture | None, drawn: _Drawn | None, absent: str) -> str:
    """One dog with its checks; ``who`` is HTML, ``alt`` plain text."""
    if picture is None or drawn is None:
        return (f'<figure class="dog"><div class="nodog">No picture<br><span>{_e(absent)}</span></div>'
                f"<figcaption><b>{who}</b></figcaption></figure>")
    img = ""
    if drawn.png is not None:
        uri = "data:image/png;base64," + base64.b64encode(drawn.png).decode("ascii")
        img = (f'<img src="{uri}" width="{PICTURE_SIZE}" height="{PICTURE_SIZE}" '
               f'alt="{_e(alt)}">')
    lines = "".join(f'<li class="check ok"><span class="mark">{_MARK[OK]}</span> {_e(t)}</li>' for t in drawn.passed)
    lines += "".join(f'<li class="check failed"><span class="mark">{_MARK[FAILED]}</span> {_e(t)}</li>'
                     for t in drawn.problems)
    warning = ""
    if drawn.problems:
        warning = ('<p class="alarm small">WARNING: this is not the picture the verifier signed. Trust the '
                   "numbers, not this dog.</p>")
    cls = "dog bad" if drawn.problems else "dog"
    return (f'<figure class="{cls}">{img}{warning}<figcaption><b>{who}</b><ul class="checks small">{lines}</ul>'
            f'<span class="small mono">picture {_e(picture.picture_digest.hex()[:16])}&hellip;</span>'
            "</figcaption></figure>")


def _pictures(r: Receipt, best: Match | None, mine: _Drawn | None, theirs: _Drawn | None) -> str:
    if best is None:
        base_who = "no base to compare with"
    else:
        base_who = f'the base: <span class="name">{_e(best.name)}</span>'
    who = "the submitted model" if r.model_name is None else (
        f'the submitted model: <span class="name">{_e(r.model_name)}</span> '
        f'<span class="small owner-named">({OWNER_NAMED})</span>')
    alt = "the dog drawn from the submitted model's fingerprint" + (
        "" if r.model_name is None else f" ({r.model_name}, {OWNER_NAMED})")
    left = _figure(who, alt, r.picture, mine, "the receipt carries no picture of the submitted model")
    right = _figure(base_who, "the dog drawn from the fingerprint of " + (best.name if best else "no base"),
                    None if best is None else best.picture, theirs,
                    "the registry entry has no picture" if best is not None else "")
    between = ""
    if best is not None:
        between = f'<div class="vs">vs<br><span class="small">ICS {_e(best.ics)}</span></div>'
    return (
        '<section class="block"><h3>1. The pictures</h3>'
        '<p>Each dog is drawn from a 512-number summary of a model\'s fingerprint. <b>Related models get similar '
        "dogs; unrelated models get different dogs.</b> The numbers decide; the picture only illustrates them.</p>"
        f'<div class="dogs">{left}{between}{right}</div>'
        + ("" if r.picture is not None else "<p>This receipt carries no pictures (its verifier drew none).</p>")
        + "</section>"
    )


# A sketching verifier states no match that is independent (issue 16): the verdict needs no score.
WITHHELD_WORDS = ("The verifier states no scores for an independent match: the verdict needs none, and a "
                  "submitter choosing what it sends could otherwise read the registered bases back from them.")


def _match_table(r: Receipt) -> str:
    withheld = r.compared - len(r.matches)
    note = (f"<p>{withheld} base(s) compared and found independent are not listed. {WITHHELD_WORDS}</p>"
            if withheld > 0 else "")
    if not r.matches:
        return note or "<p>No registered base could be compared with this model (no common probe set or method).</p>"
    rows = []
    for m in r.matches:
        index = "&ndash;" if m.log_index is None else f"#{m.log_index}"
        chance = ("&ndash;" if m.p_value is None
                  else f'{_e(m.p_value)}<br><span class="small">{chance_words(m.p_value)}</span>')
        rows.append(
            f'<tr><td class="name">{_e(m.name)}</td><td><span class="pill {_e(m.verdict)}">{_e(m.verdict)}</span></td>'
            f'<td class="num">{_e(m.ics)}</td><td class="num">{_e(m.min_term)}</td>'
            f'<td class="num">{_e(m.z) if m.z is not None else "&ndash;"}</td><td class="p">{chance}</td>'
            f'<td class="num">{m.common_probe_tokens:,}</td><td class="num">{index}</td></tr>'
        )
    return (
        '<table class="matches"><thead><tr><th>Base model</th><th>Verdict</th><th>ICS</th><th>Weakest term</th>'
        "<th>z</th><th>p (chance)</th><th>Probe tokens compared</th><th>Log entry</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{note}"
    )


def _heatmap(m: Match) -> str:
    if not m.terms:
        return ""
    terms: list[str] = []
    pairs: list[tuple[int, int]] = []
    cells: dict[tuple[int, int, str], tuple[str, str | None]] = {}
    for t in m.terms:
        if t.term not in terms:
            terms.append(t.term)
        if (t.layer, t.base_layer) not in pairs:
            pairs.append((t.layer, t.base_layer))
        cells[(t.layer, t.base_layer, t.term)] = (t.cosine, t.z)
    head = "".join(f'<th title="{_e(TERM_WORDS.get(t, t))}">{_e(t)}</th>' for t in terms)

    def table(kind: str) -> str:
        rows = []
        for la, lb in pairs:
            tds = []
            for t in terms:
                value = cells.get((la, lb, t))
                text = None if value is None else (value[0] if kind == "cosine" else value[1])
                if text is None:
                    tds.append('<td class="cell empty">&ndash;</td>')
                    continue
                colour = _cos_colour(float(text)) if kind == "cosine" else _z_colour(float(text))
                tds.append(f'<td class="cell {kind}" style="background:{colour};color:{_ink(colour)}">{_e(text)}</td>')
            rows.append(f'<tr><th class="pair">{la} &harr; {lb}</th>{"".join(tds)}</tr>')
        caption = ("Cosine: 1 = identical, 0 = unrelated" if kind == "cosine"
                   else "z: how far above unrelated models")
        return (f'<table class="heat"><caption>{caption}</caption><thead><tr><th>layer &harr; base layer</th>'
                f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')

    cos_legend = _legend([(-1.0, _cos_colour(-1.0)), (0.0, _cos_colour(0.0)), (0.5, _cos_colour(0.5)),
                          (1.0, _cos_colour(1.0))], ("&minus;1", "0", "1"), (0.0, 0.5, 1.0))
    zs = [Z_BOTTOM, 0.0, Z_TOP / 4, Z_TOP / 2, Z_TOP]
    z_span = Z_TOP - Z_BOTTOM
    z_legend = _legend([(z, _z_colour(z)) for z in zs], (f"&le; {Z_BOTTOM:g}", "0", f"&ge; {Z_TOP:g}"),
                       (0.0, -Z_BOTTOM / z_span, 1.0))
    has_z = any(t.z is not None for t in m.terms)
    words = "".join(f"<li><code>{_e(t)}</code>: {_e(TERM_WORDS[t])}</li>" for t in terms if t in TERM_WORDS)
    return (
        f'<h4>Layer by layer, against <span class="name">{_e(m.name)}</span></h4>'
        "<p>Each row pairs a layer of the submitted model with the matching layer of the base; each column is one "
        "kind of fingerprint term. Dark cells are strong resemblance.</p>"
        f'<div class="heatmaps"><div>{table("cosine")}{cos_legend}</div>'
        + (f"<div>{table('z')}{z_legend}</div>" if has_z else "<div><p>No z-scores: no null was used.</p></div>")
        + f'</div><ul class="small terms">{words}</ul>'
    )


def _legend(stops: Sequence[tuple[float, str]], labels: Sequence[str], at: Sequence[float]) -> str:
    lo, hi = stops[0][0], stops[-1][0]
    gradient = ", ".join(f"{c} {100 * (v - lo) / (hi - lo):.1f}%" for v, c in stops)
    marks = "".join(f'<span style="left:{100 * a:.1f}%">{label}</span>' for label, a in zip(labels, at, strict=True))
    return (f'<div class="legend"><div class="bar" style="background:linear-gradient(to right, {gradient})"></div>'
            f'<div class="marks">{marks}</div></div>')


def _numbers(r: Receipt, best: Match | None) -> str:
    return (
        '<section class="block"><h3>2. The numbers</h3>'
        "<p>The owner's software computed a fingerprint from the model's weights: for each layer, three kinds of "
        "<i>terms</i> that training a model from a base barely changes, and that no reshuffling or re-encoding "
        "of the weights can hide. The weights themselves never left the owner. For each registered base that "
        "could be compared, the verifier measured how alike the two fingerprints are:</p><ul>"
        "<li><b>ICS</b> (similarity): the mean over terms of their cosine; 1 means identical, 0 means "
        "unrelated. <b>Weakest term</b> is the lowest single cosine.</li>"
        "<li>Unrelated models do not score exactly 0 (they learn similar things from similar data), so each score "
        "is compared with scores measured between models known to be unrelated (the <i>null</i>). <b>z</b> says "
        "how many standard deviations above those the scores lie; <b>p</b> how often unrelated models would score "
        "this high by chance.</li></ul>"
        f"{_match_table(r)}{_rule_words(r.verdict_rule, r.compared, r.screened, r.screen_rule)}"
        + (_heatmap(best) if best is not None else "")
        + "</section>"
    )


def _registry(item: ReportItem) -> str:
    r = item.receipt
    checks = (f'<ul class="checks">{_check_line("Checkpoint signature", item.checkpoint)}'
              f'{_check_line("Inclusion of the matched bases", item.inclusion)}</ul>')
    if r.checkpoint is None:
        return (
            '<section class="block"><h3>3. The registry</h3>'
            f"<p>The model was compared with a registry of {r.registry.size} entries (root hash "
            f'<span class="mono">{r.registry.root.hex()}</span>). This receipt was made without a transparency '
            f"log, so which bases were registered, and when, rests on the verifier's word alone.</p>{checks}"
            "</section>"
        )
    cp = parse_checkpoint(r.checkpoint).checkpoint
    indices = ", ".join(f'<span class="name">{_e(m.name)}</span> #{m.log_index}' for m in r.matches) or "none"
    return (
        '<section class="block"><h3>3. The registry</h3>'
        "<p>Base models are registered in an append-only public log. A <b>checkpoint</b> is the log operator's "
        "signed statement of the log's exact contents at one moment; this receipt names the checkpoint the "
        "comparison used:</p>"
        f'<table class="kv"><tr><th>Log</th><td class="mono">{_e(cp.origin)}</td></tr>'
        f"<tr><th>Entries at that moment</th><td>{cp.size:,}</td></tr>"
        f'<tr><th>Root hash</th><td class="mono">{cp.root.hex()}</td></tr>'
        f"<tr><th>Checkpoint time</th><td>{_time(cp.time)}</td></tr>"
        f"<tr><th>Matched bases (log entry)</th><td>{indices}</td></tr></table>"
        "<p>An <b>inclusion proof</b> is a short list of hashes that shows a given entry is part of exactly this "
        "checkpoint. It proves that the base the verdict names was registered, under that name and vendor key, "
        "in this log before the checkpoint; precedence between registrations goes by log entry number.</p>"
        f"{_witness_paragraph(item)}{checks}</section>"
    )


def _witness_paragraph(item: ReportItem) -> str:
    """What the witnesses add, said only as far as they were checked."""
    if item.witnessed is None:
        return ("<p><b>Not checked against witnesses.</b> No witness policy was given, so this page does not show "
                "that others saw the same log: an operator showing different contents to different readers is "
                "caught only by readers who compare checkpoints (pass <code>--witnesses</code>).</p>")
    names = ", ".join(f'<span class="name">{_e(c.name)}</span>' for c in item.witnessed)
    return (f"<p><b>Witnessed.</b> This checkpoint is cosigned by {len(item.witnessed)} witnesses you trust "
            f"({names}). Each cosigns a log's checkpoint only if it extends the last one it cosigned, so a different "
            "history shown to someone else would lack their cosignatures unless they collude with the log "
            "operator. Witnesses see checkpoints, not entries: they vouch that everyone sees one log, not for "
            "what its entries say.</p>")


def _signature(item: ReportItem) -> str:
    r = item.receipt
    digest = hashlib.sha256(item.payload).hexdigest()
    prefix = _e((DOMAIN_PREFIX + Receipt.KIND.encode("ascii")).decode("ascii"))
    return (
        '<section class="block"><h3>4. The signature</h3>'
        f"{_signature_banner(item.signature)}"
        '<table class="kv">'
        f'<tr><th>Verifier key named in the receipt</th><td class="mono">{r.verifier_key_id}</td></tr>'
        f'<tr><th>Key that made the signature</th><td class="mono">{item.signer_key_id}</td></tr>'
        f'<tr><th>Model owner\'s key (signed the submission)</th><td class="mono">{r.owner_key_id}</td></tr>'
        f"<tr><th>Issued at</th><td>{_time(r.issued_at)}</td></tr>"
        f"<tr><th>What is signed</th><td>An Ed25519 signature over SHA-256(<code>{prefix}\\0</code> &#8214; the "
        f"receipt's canonical bytes): {len(item.payload):,} bytes, SHA-256 "
        f'<span class="mono">{digest}</span>. It covers every field shown on this page: verdict, scores, names, '
        "log entries, checkpoint and pictures. Changing any one byte breaks it.</td></tr></table>"
        "</section>"
    )


def _reverify(item: ReportItem) -> str:
    r = item.receipt
    f = shlex.quote(item.label)
    pictured = r.picture is not None or any(m.picture is not None for m in r.matches)
    lines = [f"pawprint receipt verify {f} --verifier-pub VERIFIER.pub"]
    if r.checkpoint is not None:
        lines.append(f"pawprint receipt verify {f} --verifier-pub VERIFIER.pub --registry HOST:PORT --log-pub LOG.pub")
    if pictured:
        lines.append(f"pawprint render {f} -o dogs.png")
    rows = [
        ("Verdict rule", f"<code>{_e(r.verdict_rule)}</code>"),
        ("Null (unrelated-model scores)", f'<code>{_e(r.null_id or "none: not calibrated")}</code>'),
        ("Fingerprint method(s)", "<br>".join(f"<code>{_e(x)}</code>" for x in r.method_ids) or "&ndash;"),
        ("Model name (named by the owner)", "none given" if r.model_name is None else
         f'<span class="name">{_e(r.model_name)}</span> (signed by the owner in the submission, copied into the '
         "receipt; nobody checked it)"),
        ("Submission (manifest SHA-256)", f'<span class="mono">{r.submission.hex()}</span>'),
        ("Weight commitment", f'<span class="mono">{r.weight_commitment.hex()}</span>'),
        ("Challenge nonce", f'<span class="mono">{r.nonce.hex()}</span>'),
        ("Bases compared", str(r.compared)),
        ("Submitted terms kept by the verifier", "yes" if r.kept_invariants else "no"),
    ]
    if r.publisher_signature is not None:
        ps = r.publisher_signature
        rows.append(("Publisher signature (verified by the owner's agent)",
                     f"{_e(ps.format)} over {ps.files} files, signer <span class=\"mono\">{_e(ps.signer)}</span>, "
                     f"signature SHA-256 <span class=\"mono\">{ps.bundle_sha256.hex()}</span> (the verifier sees no "
                     "file: re-check with <code>pawprint owner digest MODEL --model-signature SIG --signature-key "
                     "PEM</code>, which must give this weight commitment)"))
    if r.picture is not None:
        rows.append(("Encoder / renderer", f"<code>{_e(r.picture.encoder_id)}</code> / "
                                           f"<code>{_e(r.picture.renderer_id)}</code>"))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        '<section class="block"><h3>5. Check it yourself, offline</h3>'
        "<p>Nothing on this page needs to be taken on trust. With the verifier's public key (and, for the registry, "
        "the log's public key), anyone can re-check the receipt with pawprint alone:</p>"
        f'<pre class="cmd">{_e(chr(10).join(lines))}</pre>'
        "<p>The first command checks the signature and re-derives the verdict from the scores; the second also "
        "fetches every matched base's inclusion proof from the registry and checks it against the signed "
        "checkpoint" + ("; the last redraws each dog from its signed vector, so its SHA-256 can be compared with "
                        "the picture digest." if pictured else ".") + "</p>"
        f'<table class="kv small">{table}</table></section>'
    )


def _summary(items: Sequence[ReportItem], findings: Sequence[Sequence[FindingItem]]) -> str:
    audited = any(findings)
    rows = []
    for i, item in enumerate(items, 1):
        r = item.receipt
        best = _best(r.matches)
        chance = "&ndash;" if best is None or best.p_value is None else chance_words(best.p_value)
        model = ("<i>unnamed</i>" if r.model_name is None else f'<span class="name">{_e(r.model_name)}</span>')
        rows.append(
            f'<tr><td><a href="#receipt-{i}">{i}. <span class="mono">{_e(item.label)}</span></a></td>'
            f"<td>{model}</td>"
            f'<td><span class="pill {_e(r.verdict)}">{_e(r.verdict)}</span></td>'
            f'<td class="name">{_e(best.name) if best else "&ndash;"}</td><td>{chance}</td>'
            f'<td><span class="check {item.signature.state}">{_MARK[item.signature.state]} '
            f"{_e({OK: 'valid', FAILED: 'INVALID', UNCHECKED: 'not checked'}[item.signature.state])}</span></td>"
            + (f"<td>{_audit_cell(findings[i - 1])}</td>" if audited else "") + "</tr>"
        )
    return (
        '<table class="summary"><thead><tr><th>Receipt</th><th>Model (named by the owner)</th><th>Verdict</th>'
        "<th>Closest base</th>"
        "<th>Chance of a match this strong</th><th>Signature</th>" + ("<th>Audit finding</th>" if audited else "")
        + "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _receipt_section(item: ReportItem, i: int, n: int, findings: Sequence[FindingItem] = ()) -> str:
    r = item.receipt
    best = _best(r.matches)
    mine = _draw(r.picture) if r.picture is not None else None
    theirs = _draw(best.picture) if best is not None and best.picture is not None else None
    drawn = [d for d in (mine, theirs) if d is not None]
    if not drawn:
        pictures = Check(UNCHECKED, "No pictures in this receipt.")
    elif any(d.problems for d in drawn):
        pictures = Check(FAILED, "A picture is NOT the one the verifier signed: " +
                         "; ".join(p for d in drawn for p in d.problems) + ".")
    else:
        pictures = Check(OK, "Every dog shown was redrawn from its signed vector and matches its signed digest.")
    checks = "".join((  # the signature has its own banner, just above
        _check_line("Verdict re-derived from the scores", item.verdict_check),
        _check_line("Pictures", pictures), _check_line("Registry checkpoint", item.checkpoint),
        _check_line("Inclusion proofs", item.inclusion),
    ))
    return (
        f'<section class="receipt" id="receipt-{i}">'
        f'<h2>Receipt {i} of {n} <span class="mono label">{_e(item.label)}</span></h2>'
        f'<p class="small">Issued {_time(r.issued_at)} by verifier key <span class="mono">'
        f"{r.verifier_key_id[:16]}&hellip;</span></p>"
        f"{_signature_banner(item.signature)}{_headline(item, findings)}"
        f'<ul class="checks summary-checks">{checks}</ul>'
        f"{_pictures(r, best, mine, theirs)}{_numbers(r, best)}{_registry(item)}{_signature(item)}{_reverify(item)}"
        "</section>"
    )


def _audit_cell(findings: Sequence[FindingItem]) -> str:
    if not findings:
        return "&ndash;"
    return "<br>".join(
        f'<span class="check {FAILED if f.failed or f.finding.outcome == "inconsistent" else OK}">'
        f"{_e(f.finding.outcome)}{' (finding INVALID)' if f.failed else ''}</span>" for f in findings)


_GLOSSARY = (
    ("Base model", "a model registered by its vendor, with a signed fingerprint; the candidates for an ancestor."),
    ("Derived", "made from a base model's weights: fine-tuned, merged, pruned, quantised, re-encoded."),
    ("Fingerprint", "numbers computed from the weights that reshuffling or re-encoding them cannot change and "
                    "training from a base barely moves; the weights themselves are never shared."),
    ("Null", "the scores measured between models known to be unrelated: what chance looks like."),
    ("z, p", "how far above chance a score lies (z, in standard deviations), and how often chance would reach "
             "it (p)."),
    ("Checkpoint, inclusion proof", "the registry log's signed summary of its contents, and the short proof "
                                    "that an entry is part of it."),
    ("Audit finding", "a neutral party's signed result of recomputing a receipt from the model's weights "
                      "(pawprint audit recompute): consistent, inconsistent (the submission did not come from those "
                      "weights) or incomplete."),
    ("Possession", "the owner opened a few randomly chosen small chunks of its committed weights, showing it held "
                   "them when it submitted; it reveals those chunks (192 bytes with the defaults) and proves "
                   "nothing about the terms."),
    ("Signature", "Ed25519: proves which key signed the receipt and that not one byte changed since."),
)

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f1ea;color:#1d1d1f;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:30px;margin:8px 0 4px}h2{font-size:22px;margin:0 0 4px}h3{font-size:19px;margin:0 0 8px}
h4{font-size:16px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.86em;word-break:break-all}
.small{font-size:13px;color:#555}
.name{font-weight:600;overflow-wrap:anywhere}
.intro{background:#fff;border-radius:10px;padding:16px 20px;margin:12px 0 20px;border:1px solid #e2ddd2}
.receipt{background:#fff;border:1px solid #e2ddd2;border-radius:12px;padding:22px 24px;margin:0 0 28px}
.receipt>h2 .label{font-size:15px;color:#555;font-weight:400;margin-left:8px}
.block{border-top:1px solid #eee;margin-top:18px;padding-top:14px}
.verdict{border-radius:10px;padding:16px 20px;margin:14px 0;border-left:10px solid}
.verdict.derived{background:#fdecea;border-color:#b3261e}
.verdict.independent{background:#e8f5e9;border-color:#1b7a2e}
.verdict.inconclusive{background:#fff6dd;border-color:#b98900}
.verdict.insufficient-evidence{background:#f1f1f1;border-color:#555}
.finding{margin:10px 0;padding:10px 14px;border-radius:8px;border:3px solid #1b7a2e;background:#fff}
.finding.inconsistent{border-color:#b3261e;background:#fff4f3}.finding.incomplete{border-color:#b98900}
.finding.invalid{border-style:dashed}
.finding-title{font-size:22px;font-weight:800}.finding.inconsistent .finding-title{color:#8c1d18}
.finding.consistent .finding-title{color:#14602a}.covers th,.covers td{vertical-align:top;padding:3px 8px}
.assurance{font-size:14px;margin:6px 0;padding:6px 8px;background:#fff;border:1px dashed #888;border-radius:6px}
.verdict-word{font-size:34px;font-weight:800;line-height:1.15}
.verdict-subject{font-size:16px;margin:0 0 4px;overflow-wrap:anywhere}
.owner-named{font-style:italic}
.verdict.derived .verdict-word{color:#8c1d18}.verdict.independent .verdict-word{color:#14602a}
.verdict.inconclusive .verdict-word{color:#7a5b00}
.meaning{font-size:18px;margin:8px 0 4px}.chance{margin:4px 0}
.alarm{background:#b3261e;color:#fff;font-weight:700;padding:8px 12px;border-radius:6px}
.sig{display:flex;flex-direction:column;border-radius:8px;padding:10px 16px;margin:10px 0;border:2px solid}
.sig-title{font-size:22px;font-weight:800;letter-spacing:.02em}
.sig.ok{background:#e8f5e9;border-color:#1b7a2e;color:#14602a}
.sig.failed{background:#b3261e;border-color:#7f1410;color:#fff}.sig.failed .sig-title{font-size:30px}
.sig.unchecked{background:#fff6dd;border-color:#b98900;color:#5e4600}
.checks{list-style:none;padding:0;margin:8px 0}.checks li{margin:3px 0}
.check .mark{display:inline-block;width:1.2em;font-weight:800;text-align:center}
.check.ok .mark,.check.ok{color:#14602a}.check.failed .mark,.check.failed{color:#b3261e}
.check.unchecked .mark{color:#8a6d00}
li.check.ok,li.check.unchecked{color:#1d1d1f}li.check.failed{font-weight:600}
.summary-checks{background:#faf9f6;border-radius:8px;padding:8px 12px;font-size:14px}
.dogs{display:flex;align-items:center;justify-content:center;gap:18px;flex-wrap:wrap}
.dog{margin:0;width:300px;text-align:center;padding:10px;border-radius:10px;border:1px solid #e2ddd2}
.dog img{display:block;margin:0 auto;border-radius:8px;image-rendering:auto}
.dog.bad{border:4px solid #b3261e;background:#fdecea}
.dog figcaption{margin-top:6px}.dog .checks{text-align:left}
.nodog{width:256px;height:256px;margin:0 auto;display:flex;flex-direction:column;align-items:center;
justify-content:center;background:#eee;border-radius:8px;color:#666;font-weight:700}.nodog span{font-weight:400;
font-size:13px;padding:0 16px}
.vs{font-size:22px;font-weight:700;color:#777;text-align:center}
table{border-collapse:collapse}
.matches,.summary{width:100%;margin:10px 0;font-size:14px}
.matches th,.matches td,.summary th,.summary td{border-bottom:1px solid #e6e6e6;padding:6px 8px;text-align:left;
vertical-align:top}
.matches th,.summary th{background:#f3f1ec;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.p{min-width:190px}
.matches td.name{min-width:170px}
.pill{display:inline-block;padding:1px 10px;border-radius:10px;font-size:13px;font-weight:700;color:#fff}
.pill.derived{background:#b3261e}.pill.independent{background:#1b7a2e}.pill.inconclusive{background:#b98900}
.heatmaps{display:flex;gap:32px;flex-wrap:wrap}
.heat{font-size:13px;margin:4px 0;font-variant-numeric:tabular-nums}
.heat caption{font-weight:600;text-align:left;padding-bottom:4px}
.heat th{padding:3px 8px;font-weight:600;background:#f3f1ec;white-space:nowrap}
.heat td.cell{width:86px;height:30px;text-align:center;border:1px solid #fff}
.heat td.empty{background:#eee;color:#999}
.legend{width:300px;margin:6px 0 4px}.legend .bar{height:12px;border-radius:3px;border:1px solid #ccc}
.legend .marks{position:relative;height:18px;font-size:12px;color:#555}
.legend .marks span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.legend .marks span:first-child{transform:none}.legend .marks span:last-child{transform:translateX(-100%)}
.terms{margin:6px 0}
.kv{font-size:14px;margin:8px 0}.kv th{text-align:left;vertical-align:top;padding:4px 14px 4px 0;
font-weight:600;white-space:nowrap;color:#444}.kv td{padding:4px 0}
pre.cmd{background:#1f2428;color:#e6edf3;padding:12px 14px;border-radius:8px;overflow-x:auto;font-size:13px}
dl.glossary dt{font-weight:700;margin-top:6px}dl.glossary dd{margin:0 0 0 16px}
@media print{body{background:#fff}.receipt{break-inside:auto;border:none}}
"""

# Records whether the page rendered: the browser test reads data-rendered after load ("ok" or "error").
_SCRIPT = (
    "(function(){var b=document.body;function fail(){b.dataset.rendered='error';}"
    "window.addEventListener('error',fail,true);document.addEventListener('securitypolicyviolation',fail);"
    "window.addEventListener('load',function(){var im=document.images;for(var i=0;i<im.length;i++){"
    "if(!im[i].complete||im[i].naturalWidth===0){fail();return;}}"
    "if(b.dataset.rendered!=='error'){b.dataset.rendered='ok';}});})();"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; "
    "base-uri 'none'; form-action 'none'"
)


def render_report(items: Sequence[ReportItem], *, title: str | None = None,
                  findings: Sequence[FindingItem] = ()) -> str:
    """The report page for checked receipts and auditors' findings: one HTML document with nothing to fetch. Each
    finding is shown in the headline of the receipt it embeds (``check_findings`` matched them)."""
    if not items:
        raise ReportError("no receipt to report on")
    concerning: dict[bytes, list[FindingItem]] = {}
    for f in findings:
        concerning.setdefault(f.receipt_sha256, []).append(f)
    of = [concerning.get(sha256(item.payload), []) for item in items]
    heading = _e(title or DEFAULT_TITLE)
    n = len(items)
    intro = (
        '<div class="intro">'
        f"<p>This page explains {'one signed receipt' if n == 1 else f'{n} signed receipts'} from a pawprint "
        "verifier. A receipt is the verifier's signed answer to one question: <b>does this language model descend "
        "from one of the base models in the registry?</b> The model's weights were never shared: the verifier "
        "saw only a fingerprint computed from them by the model's owner.</p>"
        "<p>Each receipt starts with the verdict in plain words, then two pictures, then the numbers behind the "
        "verdict, the registry it was checked against, the signature, and how to check all of it yourself.</p>"
        + (_summary(items, of) if n > 1 else "")
        + "</div>"
    )
    glossary = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _GLOSSARY)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="pawprint report"><title>{heading}</title>'
        f"<style>{_CSS}</style></head>\n"
        '<body data-rendered="pending"><main>'
        f"<h1>{heading}</h1>{intro}\n"
        + "\n".join(_receipt_section(item, i, n, of[i - 1]) for i, item in enumerate(items, 1))
        + f'\n<section class="receipt"><h2>Words used</h2><dl class="glossary">{glossary}</dl></section>'
        f"</main><script>{_SCRIPT}</script></body></html>\n"
    )
