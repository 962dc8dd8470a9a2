"""The CLI's one progress style (``pawprint._common.ProgressReporter``) in its three modes, on fake streams:
an updating line on a terminal, plain lines in a log, nothing under ``-q``/``--json``."""

from __future__ import annotations

import io
import os

import pytest

from pawprint._common import (
    QUIET_LIBRARIES_ENV,
    ProgressReporter,
    elapsed_text,
    line_progress,
    progress_bar,
    progress_mode,
    quiet_libraries_env,
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal (of unknown width: ``fileno`` fails, so 79 columns are assumed)."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _drive(report: ProgressReporter, clock: Clock) -> None:
    """Two steps of work, the first with sub-step updates (a training loss) that keep ``done``."""
    report("model-a", 0, 2)
    for i in range(5):
        clock.now += 0.0078125  # 1/128 s: within the terminal's redraw interval
        report(f"model-a: step {i + 1}/5, loss {3 - i * 0.1:.2f}", 0, 2)
    clock.now += 1.5
    report("model-b", 1, 2)
    clock.now += 70.0
    report("done", 2, 2)


def test_modes_follow_the_stream_and_the_flags() -> None:
    assert progress_mode(True, Terminal()) == "tty"
    assert progress_mode(True, io.StringIO()) == "lines"
    assert progress_mode(False, Terminal()) == "quiet"
    assert progress_mode(False, io.StringIO()) == "quiet"


def test_elapsed_text() -> None:
    assert elapsed_text(4.24) == "4.2s"
    assert elapsed_text(187.9) == "3m07s"
    assert elapsed_text(3725) == "1h02m"


def test_terminal_one_line_redrawn_in_place() -> None:
    stream, clock = Terminal(), Clock()
    report = ProgressReporter("zoo", stream=stream, clock=clock)
    assert report.mode == "tty"
    _drive(report, clock)
    out = stream.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1  # one line, ended when done reached total
    frames = [f.removesuffix("\x1b[K") for f in out.rstrip("\n").split("\r")[1:]]
    # the start of each step is drawn; sub-step updates within 0.1 s of the last redraw are not
    assert frames == ["zoo: model-a  0/2  0.0s", "zoo: model-b  1/2  1.5s", "zoo: done  2/2  1m11s"]
    report.close()
    assert stream.getvalue() == out  # nothing left open


def test_terminal_redraws_sub_steps_at_most_ten_times_a_second() -> None:
    stream, clock = Terminal(), Clock()
    report = ProgressReporter(stream=stream, clock=clock)
    report("train", 0, 1)
    for i in range(20):
        clock.now += 0.0625  # a sixteenth of a second: a redraw every other update
        report(f"train: step {i}", 0, 1)
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) == 1 + 10
    assert frames[-1].startswith("train: step 19  0/1  1.2s")


def test_terminal_line_is_cut_to_the_width_and_ended_on_close() -> None:
    stream, clock = Terminal(), Clock()
    with progress_bar("invariants") as _:
        pass  # a reporter that was never called writes nothing
    report = ProgressReporter("invariants", stream=stream, clock=clock)
    report("x" * 200, 3, 10)
    line = stream.getvalue().removeprefix("\r").removesuffix("\x1b[K")
    assert len(line) == 79 and line.endswith("...  3/10  0.0s") and line.startswith("invariants: xxx")
    report.close()  # stopped before done reached total (an error): the line is ended for what follows
    assert stream.getvalue().endswith("\n")


def test_log_one_plain_line_per_step() -> None:
    stream, clock = io.StringIO(), Clock()
    report = ProgressReporter("zoo", stream=stream, clock=clock)
    assert report.mode == "lines"
    _drive(report, clock)
    report.close()
    out = stream.getvalue()
    assert "\r" not in out and "\x1b" not in out
    assert out.splitlines() == ["zoo: model-a  0/2  0.0s", "zoo: model-b  1/2  1.5s", "zoo: done  2/2  1m11s"]


def test_quiet_prints_nothing() -> None:
    for stream in (Terminal(), io.StringIO()):
        clock = Clock()
        report = ProgressReporter("zoo", enabled=False, stream=stream, clock=clock)
        assert report.mode == "quiet"
        _drive(report, clock)
        report.close()
        assert stream.getvalue() == ""
    assert line_progress(False) is None


def test_the_helpers_owner_commands_use_report_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """``progress_bar(desc, enabled)`` and ``line_progress(enabled)`` keep their signatures: the reporter on
    stderr (captured here, so not a terminal: plain lines), silent when not enabled."""
    with progress_bar("invariants", True) as progress:
        progress("layer 1", 0, 2)
        progress("layer 2", 1, 2)
        progress("done", 2, 2)
    with progress_bar("compare", False) as progress:
        progress("layer 1", 0, 2)
    report = line_progress(True)
    assert report is not None
    report("layer 1", 0, 1)
    report("done", 1, 1)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [line.rsplit("  ", 1)[0] for line in lines] == [
        "invariants: layer 1  0/2", "invariants: layer 2  1/2", "invariants: done  2/2", "layer 1  0/1", "done  1/1"]


def test_library_settings_do_not_override_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in QUIET_LIBRARIES_ENV:
        monkeypatch.setenv(name, "sentinel")  # restored after the test
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY")
    quiet_libraries_env()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
