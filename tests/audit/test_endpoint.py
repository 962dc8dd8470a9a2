"""``pawprint audit endpoint MODEL URL`` against real server processes (``python -m zoo.serve``, our own
OpenAI-compatible completions server: see zoo/serve.py for why not ``transformers serve`` or llama-cpp-python)
serving quick-zoo models: the same weights served in bfloat16 match, a derivative and an independent model do
not, a dead port and a silent one are exit 3, a wrong model path or a malformed answer exit 2."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from pawprint import _endpoint_audit as audit
from pawprint import cli, cli_audit_endpoint
from pawprint._common import CommandError
from zoo.serve import running

Main = Callable[[Sequence[str]], int]


@pytest.fixture
def main() -> Main:
    """``pawprint.cli.main`` (``audit endpoint`` is added by pawprint/cli_audit.py's hook)."""
    return cli.main


@pytest.fixture(scope="module")
def served(quick_zoo: Path) -> Iterator[dict[str, str]]:
    """Three servers: the reference's weights in bfloat16, its SFT derivative, an independent base."""
    with running(quick_zoo / "llama-base-s0", dtype="bfloat16") as same, \
            running(quick_zoo / "llama-sft") as derived, \
            running(quick_zoo / "llama-base-s1") as independent:
        yield {"same": same, "derived": derived, "independent": independent}


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, dict)
    return doc


# ------------------------------------------------------------------------------------------- the verdicts
def test_same_weights_in_bfloat16_match(main: Main, quick_zoo: Path, served: dict[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = quick_zoo / "llama-base-s0"
    assert main(["audit", "endpoint", str(model), served["same"]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("match: ") and "served as llama-base-s0" in out
    assert main(["audit", "endpoint", str(model), served["same"] + "/v1/completions", "--json", "--seed", "3"]) == 0
    doc = _json_out(capsys)
    assert doc["ok"] is True and doc["verdict"] == "match" and doc["seed"] == 3
    assert doc["positions"] == cli_audit_endpoint.DEFAULT_PROMPTS * (cli_audit_endpoint.DEFAULT_LENGTH - 1)
    # bfloat16 moved the numbers (this is not the trivial float32 copy), but far less than the threshold
    assert 0 < doc["statistic"] <= doc["threshold"] / 5
    assert doc["max_abs"] > 0 and len(doc["per_prompt"]) == doc["prompts"]


@pytest.mark.parametrize("which", ["derived", "independent"])
def test_another_model_is_a_mismatch(main: Main, quick_zoo: Path, served: dict[str, str], which: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = quick_zoo / "llama-base-s0"
    assert main(["audit", "endpoint", str(model), served[which], "--json"]) == 1
    doc = _json_out(capsys)
    assert doc["ok"] is False and doc["verdict"] == "mismatch"
    assert doc["statistic"] > 2 * doc["threshold"]
    assert main(["audit", "endpoint", str(model), served[which]]) == 1
    assert capsys.readouterr().out.startswith("mismatch: ")


def test_the_console_command_exits_1_on_a_mismatch(quick_zoo: Path, served: dict[str, str]) -> None:
    ran = subprocess.run([sys.executable, "-m", "pawprint", "audit", "endpoint", str(quick_zoo / "llama-base-s0"),
                          served["independent"], "--json", "--prompts", "2"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert ran.returncode == 1, ran.stderr
    assert json.loads(ran.stdout)["verdict"] == "mismatch"


def test_the_same_seed_gives_the_same_statistic(quick_zoo: Path, served: dict[str, str]) -> None:
    model = quick_zoo / "llama-base-s0"
    a = audit.audit_endpoint(model, served["derived"], seed=7, prompts=2, length=8)
    b = audit.audit_endpoint(model, served["derived"], seed=7, prompts=2, length=8)
    c = audit.audit_endpoint(model, served["derived"], seed=8, prompts=2, length=8)
    assert a == b and a.per_prompt != c.per_prompt


# ----------------------------------------------------------------------------------------------- errors
def test_dead_port_is_unavailable(main: Main, quick_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["audit", "endpoint", str(quick_zoo / "llama-base-s0"), f"http://127.0.0.1:{port}", "--json"]) == 3
    doc = _json_out(capsys)
    assert doc["error"]["code"] == 3 and "refused" in doc["error"]["message"].lower()


def test_silent_endpoint_times_out(main: Main, quick_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # accepts connections (the backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        assert main(["audit", "endpoint", str(quick_zoo / "llama-base-s0"), url, "--timeout", "0.5"]) == 3
    assert "no answer within 0.5s" in capsys.readouterr().err


def test_wrong_model_path_is_bad_input(main: Main, quick_zoo: Path, served: dict[str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "endpoint", str(tmp_path / "nowhere"), served["same"], "--json"]) == 2
    assert "no such directory" in _json_out(capsys)["error"]["message"]
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(quick_zoo / "llama-base-s0" / name, no_weights / name)
    assert main(["audit", "endpoint", str(no_weights), served["same"]]) == 2
    assert "no weights" in capsys.readouterr().err
    # an encoder is not a causal language model: one clear line, exit 2
    assert main(["audit", "endpoint", str(quick_zoo / "bert-base-s0"), served["same"]]) == 2
    assert "not a causal language model (BertForMaskedLM)" in capsys.readouterr().err
    # a checkpoint without its head: transformers would draw one at random, the audit refuses
    headless = tmp_path / "headless"
    shutil.copytree(quick_zoo / "llama-base-s0", headless)
    tensors = load_file(headless / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, headless / "model.safetensors")
    assert main(["audit", "endpoint", str(headless), served["same"]]) == 2
    assert "lacks 1 weight(s) (lm_head.weight)" in capsys.readouterr().err


class _Wrong(BaseHTTPRequestHandler):
    """Answers every completions request wrongly, the way the path's first part says."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(404, b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = self.path.split("/")[1]
        body = {
            "nojson": b"<html>hello</html>",
            "nologprobs": json.dumps({"choices": [{"text": "x", "logprobs": None}]}).encode(),
            "noecho": json.dumps({"choices": [{"logprobs": {"token_logprobs": [-1.0]}}]}).encode(),
            "positive": json.dumps({"choices": [{"logprobs": {"token_logprobs": [None] + [3.0] * 40}}]}).encode(),
            "refuses": json.dumps({"error": {"message": "echo is not supported"}}).encode(),
            "overloaded": b"busy",
        }[kind]
        self._send({"refuses": 400, "overloaded": 503}.get(kind, 200), body)


@pytest.fixture(scope="module")
def wrong_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Wrong)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("kind", "code", "words"), [
    ("nojson", 2, "not JSON"),
    ("nologprobs", 2, "no choices[0].logprobs.token_logprobs"),
    ("noecho", 2, "not echoed"),
    ("positive", 2, "not a number <= 0"),
    ("refuses", 2, "HTTP 400: echo is not supported"),
    ("overloaded", 3, "HTTP 503"),
])
def test_malformed_answers(main: Main, quick_zoo: Path, wrong_server: str, kind: str, code: int, words: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{wrong_server}/{kind}/v1"
    assert main(["audit", "endpoint", str(quick_zoo / "llama-base-s0"), url, "--json", "--prompts", "1"]) == code
    doc = _json_out(capsys)
    assert doc["error"]["code"] == code and words in doc["error"]["message"]


# -------------------------------------------------------------------------------------- the parts, alone
def test_cli_defaults_are_the_audits() -> None:
    assert cli_audit_endpoint.DEFAULT_THRESHOLD == audit.DEFAULT_THRESHOLD
    assert cli_audit_endpoint.DEFAULT_PROMPTS == audit.DEFAULT_PROMPTS
    assert cli_audit_endpoint.DEFAULT_LENGTH == audit.DEFAULT_LENGTH
    assert cli_audit_endpoint.DEFAULT_TIMEOUT_S == audit.DEFAULT_TIMEOUT_S


def test_seeded_prompts() -> None:
    usable = [i for i in range(1, 100) if i != 50]
    a = audit.seeded_prompts(usable, 1, 4, 16)
    assert a == audit.seeded_prompts(usable, 1, 4, 16)
    assert a != audit.seeded_prompts(usable, 2, 4, 16)
    assert len(a) == 4 and all(len(p) == 16 for p in a)
    assert {t for p in a for t in p} <= set(usable)


@pytest.mark.parametrize(("url", "base"), [
    ("http://h:1", "http://h:1/v1"),
    ("http://h:1/", "http://h:1/v1"),
    ("http://h:1/v1", "http://h:1/v1"),
    ("https://h/api/v1/completions", "https://h/api/v1"),
])
def test_endpoint_urls(url: str, base: str) -> None:
    assert audit.Endpoint.parse(url, 5).base == base


def test_bad_endpoint_options() -> None:
    with pytest.raises(CommandError, match="not an http"):
        audit.Endpoint.parse("ftp://h/v1", 5)
    with pytest.raises(CommandError, match="not a valid URL"):
        audit.Endpoint.parse("http://h:port/v1", 5)
    with pytest.raises(CommandError, match="--timeout"):
        audit.Endpoint.parse("http://h/v1", 0)


@pytest.mark.parametrize(("options", "words"), [
    (["--prompts", "0"], "--prompts must be at least 1"),
    (["--seed", "-1"], "--seed at least 0"),
    (["--length", "500"], "takes at most 128 positions"),
    (["--threshold", "nan"], "--threshold must be a number >= 0"),
])
def test_bad_audit_options(main: Main, quick_zoo: Path, served: dict[str, str], options: list[str], words: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "endpoint", str(quick_zoo / "llama-base-s0"), served["same"], *options]) == 2
    assert words in capsys.readouterr().err


def test_compare_takes_the_worst_prompt() -> None:
    res = audit.compare([[-1.0, -2.0], [-1.0, -1.0]], [[-1.0, -2.0], [-1.2, -1.4]], threshold=0.25)
    assert res.per_prompt == pytest.approx((0.0, 0.3))
    assert res.statistic == pytest.approx(0.3) and not res.match
    assert res.mean_abs == pytest.approx(0.15) and res.max_abs == pytest.approx(0.4) and res.positions == 4


def test_server_follows_the_legacy_completions_api(served: dict[str, str]) -> None:
    def post(body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(served["derived"] + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            doc = json.loads(r.read())
        assert isinstance(doc, dict)
        return doc

    prompt = [5, 17, 300, 42]
    echoed = post({"prompt": prompt, "max_tokens": 2, "echo": True, "logprobs": 2})["choices"][0]["logprobs"]
    assert len(echoed["tokens"]) == 6 and echoed["token_logprobs"][0] is None and echoed["top_logprobs"][0] is None
    assert all(v <= 0 for v in echoed["token_logprobs"][1:])
    for top, chosen, value in zip(echoed["top_logprobs"][1:], echoed["tokens"][1:], echoed["token_logprobs"][1:],
                                  strict=True):
        assert top[chosen] == value and 2 <= len(top) <= 3
    # greedy: each generated token is the most likely one
    assert echoed["token_logprobs"][4] == max(echoed["top_logprobs"][4].values())
    plain = post({"prompt": prompt, "max_tokens": 2, "logprobs": 0})["choices"][0]
    assert plain["logprobs"]["token_logprobs"] == echoed["token_logprobs"][4:]
    assert post({"prompt": ["some text", prompt], "max_tokens": 0, "echo": True})["usage"]["completion_tokens"] == 0
    with pytest.raises(urllib.error.HTTPError) as e:
        post({"prompt": [10**6]})
    assert e.value.code == 400
