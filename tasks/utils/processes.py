"""Which process of a multi-process run this is, without creating a process group to ask, how
many cores it may use, and how its C library hands out memory."""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameters (glibc's malloc.h) and the values keep_freed_memory gives them.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST_HEAP_BLOCK = 32 * 2**20  # the highest mmap threshold glibc accepts on a 64-bit system
_NEVER_TRIM = 2**31 - 1  # mallopt takes a C int


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


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse the memory of freed tensors instead of handing it back to the kernel.

    On a CPU every activation is a malloc'd block. By default glibc maps a block of 128 KiB or more
    (a threshold it raises to the largest such block freed so far) straight from the kernel and
    unmaps it when freed, and trims its heap once twice that threshold is free at its top; so the
    next step's tensors arrive as fresh pages that the kernel must fault in and zero, 4 KiB at a
    time: ~7,000 faults in one BAM forward + backward on a ResNet50 stage-1 map (8 x 256 x 32 x 32),
    about half of its time. Blocks up to 32 MiB served from a heap that is never trimmed fault once
    per process. The price: the process keeps the largest heap it has used. Returns False, changing
    nothing, where the C library is not glibc (macOS, Windows, musl) or refuses the values (a 32-bit
    system).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    # In this order: setting either one stops glibc's own adjustment of both.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST_HEAP_BLOCK)
                and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
