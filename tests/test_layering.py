"""The floor plan of the packages holds: the import contracts of ``pyproject.toml`` (``[tool.importlinter]``)
are kept, and they still say what the plan says.

``lint-imports`` also runs in ``make lint``; running it here too makes a plain ``pytest`` catch a broken layer.
The second test pins the contracts themselves, so that a contract cannot be made to pass by weakening it
(an ``ignore_imports`` line, indirect imports allowed, a forbidden package dropped) without this file changing
too.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

PROJECT = ("owner", "verifier", "witness", "pawprint", "zoo", "benchmarks")
MODEL_LIBRARIES = ("torch", "transformers", "safetensors", "tokenizers", "onnx", "onnxruntime")
# source package -> what it must never import, directly or through another module
FLOOR_PLAN: dict[str, set[str]] = {
    "protocol": {*PROJECT, *MODEL_LIBRARIES, "scipy", "PIL"},
    "verifier": {"owner", "witness", "pawprint", "zoo", "benchmarks", *MODEL_LIBRARIES},
    "owner": {"verifier", "witness", "pawprint", "zoo", "benchmarks"},
    "witness": {"owner", "verifier", "pawprint", "zoo", "benchmarks", "torch"},
    "zoo": {"pawprint", "benchmarks"},
}


def _config() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["importlinter"]
    return config


def test_import_contracts_hold() -> None:
    r = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, f"lint-imports: broken import contracts\n{r.stdout}\n{r.stderr}"


def test_contracts_say_what_the_floor_plan_says() -> None:
    config = _config()
    assert config.get("include_external_packages") is True, "forbidden external packages need the import graph"
    assert {"protocol", "owner", "verifier", "witness", "pawprint", "zoo"} <= set(config["root_packages"])
    forbidden: dict[str, set[str]] = {}
    for contract in config["contracts"]:
        name = contract["name"]
        assert contract["type"] == "forbidden", name
        assert not contract.get("ignore_imports"), f"{name}: imports are ignored; fix the import instead"
        assert not contract.get("allow_indirect_imports"), f"{name}: indirect imports must count"
        for source in contract["source_modules"]:
            forbidden.setdefault(source, set()).update(contract["forbidden_modules"])
    for source, required in FLOOR_PLAN.items():
        missing = required - forbidden.get(source, set())
        assert not missing, f"no contract forbids {source} to import {sorted(missing)}"
