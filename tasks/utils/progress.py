"""Progress bars for long work: on the main process only, and quiet in log files.

In a terminal the bar redraws a few times a second; when stderr is a file (a cluster job's log,
CI) every redraw would be one more line, so it redraws at most every 30 seconds there.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress"]

LOG_FILE_INTERVAL_S = 30.0


def progress(iterable: Any = None, *, main_process: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm`` shown only when ``main_process``; extra keyword arguments go to ``tqdm``."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("dynamic_ncols", True)
    if not interactive:  # tqdm's monitor thread would otherwise force a redraw every 10 s
        kwargs.setdefault("mininterval", LOG_FILE_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_FILE_INTERVAL_S)
    # A bar that erases itself when done (leave=False, e.g. an evaluation inside training) only
    # adds control characters to a log file.
    transient_in_log = not interactive and kwargs.get("leave") is False
    disable = kwargs.pop("disable", False) or not main_process or transient_in_log
    return tqdm(iterable, disable=disable, **kwargs)
