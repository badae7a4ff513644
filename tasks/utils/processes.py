"""Which process of a multi-process run this is, without creating a process group to ask, and how
many cores it may use."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """True on the main process: Accelerate's answer once it is set up, else the launcher's
    ``RANK`` (a single process, launched or not, is the main one)."""
    from accelerate import PartialState

    if PartialState._shared_state:  # already initialised (by an Accelerator, say)
        return PartialState().is_main_process
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")


def world_size() -> int:
    """Number of processes the launcher started (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cores() -> int:
    """CPU cores this process may run on (its affinity: a cluster job's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
