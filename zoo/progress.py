"""How the zoo reports progress, and keeps third-party libraries from printing their own.

``Progress`` is the callback the owner's agent takes too (``owner._agent.Progress``), defined here because the
zoo never imports the CLI: ``progress(label, done, total)`` says that ``done`` of ``total`` units are complete
and that ``label`` is being worked on now. The CLI passes its one reporter (``pawprint._common``), which draws
one updating line on a terminal, a plain line per step in a log, and nothing under ``--json`` or ``-q``.

``quiet_libraries()`` silences what transformers and the Hugging Face hub print by themselves while the zoo
loads, trains, attacks and exports models (their "Loading weights" bars, advisory warnings); it changes no
result, and restores the libraries' settings afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

Progress = Callable[[str, int, int], None]


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block: transformers logs errors only and draws no progress bar, nor does huggingface_hub;
    their previous settings are restored afterwards (also on an error)."""
    import transformers
    from huggingface_hub import utils as hub

    level = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    hub_bars = not hub.are_progress_bars_disabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # also turns huggingface_hub's bars off
    hub.disable_progress_bars()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=1 refuses re-enabling with a warning
            warnings.simplefilter("ignore")
            if bars:
                transformers.utils.logging.enable_progress_bar()
            if hub_bars:
                hub.enable_progress_bars()
            elif not hub.are_progress_bars_disabled():  # enable_progress_bar above turned them back on
                hub.disable_progress_bars()


__all__ = ["Progress", "quiet_libraries"]
