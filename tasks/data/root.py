"""The one data root that every command reads from."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "BAM_DATA_ROOT"
# The repository's own data folder: the small sets that ship with it (Set5, Set14, T91) and the
# README of every expected layout. Not a Python package (see tasks.data).
DEFAULT = Path(__file__).resolve().parents[2] / "datasets"


def data_root(cli_value: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: ``--data-root`` first, then ``$BAM_DATA_ROOT``, then the
    repository's ``datasets/`` folder."""
    value = cli_value if cli_value not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT
    return Path(value).expanduser()
