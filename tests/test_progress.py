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
