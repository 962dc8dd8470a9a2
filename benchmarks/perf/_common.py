"""Shared helpers of the performance benchmarks: the machine, load, page cache, and measured subprocesses.

A command is measured in its own process: wall time from ``Popen`` to exit and, sampled every 20 ms from
``/proc/PID/status``, its peak resident set (``VmHWM``, the kernel's high-water mark of the process's own address
space, so a sample at any time after the peak sees it) and the peaks of its anonymous memory (``RssAnon``) and of
its file-backed pages (``RssFile``: libraries and memory-mapped files, which the kernel can drop at any time).
``ru_maxrss`` of the child (``os.wait4``) is recorded too but not used: Linux carries the pre-``exec`` image's
high-water mark into it, which for a forked child is the parent's resident set at the fork. Nothing here asserts
a timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
OUT = REPO / "out" / "perf"
GIB = 1 << 30
MIB = 1 << 20


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, free disk, software versions."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    disk = shutil.disk_usage(REPO)
    flags = ""
    with contextlib.suppress(OSError, StopIteration):
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "sha_ni") if f" {f}" in flags]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "isa": isa,
        "memory_gib": round(mem_total / GIB, 1),
        "disk_free_gib": round(disk.free / GIB, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "kernel": platform.release(),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), {m['memory_gib']} GiB RAM, "
            f"{m['disk_free_gib']} GiB disk free; Python {m['python']}, torch {m['torch']} "
            f"({m['torch_threads']} threads), Linux {m['kernel']}")


def evict(paths: Sequence[Path]) -> None:
    """Drop ``paths`` from the page cache (``POSIX_FADV_DONTNEED`` on each file: only these files, so other
    users of the machine keep their cache; clean pages only, which a finished write has become after fsync)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Sequence[Path], block: int = 16 * MIB) -> None:
    """Read ``paths`` once so that they are in the page cache."""
    buf = bytearray(block)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


@dataclass(frozen=True)
class Measured:
    """One measured process: wall seconds, peak RSS (kernel), peak anonymous and file-backed RSS (sampled)."""

    wall_s: float
    max_rss_bytes: int
    ru_maxrss_bytes: int
    peak_anon_bytes: int
    peak_file_bytes: int
    returncode: int
    stdout: str
    stderr: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("stdout")
        d["stderr_tail"] = d.pop("stderr")[-400:]
        return d


def _status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = 900.0,
                 cwd: Path | None = None) -> Measured:
    """Run ``cmd`` and measure it (see the module docstring)."""
    peaks = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd or REPO)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for k, v in _status_kb(proc.pid, ("RssAnon", "RssFile", "VmHWM")).items():
                peaks[k] = max(peaks[k], v)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_parts: list[str] = []
    err_parts: list[str] = []

    def drain(stream: Any, parts: list[str]) -> None:
        parts.append(stream.read())

    readers = [threading.Thread(target=drain, args=(proc.stdout, out_parts), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, err_parts), daemon=True)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    for r in readers:
        r.join()
    return Measured(wall, peaks["VmHWM"] or usage.ru_maxrss * 1024, usage.ru_maxrss * 1024, peaks["RssAnon"],
                    peaks["RssFile"], proc.returncode, "".join(out_parts), "".join(err_parts))


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def mib(n: float) -> str:
    return f"{n / MIB:.0f} MiB"
