"""Gemma: LLaMA layout, but RMSNorm stores its weight as ``g - 1`` (applied as ``1 + w``) and the embedding
is multiplied by ``sqrt(d)`` before the first layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch

from owner._adapters.llama import LlamaAdapter


class GemmaAdapter(LlamaAdapter):
    model_types: ClassVar[tuple[str, ...]] = ("gemma",)

    def norm_weight(self, stored: torch.Tensor) -> torch.Tensor:
        return 1.0 + stored

    def embedding_rows(self, ids: Sequence[int]) -> torch.Tensor:
        return super().embedding_rows(ids) * math.sqrt(self.info.d_model)
