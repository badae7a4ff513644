"""The one data root that every command reads from."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "BAM_DATA_ROOT"
DEFAULT = "./data"


def data_root(cli_value: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: ``--data-root`` first, then ``$BAM_DATA_ROOT``, then ``./data``."""
    value = cli_value if cli_value not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT
    return Path(value).expanduser()
