"""pawprint: pawprint package."""
