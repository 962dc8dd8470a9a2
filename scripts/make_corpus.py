"""Generate the hostile-input corpus in ``tests/corpus/``: signed files pawprint must accept or refuse.

Every case is one file and one entry of ``index.json``: its kind (which decoder or verifier reads it), whether
it is valid, the error class and a piece of the message a refusal must carry, and a note saying in plain words
what the attack is. ``tests/test_corpus.py`` runs every case through the real entry point of its kind, and
regenerates the corpus into a temporary folder to check that the committed bytes are exactly what this script
writes, so a change of encoding or of a check cannot slip by unnoticed.

Everything is deterministic: fixed Ed25519 seeds (Ed25519 signatures are deterministic), a fixed clock, and
term values computed from their indices (exact float32 values, no BLAS, no RNG), so the bytes are the same on
every machine. The terms are synthetic rather than computed from a tiny model: the decoders and verifiers
never look at what the numbers mean, and a model's float arithmetic would tie the golden bytes to one CPU and
one torch build. Everything else (probe set, groups, layer and term layout, tensor table, weight commitment
over a checkpoint's tensor digests) has the shape the owner agent produces.

Run ``python scripts/make_corpus.py`` after a deliberate format change, review the diff, and commit it.
It must never write outside the folder it is given.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import struct
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from protocol import (  # noqa: E402
    MESSAGE_VERSION,
    RECEIPT_FORMAT,
    REGISTER,
    REVOKE,
    Bundle,
    Challenge,
    Checkpoint,
    LogEntry,
    Manifest,
    Match,
    MerkleTree,
    NoteSignature,
    NoteSigningKey,
    Picture,
    PrivateKey,
    ProbeSpec,
    PublicKey,
    Receipt,
    RegistryState,
    RegistryStatement,
    Role,
    SignedCheckpoint,
    SignedMessage,
    SubmissionLimits,
    Tensor,
    TensorDigest,
    TermGroup,
    TermScoreRecord,
    TrustStore,
    WeightCommitment,
    encode,
    key_hash,
    leaf_hash,
    legacy_key_hash,
    note_key_hash,
    sha256,
    sign_checkpoint,
    sign_message,
    tensor_name,
    weight_commitment,
)
from protocol._pb import pawprint_pb2  # noqa: E402

INDEX = "index.json"
NOW = 1_700_000_000
ORIGIN = "pawprint/registry/corpus"
TTL = 900
METHOD = "pawprint"
METHOD_ID = ("pawprint-terms/2(fold-norms,centre-layernorm,whiten-rows(ridge=1e-3),ffn=W((XWg)*(XWu)Wd)W(X)^T,"
             "per-head-qkv)")
TERMS = ("attn_qk", "attn_vo", "ffn")
LAYERS = (0, 1)
PRESENT = (True, True, True, False)  # m = 3: every term is a 3 x 3 matrix
PROBES = ProbeSpec("corpus-probes", 1, "corpus: four fixed word-start tokens", ("▁the", "▁of", "▁and", "▁zebra"))
OTHER_PROBES = ProbeSpec("other-probes", 1, "corpus: a probe set no challenge names", ("▁a", "▁b"))
MODEL: dict[str, str | int | bool] = {
    "family": "llama", "format": "safetensors", "hidden_size": 16, "intermediate_size": 32, "n_heads": 2,
    "n_kv_heads": 2, "n_layers": 2, "tied_embeddings": False, "vocab_size": 64,
}
AGENT = "pawprint-agent/0.1.0"


ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, the order of the base point
# The identity point as a public key (small order): with R = identity and S = 0, the cofactorless check
# [S]B == R + [k]A holds for every message. Nobody holds its private key; everybody can "sign" with it.
# The identity point as a public key: the protocol refuses it (protocol/_keys.py), so the attacker's tool
# builds the object without the check, to write what an attacker would send.
WEAK_KEY = object.__new__(PublicKey)
object.__setattr__(WEAK_KEY, "raw", b"\x01" + bytes(31))
WEAK_SIGNATURE = b"\x01" + bytes(63)


def _key(name: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(b"pawprint corpus key: " + name.encode()).digest())


OWNER, VENDOR, VERIFIER, LOG, ATTACKER, REVOKED = (
    _key(n) for n in ("owner", "vendor", "verifier", "log", "attacker", "revoked"))


def _nonce(name: str) -> bytes:
    return hashlib.sha256(b"pawprint corpus nonce: " + name.encode()).digest()


# Challenges the test's challenge store issues, in this order (see "context" in index.json).
LIVE, USED, EXPIRED, TIGHT, UNKNOWN = (_nonce(n) for n in ("live", "used", "expired", "tight", "unknown"))
SKETCHED = _nonce("sketched")  # a live challenge asking for 16 x 16 sketches (issue 16)
SKETCH = 16
TIGHT_LIMITS = SubmissionLimits(max_tensor_bytes=16)


# ------------------------------------------------------------------------------------------------ values
def _f32(values: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _term(layer: int, t: int, m: int = 3) -> Tensor:
    """An m x m F32 term with exact values that differ per layer and term."""
    values = [((i * 7 + j * 3 + layer * 5 + t) % 11 - 5) / 4 for i in range(m) for j in range(m)]
    return Tensor("F32", (m, m), _f32(values))


def _terms(m: int = 3) -> dict[str, Tensor]:
    return {tensor_name(0, layer, term): _term(layer, t, m) for layer in LAYERS for t, term in enumerate(TERMS)}


def _table(terms: Mapping[str, Tensor]) -> tuple[TensorDigest, ...]:
    return tuple(TensorDigest(name, t.dtype, t.shape, sha256(t.data)) for name, t in terms.items())


def _commitment(tag: str = "") -> WeightCommitment:
    """The commitment over a tiny llama checkpoint's tensor digests (the digests stand in for its bytes)."""
    shapes = {"model.embed_tokens.weight": (64, 16), "model.norm.weight": (16,), "lm_head.weight": (64, 16)}
    for layer in LAYERS:
        for part, shape in (("self_attn.q_proj", (16, 16)), ("self_attn.k_proj", (16, 16)),
                            ("self_attn.v_proj", (16, 16)), ("self_attn.o_proj", (16, 16)),
                            ("mlp.gate_proj", (32, 16)), ("mlp.up_proj", (32, 16)), ("mlp.down_proj", (16, 32)),
                            ("input_layernorm", (16,)), ("post_attention_layernorm", (16,))):
            shapes[f"model.layers.{layer}.{part}.weight"] = shape
    digests = [TensorDigest(n, "F32", s, sha256(f"{tag}{n}".encode())) for n, s in shapes.items()]
    total = sum(4 * _prod(d.shape) for d in digests)
    return WeightCommitment(weight_commitment(digests), len(digests), total)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _group(probes: ProbeSpec = PROBES, present: tuple[bool, ...] = PRESENT, **changes: Any) -> TermGroup:
    group = TermGroup(probes, present, LAYERS, METHOD, METHOD_ID, TERMS)
    return dataclasses.replace(group, **changes) if changes else group


def _manifest(key: PrivateKey = OWNER, nonce: bytes | None = None, terms: Mapping[str, Tensor] | None = None,
              **changes: Any) -> Manifest:
    terms = _terms() if terms is None else terms
    manifest = Manifest(
        owner_key_id=key.key_id, nonce=nonce, created_at=NOW - 3600, agent=AGENT, model=MODEL, groups=(_group(),),
        tensors=_table(terms), weight_commitment=_commitment(), keep_invariants=False,
    )
    return dataclasses.replace(manifest, **changes) if changes else manifest


def _signed(payload: bytes, key: PrivateKey, kind: str) -> SignedMessage:
    return SignedMessage(payload, key.sign(kind, payload), key.public_key)


def _edit_map(payload: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The canonical bytes of ``payload``'s map after ``edit``: what an attacker who can sign would send."""
    value = msgpack.unpackb(payload, raw=False)
    edit(value)
    return encode(value)


def _setter(key: str, value: object, *path: str | int) -> Callable[[dict[str, Any]], None]:
    """An ``_edit_map`` edit setting ``key`` to ``value`` in the map found at ``path``."""
    def edit(v: dict[str, Any]) -> None:
        target: Any = v
        for step in path:
            target = target[step]
        target[key] = value
    return edit


# -------------------------------------------------------------------------------------- raw msgpack
def _raw_map(pairs: Sequence[tuple[str, bytes]]) -> bytes:
    """A msgpack map from already-encoded values, in the order given (duplicates and disorder allowed)."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + b"".join(msgpack.packb(k) + v for k, v in pairs)


def _bundle_pairs(bundle: Bundle) -> list[tuple[str, bytes]]:
    s = bundle.signed
    return [("format", msgpack.packb("pawprint-bundle/1")), ("manifest", msgpack.packb(s.payload)),
            ("public_key", msgpack.packb(s.public_key.raw)), ("signature", msgpack.packb(s.signature)),
            ("terms", encode({n: t.to_map() for n, t in bundle.terms.items()}))]


def _bundle_bytes(manifest: Manifest, terms: Mapping[str, Tensor], key: PrivateKey = OWNER,
                  kind: str = "bundle") -> bytes:
    payload = encode(manifest.to_map())
    return Bundle(_signed(payload, key, kind), dict(terms)).to_bytes()


def _pb(signed: SignedMessage) -> bytes:
    return pawprint_pb2.SignedPayload(payload=signed.payload, signature=signed.signature,
                                      public_key=signed.public_key.raw).SerializeToString(deterministic=True)


# ------------------------------------------------------------------------------------------- the log
def _vendor_manifest(tag: str) -> Manifest:
    return _manifest(VENDOR, weight_commitment=_commitment(tag), created_at=NOW - 86400)


def _statement(action: str, name: str, manifest: Manifest | None = None, *, digest: bytes | None = None,
               **changes: Any) -> RegistryStatement:
    if digest is None:
        if manifest is None:
            raise ValueError("a statement names a manifest or its digest")
        digest = sha256(manifest.encode())
    fields: dict[str, Any] = {"licence": "apache-2.0", "release_date": "2023-11-01",
                              "description": "a corpus base model"} if action == REGISTER else {"reason": "withdrawn"}
    fields.update(changes)
    return RegistryStatement(action, name, VENDOR.key_id, digest, NOW - 7200, **fields)


@dataclasses.dataclass
class Log:
    entries: list[bytes]
    leaves: list[bytes]
    tree: MerkleTree
    manifests: list[Manifest]

    def checkpoint(self, size: int, key: PrivateKey = LOG, origin: str = ORIGIN) -> str:
        # Signed when its last entry was appended (entry i is logged at NOW - 6000 + 1000 i): an entry dated
        # before a checkpoint that does not include it would be backdated, which the audit refuses.
        return sign_checkpoint(Checkpoint(origin, size, self.tree.root(size), NOW - 7000 + 1000 * size), key).text


def _log() -> Log:
    a, b, c, d = (_vendor_manifest(t) for t in ("base", "other", "admin", "late"))
    sign_b = lambda m: sign_message(m, VENDOR, "bundle")  # noqa: E731
    entries = [
        LogEntry(_statement(REGISTER, "corpus-base", a).sign(VENDOR), sign_b(a), NOW - 6000),
        LogEntry(_statement(REGISTER, "corpus-other", b).sign(VENDOR), sign_b(b), NOW - 5000),
        LogEntry(_statement(REVOKE, "corpus-other", b).sign(VENDOR), None, NOW - 4000),
        LogEntry(_statement(REGISTER, "corpus-admin", c).sign(LOG), sign_b(c), NOW - 3000),  # an administrator's
        LogEntry(_statement(REGISTER, "corpus-late", d).sign(VENDOR), sign_b(d), NOW - 2000),
    ]
    return _log_of([e.to_bytes() for e in entries], [a, b, c, d])


def _log_of(data: list[bytes], manifests: list[Manifest]) -> Log:
    leaves = [leaf_hash(d) for d in data]
    return Log(data, leaves, MerkleTree(leaves), manifests)


# ------------------------------------------------------------------------------------------- corpus
@dataclasses.dataclass
class Corpus:
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def ok(self, file: str, kind: str, data: bytes, note: str) -> None:
        self._add(file, kind, data, {"valid": True, "note": note})

    def bad(self, file: str, kind: str, data: bytes, error: str, message: str, note: str,
            known_bug: str | None = None) -> None:
        case: dict[str, Any] = {"valid": False, "error": error, "message": message, "note": note}
        if known_bug:
            case["known_bug"] = known_bug
        self._add(file, kind, data, case)

    def _add(self, file: str, kind: str, data: bytes, case: dict[str, Any]) -> None:
        path = f"{kind}/{file}"
        if path in self.files:
            raise ValueError(f"two cases write {path}")
        self.files[path] = data
        self.cases.append({"file": path, "kind": kind, **case})


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode()


def build() -> dict[str, bytes]:
    """Every file of the corpus, by path relative to the corpus folder, ``index.json`` included."""
    c = Corpus()
    log = _log()
    trust = _trust_store()
    _bundles(c)
    _manifests(c)
    _challenges(c)
    _receipts(c, log)
    _checkpoints(c, log)
    _inclusion_proofs(c, log)
    _consistency_proofs(c, log)
    _statements(c, log)
    _log_entries(c, log)
    _audits(c, log)
    _trust_cases(c, trust)
    _invariants(c)
    context = {
        "now": NOW, "origin": ORIGIN, "ttl_s": TTL, "trust": "trust/valid.json",
        "verifier_public_key": VERIFIER.public_key.raw.hex(), "log_public_key": LOG.public_key.raw.hex(),
        "bundle_roles": [Role.OWNER.value, Role.VENDOR.value],
        "challenges": [
            {"nonce": EXPIRED.hex(), "issued_at": NOW - 1000, "limits": None, "used": False},
            {"nonce": LIVE.hex(), "issued_at": NOW, "limits": None, "used": False},
            {"nonce": USED.hex(), "issued_at": NOW, "limits": None, "used": True},
            {"nonce": TIGHT.hex(), "issued_at": NOW, "limits": TIGHT_LIMITS.to_map(), "used": False},
            {"nonce": SKETCHED.hex(), "issued_at": NOW, "limits": None, "used": False, "sketch": SKETCH},
        ],
        "challenge": {"layers": "last2", "method": METHOD, "probe_sets": [PROBES.to_map()],
                      "registry": {"size": 5, "root": log.tree.root(5).hex()}},
        "check_at": NOW + 10,
    }
    c.files[INDEX] = _json({"format": "pawprint-corpus/1", "context": context, "cases": c.cases})
    return c.files


def _trust_store() -> TrustStore:
    trust = TrustStore()
    trust.add(OWNER.public_key, Role.OWNER, name="corpus owner")
    trust.add(VENDOR.public_key, Role.VENDOR, name="corpus vendor")
    trust.add(VERIFIER.public_key, Role.VERIFIER, name="corpus verifier")
    trust.add(LOG.public_key, Role.REGISTRY, name="corpus log")
    trust.add(REVOKED.public_key, Role.OWNER, name="corpus revoked owner")
    trust.revoke(REVOKED.key_id)
    return trust


# ---------------------------------------------------------------------------------------------- bundles
def _bundles(c: Corpus) -> None:
    k = "bundle"
    terms = _terms()
    good = Bundle.create(_manifest(), terms, OWNER)
    data = good.to_bytes()
    c.ok("valid.bundle", k, data, "the owner's offline bundle of a tiny llama: 2 layers x 3 terms of 3 x 3")
    c.ok("valid-vendor.bundle", k, Bundle.create(_manifest(VENDOR), terms, VENDOR).to_bytes(),
         "the same terms signed by a vendor key (bundles are accepted from owners and vendors)")
    c.ok("valid-keep.bundle", k, _bundle_bytes(_manifest(keep_invariants=True), terms),
         "a bundle whose owner asks the verifier to keep the invariants")

    # Signatures and keys.
    c.bad("online-kind.bundle", k, _bundle_bytes(_manifest(), terms, kind="manifest"), "Unauthenticated",
          "signature verification failed", "signature over another kind: the manifest is signed as an online "
          "'manifest', not as an offline 'bundle'")
    c.bad("receipt-kind.bundle", k, _bundle_bytes(_manifest(), terms, kind="receipt"), "Unauthenticated",
          "signature verification failed", "signature over another kind: signed under the receipt domain")
    sig = bytearray(good.signed.signature)
    sig[0] ^= 1
    c.bad("flipped-signature.bundle", k,
          Bundle(SignedMessage(good.signed.payload, bytes(sig), OWNER.public_key), terms).to_bytes(),
          "Unauthenticated", "signature verification failed", "one bit of the signature flipped")
    c.bad("swapped-key.bundle", k,
          Bundle(SignedMessage(good.signed.payload, good.signed.signature, VENDOR.public_key), terms).to_bytes(),
          "Unauthenticated", "signature verification failed",
          "the owner's signature with the vendor's public key put beside it")
    c.bad("attacker.bundle", k, Bundle.create(_manifest(ATTACKER), terms, ATTACKER).to_bytes(), "Unauthenticated",
          "not known to this verifier", "wrong key id: a good signature by a key the trust store does not list")
    c.bad("revoked-key.bundle", k, Bundle.create(_manifest(REVOKED), terms, REVOKED).to_bytes(), "Unauthenticated",
          "not known to this verifier", "signed by an owner key that the trust store has revoked")
    c.bad("verifier-role.bundle", k, Bundle.create(_manifest(VERIFIER), terms, VERIFIER).to_bytes(),
          "PermissionDenied", "not trusted as vendor", "signed by a trusted key of the wrong role (the verifier's)")
    c.bad("impersonation.bundle", k, _bundle_bytes(_manifest(OWNER), terms, key=ATTACKER), "InvalidSubmission",
          "names another owner key", "the attacker signs a manifest that names the trusted owner's key id")
    weak_payload = _manifest(owner_key_id=WEAK_KEY.key_id).encode()
    c.bad("weak-key.bundle", k, Bundle(SignedMessage(weak_payload, WEAK_SIGNATURE, WEAK_KEY), terms).to_bytes(),
          "FormatError", "point of small order", "a small-order public key (the identity point) with "
          "the signature (identity, 0) that verifies for any message under a cofactorless check",
          )
    c.bad("zero-signature.bundle", k,
          Bundle(SignedMessage(good.signed.payload, bytes(64), OWNER.public_key), terms).to_bytes(),
          "Unauthenticated", "signature verification failed", "an all-zero signature")
    c.bad("short-signature.bundle", k,
          Bundle(SignedMessage(good.signed.payload, good.signed.signature[:63], OWNER.public_key), terms).to_bytes(),
          "Unauthenticated", "signature verification failed", "the signature one byte too short")

    # The terms against the signed table.
    def with_terms(**changes: Tensor | None) -> dict[str, Tensor]:
        out = dict(terms)
        for name, t in changes.items():
            if t is None:
                del out[name]
            else:
                out[name] = t
        return out

    first = tensor_name(0, 0, "attn_qk")
    tampered = bytearray(terms[first].data)
    tampered[5] ^= 0x40
    c.bad("tensor-digest-mismatch.bundle", k,
          Bundle(good.signed, with_terms(**{first: Tensor("F32", (3, 3), bytes(tampered))})).to_bytes(),
          "InvalidSubmission", "bytes do not match the manifest's SHA-256",
          "tensor digest mismatch: one term's bytes changed after signing")
    for label, bad_value in (("nan", float("nan")), ("inf", float("inf"))):
        values = list(struct.unpack("<9f", terms[first].data))
        values[4] = bad_value
        odd = with_terms(**{first: Tensor("F32", (3, 3), _f32(values))})
        c.bad(f"{label}-term.bundle", k, Bundle.create(_manifest(terms=odd), odd, OWNER).to_bytes(),
              "InvalidSubmission", "contains NaN or infinity",
              f"{label.upper()} in a term, correctly signed and digested: the verifier must refuse non-finite terms")
    c.bad("missing-term.bundle", k, Bundle(good.signed, with_terms(**{first: None})).to_bytes(),
          "InvalidSubmission", "not exactly the tensors its manifest lists", "a term the manifest lists is missing")
    extra = with_terms(**{"model.embed_tokens.weight": Tensor("F32", (4, 4), _f32([0.5] * 16))})
    c.bad("smuggled-tensor.bundle", k, Bundle(good.signed, extra).to_bytes(), "InvalidSubmission",
          "not exactly the tensors its manifest lists",
          "an extra tensor, named like a weight, that the signed manifest does not list")
    flat = with_terms(**{first: Tensor("F32", (9,), terms[first].data)})
    c.bad("reshaped-term.bundle", k, Bundle(good.signed, flat).to_bytes(), "InvalidSubmission",
          "does not match the manifest", "a term's bytes with the right digest but shape [9] instead of [3, 3]")
    as_i32 = with_terms(**{first: Tensor("I32", (3, 3), terms[first].data)})
    c.bad("retyped-term.bundle", k, Bundle(good.signed, as_i32).to_bytes(), "InvalidSubmission",
          "does not match the manifest", "a term's bytes with the right digest relabelled as I32")

    # Signed, but the manifest itself is not what a verifier accepts.
    f16 = {n: (Tensor("F16", (3, 3), bytes(18)) if n == first else t) for n, t in terms.items()}
    c.bad("f16-term.bundle", k, Bundle.create(_manifest(terms=f16), f16, OWNER).to_bytes(), "InvalidSubmission",
          "expected F32", "a term declared F16 in a signed table (terms are F32 only)")
    swapped = dict(reversed(list(terms.items())))
    c.bad("table-order.bundle", k, Bundle.create(_manifest(terms=swapped), swapped, OWNER).to_bytes(),
          "InvalidSubmission", "does not list the groups' terms in order",
          "the tensor table lists the terms in another order than the groups define")
    c.bad("wrong-term-names.bundle", k,
          _bundle_bytes(_manifest(groups=(_group(terms=("attn_qk", "attn_vo", "mlp")),)), terms),
          "InvalidSubmission", "group 0: terms", "a group names a term the comparison does not know")
    none = {n: Tensor("F32", (0, 0), b"") for n in terms}
    c.bad("no-probe-rows.bundle", k,
          Bundle.create(_manifest(terms=none, groups=(_group(present=(False,) * 4),)), none, OWNER).to_bytes(),
          "InvalidSubmission", "none of the probe tokens", "zero-length terms: the model has none of the probe tokens")
    c.bad("nonce.bundle", k, _bundle_bytes(_manifest(nonce=LIVE), terms), "InvalidSubmission",
          "must not carry a challenge nonce", "an offline bundle carrying an online challenge's nonce")
    c.bad("present-mismatch.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v["groups"][0].__setitem__("present", [True, True, True])),
          "InvalidSubmission", "entries for 4 probe tokens", "the presence mask is shorter than the probe set")
    c.bad("layers-unsorted.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v["groups"][0].__setitem__("layers", [1, 0])),
          "InvalidSubmission", "strictly increasing", "the layers of a group are not in increasing order")
    c.bad("manifest-extra-field.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v.__setitem__("comment", "ignore me")),
          "InvalidSubmission", "unexpected ['comment']", "the signed manifest has a field version 1 does not know")
    c.bad("manifest-version.bundle", k, _bundle_bytes_edit(terms, lambda v: v.__setitem__("version", 2)),
          "InvalidSubmission", "unsupported version 2", "a manifest of a future version")
    c.bad("manifest-bool-int.bundle", k, _bundle_bytes_edit(terms, lambda v: v.__setitem__("created_at", True)),
          "InvalidSubmission", "got a boolean", "a boolean where an integer time is due")
    c.bad("manifest-negative.bundle", k, _bundle_bytes_edit(terms, lambda v: v.__setitem__("created_at", -1)),
          "InvalidSubmission", "must be at least 0", "a negative creation time")
    c.bad("key-id-uppercase.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v.__setitem__("owner_key_id", OWNER.key_id.upper())),
          "InvalidSubmission", "not a key id", "the owner key id spelled in uppercase hex (one spelling only)")
    c.bad("commitment-short.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v["weight_commitment"].__setitem__("root", bytes(31))),
          "InvalidSubmission", "expected 32 bytes, got 31", "a weight commitment root one byte short")
    c.bad("model-nested.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v["model"].__setitem__("family", ["llama"])),
          "InvalidSubmission", "manifest.model must map", "a model fact that is a list rather than a scalar")
    c.bad("duplicate-table-entry.bundle", k,
          _bundle_bytes_edit(terms, lambda v: v["tensors"].append(v["tensors"][0])),
          "InvalidSubmission", "lists a tensor twice", "the tensor table lists one term twice")
    c.bad("manifest-not-map.bundle", k,
          Bundle(_signed(encode([1, 2, 3]), OWNER, "bundle"), terms).to_bytes(), "InvalidSubmission",
          "expected a map at the top level", "the signed payload is a msgpack array, not a manifest map")
    unsorted_payload = msgpack.packb(dict(reversed(list(_manifest().to_map().items()))), use_bin_type=True)
    c.bad("non-canonical-payload.bundle", k,
          Bundle(_signed(unsorted_payload, OWNER, "bundle"), terms).to_bytes(), "InvalidSubmission",
          "not the canonical encoding", "a correctly signed manifest in a second encoding (keys out of order): "
          "two byte strings for one value")

    # The file's own encoding.
    pairs = _bundle_pairs(good)
    c.bad("duplicate-key.bundle", k, _raw_map([pairs[0], *pairs, ]), "CanonicalError", "duplicate map key 'format'",
          "duplicate msgpack map key: 'format' twice")
    c.bad("keys-unsorted.bundle", k, _raw_map(list(reversed(pairs))), "CanonicalError", "not the canonical encoding",
          "map keys out of order")
    terms_raw = pairs[4][1]
    long_int = _raw_map([*pairs[:4], ("terms", terms_raw.replace(b"\xa5shape\x92\x03", b"\xa5shape\x92\xcc\x03", 1))])
    c.bad("long-form-int.bundle", k, long_int, "CanonicalError", "not the canonical encoding",
          "an integer of a term's shape written as uint8 rather than fixint")
    c.bad("trailing-bytes.bundle", k, data + b"\xc0", "CanonicalError", "extra data",
          "trailing bytes: a nil after the bundle's map")
    c.bad("truncated.bundle", k, data[: len(data) // 2], "CanonicalError", "not valid msgpack",
          "truncated: the file cut in half")
    c.bad("empty.bundle", k, b"", "CanonicalError", "not valid msgpack", "zero-length file")
    c.bad("huge-length.bundle", k, _raw_map([*pairs[:1], ("manifest", b"\xc6\xff\xff\xff\xf0" + b"\x00" * 8)]),
          "CanonicalError", "not valid msgpack",
          "huge declared length: a bin32 of 4 GiB announced in a 60-byte file")
    bomb = b"\x91" * 40 + b"\xc0"
    c.bad("depth-bomb.bundle", k, _raw_map([*pairs[:4], ("terms", bomb)]), "CanonicalError", "nesting deeper than",
          "nested depth bomb: 40 nested arrays where the terms map belongs")
    deep = b"\x91" * 5_000 + b"\xc0"
    c.bad("stack-bomb.bundle", k, _raw_map([*pairs[:4], ("terms", deep)]), "CanonicalError", "not valid msgpack",
          "nested depth bomb: 5000 nested arrays, deeper than the msgpack parser's own stack")
    as_float = terms_raw.replace(b"\xa5shape\x92\x03", b"\xa5shape\x92\xcb" + struct.pack(">d", 3.0), 1)
    c.bad("float.bundle", k, _raw_map([*pairs[:4], ("terms", as_float)]),
          "CanonicalError", "float", "a float64 3.0 in a term's shape")
    c.bad("ext-type.bundle", k, _raw_map([*pairs[:4], ("terms", b"\xd4\x05\x00")]), "CanonicalError", "max_ext_len",
          "a msgpack ext type where the terms belong")
    c.bad("invalid-utf8.bundle", k, _raw_map([("format", b"\xb1pawprint-bundle/\xff"), *pairs[1:]]),
          "CanonicalError", "not valid msgpack", "the format string is not valid UTF-8")
    c.bad("not-a-map.bundle", k, encode([good.signed.payload]), "CanonicalError", "expected a map at the top level",
          "the file is a msgpack array")
    c.bad("format.bundle", k, _raw_map([("format", msgpack.packb("pawprint-bundle/2")), *pairs[1:]]),
          "MessageError", "not a bundle file", "a bundle of an unknown format version")
    c.bad("extra-field.bundle", k, _raw_map([*pairs[:4], ("t", b"\xc0"), pairs[4]]), "MessageError",
          "unexpected ['t']", "an unknown top-level field")
    c.bad("short-public-key.bundle", k, _raw_map([*pairs[:2], ("public_key", msgpack.packb(bytes(31))), *pairs[3:]]),
          "MessageError", "32 raw bytes", "a public key of 31 bytes")
    wrong_len = {n: t.to_map() for n, t in terms.items()}
    wrong_len[first] = {"data": terms[first].data[:-4], "dtype": "F32", "shape": [3, 3]}
    c.bad("tensor-length.bundle", k, _raw_map([*pairs[:4], ("terms", encode(wrong_len))]), "MessageError",
          "needs 36 bytes, got 32", "a tensor whose data is 4 bytes shorter than its dtype and shape need")
    wrong_dtype = dict(wrong_len)
    wrong_dtype[first] = {"data": terms[first].data, "dtype": "F33", "shape": [3, 3]}
    c.bad("unknown-dtype.bundle", k, _raw_map([*pairs[:4], ("terms", encode(wrong_dtype))]), "MessageError",
          "unknown dtype 'F33'", "a tensor of an unknown dtype")
    huge = dict(wrong_len)
    huge[first] = {"data": b"", "dtype": "F32", "shape": [2**32, 2**32, 2**32]}
    c.bad("huge-shape.bundle", k, _raw_map([*pairs[:4], ("terms", encode(huge))]), "MessageError",
          "needs 316912650057057350374175801344 bytes, got 0",
          "huge declared shape: 2^96 elements announced for no data")


def _bundle_bytes_edit(terms: Mapping[str, Tensor], edit: Callable[[dict[str, Any]], None]) -> bytes:
    payload = _edit_map(_manifest().encode(), edit)
    return Bundle(_signed(payload, OWNER, "bundle"), dict(terms)).to_bytes()


# -------------------------------------------------------------------------------------------- manifests
def _manifests(c: Corpus) -> None:
    k = "manifest"

    def online(manifest: Manifest, key: PrivateKey = OWNER, kind: str = "manifest") -> bytes:
        return _pb(_signed(manifest.encode(), key, kind))

    c.ok("valid.pb", k, online(_manifest(nonce=LIVE)), "an owner's manifest answering the live challenge")
    c.ok("valid-keep.pb", k, online(_manifest(nonce=LIVE, keep_invariants=True)),
         "the same, asking the verifier to keep the invariants")
    c.bad("offline-kind.pb", k, online(_manifest(nonce=LIVE), kind="bundle"), "Unauthenticated",
          "signature verification failed", "signature over another kind: an offline bundle signature replayed online")
    c.bad("statement-kind.pb", k, online(_manifest(nonce=LIVE), kind="registry-entry"), "Unauthenticated",
          "signature verification failed", "signature over another kind: signed as a registry statement")
    c.bad("no-nonce.pb", k, online(_manifest()), "InvalidSubmission", "answers no challenge",
          "an offline manifest (no nonce) submitted online")
    c.bad("unknown-nonce.pb", k, online(_manifest(nonce=UNKNOWN)), "ChallengeRejected", "unknown nonce",
          "a nonce this verifier never issued")
    c.bad("replayed-nonce.pb", k, online(_manifest(nonce=USED)), "ChallengeRejected", "already used",
          "replay: a nonce that was already redeemed")
    c.bad("expired-nonce.pb", k, online(_manifest(nonce=EXPIRED)), "ChallengeExpired", "has expired",
          "a nonce whose challenge expired")
    c.bad("limits.pb", k, online(_manifest(nonce=TIGHT)), "LimitExceeded", "36 bytes; the limit is 16",
          "a term larger than the challenge's per-tensor limit")
    c.bad("method.pb", k, online(_manifest(nonce=LIVE, groups=(_group(method="huref-2024"),))), "InvalidSubmission",
          "the challenge asked for 'pawprint'", "terms computed by another method than the challenge asked for")
    other = _group(probes=OTHER_PROBES, present=(True, True))
    c.bad("probe-set.pb", k, online(_manifest(nonce=LIVE, terms=_terms(2), groups=(other,))), "InvalidSubmission",
          "is not one the challenge named", "terms over a probe set the challenge did not name")
    c.bad("vendor-role.pb", k, online(_manifest(VENDOR, nonce=LIVE), VENDOR), "PermissionDenied",
          "not trusted as owner", "a vendor key submitting as an owner")
    c.bad("attacker.pb", k, online(_manifest(ATTACKER, nonce=LIVE), ATTACKER), "Unauthenticated",
          "not known to this verifier", "wrong key id: signed by a key no trust store lists")
    c.bad("impersonation.pb", k, online(_manifest(OWNER, nonce=LIVE), ATTACKER), "InvalidSubmission",
          "names another owner key", "the attacker's signature over a manifest naming the owner's key")
    payload = _manifest(nonce=LIVE).encode()
    c.bad("no-public-key.pb", k, pawprint_pb2.SignedPayload(
        payload=payload, signature=OWNER.sign("manifest", payload)).SerializeToString(deterministic=True),
        "InvalidSubmission", "not 32 raw bytes", "zero-length public key")
    c.bad("short-nonce.pb", k, _pb(_signed(_edit_map(payload, lambda v: v.__setitem__("nonce", LIVE[:31])), OWNER,
                                           "manifest")),
          "InvalidSubmission", "expected 32 bytes, got 31", "a nonce one byte short")
    c.bad("empty-payload.pb", k, _pb(_signed(b"", OWNER, "manifest")), "InvalidSubmission", "not valid msgpack",
          "a correctly signed zero-length payload")
    # Sketches (issue 16): the verifier chooses whether the terms or their k x k public sketches are sent.
    sketched = _manifest(nonce=SKETCHED, terms=_terms(SKETCH), groups=(_group(sketch=SKETCH),))
    c.ok("sketch-valid.pb", k, online(sketched), "16 x 16 sketches answering a challenge that asked for them")
    c.bad("sketch-unasked.pb", k, online(dataclasses.replace(sketched, nonce=LIVE)), "InvalidSubmission",
          "asked for the terms, not sketches", "sketches sent to a challenge that asked for the terms")
    c.bad("sketch-missing.pb", k, online(_manifest(nonce=SKETCHED)), "InvalidSubmission",
          "asked for sketches of size 16", "the terms sent to a challenge that asked for sketches")
    c.bad("sketch-size.pb", k, online(_manifest(nonce=SKETCHED, terms=_terms(32), groups=(_group(sketch=32),))),
          "InvalidSubmission", "sent sketches of size 32", "sketches of another size than the challenge asked for")
    c.bad("sketch-shape.pb", k, online(_manifest(nonce=SKETCHED, groups=(_group(sketch=SKETCH),))),
          "InvalidSubmission", "expected [16, 16]", "a group that says it is sketched with tensors of the terms' shape")
    sketch_payload = sketched.encode()
    for file, value, message, note in (
            ("sketch-zero.pb", 0, "must be at least 16", "an explicit sketch size 0 (absent is the one encoding)"),
            ("sketch-small.pb", 8, "must be at least 16", "a sketch too small to keep the verdict"),
            ("sketch-huge.pb", 4096, "must be at most 1024", "a sketch size past the protocol's bound"),
            ("sketch-bool.pb", True, "expected an integer, got a boolean", "a boolean as the sketch size")):
        c.bad(file, k, _pb(_signed(_edit_map(sketch_payload, _setter("sketch", value, "groups", 0)), OWNER,
                                   "manifest")), "InvalidSubmission", message, note)


# ------------------------------------------------------------------------------------------- challenges
def _challenge(**changes: Any) -> Challenge:
    ch = Challenge(VERIFIER.key_id, LIVE, NOW, NOW + TTL, (PROBES,), "last2", METHOD, SubmissionLimits(),
                   RegistryState(0, sha256(b"")))
    return dataclasses.replace(ch, **changes) if changes else ch


def _challenges(c: Corpus) -> None:
    k = "challenge"
    good = sign_message(_challenge(), VERIFIER)
    c.ok("valid.pb", k, _pb(good), "a challenge signed by the verifier")
    c.bad("receipt-kind.pb", k, _pb(_signed(good.payload, VERIFIER, "receipt")), "SignatureError",
          "signature verification failed", "signature over another kind: the challenge signed as a receipt")
    c.bad("attacker.pb", k, _pb(sign_message(_challenge(verifier_key_id=ATTACKER.key_id), ATTACKER)),
          "SignatureError", "signature verification failed", "a challenge forged by another key than the verifier's")
    c.bad("names-attacker.pb", k, _pb(sign_message(_challenge(verifier_key_id=ATTACKER.key_id), VERIFIER)),
          "MessageError", "names another verifier key", "signed by the verifier but naming another verifier key")
    c.bad("expires-first.pb", k,
          _pb(_signed(_edit_map(good.payload, lambda v: v.__setitem__("expires_at", NOW)), VERIFIER, "challenge")),
          "MessageError", "expires before it is issued", "a challenge that expires when it is issued")
    c.bad("zero-limit.pb", k, _pb(_signed(_edit_map(good.payload, lambda v: v["limits"].__setitem__(
        "max_tensors", 0)), VERIFIER, "challenge")), "MessageError", "must be at least 1",
        "a submission limit of zero")
    c.bad("probe-twice.pb", k, _pb(_signed(_edit_map(good.payload, lambda v: v["probe_sets"].append(
        v["probe_sets"][0])), VERIFIER, "challenge")), "MessageError", "lists a probe set twice",
        "the same probe set named twice")
    c.ok("sketch-valid.pb", k, _pb(sign_message(_challenge(sketch=SKETCH), VERIFIER)),
         "a challenge asking for 16 x 16 sketches of the terms")
    sketch_payload = sign_message(_challenge(sketch=SKETCH), VERIFIER).payload
    for file, value, message, note in (
            ("sketch-zero.pb", 0, "must be at least 16", "an explicit sketch size 0 (absent is the one encoding)"),
            ("sketch-huge.pb", 100000, "must be at most 1024", "a sketch as large as a model's width discloses it"),
            ("sketch-text.pb", "256", "expected an integer, got str", "the sketch size as text")):
        c.bad(file, k, _pb(_signed(_edit_map(sketch_payload, _setter("sketch", value)), VERIFIER, "challenge")),
              "MessageError", message, note)


# --------------------------------------------------------------------------------------------- receipts
def _picture(vector: bytes | None = None, digest: bytes | None = None) -> Picture:
    vector = _f32([(i % 17 - 8) / 8 for i in range(512)]) if vector is None else vector
    return Picture("pawprint-encoder/1", "pawprint-dog/1", vector, sha256(vector) if digest is None else digest,
                   sha256(b"the dog's png"))


def _match(**changes: Any) -> Match:
    terms = tuple(TermScoreRecord(layer, layer, term, "0.912345") for layer in LAYERS for term in TERMS)
    m = Match("corpus-base", sha256(b"base manifest"), VENDOR.key_id, PROBES.id, "0.931250", "0.912345", 3,
              "derived", terms, 0, "12.345", "1.234e-09", None)
    return dataclasses.replace(m, **changes) if changes else m


def _receipt(log: Log, **changes: Any) -> Receipt:
    r = Receipt(VERIFIER.key_id, OWNER.key_id, LIVE, sha256(b"submitted manifest"), _commitment().root,
                RegistryState(5, log.tree.root(5)), 4, (_match(),), "derived", "calibrated:p*bases<=1e-6",
                ("pawprint-terms/2", "pawprint-encoder/1"), NOW + 5, False, MESSAGE_VERSION, log.checkpoint(5),
                "null-zoo-v1", _picture())
    return dataclasses.replace(r, **changes) if changes else r


def _receipts(c: Corpus, log: Log) -> None:
    k = "receipt"

    def file(r: Receipt, key: PrivateKey = VERIFIER, kind: str = "receipt") -> bytes:
        return _signed(encode(r.to_map()), key, kind).to_bytes(RECEIPT_FORMAT)

    def edited(edit: Callable[[dict[str, Any]], None]) -> bytes:
        return _signed(_edit_map(encode(_receipt(log).to_map()), edit), VERIFIER, "receipt").to_bytes(RECEIPT_FORMAT)

    good = file(_receipt(log))
    c.ok("valid.receipt", k, good, "a receipt with a calibrated match, its log checkpoint and the picture")
    minimal = _receipt(log, matches=(), verdict="independent", checkpoint=None, null_id=None, picture=None,
                       registry=RegistryState(0, sha256(b"")))
    c.ok("valid-minimal.receipt", k, file(minimal),
         "a receipt made without a log: no match, no checkpoint, no picture")
    c.bad("report-kind.receipt", k, file(_receipt(log), kind="report"), "SignatureError",
          "signature verification failed", "signature over another kind: a comparison report passed off as a receipt")
    c.bad("attacker.receipt", k, file(_receipt(log), key=ATTACKER), "SignatureError",
          "signature verification failed", "a receipt naming the verifier but signed by the attacker's key")
    c.bad("names-attacker.receipt", k, file(_receipt(log, verifier_key_id=ATTACKER.key_id)), "MessageError",
          "names another verifier key", "signed by the verifier, naming another verifier key")
    signed = SignedMessage.from_bytes(good, RECEIPT_FORMAT)
    c.bad("payload-flip.receipt", k,
          SignedMessage(signed.payload.replace(b"derived", b"derivee", 1), signed.signature,
                        signed.public_key).to_bytes(RECEIPT_FORMAT),
          "SignatureError", "signature verification failed", "one word of the signed payload changed after signing")
    s_plus_l = int.from_bytes(signed.signature[32:], "little") + ED25519_ORDER
    malleated = signed.signature[:32] + s_plus_l.to_bytes(32, "little")
    c.bad("malleated-signature.receipt", k,
          SignedMessage(signed.payload, malleated, signed.public_key).to_bytes(RECEIPT_FORMAT), "SignatureError",
          "signature verification failed", "signature malleability: S + L, a second encoding of the same Ed25519 "
          "signature that lax verifiers accept (one receipt, two byte strings)")
    c.bad("verdict.receipt", k, edited(lambda v: v.__setitem__("verdict", "derived!")), "MessageError",
          "verdict must be one of", "a verdict outside the closed set")
    c.bad("negative-zero.receipt", k, edited(lambda v: v["matches"][0].__setitem__("ics", "-0.000000")),
          "MessageError", "not a score string", "a second spelling of zero (-0.000000)")
    c.bad("score-range.receipt", k, edited(lambda v: v["matches"][0].__setitem__("ics", "1.000001")), "MessageError",
          "outside [-1, 1]", "a cosine above 1")
    c.bad("score-places.receipt", k, edited(lambda v: v["matches"][0].__setitem__("ics", "0.93125")),
          "MessageError", "not a score string", "a score with five decimals instead of six")
    c.bad("z-without-p.receipt", k, edited(lambda v: v["matches"][0].pop("p_value")), "MessageError",
          "missing ['p_value']", "a z-score without its p-value")
    c.bad("p-range.receipt", k, edited(lambda v: v["matches"][0].__setitem__("p_value", "2.000e+00")), "MessageError",
          "not a p-value string", "a p-value of 2")
    c.bad("checkpoint-size.receipt", k, edited(lambda v: v.__setitem__("checkpoint", log.checkpoint(3))),
          "MessageError",
          "does not match the registry state", "the checkpoint cited is of another size than the registry state")
    c.bad("log-index.receipt", k, edited(lambda v: v["matches"][0].__setitem__("log_index", 5)), "MessageError",
          "no log index inside", "a match's log index beyond the checkpoint's size")
    c.bad("forged-checkpoint.receipt", k, file(_receipt(log, checkpoint=log.checkpoint(5, ATTACKER))),
          "CheckpointError", "no signature line by the log key",
          "a well-signed receipt citing a checkpoint the log never signed")
    c.bad("picture-digest.receipt", k, edited(lambda v: v["picture"].__setitem__("vector_digest", bytes(32))),
          "MessageError", "not the SHA-256 of picture.vector", "the picture's vector digest does not match its vector")
    nan_vector = _f32([float("nan")] + [0.0] * 511)
    c.bad("picture-nan.receipt", k, edited(lambda v: v["picture"].update(
        vector=nan_vector, vector_digest=sha256(nan_vector))), "MessageError", "non-finite",
        "NaN in the picture's vector")
    c.bad("format.receipt", k, _raw_map([("format", msgpack.packb("pawprint-receipt/2")),
                                         ("payload", msgpack.packb(signed.payload)),
                                         ("public_key", msgpack.packb(signed.public_key.raw)),
                                         ("signature", msgpack.packb(signed.signature))]),
          "MessageError", "not a pawprint-receipt/1 file", "a receipt file of an unknown format version")
    float_payload = encode(_receipt(log).to_map()).replace(b"\xa8compared\x04", b"\xa8compared\xcb" +
                                                            struct.pack(">d", 4.0), 1)
    c.bad("float.receipt", k, _signed(float_payload, VERIFIER, "receipt").to_bytes(RECEIPT_FORMAT), "CanonicalError",
          "float", "a float where the count of compared bases belongs, correctly signed")
    c.bad("nil-checkpoint.receipt", k, edited(lambda v: v.__setitem__("checkpoint", None)), "MessageError",
          "expected a string, got NoneType", "a nil checkpoint (absent is the only spelling of none)")
    c.bad("trailing-bytes.receipt", k, good + b"\x00", "CanonicalError", "extra data", "trailing bytes")
    c.bad("truncated.receipt", k, good[:-1], "CanonicalError", "not valid msgpack", "truncated by one byte")


# ------------------------------------------------------------------------------------------ checkpoints
def _note(cp: Checkpoint, signatures: Sequence[NoteSignature]) -> str:
    return SignedCheckpoint(cp, tuple(signatures)).text


def _checkpoints(c: Corpus, log: Log) -> None:
    k = "checkpoint"
    cp = Checkpoint(ORIGIN, 5, log.tree.root(5), NOW - 595)
    good = log.checkpoint(5)
    c.ok("valid-5.note", k, good.encode(), "the log's checkpoint of its five entries")
    c.ok("valid-3.note", k, log.checkpoint(3).encode(), "the log's earlier checkpoint of three entries")
    witness = NoteSigningKey.derive(ATTACKER, "corpus-witness")  # a C2SP cosigner, unknown to the verifier
    witness_line = NoteSignature("witness.example", note_key_hash("witness.example", witness.public_key),
                                 witness.sign_note(cp.body().encode()))
    c.ok("cosigned.note", k, (good + witness_line.line()).encode(),
         "cosigned: a third, well-formed C2SP signature line by a witness's key is ignored")
    legacy = NoteSignature(ORIGIN, legacy_key_hash(LOG.public_key), LOG.sign("checkpoint", cp.body().encode()))
    c.ok("legacy-5.note", k, _note(cp, [legacy]).encode(),
         "a checkpoint signed before C2SP checkpoints (pawprint 1: one line, the log key over the kind "
         "'checkpoint'): still read, so saved checkpoints and old logs stay valid")
    body, _, sig_line = good.partition("\n\n")
    c.bad("attacker.note", k, log.checkpoint(5, ATTACKER).encode(), "CheckpointError",
          "no signature line by the log key", "signed by a key that is not the log's")
    standard, binding = sign_checkpoint(cp, LOG).signatures
    attacker_key = NoteSigningKey.derive(ATTACKER, "checkpoint-note")
    forged = NoteSignature(ORIGIN, standard.key_hash, attacker_key.sign_note(cp.body().encode()))
    c.bad("forged-key-hash.note", k, _note(cp, [forged, binding]).encode(), "SignatureError",
          "signature verification failed", "the checkpoint key's ID on a line signed by another key")
    c.bad("size-changed.note", k, _note(dataclasses.replace(cp, size=6), [standard, binding]).encode(),
          "SignatureError", "signature verification failed", "the tree size raised after signing")
    c.bad("root-changed.note", k, _note(dataclasses.replace(cp, root=log.tree.root(4)),
                                        [standard, binding]).encode(),
          "SignatureError", "signature verification failed", "the root replaced by an older one after signing")
    checkpoint_key = binding.signature[:32]
    other_kind = NoteSignature(ORIGIN, binding.key_hash, checkpoint_key + LOG.sign(
        "receipt", b"pawprint checkpoint-key\n" + checkpoint_key + cp.body().encode()))
    c.bad("other-kind.note", k, _note(cp, [standard, other_kind]).encode(),
          "SignatureError", "signature verification failed",
          "the log key's binding line signed as another kind (a receipt)")
    c.bad("binding-only.note", k, _note(cp, [binding]).encode(), "CheckpointError",
          "no signature line by the checkpoint key", "the log key's binding line without the checkpoint key's line")
    c.bad("other-log.note", k, log.checkpoint(5, origin="pawprint/registry/other").encode(), "CheckpointError",
          "not of 'pawprint/registry/corpus'", "a checkpoint of another log, signed by the same key")
    renamed = [NoteSignature("someone-else", line.key_hash, line.signature) for line in (standard, binding)]
    c.bad("line-name.note", k, _note(cp, renamed).encode(), "CheckpointError", "no signature line by the log key",
          "the log's signature lines named after another key")
    c.bad("leading-zero.note", k, good.replace("\n5\n", "\n05\n", 1).encode(), "CheckpointError",
          "without leading zeros", "the tree size spelled with a leading zero")
    c.bad("size-overflow.note", k, good.replace("\n5\n", f"\n{2**64}\n", 1).encode(), "CheckpointError",
          "does not fit in 64 bits", "a tree size of 2^64")
    root64 = base64.b64encode(cp.root).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    # The last character before "=" carries 4 bits of the final byte and 2 padding bits, which must be zero.
    noncanon = root64[:-2] + alphabet[alphabet.index(root64[-2]) ^ 1] + "="
    c.bad("root-base64.note", k, good.replace(root64, noncanon, 1).encode(), "CheckpointError",
          "not canonical base64", "the root hash in base64 with non-zero padding bits")
    c.bad("root-short.note", k, good.replace(root64, base64.b64encode(cp.root[:31]).decode(), 1).encode(),
          "CheckpointError", "root hash is 31 bytes", "a root hash of 31 bytes")
    c.bad("no-blank-line.note", k, good.replace("\n\n", "\n", 1).encode(), "CheckpointError", "no blank line found",
          "the blank line between body and signatures is missing")
    c.bad("no-newline.note", k, good[:-1].encode(), "CheckpointError", "ends with a newline",
          "the final newline is missing")
    c.bad("crlf.note", k, good.replace("\n", "\r\n").encode(), "CheckpointError",
          "no control character other than newline", "CRLF line endings (a signed note holds no CR)")
    c.bad("five-lines.note", k, (body + "\nextension line\n\n" + sig_line).encode(), "CheckpointError",
          "found 5", "a fifth body line (an unsigned extension)")
    c.bad("hyphen.note", k, good.replace("\u2014", "-").encode(), "CheckpointError", "does not start with an em dash",
          "the signature line starts with a hyphen instead of an em dash")
    hash_only = f"\u2014 {ORIGIN} {base64.b64encode(standard.key_hash).decode()}\n"
    c.bad("short-signature.note", k, good.replace(sig_line, hash_only).encode(),
          "CheckpointError", "too short for a key hash and a signature", "a signature line with only the key hash")
    c.bad("many-lines.note", k, (good + witness_line.line() * 63).encode(), "CheckpointError", "at most 64",
          "65 signature lines")
    c.bad("invalid-utf8.note", k, good.encode().replace(b"\xe2\x80\x94", b"\xe2\x80", 1), "CheckpointError",
          "UTF-8", "the em dash cut short: invalid UTF-8")
    c.bad("empty.note", k, b"", "CheckpointError", "ends with a newline", "zero-length")
    c.bad("huge.note", k, good.encode() + b"\n" * 65536, "CheckpointError", "at most 65536 bytes",
          "a note larger than 64 KiB")


# ------------------------------------------------------------------------------------------------ proofs
def _inclusion_file(note: str, index: int, entry: bytes, proof: Sequence[bytes]) -> bytes:
    return _json({"checkpoint": note, "index": index, "entry": entry.hex(), "proof": [p.hex() for p in proof]})


def _inclusion_proofs(c: Corpus, log: Log) -> None:
    k = "inclusion_proof"
    t, e = log.tree, log.entries
    cp5, cp3 = log.checkpoint(5), log.checkpoint(3)
    p0 = t.inclusion_proof(0, 5)
    c.ok("entry0-of-5.json", k, _inclusion_file(cp5, 0, e[0], p0), "entry 0 in the tree of five")
    c.ok("entry4-of-5.json", k, _inclusion_file(cp5, 4, e[4], t.inclusion_proof(4, 5)),
         "entry 4, on the ragged right edge of the tree of five")
    c.ok("entry3-of-5.json", k, _inclusion_file(cp5, 3, e[3], t.inclusion_proof(3, 5)),
         "an administrator's entry (statement signed by the log key)")
    c.ok("entry2-of-3.json", k, _inclusion_file(cp3, 2, e[2], t.inclusion_proof(2, 3)),
         "a revocation, in the earlier tree of three")
    c.bad("one-short.json", k, _inclusion_file(cp5, 0, e[0], p0[:-1]), "ProofError", "shorter than the path",
          "proof one hash too short")
    c.bad("one-long.json", k, _inclusion_file(cp5, 0, e[0], [*p0, p0[0]]), "ProofError", "longer than the tree",
          "proof one hash too long")
    c.bad("wrong-index.json", k, _inclusion_file(cp5, 1, e[0], p0), "ProofError", "does not lead to the given root",
          "entry 0's proof presented for index 1")
    c.bad("index-is-size.json", k, _inclusion_file(cp5, 5, e[4], t.inclusion_proof(4, 5)), "ProofError",
          "outside a tree of size 5", "an index equal to the tree size")
    c.bad("after-checkpoint.json", k, _inclusion_file(cp3, 4, e[4], t.inclusion_proof(4, 5)), "ProofError",
          "outside a tree of size 3", "checkpoint size smaller than proof index: entry 4 against the tree of three")
    c.bad("other-size.json", k, _inclusion_file(cp3, 0, e[0], p0), "ProofError", "longer than the tree",
          "a proof for the tree of five against the checkpoint of three")
    c.bad("boolean-index.json", k, _inclusion_file(cp5, 1, e[1], t.inclusion_proof(1, 5)).replace(
        b'"index": 1,', b'"index": true,', 1), "ProofError", "leaf index True is outside",
          "a JSON true where the index belongs (regression: it was taken as index 1 and the proof accepted)")
    c.bad("element-short.json", k, _inclusion_file(cp5, 0, e[0], [p0[0][:31], *p0[1:]]), "ProofError",
          "must be 32 bytes", "a proof element of 31 bytes")
    c.bad("swapped.json", k, _inclusion_file(cp5, 0, e[0], [p0[1], p0[0], *p0[2:]]), "ProofError",
          "does not lead to the given root", "the proof's hashes in the wrong order")
    logged = b"\xa9logged_at\xce"
    tampered = e[0].replace(logged + struct.pack(">I", NOW - 6000), logged + struct.pack(">I", NOW - 9000), 1)
    c.bad("tampered-entry.json", k, _inclusion_file(cp5, 0, tampered, p0), "ProofError",
          "does not lead to the given root", "the entry's logged time backdated; the proof is the original's")
    interior = log.leaves[0] + log.leaves[1]  # the two children of the tree's first inner node
    c.bad("interior-node.json", k, _inclusion_file(cp5, 0, interior, p0[1:]), "ProofError",
          "shorter than the path", "second preimage: an inner node's two children presented as one leaf")
    c.bad("forged-checkpoint.json", k, _inclusion_file(log.checkpoint(5, ATTACKER), 0, e[0], p0), "CheckpointError",
          "no signature line by the log key", "a good proof against a checkpoint the log did not sign")
    witness = NoteSignature("witness\ud800", key_hash(ATTACKER.public_key), bytes(64)).line()
    c.bad("surrogate-cosigner.json", k, (json.dumps({"checkpoint": cp5 + witness, "index": 0, "entry": e[0].hex(),
                                                     "proof": [p.hex() for p in p0]}, indent=1) + "\n").encode(),
          "CheckpointError", "UTF-8", "a cosigner's line named with a lone surrogate (a JSON \\ud800 escape): text "
          "that has no UTF-8 form (regression: it was accepted and the note could not be written back)")
    c.bad("bad-hex.json", k, _inclusion_file(cp5, 0, e[0], p0).replace(p0[0].hex().encode(),
                                                                         p0[0].hex().upper().encode(), 1),
          "FormatError", "not lowercase hex", "a proof hash in uppercase hex")


def _consistency_file(old: str, new: str, proof: Sequence[bytes]) -> bytes:
    return _json({"old": old, "new": new, "proof": [p.hex() for p in proof]})


def _consistency_proofs(c: Corpus, log: Log) -> None:
    k = "consistency_proof"
    t = log.tree
    cps = {n: log.checkpoint(n) for n in range(1, 6)}
    p35 = t.consistency_proof(3, 5)
    c.ok("3-to-5.json", k, _consistency_file(cps[3], cps[5], p35), "the tree of three is a prefix of the tree of five")
    c.ok("4-to-5.json", k, _consistency_file(cps[4], cps[5], t.consistency_proof(4, 5)),
         "from a complete tree of four (its root is omitted from the proof)")
    c.ok("1-to-3.json", k, _consistency_file(cps[1], cps[3], t.consistency_proof(1, 3)), "from a single entry")
    c.ok("5-to-5.json", k, _consistency_file(cps[5], cps[5], []), "equal sizes: an empty proof")
    c.bad("one-short.json", k, _consistency_file(cps[3], cps[5], p35[:-1]), "ProofError", "shorter than needed",
          "proof one hash too short")
    c.bad("one-long.json", k, _consistency_file(cps[3], cps[5], [*p35, p35[0]]), "ProofError", "longer than needed",
          "proof one hash too long")
    c.bad("empty.json", k, _consistency_file(cps[3], cps[5], []), "ProofError", "consistency proof is empty",
          "no proof at all between different sizes")
    c.bad("shrink.json", k, _consistency_file(cps[5], cps[3], p35), "ProofError", "larger than new size",
          "the log shrank: old size 5, new size 3")
    c.bad("equal-with-proof.json", k, _consistency_file(cps[5], cps[5], [p35[0]]), "ProofError", "must be empty",
          "equal sizes with a non-empty proof")
    forked = MerkleTree([log.leaves[i] for i in (0, 2, 1)])
    fork3 = sign_checkpoint(Checkpoint(ORIGIN, 3, forked.root(), NOW - 597), LOG).text
    c.bad("fork.json", k, _consistency_file(fork3, cps[5], p35), "ProofError", "does not lead to the given roots",
          "split view: the log signed a tree of three with entries 1 and 2 swapped")
    other5 = MerkleTree([*log.leaves[:4], leaf_hash(b"another entry")]).root()
    fork5 = sign_checkpoint(Checkpoint(ORIGIN, 5, other5, NOW), LOG).text
    c.bad("same-size-fork.json", k, _consistency_file(fork5, cps[5], []), "ProofError",
          "equal tree sizes with different roots", "split view: two signed trees of five with different roots")
    c.bad("other-proof.json", k, _consistency_file(cps[3], cps[5], t.consistency_proof(2, 5)), "ProofError",
          "shorter than needed", "the proof from two to five presented as the one from three")
    c.bad("element-long.json", k, _consistency_file(cps[3], cps[5], [p35[0] + b"\x00", *p35[1:]]), "ProofError",
          "must be 32 bytes", "a proof element of 33 bytes")
    c.bad("forged-old.json", k, _consistency_file(log.checkpoint(3, ATTACKER), cps[5], p35), "CheckpointError",
          "no signature line by the log key", "the old checkpoint signed by another key")


# ------------------------------------------------------------------------------------- statements, log
def _statements(c: Corpus, log: Log) -> None:
    k = "statement"
    base = log.manifests[0]
    good = _statement(REGISTER, "corpus-base", base)

    def raw(edit: Callable[[dict[str, Any]], None], key: PrivateKey = VENDOR) -> bytes:
        return _pb(_signed(_edit_map(encode(good.to_map()), edit), key, "registry-entry"))

    c.ok("register.pb", k, _pb(good.sign(VENDOR)), "a vendor's registration of its base model")
    c.ok("revoke.pb", k, _pb(_statement(REVOKE, "corpus-other", log.manifests[1]).sign(VENDOR)),
         "a vendor's revocation")
    c.bad("bundle-kind.pb", k, _pb(_signed(encode(good.to_map()), VENDOR, "bundle")), "SignatureError",
          "signature verification failed", "signature over another kind: a statement signed as a bundle")
    c.bad("attacker.pb", k, _pb(dataclasses.replace(good, vendor_key_id=ATTACKER.key_id).sign(ATTACKER)),
          "UntrustedKeyError", "not in the trust store", "a statement by a key not trusted as a vendor")
    c.bad("owner-key.pb", k, _pb(dataclasses.replace(good, vendor_key_id=OWNER.key_id).sign(OWNER)),
          "UntrustedKeyError", "not as vendor", "a statement by a key trusted only as an owner")
    c.bad("date.pb", k, raw(lambda v: v.__setitem__("release_date", "2024-02-30")), "EntryError", "not a date",
          "a release date that does not exist")
    c.bad("digits-name.pb", k, raw(lambda v: v.__setitem__("name", "12345")), "EntryError",
          "reads as an entry index", "a base name that reads as an entry index")
    c.bad("hex-name.pb", k, raw(lambda v: v.__setitem__("name", sha256(b"n").hex())), "EntryError",
          "reads as an entry index or a manifest digest", "a base name that reads as a manifest digest")
    c.bad("name-space.pb", k, raw(lambda v: v.__setitem__("name", "corpus-base ")), "EntryError",
          "not a valid base name", "a base name with a trailing space (a look-alike of another)")
    c.bad("name-cyrillic.pb", k, raw(lambda v: v.__setitem__("name", "c\u043erpus-base")), "EntryError",
          "not a valid base name", "a base name with a Cyrillic o: a look-alike of corpus-base")
    c.bad("escape.pb", k, raw(lambda v: v.__setitem__("description", "fine\x1b[2Jmodel")), "EntryError",
          "printable text", "a terminal escape sequence in the description")
    c.bad("revoke-licence.pb", k, raw(lambda v: v.update(action="revoke")), "EntryError",
          "a revocation carries a reason", "a revocation that carries a licence and a date")
    c.bad("action.pb", k, raw(lambda v: v.__setitem__("action", "delete")), "EntryError", "must be one of",
          "an action outside register and revoke")
    c.bad("version.pb", k, raw(lambda v: v.__setitem__("version", 2)), "EntryError", "unsupported version",
          "a statement of a future version")


def _log_entries(c: Corpus, log: Log) -> None:
    k = "log_entry"
    e = [LogEntry.from_bytes(d) for d in log.entries]
    a, b = log.manifests[0], log.manifests[1]
    c.ok("register.entry", k, log.entries[0], "a vendor's registration as the log stores it")
    c.ok("revoke.entry", k, log.entries[2], "a vendor's revocation")
    c.ok("admin.entry", k, log.entries[3], "an entry an administrator added: statement signed by the log key")
    st = _statement(REGISTER, "corpus-base", a)
    c.bad("attacker-statement.entry", k, LogEntry(st.sign(ATTACKER), e[0].manifest, NOW).to_bytes(), "EntryError",
          "signed by neither", "the vendor's manifest with a statement signed by a third key")
    c.bad("other-manifest.entry", k, LogEntry(e[0].statement, e[1].manifest, NOW).to_bytes(), "EntryError",
          "names another manifest", "the statement of one manifest paired with another manifest of the vendor")
    c.bad("admin-revoke.entry", k, LogEntry(_statement(REVOKE, "corpus-other", b).sign(LOG), None, NOW).to_bytes(),
          "EntryError", "must be signed by the vendor", "a revocation signed by the log's key, not the vendor's")
    c.bad("no-manifest.entry", k, LogEntry(e[0].statement, None, NOW).to_bytes(), "EntryError",
          "carries the vendor's signed manifest", "a registration without its manifest")
    c.bad("revoke-manifest.entry", k, LogEntry(e[2].statement, e[1].manifest, NOW).to_bytes(), "EntryError",
          "carries no manifest", "a revocation carrying a manifest")
    stolen = _manifest(ATTACKER, weight_commitment=a.weight_commitment)
    c.bad("other-vendor-manifest.entry", k,
          LogEntry(_statement(REGISTER, "corpus-base", stolen).sign(VENDOR), sign_message(stolen, ATTACKER, "bundle"),
                   NOW).to_bytes(), "EntryError", "different vendor keys",
          "the vendor's statement over a manifest signed by another key")
    online = dataclasses.replace(a, nonce=LIVE)
    c.bad("nonce-manifest.entry", k,
          LogEntry(_statement(REGISTER, "corpus-base", online).sign(VENDOR), sign_message(online, VENDOR, "bundle"),
                   NOW).to_bytes(), "EntryError", "answers no challenge", "a registered manifest with a nonce")
    c.bad("manifest-kind.entry", k,
          LogEntry(e[0].statement, _signed(a.encode(), VENDOR, "manifest"), NOW).to_bytes(), "SignatureError",
          "the manifest's signature does not verify",
          "signature over another kind: the manifest signed online, not as a bundle")
    weak_manifest = _manifest(owner_key_id=WEAK_KEY.key_id, created_at=NOW - 86400)
    weak_statement = dataclasses.replace(_statement(REGISTER, "corpus-weak", weak_manifest),
                                         vendor_key_id=WEAK_KEY.key_id)
    weak_signed = [SignedMessage(encode(m.to_map()), WEAK_SIGNATURE, WEAK_KEY) for m in (weak_statement,
                                                                                         weak_manifest)]
    c.bad("weak-key.entry", k, LogEntry(weak_signed[0], weak_signed[1], NOW).to_bytes(), "FormatError",
          "point of small order", "statement and manifest 'signed' by the identity point, a key anyone can sign for: "
          "whoever registers with it can later disown the entry, and anyone can revoke it",
          )
    c.bad("format.entry", k, log.entries[0].replace(b"pawprint-log-entry/1", b"pawprint-log-entry/2", 1),
          "EntryError", "not a log entry", "an entry of an unknown format")
    c.bad("truncated.entry", k, log.entries[0][:-1], "EntryError", "not canonical msgpack", "truncated by one byte")


# ------------------------------------------------------------------------------------------------ audits
def _audit_file(saved: str, current: str, proof: Sequence[bytes], entries: Sequence[bytes]) -> bytes:
    return _json({"saved": saved, "current": current, "proof": [p.hex() for p in proof],
                  "entries": [e.hex() for e in entries]})


def _audits(c: Corpus, log: Log) -> None:
    """Whole-log audits (``protocol.audit_log``): a saved checkpoint, the current one, the consistency proof
    between them and every entry, as an auditor fetches them from a log that may be lying."""
    k = "audit"
    cp3, cp5 = log.checkpoint(3), log.checkpoint(5)
    c.ok("3-to-5.json", k, _audit_file(cp3, cp5, log.tree.consistency_proof(3, 5), log.entries),
         "the log grew from three to five entries, every rule and signature holds")
    c.ok("5-to-5.json", k, _audit_file(cp5, cp5, [], log.entries), "nothing appended since the saved checkpoint")

    def grown(entry: LogEntry) -> tuple[str, list[bytes]]:
        longer = _log_of([*log.entries, entry.to_bytes()], log.manifests)
        return longer.checkpoint(6), longer.tree.consistency_proof(5, 6)

    def appended(file: str, entry: LogEntry, message: str, note: str) -> None:
        current, proof = grown(entry)
        c.bad(file, k, _audit_file(cp5, current, proof, [*log.entries, entry.to_bytes()]), "LogCheckFailed",
              message, note)

    a = log.manifests[0]
    swapped = _log_of([log.entries[i] for i in (0, 2, 1, 3, 4)], log.manifests)
    c.bad("rewritten.json", k, _audit_file(cp3, swapped.checkpoint(5), swapped.tree.consistency_proof(3, 5),
                                           swapped.entries), "LogCheckFailed", "is not an extension of the saved one",
          "history rewritten: the log re-signed a tree with entries 1 and 2 swapped")
    c.bad("withheld.json", k, _audit_file(cp3, cp5, log.tree.consistency_proof(3, 5), log.entries[:4]),
          "LogCheckFailed", "served 4 entries for a checkpoint of 5", "the log withholds its last entry")
    c.bad("shrank.json", k, _audit_file(cp5, cp3, [], log.entries[:3]), "LogCheckFailed", "the log shrank",
          "the current checkpoint is smaller than the saved one")
    c.bad("forged-current.json", k, _audit_file(cp3, log.checkpoint(5, ATTACKER), log.tree.consistency_proof(3, 5),
                                                log.entries), "LogCheckFailed", "current checkpoint is not valid",
          "the current checkpoint is signed by another key")
    again = _statement(REGISTER, "corpus-again", a).sign(VENDOR)
    appended("registered-twice.json", LogEntry(again, sign_message(a, VENDOR, "bundle"), NOW - 1000),
             "is already registered", "one manifest registered a second time under another name")
    late = _vendor_manifest("later")
    appended("time-backwards.json", LogEntry(_statement(REGISTER, "corpus-later", late).sign(VENDOR),
                                             sign_message(late, VENDOR, "bundle"), NOW - 9000),
             "time went backwards", "an entry logged before the entry that precedes it")
    appended("from-the-future.json", LogEntry(_statement(REGISTER, "corpus-later", late).sign(VENDOR),
                                              sign_message(late, VENDOR, "bundle"), NOW + 9000),
             "logged after the current checkpoint's time", "an entry logged after the checkpoint that includes it")
    own = _manifest(ATTACKER, weight_commitment=_commitment("attacker"))
    squat = dataclasses.replace(_statement(REGISTER, "corpus-base", own), vendor_key_id=ATTACKER.key_id)
    appended("name-squat.json", LogEntry(squat.sign(ATTACKER), sign_message(own, ATTACKER, "bundle"), NOW - 1000),
             "is held by another vendor", "another key registers a name a vendor already holds")
    fresh = dataclasses.replace(_statement(REGISTER, "attacker-model", own), vendor_key_id=ATTACKER.key_id)
    appended("untrusted-vendor.json", LogEntry(fresh.sign(ATTACKER), sign_message(own, ATTACKER, "bundle"),
                                               NOW - 1000),
             "is not trusted as a vendor", "a well-formed registration by a key the auditor does not trust")
    stmt = _statement(REGISTER, "corpus-later", late).sign(VENDOR)
    edited = SignedMessage(stmt.payload.replace(b"apache-2.0", b"apache-3.0", 1), stmt.signature, stmt.public_key)
    appended("statement-edited.json", LogEntry(edited, sign_message(late, VENDOR, "bundle"), NOW - 1000),
             "the statement's signature does not verify", "the licence in a statement changed after the vendor signed")
    unknown = _statement(REVOKE, "corpus-base", digest=sha256(b"never registered")).sign(VENDOR)
    appended("revoke-unknown.json", LogEntry(unknown, None, NOW - 1000), "which is not registered",
             "a revocation of a manifest that was never registered")


# -------------------------------------------------------------------------------------------- trust stores
def _trust_cases(c: Corpus, trust: TrustStore) -> None:
    k = "trust"
    good = trust.to_json()
    c.ok("valid.json", k, good, "the corpus trust store: owner, vendor, verifier, log and a revoked owner key")
    doc = json.loads(good)

    def edited(edit: Callable[[dict[str, Any]], None]) -> bytes:
        d = json.loads(good)
        edit(d)
        return _json(d)

    c.bad("key-id.json", k, edited(lambda d: d["keys"][0].__setitem__("key_id", doc["keys"][1]["key_id"])),
          "TrustStoreError", "does not match its public key",
          "wrong key id: a trusted name and role bound to another key's id")
    c.bad("role.json", k, edited(lambda d: d["keys"][0].__setitem__("roles", ["admin"])), "TrustStoreError",
          "unknown role 'admin'", "a role that does not exist")
    c.bad("uppercase.json", k,
          edited(lambda d: d["keys"][0].__setitem__("public_key", d["keys"][0]["public_key"].upper())),
          "TrustStoreError", "not lowercase hex", "a public key in uppercase hex")
    c.bad("format.json", k, edited(lambda d: d.__setitem__("format", "pawprint/trust-store/v2")), "TrustStoreError",
          "unsupported trust store format", "a store of an unknown format")
    c.bad("revoked-string.json", k, edited(lambda d: d["keys"][0].__setitem__("revoked", "false")),
          "TrustStoreError", "revoked must be true or false", "'false' as a string (truthy) for revoked")
    c.bad("rename.json", k, edited(lambda d: d["keys"].append({**d["keys"][0], "name": "someone else"})),
          "TrustStoreError", "already listed as", "one key listed twice under two names")
    c.bad("duplicate-field.json", k, good.replace(b'"format":', b'"format": "x", "format":', 1), "TrustStoreError",
          "duplicate field 'format'", "duplicate JSON field: the second value would silently win")
    c.bad("nan.json", k, good.replace(b'"revoked": false', b'"revoked": NaN', 1), "TrustStoreError",
          "NaN is not allowed", "a NaN constant")
    c.bad("extra-field.json", k, edited(lambda d: d.__setitem__("comment", "x")), "TrustStoreError",
          "exactly the fields", "an unknown top-level field")
    c.bad("invalid-utf8.json", k, good.replace(b"corpus owner", b"corpus \xff owner", 1), "TrustStoreError",
          "not valid JSON", "invalid UTF-8 in a key's name")
    c.bad("empty.json", k, b"", "TrustStoreError", "not valid JSON", "zero-length")
    c.bad("truncated.json", k, good[: len(good) // 2], "TrustStoreError", "not valid JSON", "truncated")
    c.bad("surrogate-name.json", k, good.replace(b"corpus owner", b"corpus \\ud800 owner", 1), "TrustStoreError",
          "UTF-8", "a key name holding a lone surrogate (JSON \\ud800 escape): a store that could never be saved "
          "again")
    c.bad("depth-bomb.json", k, b"[" * 5_000, "TrustStoreError", "not valid JSON",
          "nested depth bomb: 5000 nested arrays")


# ---------------------------------------------------------------------------------------------- invariants
def _safetensors(tensors: Mapping[str, Any], meta: str | None) -> bytes:
    from safetensors.numpy import save

    return bytes(save(dict(tensors), metadata=None if meta is None else {"pawprint": meta}))


def _invariants(c: Corpus) -> None:
    import numpy as np

    from owner._invfile import save_invariants
    from protocol import ProbeSpec as ProbeSet
    from protocol.terms import InvariantSet

    k = "invariants"
    probes = ProbeSet(PROBES.name, PROBES.version, PROBES.rule, PROBES.tokens)
    arrays = {(layer, term): np.frombuffer(_term(layer, t).data, "<f4").reshape(3, 3).copy()
              for layer in LAYERS for t, term in enumerate(TERMS)}
    inv = InvariantSet.create(METHOD, METHOD_ID, probes, PRESENT, LAYERS, dict(MODEL), arrays)
    with tempfile.TemporaryDirectory() as tmp:
        save_invariants(inv, Path(tmp) / "x.safetensors")
        good = (Path(tmp) / "x.safetensors").read_bytes()
    c.ok("valid.safetensors", k, good, "the terms of the corpus model in an invariants file")
    tensors = {f"layer{layer}.{term}": a for (layer, term), a in arrays.items()}
    meta = {"format": "pawprint-invariants/1", "method": METHOD, "method_id": METHOD_ID,
            "probe_set": {"id": probes.id, "name": probes.name, "version": probes.version, "rule": probes.rule},
            "tokens": list(probes.tokens), "present": list(PRESENT), "layers": list(LAYERS), "model": MODEL}

    def variant(tensors_: Mapping[str, Any] = tensors, **changes: Any) -> bytes:
        return _safetensors(tensors_, json.dumps({**meta, **changes}, sort_keys=True))

    nan = dict(tensors)
    nan["layer0.ffn"] = tensors["layer0.ffn"].copy()
    nan["layer0.ffn"][1, 1] = np.nan
    c.bad("nan.safetensors", k, variant(nan), "InvariantsFileError", "non-finite", "NaN in a term")
    c.bad("probe-id.safetensors", k, variant(tokens=["▁the", "▁of", "▁and", "▁zebras"]), "InvariantsFileError",
          "do not match the recorded probe set id", "a probe token changed without changing the probe set id")
    missing = {n: a for n, a in tensors.items() if n != "layer1.attn_vo"}
    c.bad("missing-term.safetensors", k, variant(missing), "InvariantsFileError", "malformed invariants file",
          "a term of a listed layer is missing")
    c.bad("present-length.safetensors", k, variant(present=[True, True, True]), "InvariantsFileError",
          "presence mask and probe tokens differ", "the presence mask is one entry short")
    small = {n: a[:2, :2].copy() for n, a in tensors.items()}
    c.bad("shape.safetensors", k, variant(small), "InvariantsFileError", "has shape (2, 2)",
          "2 x 2 terms where three probe tokens are present")
    c.bad("format.safetensors", k, variant(format="pawprint-invariants/2"), "InvariantsFileError",
          "unknown invariants format", "an invariants file of an unknown format")
    c.bad("no-metadata.safetensors", k, _safetensors(tensors, None), "InvariantsFileError",
          "without pawprint invariants metadata", "a plain safetensors file")
    c.bad("bad-json.safetensors", k, _safetensors(tensors, "{not json"), "InvariantsFileError",
          "malformed invariants metadata", "the metadata is not JSON")
    c.bad("truncated.safetensors", k, good[: len(good) - 10], "InvariantsFileError", "not an invariants file",
          "truncated: the last tensor's bytes cut short")
    c.bad("huge-header.safetensors", k, struct.pack("<Q", 2**60) + good[8:], "InvariantsFileError",
          "not an invariants file", "huge declared length: a header of 2^60 bytes")
    c.bad("empty.safetensors", k, b"", "InvariantsFileError", "not an invariants file", "zero-length")
    c.bad("text.safetensors", k, b"this is not a safetensors file\n", "InvariantsFileError",
          "not an invariants file", "a text file")
    c.bad("i32-terms.safetensors", k, variant({n: a.view("<i4") for n, a in tensors.items()}), "InvariantsFileError",
          "expected float32", "the terms' bytes relabelled as I32 integers (terms are float32)")
    c.bad("present-strings.safetensors", k, variant(present=["yes", "no", "", "no"]), "InvariantsFileError",
          "presence mask", "a presence mask of strings: bool('no') is True")
    c.bad("meta-list.safetensors", k, _safetensors(tensors, "[1, 2]"), "InvariantsFileError",
          "not a JSON object", "the metadata is a JSON list, not an object")
    c.bad("meta-depth-bomb.safetensors", k, _safetensors(tensors, "[" * 5_000), "InvariantsFileError",
          "malformed invariants metadata", "nested depth bomb in the metadata JSON")


# ------------------------------------------------------------------------------------------------- main
def write(out: Path) -> int:
    """Write the corpus into ``out``, removing stale files of earlier runs; returns the number of cases."""
    files = build()
    out.mkdir(parents=True, exist_ok=True)
    stale = {p for p in out.rglob("*") if p.is_file()} - {out / name for name in files}
    for p in stale:
        p.unlink()
    for name, data in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    return len(json.loads(files[INDEX])["cases"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "corpus", help="the corpus folder")
    args = parser.parse_args(argv)
    n = write(args.out)
    print(f"{args.out}: {n} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
