"""A dishonest owner's submissions, as issue 15 measured them against a real verifier, and an in-process verifier
to try them on (``Lab``). Used by ``tests/trust`` and ``benchmarks/trust_table.py``.

Each attack takes the honest fingerprint of the model the owner holds (``Fingerprint``: the manifest and its
terms) and returns what a thief would send instead: a manifest (still carrying the held model's weight
commitment, so the receipt names the stolen weights) and its terms. The owner signs whatever it sends; the
verifier sees only the terms.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from owner._fingerprint import Fingerprint, build_bundle, fingerprint, sketch_fingerprint
from protocol import (
    Manifest,
    PrivateKey,
    Receipt,
    Role,
    SignedMessage,
    TensorDigest,
    TermGroup,
    TrustStore,
    open_challenge,
    open_receipt,
    sign_message,
    tensor_name,
)
from protocol._canonical import Tensor
from protocol.terms import term_tensor
from verifier import Registry, ServerConfig, VerifierService
from verifier._service import Chunk

NOW = 1_700_000_000
Terms = Mapping[str, Tensor]
Submission = tuple[Manifest, Terms]


def _array(t: Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype="<f4").reshape(t.shape).astype(np.float64)


def _rebuild(manifest: Manifest, terms: dict[str, np.ndarray], **changes: object) -> Submission:
    """A manifest whose tensor table matches ``terms`` (in the manifest's order), with ``changes`` applied."""
    out: Terms = {k: term_tensor(v) for k, v in terms.items()}
    names = [t.name for t in manifest.tensors if t.name in out]
    table = tuple(TensorDigest(n, "F32", out[n].shape, hashlib.sha256(out[n].data).digest()) for n in names)
    return dataclasses.replace(manifest, tensors=table, **changes), {n: out[n] for n in names}  # type: ignore[arg-type]


def _map_terms(fp: Fingerprint, fn: Callable[[str, np.ndarray], np.ndarray]) -> Submission:
    return _rebuild(fp.manifest, {k: fn(k, _array(v)) for k, v in fp.terms.items()})


def another_models_terms(held: Fingerprint, other: Fingerprint) -> Submission:
    """Another model's honest terms under the held model's weight commitment."""
    return dataclasses.replace(other.manifest, weight_commitment=held.manifest.weight_commitment), dict(other.terms)


def _per_group(fp: Fingerprint, make: Callable[[int, np.random.Generator], np.ndarray], seed: int,
               apply: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Submission:
    """One transform of the probe rows per group (drawn once, applied to every term of the group)."""
    rng = np.random.default_rng(seed)
    per = [make(g.side, rng) for g in fp.manifest.groups]  # a sketched group's rows are the sketch's k
    return _map_terms(fp, lambda k, t: apply(per[int(k.split(".")[0][1:])], t))


def permuted_rows(fp: Fingerprint, seed: int = 1) -> Submission:
    """The same permutation of the probe rows (and columns) in every term of a group: ``P T P^T``."""
    return _per_group(fp, lambda m, rng: rng.permutation(m), seed, lambda p, t: t[np.ix_(p, p)])


def _rotation(m: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((m, m)))
    return q * np.sign(np.diag(r))


def rotated_rows(fp: Fingerprint, seed: int = 2) -> Submission:
    """The same random rotation of the probe rows in every term of a group: ``R T R^T``."""
    return _per_group(fp, _rotation, seed, lambda r, t: r @ t @ r.T)


def noisy(fp: Fingerprint, factor: float, seed: int = 3) -> Submission:
    """Gaussian noise at ``factor`` times each term's spread (standard deviation of its entries)."""
    rng = np.random.default_rng(seed)
    return _map_terms(fp, lambda _, t: t + factor * float(t.std()) * rng.standard_normal(t.shape))


def constant(fp: Fingerprint, value: float = 0.5) -> Submission:
    """Every term a constant matrix."""
    return _map_terms(fp, lambda _, t: np.full(t.shape, value))


def one_hot(fp: Fingerprint) -> Submission:
    """Every term the identity (each row one-hot)."""
    return _map_terms(fp, lambda _, t: np.eye(t.shape[0]))


def few_probe_tokens(fp: Fingerprint, keep: int = 15) -> Submission:
    """Only ``keep`` probe tokens declared present (the terms cut to them)."""
    manifest = fp.manifest
    groups, arrays = [], {}
    for i, g in enumerate(manifest.groups):
        idx = [j for j, p in enumerate(g.present) if p]
        chosen = set(idx[:keep])
        present = tuple(j in chosen for j in range(len(g.present)))
        groups.append(dataclasses.replace(g, present=present))
        for layer in g.layers:
            for name in g.terms:
                key = tensor_name(i, layer, name)
                # a sketch stays k x k whatever is declared present; the terms are cut to the declared tokens
                arrays[key] = _array(fp.terms[key]) if g.sketch else _array(fp.terms[key])[:keep, :keep]
    return _rebuild(manifest, arrays, groups=tuple(groups))


def drop_group(fp: Fingerprint, index: int) -> Submission:
    """Every term group but ``index`` (say, the group on the stolen model's base's probe set)."""
    manifest = fp.manifest
    keep = [i for i in range(len(manifest.groups)) if i != index]
    arrays = {tensor_name(j, layer, n): _array(fp.terms[tensor_name(i, layer, n)])
              for j, i in enumerate(keep) for layer in manifest.groups[i].layers for n in manifest.groups[i].terms}
    table = dataclasses.replace(manifest, tensors=tuple(
        TensorDigest(k, "F32", (1, 1), b"\0" * 32) for k in arrays))
    return _rebuild(table, arrays, groups=tuple(manifest.groups[i] for i in keep))


def no_groups(fp: Fingerprint) -> Submission:
    """No term group at all."""
    return dataclasses.replace(fp.manifest, groups=(), tensors=()), {}


def first_layer_only(fp: Fingerprint, family: str = "gpt2", width: int = 4096) -> Submission:
    """Only the first layer's terms, the model facts changed to match (one layer, another family and width)."""
    manifest = fp.manifest
    g = manifest.groups[0]
    layer = g.layers[0]
    group = TermGroup(probe_set=g.probe_set, present=g.present, layers=(0,), method=g.method, method_id=g.method_id,
                      terms=g.terms, sketch=g.sketch)
    arrays = {tensor_name(0, 0, n): _array(fp.terms[tensor_name(0, layer, n)]) for n in g.terms}
    model = {**manifest.model, "family": family, "n_layers": 1, "d_model": width}
    table_manifest = dataclasses.replace(manifest, groups=(group,), tensors=tuple(
        TensorDigest(tensor_name(0, 0, n), "F32", (g.side, g.side), b"\0" * 32) for n in g.terms))
    return _rebuild(table_manifest, arrays, model=model)


def mixed_models(held: Fingerprint, other: Fingerprint) -> Submission:
    """Terms of two models in one submission: the last layer's from ``other`` (same probe set and layers)."""
    g = held.manifest.groups[0]
    last = {tensor_name(0, g.layers[-1], n) for n in g.terms}
    arrays = {k: _array(other.terms[k] if k in last else v) for k, v in held.terms.items()}
    return _rebuild(held.manifest, arrays)


@dataclass
class Lab:
    """An in-process verifier (no network) over a registry of bases, and keys for a vendor, two owners."""

    service: VerifierService
    registry: Registry
    owner: PrivateKey
    framer: PrivateKey
    vendor: PrivateKey
    verifier: PrivateKey
    last_submission: SignedMessage | None = None  # the signed manifest of the latest ``submit``

    @classmethod
    def create(cls, data: Path, bases: Sequence[tuple[str, Path]], *, layers: str = "last2",
               require_possession: bool = False, sketch: int = 0) -> Lab:
        vendor, owner, framer, verifier = (PrivateKey.from_seed(bytes([i]) * 32) for i in (11, 12, 13, 14))
        trust = TrustStore()
        trust.add(vendor.public_key, Role.VENDOR, name="vendor")
        trust.add(owner.public_key, Role.OWNER, name="owner")
        trust.add(framer.public_key, Role.OWNER, name="framer")
        trust.add(verifier.public_key, Role.VERIFIER, name="verifier")
        registry = Registry(data, clock=lambda: float(NOW))
        for name, path in bases:
            registry.add_base(name, build_bundle(path, vendor, now=NOW), trust)
        # No per-key rate limit or submission budget: the lab sends hundreds of (degenerate) submissions from one
        # key at a fixed clock to measure what the evidence checks catch; the budget and the rate limits are
        # measured on their own (tests/verifier/test_privacy_budget.py, tests/verifier/test_retry_info.py).
        config = ServerConfig(insecure_loopback=True, layers=layers, require_possession=require_possession,
                              submission_budget=None, rate_limits=None, sketch=sketch)
        counter = iter(range(1, 1 << 30))
        service = VerifierService(verifier, trust, registry, config, clock=lambda: float(NOW),
                                  rng=lambda n: hashlib.sha256(b"lab%d" % next(counter)).digest()[:n])
        return cls(service, registry, owner, framer, vendor, verifier)

    def close(self) -> None:
        self.registry.close()

    def honest(self, model: Path) -> Fingerprint:
        """What an honest owner's agent computes for this verifier's next challenge (nonce left to ``submit``)."""
        challenge = open_challenge(self.service.challenge(), self.verifier.public_key)
        fp = fingerprint(model, self.owner.key_id, now=NOW, probe_sets=challenge.probe_sets or None,
                         layers=challenge.layers, nonce=b"\0" * 32)
        return sketch_fingerprint(fp, challenge.sketch) if challenge.sketch else fp

    def submit(self, submission: Submission, key: PrivateKey | None = None) -> Receipt:
        """Answer a fresh challenge with ``submission`` signed by ``key`` (the owner by default)."""
        return open_receipt(self.submit_signed(submission, key), self.verifier.public_key)

    def submit_signed(self, submission: Submission, key: PrivateKey | None = None) -> SignedMessage:
        """``submit``, the signed receipt as the verifier returns it."""
        key = key or self.owner
        manifest, terms = submission
        challenge = open_challenge(self.service.challenge(), self.verifier.public_key)
        manifest = dataclasses.replace(manifest, nonce=challenge.nonce, owner_key_id=key.key_id)
        signed = sign_message(manifest, key, "manifest")
        self.last_submission = signed
        step = challenge.limits.max_chunk_bytes  # as the owner's agent streams: no chunk above the limit
        chunks = [Chunk(i, off, data[off:off + step]) for i, t in enumerate(manifest.tensors)
                  for data in (bytes(terms[t.name].data),) for off in range(0, max(len(data), 1), step)]
        return self.service.submit(signed, chunks)
