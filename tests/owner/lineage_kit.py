"""What the family tests share to check lineage end to end: a noised copy of a checkpoint (a stand-in for
fine-tuning), the verdict ``pawprint compare`` gives a pair against the shipped null, and ``pawprint compare
--json``'s document for a pair."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from pawprint._local import load_pair
from pawprint.cli import main
from verifier import assess, base_verdict, compare, load_null


def noised_copy(src: Path, dst: Path, scale: float = 0.05, seed: int = 5) -> Path:
    """A copy of ``src`` with Gaussian noise on every float tensor (a stand-in for fine-tuning)."""
    shutil.copytree(src, dst)
    state = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    noisy = {k: v + scale * v.std() * torch.randn(v.shape, generator=gen) if v.numel() > 1 else v
             for k, v in state.items()}
    save_file(noisy, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def lineage_verdict(a: Path, b: Path) -> str:
    """The verdict of ``a`` against ``b`` (one base compared), as ``pawprint compare`` reaches it."""
    inv_a, inv_b = load_pair(a, b)
    r = compare(inv_a, inv_b, layer_pairs="match")
    return base_verdict(assess([(t.term, t.cosine) for t in r.terms], load_null(), r.common_probe_tokens).p_value, 1)


def compare_json(a: Path, b: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``pawprint compare A B --json -q`` as a user runs it (exit 0), its document parsed."""
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json", "-q"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out
