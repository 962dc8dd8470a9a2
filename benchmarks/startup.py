"""How long the command line takes to start and answer, against an earlier revision in the same run.

    python -m benchmarks.startup [--baseline a739bec] [--runs 7] [--out docs/results/startup.md]

Each command is run ``--runs`` times as a fresh process (``python -m pawprint ...``) with this checkout and with
the baseline revision (a temporary ``git worktree``, the same interpreter and installed libraries), interleaved
so that both see the same machine load; the table gives the median and the fastest wall time of each, and the
ratio of the medians. Until a739bec every command imported torch before parsing its arguments; the commands
timed here need no torch now. The inputs are the golden files an auditor holds (``tests/golden_core``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden_core"

COMMANDS: dict[str, list[str]] = {
    "pawprint --help": ["--help"],
    "receipt verify (signature, verdict re-derived)": [
        "receipt", "verify", str(GOLDEN / "receipt.receipt"), "--verifier-pub", str(GOLDEN / "verifier.pub")],
    "bundle verify": ["bundle", "verify", str(GOLDEN / "bundle.bundle"), "--trust", str(GOLDEN / "trust.json")],
}


def _time_once(cwd: Path, args: Sequence[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pawprint", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{cwd}: pawprint {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[-400:]}")
    return elapsed


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--baseline", default="a739bec", help="the revision to compare with (default a739bec)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="write the table as Markdown here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            rows = []
            load_before = _load()
            for label, cmd in COMMANDS.items():
                now: list[float] = []
                then: list[float] = []
                for _ in range(args.runs):
                    now.append(_time_once(ROOT, cmd))
                    then.append(_time_once(base, cmd))
                rows.append((label, statistics.median(now), min(now), statistics.median(then), min(then)))
                print(f"{label}: {statistics.median(now):.2f} s now, {statistics.median(then):.2f} s at "
                      f"{args.baseline}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False,
                           capture_output=True)
    lines = [
        "# Command-line start-up",
        "",
        f"`python -m benchmarks.startup --baseline {args.baseline} --runs {args.runs}`: each command as a fresh "
        f"process, {args.runs} runs each, interleaved with the baseline; {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load_before} before and {_load()} after.",
        "",
        f"| command | now: median (fastest) | {args.baseline}: median (fastest) | ratio |",
        "|---|---|---|---|",
    ]
    for label, med, best, bmed, bbest in rows:
        lines.append(f"| {label} | {med:.2f} s ({best:.2f}) | {bmed:.2f} s ({bbest:.2f}) | {bmed / med:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
