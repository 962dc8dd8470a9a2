"""Check that given weights are what an OpenAI-compatible completions endpoint serves (``audit endpoint``).

The check: prompts of random token ids drawn from a seed over MODEL's vocabulary (special tokens left out) are
sent to ``POST {URL}/completions`` with ``echo: true, logprobs: 1, max_tokens: 1, temperature: 0``, as OpenAI's
legacy Completions API defines them; the answer's ``token_logprobs`` for the prompt's positions (every token
after the first: its log-probability given the tokens before it) are compared with those MODEL's weights give
in a float32 forward pass (transformers, on the CPU). Per prompt, the mean absolute difference in nats; the
statistic is the largest of them (so a server that answers some requests with another model is caught as well
as one that always does), and the endpoint matches when it is at most the threshold.

The threshold (``DEFAULT_THRESHOLD``) comes from a measurement on the zoo (docs/results/endpoint_audit.md,
``benchmarks/endpoint_tolerance.py``): the same weights served in bfloat16 or float16, with either attention
kernel, or rounded to bf16 or int8, stayed at or below 0.0094, and every derivative and independent model at or
above 0.109. What a match shows: the endpoint's answers on these prompts agree with these weights within that
tolerance. It cannot tell the weights from others that compute the same function within it (rounded and
quantised copies match; so did weights with random noise at 10% of their spread on the smallest zoo models);
the tolerance was measured on small models on our own server, and real models served elsewhere need their own
measurement (``--threshold``); an endpoint that recognises audit traffic can answer it with other weights than
it serves to everyone else; nor does it say who runs the endpoint.

**Text only** (``--mode greedy``), for endpoints that return no log-probabilities (``transformers serve``, most
hosted chat APIs): prompts of seeded token ids are decoded to text with MODEL's tokenizer (transformers'
``AutoTokenizer``) and sent as text with ``temperature: 0, max_tokens: L``; the text the endpoint returns is
compared with MODEL's float32 forward pass by walking MODEL along it from the prompt's tokens
(``GreedyModel.walk``). The served token ids are unknown and re-tokenising the text on its own gives other ids than
generated it in most completions (measured: docs/results/endpoint_greedy.md), so at each step the served token is
taken to be MODEL's most likely token among those that keep the decoded continuation a prefix of the served text. A
step's *regret* is MODEL's largest log-probability minus that token's (0 when the endpoint chose MODEL's own
argmax); when the endpoint ended the text early (``finish_reason: stop``), one more step scores the end-of-sequence
token. The statistic is the largest regret of any step of any prompt, and the endpoint matches when it is at most
``DEFAULT_GREEDY_THRESHOLD``. For the same weights a step's regret can only come from a near tie that rounding
flipped, so it is at most the sum of two log-probability errors (two x 0.048 nats for the worst copy measured by
the log-probability mode); measured against ``transformers serve`` (docs/results/endpoint_greedy.md), the same
weights in float32 and bfloat16 and rounded copies stayed at or below 0.038, every derivative and independent model
of the default zoo at or above 0.92, but on the quick zoo a merged LoRA (0.126) and a depth-pruned copy (0.101)
each passed on 1 of 5 seeds. This is **much weaker evidence** than the log-probability mode: only the argmax of
each step is seen, so a model that makes the same greedy choices on these prompts (a light fine-tune, a near copy)
matches, however different its probabilities; a completion that ends after one or two tokens carries one or two
choices; and a tokenisation ambiguity after a rounding flip can make the walk charge regret to the same weights.
The prompts must be tokenised by the endpoint as MODEL's tokenizer does: the prompts whose ``usage.prompt_tokens``
differs from MODEL's count are reported (``prompt_token_mismatches``), not decided on.

Only this module talks HTTP (the standard library's ``urllib``, no new dependency); the forward pass needs
torch, transformers and tokenizers (the zoo extra), imported when the audit runs.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pawprint._common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, CommandError

# The largest per-prompt mean |served - local| log-probability (nats) that still counts as the same weights
# (docs/results/endpoint_audit.md gives the measurement it was chosen from).
DEFAULT_THRESHOLD = 0.05
DEFAULT_PROMPTS = 8
DEFAULT_LENGTH = 32
DEFAULT_TIMEOUT_S = 30.0
# --mode greedy (text only): the largest regret of any step (nats) that still counts as the same weights
# (docs/results/endpoint_greedy.md gives the measurement it was chosen from), and its prompt shape
DEFAULT_GREEDY_THRESHOLD = 0.15
DEFAULT_GREEDY_PROMPTS = 64
DEFAULT_GREEDY_LENGTH = 16
DEFAULT_MAX_TOKENS = 16
_UNAVAILABLE_HTTP = frozenset({502, 503, 504})
# the class-name endings of transformers' causal LM heads (config.json's ``architectures``)
_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")
_MAX_ANSWER = 64 << 20


class EndpointUnavailable(CommandError):
    """The endpoint did not answer: connection refused or reset, a timeout, a gateway's 502/503/504 (exit 3)."""

    default_code = EXIT_UNAVAILABLE


class MalformedAnswer(CommandError):
    """The endpoint answered, but not with what the audit needs (exit 2): not JSON, no echoed log-probs."""

    default_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Endpoint:
    """Where the completions API is: ``base`` ends in ``/v1`` (or whatever prefix the URL gave)."""

    base: str
    timeout_s: float

    @classmethod
    def parse(cls, url: str, timeout_s: float) -> Endpoint:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as e:
            raise CommandError(f"endpoint {url}: not a valid URL ({e})") from e
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommandError(f"endpoint {url}: not an http:// or https:// URL")
        if not timeout_s > 0:
            raise CommandError("--timeout must be above 0 seconds")
        base = url.rstrip("/")
        if base.endswith("/completions"):
            base = base[: -len("/completions")]
        elif not urllib.parse.urlsplit(base).path.endswith("/v1"):
            base += "/v1"
        return cls(base, timeout_s)

    def request(self, path: str, body: dict[str, Any] | None = None) -> object:
        """GET (``body`` None) or POST JSON to ``base + path``; the answer's parsed JSON. Raises
        ``EndpointUnavailable`` when nothing answers in time, ``MalformedAnswer`` for an HTTP error status or
        an answer that is not JSON."""
        url = self.base + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as answer:
                raw = answer.read(_MAX_ANSWER + 1)
        except urllib.error.HTTPError as e:
            detail = _error_detail(e)
            if e.code in _UNAVAILABLE_HTTP:
                raise EndpointUnavailable(f"endpoint {url}: HTTP {e.code}{detail}") from e
            raise MalformedAnswer(f"endpoint {url} refused the request: HTTP {e.code}{detail}") from e
        except urllib.error.URLError as e:
            reason = e.reason
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            if isinstance(reason, TimeoutError):
                text = f"no answer within {self.timeout_s:g}s"
            raise EndpointUnavailable(f"endpoint {url}: {text}") from e
        except TimeoutError as e:
            raise EndpointUnavailable(f"endpoint {url}: no answer within {self.timeout_s:g}s") from e
        except (http.client.HTTPException, ConnectionError) as e:
            raise EndpointUnavailable(f"endpoint {url}: connection failed ({type(e).__name__}: {e})") from e
        if len(raw) > _MAX_ANSWER:
            raise MalformedAnswer(f"endpoint {url}: answer larger than {_MAX_ANSWER >> 20} MiB")
        try:
            return json.loads(raw)
        except ValueError as e:
            raise MalformedAnswer(f"endpoint {url}: answer is not JSON ({e})") from e


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(e.read(65536))
        message = doc["error"]["message"] if isinstance(doc.get("error"), dict) else doc.get("detail")
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return ""
    return f": {message}" if message else ""


# ------------------------------------------------------------------------------------------------ model
@dataclass
class LocalModel:
    """MODEL as the auditor holds it: its tokenizer's ids usable in prompts, and a float32 causal LM."""

    path: Path
    model: Any
    usable_ids: list[int]

    @classmethod
    def load(cls, path: Path) -> LocalModel:
        check_model_dir(path)
        import torch
        import transformers
        from tokenizers import Tokenizer

        from zoo.progress import quiet_libraries

        try:
            tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # tokenizers raises its own Exception subclass on a bad file
            raise CommandError(f"model {path}: cannot read tokenizer.json: {e}") from e
        config = _read_json(path / "config.json", f"model {path}")
        model_type = config.get("model_type")
        architectures = config.get("architectures") or []
        if architectures and not any(str(a).endswith(_CAUSAL_HEADS) for a in architectures):
            raise CommandError(f"model {path}: not a causal language model ({', '.join(map(str, architectures))}): "
                               "an endpoint's completions cannot be compared with it")
        try:
            with quiet_libraries():
                loaded: Any = transformers.AutoModelForCausalLM.from_pretrained(
                    str(path), dtype=torch.float32, output_loading_info=True)
            model, info = loaded
        except (OSError, ValueError, KeyError) as e:
            raise CommandError(f"model {path}: cannot load it as a causal language model "
                               f"(model_type {model_type!r}): {e}") from e
        missing = sorted(info.get("missing_keys") or ())
        if missing:  # transformers would fill them with random values: not the weights the audit is about
            raise CommandError(f"model {path}: the causal language model lacks {len(missing)} weight(s) "
                               f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        model.eval()
        special = {int(i) for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
        size = min(int(tokenizer.get_vocab_size(with_added_tokens=True)), int(model.config.vocab_size))
        usable = [i for i in range(size) if i not in special]
        if len(usable) < 2:
            raise CommandError(f"model {path}: its tokenizer has fewer than 2 ordinary tokens")
        return cls(path, model, usable)

    def token_logprobs(self, prompts: list[list[int]]) -> list[list[float]]:
        """For each prompt, the log-probability of each token after the first given those before it."""
        import torch

        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor(prompts)).logits.float()
        lp = torch.log_softmax(logits, dim=-1)
        ids = torch.tensor(prompts)
        picked = lp[:, :-1, :].gather(-1, ids[:, 1:, None])[..., 0]
        return [[float(x) for x in row] for row in picked]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CommandError(f"{what}: cannot read {path.name}: {e.strerror or e}") from e
    except ValueError as e:
        raise CommandError(f"{what}: {path.name} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise CommandError(f"{what}: {path.name} is not a JSON object")
    return doc


def check_model_dir(path: Path) -> None:
    """MODEL is a directory with config.json, tokenizer.json and weights, else a ``CommandError`` (exit 2)."""
    if not path.is_dir():
        raise CommandError(f"model {path}: no such directory" if not path.exists() else
                           f"model {path}: not a directory (a Hugging Face model directory is needed)")
    for name in ("config.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise CommandError(f"model {path}: no {name}")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise CommandError(f"model {path}: no weights (*.safetensors or *.bin)")


# ------------------------------------------------------------------------------------------------ audit
def seeded_prompts(usable_ids: list[int], seed: int, count: int, length: int) -> list[list[int]]:
    """``count`` prompts of ``length`` token ids drawn uniformly from ``usable_ids`` (numpy's PCG64 from seed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    table = np.asarray(usable_ids, dtype=np.int64)
    return [[int(t) for t in table[rng.integers(0, len(table), size=length)]] for _ in range(count)]


def served_name(endpoint: Endpoint) -> str | None:
    """The one model ``GET /models`` lists; None when the endpoint lists none or has no such route (the
    request then names no model). Several: a ``CommandError`` asking for ``--served-name``."""
    try:
        doc = endpoint.request("/models")
    except MalformedAnswer:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] if isinstance(
        data, list) else []
    if len(ids) > 1:
        raise CommandError(f"endpoint {endpoint.base} serves {len(ids)} models ({', '.join(ids[:5])}): name one "
                           "with --served-name")
    return ids[0] if ids else None


def _completion(endpoint: Endpoint, body: dict[str, Any], model: str | None) -> tuple[dict[str, Any], Any, str]:
    """``POST /completions`` with ``body`` (and ``model`` if named): the answer, its first choice, and the endpoint
    as error messages name it."""
    if model is not None:
        body = {**body, "model": model}
    doc = endpoint.request("/completions", body)
    where = f"endpoint {endpoint.base}/completions"
    try:
        assert isinstance(doc, dict)
        return doc, doc["choices"][0], where
    except (AssertionError, KeyError, IndexError, TypeError) as e:
        raise MalformedAnswer(f"{where}: the answer has no choices[0]") from e


def served_logprobs(endpoint: Endpoint, prompt: list[int], model: str | None) -> tuple[list[float], str | None]:
    """The endpoint's log-probabilities of the prompt's tokens after the first, and the model it says it ran."""
    doc, choice, where = _completion(endpoint, {"prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1,
                                                "temperature": 0}, model)
    try:
        values = choice["logprobs"]["token_logprobs"]
        assert isinstance(values, list)
    except (AssertionError, KeyError, IndexError, TypeError) as e:
        raise MalformedAnswer(f"{where}: the answer has no choices[0].logprobs.token_logprobs (does it support "
                              "echo and logprobs on /completions?)") from e
    if len(values) < len(prompt):
        raise MalformedAnswer(f"{where}: {len(values)} log-probabilities for a prompt of {len(prompt)} tokens "
                              "(the prompt was not echoed: echo with logprobs unsupported?)")
    out: list[float] = []
    for v in values[1:len(prompt)]:
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v > 1e-6:
            raise MalformedAnswer(f"{where}: a prompt token's log-probability is {v!r}, not a number <= 0")
        out.append(float(v))
    name = doc.get("model")
    return out, name if isinstance(name, str) else None


@dataclass(frozen=True)
class AuditResult:
    match: bool
    statistic: float  # max over prompts of the mean |served - local| (nats)
    threshold: float
    mean_abs: float  # over every compared position
    max_abs: float
    per_prompt: tuple[float, ...]
    positions: int
    served_model: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": "match" if self.match else "mismatch", "statistic": self.statistic,
                "statistic_name": "max over prompts of mean |served - local| log-probability (nats)",
                "threshold": self.threshold, "mean_abs": self.mean_abs, "max_abs": self.max_abs,
                "per_prompt": list(self.per_prompt), "positions": self.positions,
                "served_model": self.served_model}


def compare(served: list[list[float]], local: list[list[float]], threshold: float,
            served_model: str | None = None) -> AuditResult:
    """The statistic and the decision from per-prompt log-probabilities (same shapes)."""
    per_prompt, diffs = [], []
    for s, loc in zip(served, local, strict=True):
        d = [abs(a - b) for a, b in zip(s, loc, strict=True)]
        diffs.extend(d)
        per_prompt.append(sum(d) / len(d))
    statistic = max(per_prompt)
    return AuditResult(match=statistic <= threshold, statistic=statistic, threshold=threshold,
                       mean_abs=sum(diffs) / len(diffs), max_abs=max(diffs), per_prompt=tuple(per_prompt),
                       positions=len(diffs), served_model=served_model)


def audit_endpoint(model_dir: Path, url: str, *, seed: int = 0, prompts: int = DEFAULT_PROMPTS,
                   length: int = DEFAULT_LENGTH, threshold: float = DEFAULT_THRESHOLD,
                   timeout_s: float = DEFAULT_TIMEOUT_S, model_name: str | None = None) -> AuditResult:
    """Run the audit (see the module's docstring). MODEL is loaded first (a wrong path is exit 2 whatever the
    endpoint does), then the endpoint is asked, then the local forward pass runs."""
    if prompts < 1 or length < 2 or seed < 0:
        raise CommandError("--prompts must be at least 1, --length at least 2 and --seed at least 0")
    if not threshold >= 0:
        raise CommandError("--threshold must be a number >= 0")
    endpoint = Endpoint.parse(url, timeout_s)
    check_model_dir(model_dir)
    local = LocalModel.load(model_dir)
    positions = getattr(local.model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and length + 1 > positions:  # the prompt and the one token asked for
        raise CommandError(f"--length {length}: model {model_dir} takes at most {positions} positions "
                           f"(--length {positions - 1} at most)")
    batch = seeded_prompts(local.usable_ids, seed, prompts, length)
    name = model_name if model_name is not None else served_name(endpoint)
    served, said = [], None
    for p in batch:
        try:
            values, said = served_logprobs(endpoint, p, name)
        except MalformedAnswer as e:  # most chat APIs and e.g. `transformers serve` return text only
            raise MalformedAnswer(f"{e}; for an endpoint that returns text without log-probabilities use "
                                  "--mode greedy (weaker evidence: see --help)") from e
        served.append(values)
    return compare(served, local.token_logprobs(batch), threshold, said or name)




# ------------------------------------------------------------------------------------- greedy (text only)
@dataclass(frozen=True)
class ServedText:
    """One greedy completion as the endpoint returned it."""

    text: str
    stopped: bool  # finish_reason "stop": the model ended the text (an end-of-sequence token) before max_tokens
    prompt_tokens: int | None  # usage.prompt_tokens, when the endpoint gives it
    model: str | None


def served_greedy(endpoint: Endpoint, prompt: str, model: str | None, max_tokens: int) -> ServedText:
    """The endpoint's greedy completion (``temperature: 0``) of a text prompt: ``choices[0].text``."""
    doc, choice, where = _completion(endpoint, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}, model)
    try:
        text = choice["text"]
        assert isinstance(text, str)
    except (AssertionError, KeyError, IndexError, TypeError) as e:
        raise MalformedAnswer(f"{where}: the answer has no choices[0].text") from e
    reason = choice.get("finish_reason")
    usage = doc.get("usage")
    counted = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    name = doc.get("model")
    return ServedText(text, reason == "stop", counted if isinstance(counted, int) and not isinstance(
        counted, bool) else None, name if isinstance(name, str) else None)


@dataclass(frozen=True)
class GreedyPrompt:
    """MODEL's float32 forward pass walked along one served completion (see ``GreedyModel.walk``)."""

    regrets: tuple[float, ...]  # per step: local max log-prob minus local log-prob of the served token (nats)
    agreed: int  # steps where the served token was MODEL's own argmax
    explained: bool  # False: no token among MODEL's _CANDIDATES most likely continues the served text
    exact: bool  # MODEL's own greedy continuation is the served text (every step agreed, all explained)
    tokens: tuple[int, ...] = ()  # the token ids the walk took the served text to be

    @property
    def worst(self) -> float:
        return max(self.regrets, default=0.0)


# how many of MODEL's most likely tokens are tried, per step, as the served one; none fits: the step's regret is
# the lower bound max log-prob minus the log-prob of the last one tried, and the walk ends (``explained`` False)
_CANDIDATES = 1024


class GreedyModel:
    """MODEL with its tokenizer as transformers loads it (``AutoTokenizer``: what Hugging Face based servers
    tokenise and decode with) and its generation config's end-of-sequence ids."""

    def __init__(self, local: LocalModel) -> None:
        import transformers

        from zoo.progress import quiet_libraries

        self.local = local
        try:
            with quiet_libraries():
                self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(str(local.path))
        except (OSError, ValueError, KeyError) as e:
            raise CommandError(f"model {local.path}: transformers cannot load its tokenizer: {e}") from e
        eos = getattr(getattr(local.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(local.model.config, "eos_token_id", None)
        self.eos = frozenset([eos] if isinstance(eos, int) else [int(e) for e in eos or ()])

    def prompt_text(self, ids: list[int]) -> tuple[str, list[int]]:
        """The text of seeded token ids, and the ids MODEL's tokenizer makes of that text (special tokens
        added as a server adds them): the walk starts from the latter, which need not equal ``ids``."""
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        return text, [int(i) for i in self.tokenizer(text)["input_ids"]]

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def walk(self, prompt_ids: list[int], served: ServedText, max_tokens: int) -> GreedyPrompt:
        """Teacher-force MODEL along the served text, one token at a time. The served token ids are not known
        (the endpoint returns text), so at each step the served token is taken to be the one MODEL finds most
        likely among those whose decoding keeps the continuation a prefix of the served text (the endpoint's
        own tokenisation when MODEL is what it runs; re-tokenising the text can split it differently). The
        step's regret is MODEL's max log-prob minus that token's. A token that adds no text (skipped on
        decoding) is taken only when it is MODEL's argmax. When the text is used up and the endpoint said
        ``stop``, one more step scores the end-of-sequence token. No candidate fits: the step's regret is at least
        max log-prob minus the least likely candidate's, and the walk ends. At most 2 x max_tokens steps."""
        import torch

        context, cont, regrets = list(prompt_ids), list[int](), list[float]()
        agreed, explained, done = 0, True, ""
        for _ in range(2 * max_tokens):
            with torch.no_grad():
                logits = self.local.model(input_ids=torch.tensor([context])).logits[0, -1].float()
            lp = torch.log_softmax(logits, dim=-1)
            best = int(lp.argmax())
            if done == served.text:
                if served.stopped and self.eos:
                    eos_lp = max(float(lp[e]) for e in self.eos if e < lp.numel())
                    regrets.append(float(lp[best]) - eos_lp)
                    agreed += best in self.eos
                break
            order = torch.argsort(lp, descending=True)[:_CANDIDATES].tolist()
            chosen = None
            for t in order:
                if t in self.eos:
                    continue
                text = self._decode([*cont, t])
                if text == done and t != best:  # a token that adds no text (a special one) only as MODEL's choice
                    continue
                if served.text.startswith(text) or (text.endswith("\ufffd")
                                                    and served.text.startswith(text.rstrip("\ufffd"))):
                    chosen = int(t)
                    break
            if chosen is None:  # the served text cannot be continued by any likely token of MODEL's
                regrets.append(float(lp[best]) - float(lp[order[-1]]))
                explained = False
                break
            regrets.append(float(lp[best]) - float(lp[chosen]))
            agreed += chosen == best
            cont.append(chosen)
            context.append(chosen)
            done = self._decode(cont)
        else:
            explained = done == served.text
        exact = explained and agreed == len(regrets) and done == served.text
        return GreedyPrompt(tuple(max(0.0, r) for r in regrets), agreed, explained, exact, tuple(cont))

    def audit(self, endpoint: Endpoint, name: str | None, *, seed: int, prompts: int, length: int,
              max_tokens: int, threshold: float) -> GreedyResult:
        """Send each seeded prompt's text, walk MODEL along each answer, decide."""
        texts = [self.prompt_text(ids) for ids in seeded_prompts(self.local.usable_ids, seed, prompts, length)]
        positions = getattr(self.local.model.config, "max_position_embeddings", None)
        longest = max(len(ids) for _, ids in texts) + 2 * max_tokens
        if isinstance(positions, int) and longest > positions:
            raise CommandError(f"--length {length} with --max-tokens {max_tokens}: model {self.local.path} takes "
                               f"at most {positions} positions (a prompt of {longest - 2 * max_tokens} tokens "
                               "and twice --max-tokens must fit)")
        answers = [served_greedy(endpoint, text, name, max_tokens) for text, _ in texts]
        mismatched = sum(a.prompt_tokens is not None and a.prompt_tokens != len(ids)
                         for a, (_, ids) in zip(answers, texts, strict=True))
        walks = [self.walk(ids, a, max_tokens) for a, (_, ids) in zip(answers, texts, strict=True)]
        said = next((a.model for a in reversed(answers) if a.model), None)
        return compare_greedy(walks, threshold, mismatched, said or name, tuple(answers))


@dataclass(frozen=True)
class GreedyResult:
    match: bool
    statistic: float  # the largest regret of any step of any prompt (nats)
    threshold: float
    mean_regret: float  # over every step
    max_regret: float
    per_prompt: tuple[float, ...]  # each prompt's largest regret
    steps: int
    agreed: int  # steps where the served token was MODEL's argmax
    exact: int  # prompts whose served text is MODEL's own greedy continuation
    unexplained: int  # prompts whose served text no likely token of MODEL's continues
    prompt_token_mismatches: int  # prompts the endpoint counted a different number of tokens in (usage)
    served_model: str | None
    walks: tuple[GreedyPrompt, ...] = ()
    answers: tuple[ServedText, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": "match" if self.match else "mismatch", "mode": "greedy", "statistic": self.statistic,
                "statistic_name": "largest greedy regret of any step: local max log-prob minus local log-prob "
                                  "of the served token (nats)",
                "threshold": self.threshold, "mean_regret": self.mean_regret, "max_regret": self.max_regret,
                "per_prompt": list(self.per_prompt), "steps": self.steps, "agreed": self.agreed,
                "exact_prompts": self.exact, "unexplained_prompts": self.unexplained,
                "prompt_token_mismatches": self.prompt_token_mismatches, "served_model": self.served_model}


def compare_greedy(walks: list[GreedyPrompt], threshold: float, prompt_token_mismatches: int = 0,
                   served_model: str | None = None, answers: tuple[ServedText, ...] = ()) -> GreedyResult:
    """The statistic and the decision from per-prompt walks."""
    per_prompt = tuple(w.worst for w in walks)
    regrets = [r for w in walks for r in w.regrets]
    statistic = max(per_prompt)
    return GreedyResult(match=statistic <= threshold, statistic=statistic, threshold=threshold,
                        mean_regret=sum(regrets) / len(regrets) if regrets else 0.0,
                        max_regret=max(regrets, default=0.0), per_prompt=per_prompt, steps=len(regrets),
                        agreed=sum(w.agreed for w in walks), exact=sum(w.exact for w in walks),
                        unexplained=sum(not w.explained for w in walks),
                        prompt_token_mismatches=prompt_token_mismatches, served_model=served_model,
                        walks=tuple(walks), answers=answers)


def audit_endpoint_greedy(model_dir: Path, url: str, *, seed: int = 0, prompts: int = DEFAULT_GREEDY_PROMPTS,
                          length: int = DEFAULT_GREEDY_LENGTH, max_tokens: int = DEFAULT_MAX_TOKENS,
                          threshold: float = DEFAULT_GREEDY_THRESHOLD, timeout_s: float = DEFAULT_TIMEOUT_S,
                          model_name: str | None = None) -> GreedyResult:
    """The text-only audit (``--mode greedy``, see the module's docstring): MODEL is loaded first, then each
    prompt's text is sent and MODEL walked along the answer."""
    if prompts < 1 or length < 1 or max_tokens < 1 or seed < 0:
        raise CommandError("--prompts, --length and --max-tokens must be at least 1 and --seed at least 0")
    if not threshold >= 0:
        raise CommandError("--threshold must be a number >= 0")
    endpoint = Endpoint.parse(url, timeout_s)
    check_model_dir(model_dir)
    greedy = GreedyModel(LocalModel.load(model_dir))
    name = model_name if model_name is not None else served_name(endpoint)
    return greedy.audit(endpoint, name, seed=seed, prompts=prompts, length=length, max_tokens=max_tokens,
                        threshold=threshold)


__all__ = ["DEFAULT_GREEDY_THRESHOLD", "DEFAULT_THRESHOLD", "AuditResult", "Endpoint", "EndpointUnavailable",
           "GreedyModel", "GreedyPrompt", "GreedyResult", "MalformedAnswer", "ServedText", "audit_endpoint",
           "audit_endpoint_greedy", "compare", "compare_greedy", "seeded_prompts", "served_greedy"]
