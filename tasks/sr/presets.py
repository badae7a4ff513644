"""Named training presets for ``launch/sr.py``. Every command-line option overrides its preset.

- ``quick``: the main job on a CPU (the default without a GPU): SRResNet and SRResNet+BAM, trained
  side by side (a process each), 1,500 small updates each (batch 4 of 48x48 HR crops of T91, L1
  loss, Adam 2e-4 with a cosine decay; channels_last, float32) with a global bicubic residual
  (``--global-residual``: not SRGAN's network, and every table says so), scored on Set5 five
  times per run and on Set14 and B100 at the end. T91, Set5, Set14 and B100 ship with the
  repository (``datasets/sr``), so nothing is downloaded. Without the global residual, 1,500 updates leave SRResNet below bicubic
  with its colours off (it must first learn the identity colour map); with it the untrained
  network is bicubic and every update improves on it.
- ``quick-gpu``: the main job on a GPU (the default with one): the same network and data with the
  SRGAN recipe's batch (16 crops of 96x96), 10,000 updates per network, Set5 every 1,000.
- ``t91``: the SRGAN recipe on the shipped T91, shortened to a single-GPU run (30k updates,
  evaluation every 2k), SRGAN's network (no global residual).
- ``srgan``: the SRGAN recipe (Ledig et al.) the BAM paper used: 96x96 HR crops, batch 16, Adam
  lr 1e-4 betas (0.9, 0.999), 10^6 updates, MSE loss, on ``--train-dir`` or
  ``<data root>/coco/train2017`` (the BAM paper's training set).

``srgan`` and ``t91`` evaluate an exponential moving average of the weights (``--ema 0.999``, as
BasicSR's recipes); ``--ema none`` turns it off.
"""

from __future__ import annotations

from typing import Any

import torch

_SRGAN: dict[str, Any] = {
    "train_subdir": "coco/train2017",
    "scale": 4,
    "patch_size": 96,             # HR crop; LR crop = patch_size // scale
    "batch_size": 16,
    "lr": 1e-4,
    "betas": (0.9, 0.999),
    "lr_schedule": "constant",
    "loss": "mse",
    "max_steps": 1_000_000,
    "eval_every": 10_000,
    "log_every": 100,
    "num_blocks": 16,
    "channels": 64,
    "global_residual": False,     # SRGAN's SRResNet: the output comes from the network alone
    "attention_interval": 4,
    "sets": ["Set5", "Set14"],
    "curve_sets": "all",
    "protocol": "basicsr",
    "repeat": 1,                  # visits of each image per epoch
    "cache": False,               # decode on the fly (COCO is far too big to keep in memory)
    "ema": 0.999,                 # evaluate an average of the weights, as BasicSR's recipes do
}

_QUICK: dict[str, Any] = {
    **_SRGAN,
    "train_subdir": "sr/train/T91",
    "global_residual": True,
    "lr": 2e-4,               # with the global residual; 1e-3 suited the plain network's first steps
    "lr_schedule": "cosine",  # a constant rate leaves the weights noisy at the end
    "loss": "l1",
    "sets": ["Set5", "Set14", "B100"],
    "curve_sets": "first",    # the curve on Set5; the larger sets are scored at the end
    "cache": True,
    "repeat": 20,
    "ema": None,              # minutes-long runs: the live weights (the cosine decay settles them)
}

PRESETS: dict[str, dict[str, Any]] = {
    "srgan": _SRGAN,
    "t91": {**_SRGAN, "train_subdir": "sr/train/T91", "max_steps": 30_000, "eval_every": 2_000,
            # 91 images: decode once, and make an epoch ~100 batches rather than 5.
            "cache": True, "repeat": 20},
    "quick": {
        **_QUICK,
        "patch_size": 48,
        "batch_size": 4,
        "max_steps": 1_500,
        "eval_every": 300,        # five points per curve
        "log_every": 25,
        "num_workers": 0,         # cached crops are cheap; worker start-up would cost more
        # oneDNN's NHWC kernels. Float32, not bf16 autocast: bf16 was 15% faster here but cost
        # SRResNet+BAM 0.1-0.26 dB on Set5 and SRResNet 0.01-0.03 dB (a tilt of the comparison),
        # and the table would depend on whether the CPU has bf16 units.
        "channels_last": True,
        "side_by_side": True,     # the two runs at once, a core each: see tasks.common.side_by_side
    },
    "quick-gpu": {**_QUICK, "max_steps": 10_000, "eval_every": 1_000},
}


def default_preset() -> str:
    """The main job on whatever the machine has: ``quick-gpu`` with a GPU, ``quick`` without."""
    return "quick-gpu" if torch.cuda.is_available() else "quick"
