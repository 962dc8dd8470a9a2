"""Run a model directory and check that an attack kept its function.

``run_model`` is the reference forward pass (transformers, fp32, eval); ``same_function`` compares the source
and the attacked model on the same token *strings*: input ids go through the attack's ``vocab_map``, output
logits are read back on the mapped columns, and encoder hidden states through its ``hidden_transform``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from zoo.attacks import AttackResult
from zoo.progress import quiet_libraries

# Families whose model is an encoder without a head: run_model returns the last hidden state.
ENCODER_FAMILIES: frozenset[str] = frozenset({"bert", "mpnet"})
BATCH, LENGTH = 2, 12


def _family(model_dir: Path) -> str:
    return str(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["model_type"])


def run_model(model_dir: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits (causal LMs) or the last hidden state (encoders) of ``model_dir`` on ``input_ids`` (batch, seq)."""
    import transformers

    encoder = _family(model_dir) in ENCODER_FAMILIES
    cls = transformers.AutoModel if encoder else transformers.AutoModelForCausalLM
    with quiet_libraries():  # no "Loading weights" bar of transformers' own
        model = cls.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=input_ids)
    return (out.last_hidden_state if encoder else out.logits).detach()


def probe_ids(model_dir: Path, seed: int) -> torch.Tensor:
    """Random token ids for a functional check, drawn from ``seed`` over the model's vocabulary."""
    vocab = int(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["vocab_size"])
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (BATCH, LENGTH), generator=gen)


def same_function(orig_dir: Path, attacked_dir: Path, result: AttackResult, seed: int = 0) -> float:
    """``max|a - b| / max|a|`` between the source's outputs ``a`` and the attacked model's ``b`` mapped back."""
    ids = probe_ids(orig_dir, seed)
    a = run_model(orig_dir, ids)
    vocab_map = result.vocab_map
    if vocab_map is not None:
        table = torch.tensor(vocab_map)
        b = run_model(attacked_dir, table[ids])
        if _family(orig_dir) not in ENCODER_FAMILIES:
            b = b[..., table]  # column vocab_map[i] of the attacked logits is the source's token i
    else:
        b = run_model(attacked_dir, ids)
    if result.hidden_transform is not None:
        a = result.hidden_transform.apply(a)
    return float((a - b).abs().max() / a.abs().max())
