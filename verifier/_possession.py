"""The verifier's check that an owner holds the weights it commits to, before anything is computed.

A submission whose manifest carries a possession proof (``protocol._possession``) must open exactly the chunks
the challenge's nonce and the claimed (``weights-v2``) commitment select, each against that commitment; a proof
that does not is refused (``PERMISSION_DENIED``), as is a submission without one when the verifier requires it
(``ServerConfig.require_possession``). The receipt then records what was shown (``Receipt.possession``). A
framer who copied another owner's commitment from a receipt holds neither the tensor leaves nor the chunks, so
it cannot answer. The opened chunks (``k x chunk_size`` bytes of weights, 192 by default) are checked and
dropped: the verifier stores the receipt, never the manifest.
"""

from __future__ import annotations

from protocol import (
    POSSESSION_ID,
    Manifest,
    PossessionError,
    ProtocolError,
    commitment_chunk_size,
    verify_possession,
)
from verifier.errors import PermissionDenied


def check_possession(manifest: Manifest, nonce: bytes, *, required: bool = False) -> str | None:
    """The receipt's ``possession`` record if ``manifest`` shows possession of its committed weights, ``None``
    if it does not try (and none is ``required``); ``PermissionDenied`` otherwise."""
    proof = manifest.possession
    wc = manifest.weight_commitment
    if proof is None:
        if required:
            raise PermissionDenied("this verifier requires proof of possession of the committed weights: submit "
                                   "with a chunked (weights-v2) commitment and its openings")
        return None
    try:
        verify_possession(proof, nonce=nonce, root=wc.root, commitment_id=wc.id, tensors=wc.tensors)
        chunk = commitment_chunk_size(wc.id)
    except (PossessionError, ProtocolError) as e:
        raise PermissionDenied(f"possession of the committed weights not shown: {e}") from e
    return possession_record(len(proof.openings), chunk or 0)


def possession_record(openings: int, chunk_size: int) -> str:
    """What a receipt says was shown: the scheme, the number of openings and the chunk size in bytes."""
    return f"{POSSESSION_ID};openings={openings};chunk={chunk_size}"
