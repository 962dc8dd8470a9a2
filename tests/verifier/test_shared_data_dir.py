"""Two verifier services on one data directory, as two processes behind one address would be (each with its own
``Registry`` and so its own SQLite connection and challenge store): each honours the other's challenges, a nonce
gets one receipt whichever process records it first, and the same signed stream gets that receipt from either.
The real two-process case is ``test_faults.py::test_two_verifier_processes_on_one_data_directory_...``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from owner._fingerprint import Fingerprint
from protocol import Bundle, Manifest, SignedMessage, open_challenge, sign_message
from tests.verifier.fixtures import FakeClock, Keys
from verifier import Chunk, NonceUsed, Registry, ServerConfig, VerifierService

pytest_plugins = ["tests.verifier.fixtures"]


def _services(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> tuple[VerifierService, VerifierService]:
    registry = Registry(tmp_path / "data")
    registry.add_base("llama-base", base_bundle, keys.trust())
    clock = FakeClock()
    config = ServerConfig(insecure_loopback=True)
    return (VerifierService(keys.verifier, keys.trust(), registry, config, clock=clock),
            VerifierService(keys.verifier, keys.trust(), Registry(tmp_path / "data"), config, clock=clock))


def _answer(service: VerifierService, keys: Keys, fp: Fingerprint) -> tuple[SignedMessage, list[Chunk]]:
    challenge = open_challenge(service.challenge(), keys.verifier.public_key)
    manifest = dataclasses.replace(fp.manifest, nonce=challenge.nonce)
    chunks = [Chunk(i, 0, fp.terms[t.name].data) for i, t in enumerate(manifest.tensors)]
    return sign_message(manifest, keys.owner, "manifest"), chunks


def _then(chunks: list[Chunk], action: Any) -> Iterator[Chunk]:
    yield from chunks
    action()


def _receipts(service: VerifierService) -> list[bytes]:
    return [r for _, _, r, _ in service.registry.submissions()]


def test_a_challenge_from_one_service_is_answered_at_the_other_once(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint
) -> None:
    a, b = _services(tmp_path, keys, base_bundle)
    header, chunks = _answer(a, keys, derived_fingerprint)
    receipt = b.submit(header, chunks)
    assert a.submit(header, chunks).payload == receipt.payload  # a learns the nonce is used: the same receipt
    other = dataclasses.replace(Manifest.decode(header.payload), created_at=1)
    with pytest.raises(NonceUsed):
        a.submit(sign_message(other, keys.owner, "manifest"), chunks)
    # A challenge neither service issued is unknown to both.
    stranger = dataclasses.replace(Manifest.decode(header.payload), nonce=b"\x07" * 32)
    for s in (a, b):
        with pytest.raises(Exception, match="unknown nonce"):
            s.submit(sign_message(stranger, keys.owner, "manifest"), chunks)
    assert _receipts(a) == _receipts(b) == [receipt.payload]


def test_the_other_service_answers_while_this_one_reads_the_stream(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint
) -> None:
    """b records the receipt after a checked the header but before a used the nonce: a sends b's receipt."""
    a, b = _services(tmp_path, keys, base_bundle)
    header, chunks = _answer(a, keys, derived_fingerprint)
    answered: list[SignedMessage] = []
    receipt = a.submit(header, _then(chunks, lambda: answered.append(b.submit(header, chunks))))
    assert receipt.payload == answered[0].payload
    assert _receipts(a) == [receipt.payload]


def test_the_other_service_answers_while_this_one_computes(
    tmp_path: Path, keys: Keys, base_bundle: Bundle, derived_fingerprint: Fingerprint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both used the nonce and computed; b recorded first: a's record is refused by the database, and a sends
    b's receipt. Another manifest in a's place would get NonceUsed."""
    a, b = _services(tmp_path, keys, base_bundle)
    header, chunks = _answer(a, keys, derived_fingerprint)
    answered: list[SignedMessage] = []
    record = a.registry.record_submission

    def b_first(*args: Any, **kwargs: Any) -> None:
        if not answered:
            answered.append(b.submit(header, chunks))
        record(*args, **kwargs)

    monkeypatch.setattr(a.registry, "record_submission", b_first)
    receipt = a.submit(header, chunks)
    assert receipt.payload == answered[0].payload
    assert _receipts(b) == [receipt.payload]
    with pytest.raises(NonceUsed):  # and the nonce is used in a's store now
        a.challenges.peek(Manifest.decode(header.payload).nonce)
