"""Notes and warnings to the user: on stderr (stdout is left to results a script may parse), from
the main process only."""

from __future__ import annotations

import sys

from tasks.utils.processes import is_main_process

_noted: set[str] = set()


def note(text: str) -> None:
    """Print ``note: text`` on stderr, from the main process only."""
    if is_main_process():
        print(f"note: {text}", file=sys.stderr, flush=True)


def note_once(text: str) -> None:
    """Like :func:`note`, the first time only (a paired run builds one trainer per module)."""
    if text not in _noted and is_main_process():
        _noted.add(text)
        note(text)


def warn(text: str) -> None:
    """Print ``warning: text`` on stderr, from the main process only."""
    if is_main_process():
        print(f"warning: {text}", file=sys.stderr, flush=True)
