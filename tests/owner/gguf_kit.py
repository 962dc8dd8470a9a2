"""What the GGUF test files check alike: the weight commitment of an exported GGUF file."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from pawprint.cli import main


def check_commitment_is_stable(f32: Path, q8_0: Path, again: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``owner digest --json`` commits to every stored tensor: the same root for the F32 file twice, another for
    its Q8_0 copy; and ``again``, the same model exported once more, is the F32 file byte for byte."""
    roots = []
    n_tensors = len(gguf.GGUFReader(f32).tensors)
    for path in (f32, f32, q8_0):
        capsys.readouterr()
        assert main(["owner", "digest", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["format"] == "gguf" and doc["weight_commitment"]["tensors"] == n_tensors
        roots.append(doc["weight_commitment"]["root"])
    assert roots[0] == roots[1] != roots[2]
    assert again.read_bytes() == f32.read_bytes()
