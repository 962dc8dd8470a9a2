"""``pawprint audit endpoint`` against ``transformers serve``: Hugging Face's own OpenAI-compatible server (not
our code; the ``transformers[serving]`` extra that ``pip install -e '.[dev]'`` installs), started by the tests as
real processes serving quick-zoo models. It returns text only, so ``--mode greedy`` is the audit that works: the
same weights (float32, bfloat16) match, the SFT derivative and an independent model do not; the default
log-probability mode gives one clear error pointing at ``--mode greedy``. Beside them, the greedy walk alone on
answers made up here (no server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pawprint import _endpoint_audit as audit
from pawprint import cli, cli_audit_endpoint
from zoo.transformers_serve import transformers_serves

Main = Callable[[Sequence[str]], int]
REFERENCE = "llama-base-s0"


@pytest.fixture
def main() -> Main:
    return cli.main


@pytest.fixture(scope="module")
def hf(quick_zoo: Path) -> Iterator[dict[str, str]]:
    """Two ``transformers serve`` processes: one pinned to the reference in bfloat16 (it lists that model alone
    on /v1/models), one in float32 serving whichever model directory a request names (``--served-name``)."""
    with transformers_serves((quick_zoo / REFERENCE, "bfloat16"), (None, "float32")) as (pinned, any_model):
        yield {"bf16": pinned, "fp32": any_model}


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, dict)
    return doc


def _name(quick_zoo: Path, model: str) -> str:
    return str((quick_zoo / model).resolve())


# ------------------------------------------------------------------------------------------- the verdicts
def test_same_weights_in_bfloat16_match(main: Main, quick_zoo: Path, hf: dict[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = quick_zoo / REFERENCE
    assert main(["audit", "endpoint", str(model), hf["bf16"], "--mode", "greedy", "--prompts", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("match (greedy text only, weak evidence): ") and _name(quick_zoo, REFERENCE) in out
    assert main(["audit", "endpoint", str(model), hf["bf16"] + "/v1", "--mode", "greedy", "--json",
                 "--seed", "1"]) == 0
    doc = _json_out(capsys)
    assert doc["ok"] is True and doc["verdict"] == "match" and doc["mode"] == "greedy" and doc["seed"] == 1
    assert doc["prompts"] == cli_audit_endpoint.DEFAULT_GREEDY_PROMPTS == len(doc["per_prompt"])
    assert doc["statistic"] <= doc["threshold"] and doc["unexplained_prompts"] == 0
    assert doc["prompt_token_mismatches"] == 0 and doc["steps"] >= doc["prompts"]
    assert doc["served_model"] == _name(quick_zoo, REFERENCE)


def test_same_weights_in_float32_agree_on_every_step(main: Main, quick_zoo: Path, hf: dict[str, str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "endpoint", str(quick_zoo / REFERENCE), hf["fp32"], "--mode", "greedy", "--json",
                 "--served-name", _name(quick_zoo, REFERENCE), "--max-tokens", "8", "--prompts", "16"]) == 0
    doc = _json_out(capsys)
    # the same float32 forward pass: every served token is the reference's own choice, whatever the server's
    # tokenisation of its text (the walk recovers it: re-tokenising the text alone would not)
    assert doc["statistic"] == 0.0 and doc["agreed"] == doc["steps"]
    assert doc["exact_prompts"] == doc["prompts"] and doc["max_tokens"] == 8


@pytest.mark.parametrize("served", ["llama-sft", "llama-base-s1"])
def test_another_model_is_a_mismatch(main: Main, quick_zoo: Path, hf: dict[str, str], served: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["audit", "endpoint", str(quick_zoo / REFERENCE), hf["fp32"], "--mode", "greedy",
            "--served-name", _name(quick_zoo, served), "--prompts", "16"]
    assert main([*args, "--json"]) == 1
    doc = _json_out(capsys)
    assert doc["ok"] is False and doc["verdict"] == "mismatch" and doc["statistic"] > doc["threshold"]
    assert doc["agreed"] < doc["steps"] and doc["served_model"] == _name(quick_zoo, served)
    assert main(args) == 1
    assert capsys.readouterr().out.startswith("mismatch (greedy text only, weak evidence): ")


def test_the_same_seed_gives_the_same_result(quick_zoo: Path, hf: dict[str, str]) -> None:
    model, name = quick_zoo / REFERENCE, _name(quick_zoo, "llama-sft")
    a = audit.audit_endpoint_greedy(model, hf["fp32"], seed=5, prompts=4, model_name=name)
    b = audit.audit_endpoint_greedy(model, hf["fp32"], seed=5, prompts=4, model_name=name)
    assert a.as_dict() == b.as_dict()


# ----------------------------------------------------------------------------------------------- errors
def test_log_probability_mode_says_to_use_greedy(main: Main, quick_zoo: Path, hf: dict[str, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # transformers serve takes text prompts only (token ids: HTTP 400) and never returns logprobs
    assert main(["audit", "endpoint", str(quick_zoo / REFERENCE), hf["bf16"], "--json", "--prompts", "1"]) == 2
    message = _json_out(capsys)["error"]["message"]
    assert "HTTP 400: prompt must be a string" in message and "use --mode greedy" in message
    assert "\n" not in message


def test_a_model_the_server_does_not_serve_is_bad_input(main: Main, quick_zoo: Path, hf: dict[str, str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "endpoint", str(quick_zoo / REFERENCE), hf["bf16"], "--mode", "greedy",
                 "--served-name", "someone/else"]) == 2
    assert "HTTP 400" in capsys.readouterr().err


def test_greedy_options(main: Main, quick_zoo: Path, hf: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    model = str(quick_zoo / REFERENCE)
    assert main(["audit", "endpoint", model, hf["bf16"], "--max-tokens", "4"]) == 2
    assert "--max-tokens is an option of --mode greedy" in capsys.readouterr().err
    assert main(["audit", "endpoint", model, hf["bf16"], "--mode", "greedy", "--max-tokens", "0"]) == 2
    assert "--max-tokens must be at least 1" in capsys.readouterr().err
    assert main(["audit", "endpoint", model, hf["bf16"], "--mode", "greedy", "--max-tokens", "100"]) == 2
    assert "takes at most 128 positions" in capsys.readouterr().err


class _TextOnly(BaseHTTPRequestHandler):
    """An endpoint whose completions lack ``choices[0].text``."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_answer_without_text_is_bad_input(main: Main, quick_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TextOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["audit", "endpoint", str(quick_zoo / REFERENCE), url, "--mode", "greedy", "--json",
                     "--prompts", "1"]) == 2
    finally:
        server.shutdown()
        server.server_close()
    assert "no choices[0].text" in _json_out(capsys)["error"]["message"]


# ------------------------------------------------------------------------------- the walk, on made-up answers
@pytest.fixture(scope="module")
def greedy(quick_zoo: Path) -> audit.GreedyModel:
    return audit.GreedyModel(audit.LocalModel.load(quick_zoo / REFERENCE))


def _local_greedy(greedy: audit.GreedyModel, ids: list[int], steps: int) -> tuple[list[int], bool]:
    """The reference's own greedy continuation (token ids) and whether it ended with end-of-sequence."""
    import torch

    context, out = list(ids), list[int]()
    for _ in range(steps):
        with torch.no_grad():
            best = int(greedy.local.model(input_ids=torch.tensor([context])).logits[0, -1].argmax())
        if best in greedy.eos:
            return out, True
        out.append(best)
        context.append(best)
    return out, False


def test_walk_of_the_models_own_text_has_no_regret(greedy: audit.GreedyModel) -> None:
    seen_stop = seen_text = False
    for ids in audit.seeded_prompts(greedy.local.usable_ids, 3, 6, 12):
        _, prompt = greedy.prompt_text(ids)
        cont, stopped = _local_greedy(greedy, prompt, 6)
        served = audit.ServedText(greedy.tokenizer.decode(cont, skip_special_tokens=True), stopped, None, None)
        walk = greedy.walk(prompt, served, 6)
        assert walk.exact and walk.worst == 0.0 and walk.agreed == len(walk.regrets)
        assert list(walk.tokens) == cont and len(walk.regrets) == len(cont) + stopped
        seen_stop |= stopped
        seen_text |= bool(cont)
    assert seen_stop and seen_text  # both endings were exercised


def test_walk_charges_regret_for_another_choice(greedy: audit.GreedyModel) -> None:
    _, prompt = greedy.prompt_text(audit.seeded_prompts(greedy.local.usable_ids, 0, 1, 12)[0])
    # the endpoint "chose" the reference's least likely ordinary token and stopped
    import torch

    with torch.no_grad():
        lp = torch.log_softmax(greedy.local.model(input_ids=torch.tensor([prompt])).logits[0, -1], -1)
    worst = min(greedy.local.usable_ids, key=lambda i: float(lp[i]))
    text = greedy.tokenizer.decode([worst], skip_special_tokens=True)
    walk = greedy.walk(prompt, audit.ServedText(text, True, None, None), 4)
    assert walk.regrets[0] > 1.0 and not walk.exact and walk.explained
    # text that no token of the reference's vocabulary starts: unexplained, with a lower bound of regret
    odd = greedy.walk(prompt, audit.ServedText("\u4e2d\u6587", False, None, None), 4)
    assert not odd.explained and odd.worst > 0 and len(odd.regrets) == 1
    res = audit.compare_greedy([walk, odd], threshold=0.15)
    assert not res.match and res.unexplained == 1 and res.statistic == max(walk.worst, odd.worst)


def test_cli_greedy_defaults_are_the_audits() -> None:
    assert cli_audit_endpoint.DEFAULT_GREEDY_THRESHOLD == audit.DEFAULT_GREEDY_THRESHOLD
    assert cli_audit_endpoint.DEFAULT_GREEDY_PROMPTS == audit.DEFAULT_GREEDY_PROMPTS
    assert cli_audit_endpoint.DEFAULT_GREEDY_LENGTH == audit.DEFAULT_GREEDY_LENGTH
    assert cli_audit_endpoint.DEFAULT_MAX_TOKENS == audit.DEFAULT_MAX_TOKENS
