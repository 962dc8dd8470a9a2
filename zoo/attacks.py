"""The attack suite: function-preserving weight transforms that a fingerprint must not notice.

``attack(src, dst, kind, seed)`` reads a Hugging Face model directory, applies one transform from
``ATTACKS`` and writes a complete new directory (weights, config, tokenizer) that computes the same function
as the source, up to the token-id and hidden-state maps recorded in the returned ``AttackResult``
(``zoo.function.same_function`` checks exactly that). Raw parameters move a lot; pawprint's invariant terms
must not (the design's table "What each term cancels" lists these transforms). The pipeline:

1. ``zoo._attacks_arch`` picks the family adapter from ``config.json``'s ``model_type`` and describes the
   tensors by role (stream readers/writers, norms, heads, FFN units);
2. ``zoo._attacks_ops`` transforms them in float64, seeded, never touching files;
3. ``zoo._attacks_io`` writes weights in the source's dtype and sharding and rewrites token ids.

A transform that would not preserve a family's function raises ``AttackNotApplicable`` with the reason; the
suite never writes an approximately-equivalent model.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo._attacks_arch import SUPPORTED_FAMILIES, ArchError, describe, unclaimed
from zoo._attacks_base import AttackError, AttackNotApplicable, HiddenTransform
from zoo._attacks_io import (
    INDEX,
    LEGACY_VOCAB_FILES,
    SINGLE,
    Checkpoint,
    extend_tokenizer,
    new_token_strings,
    read_checkpoint,
    read_json,
    remap_config_ids,
    remap_tokenizer,
    remap_tokenizer_config,
    tokenizer_ids,
    write_checkpoint,
    write_json,
)
from zoo._attacks_ops import OPS, Work

__all__ = [
    "ALL_ATTACKS",
    "ATTACKS",
    "FAMILY_ATTACKS",
    "SUPPORTED_FAMILIES",
    "AttackError",
    "AttackNotApplicable",
    "AttackResult",
    "HiddenTransform",
    "attack",
]

ATTACKS: tuple[str, ...] = (
    "ffn-permute", "ffn-scale", "qk-linear", "vo-linear", "head-permute", "residual-permute", "fold-rotate",
    "residual-scale", "vocab-permute", "vocab-extend",
)
# Transforms of parts only some families have (mixture-of-experts FFNs, latent attention); every other family
# refuses them with ``AttackNotApplicable``. Kept apart from ``ATTACKS`` so that the suites that expect every
# attack to apply to every dense family stay as they are; the attack table runs ``ALL_ATTACKS``.
FAMILY_ATTACKS: tuple[str, ...] = ("expert-permute", "latent-rotate")
ALL_ATTACKS: tuple[str, ...] = ATTACKS + FAMILY_ATTACKS
VOCAB_ATTACKS: frozenset[str] = frozenset({"vocab-permute", "vocab-extend"})


@dataclass(frozen=True)
class AttackResult:
    """What was done, and what is needed to check that the function survived.

    ``vocab_map[i]`` is the attacked model's id for the source's token id ``i`` (vocabulary attacks; for
    ``vocab-extend`` the identity over the old ids, with ``added_tokens`` appended after them).
    ``hidden_transform`` maps the source's output hidden states into the attacked model's (encoders only).
    ``notes`` lists every config-level edit (untied head, rescaled epsilon, dropped legacy vocab files).
    """

    kind: str
    seed: int
    family: str
    vocab_map: tuple[int, ...] | None = None
    hidden_transform: HiddenTransform | None = None
    added_tokens: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def attack(src: Path, dst: Path, kind: str, seed: int = 0) -> AttackResult:
    """Apply attack ``kind`` to the model directory ``src`` and write the result to ``dst`` (replaced if present).

    Raises ``AttackNotApplicable`` when ``kind`` does not preserve the function of ``src``'s family and
    ``AttackError`` on unknown attacks, unsupported families and unreadable or unrecognised checkpoints."""
    src, dst = Path(src), Path(dst)
    if kind not in ALL_ATTACKS:
        raise AttackError(f"unknown attack {kind!r}; known: {', '.join(ALL_ATTACKS)}")
    config = read_json(src / "config.json")
    family = config.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise AttackError(f"{src}: unsupported model_type {family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    ckpt = read_checkpoint(src)
    try:
        arch = describe(family, _hf_config(src), {k: tuple(v.shape) for k, v in ckpt.tensors.items()})
    except ArchError as e:
        raise AttackError(f"{src}: {e}") from e
    unknown = unclaimed(arch, set(ckpt.tensors))
    if unknown:
        raise AttackError(f"{src}: {family} tensors this adapter does not understand: {unknown[:8]}")

    work = Work(kind, arch, _working(ckpt.tensors, arch.conv1d), dict(config),
                torch.Generator().manual_seed(seed))
    if kind in VOCAB_ATTACKS:
        work.token_rows = _token_rows(src, work.t[arch.embed].shape[0])
    OPS[kind](work)
    tok, added = _vocabulary(src, work) if kind in VOCAB_ATTACKS else (None, ())

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        notes = _write(src, tmp, ckpt, work, tok)
        _replace_dir(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return AttackResult(kind, seed, family, work.vocab_map, work.hidden, added, tuple(work.notes + notes))


def _token_rows(src: Path, rows: int) -> int:
    if not (src / "tokenizer.json").is_file():
        raise AttackError(f"{src}: a vocabulary attack needs tokenizer.json")
    used = max(tokenizer_ids(read_json(src / "tokenizer.json")), default=-1) + 1
    if used > rows:
        raise AttackError(f"{src}/tokenizer.json: token id {used - 1} is outside the {rows}-row embedding")
    return used


def _vocabulary(src: Path, work: Work) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The rewritten tokenizer.json (and the added token strings) matching the op's new embedding rows."""
    tok = read_json(src / "tokenizer.json")
    rows = work.t[work.arch.embed].shape[0]
    if work.kind == "vocab-permute":
        new_of_old = work.vocab_map or tuple(range(rows))
        work.config = remap_config_ids(work.config, new_of_old)
        return remap_tokenizer(tok, new_of_old), ()
    added = tuple(new_token_strings(tok, work.added_rows, work.gen))
    return extend_tokenizer(tok, added, first_id=rows - work.added_rows), added


def _hf_config(src: Path) -> Any:
    """The transformers config object: it resolves aliases (``n_head``), defaults and legacy field names."""
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(str(src))
    except (OSError, ValueError, KeyError) as e:
        raise AttackError(f"{src}/config.json: transformers cannot read it: {e}") from e


def _working(tensors: dict[str, torch.Tensor], conv1d: frozenset[str]) -> dict[str, torch.Tensor]:
    """Float64 copies in ``(out, in)`` layout (the transforms are exact to ~1e-16 before the cast back)."""
    out = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            out[name] = t.clone()
        else:
            out[name] = (t.T if name in conv1d else t).to(torch.float64, copy=True).contiguous()
    return out


def _stored(work: Work, original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Back to each tensor's stored dtype and layout; new tensors (an untied head) take the embedding's dtype."""
    fallback = original[work.arch.embed].dtype
    out = {}
    for name, t in work.t.items():
        if not t.is_floating_point():
            out[name] = t.contiguous()
        else:
            dtype = original[name].dtype if name in original else fallback
            out[name] = (t.T if name in work.arch.conv1d else t).to(dtype).contiguous()
    return out


def _write(src: Path, tmp: Path, ckpt: Checkpoint, work: Work, tok: dict[str, Any] | None) -> list[str]:
    """Fill ``tmp`` with the attacked model: new weights and config, rewritten token ids, other files copied."""
    notes: list[str] = []
    # files holding token ids: rewritten for a permutation; an extension appends ids, so they stay valid
    id_files = {"generation_config.json": remap_config_ids, "tokenizer_config.json": remap_tokenizer_config}
    rewritten = {"config.json", SINGLE, INDEX, *ckpt.metadata}
    if tok is not None:
        rewritten.add("tokenizer.json")
        write_json(tmp / "tokenizer.json", tok)
    if work.kind == "vocab-permute":
        rewritten |= set(id_files)
        for name, fix in id_files.items():
            if (src / name).is_file():
                write_json(tmp / name, fix(read_json(src / name), work.vocab_map or ()))
    for path in sorted(src.iterdir()):
        if path.name in rewritten:
            continue
        if tok is not None and path.name in LEGACY_VOCAB_FILES:
            notes.append(f"dropped {path.name}: it cannot follow the new vocabulary (tokenizer.json does)")
        elif path.is_dir():
            shutil.copytree(path, tmp / path.name)
        else:
            shutil.copy2(path, tmp / path.name)
    write_checkpoint(tmp, ckpt, _stored(work, ckpt.tensors), new_home=work.arch.embed)
    write_json(tmp / "config.json", work.config)
    return notes


def _replace_dir(new: Path, dst: Path) -> None:
    """Move ``new`` to ``dst``; an existing ``dst`` is swapped out first and removed afterwards."""
    old: Path | None = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        dst.rename(old / dst.name)
    new.rename(dst)
    if old is not None:
        shutil.rmtree(old)
