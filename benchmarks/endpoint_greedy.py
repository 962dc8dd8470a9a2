"""The text-only audit (``pawprint audit endpoint --mode greedy``) against ``transformers serve``: its greedy
regret for the same weights (float32, bfloat16, rounded copies) and for other models (derivatives, independents).

    python -m benchmarks.endpoint_greedy --zoo out/endpoint-tolerance/quick-zoo --zoo out/demo/zoo \\
        --out docs/results/endpoint_greedy.json

For each zoo the auditor holds ``llama-base-s0`` (float32). Two ``transformers serve`` processes run (Hugging
Face's server, ``zoo/transformers_serve.py``), one with ``--dtype float32`` and one with ``--dtype bfloat16``,
neither pinned to a model: each request names the model directory it wants (``--served-name`` of the command),
so one process serves every model of the zoo, each in its own model process. Each row is audited with the
prompt seeds asked for, exactly as the command does (``GreedyModel.audit``). Per row and seed: the statistic
(largest per-prompt mean regret, nats), the steps where the served token was the local argmax, the prompts
whose served text is the reference's own greedy continuation, and the prompts no likely token explains.
Beside them, two tokeniser measurements: how often a seeded prompt's text re-tokenises to the seeded ids, and
how often the served continuation (same weights, float32) re-tokenised on its own differs from the token ids
that generated it (the reason the audit walks the text instead of re-tokenising it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pawprint._endpoint_audit import (
    DEFAULT_GREEDY_LENGTH,
    DEFAULT_GREEDY_PROMPTS,
    DEFAULT_GREEDY_THRESHOLD,
    DEFAULT_MAX_TOKENS,
    Endpoint,
    GreedyModel,
    LocalModel,
    seeded_prompts,
)
from zoo.transformers_serve import transformers_serve

REFERENCE = "llama-base-s0"
SAME = "same weights"
ROUNDED = "same weights, rounded copy"
DERIVED = "derivative"
INDEPENDENT = "independent"
# (served model, relation to the reference, dtypes of transformers serve)
ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (REFERENCE, SAME, ("float32", "bfloat16")),
    ("llama-bf16", ROUNDED, ("float32", "bfloat16")),
    ("llama-int8", ROUNDED, ("float32", "bfloat16")),
    ("llama-sft", DERIVED, ("float32",)),
    ("llama-lora", DERIVED, ("float32",)),
    ("llama-pruned", DERIVED, ("float32",)),
    ("llama-cpt-vocab", DERIVED, ("float32",)),
    ("llama-cpt-heavy", DERIVED, ("float32",)),
    ("llama-base-s1", INDEPENDENT, ("float32",)),
    ("gpt2-base-s0", INDEPENDENT, ("float32",)),
    ("gpt_neox-base-s0", INDEPENDENT, ("float32",)),
)


def tokenizer_rates(greedy: GreedyModel, seeds: list[int], prompts: int, length: int,
                    same_weights: list[Any]) -> dict[str, Any]:
    """Prompt round trip (decode seeded ids, encode the text) and continuation re-tokenisation rates."""
    trips = total = 0
    for seed in seeds:
        for ids in seeded_prompts(greedy.local.usable_ids, seed, prompts, length):
            _, again = greedy.prompt_text(ids)
            trips += again == ids
            total += 1
    differs = compared = 0
    for result in same_weights:
        for walk, answer in zip(result.walks, result.answers, strict=True):
            if not walk.exact or not answer.text:
                continue
            compared += 1
            alone = [int(i) for i in greedy.tokenizer(answer.text, add_special_tokens=False)["input_ids"]]
            differs += alone != list(walk.tokens)
    return {"prompt_round_trips": trips, "prompts": total, "continuations_retokenised_differently": differs,
            "continuations_compared": compared}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zoo", action="append", required=True, type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=DEFAULT_GREEDY_PROMPTS)
    ap.add_argument("--length", type=int, default=DEFAULT_GREEDY_LENGTH)
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    ap.add_argument("--only", action="append", default=None, metavar="MODEL",
                    help="serve only these models of the zoo (default: every row)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    # a SIGTERM unwinds the with-blocks, so that the servers are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    torch.set_num_threads(1)
    started = time.time()
    seeds = list(range(args.seeds))
    zoos: list[dict[str, Any]] = []
    for zoo in args.zoo:
        greedy = GreedyModel(LocalModel.load(zoo / REFERENCE))
        rows: list[dict[str, Any]] = []
        same_fp32: list[Any] = []
        with transformers_serve(dtype="float32") as fp32, transformers_serve(dtype="bfloat16") as bf16:
            urls = {"float32": fp32, "bfloat16": bf16}
            for served, relation, dtypes in ROWS:
                if not (zoo / served).is_dir() or (args.only and served not in args.only):
                    continue
                for dtype in dtypes:
                    endpoint = Endpoint.parse(urls[dtype], 60.0)
                    per_seed: list[dict[str, Any]] = []
                    for seed in seeds:
                        t0 = time.perf_counter()
                        res = greedy.audit(endpoint, str((zoo / served).resolve()), seed=seed,
                                           prompts=args.prompts, length=args.length, max_tokens=args.max_tokens,
                                           threshold=DEFAULT_GREEDY_THRESHOLD)
                        wall = time.perf_counter() - t0
                        if served == REFERENCE and dtype == "float32":
                            same_fp32.append(res)
                        per_seed.append({"seed": seed, "statistic": res.statistic, "mean_regret": res.mean_regret,
                                         "max_regret": res.max_regret, "steps": res.steps, "agreed": res.agreed,
                                         "exact_prompts": res.exact, "unexplained_prompts": res.unexplained,
                                         "prompt_token_mismatches": res.prompt_token_mismatches,
                                         "verdict": "match" if res.match else "mismatch", "wall_s": round(wall, 2)})
                    stats = [r["statistic"] for r in per_seed]
                    row = {"served": served, "relation": relation, "dtype": dtype, "min": min(stats),
                           "max": max(stats), "seeds": per_seed}
                    rows.append(row)
                    print(f"{zoo.name:>12} {served:>18} {dtype:>9} {relation:>26}: {min(stats):.4f}..{max(stats):.4f}"
                          f"  agreed {sum(r['agreed'] for r in per_seed)}/{sum(r['steps'] for r in per_seed)}"
                          f"  exact {sum(r['exact_prompts'] for r in per_seed)}/{len(seeds) * args.prompts}"
                          f"  unexplained {sum(r['unexplained_prompts'] for r in per_seed)}", flush=True)
        zoos.append({"zoo": str(zoo), "hidden": int(greedy.local.model.config.hidden_size), "rows": rows,
                     "tokenizer": tokenizer_rates(greedy, seeds, args.prompts, args.length, same_fp32)})
        print(f"{zoo.name}: {zoos[-1]['tokenizer']}", flush=True)
    import transformers

    doc = {"benchmark": "endpoint_greedy", "reference": REFERENCE, "seeds": seeds, "prompts": args.prompts,
           "length": args.length, "max_tokens": args.max_tokens, "only": args.only,
           "threshold": DEFAULT_GREEDY_THRESHOLD,
           "server": f"transformers serve (transformers {transformers.__version__}), --device cpu",
           "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
           "wall_s": round(time.time() - started, 1), "zoos": zoos}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
