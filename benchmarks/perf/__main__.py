"""Every performance benchmark in turn, each in its own process, with the settings behind
docs/results/perf.md, then the page itself: ``python -m benchmarks.perf [--quick]`` (``--quick``: one repeat
each, no 7B run)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.perf import report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    r = "1" if args.quick else "3"
    steps: list[tuple[str, list[str]]] = [
        ("owner_vs_reference 1.1b", ["--shape", "1.1b", "--repeats", r]),
        ("floor 1.1b", ["--shape", "1.1b", "--repeats", r]),
        ("commitment 1.1b", ["--shape", "1.1b", "--repeats", r]),
        ("transfer", ["--repeats", r]),
        ("registry_scale", []),
        ("compare", ["--bases", "4"]),
        ("service_scale", ["--bases", "2000" if args.quick else "10000"]),
        ("all_layers 1.1b", ["--shape", "1.1b", "--tokens", "1024"]),
    ]
    if not args.quick:
        steps.insert(1, ("owner_vs_reference 7b", ["--shape", "7b", "--repeats", "1", "--no-cold"]))
    for label, a in steps:
        t0 = time.perf_counter()
        print(f"== {label}", flush=True)
        subprocess.run([sys.executable, "-m", f"benchmarks.perf.{label.split()[0]}", *a], check=True)
        print(f"== {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    return report.main()


if __name__ == "__main__":
    raise SystemExit(main())
