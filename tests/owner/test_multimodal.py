"""Language models inside multimodal checkpoints: found by config and structure, read alone, fingerprinted as
their family. The vision-language checkpoints are built by ``zoo.multimodal`` around the quick zoo's trained
LLaMA base with transformers' LLaVA classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import compute_invariants
from owner._model import open_model
from owner._multimodal import TEXT_DEFAULTS, text_config
from owner._source import SafetensorsSource, TensorMeta, safetensors_layout
from owner.errors import CheckpointError, UnsupportedModelError
from protocol.terms import InvariantSet
from verifier import compare
from zoo.multimodal import LAYOUTS, add_qwen_visual, make_vlm

# Where each layout keeps the language model's tensors (the adapter's prefix) and the tensors that are not it.
LM_PREFIX = {"llava": "language_model.model.", "llava-nested": "model.language_model.",
             "llava-original": "model.", "minigpt4": "llama_model.model."}
NOT_LM = {"llava": ("vision_tower.", "multi_modal_projector."),
          "llava-nested": ("model.vision_tower.", "model.multi_modal_projector."),
          "llava-original": ("model.vision_tower.", "model.mm_projector."),
          "minigpt4": ("visual_encoder.", "llama_proj."), "qwen-vl": ("transformer.visual.",)}


@pytest.fixture(scope="module")
def base(quick_zoo: Path) -> Path:
    return quick_zoo / "llama-base-s0"


@pytest.fixture(scope="module")
def base_terms(base: Path) -> InvariantSet:
    return compute_invariants(base)


@pytest.fixture(scope="module")
def vlms(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm")
    out = {layout: make_vlm(base, root / layout, layout=layout) for layout in LAYOUTS}
    out["llava-vision1"] = make_vlm(base, root / "llava-vision1", layout="llava", vision_seed=1)
    return out


def _same_terms(a: InvariantSet, b: InvariantSet) -> bool:
    return a.probes.id == b.probes.id and a.terms.keys() == b.terms.keys() and all(
        np.array_equal(a.terms[k], b.terms[k]) for k in a.terms)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_language_model_is_found_and_matches_its_base(
    layout: str, vlms: dict[str, Path], base_terms: InvariantSet
) -> None:
    m = open_model(vlms[layout])
    assert m.adapter.prefix == LM_PREFIX[layout]
    assert m.adapter.info.family == "llama" and m.adapter.info.n_layers == 3
    names = m.source.names()
    assert any(n.startswith(NOT_LM[layout]) for n in names)  # the vision tower and projector are there
    assert m.adapter.info.vocab_size == 608 > base_terms.model["vocab_size"]  # <image> added, padded to 8
    inv = compute_invariants(m)
    assert inv.model["family"] == "llama"
    assert compare(inv, base_terms, layer_pairs="match").ics >= 0.999
    # Stronger: the same probe set and the base's own tensors, so the very same terms, bit for bit.
    assert _same_terms(inv, base_terms)


def test_the_attack_table_through_a_vision_language_checkpoint(base: Path, tmp_path: Path) -> None:
    """Every function-preserving attack on the language model, wrapped in a LLaVA checkpoint afterwards, keeps
    every term of every layer at cosine >= 0.999 with the plain base (the attack table's bar)."""
    from owner import build_probe_set, load_vocabulary
    from zoo.attacks import ATTACKS, attack

    probes = build_probe_set(load_vocabulary(base), n=400, rule="all-hash-v1")
    ref = compute_invariants(base, probes=probes, layers="all")
    for kind in ATTACKS:  # every attack applies to LLaMA
        attack(base, tmp_path / kind, kind, seed=3)
        vlm = make_vlm(tmp_path / kind, tmp_path / f"vlm-{kind}", layout="llava-nested")
        r = compare(ref, compute_invariants(vlm, probes=probes, layers="all"))
        assert r.common_probe_tokens == sum(ref.present) and len(r.terms) == 3 * 3
        worst = min(r.terms, key=lambda t: t.cosine)
        assert worst.cosine >= 0.999 and r.ics >= 0.999, f"{kind}: {worst}"


def test_the_vision_tower_never_changes_the_terms(vlms: dict[str, Path]) -> None:
    a, b = load_file(str(vlms["llava"] / "model.safetensors")), load_file(str(vlms["llava-vision1"] /
                                                                              "model.safetensors"))
    assert a.keys() == b.keys()
    changed = sorted(k for k in a if not np.array_equal(a[k].numpy(), b[k].numpy()))
    assert changed and all(k.startswith(NOT_LM["llava"]) for k in changed)  # only vision tower and projector
    assert any(k.startswith("vision_tower.") for k in changed)
    assert _same_terms(compute_invariants(vlms["llava"]), compute_invariants(vlms["llava-vision1"]))


@pytest.fixture(scope="module")
def qwen_vl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny first-Qwen checkpoint (``zoo.layouts``) and the same with a Qwen-VL vision tower beside it."""
    from zoo.layouts import make_tiny_layout

    root = tmp_path_factory.mktemp("qwen-vl")
    qwen = make_tiny_layout("qwen", root / "qwen")
    return qwen, add_qwen_visual(qwen, root / "qwen-vl")


def test_qwen_vl_reads_as_the_first_qwen_beside_its_vision_tower(qwen_vl: tuple[Path, Path]) -> None:
    qwen, vl = qwen_vl
    m = open_model(vl)
    assert m.adapter.prefix == "transformer." and m.adapter.info.family == "qwen"
    assert any(n.startswith("transformer.visual.") for n in m.source.names())
    assert _same_terms(compute_invariants(vl), compute_invariants(qwen))


@pytest.mark.parametrize("layout", ["llava", "minigpt4", "qwen-vl"])
def test_no_tensor_outside_the_language_model_is_read(
    layout: str, vlms: dict[str, Path], qwen_vl: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every byte the term computation reads lies inside a language-model tensor; no other tensor is even
    looked up or prefetched (the weight commitment, which hashes every tensor, is not part of this)."""
    model = qwen_vl[1] if layout == "qwen-vl" else vlms[layout]
    path = model / "model.safetensors"
    base_offset, entries = safetensors_layout(path)
    reads: list[tuple[int, int]] = []
    looked_up: list[str] = []
    pread, meta, prefetch = SafetensorsSource._pread, SafetensorsSource.meta, SafetensorsSource.prefetch

    def spy_pread(self: SafetensorsSource, file: Path, into: memoryview, offset: int) -> None:
        reads.append((offset - base_offset, offset - base_offset + len(into)))
        pread(self, file, into, offset)

    def spy_meta(self: SafetensorsSource, name: str) -> TensorMeta:
        looked_up.append(name)
        return meta(self, name)

    def spy_prefetch(self: SafetensorsSource, names: list[str]) -> None:
        looked_up.extend(names)
        prefetch(self, names)

    monkeypatch.setattr(SafetensorsSource, "_pread", spy_pread)
    monkeypatch.setattr(SafetensorsSource, "meta", spy_meta)
    monkeypatch.setattr(SafetensorsSource, "prefetch", spy_prefetch)
    compute_invariants(model, layers="all")
    touched = {e.name for e in entries for lo, hi in reads if lo < e.end and e.start < hi}
    assert reads and touched
    outside = [n for n in touched | set(looked_up) if n.startswith(NOT_LM[layout])]
    assert not outside, outside
    assert any(e.name.startswith(NOT_LM[layout]) for e in entries)
    # ...and what is read is exactly what the layers need: every layer's tensors and the embedding.
    m = open_model(model)
    assert touched == set(m.adapter.tensor_names(range(m.adapter.info.n_layers)))


def _rewrite(src: Path, dst: Path, tensors: dict[str, torch.Tensor] | None = None,
             config: dict[str, object] | None = None) -> Path:
    shutil.copytree(src, dst)
    if tensors is not None:
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def two_lms(vlms: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniGPT-4 layout with a second copy of its language model under ``draft_model.``: ambiguous."""
    sd = load_file(str(vlms["minigpt4"] / "model.safetensors"))
    sd.update({"draft_model." + k[len("llama_model."):]: v.clone() for k, v in sd.items()
               if k.startswith("llama_model.")})
    return _rewrite(vlms["minigpt4"], tmp_path_factory.mktemp("two") / "two", tensors=sd)


def test_an_ambiguous_checkpoint_says_how_to_name_the_language_model(two_lms: Path) -> None:
    two = two_lms
    with pytest.raises(CheckpointError) as e:
        open_model(two)
    msg = str(e.value)
    assert "\n" not in msg and "more than one llama language model" in msg and "--lm-prefix" in msg
    assert "'draft_model.model.'" in msg and "'llama_model.model.'" in msg
    assert open_model(two, lm_prefix="llama_model").adapter.prefix == "llama_model.model."
    assert open_model(two, lm_prefix="draft_model.").adapter.prefix == "draft_model.model."
    with pytest.raises(CheckpointError, match=r"no llama token embedding .* under --lm-prefix 'vision\.'"):
        open_model(two, lm_prefix="vision")
    with pytest.raises(CheckpointError, match="expected a module path"):
        open_model(two, lm_prefix="a..b")


def test_a_config_that_does_not_fit_the_tensors_is_refused_clearly(vlms: dict[str, Path], tmp_path: Path) -> None:
    config = json.loads((vlms["llava"] / "config.json").read_text(encoding="utf-8"))

    def with_text(i: int, **fields: object) -> Path:
        return _rewrite(vlms["llava"], tmp_path / f"c{i}",
                        config={**config, "text_config": {**config["text_config"], **fields}})

    with pytest.raises(CheckpointError, match="more than the 2 layers its config gives"):
        open_model(with_text(0, num_hidden_layers=2))
    with pytest.raises(CheckpointError) as e:
        open_model(with_text(1, num_hidden_layers=4))
    assert "no llama language model of this llava checkpoint found" in str(e.value)
    assert "'language_model.model.'" in str(e.value) and "--lm-prefix" in str(e.value)
    with pytest.raises(UnsupportedModelError, match=r"language model of this llava checkpoint has model_type "
                                                     r"'xlnet' is not supported; supported families: llama"):
        open_model(with_text(2, model_type="xlnet"))
    with pytest.raises(CheckpointError, match="'text_config' has no model_type"):
        open_model(_rewrite(vlms["llava"], tmp_path / "c3", config={**config, "text_config": {"hidden_size": 32}}))


def test_plain_text_models_open_as_before(base: Path) -> None:
    m = open_model(base)
    assert m.adapter.prefix == "model." and m.adapter.info.family == "llama"
    # Named explicitly: the whole checkpoint is the language model (module path ''), read at the same place.
    assert open_model(base, lm_prefix="").adapter.prefix == "model."
    with pytest.raises(CheckpointError, match="no llama token embedding"):
        open_model(base, lm_prefix="language_model.")


@pytest.mark.parametrize("family", sorted(TEXT_DEFAULTS))
@pytest.mark.parametrize("given", [{}, {"num_attention_heads": 8, "hidden_size": 512}])
def test_a_sparse_text_config_takes_its_family_defaults_as_transformers_does(
    family: str, given: dict[str, int]
) -> None:
    """transformers before 4.4x saved a sub-config as its differences from the class defaults."""
    from transformers import CONFIG_MAPPING

    ref: Any = CONFIG_MAPPING[family](**cast(dict[str, Any], given))
    text, container = text_config({"model_type": "llava", "text_config": {"model_type": family, **given}}, "c")
    assert container == "llava"
    heads, hidden = text["num_attention_heads"], text["hidden_size"]
    assert (text["vocab_size"], hidden, text["intermediate_size"], text["num_hidden_layers"], heads) == (
        ref.vocab_size, ref.hidden_size, ref.intermediate_size, ref.num_hidden_layers, ref.num_attention_heads)
    # what the adapter derives where the table gives nothing (LlamaAdapter: kv heads = heads, head_dim = d / h)
    assert text.get("num_key_value_heads", heads) == ref.num_key_value_heads
    assert text.get("head_dim", hidden // heads) == (getattr(ref, "head_dim", None) or hidden // heads)


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    from pawprint.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_lineage_through_the_command_line(
    vlms: dict[str, Path], two_lms: Path, quick_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``owner fingerprint`` of the vision-language checkpoint, ``compare`` with its base (derived, ICS >= 0.999)
    and with another base (not derived); an ambiguous checkpoint is bad input until ``--lm-prefix`` names it."""
    code, out, err = _cli(capsys, "keys", "generate", "-o", tmp_path / "k", "--name", "o", "--role", "owner",
                          "--json")
    assert code == 0, err
    key = json.loads(out)["private_key"]
    bundle = tmp_path / "vlm.bundle"
    code, out, err = _cli(capsys, "owner", "fingerprint", vlms["llava-nested"], "-k", key, "-o", bundle, "-q",
                          "--json")
    assert code == 0, err
    assert json.loads(out)["groups"][0]["layers"]
    code, out, err = _cli(capsys, "compare", bundle, quick_zoo / "llama-base-s0", "--json", "-q")
    assert code == 0, err
    same = json.loads(out)
    assert same["ics"] >= 0.999 and same["verdict"] == "derived", same
    code, out, err = _cli(capsys, "compare", vlms["llava"], quick_zoo / "llama-base-s1", "--json", "-q")
    assert code == 0, err
    other = json.loads(out)
    assert other["verdict"] != "derived" and other["ics"] < 0.5, other

    code, _, err = _cli(capsys, "owner", "fingerprint", two_lms, "-k", key, "-o", tmp_path / "two.bundle", "-q")
    assert code == 2 and "--lm-prefix" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "two.bundle").exists()
    code, out, err = _cli(capsys, "owner", "inspect", two_lms, "--lm-prefix", "draft_model.", "--json")
    assert code == 0, err
    assert all(t["name"].startswith("draft_model.model.") for t in json.loads(out)["tensors_to_read"])
    code, _, err = _cli(capsys, "owner", "fingerprint", two_lms, "--lm-prefix", "llama_model", "-k", key, "-o",
                        tmp_path / "two.bundle", "-q")
    assert code == 0, err
    code, out, err = _cli(capsys, "compare", tmp_path / "two.bundle", bundle, "--json", "-q")
    assert code == 0 and json.loads(out)["ics"] >= 0.999, err
