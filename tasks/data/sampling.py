"""Deterministic, resumable sampling.

A resumed run must see exactly the samples, in exactly the order, and with exactly the random
augmentations of an uninterrupted run. Two things make that true here:

* the visiting order of an epoch is a pure function of ``(seed, epoch)``;
* each visit carries its own ``sample_seed``, a pure function of ``(seed, epoch, index)``, which the
  data set uses for that sample's augmentation instead of a global or per-worker RNG.

:class:`EpochSeededSampler` therefore yields ``(index, sample_seed)`` tuples. A data set that wants
reproducible augmentation accepts such a key in ``__getitem__``::

    def __getitem__(self, key):
        index, generator = key_generator(key)      # generator is None for a plain int key
        crop = random_crop(self.images[index], generator=generator)

Plain integer keys (evaluation, or a user's own sampler) keep working: ``key_generator`` then
returns ``None`` and torch falls back to its global RNG (``split_key`` gives the bare seed instead).
"""

from __future__ import annotations

from typing import Iterator

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSeededSampler", "SeededDataset", "sample_seed", "split_key", "key_generator"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed bijection on uint64 (vectorised)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def _sample_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    # Chain the three inputs through the mixer so nearby (seed, epoch, index) give unrelated seeds.
    with np.errstate(over="ignore"):
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
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """The indices of the current epoch, in visiting order."""
        if not self.shuffle:
            return np.arange(self.length, dtype=np.int64)
        generator = torch.Generator()
        generator.manual_seed(int(_sample_seeds(self.seed, self.epoch, np.array([-1]))[0]))
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
    if seed is None:
        return index, None
    generator = torch.Generator()
    generator.manual_seed(seed)
    return index, generator


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
