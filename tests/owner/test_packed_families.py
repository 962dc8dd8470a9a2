"""The packed-projection families of the published lineup: MPT, Baichuan, InternLM, InternLM2, the first Qwen.

MPT has a transformers class, so its tiny model is a ``zoo.tiny`` family like the others (the attack, ONNX and
arithmetic tests cover it through ``FAMILIES``). The other four are written in their published layouts by
``zoo.layouts`` from an equivalent LLaMA / Qwen2 model; here:

- the mapped checkpoint computes the source's function, by each family's own forward arithmetic
  (``zoo.layouts.reference_logits``), and a checkpoint packed the wrong way does not;
- the new adapter's terms on it equal the source's terms to 1e-6 (both methods);
- the tokenizer files written (``tokenizer.model``, ``qwen.tiktoken``) give the source's vocabulary;
- attacks applied to the source survive the mapping, and lineage holds in the layout: a derivative of a base
  is ``derived`` against the shipped null, an independent model is not;
- odd or unsupported layouts fail with one clear line.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from owner import build_probe_set, compute_invariants, load_vocabulary
from owner._model import open_model
from owner.errors import CheckpointError, TokenizerError, UnsupportedModelError
from tests.owner.lineage_kit import lineage_verdict, noised_copy
from verifier import compare
from zoo.attacks import attack
from zoo.function import run_model
from zoo.layouts import (
    LAYOUT_FAMILIES,
    LayoutError,
    layout_function_diff,
    make_tiny_layout,
    make_tiny_source,
    reference_logits,
    tiktoken_ranks,
    write_layout,
)
from zoo.tiny import make_tiny

TinyModel = Callable[..., Path]
FAMILY_OF = {"baichuan": "baichuan", "internlm": "internlm", "internlm2": "internlm2", "qwen": "qwen"}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """family -> (source model, the same model in the family's layout)."""
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for fam in LAYOUT_FAMILIES:
        src = make_tiny_source(fam, root / f"{fam}-src")
        out[fam] = (src, write_layout(fam, src, root / fam))
    return out


def _ids(model: Path, seed: int = 0) -> torch.Tensor:
    vocab = int(json.loads((model / "config.json").read_text())["vocab_size"])
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(seed))


def _layout_logits(fam: str, src: Path, dst: Path, ids: torch.Tensor) -> torch.Tensor:
    """The layout model's logits on the source's token ids, columns back in source order."""
    if fam != "qwen":
        return reference_logits(dst, ids)
    m = torch.tensor(tiktoken_ranks(json.loads((src / "tokenizer.json").read_text()))[1])
    return reference_logits(dst, m[ids])[..., m]


def _max_term_diff(a: Path, b: Path, method: str) -> float:
    probes = build_probe_set(load_vocabulary(a), n=512, rule="all-hash-v1")
    ta = compute_invariants(a, probes=probes, method=method)  # type: ignore[arg-type]
    tb = compute_invariants(b, probes=probes, method=method)  # type: ignore[arg-type]
    assert ta.terms.keys() == tb.terms.keys()
    return max(float(np.abs(np.asarray(ta.terms[k]) - np.asarray(tb.terms[k])).max()) for k in ta.terms)


@pytest.mark.parametrize("fam", LAYOUT_FAMILIES)
def test_layout_checkpoint_computes_the_source_function(fam: str, layouts: dict[str, tuple[Path, Path]]) -> None:
    src, dst = layouts[fam]
    ids = _ids(src)
    a, b = run_model(src, ids), _layout_logits(fam, src, dst, ids)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-5


@pytest.mark.parametrize("fam", LAYOUT_FAMILIES)
def test_layout_terms_equal_the_source_terms(fam: str, layouts: dict[str, tuple[Path, Path]]) -> None:
    src, dst = layouts[fam]
    opened = open_model(dst)
    assert opened.adapter.info.family == FAMILY_OF[fam]
    for method in ("pawprint", "huref-2024"):
        assert _max_term_diff(src, dst, method) <= 1e-6


def _swap(path: Path, a: str, b: str) -> None:
    t = load_file(str(path / "model.safetensors"))
    t[a], t[b] = t[b], t[a]
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_a_wrongly_packed_checkpoint_is_caught(layouts: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """The checks above can fail: Qwen with gate and up swapped, InternLM2 with its groups packed in thirds."""
    import shutil

    src, dst = layouts["qwen"]
    bad = Path(shutil.copytree(dst, tmp_path / "qwen-bad"))
    _swap(bad, "transformer.h.2.mlp.w1.weight", "transformer.h.2.mlp.w2.weight")
    ids = _ids(src)
    a = run_model(src, ids)
    assert float((a - _layout_logits("qwen", src, bad, ids)).abs().max() / a.abs().max()) > 1e-2
    # (the FFN term multiplies the gate and up outputs without the activation, so it cannot see this swap:
    # the reference forward is what pins which of w1 / w2 is the gate)

    src, dst = layouts["internlm2"]
    bad = Path(shutil.copytree(dst, tmp_path / "internlm2-bad"))
    t = load_file(str(bad / "model.safetensors"))
    s = load_file(str(src / "model.safetensors"))
    p = "model.layers.2."
    t[p + "attention.wqkv.weight"] = torch.cat([s[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])  # thirds
    save_file(t, str(bad / "model.safetensors"), metadata={"format": "pt"})
    a = run_model(src, ids)
    assert float((a - _layout_logits("internlm2", src, bad, ids)).abs().max() / a.abs().max()) > 1e-2
    probes = build_probe_set(load_vocabulary(src), n=512, rule="all-hash-v1")
    r = compare(compute_invariants(src, probes=probes), compute_invariants(bad, probes=probes))
    worst = {t.term: t.cosine for t in r.terms if t.layer_a == 2}
    assert worst["attn_qk"] < 0.9 and worst["attn_vo"] < 0.9, worst


def test_gqa_source_maps_exactly_into_layouts_without_gqa(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Key/value heads repeated per query head: the zoo's GQA LLaMA becomes a Baichuan with the same function
    and terms."""
    src = tiny_model("llama")  # 4 query heads, 2 KV heads
    dst = write_layout("baichuan", src, tmp_path / "baichuan")
    assert open_model(dst).adapter.info.n_kv_heads == 4
    ids = _ids(src)
    a = run_model(src, ids)
    assert float((a - reference_logits(dst, ids)).abs().max() / a.abs().max()) < 1e-5
    assert _max_term_diff(src, dst, "pawprint") <= 1e-5


def test_missing_biases_become_zeros(tiny_model: TinyModel, tmp_path: Path) -> None:
    """InternLM always has attention biases: a LLaMA without them maps with zero biases, same function."""
    src = tiny_model("llama")
    dst = write_layout("internlm", src, tmp_path / "internlm")
    t = load_file(str(dst / "model.safetensors"))
    assert not t["model.layers.0.self_attn.o_proj.bias"].any()
    ids = _ids(src)
    a = run_model(src, ids)
    assert float((a - reference_logits(dst, ids)).abs().max() / a.abs().max()) < 1e-5


def test_baichuan_13b_variant(layouts: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """The ALiBi variant: same tensors under the 13B config keys, same terms; its function is another (ALiBi,
    not RoPE), so the reference forward refuses it rather than compare."""
    src, _ = layouts["baichuan"]
    dst = write_layout("baichuan", src, tmp_path / "b13", variant="13b")
    cfg = json.loads((dst / "config.json").read_text())
    assert "model_max_length" in cfg and "max_position_embeddings" not in cfg
    assert _max_term_diff(src, dst, "pawprint") <= 1e-6
    with pytest.raises(LayoutError, match="ALiBi"):
        reference_logits(dst, _ids(src))


def test_written_tokenizer_files_give_the_source_vocabulary(layouts: dict[str, tuple[Path, Path]]) -> None:
    for fam in LAYOUT_FAMILIES:
        src, dst = layouts[fam]
        va, vb = load_vocabulary(src), load_vocabulary(dst)
        assert vb.source.name == ("qwen.tiktoken" if fam == "qwen" else "tokenizer.model")
        assert vb.style == va.style
        if fam == "qwen":  # the same strings; ids reordered (specials after the ranks)
            m = tiktoken_ranks(json.loads((src / "tokenizer.json").read_text()))[1]
            assert dict(vb.token_ids) == {k: m[v] for k, v in va.token_ids.items()}
        else:
            assert dict(vb.token_ids) == dict(va.token_ids)


def test_tiktoken_reader(tmp_path: Path) -> None:
    lines = [f"{base64.b64encode(t).decode()} {i}" for i, t in enumerate([b" the", b"ing", b"\xe4\xb8", b"<s>"])]
    (tmp_path / "qwen.tiktoken").write_text("\n".join(lines) + "\n")
    v = load_vocabulary(tmp_path)
    # a word start, a continuation; half a CJK character and a control spelling are left out
    assert dict(v.token_ids) == {"▁the": 0, "ing": 1} and v.size == 4 and v.style == "bytelevel"
    for bad, why in [("dGhl", "expected"), ("!!!! 3", "base64"), ("dGhl 0\naW5n 0", "repeated")]:
        (tmp_path / "qwen.tiktoken").write_text(bad + "\n")
        with pytest.raises(TokenizerError, match=why) as e:
            load_vocabulary(tmp_path)
        assert "\n" not in str(e.value)


def test_attacks_on_the_source_survive_the_mapping(layouts: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """A few attack-table cells (the benchmark runs them all): function kept on the mapped pair, terms kept."""
    for fam, kind in [("internlm2", "head-permute"), ("qwen", "vocab-permute"), ("baichuan", "fold-rotate")]:
        src, lay_src = layouts[fam]
        dst = tmp_path / f"{fam}-{kind}"
        result = attack(src, dst, kind, seed=3)
        lay_dst = write_layout(fam, dst, tmp_path / f"{fam}-{kind}-layout")
        assert layout_function_diff(fam, src, dst, lay_src, lay_dst, result.vocab_map, seed=3) < 1e-5
        probes = build_probe_set(load_vocabulary(lay_src), n=400, rule="all-hash-v1")
        r = compare(compute_invariants(lay_src, probes=probes), compute_invariants(lay_dst, probes=probes))
        assert min(t.cosine for t in r.terms) >= 0.999, (fam, kind, r)


@pytest.mark.parametrize("fam", ("mpt", *LAYOUT_FAMILIES))
def test_lineage_in_the_layout(fam: str, tiny_model: TinyModel, tmp_path: Path) -> None:
    """A derivative (5% noise on every tensor) of a base, both in the family's layout, is ``derived`` against
    the shipped null; another seed is not; the layout derivative also matches the base in its source layout."""
    if fam == "mpt":
        base, other, source = tiny_model("mpt"), tiny_model("mpt", seed=1), None
    else:
        source = make_tiny_source(fam, tmp_path / "src")
        base = write_layout(fam, source, tmp_path / "base")
        other = make_tiny_layout(fam, tmp_path / "other", seed=1)
    derived = noised_copy(base, tmp_path / "derived")
    assert lineage_verdict(base, derived) == "derived"
    assert lineage_verdict(base, other) != "derived"
    if source is not None:
        assert lineage_verdict(source, derived) == "derived"


def test_odd_layouts_fail_with_one_clear_line(tiny_model: TinyModel, tmp_path: Path) -> None:
    import shutil

    d = Path(shutil.copytree(tiny_model("mpt"), tmp_path / "mpt-qkln"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["attn_config"]["qk_ln"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="qk_ln") as e:
        open_model(d)
    assert "\n" not in str(e.value)
    cfg["attn_config"].update(qk_ln=False, attn_type="something_new")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="grouped_query_attention"):
        open_model(d)

    cfg["model_type"] = "qwen_vl_chat"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError) as u:
        open_model(d)
    for fam in ("mpt", "baichuan", "internlm", "internlm2", "qwen"):
        assert f" {fam}," in str(u.value) or str(u.value).endswith(f" {fam}")
    assert "\n" not in str(u.value)

    b = make_tiny_layout("baichuan", tmp_path / "b")
    t = load_file(str(b / "model.safetensors"))
    t["model.layers.2.self_attn.W_pack.weight"] = t["model.layers.2.self_attn.W_pack.weight"][:128]
    save_file(t, str(b / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="W_pack"):
        open_model(b)


def test_writer_refuses_what_it_cannot_map_exactly(tiny_model: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="no biases"):
        write_layout("baichuan", make_tiny("llama", tmp_path / "ob", config_overrides=dict(attention_bias=True)),
                     tmp_path / "a")  # Baichuan has no place for attention biases
    with pytest.raises(LayoutError, match="byte-level"):
        write_layout("qwen", tiny_model("llama"), tmp_path / "b")  # a SentencePiece-style vocabulary
    with pytest.raises(LayoutError, match="model_type"):
        write_layout("baichuan", make_tiny("gpt2", tmp_path / "gpt2"), tmp_path / "c")


def test_mpt_grouped_query_split(tiny_model: TinyModel, tmp_path: Path) -> None:
    """llm-foundry's GQA MPT (no transformers class): ``Wqkv`` rows are ``[q (d), k (kv*dh), v (kv*dh)]``."""
    import shutil

    d = Path(shutil.copytree(tiny_model("mpt"), tmp_path / "mpt-gqa"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["attn_config"].update(attn_type="grouped_query_attention", kv_n_heads=2)
    (d / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(d / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(64, 64, generator=gen), torch.randn(32, 64, generator=gen), torch.randn(32, 64, generator=gen)
    for i in range(3):
        t[f"transformer.blocks.{i}.attn.Wqkv.weight"] = torch.cat([q, k, v])
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    adapter = open_model(d).adapter
    assert (adapter.info.n_heads, adapter.info.n_kv_heads) == (4, 2)
    w = adapter.layer(2)
    assert torch.equal(w.wq, q) and torch.equal(w.wk, k) and torch.equal(w.wv, v)
    t["transformer.blocks.2.attn.Wqkv.weight"] = torch.cat([q, k, v, v])  # rows for MHA, config says GQA
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="Wqkv"):
        open_model(d)
