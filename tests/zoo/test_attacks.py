"""Every family x every attack: the function survives, the raw weights really move, and seeds reproduce bytes.

Where an attack does not apply it must say so with ``AttackNotApplicable``, and only for the pairs listed in
``EXPECTED_NOT_APPLICABLE``, so coverage cannot shrink silently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from zoo.attacks import ATTACKS, AttackError, AttackNotApplicable, AttackResult, attack
from zoo.function import same_function
from zoo.tiny import FAMILIES, TinySpec, make_tiny

SPEC = TinySpec(layers=2)
TOLERANCE = 1e-4
TEXT = "Return the value of the attribute named key, or raise an error when it is missing."

# (family, attack) -> a word the AttackNotApplicable reason must contain. Why each cannot preserve the function:
# ffn-scale: a non-gated GELU FFN is not positively homogeneous (ReLU OPT is, and is attacked);
# bloom head-permute: ALiBi slopes are tied to head indices; bloom fold-rotate: the embedding LayerNorm writes
# the stream with a non-unit diagonal weight; bert fold-rotate: post-norm, the LayerNorm output is the stream;
# opt residual-scale: OPT's LayerNorm eps is fixed in code, so it cannot follow the stream's scale.
EXPECTED_NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{(f, "ffn-scale"): "homogeneous" for f in ("gpt2", "gpt_neox", "gptj", "falcon", "bloom", "bert", "mpt")},
    ("bloom", "head-permute"): "ALiBi",
    ("mpt", "head-permute"): "ALiBi",
    ("bloom", "fold-rotate"): "word_embeddings_layernorm",
    ("bert", "fold-rotate"): "post-norm",
    ("opt", "residual-scale"): "epsilon",
    # sandwich / output norms follow the writer (no fold, no rotation); QK- and output norms share the epsilon
    ("qwen3", "residual-scale"): "epsilon",
    ("qwen3_moe", "residual-scale"): "epsilon",
    **{(f, "fold-rotate"): "output" for f in ("olmo2", "gemma2", "gemma3_text")},
    **{(f, "residual-scale"): "epsilon" for f in ("olmo2", "gemma2", "gemma3_text")},
    ("mpnet", "ffn-scale"): "homogeneous",
    ("mpnet", "fold-rotate"): "post-norm",
}

# attack -> how many 2-D tensors per layer must move (raw cosine with the source below MOVED_COS)
MOVED_PER_LAYER: dict[str, int] = {
    "ffn-permute": 2, "ffn-scale": 2, "qk-linear": 1, "vo-linear": 2, "head-permute": 2,
    "residual-permute": 4, "fold-rotate": 4,
}
MOVED_COS = 0.99


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {f: make_tiny(f, root / f"src-{f}", seed=1, spec=SPEC) for f in FAMILIES}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().ravel(), b.double().ravel()
    return float(a @ b / (a.norm() * b.norm()))


def _moved(src: Path, dst: Path) -> int:
    a, b = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    return sum(1 for k in a if k in b and a[k].ndim == 2 and a[k].shape == b[k].shape and _cos(a[k], b[k]) < MOVED_COS)


def _check_tokenizer(src: Path, dst: Path, result: AttackResult) -> None:
    old = Tokenizer.from_file(str(src / "tokenizer.json"))
    new = Tokenizer.from_file(str(dst / "tokenizer.json"))
    assert result.vocab_map is not None
    ids = old.encode(TEXT).ids
    assert new.encode(TEXT).ids == [result.vocab_map[i] for i in ids]
    for token, i in old.get_vocab().items():
        assert new.token_to_id(token) == result.vocab_map[i]
    cfg_old = json.loads((src / "config.json").read_text())
    cfg_new = json.loads((dst / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert cfg_new[key] == result.vocab_map[cfg_old[key]]
    if result.kind == "vocab-extend":
        n = len(result.vocab_map)
        assert cfg_new["vocab_size"] == n + len(result.added_tokens)
        assert [new.token_to_id(s) for s in result.added_tokens] == list(range(n, n + len(result.added_tokens)))


@pytest.mark.parametrize("kind", ATTACKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_attack_preserves_function(tiny: dict[str, Path], tmp_path: Path, family: str, kind: str) -> None:
    src, dst = tiny[family], tmp_path / "attacked"
    if (family, kind) in EXPECTED_NOT_APPLICABLE:
        with pytest.raises(AttackNotApplicable) as info:
            attack(src, dst, kind, seed=3)
        assert EXPECTED_NOT_APPLICABLE[family, kind] in info.value.reason and info.value.family == family
        assert not dst.exists()
        return
    result = attack(src, dst, kind, seed=3)
    assert (result.kind, result.seed, result.family) == (kind, 3, family)
    assert same_function(src, dst, result, seed=0) <= TOLERANCE

    if kind in MOVED_PER_LAYER:
        assert _moved(src, dst) >= MOVED_PER_LAYER[kind] * SPEC.layers
    elif kind == "vocab-permute":
        assert _moved(src, dst) >= 1
    a, b = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    embed = next(k for k in a if k.endswith(("embed_tokens.weight", "wte.weight", "embed_in.weight",
                                              "word_embeddings.weight")))
    if kind == "residual-scale":
        assert float(b[embed].norm() / a[embed].norm()) > 1.5
    if kind == "vocab-extend":
        assert b[embed].shape[0] == a[embed].shape[0] + len(result.added_tokens) > a[embed].shape[0]
        assert torch.equal(b[embed][: a[embed].shape[0]], a[embed])
    if kind in ("vocab-permute", "vocab-extend"):
        _check_tokenizer(src, dst, result)
    if kind == "fold-rotate":  # every norm weight folded away: stored 1, or 0 where the model adds 1 (Gemma)
        unit = 0.0 if family == "gemma" else 1.0
        norms = [k for k in b if k.endswith("weight") and ("norm" in k.lower() or ".ln_" in k)
                 and "_a_layernorm" not in k  # MLA's latent norms are inside attention, not on the stream
                 and not k.endswith(("q_norm.weight", "k_norm.weight"))]  # QK-norm: on q/k, not the stream
        assert len(norms) == (1 if family == "gptj" else 2) * SPEC.layers + 1  # GPT-J: one norm per block
        assert all(float(b[k].min()) == float(b[k].max()) == unit for k in norms)
    if family == "bert" and kind in ("residual-permute", "residual-scale"):
        assert result.hidden_transform is not None

    again = tmp_path / "again"
    attack(src, again, kind, seed=3)
    assert (again / "model.safetensors").read_bytes() == (dst / "model.safetensors").read_bytes()
    assert (again / "config.json").read_bytes() == (dst / "config.json").read_bytes()


# Layouts the tiny zoo does not build: (name, family, config overrides, attacks expected not to apply)
VARIANTS: list[tuple[str, str, dict[str, object], set[str]]] = [
    ("falcon-rw", "falcon", dict(new_decoder_architecture=False, multi_query=False, parallel_attn=False,
                                 alibi=True, bias=True, num_kv_heads=4), {"ffn-scale", "head-permute"}),
    ("falcon-mqa", "falcon", dict(new_decoder_architecture=False, multi_query=True, parallel_attn=True),
     {"ffn-scale"}),
    ("opt-350m", "opt", dict(do_layer_norm_before=False, word_embed_proj_dim=32), {"fold-rotate", "residual-scale"}),
    ("phi3-partial", "phi3", dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "partial_rotary_factor": 0.5}), set()),
    ("gpt2-padded-vocab", "gpt2", dict(vocab_size=640), {"ffn-scale"}),
    ("bloom-postln", "bloom", dict(apply_residual_connection_post_layernorm=True),
     {"ffn-scale", "head-permute", "fold-rotate", "residual-scale"}),
]


def _variant(tiny: dict[str, Path], family: str, overrides: dict[str, object], out: Path) -> Path:
    """A random model of ``family`` with ``overrides``, norm weights drawn away from 1 as in ``make_tiny``."""
    import transformers

    from zoo.tiny import build_config

    cfg = build_config(family, 600, SPEC)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    model = getattr(transformers, cfg.architectures[0])(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    shutil.copy(tiny[family] / "tokenizer.json", out / "tokenizer.json")
    return out


@pytest.mark.parametrize(("name", "family", "overrides", "not_applicable"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_layout_variants(tiny: dict[str, Path], tmp_path: Path, name: str, family: str,
                         overrides: dict[str, object], not_applicable: set[str]) -> None:
    src = _variant(tiny, family, overrides, tmp_path / name)
    for kind in ATTACKS:
        dst = tmp_path / kind
        if kind in not_applicable:
            with pytest.raises(AttackNotApplicable):
                attack(src, dst, kind, seed=4)
            continue
        result = attack(src, dst, kind, seed=4)
        assert same_function(src, dst, result, seed=1) <= TOLERANCE, kind
        if kind in ("vocab-permute", "vocab-extend"):
            _check_tokenizer(src, dst, result)
        if kind in MOVED_PER_LAYER:
            assert _moved(src, dst) >= MOVED_PER_LAYER[kind] * SPEC.layers, kind


def test_bf16_checkpoints_stay_bf16(tmp_path: Path) -> None:
    src = make_tiny("qwen2", tmp_path / "src", seed=2, spec=SPEC, dtype=torch.bfloat16)
    for kind in ("ffn-scale", "residual-scale", "qk-linear"):
        result = attack(src, tmp_path / kind, kind, seed=0)
        assert {t.dtype for t in load_file(tmp_path / kind / "model.safetensors").values()} == {torch.bfloat16}
        # permutations and power-of-two scales are exact in bf16; general linear maps round
        assert same_function(src, tmp_path / kind, result) <= (0.0 if "scale" in kind else 1e-3)


def test_seed_changes_the_attack(tiny: dict[str, Path], tmp_path: Path) -> None:
    attack(tiny["llama"], tmp_path / "a", "fold-rotate", seed=1)
    attack(tiny["llama"], tmp_path / "b", "fold-rotate", seed=2)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != (tmp_path / "b" / "model.safetensors").read_bytes()


def test_family_comes_from_config_not_directory_name(tiny: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "llama-7b"
    shutil.copytree(tiny["gpt2"], disguised)
    result = attack(disguised, tmp_path / "out", "head-permute", seed=0)
    assert result.family == "gpt2"


def test_attacking_twice_replaces_the_destination(tiny: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "out"
    attack(tiny["qwen2"], dst, "ffn-permute", seed=0)
    result = attack(tiny["qwen2"], dst, "vo-linear", seed=0)
    assert same_function(tiny["qwen2"], dst, result) <= TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directories left behind


def test_sharded_checkpoint_keeps_its_layout(tiny: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "sharded"
    shutil.copytree(tiny["gpt2"], src)
    tensors = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(src / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    dst = tmp_path / "out"
    result = attack(src, dst, "fold-rotate", seed=0)  # unties the head: a tensor the source did not have
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(names) | {"lm_head.weight"}
    assert not (dst / "model.safetensors").exists()
    assert same_function(src, dst, result) <= TOLERANCE


def test_bad_inputs_are_reported(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(AttackError, match="known: ffn-permute"):
        attack(tiny["llama"], tmp_path / "x", "melt")
    odd = tmp_path / "odd"
    shutil.copytree(tiny["llama"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))
    with pytest.raises(AttackError, match="supported: llama"):
        attack(odd, tmp_path / "y", "ffn-permute")
    extra = tmp_path / "extra"
    shutil.copytree(tiny["llama"], extra)
    tensors = load_file(extra / "model.safetensors")
    save_file({**tensors, "model.layers.0.mystery.weight": torch.zeros(4, 4)}, str(extra / "model.safetensors"))
    with pytest.raises(AttackError, match="mystery"):
        attack(extra, tmp_path / "z", "ffn-permute")
    (odd / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 100}))
    with pytest.raises(AttackError, match="disagree"):
        attack(odd, tmp_path / "w", "ffn-permute")


def test_vocab_permute_moves_every_token_id(tiny: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(tiny["llama"], src)
    specials = {str(i): {"content": c, "special": True} for i, c in enumerate(("<unk>", "<s>", "</s>"))}
    (src / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": specials}))
    (src / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 1]}))
    (src / "vocab.json").write_text("{}")
    result = attack(src, tmp_path / "out", "vocab-permute", seed=5)
    assert result.vocab_map is not None
    decoder = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert {int(k): v["content"] for k, v in decoder.items()} == {
        result.vocab_map[int(k)]: v["content"] for k, v in specials.items()}
    gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert gen == {"bos_token_id": result.vocab_map[1], "eos_token_id": [result.vocab_map[2], result.vocab_map[1]]}
    assert not (tmp_path / "out" / "vocab.json").exists()
    assert any("vocab.json" in note for note in result.notes)
