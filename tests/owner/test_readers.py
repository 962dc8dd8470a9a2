"""Checkpoint readers: every storage format and dtype gives the same terms; bad input gets a clear error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import compute_invariants
from owner._model import open_model
from owner.errors import CheckpointError, TokenizerError, UnsupportedModelError
from verifier import compare

TinyModel = Callable[..., Path]


def _reshard(src: Path, dst: Path, fmt: str, shards: int = 3, dtype: torch.dtype | None = None) -> Path:
    """Rewrite ``src``'s weights as ``shards`` files with an index, in safetensors or PyTorch .bin format."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".json" and f.name != "model.safetensors.index.json":
            shutil.copy(f, dst / f.name)
    sd = load_file(str(src / "model.safetensors"))
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    names = sorted(sd)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        part = names[s::shards]
        ext = "safetensors" if fmt == "safetensors" else "bin"
        stem = "model" if fmt == "safetensors" else "pytorch_model"
        fname = f"{stem}-{s + 1:05d}-of-{shards:05d}.{ext}"
        chunk = {k: sd[k].contiguous() for k in part}
        if fmt == "safetensors":
            save_file(chunk, str(dst / fname))
        else:
            torch.save(chunk, dst / fname)
        weight_map.update({k: fname for k in part})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (dst / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_formats_give_identical_terms(tiny_model: TinyModel, tmp_path: Path, fmt: str) -> None:
    src = tiny_model("llama")
    sharded = _reshard(src, tmp_path / fmt, fmt)
    assert open_model(sharded).format == ("safetensors" if fmt == "safetensors" else "pytorch-bin")
    a = compute_invariants(src)
    b = compute_invariants(sharded)
    for key, t in a.terms.items():
        assert torch.equal(torch.from_numpy(t), torch.from_numpy(b.terms[key])), key


def test_single_bin_file(tiny_model: TinyModel, tmp_path: Path) -> None:
    src = tiny_model("gpt2")
    dst = tmp_path / "bin"
    dst.mkdir()
    for f in src.glob("*.json"):
        shutil.copy(f, dst / f.name)
    torch.save(load_file(str(src / "model.safetensors")), dst / "pytorch_model.bin")
    r = compare(compute_invariants(src), compute_invariants(dst))
    assert r.ics == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_match_fp32(tiny_model: TinyModel, tmp_path: Path, dtype: torch.dtype) -> None:
    src = tiny_model("llama")
    half = _reshard(src, tmp_path / str(dtype), "safetensors", shards=1, dtype=dtype)
    r = compare(compute_invariants(src), compute_invariants(half))
    assert min(t.cosine for t in r.terms) > 0.99, r


def test_pickled_module_is_refused(tiny_model: TinyModel, tmp_path: Path) -> None:
    """``weights_only=True``: a .bin holding an arbitrary object is refused, not executed."""
    dst = tmp_path / "evil"
    dst.mkdir()
    shutil.copy(tiny_model("gpt2") / "config.json", dst / "config.json")
    torch.save({"x": torch.nn.Linear(2, 2)}, dst / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin"):
        open_model(dst)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_config(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        open_model(d)


def test_corrupt_config(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_model(d)


def test_missing_weights(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        open_model(d)


def test_corrupt_safetensors(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:8] + b"\xff" * 64 + raw[72:])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        compute_invariants(d)


def test_truncated_safetensors(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        compute_invariants(d)


def test_unknown_family(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match=r"'mamba' is not supported.*llama.*bert"):
        open_model(d)


def test_shapes_that_do_not_match_the_config(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = cfg["intermediate_size"] * 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.gate_proj\.weight.*config\.json implies"):
        open_model(d)


def test_layer_count_that_does_not_match(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("gpt_neox"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="must have"):
        open_model(d)


def test_tokenizer_without_probe_tokens(tiny_model: TinyModel, tmp_path: Path) -> None:
    from protocol import ProbeSpec as ProbeSet

    d = tiny_model("llama")
    probes = ProbeSet("foreign", 1, "manual", tuple(f"▁zzqx{i}" for i in range(64)))
    with pytest.raises(TokenizerError, match=r"tokenizer\.json.*none of the tokens"):
        compute_invariants(d, probes=probes)


def test_missing_tokenizer(tiny_model: TinyModel, tmp_path: Path) -> None:
    d = _copy(tiny_model("llama"), tmp_path / "m")
    (d / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match=str(d)):
        compute_invariants(d)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        open_model(tmp_path / "nope")
