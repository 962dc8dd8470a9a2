"""Build the trained zoo: small real-architecture models whose lineage is known because we made it.

``build_zoo(out_dir)`` trains, for every family asked for, two independent bases (same data and shape,
different seed) on the standard-library docstring corpus, then derives from ``llama-base-s0`` the laundering
cases a verifier must see through: supervised fine-tuning, a merged LoRA, continued pretraining with an
extended vocabulary, heavy continued pretraining, an int8 round trip, a bf16 copy, a depth-pruned model and
ONNX exports. Every model is saved in Hugging Face layout with its ``tokenizer.json``, and ``lineage.json``
records who descends from whom with the recipe and the losses that show the training was real.

Determinism and caching: a model is a pure function of its ``Recipe``, the scale, its parent, its tokenizer,
its corpora and the library versions; all of that is hashed into ``recipe_digest``. A model directory is built
in a temporary directory, renamed into place, and only then marked complete with that digest; a later build
skips a model whose marker matches and rebuilds one whose recipe (or any ancestor's) changed. Same inputs on
the same machine and thread count give the same bytes.

This module only writes under ``out_dir`` and never touches the network.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer
from torch import nn

from zoo import train as T
from zoo.corpora import QAPair, qa_corpus, split, text_corpus
from zoo.progress import Progress, quiet_libraries
from zoo.tiny import FAMILIES, TinySpec, build_config, tokenizer_style
from zoo.tokenizers_ import TokenizerStyle, train_style_tokenizer

ZOO_FORMAT = "pawprint-zoo/1"
LINEAGE = "lineage.json"
MARKER = ".complete"
# Bump when this module changes what an unchanged recipe produces, so that caches built before are rebuilt.
BUILD_VERSION = 1

Kind = Literal["base", "sft", "lora", "cpt-vocab", "cpt-heavy", "int8", "bf16", "pruned", "onnx-fp32",
               "onnx-int8"]
KINDS: tuple[Kind, ...] = ("base", "sft", "lora", "cpt-vocab", "cpt-heavy", "int8", "bf16", "pruned",
                           "onnx-fp32", "onnx-int8")
DEFAULT_FAMILIES: tuple[str, ...] = ("llama", "gpt2", "gpt_neox", "bert")
# The family every derivative is made from (its first base); derivatives need a gated, GQA, untied model.
DERIVED_FAMILY = "llama"
BASE_SEEDS: tuple[int, ...] = (0, 1)
# Seeds of the held-out population (``plan_zoo(heldout=True)``): never used to fit or tune anything.
HELDOUT_SEEDS: tuple[int, ...] = (2, 3, 4)
BASE_CORPUS = "stdlib-docstrings"
# Families trained with the masked-LM objective; every other family is a causal decoder.
_MASKED_LM_FAMILIES = frozenset({"bert"})
# Per tokenizer style: (separator/eos token between documents, padding token, mask token). A missing padding
# token means the config has none (as LLaMA's): a ``padding_idx`` would pin that embedding row to zero, and
# the SentencePiece-style vocabulary has no token that never occurs in text; batches are padded with eos.
_STYLE_TOKENS: dict[TokenizerStyle, tuple[str, str | None, str | None]] = {
    "bytelevel": ("<|endoftext|>", "<|pad|>", None),
    "metaspace": ("</s>", None, None),
    "wordpiece": ("[SEP]", "[PAD]", "[MASK]"),
}
_BOS: dict[TokenizerStyle, str] = {"bytelevel": "<|endoftext|>", "metaspace": "<s>", "wordpiece": "[CLS]"}
_LORA_TARGETS = ("q_proj", "v_proj", "o_proj", "up_proj")

ProgressFn = Progress  # the zoo's progress callback (``zoo.progress``), under its former name
# A transformers ``PreTrainedModel`` (an ``nn.Module`` with ``config``, ``save_pretrained``...); typed loosely
# because transformers is imported lazily and ships no complete stubs.
HFModel = Any
OptionValue = int | float | str


class ZooBuildError(RuntimeError):
    """A zoo model could not be built as its recipe says."""


@dataclass(frozen=True)
class Scale:
    """Everything shared by the models of one zoo size; part of every recipe digest."""

    name: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    seq: int
    batch: int
    vocab: int
    steps: int  # base pretraining steps; derivative step counts are fractions of it
    lr: float  # base peak learning rate
    warmup: int
    new_tokens: int  # tokens added by cpt-vocab
    lora_rank: int
    eval_windows: int
    # Masked-LM bases learn slower per step (only the masked tokens are targets): more steps, more masking.
    mlm_step_factor: int = 2
    mlm_lr_factor: float = 1.5
    mlm_prob: float = 0.25


DEFAULT_SCALE = Scale(name="default", hidden=128, layers=4, heads=4, ffn=256, seq=64, batch=16, vocab=3000,
                      steps=300, lr=1e-3, warmup=30, new_tokens=400, lora_rank=8, eval_windows=64)
QUICK_SCALE = Scale(name="quick", hidden=32, layers=3, heads=4, ffn=64, seq=32, batch=8, vocab=600,
                    steps=80, lr=3e-3, warmup=6, new_tokens=48, lora_rank=4, eval_windows=16)


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is made. ``name`` is its directory under the zoo root."""

    name: str
    family: str
    kind: Kind
    parent: str | None
    seed: int | None  # None where nothing random happens (dtype changes, quantisation, export)
    steps: int = 0
    lr: float | None = None
    corpus: str | None = None
    options: tuple[tuple[str, OptionValue], ...] = field(default=())

    def option(self, key: str) -> OptionValue:
        for k, v in self.options:
            if k == key:
                return v
        raise KeyError(f"recipe {self.name} has no option {key!r}")


def plan_zoo(
    families: Sequence[str] = DEFAULT_FAMILIES, scale: Scale = DEFAULT_SCALE, heldout: bool = False
) -> list[Recipe]:
    """The recipes of a zoo, parents before children (no I/O).

    ``heldout`` plans the held-out population instead: bases with new seeds (``HELDOUT_SEEDS``) and the same
    derivative kinds made from ``llama-base-s2`` with new training seeds (named ``llama-s2-<kind>``), for
    evaluating calibrated verdicts on models the thresholds were not tuned on.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; supported: {', '.join(FAMILIES)}")
    recipes: list[Recipe] = []
    for family in dict.fromkeys(families):
        steps, lr = scale.steps, scale.lr
        options: tuple[tuple[str, OptionValue], ...] = ()
        if _objective(family) == "mlm":
            steps, lr = steps * scale.mlm_step_factor, lr * scale.mlm_lr_factor
            options = (("mask_prob", scale.mlm_prob),)
        for seed in HELDOUT_SEEDS if heldout else BASE_SEEDS:
            recipes.append(Recipe(f"{family}-base-s{seed}", family, "base", None, seed, steps, lr, BASE_CORPUS,
                                  options))
    if DERIVED_FAMILY not in families:
        return recipes
    f, s, lr = DERIVED_FAMILY, scale.steps, scale.lr
    if heldout:
        # New base, new training seeds, another dropped layer; exports are covered by the main zoo.
        parent, pre, k = f"{f}-base-s{HELDOUT_SEEDS[0]}", f"{f}-s{HELDOUT_SEEDS[0]}", 100
        drop = 1
    else:
        parent, pre, k, drop = f"{f}-base-s0", f, 0, scale.layers - 2
    recipes += [
        Recipe(f"{pre}-sft", f, "sft", parent, 11 + k, s // 2, lr * 0.3, "stdlib-qa"),
        Recipe(f"{pre}-lora", f, "lora", parent, 12 + k, s // 2, lr * 5, "python-reference",
               (("rank", scale.lora_rank), ("alpha", 2 * scale.lora_rank), ("targets", ",".join(_LORA_TARGETS)))),
        Recipe(f"{pre}-cpt-vocab", f, "cpt-vocab", parent, 13 + k, s // 2, lr * 0.5, "stdlib-source-a",
               (("new_tokens", scale.new_tokens),)),
        Recipe(f"{pre}-cpt-heavy", f, "cpt-heavy", parent, 14 + k, s * 2, lr * 3, "stdlib-source-b"),
        Recipe(f"{pre}-int8", f, "int8", parent, None, options=(("scheme", "per-row-absmax-int8"),)),
        Recipe(f"{pre}-bf16", f, "bf16", parent, None),
        Recipe(f"{pre}-pruned", f, "pruned", parent, 15 + k, max(1, s // 6), lr * 0.3, BASE_CORPUS,
               (("drop_layer", drop),)),
    ]
    if not heldout:
        recipes += [
            Recipe(f"{f}-onnx-fp32", f, "onnx-fp32", parent, None, options=(("exporter", "torchscript"),)),
            Recipe(f"{f}-onnx-int8", f, "onnx-int8", parent, None, options=(("exporter", "torchscript"),)),
        ]
    return recipes


def build_zoo(
    out_dir: Path,
    families: Sequence[str] = DEFAULT_FAMILIES,
    quick: bool = False,
    progress: ProgressFn | None = None,
    *,
    threads: int = 2,
    heldout: bool = False,
) -> Path:
    """Build (or reuse) the zoo under ``out_dir`` and return the path of its ``lineage.json``.

    ``quick`` builds the same population, smaller and shorter, for CI. ``progress(label, done, total)``
    (``zoo.progress.Progress``) is called as work advances; the units are steps, one per tokenizer and one per
    model, and ``done`` counts the steps finished. Each step is announced as it starts, with the model's name
    as ``label`` (``NAME: cached`` for a model reused as it is, ``tokenizer STYLE`` for a tokenizer); while a
    model trains, calls with the same ``done`` say ``NAME: step S/N, loss L``; the last call is
    ``("done", total, total)``. ``threads`` is the torch thread count used while building (restored
    afterwards); bytes are reproducible for a fixed count. ``heldout`` builds the held-out population (see
    ``plan_zoo``) instead, in its own directory. transformers and huggingface_hub print nothing of their own
    meanwhile (``zoo.progress.quiet_libraries``).
    """
    out_dir = Path(out_dir)
    scale = QUICK_SCALE if quick else DEFAULT_SCALE
    recipes = plan_zoo(families, scale, heldout=heldout)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]), quiet_libraries():
            builder = _Builder(out_dir, scale, progress, recipes)
            return builder.run()
    finally:
        torch.set_num_threads(previous_threads)


def _sha256(data: str) -> str:
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _objective(family: str) -> T.Objective:
    return "mlm" if family in _MASKED_LM_FAMILIES else "clm"


def _auto_class(family: str) -> Any:
    import transformers

    if _objective(family) == "mlm":
        return transformers.AutoModelForMaskedLM
    return transformers.AutoModelForCausalLM


def extend_tokenizer(tok_json: str, texts: Sequence[str], style: TokenizerStyle, new_tokens: int,
                     vocab_size: int) -> str:
    """Add up to ``new_tokens`` BPE tokens learned from ``texts`` to a BPE tokenizer; old ids are unchanged.

    A tokenizer of the same style is trained on ``texts``; its merges are taken in rank order where the result
    is new (with any character the old alphabet lacks, added just before the first merge that needs it), until
    ``new_tokens`` tokens are added. New merges rank after every old one (as vocabulary extensions such as
    Chinese-LLaMA's do), so old text still tokenises almost as before while the new corpus gets shorter.
    """
    data = json.loads(tok_json)
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"only BPE tokenizers can be extended, not {model.get('type')}")
    learned = json.loads(train_style_tokenizer(texts, style, vocab_size))["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list[Any] = model["merges"]
    pair_as_list = not merges or isinstance(merges[0], list)
    next_id = max(max(vocab.values()), *(t["id"] for t in data.get("added_tokens", []))) + 1
    added = 0

    def add(token: str) -> None:
        nonlocal next_id, added
        vocab[token] = next_id
        next_id += 1
        added += 1

    for merge in learned["merges"]:
        a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
        if a + b in vocab:
            continue
        missing = list(dict.fromkeys(x for x in (a, b) if x not in vocab))
        if any(len(x) != 1 for x in missing):  # a part whose own merge was not taken
            continue
        if added + len(missing) + 1 > new_tokens:
            break
        for char in missing:  # characters the old alphabet lacks, added as they are first needed
            add(char)
        add(a + b)
        merges.append([a, b] if pair_as_list else f"{a} {b}")
    return json.dumps(data, ensure_ascii=False)


# Continuation characters are moved to this private-use plane while learning a WordPiece vocabulary.
@dataclass
class _Data:
    """One tokenizer's view of one corpus: training sampler inputs and fixed evaluation batches."""

    train_stream: torch.Tensor
    heldout_stream: torch.Tensor
    eval: list[T.Batch]


class _Builder:
    """One build: the recipes in order, with the tokenizers, corpora and digests they share."""

    def __init__(self, out_dir: Path, scale: Scale, progress: ProgressFn | None, recipes: list[Recipe]) -> None:
        import tokenizers
        import transformers

        self.out_dir, self.scale, self.recipes = out_dir, scale, recipes
        self._progress = progress
        self.total = len({tokenizer_style(r.family) for r in recipes}) + len(recipes)
        self.done = 0
        self.toolchain = {"torch": torch.__version__, "transformers": transformers.__version__,
                          "tokenizers": tokenizers.__version__}
        self.texts: dict[str, tuple[list[str], list[str]]] = {}
        self.pairs: tuple[list[QAPair], list[QAPair]] | None = None
        self.tokenizers: dict[TokenizerStyle, str] = {}
        self.extended: dict[str, str] = {}  # cpt-vocab recipe name -> its extended tokenizer
        self.data: dict[tuple[str, str], _Data] = {}
        self.digests: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped: list[dict[str, str]] = []

    # -- progress -------------------------------------------------------------------------------------------
    def _report(self, label: str) -> None:
        if self._progress is not None:
            self._progress(label, self.done, self.total)

    def _step(self, label: str) -> None:
        """Announce the step that starts now (``done`` counts those finished); ``_finished`` ends it."""
        self._report(label)

    def _finished(self) -> None:
        self.done += 1

    # -- inputs ---------------------------------------------------------------------------------------------
    def _corpus(self, name: str) -> tuple[list[str], list[str]]:
        if name not in self.texts:
            self.texts[name] = split(text_corpus(name))
        return self.texts[name]

    def _qa(self) -> tuple[list[QAPair], list[QAPair]]:
        if self.pairs is None:
            self.pairs = split(qa_corpus())
        return self.pairs

    def _corpus_digest(self, name: str) -> str:
        if name == "stdlib-qa":
            pairs = [*self._qa()[0], *self._qa()[1]]
            return _sha256("\x1e".join(f"{p.prompt}\x1f{p.answer}" for p in pairs))
        train, held = self._corpus(name)
        return _sha256("\x1e".join(train) + "\x1d" + "\x1e".join(held))

    def _tokenizer(self, style: TokenizerStyle) -> str:
        if style not in self.tokenizers:
            self._step(f"tokenizer {style}")
            self.tokenizers[style] = train_style_tokenizer(self._corpus(BASE_CORPUS)[0], style, self.scale.vocab)
            self._finished()
        return self.tokenizers[style]

    def _tokenizer_for(self, recipe: Recipe) -> str:
        """The tokenizer a recipe's model ships with (its family's, or the extended one for cpt-vocab)."""
        style = tokenizer_style(recipe.family)
        if recipe.kind == "cpt-vocab":
            if recipe.name not in self.extended:
                texts = self._corpus(str(recipe.corpus))[0]
                self.extended[recipe.name] = extend_tokenizer(
                    self._tokenizer(style), texts, style, int(recipe.option("new_tokens")), self.scale.vocab)
            return self.extended[recipe.name]
        if recipe.parent is not None:
            parent = next(r for r in self.recipes if r.name == recipe.parent)
            return self._tokenizer_for(parent)
        return self._tokenizer(style)

    def _special(self, tok: Tokenizer, token: str) -> int:
        tid = tok.token_to_id(token)
        if tid is None:
            raise ZooBuildError(f"tokenizer lacks the special token {token!r}")
        return tid

    def _lm_data(self, tok_json: str, style: TokenizerStyle, corpus: str, objective: T.Objective) -> _Data:
        key = (_sha256(tok_json) + objective, corpus)
        if key not in self.data:
            tok = Tokenizer.from_str(tok_json)
            sep = self._special(tok, _STYLE_TOKENS[style][0])
            train, held = self._corpus(corpus)
            train_stream, held_stream = T.token_stream(tok, train, sep), T.token_stream(tok, held, sep)
            batches = T.eval_batches(held_stream, self.scale.seq, self.scale.batch, self.scale.eval_windows,
                                     objective, self._mask(tok, style))
            self.data[key] = _Data(train_stream, held_stream, batches)
        return self.data[key]

    def _mask(self, tok: Tokenizer, style: TokenizerStyle) -> T.MaskSpec | None:
        mask_token = _STYLE_TOKENS[style][2]
        if mask_token is None:
            return None
        specials = tuple(sorted({self._special(tok, t) for t in (*_STYLE_TOKENS[style][:2], _BOS[style])
                                 if t is not None}))
        return T.MaskSpec(self._special(tok, mask_token), tok.get_vocab_size(with_added_tokens=True), specials)

    # -- the recipe digest ----------------------------------------------------------------------------------
    def _digest(self, recipe: Recipe) -> str:
        payload = {
            "build": BUILD_VERSION,
            "recipe": asdict(recipe),
            "scale": asdict(self.scale),
            "parent": self.digests[recipe.parent] if recipe.parent else None,
            "tokenizer": _sha256(self._tokenizer_for(recipe)),
            "corpora": {c: self._corpus_digest(c) for c in sorted({BASE_CORPUS, recipe.corpus or BASE_CORPUS})},
            "toolchain": self.toolchain,
        }
        return _sha256(json.dumps(payload, sort_keys=True))

    # -- the build loop -------------------------------------------------------------------------------------
    def run(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for style in dict.fromkeys(tokenizer_style(r.family) for r in self.recipes):
            self._tokenizer(style)
        for recipe in self.recipes:
            self._build(recipe)
        lineage: dict[str, Any] = {
            "format": ZOO_FORMAT,
            "scale": self.scale.name,
            "models": [self.records[r.name] for r in self.recipes if r.name in self.records],
            "skipped": self.skipped,
        }
        path = self.out_dir / LINEAGE
        _atomic_write(path, json.dumps(lineage, indent=1, sort_keys=False) + "\n")
        self._report("done")
        return path

    def _build(self, recipe: Recipe) -> None:
        if recipe.kind.startswith("onnx"):
            export = _onnx_exporter()
            if export is None:
                self.skipped.append({"name": recipe.name, "kind": recipe.kind,
                                     "reason": "zoo.onnx_export is not importable"})
                self._step(f"{recipe.name}: skipped (zoo.onnx_export not importable)")
                self._finished()
                return
        digest = self._digest(recipe)
        self.digests[recipe.name] = digest
        final = self.out_dir / recipe.name
        marker = final / MARKER
        if marker.is_file():
            try:
                saved = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}
            if saved.get("recipe_digest") == digest and isinstance(saved.get("record"), dict):
                self.records[recipe.name] = saved["record"]
                self._step(f"{recipe.name}: cached")
                self._finished()
                return
        for stale in self.out_dir.glob(f".tmp-{recipe.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.out_dir / f".tmp-{recipe.name}-{os.getpid()}"
        tmp.mkdir()
        self._step(recipe.name)
        try:
            extra = self._make(recipe, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        record: dict[str, Any] = {
            "name": recipe.name, "family": recipe.family, "parent": recipe.parent, "kind": recipe.kind,
            "seed": recipe.seed, "steps": recipe.steps,
            "lr": None if recipe.lr is None else float(f"{recipe.lr:.6g}"), "corpus": recipe.corpus,
            "loss_initial": None, "loss_final": None, **extra, "options": dict(recipe.options),
            "recipe_digest": digest,
        }
        for key, value in record.items():
            if key.startswith("loss"):
                record[key] = _round(value)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write(marker, json.dumps({"recipe_digest": digest, "record": record}, indent=1) + "\n")
        self.records[recipe.name] = record
        self._finished()

    # -- per-kind makers: each writes the model into ``out`` and returns the extra lineage fields -------------
    def _make(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        makers: dict[Kind, Callable[[Recipe, Path], dict[str, Any]]] = {
            "base": self._make_base, "sft": self._make_sft, "lora": self._make_lora,
            "cpt-vocab": self._make_cpt_vocab, "cpt-heavy": self._make_cpt, "int8": self._make_int8,
            "bf16": self._make_bf16, "pruned": self._make_pruned, "onnx-fp32": self._make_onnx,
            "onnx-int8": self._make_onnx,
        }
        return makers[recipe.kind](recipe, out)

    def _config(self, family: str, vocab_size: int) -> Any:
        s = self.scale
        spec = TinySpec(layers=s.layers, hidden=s.hidden, heads=s.heads, ffn=s.ffn, vocab_size=vocab_size,
                        max_positions=max(128, s.seq))
        cfg = build_config(family, vocab_size, spec)
        # No dropout: at this size and step count it only slows learning, and eval equals train mode.
        for key, value in cfg.to_dict().items():
            if ("dropout" in key or "pdrop" in key) and isinstance(value, float):
                setattr(cfg, key, 0.0)
        tok = Tokenizer.from_str(self._tokenizer(tokenizer_style(family)))
        style = tokenizer_style(family)
        cfg.bos_token_id = self._special(tok, _BOS[style])
        cfg.eos_token_id = self._special(tok, _STYLE_TOKENS[style][0])
        pad = _STYLE_TOKENS[style][1]
        cfg.pad_token_id = None if pad is None else self._special(tok, pad)
        return cfg

    def _load(self, recipe: Recipe) -> HFModel:
        model = _auto_class(recipe.family).from_pretrained(
            self.out_dir / str(recipe.parent), dtype=torch.float32)
        return model.eval()

    def _save(self, model: HFModel, tok_json: str, out: Path) -> None:
        model.save_pretrained(out, safe_serialization=True)
        (out / "tokenizer.json").write_text(tok_json, encoding="utf-8")

    def _trainer(self, recipe: Recipe) -> Callable[[int, float], None]:
        """``train``'s ``on_step``: the model's training steps, reported within its build step (same ``done``)."""

        def on_step(step: int, loss: float) -> None:
            self._report(f"{recipe.name}: step {step}/{recipe.steps}, loss {loss:.2f}")

        return on_step

    def _base_data(self, recipe: Recipe, tok_json: str) -> _Data:
        style = tokenizer_style(recipe.family)
        return self._lm_data(tok_json, style, BASE_CORPUS, _objective(recipe.family))

    def _fit_lm(self, recipe: Recipe, model: HFModel, tok_json: str,
                params: Sequence[nn.Parameter] | None = None) -> tuple[float, float]:
        """Train ``model`` on the recipe's plain-text corpus; (held-out loss before, after)."""
        style, objective = tokenizer_style(recipe.family), _objective(recipe.family)
        data = self._lm_data(tok_json, style, str(recipe.corpus), objective)
        mask = self._mask(Tokenizer.from_str(tok_json), style)
        if mask is not None and "mask_prob" in dict(recipe.options):
            mask = replace(mask, prob=float(recipe.option("mask_prob")))
        sampler = T.WindowSampler(data.train_stream, self.scale.seq, self.scale.batch, seed=1000 + _seed(recipe),
                                  objective=objective, mask=mask)
        before = T.evaluate(model, data.eval, objective)
        T.train(model, sampler, steps=recipe.steps, lr=_lr(recipe), warmup=self.scale.warmup,
                params=params, on_step=self._trainer(recipe))
        return before, T.evaluate(model, data.eval, objective)

    def _base_loss(self, recipe: Recipe, model: HFModel, tok_json: str) -> float:
        return T.evaluate(model, self._base_data(recipe, tok_json).eval, _objective(recipe.family))

    def _make_base(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        vocab_size = Tokenizer.from_str(tok_json).get_vocab_size(with_added_tokens=True)
        torch.manual_seed(_seed(recipe))
        model = _auto_class(recipe.family).from_config(self._config(recipe.family, vocab_size))
        before, after = self._fit_lm(recipe, model, tok_json)
        data = self._base_data(recipe, tok_json)
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after, "loss_base": after,
                "loss_unigram": T.unigram_loss(data.train_stream, data.heldout_stream, vocab_size),
                **self._shape(model)}

    def _make_sft(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        tok = Tokenizer.from_str(tok_json)
        style = tokenizer_style(recipe.family)
        eos = self._special(tok, _STYLE_TOKENS[style][0])
        pad = self._special(tok, _STYLE_TOKENS[style][1] or _STYLE_TOKENS[style][0])
        train, held = self._qa()
        seq = self.scale.seq
        train_ex = T.encode_pairs(tok, [(p.prompt, p.answer) for p in train], eos, seq)
        held_ex = T.encode_pairs(tok, [(p.prompt, p.answer) for p in held], eos, seq)
        evals = T.pair_eval_batches(held_ex, self.scale.batch, self.scale.eval_windows, pad)
        model = self._load(recipe)
        before = T.evaluate(model, evals)
        sampler = T.PairSampler(train_ex, self.scale.batch, 1000 + _seed(recipe), pad)
        T.train(model, sampler, steps=recipe.steps, lr=_lr(recipe), warmup=self.scale.warmup,
                on_step=self._trainer(recipe))
        after = T.evaluate(model, evals)
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after,
                "loss_base": self._base_loss(recipe, model, tok_json), **self._shape(model)}

    def _make_lora(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        model = self._load(recipe)
        targets = str(recipe.option("targets")).split(",")
        adapters = T.attach_lora(model, targets, int(recipe.option("rank")), float(recipe.option("alpha")),
                                 seed=_seed(recipe))
        params = [p for a in adapters for p in (a.lora_a, a.lora_b)]
        before, after = self._fit_lm(recipe, model, tok_json, params=params)
        merged = T.merge_lora(model)
        if merged != len(adapters):
            raise ZooBuildError(f"merged {merged} LoRA adapters, expected {len(adapters)}")
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after,
                "loss_base": self._base_loss(recipe, model, tok_json), "adapters": len(adapters),
                **self._shape(model)}

    def _make_cpt_vocab(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        new_size = Tokenizer.from_str(tok_json).get_vocab_size(with_added_tokens=True)
        model = self._load(recipe)
        old_size = model.get_input_embeddings().weight.shape[0]
        torch.manual_seed(_seed(recipe))  # new embedding rows are drawn around the mean of the old ones
        model.resize_token_embeddings(new_size)
        before, after = self._fit_lm(recipe, model, tok_json)
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after,
                "loss_base": self._base_loss(recipe, model, tok_json), "vocab_added": new_size - old_size,
                **self._shape(model)}

    def _make_cpt(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        model = self._load(recipe)
        before, after = self._fit_lm(recipe, model, tok_json)
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after,
                "loss_base": self._base_loss(recipe, model, tok_json), **self._shape(model)}

    def _make_int8(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        model = self._load(recipe)
        before = self._base_loss(recipe, model, tok_json)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(T.int8_roundtrip(p))
        after = self._base_loss(recipe, model, tok_json)
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after, "loss_base": after, **self._shape(model)}

    def _make_bf16(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        model = self._load(recipe)
        before = self._base_loss(recipe, model, tok_json)
        model = model.to(torch.bfloat16)
        self._save(model, tok_json, out)
        after = self._base_loss(recipe, model.float(), tok_json)
        return {"loss_initial": before, "loss_final": after, "loss_base": after, "dtype": "bfloat16",
                **self._shape(model)}

    def _make_pruned(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        tok_json = self._tokenizer_for(recipe)
        parent = self._load(recipe)
        drop = int(recipe.option("drop_layer"))
        cfg = copy.deepcopy(parent.config)
        layers = cfg.num_hidden_layers
        if not 0 <= drop < layers:
            raise ZooBuildError(f"cannot drop layer {drop} of {layers}")
        cfg.num_hidden_layers = layers - 1
        if isinstance(getattr(cfg, "layer_types", None), list):
            cfg.layer_types = [t for i, t in enumerate(cfg.layer_types) if i != drop]
        state = {}
        for key, value in parent.state_dict().items():
            new_key = _without_layer(key, drop)
            if new_key is not None:
                state[new_key] = value
        torch.manual_seed(_seed(recipe))
        model = _auto_class(recipe.family).from_config(cfg)
        model.load_state_dict(state, strict=True)
        before, after = self._fit_lm(recipe, model, tok_json)  # a short heal on the pretraining corpus
        self._save(model, tok_json, out)
        return {"loss_initial": before, "loss_final": after, "loss_base": after, "dropped_layer": drop,
                **self._shape(model)}

    def _make_onnx(self, recipe: Recipe, out: Path) -> dict[str, Any]:
        export = _onnx_exporter()
        if export is None:  # checked by the caller; kept for the type checker
            raise ZooBuildError("zoo.onnx_export is not importable")
        export(self.out_dir / str(recipe.parent), out, int8=recipe.kind == "onnx-int8",
               exporter=str(recipe.option("exporter")))
        if not (out / "tokenizer.json").is_file():
            (out / "tokenizer.json").write_text(self._tokenizer_for(recipe), encoding="utf-8")
        return {}

    @staticmethod
    def _shape(model: HFModel) -> dict[str, Any]:
        cfg = model.config
        return {"layers": int(cfg.num_hidden_layers), "hidden": int(cfg.hidden_size),
                "vocab_size": int(model.get_input_embeddings().weight.shape[0])}


def _seed(recipe: Recipe) -> int:
    if recipe.seed is None:
        raise ZooBuildError(f"recipe {recipe.name} needs randomness but has no seed")
    return recipe.seed


def _lr(recipe: Recipe) -> float:
    if recipe.lr is None:
        raise ZooBuildError(f"recipe {recipe.name} trains but has no learning rate")
    return recipe.lr


def _without_layer(key: str, drop: int) -> str | None:
    """``key`` of a model without decoder layer ``drop``: None for that layer's tensors, later layers shifted."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h", "layer") and parts[i + 1].isdigit():
            index = int(parts[i + 1])
            if index == drop:
                return None
            if index > drop:
                parts[i + 1] = str(index - 1)
            return ".".join(parts)
    return key


def _onnx_exporter() -> Callable[..., Path] | None:
    """``zoo.onnx_export.export_onnx`` where that optional module is importable, else None."""
    try:
        module = importlib.import_module("zoo.onnx_export")
    except ImportError:
        return None
    export: Callable[..., Path] = module.export_onnx
    return export


def scale_for(quick: bool) -> Scale:
    """The scale ``build_zoo`` uses for ``quick``."""
    return QUICK_SCALE if quick else DEFAULT_SCALE


__all__ = ["DEFAULT_FAMILIES", "DEFAULT_SCALE", "KINDS", "QUICK_SCALE", "Recipe", "Scale", "ZooBuildError",
           "build_zoo", "extend_tokenizer", "plan_zoo", "scale_for", "train_style_tokenizer"]
