"""A small OpenAI-compatible completions server for a local model directory: ``python -m zoo.serve MODEL``.

It exists because neither server we could install here answers what ``pawprint audit endpoint``'s default
log-probability mode asks: the ``/v1/completions`` handler of ``transformers serve`` (transformers 5.25) takes
text prompts only and lists ``echo`` and ``logprobs`` among the fields it accepts and ignores (it returns no
``logprobs``), and llama-cpp-python ships on PyPI as a source archive only (a C++ build of llama.cpp, minutes on
2 cores) and serves GGUF files, not model directories. (``transformers serve`` is what the text-only
``--mode greedy`` is tested against: zoo/transformers_serve.py, tests/audit/test_endpoint_transformers_serve.py.)
So this is **our own** server, written on the standard library's ``http.server`` and transformers: the tests and
the tolerance measurement (``benchmarks/endpoint_tolerance.py``) run the audit against it as a separate process
over HTTP, but it is not an independent implementation of the API, and a result against it says nothing about
how another server (vLLM, llama.cpp, a hosted API) rounds its log-probabilities.

What it serves, with the semantics of OpenAI's legacy Completions API:

- ``GET /v1/models``: the one model, ``{"object": "list", "data": [{"id": NAME, "object": "model", ...}]}``;
- ``POST /v1/completions`` with ``prompt`` (a string, a list of token ids, or a list of either: one choice
  each), ``max_tokens`` (default 16; 0 allowed), ``echo`` (the prompt's tokens come first in ``logprobs`` and
  ``text``, the first one's log-probability ``null``), ``logprobs`` (an integer 0..5: ``token_logprobs`` of every
  returned token, and in ``top_logprobs`` that many most likely tokens per position, plus the chosen one as the
  API does), ``temperature`` (0 or absent: greedy; above 0: sampled, from ``seed``, default 0) and ``model``
  (ignored). Other fields are accepted and ignored. Errors are ``{"error": {"message", "type", ...}}`` with
  status 400 (a malformed request) or 404 (another path).

``--dtype`` loads the weights in float32, bfloat16 or float16 and runs the forward pass in that dtype on the CPU
(the log-softmax is taken in float32, as servers do); ``--attn`` picks transformers' attention kernel (``sdpa``
or ``eager``). Both exist to measure how far a faithful deployment's numbers move from a float32 reference.
It listens on loopback only; with ``--port 0`` the system picks the port, and the first line on stdout is
``listening on http://127.0.0.1:PORT``. Requests are answered one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from zoo.progress import quiet_libraries

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION = ("sdpa", "eager")
MAX_TOP_LOGPROBS = 5  # OpenAI's limit for the legacy API
MAX_BODY = 1 << 20


class BadRequest(Exception):
    """A request this server refuses (HTTP 400, OpenAI's ``invalid_request_error``)."""


class CompletionModel:
    """One model directory loaded for serving: its tokenizer (``tokenizer.json``) and causal LM."""

    def __init__(self, model_dir: Path, dtype: str = "float32", attn: str = "sdpa", name: str | None = None) -> None:
        import transformers
        from tokenizers import Tokenizer

        self.dir = Path(model_dir)
        self.name = name or self.dir.name
        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        with quiet_libraries():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.dir), dtype=DTYPES[dtype], attn_implementation=attn)
        self.model = model.eval()
        self.vocab_size = int(self.model.config.vocab_size)
        self.lock = threading.Lock()

    def token_text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id], skip_special_tokens=False))

    def prompt_ids(self, prompt: object) -> list[int]:
        if isinstance(prompt, str):
            ids = list(self.tokenizer.encode(prompt).ids)
        elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = [int(t) for t in prompt]
        else:
            raise BadRequest("each prompt must be a string or a list of token ids")
        if not ids:
            raise BadRequest("a prompt has no tokens")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise BadRequest(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        return ids

    def _log_probs(self, ids: list[int]) -> torch.Tensor:
        """(len(ids), vocab) log-probabilities of the next token after each prefix, in float32."""
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.float(), dim=-1)

    def complete(self, ids: list[int], *, max_tokens: int, echo: bool, logprobs: int | None,
                 temperature: float, seed: int) -> dict[str, Any]:
        """One choice (without ``index``): ``text``, ``logprobs`` and ``finish_reason``, and the token counts."""
        generator = torch.Generator().manual_seed(seed)
        with self.lock:
            all_ids = list(ids)
            rows: list[torch.Tensor] = []  # rows[i]: log-probs of the token at position i + 1
            lp = self._log_probs(all_ids)
            rows.extend(lp[:-1])
            for step in range(max_tokens):
                last = lp[-1]
                if temperature > 0:
                    probs = torch.softmax(last / temperature, dim=-1)
                    nxt = int(torch.multinomial(probs, 1, generator=generator).item())
                else:
                    nxt = int(torch.argmax(last).item())
                rows.append(last)
                all_ids.append(nxt)
                if step < max_tokens - 1:  # no KV cache: a new forward pass over the whole sequence
                    lp = self._log_probs(all_ids)
        start = 0 if echo else len(ids)
        shown = all_ids[start:]
        text = "".join(self.token_text(t) for t in shown)
        choice: dict[str, Any] = {"text": text, "logprobs": None, "finish_reason": "length"}
        if logprobs is not None:
            tokens = [self.token_text(t) for t in shown]
            token_lps: list[float | None] = []
            tops: list[dict[str, float] | None] = []
            for pos in range(start, len(all_ids)):
                if pos == 0:  # nothing comes before the first token
                    token_lps.append(None)
                    tops.append(None)
                    continue
                row = rows[pos - 1]
                token_lps.append(float(row[all_ids[pos]]))
                top: dict[str, float] = {}
                if logprobs > 0:
                    values, idx = torch.topk(row, logprobs)
                    top = {self.token_text(int(i)): float(v) for v, i in zip(values, idx, strict=True)}
                top.setdefault(self.token_text(all_ids[pos]), float(row[all_ids[pos]]))
                tops.append(top)
            offsets, at = [], 0
            for t in tokens:
                offsets.append(at)
                at += len(t)
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops,
                                  "text_offset": offsets}
        choice["usage"] = (len(ids), len(all_ids) - len(ids))
        return choice


def _int_field(body: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"{key} must be an integer from {lo} to {hi}")
    return value


def completion_response(model: CompletionModel, body: object, now: int) -> dict[str, Any]:
    """The ``/v1/completions`` answer to ``body`` (a parsed JSON request), as OpenAI's legacy API shapes it."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompts: list[object] = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = list(prompt)
    else:
        raise BadRequest("prompt is required: a string, a list of token ids, or a list of either")
    max_tokens = _int_field(body, "max_tokens", 16, 0, 512) or 0
    logprobs = _int_field(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    seed = _int_field(body, "seed", 0, 0, 2**63 - 1) or 0
    temperature = body.get("temperature", 0)
    if temperature is None:
        temperature = 0
    if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise BadRequest("temperature must be a number from 0 to 2")
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise BadRequest("echo must be true or false")
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, p in enumerate(prompts):
        choice = model.complete(model.prompt_ids(p), max_tokens=max_tokens, echo=echo, logprobs=logprobs,
                                temperature=float(temperature), seed=seed)
        n_prompt, n_completion = choice.pop("usage")
        prompt_tokens += n_prompt
        completion_tokens += n_completion
        choices.append({"index": index, **choice})
    return {"id": f"cmpl-{now}", "object": "text_completion", "created": now, "model": model.name,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


def make_handler(model: CompletionModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pawprint-zoo-serve/1"

        def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
            return

        def _send(self, status: int, doc: object) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [
                    {"id": model.name, "object": "model", "created": 0, "owned_by": "pawprint-zoo"}]})
            else:
                self._error(404, f"no such path: {self.path}", "not_found_error")

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/completions", "/completions"):
                self._error(404, f"no such path: {self.path}", "not_found_error")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._error(400, "a JSON body of at most 1 MiB is required")
                return
            try:
                body = json.loads(self.rfile.read(length))
                self._send(200, completion_response(model, body, int(time.time())))
            except (ValueError, BadRequest) as e:  # json's errors are ValueErrors
                self._error(400, str(e))

    return Handler


def serve(model: CompletionModel, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (not yet serving: call ``serve_forever``)."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("zoo.serve listens on loopback only")
    return ThreadingHTTPServer((host, port), make_handler(model))


@contextlib.contextmanager
def running(model_dir: Path, *, dtype: str = "float32", attn: str = "sdpa", name: str | None = None,
            start_timeout_s: float = 120.0) -> Iterator[str]:
    """``python -m zoo.serve MODEL --port 0`` as a separate process, for a test or a benchmark: yields its base
    URL (``http://127.0.0.1:PORT``) once it listens, and stops it (terminate, then kill) on leaving."""
    cmd = [sys.executable, "-m", "zoo.serve", str(model_dir), "--port", "0", "--dtype", dtype, "--attn", attn]
    if name is not None:
        cmd += ["--name", name]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # stderr goes to a file, not a pipe: a chatty server never blocks on a full pipe
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        try:
            assert proc.stdout is not None
            ready: list[str] = []
            reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline() if proc.stdout else ""),
                                      daemon=True)
            reader.start()
            reader.join(start_timeout_s)
            line = ready[0] if ready else ""
            if not line.startswith("listening on "):
                proc.kill()
                proc.wait(timeout=10)
                errors.seek(0)
                err = errors.read().decode(errors="replace").strip()[-2000:]
                raise RuntimeError(f"zoo.serve {model_dir} did not start: {line.strip()} {err}")
            yield line.split("listening on ", 1)[1].strip()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.serve", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("model", help="model directory (config.json, weights, tokenizer.json)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed on the first line)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--attn", choices=ATTENTION, default="sdpa", help="transformers' attention implementation")
    p.add_argument("--name", default=None, help="the model's name in answers (default: the directory's name)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        model = CompletionModel(Path(args.model), args.dtype, args.attn, args.name)
    except (OSError, ValueError) as e:
        print(f"zoo.serve: cannot load {args.model}: {e}", file=sys.stderr)
        return 2
    server = serve(model, args.port)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
