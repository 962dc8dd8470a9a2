"""The trained zoo: its lineage file, that every model is really trained, what each derivative changed,
that builds are cached and deterministic. One quick zoo is built per module (a few tens of seconds)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from zoo import train as T
from zoo.build import (
    DEFAULT_FAMILIES,
    DEFAULT_SCALE,
    KINDS,
    MARKER,
    QUICK_SCALE,
    build_zoo,
    extend_tokenizer,
    plan_zoo,
    train_style_tokenizer,
)
from zoo.corpora import split, text_corpus
from zoo.tiny import tokenizer_style

HAS_ONNX_EXPORT = importlib.util.find_spec("zoo.onnx_export") is not None


class Zoo:
    def __init__(self, root: Path, lineage: dict[str, Any], calls: list[tuple[str, int, int]]) -> None:
        self.root, self.lineage, self.calls = root, lineage, calls
        self.models = {m["name"]: m for m in lineage["models"]}

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.root / name / "model.safetensors"))

    def config(self, name: str) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((self.root / name / "config.json").read_text())
        return config


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    root = tmp_path_factory.mktemp("zoo")
    calls: list[tuple[str, int, int]] = []
    threads = torch.get_num_threads()
    path = build_zoo(root, quick=True, progress=lambda label, done, total: calls.append((label, done, total)),
                     threads=1)
    assert torch.get_num_threads() == threads, "build_zoo must restore the torch thread count"
    assert path == root / "lineage.json"
    yield Zoo(root, json.loads(path.read_text()), calls)


def _is_hf(record: dict[str, Any]) -> bool:
    return not str(record["kind"]).startswith("onnx")


def _model(model_dir: Path, family: str, config: Any = None) -> Any:
    import transformers

    auto = transformers.AutoModelForMaskedLM if family == "bert" else transformers.AutoModelForCausalLM
    if config is not None:
        torch.manual_seed(1234)
        return auto.from_config(config).eval()
    return auto.from_pretrained(model_dir, dtype=torch.float32).eval()


def _heldout_loss(model: Any, model_dir: Path, family: str) -> float:
    """The model's loss on held-out docstring paragraphs, tokenised with the model's own tokenizer."""
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    sep = int(model.config.eos_token_id)
    stream = T.token_stream(tok, split(text_corpus("stdlib-docstrings"))[1], sep)
    if family == "bert":
        mask_id = tok.token_to_id("[MASK]")
        specials = tuple(tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]"))
        spec = T.MaskSpec(mask_id, tok.get_vocab_size(), specials)
        batches = T.eval_batches(stream, QUICK_SCALE.seq, 8, 32, "mlm", spec)
        return T.evaluate(model, batches, "mlm")
    return T.evaluate(model, T.eval_batches(stream, QUICK_SCALE.seq, 8, 32), "clm")


# -- plan ---------------------------------------------------------------------------------------------------


def test_quick_and_default_plans_have_the_same_population() -> None:
    quick, default = plan_zoo(DEFAULT_FAMILIES, QUICK_SCALE), plan_zoo(DEFAULT_FAMILIES, DEFAULT_SCALE)
    assert [(r.name, r.kind, r.parent) for r in quick] == [(r.name, r.kind, r.parent) for r in default]
    names = [r.name for r in quick]
    assert len(set(names)) == len(names)
    for i, r in enumerate(quick):  # parents come first
        assert r.parent is None or r.parent in names[:i]


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown families"):
        plan_zoo(("llama", "no-such-family"), QUICK_SCALE)


# -- lineage ------------------------------------------------------------------------------------------------


def test_lineage_has_every_kind_and_two_bases_per_family(zoo: Zoo) -> None:
    assert zoo.lineage["format"] == "pawprint-zoo/1"
    kinds = {m["kind"] for m in zoo.lineage["models"] if m["family"] == "llama"}
    skipped = {s["kind"] for s in zoo.lineage["skipped"]}
    assert kinds | skipped == set(KINDS)
    assert (not skipped) == HAS_ONNX_EXPORT
    for family in DEFAULT_FAMILIES:
        bases = [m for m in zoo.lineage["models"] if m["family"] == family and m["kind"] == "base"]
        assert len(bases) >= 2
        assert len({b["seed"] for b in bases}) == len(bases)
        assert {b["corpus"] for b in bases} == {"stdlib-docstrings"}
    for m in zoo.lineage["models"]:
        assert (zoo.root / m["name"] / MARKER).is_file()
        assert json.loads((zoo.root / m["name"] / MARKER).read_text())["recipe_digest"] == m["recipe_digest"]
        if m["parent"] is not None:
            assert zoo.models[m["parent"]]["family"] == m["family"]
        for key in ("seed", "steps", "lr", "corpus", "loss_initial", "loss_final", "recipe_digest"):
            assert key in m


def test_derivative_corpora_differ_from_pretraining(zoo: Zoo) -> None:
    corpora = {m["kind"]: m["corpus"] for m in zoo.lineage["models"] if m["family"] == "llama"}
    for kind in ("sft", "lora", "cpt-vocab", "cpt-heavy"):
        assert corpora[kind] != "stdlib-docstrings"
    assert len({corpora[k] for k in ("sft", "lora", "cpt-vocab", "cpt-heavy")}) == 4
    heavy, base = zoo.models["llama-cpt-heavy"], zoo.models["llama-base-s0"]
    assert heavy["lr"] == pytest.approx(3 * base["lr"]) and heavy["steps"] > base["steps"]


def test_progress_reaches_the_total(zoo: Zoo) -> None:
    dones = [d for _, d, _ in zoo.calls]
    assert dones == sorted(dones)
    assert zoo.calls[-1] == ("done", zoo.calls[-1][2], zoo.calls[-1][2])
    assert len({t for _, _, t in zoo.calls}) == 1


def test_progress_announces_each_model_by_name(zoo: Zoo) -> None:
    """One step per tokenizer and per model, announced by name as it starts (``done`` = steps finished);
    training steps are reported within their model's step, with the same ``done``."""
    recipes = plan_zoo(DEFAULT_FAMILIES, QUICK_SCALE)
    styles = list(dict.fromkeys(tokenizer_style(r.family) for r in recipes))
    total = len(styles) + len(recipes)
    assert {t for _, _, t in zoo.calls} == {total}
    starts: dict[int, str] = {}
    for label, done, _ in zoo.calls:
        starts.setdefault(done, label)  # the first call of each ``done`` starts that step
    expected = [f"tokenizer {s}" for s in styles] + [r.name for r in recipes]
    skipped = {s["name"] for s in zoo.lineage["skipped"]}
    assert [starts[i].split(":")[0] for i in range(total)] == expected
    assert all(starts[len(styles) + i] == r.name for i, r in enumerate(recipes) if r.name not in skipped)
    assert starts[total] == "done"
    steps = [(label, done) for label, done, _ in zoo.calls if label.startswith("llama-sft: step ")]
    assert len(steps) == QUICK_SCALE.steps // 2
    assert {done for _, done in steps} == {len(styles) + [r.name for r in recipes].index("llama-sft")}


# -- genuinely trained --------------------------------------------------------------------------------------


def test_recorded_losses_fell(zoo: Zoo) -> None:
    for m in zoo.lineage["models"]:
        if m["kind"] == "base":
            assert m["loss_final"] < m["loss_initial"] - 0.5, m["name"]
        elif m["kind"] in ("sft", "lora", "cpt-vocab", "cpt-heavy"):
            assert m["loss_final"] < m["loss_initial"], m["name"]


def test_every_model_beats_an_untrained_one_on_heldout_text(zoo: Zoo) -> None:
    import transformers

    for m in zoo.lineage["models"]:
        if not _is_hf(m):
            continue
        model_dir = zoo.root / m["name"]
        model = _model(model_dir, m["family"])
        untrained = _model(model_dir, m["family"], transformers.AutoConfig.from_pretrained(model_dir))
        trained_loss = _heldout_loss(model, model_dir, m["family"])
        untrained_loss = _heldout_loss(untrained.float(), model_dir, m["family"])
        assert trained_loss < untrained_loss - 0.5, (m["name"], trained_loss, untrained_loss)


# -- what each derivative changed ---------------------------------------------------------------------------


def test_derivatives_change_weights_but_keep_shapes(zoo: Zoo) -> None:
    parent = zoo.weights("llama-base-s0")
    for kind in ("sft", "lora", "cpt-heavy", "int8", "bf16"):
        child = zoo.weights(f"llama-{kind}")
        assert child.keys() == parent.keys(), kind
        assert all(child[k].shape == parent[k].shape for k in parent), kind
        assert any(not torch.equal(child[k].float(), parent[k]) for k in parent), kind
    independent = zoo.weights("llama-base-s1")
    assert all(independent[k].shape == parent[k].shape for k in parent)


def test_lora_changes_only_its_target_matrices(zoo: Zoo) -> None:
    parent, child = zoo.weights("llama-base-s0"), zoo.weights("llama-lora")
    targets = ("q_proj", "v_proj", "o_proj", "up_proj")
    for key in parent:
        changed = not torch.equal(parent[key], child[key])
        assert changed == any(f".{t}." in key for t in targets), key


def test_int8_is_a_per_row_absmax_round_trip(zoo: Zoo) -> None:
    parent, child = zoo.weights("llama-base-s0"), zoo.weights("llama-int8")
    for key, w in child.items():
        assert w.dtype == torch.float32
        if w.dim() != 2:
            assert torch.equal(w, parent[key]), key
            continue
        codes = torch.nan_to_num(w / (w.abs().amax(dim=1, keepdim=True) / 127))  # a zero row stays zero
        assert torch.allclose(codes, codes.round(), atol=1e-3), key
        assert (w - parent[key]).abs().max() <= parent[key].abs().max() / 127, key


def test_bf16_is_a_dtype_change_only(zoo: Zoo) -> None:
    parent, child = zoo.weights("llama-base-s0"), zoo.weights("llama-bf16")
    assert zoo.config("llama-bf16")["dtype"] == "bfloat16"
    for key, w in child.items():
        assert w.dtype == torch.bfloat16
        assert torch.equal(w, parent[key].to(torch.bfloat16)), key


def test_cpt_vocab_extends_the_tokenizer_and_embeddings(zoo: Zoo) -> None:
    old = Tokenizer.from_file(str(zoo.root / "llama-base-s0" / "tokenizer.json"))
    new = Tokenizer.from_file(str(zoo.root / "llama-cpt-vocab" / "tokenizer.json"))
    assert new.get_vocab_size() > old.get_vocab_size()
    for token, tid in old.get_vocab().items():
        assert new.token_to_id(token) == tid, token
    weights, parent = zoo.weights("llama-cpt-vocab"), zoo.weights("llama-base-s0")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert weights[key].shape == (new.get_vocab_size(), parent[key].shape[1])
    assert zoo.config("llama-cpt-vocab")["vocab_size"] == new.get_vocab_size()
    assert zoo.models["llama-cpt-vocab"]["vocab_added"] == new.get_vocab_size() - old.get_vocab_size()
    code = split(text_corpus("stdlib-source-a"))[1]
    assert sum(len(e.ids) for e in new.encode_batch(code)) < sum(len(e.ids) for e in old.encode_batch(code))


def test_pruned_has_one_layer_fewer(zoo: Zoo) -> None:
    parent, child = zoo.config("llama-base-s0"), zoo.config("llama-pruned")
    assert child["num_hidden_layers"] == parent["num_hidden_layers"] - 1
    weights = zoo.weights("llama-pruned")
    layers = {int(k.split(".")[2]) for k in weights if k.startswith("model.layers.")}
    assert layers == set(range(child["num_hidden_layers"]))
    assert zoo.models["llama-pruned"]["dropped_layer"] == parent["num_hidden_layers"] - 2


@pytest.mark.skipif(not HAS_ONNX_EXPORT, reason="zoo.onnx_export is not available")
def test_onnx_exports_are_in_optimum_layout(zoo: Zoo) -> None:
    for kind in ("onnx-fp32", "onnx-int8"):
        d = zoo.root / f"llama-{kind}"
        assert (d / "model.onnx").is_file() and (d / "config.json").is_file()
        assert (d / "tokenizer.json").read_bytes() == (zoo.root / "llama-base-s0" / "tokenizer.json").read_bytes()
        assert zoo.models[f"llama-{kind}"]["parent"] == "llama-base-s0"


# -- tokenizers ---------------------------------------------------------------------------------------------


def test_every_family_uses_one_shared_tokenizer(zoo: Zoo) -> None:
    by_style: dict[str, set[bytes]] = {}
    for m in zoo.lineage["models"]:
        if m["kind"] != "cpt-vocab":
            by_style.setdefault(tokenizer_style(m["family"]), set()).add(
                (zoo.root / m["name"] / "tokenizer.json").read_bytes())
    assert all(len(v) == 1 for v in by_style.values())


def test_wordpiece_training_is_deterministic() -> None:
    texts = split(text_corpus("stdlib-docstrings"))[0][:600]
    first = train_style_tokenizer(texts, "wordpiece", 400)
    assert first == train_style_tokenizer(texts, "wordpiece", 400)
    tok = Tokenizer.from_str(first)
    assert tok.get_vocab_size() == 400
    assert tok.encode("Return the value").tokens[0] == "[CLS]"
    assert any(t.startswith("##") for t in tok.get_vocab())


def test_extend_tokenizer_keeps_ids_and_adds_merges() -> None:
    texts = split(text_corpus("stdlib-docstrings"))[0][:300]
    old = train_style_tokenizer(texts, "bytelevel", 300)
    code = split(text_corpus("stdlib-source-a"))[0][:300]
    new = Tokenizer.from_str(extend_tokenizer(old, code, "bytelevel", 40, 500))
    old_tok = Tokenizer.from_str(old)
    assert new.get_vocab_size() == old_tok.get_vocab_size() + 40
    assert all(new.token_to_id(t) == i for t, i in old_tok.get_vocab().items())
    assert new.decode(new.encode(code[0]).ids) == code[0]


# -- cached and deterministic (these rebuild part of the zoo: keep them last) --------------------------------


def test_second_build_is_cached(zoo: Zoo) -> None:
    files = sorted(p for p in zoo.root.rglob("*") if p.is_file() and p.name != "lineage.json")
    before = {p: p.stat().st_mtime_ns for p in files}
    lineage_bytes = (zoo.root / "lineage.json").read_bytes()
    labels: list[str] = []
    build_zoo(zoo.root, quick=True, progress=lambda label, done, total: labels.append(label), threads=1)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert (zoo.root / "lineage.json").read_bytes() == lineage_bytes
    models = [label for label in labels if not label.startswith("tokenizer ") and label != "done"]
    assert models and all(label.endswith((": cached", "not importable)")) for label in models), models


def test_a_changed_recipe_is_rebuilt(zoo: Zoo) -> None:
    marker = zoo.root / "llama-bf16" / MARKER
    saved = json.loads(marker.read_text())
    marker.write_text(json.dumps({**saved, "recipe_digest": "0" * 64}))
    untouched = zoo.root / "llama-int8" / "model.safetensors"
    mtime = untouched.stat().st_mtime_ns
    old_ns = (zoo.root / "llama-bf16" / "model.safetensors").stat().st_mtime_ns
    os.utime(zoo.root / "llama-bf16" / "model.safetensors", ns=(old_ns - 10**9, old_ns - 10**9))
    labels: list[str] = []
    build_zoo(zoo.root, quick=True, progress=lambda label, done, total: labels.append(label), threads=1)
    assert json.loads(marker.read_text())["recipe_digest"] == saved["recipe_digest"]
    assert (zoo.root / "llama-bf16" / "model.safetensors").stat().st_mtime_ns > old_ns - 10**9
    assert untouched.stat().st_mtime_ns == mtime
    names = {r.name for r in plan_zoo(DEFAULT_FAMILIES, QUICK_SCALE)}
    assert [label for label in labels if label in names] == ["llama-bf16"]  # the one model built again


def test_build_is_deterministic(zoo: Zoo, tmp_path: Path) -> None:
    lineage = json.loads(build_zoo(tmp_path, families=("bert",), quick=True, threads=1).read_text())
    for record in lineage["models"]:
        name = record["name"]
        assert record == zoo.models[name]
        for file in ("model.safetensors", "tokenizer.json", "config.json"):
            assert (tmp_path / name / file).read_bytes() == (zoo.root / name / file).read_bytes(), (name, file)
