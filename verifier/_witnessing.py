"""The log's side of witnessing: send each new checkpoint to the witnesses, keep their cosignatures.

After an append the registry (``Registry.witness``) sends the latest checkpoint to every configured witness
as a C2SP tlog-witness add-checkpoint request (``POST <url>/add-checkpoint``), with a consistency proof from
the size the witness last cosigned. The log keeps no state about witnesses: it first assumes the witness has
seen the previous checkpoint and, when the witness answers 409 with its actual size, retries once with a proof
from that size. Each cosignature is checked against the witness keys the registry trusts (role ``witness``)
before it is stored in the checkpoint's note, so every reader of the log (receipts, ``LatestCheckpoint``, the
report) gets the cosigned note.

A witness that is down or refuses is reported, never fatal: the entry is in the log either way, and a client
whose policy needs that witness will refuse the checkpoint until it is cosigned (``pawprint registry witness``
asks again).
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol import (
    AddCheckpoint,
    NoteSignature,
    ProtocolError,
    PublicKey,
    SignatureError,
    parse_checkpoint,
    parse_cosignature_lines,
    verify_cosignature,
)
from protocol._witness import ADD_CHECKPOINT_PATH, MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE, cosignature_key_hash
from verifier._log import TransparencyLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WitnessSet:
    """Where the witnesses are (``urls``) and whose cosignatures the log keeps (``keys``: name and key of
    each trusted witness)."""

    urls: tuple[str, ...]
    keys: tuple[tuple[str, PublicKey], ...]
    timeout_s: float = 10.0


@dataclass
class Witnessed:
    """What one round of witnessing did: the checkpoint's size, who cosigned, who did not and why."""

    size: int
    cosigned: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"size": self.size, "cosigned": list(self.cosigned), "failed": dict(self.failed)}


class _Refused(Exception):
    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__(status)
        self.status, self.content_type, self.body = status, content_type, body


def witness_latest(tlog: TransparencyLog, witnesses: WitnessSet) -> Witnessed:
    """Send the log's latest checkpoint to each witness and store the valid cosignatures in its note."""
    size, note = tlog.latest()
    result = Witnessed(size)
    lines: list[NoteSignature] = []
    for url in witnesses.urls:
        try:
            got = _ask(tlog, url, size, note, witnesses)
        except _Refused as e:
            reason = e.body.decode("utf-8", "replace").strip()[:300]
            result.failed[url] = f"refused ({e.status}): {reason}"
            continue
        except (OSError, http.client.HTTPException) as e:
            result.failed[url] = f"unreachable: {e}"
            continue
        except ProtocolError as e:
            result.failed[url] = f"answered with no valid cosignature: {e}"
            continue
        lines.extend(got)
        result.cosigned.extend(s.name for s in got)
    if lines:
        tlog.add_cosignatures(size, lines)
    for url, reason in result.failed.items():
        log.warning("witness %s did not cosign the checkpoint of size %d: %s", url, size, reason)
    return result


def _ask(tlog: TransparencyLog, url: str, size: int, note: str, witnesses: WitnessSet) -> list[NoteSignature]:
    old = max(size - 1, 0)  # the witness most likely cosigned the checkpoint before this one
    for attempt in range(2):
        proof = tuple(tlog.consistency_proof(old, size)) if 0 < old < size else ()
        try:
            body = _post(url, AddCheckpoint(old, proof, note).to_bytes(), witnesses.timeout_s)
            return _valid_lines(body, note, witnesses)
        except _Refused as e:
            if e.status != 409 or not e.content_type.startswith(SIZE_CONTENT_TYPE) or attempt:
                raise
            text = e.body.decode("ascii", "replace").strip()
            if not text.isdigit() or int(text) > size:
                raise
            old = int(text)  # the witness's size: ask again with a proof from it
    raise AssertionError("unreachable")


def _post(url: str, body: bytes, timeout_s: float) -> bytes:
    request = urllib.request.Request(url.rstrip("/") + ADD_CHECKPOINT_PATH, data=body, method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return bytes(response.read(MAX_REQUEST_BYTES + 1))
    except urllib.error.HTTPError as e:
        raise _Refused(e.code, e.headers.get("Content-Type", ""), e.read(4096)) from None


def _valid_lines(body: bytes, note: str, witnesses: WitnessSet) -> list[NoteSignature]:
    """The answer's cosignatures by trusted witnesses, each verified on this note; others are dropped."""
    signed = parse_checkpoint(note)
    known = {cosignature_key_hash(name, key): (name, key) for name, key in witnesses.keys}
    kept = []
    for line in parse_cosignature_lines(body):
        if known.get(line.key_hash, ("", None))[0] != line.name:
            continue
        name, key = known[line.key_hash]
        try:
            verify_cosignature(type(signed)(signed.checkpoint, (line,)), name, key)
        except SignatureError as e:
            raise ProtocolError(f"the cosignature by {name} does not verify") from e
        kept.append(line)
    if not kept:
        raise ProtocolError("no cosignature by a trusted witness (role witness in the trust store)")
    return kept


def check_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """Witness URLs as given on a command line: http(s) only."""
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a witness URL starts with http:// or https://, not {url!r:.80}")
    return tuple(urls)
