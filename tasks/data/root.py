"""The one data root that every command reads from."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout's own data folder: the small sets that ship with the repository and the README of
# every expected layout. Not a Python package (see tasks.data).
REPOSITORY_DATA = Path(__file__).resolve().parents[2] / "datasets"


def data_root(cli_value: str | os.PathLike | None = None) -> Path:
    """``--data-root`` first, then ``$BAM_DATA_ROOT``, then the checkout's ``datasets/``,
    recognised by its preparation script (in an installed copy the folder beside ``tasks`` may be
    another package's, e.g. Hugging Face's ``datasets``), else ``./data``."""
    value = cli_value or os.environ.get("BAM_DATA_ROOT")
    if not value:
        value = REPOSITORY_DATA if (REPOSITORY_DATA / "prepare_sr.py").is_file() else "data"
    return Path(value).expanduser()
