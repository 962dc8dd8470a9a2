"""Errors and value types shared by the attack modules (re-exported by ``zoo.attacks``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class AttackError(Exception):
    """The input cannot be attacked: unknown family or attack, missing or unrecognised files or tensors."""


class AttackNotApplicable(Exception):
    """The transform does not preserve the function of this family (``reason`` says why)."""

    def __init__(self, family: str, kind: str, reason: str) -> None:
        super().__init__(f"{kind} is not function-preserving for {family}: {reason}")
        self.family = family
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class HiddenTransform:
    """How an encoder's output hidden states move: ``attacked[..., j] == scale * original[..., perm[j]]``."""

    perm: tuple[int, ...]
    scale: float = 1.0

    def apply(self, original: torch.Tensor) -> torch.Tensor:
        """Map original hidden states into the attacked model's coordinates."""
        return self.scale * original[..., list(self.perm)]
