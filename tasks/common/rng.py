"""The random streams of a training run, kept apart so that a resumed run repeats an uninterrupted one.

* the training stream (dropout, ...): seeded once, saved in every checkpoint by Accelerate;
* the data-loading stream (:class:`DataRNG`): global-RNG augmentation in the main process draws
  from it, batch after batch, and it is saved per process beside the checkpoint;
* the worker seeds of a loader (:func:`seed_loader_generator`): a function of (seed, epoch);
* evaluation runs under :func:`rng_fork` and consumes nothing.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import load

from tasks.data.sampling import sample_seed


def _global_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_global_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


class DataRNG:
    """The global-RNG stream (torch, NumPy, Python) that data loading in the main process draws
    augmentation from, kept apart from the training stream and saved with each checkpoint, so
    such a run resumes exactly with ``num_workers=0`` (with workers, per-sample seeds do that)."""

    def __init__(self, seed: int, process_index: int) -> None:
        self.seed, self.process_index = seed, process_index
        self.reseed(0)

    def reseed(self, epoch: int) -> None:
        """Start the stream of ``epoch`` afresh (so epoch boundaries resume trivially)."""
        # Index -3: a stream of its own (EpochSeededSampler's order uses -1 and the loader's
        # worker-seed generator -2; with -1 this stream would replay the shuffling draws).
        value = int(sample_seed(self.seed + 7919 * self.process_index, epoch, -3))
        self.state = (torch.Generator().manual_seed(value).get_state(),
                      np.random.RandomState(value % 2**32).get_state(), random.Random(value).getstate())
        self.before = None

    @contextlib.contextmanager
    def active(self):
        # Accelerate's loader reads one batch ahead, so the state to resume from is the one before
        # the latest fetch (the look-ahead batch is fetched again after a resume).
        self.before, saved = self.state, _global_state()
        _set_global_state(self.state)
        try:
            yield
        finally:
            self.state = _global_state()
            _set_global_state(saved)

    def save(self, path: Path) -> None:
        torch.save(self.before or self.state, path)

    def load(self, path: Path) -> None:
        self.state = load(path)  # as Accelerate loads its RNG files: weights_only, NumPy allowed


def seed_loader_generator(loader: Any, seed: int, epoch: int) -> None:
    """Give the loader its own generator for worker seeds, so creating an iterator draws nothing
    from the global RNG and worker seeds depend on (seed, epoch) only."""
    generator = torch.Generator().manual_seed(int(sample_seed(seed, epoch, -2)))
    getattr(loader, "base_dataloader", loader).generator = generator


def rng_fork():
    """Run a block without consuming the (CPU and current CUDA device) training RNG."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader and every sampler it wraps which epoch is next."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    seen, stack = set(), [getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
        stack += [getattr(obj, "batch_sampler", None), getattr(obj, "sampler", None)]
