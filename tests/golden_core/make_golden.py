"""Write the golden files of ``tests/test_core_install.py``: what an auditor with only the core install (no extra,
no torch) is handed and must be able to check with ``pawprint bundle verify``, ``receipt verify`` and
``registry audit``.

- ``trust.json``: the corpus trust store (owner, vendor, verifier, log and a revoked owner key).
- ``bundle.bundle``: the corpus owner's offline bundle; ``bundle-tampered.bundle``: the same bundle with one
  value of one term changed after signing (its digest no longer matches the signed manifest).
- ``log-copy.json``: a copy of a registry's log (``pawprint-log-copy/1``, as ``pawprint registry export``
  writes it: the latest checkpoint note and every entry) with three entries: the vendor registers
  ``golden-base`` and ``golden-other``, then revokes ``golden-other``. The registry is built by the verifier
  (``verifier.Registry``) in a temporary folder and only its log is kept. ``log-copy-tampered.json``: the
  same copy with the revocation's entry replaced by another (re-signed) revocation, so that the entries no
  longer hash to the signed checkpoint.
- ``checkpoint-1.note``: the log's checkpoint after its first entry, as an auditor saved it then;
  ``checkpoint-forked.note``: a checkpoint of size 1 signed by the log key over another first entry (the log
  showed this auditor a different history: the audit must fail).
- ``receipt.receipt``: a receipt signed by the corpus verifier whose match is ``golden-base``, entry 0 of the
  registry, against the registry's latest checkpoint, calibrated against the shipped null (``receipt verify``
  re-derives its z, p and verdict); ``receipt-tampered.receipt``: its payload with the ICS edited, the
  signature kept.
- ``verifier.pub``, ``log.pub``: the public keys to check them with.

Deterministic inputs: the corpus's fixed Ed25519 keys (``scripts/make_corpus.py``), its synthetic terms and a
fixed clock, so every file is the same bytes on every run. The files are committed, not rebuilt by the test:
they are what an auditor holds, and must stay readable. Run with the full install (``make install``) after a
deliberate format change: ``.venv/bin/python tests/golden_core/make_golden.py``, review and commit the result.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import make_corpus as corpus  # noqa: E402

from protocol import (  # noqa: E402
    RECEIPT_FORMAT,
    REGISTER,
    REVOKE,
    Bundle,
    Checkpoint,
    LogEntry,
    MerkleTree,
    Receipt,
    RegistryState,
    SignedMessage,
    Tensor,
    TrustStore,
    encode,
    leaf_hash,
    parse_checkpoint,
    sign_checkpoint,
    sign_message,
)

NAMES = ("golden-base", "golden-other")


def _vendor_bundle(tag: str) -> Bundle:
    manifest = corpus._manifest(corpus.VENDOR, weight_commitment=corpus._commitment(tag))
    return Bundle.create(manifest, corpus._terms(), corpus.VENDOR)


def _tampered_bundle(good: Bundle) -> bytes:
    name, t = next(iter(good.terms.items()))
    data = bytearray(t.data)
    data[0] ^= 0x01  # one bit of one float32 of the first term
    terms = {**good.terms, name: Tensor(t.dtype, t.shape, bytes(data))}
    return Bundle(good.signed, terms).to_bytes()


def _registry(out: Path, trust: TrustStore) -> tuple[str, str, list[bytes], list[Bundle]]:
    """Build the registry in ``out``; returns the checkpoint after entry 0, the latest, every entry and the
    registered bundles."""
    from verifier import Registry

    clock = itertools.count(corpus.NOW, 60)
    registry = Registry(out, clock=lambda: float(next(clock)), log_key=corpus.LOG, origin=corpus.ORIGIN)
    try:
        bundles = [_vendor_bundle(name) for name in NAMES]
        first = ""
        for name, bundle in zip(NAMES, bundles, strict=True):
            statement = corpus._statement(REGISTER, name, digest=bundle.manifest_digest)
            registry.publish(statement.sign(corpus.VENDOR), bundle, trust)
            if not first:
                first = registry.latest_checkpoint()
        revoke = corpus._statement(REVOKE, NAMES[1], digest=bundles[1].manifest_digest)
        registry.revoke(revoke.sign(corpus.VENDOR), trust)
        return first, registry.latest_checkpoint(), registry.entries(0), bundles
    finally:
        registry.close()


def _log_copy(checkpoint: str, entries: list[bytes]) -> bytes:
    """The ``pawprint-log-copy/1`` document ``pawprint registry export`` writes."""
    doc = {"format": "pawprint-log-copy/1", "checkpoint": checkpoint, "entries": [e.hex() for e in entries]}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def _other_revocation(entry: bytes) -> bytes:
    """``entry`` (a revocation) with its statement replaced by another, well signed, revocation."""
    old = LogEntry.from_bytes(entry)
    statement = corpus._statement(REVOKE, NAMES[1], digest=bytes(32), reason="another reason")
    return dataclasses.replace(old, statement=statement.sign(corpus.VENDOR)).to_bytes()


def _forked_checkpoint(saved: str) -> str:
    """A checkpoint of the same size as ``saved``, signed by the log key, over another first entry."""
    other = corpus._vendor_manifest("forked")
    entry = LogEntry(corpus._statement(REGISTER, NAMES[0], other).sign(corpus.VENDOR),
                     sign_message(other, corpus.VENDOR, "bundle"), corpus.NOW)
    tree = MerkleTree([leaf_hash(entry.to_bytes())])
    cp = parse_checkpoint(saved).checkpoint
    return sign_checkpoint(Checkpoint(cp.origin, 1, tree.root(1), cp.time), corpus.LOG).text


def _receipt(checkpoint: str, base: Bundle) -> Receipt:
    """The verifier's receipt for a submission matched with ``golden-base`` (entry 0), its z, p and verdict
    calibrated against the shipped null under the default rule, so that ``receipt verify`` re-derives them."""
    from verifier import Thresholds, decide, load_null, recheck_verdict, verdict_of
    from verifier._compare import _calibrated

    null, rule = load_null(), Thresholds().rule
    # 2,048 shared probe tokens: the null widens its spread when fewer are shared (pawprint-null/2), so a match
    # needs a realistic overlap to stay ``derived``.
    bare = corpus._match(name=NAMES[0], entry=base.manifest_digest, vendor_key_id=corpus.VENDOR.key_id, log_index=0,
                         z=None, p_value=None, common_probe_tokens=2048)
    matches = decide([_calibrated(bare, null)])
    cp = parse_checkpoint(checkpoint).checkpoint
    receipt = corpus._receipt(corpus._log(), registry=RegistryState(cp.size, cp.root), checkpoint=checkpoint,
                              matches=tuple(matches), compared=1, verdict=verdict_of(matches), verdict_rule=rule,
                              null_id=null.null_id)
    if recheck_verdict(receipt.matches, receipt.verdict, rule, null, receipt.null_id) is not True:
        raise AssertionError("the golden receipt's verdict does not recheck")
    return receipt


def write(out: Path) -> None:
    trust = corpus._trust_store()
    files: dict[str, bytes] = {}
    owner_bundle = Bundle.create(corpus._manifest(), corpus._terms(), corpus.OWNER)
    files["bundle.bundle"] = owner_bundle.to_bytes()
    files["bundle-tampered.bundle"] = _tampered_bundle(owner_bundle)

    with tempfile.TemporaryDirectory() as tmp:
        first, latest, entries, bundles = _registry(Path(tmp) / "registry", trust)
    files["log-copy.json"] = _log_copy(latest, entries)
    files["log-copy-tampered.json"] = _log_copy(latest, [*entries[:2], _other_revocation(entries[2])])
    files["checkpoint-1.note"] = first.encode()
    files["checkpoint-forked.note"] = _forked_checkpoint(first).encode()

    receipt = _receipt(latest, bundles[0])
    payload = encode(receipt.to_map())
    files["receipt.receipt"] = corpus._signed(payload, corpus.VERIFIER, "receipt").to_bytes(RECEIPT_FORMAT)
    tampered = dataclasses.replace(receipt, matches=(dataclasses.replace(receipt.matches[0], ics="0.531250"),))
    files["receipt-tampered.receipt"] = SignedMessage(
        encode(tampered.to_map()), corpus.VERIFIER.sign("receipt", payload), corpus.VERIFIER.public_key,
    ).to_bytes(RECEIPT_FORMAT)

    for name, data in files.items():
        (out / name).write_bytes(data)
    trust.save(out / "trust.json")
    corpus.VERIFIER.public_key.save(out / "verifier.pub")
    corpus.LOG.public_key.save(out / "log.pub")


if __name__ == "__main__":
    write(HERE)
    print(f"wrote {HERE}")
