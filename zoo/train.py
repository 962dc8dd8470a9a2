"""Small, deterministic training loops for the zoo: causal-LM and masked-LM pretraining, SFT, LoRA.

Everything here is plain torch on top of the ``transformers`` model classes; randomness comes only from
explicit seeds (``torch.Generator`` for data order and masking, the global seed for initialisation, which the
caller sets), so the same call on the same machine and thread count gives the same weights. Losses reported by
``evaluate`` are mean token cross-entropies in nats over a fixed set of held-out batches.

This module never downloads anything and never writes files; ``zoo.build`` decides what is saved where.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tokenizers import Tokenizer
from torch import nn

Objective = Literal["clm", "mlm"]
Batch = dict[str, torch.Tensor]
IGNORE = -100  # the label index every transformers loss ignores


@dataclass(frozen=True)
class MaskSpec:
    """BERT-style masking: ``prob`` of the non-special tokens become targets (80% mask, 10% random, 10% kept)."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    prob: float = 0.15


def token_stream(tok: Tokenizer, texts: Sequence[str], sep_id: int) -> torch.Tensor:
    """All ``texts`` encoded without special tokens and concatenated, each followed by ``sep_id``."""
    ids: list[int] = []
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(sep_id)
    return torch.tensor(ids, dtype=torch.long)


def apply_mask(ids: torch.Tensor, spec: MaskSpec, gen: torch.Generator) -> Batch:
    """Masked-LM inputs and labels for ``ids`` (batch x seq); at least one target per row."""
    special = torch.zeros_like(ids, dtype=torch.bool)
    for sid in spec.special_ids:
        special |= ids == sid
    target = (torch.rand(ids.shape, generator=gen) < spec.prob) & ~special
    target[:, 0] |= ~target.any(dim=1) & ~special[:, 0]
    roll = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(0, spec.vocab_size, ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[target & (roll < 0.8)] = spec.mask_id
    swap = target & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.where(target, ids, torch.full_like(ids, IGNORE))
    return {"input_ids": inputs, "labels": labels, "attention_mask": torch.ones_like(ids)}


def _lm_batch(ids: torch.Tensor, objective: Objective, mask: MaskSpec | None,
              gen: torch.Generator) -> Batch:
    if objective == "mlm":
        if mask is None:
            raise ValueError("the masked-LM objective needs a MaskSpec")
        return apply_mask(ids, mask, gen)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


class WindowSampler:
    """Random windows of a token stream, as pretraining batches (seeded; one batch per call)."""

    def __init__(self, stream: torch.Tensor, seq: int, batch: int, seed: int,
                 objective: Objective = "clm", mask: MaskSpec | None = None) -> None:
        if len(stream) <= seq:
            raise ValueError(f"a stream of {len(stream)} tokens is too short for windows of {seq}")
        self.stream, self.seq, self.batch = stream, seq, batch
        self.objective, self.mask = objective, mask
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self) -> Batch:
        starts = torch.randint(0, len(self.stream) - self.seq, (self.batch,), generator=self.gen)
        ids = torch.stack([self.stream[s: s + self.seq] for s in starts.tolist()])
        return _lm_batch(ids, self.objective, self.mask, self.gen)


def eval_batches(stream: torch.Tensor, seq: int, batch: int, windows: int,
                 objective: Objective = "clm", mask: MaskSpec | None = None, seed: int = 1234) -> list[Batch]:
    """Fixed evaluation batches: the first ``windows`` consecutive windows of ``stream`` (fewer if short)."""
    n = min(windows, len(stream) // seq)
    if n == 0:
        raise ValueError(f"a stream of {len(stream)} tokens has no window of {seq}")
    gen = torch.Generator().manual_seed(seed)
    ids = stream[: n * seq].view(n, seq)
    return [_lm_batch(ids[i: i + batch], objective, mask, gen) for i in range(0, n, batch)]


def encode_pairs(tok: Tokenizer, pairs: Sequence[tuple[str, str]], eos_id: int,
                 seq: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + eos) for every pair, truncated so that the pair fits in ``seq`` tokens."""
    out: list[tuple[list[int], list[int]]] = []
    prompts = tok.encode_batch([p for p, _ in pairs], add_special_tokens=False)
    answers = tok.encode_batch([a for _, a in pairs], add_special_tokens=False)
    for p, a in zip(prompts, answers, strict=True):
        ans = [*a.ids, eos_id][: max(seq // 2, seq - len(p.ids))]
        keep = seq - len(ans)  # a long prompt loses its start, never the answer cue at its end
        out.append((p.ids[len(p.ids) - keep:] if keep > 0 else [], ans))
    return out


def _sft_batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    attn = torch.zeros_like(ids)
    for row, (p, a) in enumerate(examples):
        n = len(p) + len(a)
        ids[row, :n] = torch.tensor(p + a)
        labels[row, len(p): n] = torch.tensor(a)
        attn[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attn}


class PairSampler:
    """Random supervised examples, right-padded; the loss is on the answer tokens only."""

    def __init__(self, examples: Sequence[tuple[list[int], list[int]]], batch: int, seed: int,
                 pad_id: int) -> None:
        if not examples:
            raise ValueError("no supervised examples")
        self.examples, self.batch, self.pad_id = list(examples), batch, pad_id
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self) -> Batch:
        picks = torch.randint(0, len(self.examples), (self.batch,), generator=self.gen).tolist()
        return _sft_batch([self.examples[i] for i in picks], self.pad_id)


def pair_eval_batches(examples: Sequence[tuple[list[int], list[int]]], batch: int, count: int,
                      pad_id: int) -> list[Batch]:
    """Fixed evaluation batches of the first ``count`` supervised examples."""
    chosen = list(examples[:count])
    return [_sft_batch(chosen[i: i + batch], pad_id) for i in range(0, len(chosen), batch)]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch], objective: Objective = "clm") -> float:
    """Mean cross-entropy (nats per target token) of ``model`` over ``batches``; weights are not changed."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = b["labels"]
        if objective == "clm":  # position t predicts token t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        total += float(nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"))
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def unigram_loss(train_stream: torch.Tensor, heldout_stream: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy of the held-out tokens under the add-one unigram distribution of the training tokens."""
    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[heldout_stream].mean())


def train(
    model: nn.Module,
    next_batch: Callable[[], Batch],
    *,
    steps: int,
    lr: float,
    warmup: int,
    params: Sequence[nn.Parameter] | None = None,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """AdamW with linear warmup then cosine decay to ``lr / 10``, gradient clipping; ``model`` ends in eval mode.

    ``params`` (default: every parameter that requires grad) are the ones updated. ``on_step(step, loss)`` is
    called after every step with the training loss of that step's batch.
    """
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay, foreach=False)
    warmup = max(1, min(warmup, steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.train()
    for step in range(steps):
        loss = model(**next_batch()).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, clip)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
    model.eval()


class LoRALinear(nn.Module):
    """``base(x) + scale * B A x`` with ``base`` frozen; ``B`` starts at zero, so training starts at ``base``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, gen: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5), generator=gen)
        base.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with the adapter folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.scale * (self.lora_b @ self.lora_a)
        self.base.weight.requires_grad_(True)
        return self.base


def attach_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float,
                seed: int) -> list[LoRALinear]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose attribute name is in ``targets`` with an adapter."""
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    found = [(parent, attr, child)
             for _, parent in model.named_modules()
             for attr, child in parent.named_children()
             if attr in targets and isinstance(child, nn.Linear)]
    if not found:
        raise ValueError(f"no linear layer named any of {list(targets)}")
    adapters = []
    for parent, attr, child in found:
        adapter = LoRALinear(child, rank, alpha, gen)
        setattr(parent, attr, adapter)
        adapters.append(adapter)
    return adapters


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter of ``model`` into its base weight and unwrap it; return how many were merged."""
    found = [(parent, attr, child)
             for _, parent in model.named_modules()
             for attr, child in parent.named_children()
             if isinstance(child, LoRALinear)]
    for parent, attr, child in found:
        setattr(parent, attr, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return len(found)


def int8_roundtrip(weight: torch.Tensor) -> torch.Tensor:
    """Per-row absmax int8 quantisation and back, in the input dtype (rows of zeros stay zero)."""
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return (torch.round(w / scale).clamp(-127, 127) * scale).to(weight.dtype)
