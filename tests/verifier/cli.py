"""Run the ``pawprint`` CLI in this process or as ``python -m tests.verifier.cli ARGS`` (``pawprint.cli.main``)."""

from __future__ import annotations

import sys

from pawprint.cli import main

if __name__ == "__main__":
    sys.exit(main())
