"""pawprint: verifier package."""
