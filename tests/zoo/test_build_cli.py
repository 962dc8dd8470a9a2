"""``pawprint zoo build`` reports progress model by model in the CLI's one style: without a terminal, one plain
line per step (no carriage returns, no third-party bars); under ``--json``, the JSON document alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zoo.build import QUICK_SCALE, plan_zoo


def _zoo_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pawprint", "zoo", "build", *args], capture_output=True,
                          text=True, timeout=600, check=False)


def test_zoo_build_progress_in_a_log_and_under_json(tmp_path: Path) -> None:
    # the smallest build the zoo's tests use (test_build_is_deterministic): one family, two bases
    names = [r.name for r in plan_zoo(("bert",), QUICK_SCALE)]
    r = _zoo_build(str(tmp_path), "--quick", "--families", "bert")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"zoo ready: {tmp_path / 'lineage.json'}\n"
    lines = r.stderr.splitlines()
    assert "\r" not in r.stderr and "\x1b" not in r.stderr
    assert "Loading weights" not in r.stderr and "it/s" not in r.stderr  # no third-party bars
    total = 1 + len(names)  # one tokenizer, then the models
    assert [line.rsplit("  ", 1)[0] for line in lines] == [
        f"zoo: tokenizer wordpiece  0/{total}",
        *(f"zoo: {name}  {i + 1}/{total}" for i, name in enumerate(names)),
        f"zoo: done  {total}/{total}",
    ]

    r = _zoo_build(str(tmp_path), "--quick", "--families", "bert", "--json")  # cached now
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert json.loads(r.stdout)["lineage"] == str(tmp_path / "lineage.json")

    r = _zoo_build(str(tmp_path), "--quick", "--families", "bert")  # a cached model says so
    assert r.returncode == 0, r.stderr
    assert [line.split("  ")[0] for line in r.stderr.splitlines()][1:-1] == [f"zoo: {n}: cached" for n in names]


def test_quiet_libraries_silences_then_restores() -> None:
    import transformers
    from huggingface_hub import utils as hub

    from zoo.progress import quiet_libraries

    def settings() -> tuple[int, bool, bool]:
        return (transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled(),
                hub.are_progress_bars_disabled())

    before = settings()
    with quiet_libraries():
        assert settings() == (transformers.logging.ERROR, False, True)
    assert settings() == before
