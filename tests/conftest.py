"""Shared fixtures: tiny models of every family are built once per session (they take well under a second each)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests run on 2 cores next to other work: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_model(family, seed=0, **spec)`` -> path of a cached tiny random model in HF layout."""
    from zoo.tiny import TinySpec, make_tiny

    cache: dict[tuple[object, ...], Path] = {}
    root = tmp_path_factory.mktemp("tiny")

    def get(family: str, seed: int = 0, **spec: int) -> Path:
        key = (family, seed, tuple(sorted(spec.items())))
        if key not in cache:
            name = f"{family}-s{seed}" + "".join(f"-{k}{v}" for k, v in sorted(spec.items()))
            cache[key] = make_tiny(family, root / name, seed=seed, spec=TinySpec(**spec))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick lineage zoo (same population as the default, smaller and shorter), built once per session."""
    from zoo.build import build_zoo

    root = tmp_path_factory.mktemp("quick-zoo")
    build_zoo(root, quick=True, threads=1)
    return root
