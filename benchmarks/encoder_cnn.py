"""The ``cnn-v1`` encoder: HuRef's CNN over the terms' sketches, with weights trained on synthetic terms only
(``python -m benchmarks.train_encoder``). The verifier does not use it: ``random-v1`` (numpy only) was chosen
over it by measurement (``python -m benchmarks.encoder_eval``, ``docs/results/encoder.md``), so the CNN lives
here with its training and evaluation, and the verifier needs no torch. Its weights stay pinned in
``verifier/data`` (``verifier._pins``) so that the measurement can be rerun on the very file it was made with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocol.terms import InvariantSet
from verifier._encoder import (
    CNN_WEIGHTS,
    ENCODER_DIM,
    WEIGHTS_FORMAT,
    EncoderInputError,
    TermKey,
    TermSketch,
    _checked_output,
    _keys_label,
    _weights_path,
    terms_of,
)


# ------------------------------------------------------------------------------------------------------- CNN
def build_cnn(in_channels: int, k: int, channels: Sequence[int], dim: int = ENCODER_DIM) -> torch.nn.Sequential:
    """The CNN body ``g``: stride-2 4x4 convolutions with LeakyReLU halving ``k`` each time, then a linear map to
    ``dim``. The encoder is :func:`cnn_apply`."""
    import torch

    layers: list[torch.nn.Module] = []
    c, size = in_channels, k
    for ch in channels:
        if size % 2:
            raise ValueError(f"k={k} cannot be halved {len(channels)} times")
        layers += [torch.nn.Conv2d(c, ch, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.2)]
        c, size = ch, size // 2
    layers += [torch.nn.Flatten(), torch.nn.Linear(c * size * size, dim)]
    return torch.nn.Sequential(*layers)


def cnn_input(u: np.ndarray, k: int) -> np.ndarray:
    """Unit sketches -> the network's input scale (entries of unit mean square)."""
    return u * k


def cnn_apply(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The encoder from its body ``g``: ``sqrt(512) (g(x) - g(-x)) / ||g(x) - g(-x)||``. Odd by construction,
    and of the norm a N(0, I) vector concentrates at, so training shapes only the direction."""
    import torch

    r = net(x) - net(-x)
    return math.sqrt(r.shape[-1]) * torch.nn.functional.normalize(r, dim=-1)


class CnnEncoder:
    """The HuRef-style CNN on the ``#terms x k x k`` sketches, weights from a safetensors file."""

    def __init__(self, path: Path | str) -> None:
        import torch
        from safetensors import safe_open
        from safetensors.torch import load as load_tensors

        path = Path(path)
        data = path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("pawprint", "{}")
            meta = json.loads(raw)
        except Exception as e:  # safetensors raises its own types for malformed files
            raise ValueError(f"{path}: not an encoder weights file ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT or meta.get("arch") != "cnn-v1":
            raise ValueError(f"{path}: not a cnn-v1 encoder weights file ({WEIGHTS_FORMAT})")
        try:
            self.k = int(meta["k"])
            self.sketch_seed = int(meta["sketch_seed"])
            self.channels = tuple(int(c) for c in meta["channels"])
            self.term_keys: tuple[TermKey, ...] = tuple((int(pos), str(name)) for pos, name in meta["terms"])
            self.training: dict[str, Any] = dict(meta.get("training", {}))
            self.sketch = TermSketch(self.k, self.sketch_seed)
            net = build_cnn(len(self.term_keys), self.k, self.channels)
            net.load_state_dict(load_tensors(data), strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{path}: malformed cnn-v1 encoder weights ({e})") from e
        self._net = net.to(torch.float64).eval()
        for p in self._net.parameters():
            p.requires_grad_(False)

    @property
    def encoder_id(self) -> str:
        return (f"cnn-v1(sha256={self.sha256},dim={ENCODER_DIM},{self.sketch.label},"
                f"channels={','.join(map(str, self.channels))},terms={_keys_label(self.term_keys)})")

    def encode(self, inv: InvariantSet) -> np.ndarray:
        return self.encode_terms(terms_of(inv, self.term_keys), np.asarray(inv.present, dtype=bool))

    def encode_terms(self, terms: Sequence[np.ndarray], present: np.ndarray | Sequence[bool]) -> np.ndarray:
        if len(terms) != len(self.term_keys):
            raise EncoderInputError(f"expected {len(self.term_keys)} terms ({_keys_label(self.term_keys)}), "
                                    f"got {len(terms)}")
        return _checked_output(self.forward(self.sketch.reduce(terms, present)[None])[0])

    def forward(self, u: np.ndarray) -> np.ndarray:
        """A batch of unit sketches ``(B, #terms, k, k)`` -> float64 ``(B, 512)`` (no rounding)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(cnn_input(u, self.k), dtype=np.float64))
            y = cnn_apply(self._net, x)
        return np.asarray(y.numpy(), dtype=np.float64)




def load_cnn_encoder(path: Path | str | None = None) -> CnnEncoder:
    """The cnn-v1 encoder with the weights shipped in ``verifier/data`` (or those at ``path``)."""
    path = Path(path) if path is not None else _weights_path(CNN_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"the cnn-v1 encoder weights are not installed ({path})")
    return CnnEncoder(path)
