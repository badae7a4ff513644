"""Per-sample evaluation results (``per_sample.npz``): what a paired comparison of two runs needs.

An evaluation may return ``"per_sample": {name: array}`` (per-image PSNR, correctness, IoU
counts...) beside its metrics; the trainer saves it in each checkpoint and beside ``summary.json``.
Arrays only, loaded with ``allow_pickle=False``, so reading somebody else's file runs no code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tasks.utils.files import atomic_path

PER_SAMPLE_FILE = "per_sample.npz"
PER_SAMPLE_KEY = "per_sample"


def _array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f"per-sample {name!r} must be numbers or strings, got objects")
    return array


def save_per_sample(folder: str | os.PathLike, values: Mapping[str, Any]) -> Path:
    """Write ``{name: array}`` to ``folder/per_sample.npz`` atomically, compressed."""
    path = Path(folder) / PER_SAMPLE_FILE
    arrays = {str(name): _array(str(name), value) for name, value in values.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: numpy would append .npz to a name
            np.savez_compressed(handle, **arrays)
    return path


def load_per_sample(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_per_sample` (a folder: its ``per_sample.npz``)."""
    path = Path(path)
    if path.is_dir():
        path = path / PER_SAMPLE_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no per-sample results at {path}") from None
    except (OSError, ValueError) as error:  # truncated, not an npz, or object arrays
        raise ValueError(f"{path} is not a readable per-sample file ({error})") from None
