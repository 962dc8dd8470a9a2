"""Start ``transformers serve`` (Hugging Face's own OpenAI-compatible server, from the ``transformers[serving]``
extra) as a separate process, for the tests and the measurement of ``pawprint audit endpoint --mode greedy``.

Unlike ``zoo/serve.py`` this is not our code: it is the server as transformers ships it (FastAPI and uvicorn,
a model process per served model, ``generate`` for the completion), run through its command line. What it
answers on ``POST /v1/completions`` (transformers 5.25): a string prompt only (a list of token ids is HTTP 400),
tokenised by the model's ``AutoTokenizer``; greedy when ``temperature`` is 0; ``max_tokens``; the generated text
decoded with ``skip_special_tokens``; ``echo`` and ``logprobs`` accepted and ignored (``logprobs`` is never in the
answer). Loopback only; ``HF_HUB_OFFLINE=1`` so that nothing is fetched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# the start-up (import FastAPI and transformers, load the model in its process) takes about 20 s on 2 idle cores
START_TIMEOUT_S = 240.0


def free_port() -> int:
    """A loopback port that was free a moment ago (``transformers serve`` takes no ``--port 0``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as answer:
            return bool(json.loads(answer.read()).get("status") == "ok")
    except (OSError, ValueError, urllib.error.URLError):
        return False


class _Process:
    """One ``transformers serve`` process: started at construction, ``wait`` until healthy, ``stop``."""

    def __init__(self, model: Path | None, dtype: str, threads: int, log: IO[bytes]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.cmd = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve",
                    *([str(Path(model).resolve())] if model is not None else []), "--host", "127.0.0.1",
                    "--port", str(port), "--device", "cpu", "--dtype", dtype, "--log-level", "warning"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
        self.log = log
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-2000:]
                why = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else \
                    f"not healthy within {timeout_s:g}s"
                raise RuntimeError(f"transformers serve {why}: {' '.join(self.cmd)}\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


@contextlib.contextmanager
def transformers_serves(*servers: tuple[Path | None, str], threads: int = 1,
                        timeout_s: float = START_TIMEOUT_S) -> Iterator[list[str]]:
    """Several ``transformers serve [MODEL] --device cpu --dtype DTYPE`` processes, one per ``(MODEL, DTYPE)``,
    each on a free loopback port, started together; yields their base URLs (``http://127.0.0.1:PORT``) once
    every ``/health`` answers ok. Without MODEL (None) a server serves any local model directory a request names
    in ``model`` (each loaded on first use, in its own process). Every process group is ended on exit; a start
    that fails raises ``RuntimeError`` with the end of its log."""
    with contextlib.ExitStack() as stack:
        procs: list[_Process] = []
        for model, dtype in servers:
            log = stack.enter_context(tempfile.TemporaryFile())
            proc = _Process(model, dtype, threads, log)
            stack.callback(proc.stop)
            procs.append(proc)
        for proc in procs:
            proc.wait(timeout_s)
        yield [proc.url for proc in procs]


@contextlib.contextmanager
def transformers_serve(model: Path | None = None, *, dtype: str = "float32", threads: int = 1,
                       timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """One server (``transformers_serves``); yields its base URL."""
    with transformers_serves((model, dtype), threads=threads, timeout_s=timeout_s) as urls:
        yield urls[0]
