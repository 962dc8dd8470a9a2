"""The attack table: every family x every function-preserving attack, with the function change, the raw
parameter cosine, and the minimum term cosine of both fingerprint methods; plus independent initialisations.

    python -m benchmarks.attack_table --out docs/results/attack_table.md

Models are the tiny random models of ``zoo.tiny`` (norm weights away from 1); 512 probe tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from zoo.attack_eval import AttackRow, evaluate_attack, evaluate_pair
from zoo.attacks import ALL_ATTACKS, FAMILY_ATTACKS
from zoo.layouts import LAYOUT_FAMILIES, layout_attack_rows
from zoo.tiny import FAMILIES, TinySpec, make_tiny


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def render(rows: list[AttackRow], seconds: float) -> str:
    out = [
        "# Attack table",
        "",
        "Command: `python -m benchmarks.attack_table --out docs/results/attack_table.md` "
        f"({seconds:.0f} s on {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads).",
        "",
        "Tiny random models of each family (3 layers, d=64, norm weights in [0.5, 1.5]) from `zoo.tiny`; "
        "terms on the last two layers, up to 512 probe tokens (rule `all-hash-v1`; the tiny tokenizers have "
        "about 600 tokens). `fn diff` is the largest relative change of the model's output (logits; hidden "
        "states for bert) after the attack; `raw cos` the cosine of the raw weight matrices shared by name and "
        "shape (norm weights and biases left out); `pawprint min` / `huref min` the smallest cosine over all six "
        "terms (2 layers x 3) and `huref ffn` the smallest of HuRef's FFN terms. `independent` compares "
        "two different seeds of the same architecture (no attack). "
        f"{', '.join(LAYOUT_FAMILIES)} have no transformers class: each attack is applied to the equivalent "
        "llama / qwen2 model, both models are mapped exactly into the family's published layout "
        "(`zoo.layouts`), `fn diff` is measured on the mapped pair with `zoo.layouts.reference_logits` "
        "(each family's own forward arithmetic) and the terms on the mapped checkpoints. "
        f"{' and '.join(FAMILY_ATTACKS)} (experts permuted with the router's rows; MLA latents rotated) are listed "
        "only for the families that have mixture-of-experts FFNs / latent attention.",
        "",
        "| family | attack | fn diff | raw cos | pawprint min | pawprint ICS | huref min | huref ICS | huref ffn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.reason:
            out.append(f"| {r.family} | {r.attack} | n/a: {r.reason} | | | | | | |")
            continue
        out.append(
            f"| {r.family} | {r.attack} | {_fmt(r.function_rel_diff, '.1e')} | {_fmt(r.raw_cosine)} | "
            f"{_fmt(r.pawprint_min)} | {_fmt(r.pawprint_ics)} | {_fmt(r.huref_min)} | {_fmt(r.huref_ics)} | "
            f"{_fmt(r.huref_ffn_min)} |"
        )
    applied = [r for r in rows if not r.reason and r.attack != "independent"]
    indep = [r for r in rows if r.attack == "independent"]
    worst = min((r.pawprint_min for r in applied if r.pawprint_min is not None), default=float("nan"))
    worst_fn = max((r.function_rel_diff for r in applied if r.function_rel_diff is not None), default=float("nan"))
    out += [
        "",
        f"Summary: {len(applied)} family x attack cells applied; smallest pawprint term cosine {worst:.6f}; "
        f"largest function change {worst_fn:.1e}; "
        f"independent pairs' pawprint ICS in [{min(r.pawprint_ics or 0 for r in indep):.3f}, "
        f"{max(r.pawprint_ics or 0 for r in indep):.3f}].",
        "",
    ]
    return "\n".join(out)


def run(families: tuple[str, ...], attacks: tuple[str, ...], workdir: Path) -> list[AttackRow]:
    rows: list[AttackRow] = []
    for fam in families:
        if fam in LAYOUT_FAMILIES:
            rows += layout_attack_rows(fam, tuple(k for k in attacks if k not in FAMILY_ATTACKS), workdir)
            print(f"{fam:9s} (layout) done", flush=True)
            continue
        src = make_tiny(fam, workdir / f"{fam}-s0", seed=0, spec=TinySpec())
        other = make_tiny(fam, workdir / f"{fam}-s1", seed=1, spec=TinySpec())
        for kind in attacks:
            row = evaluate_attack(src, kind, workdir)
            if not (row.reason and kind in FAMILY_ATTACKS):  # expert-permute, latent-rotate: where they exist
                rows.append(row)
            print(f"{fam:9s} {kind:17s} done", flush=True)
        rows.append(evaluate_pair(src, other, fam, "independent"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", default="docs/results/attack_table.md")
    ap.add_argument("--families", default=",".join(FAMILIES + LAYOUT_FAMILIES))
    ap.add_argument("--attacks", default=",".join(ALL_ATTACKS))
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(tuple(args.families.split(",")), tuple(args.attacks.split(",")), Path(tmp))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows, time.time() - t0), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
