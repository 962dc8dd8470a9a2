"""The dogs of the lineage zoo: do related models get similar pictures, measured on real fingerprints.

    python -m benchmarks.zoo_dogs        # ~2 min with the encoder benchmark's cached invariants; writes
                                         # docs/results/zoo_dogs.md (+ .json) and docs/results/dogs/zoo.png

Every zoo model's default terms (last two layers, probe set of ``llama-base-s0``, cached by
``benchmarks.encoder_eval``) are encoded with the default encoder and drawn. Related = derived or siblings
(same base); unrelated = every other pair. Reported: the AUC of the image distance (``verifier._render
.image_distance``, no pretrained network) for related against unrelated pairs, the Spearman correlation of
1 - encoded cosine with image distance, and the same with ICS, plus a sheet of dogs with their ICS to the base.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.encoder_eval import lineage, relation, zoo_invariants
from benchmarks.readability import auc, labelled_readability, spearman
from verifier import compare
from verifier._encoder import load_encoder
from verifier._render import RENDERER_ID, render_sheet

ANCHOR = "llama-base-s0"
SHEET = ("llama-base-s0", "llama-sft", "llama-lora", "llama-cpt-vocab", "llama-pruned", "llama-cpt-heavy",
         "llama-base-s1", "gpt2-base-s0")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--zoo", default="out/demo/zoo", type=Path)
    ap.add_argument("--cache", default="out/encoder_eval", type=Path)
    ap.add_argument("--out", default="docs/results/zoo_dogs.md", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    lin = lineage(args.zoo)
    invs = zoo_invariants(args.zoo, args.cache, ANCHOR)
    enc = load_encoder()
    vectors = {name: enc.encode(inv) for name, inv in invs.items()}
    names = sorted(vectors)
    related = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if relation(a, b, lin) in ("derived",
                                                                                                     "sibling")]
    lab = labelled_readability([(n, vectors[n]) for n in names], related)
    rows: list[dict[str, Any]] = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            va, vb = vectors[a], vectors[b]
            cos = float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
            rows.append({"a": a, "b": b, "relation": relation(a, b, lin), "ics": compare(invs[a], invs[b]).ics,
                         "encoded_cosine": cos, "image_distance": lab.distances[f"{a} | {b}"]})
    d = np.array([r["image_distance"] for r in rows])
    rho_cos = spearman(1 - np.array([r["encoded_cosine"] for r in rows]), d)
    rho_ics = spearman(1 - np.array([r["ics"] for r in rows]), d)
    rel_rows = [r for r in rows if r["relation"] in ("derived", "sibling")]
    rho_rel = spearman(1 - np.array([r["encoded_cosine"] for r in rel_rows]),
                       np.array([r["image_distance"] for r in rel_rows]))
    strong = [r for r in rows if r["relation"] in ("derived", "sibling") and r["ics"] >= 0.5]
    weak = [r for r in rows if r["relation"] in ("derived", "sibling") and r["ics"] < 0.5]
    unrel = [r["image_distance"] for r in rows if r["relation"] not in ("derived", "sibling")]
    auc_strong = auc([r["image_distance"] for r in strong], unrel)
    items = []
    for n in SHEET:
        ics = compare(invs[ANCHOR], invs[n]).ics
        items.append((vectors[n], [n, f"{lin[n]['kind']}", f"ICS to base {ics:.2f}"]))
    sheet = args.out.parent / "dogs" / "zoo.png"
    sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet.write_bytes(render_sheet(items))
    seconds = time.time() - t0
    lines = [
        "# The zoo's dogs", "",
        f"Command: `python -m benchmarks.zoo_dogs` ({seconds:.0f} s, {platform.machine()}, 2 cores). Encoder "
        f"`{enc.encoder_id}`; renderer `{RENDERER_ID}`. {len(names)} models, {len(rows)} pairs "
        f"({len(related)} related: derived or siblings).", "",
        "| measure | value | target |", "|---|---|---|",
        f"| AUC of image distance, related vs unrelated (all related pairs) | {lab.auc:.4f} | >= 0.99 |",
        f"| AUC, related pairs with ICS >= 0.5 vs unrelated ({len(strong)} pairs) | {auc_strong:.4f} | >= 0.99 |",
        f"| Spearman(1 - encoded cosine, image distance) | {rho_cos:.3f} | >= 0.85 |",
        f"| Spearman(1 - ICS, image distance) | {rho_ics:.3f} | - |",
        f"| Spearman(1 - encoded cosine, image distance), related pairs only | {rho_rel:.3f} | - |", "",
        f"The {len(weak)} related pairs with ICS < 0.5 are the heavy continued pretraining and its siblings (ICS "
        "0.08-0.1): the picture cannot show a similarity that small (two independent 512-d vectors already scatter "
        "+-0.044 in cosine) and draws them as different dogs; the calibrated verdict, not the picture, catches "
        "them (docs/results/lineage.md). Most pairs of the zoo are unrelated with cosine near 0, so the Spearman "
        "correlation over all pairs is dominated by the ordering of noise among unrelated pairs.", "",
        "![zoo dogs](dogs/zoo.png)", "",
        "| pair | relation | ICS | encoded cosine | image distance |", "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["image_distance"])[:25]:
        lines.append(f"| {r['a']} / {r['b']} | {r['relation']} | {r['ics']:.3f} | {r['encoded_cosine']:.3f} | "
                     f"{r['image_distance']:.3f} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {"auc": lab.auc, "auc_strong": auc_strong, "spearman_cosine": rho_cos, "spearman_ics": rho_ics,
               "spearman_related": rho_rel, "pairs": rows}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"wrote {args.out} and {sheet}")


if __name__ == "__main__":
    main()
