"""Pictures in the flow: a model's invariant terms -> encoded vector -> dog, as the receipts carry them.

``picture_of`` encodes an invariant set (``verifier._encoder``), draws the dog (``verifier._render``) and returns
the protocol's ``Picture`` (encoder and renderer ids, the vector, its digest, the PNG's digest) with the PNG.
``redraw`` is the check anyone can make of a ``Picture``: redraw the PNG from the vector and compare digests.
"""

from __future__ import annotations

import numpy as np

from protocol import PICTURE_DIM, Picture, Receipt, sha256
from protocol.terms import InvariantSet
from verifier._encoder import Encoder
from verifier._render import RENDERER_ID, render_png, render_sheet
from verifier.errors import VerifierError


class PictureMismatch(VerifierError):
    """A picture's digests do not match what its vector draws."""

    status = "INVALID_ARGUMENT"


def vector_bytes(v: np.ndarray) -> bytes:
    a = np.ascontiguousarray(np.asarray(v), dtype="<f4")
    if a.shape != (PICTURE_DIM,):
        raise ValueError(f"a picture vector has {PICTURE_DIM} values, got shape {a.shape}")
    return a.tobytes()


def picture_of(inv: InvariantSet, encoder: Encoder) -> tuple[Picture, bytes]:
    """The encoded vector of ``inv`` and its dog: (the protocol record, the PNG bytes)."""
    raw = vector_bytes(encoder.encode(inv))
    png = render_png(np.frombuffer(raw, dtype="<f4"))
    return Picture(encoder.encoder_id, RENDERER_ID, raw, sha256(raw), sha256(png)), png


def vector_of(picture: Picture) -> np.ndarray:
    return np.frombuffer(picture.vector, dtype="<f4").astype(np.float32)


def redraw(picture: Picture) -> bytes:
    """The PNG drawn from ``picture``'s vector, checked against its digest (``PictureMismatch`` if not, or if
    the picture was drawn by another renderer, which cannot be checked here)."""
    if picture.renderer_id != RENDERER_ID:
        raise PictureMismatch(f"the picture was drawn by {picture.renderer_id}; this build draws {RENDERER_ID}")
    png = render_png(vector_of(picture))
    if sha256(png) != picture.picture_digest:
        raise PictureMismatch("the picture digest does not match the dog its vector draws")
    return png


def receipt_sheet(receipt: Receipt) -> bytes | None:
    """The receipt's submitted dog beside its best match's (the first match with a picture), labelled with the
    model's name as its owner gave it (if any), the base's name and the scores, names whole (``render_sheet``
    wraps them, never cuts them); every picture redrawn and checked first (``PictureMismatch``). ``None`` if the
    receipt has none."""
    if receipt.picture is None:
        return None
    mine = (["submitted model"] if receipt.model_name is None
            else [f"submitted: {receipt.model_name}", "(named by the owner, not verified)"])
    items = [(receipt.picture, [*mine, f"verdict: {receipt.verdict}"])]
    top = next((m for m in receipt.matches if m.picture is not None), None)
    if top is not None and top.picture is not None:
        label = [f"vs {top.name}", f"ICS {top.ics}", f"p {top.p_value}" if top.p_value else "", top.verdict]
        items.append((top.picture, [x for x in label if x]))
    for picture, _ in items:
        redraw(picture)
    return render_sheet([(vector_of(picture), lines) for picture, lines in items])
