"""Deterministic, resumable sampling: a resumed run sees the samples, order and augmentations of
an uninterrupted one.

:class:`EpochSeededSampler` yields ``(index, sample_seed)``: the order is a pure function of
``(seed, epoch)``, each ``sample_seed`` one of ``(seed, epoch, index)``. A data set draws a sample's
augmentation from that seed (``index, generator = key_generator(key)``) instead of a global or
per-worker RNG; plain integer keys still work (``generator`` is then None: torch's global RNG).
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed bijection on uint64 (vectorised)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around, as SplitMix64 wants
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _sample_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    # Chain the three inputs through the mixer so nearby (seed, epoch, index) give unrelated seeds.
    state = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    state = _splitmix64(state ^ np.uint64(epoch & 0xFFFFFFFFFFFFFFFF))
    mixed = _splitmix64(state ^ indices.astype(np.uint64))
    # 63 bits: fits a signed int64, valid for torch.Generator.manual_seed and numpy alike.
    return (mixed >> np.uint64(1)).astype(np.int64)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` (what the sampler yields with it)."""
    return int(_sample_seeds(seed, epoch, np.array([index]))[0])


class EpochSeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for every index of a data set of ``length`` items.

    The order (shuffled or not) depends only on ``(seed, epoch)``; call :meth:`set_epoch` before each
    epoch (the trainer does). Every process of a multi-process run builds the same sampler with the
    same seed; Accelerate then gives each process its own share of the batches.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True) -> None:
        if int(length) <= 0:
            raise ValueError(f"EpochSeededSampler needs a non-empty data set, got length={length}")
        self.length, self.seed, self.shuffle, self.epoch = int(length), int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """The indices of the current epoch, in visiting order."""
        if not self.shuffle:
            return np.arange(self.length, dtype=np.int64)
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.length, generator=generator).numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.order()
        seeds = _sample_seeds(self.seed, self.epoch, indices)
        return iter(zip(indices.tolist(), seeds.tolist()))

    def __len__(self) -> int:
        return self.length


def split_key(key) -> tuple[int, int | None]:
    """``(index, sample_seed)`` from a data set key: a plain int, or a sampler's tuple."""
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise ValueError(f"expected a data set key (index, sample_seed), got {key!r}")
        return int(key[0]), int(key[1])
    return int(key), None


def key_generator(key) -> tuple[int, torch.Generator | None]:
    """``(index, generator)``: a torch.Generator seeded from the key, or None for a plain index."""
    index, seed = split_key(key)
    return index, None if seed is None else torch.Generator().manual_seed(seed)


class SeededDataset(Dataset):
    """Wrap a data set whose augmentation draws from the *global* RNGs (torchvision transforms,
    ``random``, ``np.random``): each ``(index, sample_seed)`` key runs ``dataset[index]`` with
    torch, NumPy and Python's RNGs seeded by ``sample_seed`` (and restored afterwards), so every
    sample is augmented the same way in any worker and after a resume. Plain keys pass through.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = split_key(key)
        if seed is None:
            return self.dataset[index]
        numpy_state, python_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)
                random.seed(seed)
                return self.dataset[index]
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
