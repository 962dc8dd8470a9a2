"""``protocol`` must stay importable without torch or numpy: auditors check receipts with it alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import protocol

REPO = Path(__file__).resolve().parents[2]


def test_protocol_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, protocol\n"
        "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_public_names_exist() -> None:
    for name in protocol.__all__:
        assert hasattr(protocol, name), name
