"""Notes to the user: printed once per process, and by the main process only."""

from __future__ import annotations

from tasks.utils.processes import is_main_process

__all__ = ["note_once"]

_noted: set[str] = set()


def note_once(text: str) -> None:
    """Print ``note: text`` the first time only (a paired run builds one trainer per module)."""
    if text not in _noted and is_main_process():
        _noted.add(text)
        print(f"note: {text}", flush=True)
