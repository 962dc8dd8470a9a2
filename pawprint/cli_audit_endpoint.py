"""``pawprint audit endpoint MODEL URL``: are these weights what an OpenAI-compatible endpoint serves?

A thief can hand an auditor a decoy; this compares the log-probabilities that the endpoint's legacy
``/v1/completions`` API returns for seeded prompts (``echo`` + ``logprobs``) with those MODEL's weights give in
a local float32 forward pass, within a measured tolerance for dtype and kernel differences
(``pawprint._endpoint_audit``; the numbers are in docs/results/endpoint_audit.md). ``--mode greedy`` is for
endpoints that return text only (``transformers serve``, most chat APIs): seeded prompts as text, greedy
completions, MODEL walked along the served text; it sees only which token is most likely at each step, so it is
much weaker evidence (docs/results/endpoint_greedy.md). It needs the zoo extra (torch, transformers, tokenizers)
for the forward pass.

Exit statuses: 0 match; 1 mismatch; 2 a missing or unreadable model, a bad option, or an answer that is not
what the audit needs (not JSON, no echoed log-probabilities, or with ``--mode greedy`` no ``choices[0].text``,
an HTTP error status); 3 the endpoint did not
answer (connection refused or reset, no answer within ``--timeout``, HTTP 502/503/504).

The command lives in its own module so that the ``audit`` group (``pawprint/cli_audit.py``) adds it with
``add_endpoint_parser(audit_subparsers)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pawprint._common import EXIT_CHECK_FAILED, EXIT_OK, CommandError, quiet_libraries_env, write_json

# pawprint._endpoint_audit's defaults, repeated so that building the parser imports nothing more (a test checks
# that they agree)
DEFAULT_THRESHOLD = 0.05
DEFAULT_PROMPTS = 8
DEFAULT_LENGTH = 32
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_GREEDY_THRESHOLD = 0.15
DEFAULT_GREEDY_PROMPTS = 64
DEFAULT_GREEDY_LENGTH = 16
DEFAULT_MAX_TOKENS = 16


def cmd_audit_endpoint(args: argparse.Namespace) -> int:
    quiet_libraries_env()
    try:
        from pawprint._endpoint_audit import audit_endpoint
    except ImportError as e:  # pragma: no cover - only without the zoo extra
        raise CommandError(f"audit endpoint needs the zoo extra (pip install 'pawprint[zoo]'): {e}") from e
    import torch

    torch.set_num_threads(max(1, args.threads))
    model = Path(args.model)
    if args.mode == "greedy":
        return _greedy(args, model)
    if args.max_tokens is not None:
        raise CommandError("--max-tokens is an option of --mode greedy (the log-probability mode asks for 1)")
    args.prompts = DEFAULT_PROMPTS if args.prompts is None else args.prompts
    args.length = DEFAULT_LENGTH if args.length is None else args.length
    args.threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    result = audit_endpoint(model, args.url, seed=args.seed, prompts=args.prompts, length=args.length,
                            threshold=args.threshold, timeout_s=args.timeout, model_name=args.served_name)
    verdict = "match" if result.match else "mismatch"
    if args.json:
        write_json({"ok": result.match, "model": str(model), "endpoint": args.url, "seed": args.seed,
                    "prompts": args.prompts, "length": args.length, "mode": "logprobs", **result.as_dict()})
    else:
        served = f" (served as {result.served_model})" if result.served_model else ""
        relation = "<=" if result.match else ">"
        print(f"{verdict}: {args.url}{served} vs {model}: worst prompt's mean |delta log-prob| "
              f"{result.statistic:.4g} nats {relation} threshold {result.threshold:g} "
              f"({args.prompts} prompts from seed {args.seed}, {result.positions} positions; "
              f"overall mean {result.mean_abs:.4g}, max {result.max_abs:.4g})")
    return EXIT_OK if result.match else EXIT_CHECK_FAILED


def _greedy(args: argparse.Namespace, model: Path) -> int:
    from pawprint._endpoint_audit import audit_endpoint_greedy

    prompts = DEFAULT_GREEDY_PROMPTS if args.prompts is None else args.prompts
    length = DEFAULT_GREEDY_LENGTH if args.length is None else args.length
    max_tokens = DEFAULT_MAX_TOKENS if args.max_tokens is None else args.max_tokens
    threshold = DEFAULT_GREEDY_THRESHOLD if args.threshold is None else args.threshold
    result = audit_endpoint_greedy(model, args.url, seed=args.seed, prompts=prompts, length=length,
                                   max_tokens=max_tokens, threshold=threshold, timeout_s=args.timeout,
                                   model_name=args.served_name)
    verdict = "match" if result.match else "mismatch"
    if args.json:
        write_json({"ok": result.match, "model": str(model), "endpoint": args.url, "seed": args.seed,
                    "prompts": prompts, "length": length, "max_tokens": max_tokens, **result.as_dict()})
    else:
        served = f" (served as {result.served_model})" if result.served_model else ""
        relation = "<=" if result.match else ">"
        warn = (f"; the endpoint counted a different number of prompt tokens on {result.prompt_token_mismatches}"
                " (another tokenizer?)") if result.prompt_token_mismatches else ""
        print(f"{verdict} (greedy text only, weak evidence): {args.url}{served} vs {model}: largest regret "
              f"{result.statistic:.4g} nats {relation} threshold {result.threshold:g} ({prompts} prompts "
              f"from seed {args.seed}, {result.steps} steps, {result.agreed} of them MODEL's own choice, "
              f"{result.exact} prompts' text identical{warn})")
    return EXIT_OK if result.match else EXIT_CHECK_FAILED


def add_endpoint_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``audit endpoint`` under the ``audit`` group's subparsers."""
    p = sub.add_parser("endpoint", help="check that MODEL's weights are what an OpenAI-compatible completions "
                                        "endpoint serves (log-probabilities on seeded prompts)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("model", help="the model directory the weights are claimed to be (config.json, weights, "
                                 "tokenizer.json)")
    p.add_argument("url", help="the endpoint: http://HOST:PORT, .../v1 or .../v1/completions")
    p.add_argument("--mode", choices=("logprobs", "greedy"), default="logprobs",
                   help="logprobs (default): the endpoint's log-probabilities of echoed prompt tokens; greedy: for "
                        "endpoints that return text only, greedy completions of text prompts compared with MODEL's "
                        "choices (much weaker evidence: only the most likely token is seen, near ties and short "
                        "or early-ended completions carry little; see docs/results/endpoint_greedy.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts (default 0)")
    p.add_argument("--prompts", type=int, default=None,
                   help=f"how many (default {DEFAULT_PROMPTS}; greedy {DEFAULT_GREEDY_PROMPTS})")
    p.add_argument("--length", type=int, default=None,
                   help=f"tokens per prompt (default {DEFAULT_LENGTH}; greedy {DEFAULT_GREEDY_LENGTH}, drawn as "
                        "ids and sent as their text)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help=f"greedy: tokens the endpoint generates per prompt (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"largest per-prompt mean |delta log-prob| in nats that matches (default "
                        f"{DEFAULT_THRESHOLD}, measured: docs/results/endpoint_audit.md); greedy: largest "
                        f"regret of any step in nats (default {DEFAULT_GREEDY_THRESHOLD}, measured: "
                        "docs/results/endpoint_greedy.md)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT_S:g}); none in time: exit 3")
    p.add_argument("--served-name", default=None,
                   help="the model name to send (default: the one model GET /v1/models lists, else none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the local forward pass")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_endpoint)
