"""pawprint: pawprint package."""

__version__ = "0.1.0"  # the distribution's version (pyproject.toml; a test checks they agree)
