"""Reading and writing the HF model directories the attacks transform, and rewriting their vocabularies.

Checkpoints are safetensors only (one file, or shards with ``model.safetensors.index.json``); the written
directory keeps the source's sharding. Token ids live in several places besides the weights: the tokenizer
model's vocabulary, ``added_tokens``, the post-processor, the padding settings, ``*_token_id`` keys of
``config.json``/``generation_config.json`` and ``added_tokens_decoder`` of ``tokenizer_config.json``; a
vocabulary attack must move every one of them, or the directory would tokenise to the wrong vectors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo._attacks_base import AttackError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Vocabulary files a vocabulary attack cannot keep consistent (tokenizer.json is rewritten instead).
LEGACY_VOCAB_FILES: tuple[str, ...] = (
    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
)


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    home: dict[str, str]  # tensor name -> file name it is stored in
    metadata: dict[str, dict[str, str]]  # file name -> safetensors header metadata
    index: dict[str, Any] | None  # the shard index, when sharded


def read_checkpoint(src: Path) -> Checkpoint:
    if (src / INDEX).is_file():
        index = read_json(src / INDEX)
        files = sorted(set(index["weight_map"].values()))
    elif (src / SINGLE).is_file():
        index, files = None, [SINGLE]
    else:
        raise AttackError(f"{src}: no {SINGLE} or {INDEX} (only safetensors checkpoints are supported)")
    tensors: dict[str, torch.Tensor] = {}
    home: dict[str, str] = {}
    metadata: dict[str, dict[str, str]] = {}
    for name in files:
        try:
            with safe_open(str(src / name), framework="pt") as f:
                metadata[name] = dict(f.metadata() or {})
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    tensors[key] = f.get_tensor(key)
                    home[key] = name
        except (OSError, ValueError, RuntimeError) as e:
            raise AttackError(f"{src / name}: unreadable safetensors file: {e}") from e
    return Checkpoint(tensors, home, metadata, index)


def write_checkpoint(dst: Path, ckpt: Checkpoint, tensors: dict[str, torch.Tensor], new_home: str) -> None:
    """Write ``tensors`` with the source's file layout; tensors new to the checkpoint go to ``new_home``'s file."""
    home = {name: ckpt.home.get(name, ckpt.home[new_home]) for name in tensors}
    for file in sorted(set(home.values())):
        part = {k: v.contiguous() for k, v in sorted(tensors.items()) if home[k] == file}
        save_file(part, str(dst / file), metadata=ckpt.metadata.get(file) or {"format": "pt"})
    if ckpt.index is not None:
        index = dict(ckpt.index)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        index["metadata"] = {**index.get("metadata", {}), "total_size": size}
        index["weight_map"] = dict(sorted(home.items()))
        write_json(dst / INDEX, index)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AttackError(f"{path}: unreadable JSON: {e}") from e


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- token ids ------------------------------------------------------------------------------------------

IdMap = Callable[[int], int]


def _vocab_ids(model: dict[str, Any]) -> list[int]:
    if model.get("type") == "Unigram":
        return list(range(len(model["vocab"])))
    return list(model["vocab"].values())


def tokenizer_ids(tok: dict[str, Any]) -> list[int]:
    """Every id the tokenizer can emit."""
    return _vocab_ids(_model(tok)) + [int(a["id"]) for a in tok.get("added_tokens") or []]


def _model(tok: dict[str, Any]) -> dict[str, Any]:
    model = tok.get("model") or {}
    if model.get("type") not in ("BPE", "WordPiece", "WordLevel", "Unigram"):
        raise AttackError(f"tokenizer.json: unsupported tokenizer model type {model.get('type')!r}")
    return dict(model)


def _remap_processor(proc: Any, f: IdMap) -> Any:
    if proc is None:
        return None
    kind = proc.get("type")
    out = dict(proc)
    if kind in ("BertProcessing", "RobertaProcessing"):
        out["sep"] = [proc["sep"][0], f(int(proc["sep"][1]))]
        out["cls"] = [proc["cls"][0], f(int(proc["cls"][1]))]
    elif kind == "TemplateProcessing":
        out["special_tokens"] = {
            k: {**v, "ids": [f(int(i)) for i in v["ids"]]} for k, v in proc["special_tokens"].items()
        }
    elif kind == "Sequence":
        out["processors"] = [_remap_processor(p, f) for p in proc["processors"]]
    elif kind != "ByteLevel":
        raise AttackError(f"tokenizer.json: unsupported post_processor type {kind!r}")
    return out


def remap_tokenizer(tok: dict[str, Any], new_of_old: Sequence[int]) -> dict[str, Any]:
    """``tok`` with every token id ``i`` replaced by ``new_of_old[i]``."""
    def f(i: int) -> int:
        if not 0 <= i < len(new_of_old):
            raise AttackError(f"tokenizer.json: token id {i} is outside the embedding ({len(new_of_old)} rows)")
        return int(new_of_old[i])

    out = dict(tok)
    model = _model(tok)
    if model["type"] == "Unigram":
        pieces: list[Any] = [None] * len(new_of_old)
        for i, piece in enumerate(model["vocab"]):
            pieces[f(i)] = piece
        if any(p is None for p in pieces):
            raise AttackError("tokenizer.json: a Unigram vocabulary must cover every embedding row")
        model["vocab"] = pieces
        if model.get("unk_id") is not None:
            model["unk_id"] = f(int(model["unk_id"]))
    else:
        model["vocab"] = dict(sorted(((s, f(int(i))) for s, i in model["vocab"].items()), key=lambda x: x[1]))
    out["model"] = model
    out["added_tokens"] = [{**a, "id": f(int(a["id"]))} for a in tok.get("added_tokens") or []]
    out["post_processor"] = _remap_processor(tok.get("post_processor"), f)
    if tok.get("padding"):
        out["padding"] = {**tok["padding"], "pad_id": f(int(tok["padding"]["pad_id"]))}
    return out


def remap_config_ids(cfg: dict[str, Any], new_of_old: Sequence[int]) -> dict[str, Any]:
    """``*_token_id`` values (ints or lists of ints) of a config or generation config, remapped."""
    def f(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | list):
            return v
        if isinstance(v, list):
            return [f(x) for x in v]
        return int(new_of_old[v]) if 0 <= v < len(new_of_old) else v

    return {k: (f(v) if k.endswith("_token_id") else v) for k, v in cfg.items()}


def remap_tokenizer_config(cfg: dict[str, Any], new_of_old: Sequence[int]) -> dict[str, Any]:
    out = dict(cfg)
    if "added_tokens_decoder" in cfg:
        out["added_tokens_decoder"] = {
            str(new_of_old[int(k)]): v for k, v in sorted(cfg["added_tokens_decoder"].items(), key=lambda x: int(x[0]))
        }
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _has(component: Any, kind: str) -> bool:
    if not isinstance(component, dict):
        return False
    if component.get("type") == kind:
        return True
    return any(_has(p, kind) for p in component.get("pretokenizers") or component.get("decoders") or [])


def spell(tok: dict[str, Any], text: str) -> str:
    """How ``text`` (a word-initial piece) is spelt in this tokenizer's vocabulary."""
    if _has(tok.get("pre_tokenizer"), "ByteLevel"):
        table = _bytes_to_unicode()
        return "".join(table[b] for b in text.encode("utf-8"))
    pre = tok.get("pre_tokenizer")
    if _has(pre, "Metaspace"):
        marker = pre.get("replacement", "▁") if pre and pre.get("type") == "Metaspace" else "▁"
        return marker + text
    return text


def new_token_strings(tok: dict[str, Any], k: int, gen: torch.Generator) -> list[str]:
    """``k`` CJK characters the vocabulary lacks, spelt its way (as a Chinese vocabulary extension adds)."""
    taken = set(_vocab_strings(tok))
    out: list[str] = []
    for cp in (0x4E00 + torch.randperm(0x9FA5 - 0x4E00, generator=gen)).tolist():
        s = spell(tok, chr(cp))
        if s not in taken:
            out.append(s)
            taken.add(s)
        if len(out) == k:
            return out
    raise AttackError("tokenizer.json: no unused CJK characters left to add")


def _vocab_strings(tok: dict[str, Any]) -> list[str]:
    model = _model(tok)
    pieces = [p[0] for p in model["vocab"]] if model["type"] == "Unigram" else list(model["vocab"])
    return pieces + [a["content"] for a in tok.get("added_tokens") or []]


def extend_tokenizer(tok: dict[str, Any], strings: Sequence[str], first_id: int) -> dict[str, Any]:
    """``tok`` with ``strings`` appended to its model vocabulary as ids ``first_id, first_id + 1, ...``."""
    if max(tokenizer_ids(tok), default=-1) >= first_id:
        raise AttackError(f"tokenizer.json: ids at or above {first_id} are taken; cannot append tokens")
    out = dict(tok)
    model = _model(tok)
    if model["type"] == "Unigram":
        if len(model["vocab"]) != first_id:
            raise AttackError("tokenizer.json: a Unigram vocabulary must end at the last embedding row")
        floor = min((float(p[1]) for p in model["vocab"]), default=0.0)
        model["vocab"] = [*model["vocab"], *([s, floor - 1.0] for s in strings)]
    else:
        model["vocab"] = {**model["vocab"], **{s: first_id + j for j, s in enumerate(strings)}}
    out["model"] = model
    return out
