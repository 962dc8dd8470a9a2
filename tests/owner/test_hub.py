"""Models named the way people name them: a Hugging Face repo id or cache folder in the local cache (at a
revision), or a single weights file; never a download."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from owner import compute_invariants, open_model, resolve_model
from owner.errors import CheckpointError

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _fake_cache(root: Path, model: Path, other: Path) -> Path:
    """A Hugging Face hub cache holding ``acme/tiny``: ``main`` at COMMIT_A (``model``), tag ``v2`` at
    COMMIT_B (``other``), laid out as huggingface_hub writes it (refs, snapshots)."""
    repo = root / "models--acme--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT_A)
    (repo / "refs" / "v2").write_text(COMMIT_B)
    shutil.copytree(model, repo / "snapshots" / COMMIT_A)
    shutil.copytree(other, repo / "snapshots" / COMMIT_B)
    return root


@pytest.fixture(scope="module")
def cache(tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fake_cache(tmp_path_factory.mktemp("hf") / "hub", tiny_model("llama", seed=0), tiny_model("llama", seed=1))


def _same_terms(a: Path | str, b: Path, **kw: object) -> bool:
    ia, ib = compute_invariants(open_model(a, **kw)), compute_invariants(b)  # type: ignore[arg-type]
    return all(np.array_equal(ia.terms[k], ib.terms[k]) for k in ib.terms)


def test_a_repo_id_resolves_to_its_snapshot_in_the_local_cache(cache: Path, tiny_model: Callable[..., Path]) -> None:
    main = cache / "models--acme--tiny" / "snapshots" / COMMIT_A
    assert resolve_model("acme/tiny", cache_dir=cache) == main
    assert resolve_model("acme/tiny", revision="v2", cache_dir=cache).name == COMMIT_B
    assert resolve_model("acme/tiny", revision=COMMIT_B, cache_dir=cache).name == COMMIT_B
    assert _same_terms("acme/tiny", tiny_model("llama", seed=0), cache_dir=cache)
    assert _same_terms("acme/tiny", tiny_model("llama", seed=1), cache_dir=cache, revision="v2")


def test_a_cache_folder_resolves_to_its_snapshot(cache: Path) -> None:
    folder = cache / "models--acme--tiny"
    assert resolve_model(folder).name == COMMIT_A
    assert resolve_model(folder, revision="v2").name == COMMIT_B


def test_nothing_is_downloaded(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="never downloads"):
        resolve_model("acme/absent", cache_dir=cache)
    with pytest.raises(CheckpointError, match=r"revision v3.*never downloads"):
        resolve_model("acme/tiny", revision="v3", cache_dir=cache)
    # A local path that does not exist says so too (it could have been a typo, not a repo id).
    with pytest.raises(CheckpointError, match="no such file or directory"):
        resolve_model(tmp_path / "nope", cache_dir=cache)


def test_a_revision_does_not_apply_to_a_local_directory(tiny_model: Callable[..., Path]) -> None:
    with pytest.raises(CheckpointError, match="--revision applies"):
        resolve_model(tiny_model("llama", seed=0), revision="main")


def test_a_single_weights_file_opens_with_its_directory(tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama", seed=0)
    opened = open_model(model / "model.safetensors")
    assert opened.root == model and opened.format == "safetensors"
    assert _same_terms(model / "model.safetensors", model)
    with pytest.raises(CheckpointError, match="weights file"):
        open_model(model / "config.json")


def test_a_single_bin_file_opens_with_its_directory(tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    """A ``pytorch_model.bin`` path as MODEL: read as its directory's checkpoint (``weights_only`` load)."""
    import torch
    from safetensors.torch import load_file

    model = tiny_model("llama", seed=0)
    copy = tmp_path / "bin"
    shutil.copytree(model, copy)
    torch.save(load_file(str(copy / "model.safetensors")), copy / "pytorch_model.bin")
    (copy / "model.safetensors").unlink()
    opened = open_model(copy / "pytorch_model.bin")
    assert opened.root == copy and opened.format == "pytorch-bin"
    assert _same_terms(copy / "pytorch_model.bin", model)
