"""Progress bars for long work: on the main process only, and quiet in log files.

In a terminal the bar redraws a few times a second; when stderr is a file (a cluster job's log,
CI) every redraw would be one more line, so it redraws at most every 30 seconds there.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_FILE_INTERVAL_S = 30.0
POSITION: int | None = None  # the line of this process's bars, when runs train side by side


def progress(iterable: Any = None, *, main_process: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm`` shown only when ``main_process``; extra keyword arguments go to ``tqdm``."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("dynamic_ncols", True)
    if not interactive:  # tqdm's monitor thread would otherwise force a redraw every 10 s
        kwargs.setdefault("mininterval", LOG_FILE_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_FILE_INTERVAL_S)
    if POSITION is not None and interactive:  # side by side: each run's bar on a terminal line of its own
        kwargs["position"] = POSITION  # (in a log file the cursor moves would only add control characters)
    # A bar that erases itself when done (leave=False, e.g. an evaluation inside training) only
    # adds control characters to a log file, and would draw over a side-by-side run's bar.
    hidden = kwargs.get("leave") is False and (not interactive or POSITION is not None)
    disable = kwargs.pop("disable", False) or not main_process or hidden
    return tqdm(iterable, disable=disable, **kwargs)
