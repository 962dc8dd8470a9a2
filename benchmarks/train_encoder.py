"""Train the cnn-v1 encoder on synthetic terms only (no model weights), HuRef-style.

    python -m benchmarks.train_encoder --out verifier/data/encoder-cnn-v1.safetensors

About 10-13 minutes on 2 shared CPU cores (one draws data, one trains). Deterministic given the arguments:
numpy and torch generators seeded, torch thread count fixed, data drawn in a fixed order, and the weights file
written with canonical metadata, so a rerun gives the same bytes (checked: two runs, same SHA-256).

Each step draws ``--batch`` synthetic "base models" (``verifier._encoder.synthetic_model``: products of Gaussian
matrices on Gaussian probe rows, with random probe count and width) and for each a related pair: two
derivatives of the base (``perturb_model`` at independent random levels, one of them often 0, i.e. the base
itself), like two fine-tunes of one pretrained model. Everything else in the batch is unrelated (fresh
draws). Inputs are the exact sketches of the standardised terms (``synthetic_sketch``), the same reduction the
encoder applies to real terms. The loss:

- similarity: squared difference between the output cosine and the input cosine (the mean over terms of
  the unit sketches' inner products, which approximates ICS), averaged separately over related and unrelated
  pairs so the few related pairs weigh as much as the many unrelated ones;
- contrastive: InfoNCE over the batch for pairs whose input cosine is at least 0.5;
- adversarial: a small discriminator tells outputs from N(0, I) samples; the encoder is trained to fool it
  (HuRef's way of making the output look Gaussian), with a light moment penalty (per-coordinate mean 0,
  variance 1: isotropy). The output norm is fixed by construction (``cnn_apply``).

Writes safetensors weights (float32) with the architecture and training settings in the header, and prints
the file's SHA-256 (it is part of the encoder id).
"""

from __future__ import annotations

import os

# One BLAS thread for the data thread's numpy; torch gets --threads. Set before numpy loads its BLAS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import json
import platform
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.encoder_cnn import build_cnn, cnn_apply, cnn_input
from verifier._encoder import (
    DEFAULT_TERM_KEYS,
    ENCODER_DIM,
    SKETCH_K,
    SKETCH_SEED,
    WEIGHTS_FORMAT,
    TermSketch,
    perturb_model,
    synthetic_model,
    synthetic_sketch,
)

SHAPES: tuple[tuple[int, int], ...] = ((256, 16), (256, 32), (256, 64), (256, 128), (512, 32), (512, 64))
"""(probe tokens n, width d) of the synthetic models: terms from rank-limited (d << n) to nearly full."""


def draw_batch(rng: np.random.Generator, sketch: TermSketch, batch: int, max_level: float) -> np.ndarray:
    """``(2 batch, #terms, k, k)`` unit sketches: rows ``2i`` and ``2i+1`` are derivatives of one base."""
    out = []
    for _ in range(batch):
        n, d = SHAPES[int(rng.integers(len(SHAPES)))]
        base = synthetic_model(rng, n, d)
        for _side in range(2):
            level = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.0, max_level))
            m = perturb_model(base, rng, level) if level > 0 else base
            out.append(synthetic_sketch(m, sketch))
    return np.stack(out)


def batches(seed: int, sketch: TermSketch, batch: int, max_level: float, steps: int) -> Iterator[np.ndarray]:
    """The training batches in order, drawn by one background thread (numpy releases the GIL in its kernels) so
    drawing overlaps training; the order, hence the result, does not depend on timing."""
    q: queue.Queue[np.ndarray] = queue.Queue(maxsize=3)

    def produce() -> None:
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            q.put(draw_batch(rng, sketch, batch, max_level))

    threading.Thread(target=produce, name="encoder-data", daemon=True).start()
    for _ in range(steps):
        yield q.get()


def input_cosines(u: torch.Tensor) -> torch.Tensor:
    """Mean over terms of the unit sketches' inner products, for every pair of the batch."""
    flat = u.flatten(2)  # (B, T, k*k)
    return torch.einsum("itk,jtk->ij", flat, flat) / flat.shape[1]


def discriminator(dim: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 256), torch.nn.LeakyReLU(0.2), torch.nn.Linear(256, 256), torch.nn.LeakyReLU(0.2),
        torch.nn.Linear(256, 1),
    )


def train(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sketch = TermSketch(args.k, args.sketch_seed)
    channels = tuple(int(c) for c in args.channels.split(","))
    net = build_cnn(len(DEFAULT_TERM_KEYS), args.k, channels)
    disc = discriminator(ENCODER_DIM)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr * 0.05)
    bce = torch.nn.BCEWithLogitsLoss()
    stats: dict[str, float] = {}
    bar = tqdm(batches(args.seed, sketch, args.batch, args.max_level, args.steps), total=args.steps,
               desc="train cnn-v1", unit="step")
    for step, drawn in enumerate(bar):
        u = torch.from_numpy(drawn).to(torch.float32)
        x = torch.from_numpy(cnn_input(u.numpy(), args.k)).to(torch.float32)
        c_in = input_cosines(u)
        z = cnn_apply(net, x)
        zn = torch.nn.functional.normalize(z, dim=1)
        c_out = zn @ zn.T
        b2 = z.shape[0]
        off = ~torch.eye(b2, dtype=torch.bool)
        idx = torch.arange(b2)
        related = (idx[:, None] // 2 == idx[None, :] // 2) & off
        err = (c_out - c_in) ** 2
        loss_sim = err[related].mean() + err[off & ~related].mean()
        # InfoNCE: each sample against every other one; its partner is the target where they are related enough.
        logits = (c_out / args.tau).masked_fill(~off, float("-inf"))
        partner = idx ^ 1
        strong = c_in[idx, partner] >= 0.5
        loss_nce = (
            torch.nn.functional.cross_entropy(logits[strong], partner[strong]) if bool(strong.any()) else z.sum() * 0
        )
        # Adversarial: the discriminator first, on detached outputs.
        real = torch.randn(b2, ENCODER_DIM)
        d_loss = bce(disc(real), torch.ones(b2, 1)) + bce(disc(z.detach()), torch.zeros(b2, 1))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        loss_adv = bce(disc(z), torch.ones(b2, 1))
        loss_mom = (z.mean(0) ** 2).mean() + ((z.var(0) - 1) ** 2).mean()
        loss = loss_sim + args.w_nce * loss_nce + args.w_adv * loss_adv + args.w_mom * loss_mom
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        stats = {"sim": float(loss_sim), "nce": float(loss_nce), "adv": float(loss_adv), "disc": float(d_loss),
                 "mom": float(loss_mom)}
        if step % 10 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
    state = {name: t.detach().to(torch.float32).contiguous() for name, t in net.state_dict().items()}
    return state, stats


def weights_bytes(state: dict[str, torch.Tensor], args: argparse.Namespace) -> bytes:
    """The weights file: safetensors with one metadata entry, canonical JSON (sorted keys), so that the same
    training gives the same bytes (safetensors writes several metadata entries in no fixed order)."""
    from safetensors.torch import save

    training = {k: v for k, v in vars(args).items() if k != "out"}
    meta = {
        "format": WEIGHTS_FORMAT,
        "arch": "cnn-v1",
        "k": args.k,
        "sketch_seed": args.sketch_seed,
        "channels": [int(c) for c in args.channels.split(",")],
        "terms": [list(t) for t in DEFAULT_TERM_KEYS],
        "training": {**training, "torch": torch.__version__, "numpy": np.__version__},
    }
    return bytes(save(state, metadata={"pawprint": json.dumps(meta, sort_keys=True, separators=(",", ":"))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (data are drawn on one more)")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch", type=int, default=48, help="related pairs per step (2x samples)")
    ap.add_argument("--k", type=int, default=SKETCH_K)
    ap.add_argument("--sketch-seed", type=int, default=SKETCH_SEED)
    ap.add_argument("--channels", default="16,32,64,64")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--max-level", type=float, default=1.5, help="largest perturbation of a derivative")
    ap.add_argument("--w-nce", type=float, default=0.1)
    ap.add_argument("--w-adv", type=float, default=0.05)
    ap.add_argument("--w-mom", type=float, default=0.1)
    args = ap.parse_args()
    t0 = time.time()
    state, stats = train(args)
    seconds = time.time() - t0
    data = weights_bytes(state, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"final losses: {json.dumps({k: round(v, 4) for k, v in stats.items()})}")
    print(f"trained in {seconds:.0f} s ({platform.machine()}, torch {torch.__version__}, {args.threads} threads)")
    print(f"wrote {args.out} ({len(data)} bytes), sha256={hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
