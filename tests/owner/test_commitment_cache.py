"""The weight commitment's parallel hashing and its cache: same value as hashing each tensor's bytes, a second
commitment of an unchanged checkpoint reads nothing, and any change to a file (even one that keeps its size and
mtime) is noticed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import _fingerprint as fp
from owner import open_model
from owner._fingerprint import CommitmentCache, commit_checkpoint
from protocol import weight_commitment

TinyModel = Callable[..., Path]
OLD = time.time() - 3600  # an hour ago: well outside the racy window


def _checkpoint(tiny_model: TinyModel, dst: Path, shards: int = 1) -> Path:
    """A copy of the tiny llama (optionally in ``shards`` safetensors files) whose files look an hour old."""
    src = tiny_model("llama")
    shutil.copytree(src, dst)
    if shards > 1:
        state = load_file(str(dst / "model.safetensors"))
        (dst / "model.safetensors").unlink()
        names = sorted(state)
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: state[k] for k in names[s::shards]}, str(dst / fname))
            weight_map.update({k: fname for k in names[s::shards]})
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for f in dst.glob("*.safetensors"):
        os.utime(f, (OLD, OLD))
    return dst


def _expected(model: Path) -> bytes:
    entries = []
    for f in sorted(model.glob("*.safetensors")):
        for name, t in load_file(str(f)).items():
            raw = t.contiguous().view(torch.uint8).numpy().tobytes()
            entries.append((name, "F32", tuple(t.shape), hashlib.sha256(raw).digest()))
    return weight_commitment(entries)


@pytest.mark.parametrize(("shards", "workers"), [(1, 1), (1, 4), (3, 2)])
def test_parallel_hashing_gives_the_commitment_of_each_tensors_bytes(
    tiny_model: TinyModel, tmp_path: Path, shards: int, workers: int
) -> None:
    model = _checkpoint(tiny_model, tmp_path / "m", shards)
    got = commit_checkpoint(open_model(model), workers=workers, cache=CommitmentCache(None))
    assert got.root == _expected(model)


def test_a_second_commitment_reads_nothing(tiny_model: TinyModel, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = _checkpoint(tiny_model, tmp_path / "m", shards=2)
    cache_file = tmp_path / "cache" / "commitments.json"
    first = commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file))
    assert cache_file.is_file()
    assert first.root == _expected(model)

    def refuse(*args: object) -> object:
        raise AssertionError("the checkpoint was hashed again")

    monkeypatch.setattr(fp, "_hash_safetensors_files", refuse)
    cache = CommitmentCache(cache_file)
    again = commit_checkpoint(open_model(model), cache=cache)
    assert again == first
    assert (cache.hits, cache.misses) == (2, 0)
    stored = json.loads(cache_file.read_text())
    assert stored["format"] == CommitmentCache.FORMAT
    assert all(len(bytes.fromhex(d[3])) == 32 for e in stored["files"].values() for d in e["digests"])


def test_a_changed_file_is_rehashed_even_with_its_size_and_mtime_restored(tiny_model: TinyModel,
                                                                         tmp_path: Path) -> None:
    model = _checkpoint(tiny_model, tmp_path / "m")
    cache_file = tmp_path / "commitments.json"
    before = commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file))
    f = model / "model.safetensors"
    st = f.stat()
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01  # one bit of the last tensor's last byte: same size
    f.write_bytes(bytes(raw))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime: only the ctime tells
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    cache = CommitmentCache(cache_file)
    after = commit_checkpoint(open_model(model), cache=cache)
    assert cache.misses == 1 and cache.hits == 0
    assert after.root != before.root
    assert after.root == _expected(model)


def test_a_replaced_file_is_rehashed(tiny_model: TinyModel, tmp_path: Path) -> None:
    model = _checkpoint(tiny_model, tmp_path / "m")
    cache_file = tmp_path / "commitments.json"
    commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file))
    other = _checkpoint(tiny_model, tmp_path / "copy")
    f = model / "model.safetensors"
    state = {k: v + 1 for k, v in load_file(str(f)).items()}
    save_file(state, str(other / "model.safetensors"))
    os.replace(other / "model.safetensors", f)  # same path, new inode
    os.utime(f, (OLD, OLD))
    cache = CommitmentCache(cache_file)
    assert commit_checkpoint(open_model(model), cache=cache).root == _expected(model)
    assert cache.hits == 0


def test_a_file_written_just_now_is_not_cached(tiny_model: TinyModel, tmp_path: Path) -> None:
    model = _checkpoint(tiny_model, tmp_path / "m")
    os.utime(model / "model.safetensors")  # modified now: a second write in the same clock tick would go unseen
    cache_file = tmp_path / "commitments.json"
    commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file))
    assert not cache_file.exists()
    later = CommitmentCache(cache_file, clock=lambda: time.time() + 10)
    commit_checkpoint(open_model(model), cache=later)
    assert cache_file.exists() and later.misses == 1


@pytest.mark.parametrize("content", [b"", b"not json", b'{"format": "other", "files": {}}',
                                     b'{"format": "pawprint-commitment-cache/1", "files": {"x": 1}}'])
def test_an_unreadable_cache_is_ignored(tiny_model: TinyModel, tmp_path: Path, content: bytes) -> None:
    model = _checkpoint(tiny_model, tmp_path / "m")
    cache_file = tmp_path / "commitments.json"
    cache_file.write_bytes(content)
    assert commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file)).root == _expected(model)


def test_a_forged_entry_with_the_right_identity_is_what_the_cache_trusts(tiny_model: TinyModel,
                                                                        tmp_path: Path) -> None:
    """The cache is the owner's own file: it is trusted for speed, so tampering with it changes the claim. This
    documents the boundary: a neutral party recomputes the commitment from the weights, never from a cache."""
    model = _checkpoint(tiny_model, tmp_path / "m")
    cache_file = tmp_path / "commitments.json"
    commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file))
    doc = json.loads(cache_file.read_text())
    entry = next(iter(doc["files"].values()))
    entry["digests"][0][3] = "00" * 32
    cache_file.write_text(json.dumps(doc))
    assert commit_checkpoint(open_model(model), cache=CommitmentCache(cache_file)).root != _expected(model)
    assert commit_checkpoint(open_model(model), cache=CommitmentCache(None)).root == _expected(model)


def test_default_location_and_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PAWPRINT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert CommitmentCache.default().path == tmp_path / "xdg" / "pawprint" / "commitments.json"
    monkeypatch.setenv("PAWPRINT_CACHE_DIR", str(tmp_path / "mine"))
    assert CommitmentCache.default().path == tmp_path / "mine" / "commitments.json"
    monkeypatch.setenv("PAWPRINT_COMMITMENT_CACHE", "0")
    assert CommitmentCache.default().path is None
