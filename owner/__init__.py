"""pawprint: owner package."""
