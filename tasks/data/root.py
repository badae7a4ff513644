"""The one data root that every command reads from."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout's own data folder: the small sets that ship with the repository and the README of
# every expected layout. Not a Python package (see tasks.data).
REPOSITORY_DATA = Path(__file__).resolve().parents[2] / "datasets"


def default_root() -> Path:
    """The checkout's ``datasets/``, recognised by its preparation script (in an installed copy the
    folder beside ``tasks`` may be another package's, e.g. Hugging Face's ``datasets``); else ``./data``."""
    return REPOSITORY_DATA if (REPOSITORY_DATA / "prepare_sr.py").is_file() else Path("data")


def data_root(cli_value: str | os.PathLike | None = None) -> Path:
    """``--data-root`` first, then ``$BAM_DATA_ROOT``, then :func:`default_root`."""
    value = cli_value if cli_value not in (None, "") else os.environ.get("BAM_DATA_ROOT") or default_root()
    return Path(value).expanduser()
