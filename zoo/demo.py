"""The main job (``make demo``): build the lineage zoo, launder a base model with a chain of function-preserving
attacks, and show that pawprint's invariant terms still match while the raw parameters (and the published
HuRef form) do not; a derived model matches its base and an independent one does not.

The protocol issue turns this into the full two-party flow over gRPC.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from owner import build_probe_set, compare, compute_invariants, load_vocabulary
from owner._model import open_model
from zoo.attack_eval import raw_parameter_cosine
from zoo.attacks import attack
from zoo.build import build_zoo
from zoo.function import same_function

LAUNDER_CHAIN: tuple[str, ...] = (
    "fold-rotate", "ffn-permute", "ffn-scale", "head-permute", "qk-linear", "vo-linear", "residual-scale",
    "vocab-permute",
)


def _launder(src: Path, dst: Path, seed: int = 11) -> float:
    """Apply every attack of ``LAUNDER_CHAIN`` in turn; return the largest function change of any step."""
    cur, worst = src, 0.0
    tmp = dst.parent / f".{dst.name}-steps"
    shutil.rmtree(tmp, ignore_errors=True)
    for i, kind in enumerate(LAUNDER_CHAIN):
        nxt = tmp / f"{i}-{kind}"
        res = attack(cur, nxt, kind, seed=seed + i)
        change = same_function(cur, nxt, res, seed)
        worst = max(worst, change)
        print(f"  launder step {i + 1}/{len(LAUNDER_CHAIN)}: {kind:15s} relative output change {change:.1e}",
              flush=True)
        cur = nxt
    shutil.rmtree(dst, ignore_errors=True)
    shutil.move(str(cur), dst)
    shutil.rmtree(tmp, ignore_errors=True)
    return worst


def run_demo(workdir: Path, quick: bool = False) -> int:
    t0 = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    zoo_dir = workdir / ("zoo-quick" if quick else "zoo")
    print(f"[1/3] lineage zoo in {zoo_dir} (built once, then reused)", flush=True)
    lineage = json.loads(build_zoo(zoo_dir, quick=quick).read_text())
    models = {m["name"]: m for m in lineage["models"]}
    bases = [m["name"] for m in lineage["models"] if m["family"] == "llama" and m["kind"] == "base"]
    base, independent = bases[0], bases[1]
    derived = [m["name"] for m in lineage["models"] if m["parent"] == base and m["kind"] in ("sft", "cpt-heavy")]

    laundered = workdir / f"{base}-laundered"
    print(f"[2/3] laundering {base} with {len(LAUNDER_CHAIN)} function-preserving transforms", flush=True)
    worst = _launder(zoo_dir / base, laundered)
    print(f"  every step keeps the model's function (largest relative output change {worst:.1e})")

    print(f"[3/3] comparing against the base {base} (probe set built from its vocabulary)", flush=True)
    probes = build_probe_set(load_vocabulary(open_model(zoo_dir / base).root))
    inv_base = {m: compute_invariants(zoo_dir / base, probes=probes, method=m) for m in ("pawprint", "huref-2024")}
    suspects = [(laundered.name, laundered, "laundered copy of the base")]
    suspects += [(n, zoo_dir / n, f"{models[n]['kind']} of the base") for n in derived]
    suspects += [(independent, zoo_dir / independent, "independent: same data, other seed")]
    print()
    print(f"{'suspect':28s} {'truth':36s} {'raw cos':>8s} {'pawprint ICS':>13s} {'min term':>9s} {'huref ICS':>10s}")
    for name, path, truth in suspects:
        raw = raw_parameter_cosine(zoo_dir / base, path)
        p = compare(inv_base["pawprint"], compute_invariants(path, probes=probes, method="pawprint"))
        h = compare(inv_base["huref-2024"], compute_invariants(path, probes=probes, method="huref-2024"))
        print(f"{name:28s} {truth:36s} {raw:8.3f} {p.ics:13.4f} {min(t.cosine for t in p.terms):9.4f} {h.ics:10.4f}")
    print()
    print("raw cos: cosine of the weight matrices shared by name and shape; ICS: mean cosine of the six invariant")
    print("terms (last 2 layers x 3); min term: the smallest of the six; huref ICS: the published form (norms not")
    print("folded, FFN term from Wgate^T * Wup^T), which a rotation of the residual stream defeats.")
    print(f"done in {time.time() - t0:.0f} s; models under {workdir}")
    return 0
