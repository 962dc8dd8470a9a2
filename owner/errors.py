"""The owner agent's error hierarchy. Every failure the CLI reports is one of these, with a readable message
that names the file and the problem."""

from __future__ import annotations


class OwnerError(Exception):
    """Base class of every error the owner agent raises on bad input."""


class CheckpointError(OwnerError):
    """A checkpoint file is missing, unreadable, corrupt, or inconsistent with its config."""


class UnsupportedModelError(OwnerError):
    """The architecture family is not one the agent has an adapter for."""


class TokenizerError(OwnerError):
    """Tokenizer files are missing or unreadable, or lack the probe tokens."""


class InvariantsFileError(OwnerError):
    """An invariants file is unreadable or malformed."""
