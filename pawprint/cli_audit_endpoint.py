"""``pawprint audit endpoint MODEL URL``: are these weights what an OpenAI-compatible endpoint serves?

A thief can hand an auditor a decoy; this compares the log-probabilities that the endpoint's legacy
``/v1/completions`` API returns for seeded prompts (``echo`` + ``logprobs``) with those MODEL's weights give in
a local float32 forward pass, within a measured tolerance for dtype and kernel differences
(``pawprint._endpoint_audit``; the numbers are in docs/results/endpoint_audit.md). It needs the zoo extra
(torch, transformers, tokenizers) for the forward pass.

Exit statuses: 0 match; 1 mismatch; 2 a missing or unreadable model, a bad option, or an answer that is not
what the audit needs (not JSON, no echoed log-probabilities, an HTTP error status); 3 the endpoint did not
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


def cmd_audit_endpoint(args: argparse.Namespace) -> int:
    quiet_libraries_env()
    try:
        from pawprint._endpoint_audit import audit_endpoint
    except ImportError as e:  # pragma: no cover - only without the zoo extra
        raise CommandError(f"audit endpoint needs the zoo extra (pip install 'pawprint[zoo]'): {e}") from e
    import torch

    torch.set_num_threads(max(1, args.threads))
    model = Path(args.model)
    result = audit_endpoint(model, args.url, seed=args.seed, prompts=args.prompts, length=args.length,
                            threshold=args.threshold, timeout_s=args.timeout, model_name=args.served_name)
    verdict = "match" if result.match else "mismatch"
    if args.json:
        write_json({"ok": result.match, "model": str(model), "endpoint": args.url, "seed": args.seed,
                    "prompts": args.prompts, "length": args.length, **result.as_dict()})
    else:
        served = f" (served as {result.served_model})" if result.served_model else ""
        relation = "<=" if result.match else ">"
        print(f"{verdict}: {args.url}{served} vs {model}: worst prompt's mean |delta log-prob| "
              f"{result.statistic:.4g} nats {relation} threshold {result.threshold:g} "
              f"({args.prompts} prompts from seed {args.seed}, {result.positions} positions; "
              f"overall mean {result.mean_abs:.4g}, max {result.max_abs:.4g})")
    return EXIT_OK if result.match else EXIT_CHECK_FAILED


def add_endpoint_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``audit endpoint`` under the ``audit`` group's subparsers."""
    p = sub.add_parser("endpoint", help="check that MODEL's weights are what an OpenAI-compatible completions "
                                        "endpoint serves (log-probabilities on seeded prompts)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("model", help="the model directory the weights are claimed to be (config.json, weights, "
                                 "tokenizer.json)")
    p.add_argument("url", help="the endpoint: http://HOST:PORT, .../v1 or .../v1/completions")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts (default 0)")
    p.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help=f"how many (default {DEFAULT_PROMPTS})")
    p.add_argument("--length", type=int, default=DEFAULT_LENGTH,
                   help=f"tokens per prompt (default {DEFAULT_LENGTH})")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"largest per-prompt mean |delta log-prob| in nats that matches (default "
                        f"{DEFAULT_THRESHOLD}, measured: docs/results/endpoint_audit.md)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT_S:g}); none in time: exit 3")
    p.add_argument("--served-name", default=None,
                   help="the model name to send (default: the one model GET /v1/models lists, else none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the local forward pass")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_endpoint)
