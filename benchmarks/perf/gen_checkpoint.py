"""A synthetic LLaMA checkpoint at a real model's shape, for the performance benchmarks.

    python -m benchmarks.perf.gen_checkpoint out/perf/llama-1.1b --shape 1.1b
    python -m benchmarks.perf.gen_checkpoint out/perf/llama-7b --shape 7b

Hugging Face layout: ``config.json`` (``LlamaForCausalLM``), bf16 safetensors shards with
``model.safetensors.index.json``, and a ``tokenizer.json`` (SentencePiece-style BPE, 32000 pieces of which
more than 4096 are plain words, so the default probe rule finds its 4096 tokens). Weights are random
(N(0, 0.02); norm weights 1 + N(0, 0.1)) and deterministic: each block of rows has its own seed, derived
from the tensor's name, so the bytes do not depend on the machine or on how many threads wrote them.

Written streaming: each shard's header is computed from the shapes first, then tensors are generated and
written block by block (a few hundred MB in flight at most), never the whole model in memory. Existing
output is reused when its ``.complete`` stamp matches the requested shape and seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.perf._common import GIB, MIB


@dataclass(frozen=True)
class Shape:
    name: str
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


SHAPES: dict[str, Shape] = {
    # TinyLlama-1.1B's shape and LLaMA-2-7B's shape
    "1.1b": Shape("1.1b", 22, 2048, 5632, 32, 4, 32000),
    "7b": Shape("7b", 32, 4096, 11008, 32, 32, 32000),
    # a small shape for tests of the benchmarks themselves
    "tiny": Shape("tiny", 3, 256, 704, 8, 2, 32000),
}
BLOCK_ELEMENTS = 16 * MIB  # rows are generated in blocks of about this many elements (64 MB fp32)


def tensor_specs(s: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of a ``LlamaForCausalLM`` checkpoint (untied lm_head, as TinyLlama and LLaMA-2)."""
    q, kv = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (s.vocab, s.d_model))]
    for i in range(s.n_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (q, s.d_model)),
            (p + "self_attn.k_proj.weight", (kv, s.d_model)),
            (p + "self_attn.v_proj.weight", (kv, s.d_model)),
            (p + "self_attn.o_proj.weight", (s.d_model, q)),
            (p + "mlp.gate_proj.weight", (s.d_ffn, s.d_model)),
            (p + "mlp.up_proj.weight", (s.d_ffn, s.d_model)),
            (p + "mlp.down_proj.weight", (s.d_model, s.d_ffn)),
            (p + "input_layernorm.weight", (s.d_model,)),
            (p + "post_attention_layernorm.weight", (s.d_model,)),
        ]
    out += [("model.norm.weight", (s.d_model,)), ("lm_head.weight", (s.vocab, s.d_model))]
    return out


def shard_plan(specs: list[tuple[str, tuple[int, ...]]], max_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Consecutive tensors grouped into shards of at most ``max_bytes`` (one tensor may exceed it alone)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in specs:
        nbytes = math.prod(shape) * 2
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def _seed(seed: int, name: str, block: int) -> int:
    h = hashlib.sha256(f"{seed}\0{name}\0{block}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _block(seed: int, name: str, shape: tuple[int, ...], block: int, rows: int) -> bytes:
    g = torch.Generator().manual_seed(_seed(seed, name, block))
    cols = shape[1] if len(shape) == 2 else shape[0]
    n = rows * cols if len(shape) == 2 else shape[0]
    x = torch.randn(n, generator=g)
    if name.endswith("norm.weight"):
        x.mul_(0.1).add_(1.0)
    else:
        x.mul_(0.02)
    return x.to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def _blocks(seed: int, name: str, shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    if len(shape) == 1:
        yield 0, 1
        return
    rows = max(1, BLOCK_ELEMENTS // shape[1])
    for b, r0 in enumerate(range(0, shape[0], rows)):
        yield b, min(rows, shape[0] - r0)


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], seed: int, pool: ThreadPoolExecutor) -> int:
    """Write one safetensors file: header from the shapes, then each tensor block by block, in order."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        nbytes = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        # Blocks are generated on a small thread pool (torch releases the GIL) and written in order, with a
        # bounded number in flight so that memory stays at a few blocks.
        inflight: deque[Future[bytes]] = deque()
        for name, shape in tensors:
            for b, rows in _blocks(seed, name, shape):
                inflight.append(pool.submit(_block, seed, name, shape, b, rows))
                if len(inflight) > 3:
                    f.write(inflight.popleft().result())
        while inflight:
            f.write(inflight.popleft().result())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return 8 + len(raw) + offset


def config(s: Shape) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s.d_model,
        "intermediate_size": s.d_ffn,
        "num_attention_heads": s.n_heads,
        "num_key_value_heads": s.n_kv_heads,
        "num_hidden_layers": s.n_layers,
        "vocab_size": s.vocab,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tokenizer_json(vocab_size: int, seed: int) -> dict[str, object]:
    """A SentencePiece-style BPE ``tokenizer.json``: 3 specials, 256 byte pieces, then synthetic pieces
    (about two thirds word-initial ``▁`` + 3-9 letters, the rest continuations), all distinct."""
    rng = random.Random(seed)
    specials = ["<unk>", "<s>", "</s>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)]
    seen = set(pieces)
    while len(pieces) < vocab_size:
        word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 9)))
        piece = "▁" + word if rng.random() < 0.66 else word
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True} for i, t in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "post_processor": None,
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {p: i for i, p in enumerate(pieces)}, "merges": []},
    }


def generate(out: Path, shape: Shape, *, seed: int = 0, shard_bytes: int = 2 * GIB, workers: int = 2) -> Path:
    """Write the checkpoint to ``out`` (reused if already complete for this shape and seed)."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"shape": asdict(shape), "seed": seed, "shard_bytes": shard_bytes, "format": 1}
    stamp_file = out / ".complete"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return out
    stamp_file.unlink(missing_ok=True)
    specs = tensor_specs(shape)
    shards = shard_plan(specs, shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    total = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gen") as pool:
        for fname, tensors in zip(names, shards, strict=True):
            write_shard(out / fname, tensors, seed, pool)
            for name, shape_ in tensors:
                weight_map[name] = fname
                total += math.prod(shape_) * 2
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "config.json").write_text(json.dumps(config(shape), indent=1) + "\n")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(shape.vocab, seed), ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 2048}, indent=1) + "\n")
    stamp_file.write_text(json.dumps(stamp) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=2.0, help="largest shard, GiB (default 2)")
    ap.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = generate(args.out, SHAPES[args.shape], seed=args.seed, shard_bytes=int(args.shard_gb * GIB),
                   workers=args.workers)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    print(f"{out}: {args.shape}, {size / 1e9:.2f} GB in {len(list(out.glob('*.safetensors')))} shards, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
