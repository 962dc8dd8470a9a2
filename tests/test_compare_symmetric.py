"""``compare A B`` equals ``compare B A`` (issue 18, item 3): the same probe rows whichever side comes first."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import build_pair_probe_set, build_probe_set, compute_invariants, load_vocabulary, save_invariants
from pawprint._local import compare_paths
from pawprint.cli import main
from zoo.attacks import attack

TinyModel = Callable[..., Path]


def prune_vocabulary(src: Path, dst: Path, keep: Callable[[int], bool]) -> Path:
    """A copy of the llama-style model ``src`` whose vocabulary keeps only the ids ``keep`` accepts, renumbered
    in order (embedding and head rows sliced to match); every transformer weight is bit-identical."""
    shutil.copytree(src, dst)
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = tok["model"]["vocab"]
    specials = {int(a["id"]) for a in tok.get("added_tokens") or []}
    kept = sorted(i for i in vocab.values() if keep(i) or i in specials)
    new_id = {old: new for new, old in enumerate(kept)}
    tok["model"]["vocab"] = {t: new_id[i] for t, i in vocab.items() if i in new_id}
    names = set(tok["model"]["vocab"])

    def pair(m: str | list[str]) -> list[str]:
        return m.split(" ") if isinstance(m, str) else list(m)

    tok["model"]["merges"] = [m for m in tok["model"]["merges"]
                              if all(p in names for p in pair(m)) and "".join(pair(m)) in names]
    for a in tok.get("added_tokens") or []:
        a["id"] = new_id[int(a["id"])]
    (dst / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    state = load_file(src / "model.safetensors")
    rows = torch.tensor(kept)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = state[name][rows].contiguous()
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg["vocab_size"] = len(kept)
    (dst / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return dst


def both_ways(a: Path, b: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    out = []
    for x, y in ((a, b), (b, a)):
        capsys.readouterr()
        assert main(["compare", str(x), str(y), "--json", "-q"]) == 0
        out.append(json.loads(capsys.readouterr().out))
    return out[0], out[1]


def assert_same(ab: dict[str, Any], ba: dict[str, Any]) -> None:
    for key in ("verdict", "p_value", "ics", "z", "common_probe_tokens"):
        assert ab[key] == ba[key], (key, ab[key], ba[key])


@pytest.fixture(scope="module")
def pruned(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prune_vocabulary(tiny_model("llama"), tmp_path_factory.mktemp("pruned") / "llama-pruned",
                            lambda i: i % 3 == 0 or i < 40)


def test_vocabulary_pruned_copy_scores_the_same_both_ways(tiny_model: TinyModel, pruned: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = tiny_model("llama")
    # the case is one that was asymmetric: on the base's own probe set the pruned copy lacks most rows
    own = build_probe_set(load_vocabulary(base))
    one_way = compare_paths(base, pruned, probes=own)
    other_way = compare_paths(pruned, base, probes=build_probe_set(load_vocabulary(pruned)))
    assert one_way.ics < 0.99 and other_way.ics == pytest.approx(1.0, abs=1e-6)
    ab, ba = both_ways(base, pruned, capsys)
    assert_same(ab, ba)
    assert ab["verdict"] == "derived" and ab["ics"] == pytest.approx(1.0, abs=1e-6)
    assert ab["common_probe_tokens"] == len(build_pair_probe_set(load_vocabulary(base), load_vocabulary(pruned)))


def test_ordinary_pairs_score_the_same_both_ways(tiny_model: TinyModel, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base, other = tiny_model("llama"), tiny_model("llama", seed=1)
    ab, ba = both_ways(base, other, capsys)
    assert_same(ab, ba)
    assert ab["verdict"] != "derived"
    attack(base, tmp_path / "permuted", "vocab-permute", seed=3)  # ids renumbered, same tokens
    ab, ba = both_ways(base, tmp_path / "permuted", capsys)
    assert_same(ab, ba)
    assert ab["verdict"] == "derived"


def test_a_side_given_as_terms_fixes_the_probe_set_either_way(tiny_model: TinyModel, pruned: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An invariants file's probe set is the one both sides use, whether the file is A or B."""
    inv = tmp_path / "pruned.inv"
    save_invariants(compute_invariants(pruned), inv)
    ab, ba = both_ways(tiny_model("llama"), inv, capsys)
    assert_same(ab, ba)
    assert ab["ics"] == pytest.approx(1.0, abs=1e-6)


def test_pair_probe_set_does_not_depend_on_the_order(tiny_model: TinyModel, pruned: Path) -> None:
    va, vb = load_vocabulary(tiny_model("llama")), load_vocabulary(pruned)
    for rule in ("rare-ids-v1", "words-hash-v1", "all-hash-v1"):
        ab, ba = build_pair_probe_set(va, vb, n=64, rule=rule), build_pair_probe_set(vb, va, n=64, rule=rule)
        assert ab == ba and ab.id == ba.id and ab.rule == f"{rule}+pair"
        assert all(t in va and t in vb for t in ab.tokens)
    # on one vocabulary the pair rule picks what the single-model rule picks
    assert build_pair_probe_set(va, va, n=64).tokens == build_probe_set(va, n=64).tokens
