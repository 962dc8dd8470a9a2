"""pawprint: protocol package."""
