"""Fixtures for the protocol and verifier tests: fixed keys, a trust store, tiny models with known lineage, a
registry holding one base, and in-process verifier servers on 127.0.0.1:0 with an injectable clock.

A plugin rather than a conftest, so that ``tests/test_protocol_e2e.py`` can use it too: test modules load it
with ``pytest_plugins = ["tests.verifier.fixtures"]``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch

from owner._fingerprint import Fingerprint, build_bundle, fingerprint, sketch_fingerprint
from protocol import DEFAULT_SKETCH, Bundle, Challenge, PrivateKey, Role, TrustStore
from protocol._pb import pawprint_pb2_grpc
from verifier import Registry, ServerConfig, VerifierService, create_server, start

TinyModel = Callable[..., Path]
NOW = 1_700_000_000


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Keys:
    vendor: PrivateKey
    owner: PrivateKey
    verifier: PrivateKey
    stranger: PrivateKey  # in no trust store

    def trust(self) -> TrustStore:
        store = TrustStore()
        store.add(self.vendor.public_key, Role.VENDOR, name="vendor")
        store.add(self.owner.public_key, Role.OWNER, name="owner")
        store.add(self.verifier.public_key, Role.VERIFIER, name="verifier")
        return store


@dataclass(frozen=True)
class Models:
    base: Path  # registered as a base
    derived: Path  # the base with every float tensor perturbed by 5% of its spread
    independent: Path  # same family and tokenizer, another seed


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(*(PrivateKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3, 4)))


def perturb(src: Path, dst: Path, scale: float = 0.05, seed: int = 5) -> Path:
    """A copy of ``src`` with Gaussian noise on every float tensor (a stand-in for fine-tuning)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    noisy = {
        k: (v + scale * v.std() * torch.randn(v.shape, generator=gen)) if v.is_floating_point() and v.numel() > 1 else v
        for k, v in state.items()
    }
    save_file(noisy, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="session")
def models(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Models:
    base = tiny_model("llama", seed=0)
    derived = perturb(base, tmp_path_factory.mktemp("derived") / "llama-derived")
    return Models(base=base, derived=derived, independent=tiny_model("llama", seed=1))


@pytest.fixture(scope="session")
def base_bundle(models: Models, keys: Keys) -> Bundle:
    return build_bundle(models.base, keys.vendor, now=NOW)


@pytest.fixture(scope="session")
def derived_terms(models: Models, keys: Keys, base_bundle: Bundle) -> Fingerprint:
    """The derived model's fingerprint on the base's probe set (a placeholder nonce, replaced per test): the terms
    themselves, as a verifier started with ``sketch=0`` asks."""
    probes = tuple(g.probe_set for g in base_bundle.open().groups)
    return fingerprint(models.derived, keys.owner.key_id, now=NOW, probe_sets=probes, nonce=b"\0" * 32)


@pytest.fixture(scope="session")
def derived_fingerprint(derived_terms: Fingerprint) -> Fingerprint:
    """``derived_terms`` sketched as a verifier of the default configuration asks (``DEFAULT_SKETCH``)."""
    return sketch_fingerprint(derived_terms, DEFAULT_SKETCH)


def answering(fp: Fingerprint, challenge: Challenge) -> Fingerprint:
    """``fp`` as the owner's agent sends it in answer to ``challenge``: sketched if the challenge asks for it."""
    return sketch_fingerprint(fp, challenge.sketch) if challenge.sketch else fp


@dataclass
class Env:
    """A running verifier: its service (logic), server, port, a channel and stub to it, the registry."""

    service: VerifierService
    server: grpc.Server
    port: int
    channel: grpc.Channel
    stub: pawprint_pb2_grpc.VerifierStub
    registry: Registry
    clock: FakeClock
    keys: Keys

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_env(
    data: Path, keys: Keys, *, bundle: Bundle | None = None, config: ServerConfig | None = None,
    clock: FakeClock | None = None,
) -> Env:
    """A plaintext loopback verifier over a fresh registry (holding ``bundle`` as base "llama-base")."""
    clock = clock or FakeClock()
    trust = keys.trust()
    registry = Registry(data, clock=clock)
    if bundle is not None:
        registry.add_base("llama-base", bundle, trust)
    config = config or ServerConfig(insecure_loopback=True)
    service = VerifierService(keys.verifier, trust, registry, config, clock=clock)
    server, port = create_server(service)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return Env(service, server, port, channel, pawprint_pb2_grpc.VerifierStub(channel), registry, clock, keys)


def stop_env(env: Env) -> None:
    env.channel.close()
    env.server.stop(None)
    env.registry.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys, base_bundle: Bundle) -> Iterator[Env]:
    """A verifier whose registry holds the base; shared by a module's tests (each asks its own challenge)."""
    e = start_env(tmp_path_factory.mktemp("verifier"), keys, bundle=base_bundle)
    yield e
    stop_env(e)


@contextlib.contextmanager
def serving_owner(data: Path, owner_key: Path) -> Iterator[tuple[str, Path]]:
    """A verifier on 127.0.0.1 (plaintext loopback) that trusts the owner key in the PEM file ``owner_key``, with an
    empty registry in ``data``: yields its ``HOST:PORT`` and the path of its public key (written beside ``data``)."""
    key = PrivateKey.from_seed(b"\x09" * 32)
    trust = TrustStore()
    trust.add(PrivateKey.load(owner_key).public_key, Role.OWNER, name="o")
    pub = data.parent / "verifier.pub"
    key.public_key.save(pub)
    registry = Registry(data)
    running = start(VerifierService(key, trust, registry, ServerConfig(insecure_loopback=True)))
    try:
        yield f"127.0.0.1:{running.port}", pub
    finally:
        running.server.stop(None)
        registry.close()
