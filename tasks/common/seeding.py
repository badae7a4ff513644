"""Seeding of every RNG a training run touches."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int, process_index: int = 0) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    ``process_index`` is added so that the processes of a multi-process run draw different dropout
    masks; model initialisation should happen with ``process_index=0`` (DDP broadcasts rank 0's
    weights anyway).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    value = seed + int(process_index)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)  # also seeds every CUDA device
