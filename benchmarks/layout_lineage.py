"""Lineage in the written layouts: the trained quick zoo's LLaMA base, its derivatives and the independent base,
each mapped into the Baichuan, InternLM and InternLM2 layouts (``zoo.layouts.write_layout``), scored against the
base in the same layout and against the base in its own LLaMA layout, with the shipped null (one base
compared, K = 1), as ``pawprint compare`` does.

    python -m benchmarks.layout_lineage --zoo DIR --out docs/results/layout_lineage.md

``--zoo`` is a quick zoo (``pawprint zoo build DIR --quick``; built there if missing). Qwen's layout needs a
byte-level vocabulary and the zoo's LLaMA models have a SentencePiece-style one, so Qwen is covered by the
tiny-model lineage test (``tests/owner/test_packed_families.py``) instead; MPT has no trained zoo models.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pawprint._local import load_pair
from verifier import assess, base_verdict, compare, load_null
from zoo.build import build_zoo
from zoo.layouts import LayoutError, write_layout

FAMILIES = ("baichuan", "internlm", "internlm2")
MODELS = ("llama-base-s0", "llama-sft", "llama-lora", "llama-cpt-vocab", "llama-cpt-heavy", "llama-int8",
          "llama-bf16", "llama-pruned", "llama-base-s1")


def _score(a: Path, b: Path) -> tuple[float, float, str]:
    inv_a, inv_b = load_pair(a, b)
    r = compare(inv_a, inv_b, layer_pairs="match")
    ev = assess([(t.term, t.cosine) for t in r.terms], load_null(), r.common_probe_tokens)
    return r.ics, ev.p_value, base_verdict(ev.p_value, 1)


def run(zoo: Path, work: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for fam in FAMILIES:
        base = write_layout(fam, zoo / "llama-base-s0", work / f"{fam}-llama-base-s0")
        for name in MODELS[1:]:
            try:
                mapped = write_layout(fam, zoo / name, work / f"{fam}-{name}")
            except (LayoutError, KeyError) as e:
                rows.append({"family": fam, "model": name, "error": str(e)})
                continue
            ics, p, verdict = _score(base, mapped)
            ics_x, p_x, verdict_x = _score(zoo / "llama-base-s0", mapped)
            ics_n, _, verdict_n = _score(zoo / "llama-base-s0", zoo / name)
            rows.append({"family": fam, "model": name, "related": name != "llama-base-s1", "ics": ics, "p": p,
                         "verdict": verdict, "ics_vs_llama": ics_x, "p_vs_llama": p_x,
                         "verdict_vs_llama": verdict_x, "ics_native": ics_n, "verdict_native": verdict_n})
            print(f"{fam:9s} {name:16s} {verdict:12s} {verdict_x}", flush=True)
    return rows


def render(rows: list[dict[str, object]], seconds: float, zoo: Path) -> str:
    out = [
        "# Lineage in the written layouts",
        "",
        f"Command: `python -m benchmarks.layout_lineage --zoo {zoo} --out docs/results/layout_lineage.md` "
        f"({seconds:.0f} s; the zoo directory holds a quick zoo as `pawprint zoo build DIR --quick` makes it, "
        "built there if missing).",
        "",
        "The quick zoo's trained `llama-base-s0`, its derivatives and the independent `llama-base-s1`, each written "
        "in the family's published layout by `zoo.layouts.write_layout` (KV heads repeated for Baichuan and "
        "InternLM, zero attention biases for InternLM). `vs base` compares with `llama-base-s0` in the same "
        "layout, `vs llama` with `llama-base-s0` in its own LLaMA layout (another adapter on each side); `native` "
        "is the unmapped pair, both in the LLaMA layout, for reference (the quick zoo's `cpt-heavy` is already "
        "`independent` there: the mapping changes no score). "
        "Verdicts against the shipped null with one base compared, as `pawprint compare` gives them; default "
        "probe set built from both vocabularies, matched layers.",
        "",
        "| layout | model | related | ICS vs base | p vs base | verdict vs base | ICS vs llama | verdict vs llama | "
        "ICS native | verdict native |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['family']} | {r['model']} | | not mapped: {r['error']} | | | | |")
            continue
        out.append(f"| {r['family']} | {r['model']} | {'yes' if r['related'] else 'no'} | {r['ics']:.4f} | "
                   f"{r['p']:.1e} | {r['verdict']} | {r['ics_vs_llama']:.4f} | {r['verdict_vs_llama']} | "
                   f"{r['ics_native']:.4f} | {r['verdict_native']} |")
    scored = [r for r in rows if "error" not in r]
    right = sum((r["verdict"] == "derived") == r["related"] and (r["verdict_vs_llama"] == "derived") == r["related"]
                for r in scored)
    same = sum(r["verdict"] == r["verdict_vs_llama"] == r["verdict_native"] for r in scored)
    out += ["", f"Summary: {right} of {len(scored)} mapped models get the verdict their lineage implies "
            "(derived if related, not derived otherwise) on both sides; "
            f"{same} of {len(scored)} get the same verdict as the unmapped pair.", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zoo", default="out/zoo-quick")
    ap.add_argument("--out", default="docs/results/layout_lineage.md")
    args = ap.parse_args()
    t0 = time.time()
    zoo = Path(args.zoo)
    build_zoo(zoo, quick=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(zoo, Path(tmp))
    out = Path(args.out)
    out.write_text(render(rows, time.time() - t0, zoo), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
