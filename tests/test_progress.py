import io
import sys

from tasks.utils.progress import LOG_FILE_INTERVAL_S, progress


def test_hidden_on_other_processes():
    assert progress(range(3), main_process=False).disable


def test_log_files_get_few_redraws(monkeypatch):
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(range(1000), file=log)
    assert not bar.disable and bar.mininterval == LOG_FILE_INTERVAL_S
    for _ in bar:
        pass
    assert log.getvalue().count("\r") <= 3  # first draw, maybe one redraw, the final one


def test_transient_bars_stay_out_of_log_files(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress(range(3), leave=False).disable
    assert not progress(range(3)).disable


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_runs_side_by_side_get_a_terminal_line_each_and_plain_lines_in_a_log(monkeypatch):
    from tasks.utils import progress as module

    monkeypatch.setattr(module, "POSITION", 1)  # the second run of a side-by-side pair
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for _ in progress(range(3), file=terminal):
        pass
    assert "\n" in terminal.getvalue() and "\x1b[A" in terminal.getvalue()  # drawn one line down, and back
    assert progress(range(3), leave=False).disable  # no transient bar drawn over it
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress(range(3), file=log):
        pass
    assert "\x1b[A" not in log.getvalue()  # no cursor moves in a log file
