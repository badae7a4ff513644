"""Named training presets for ``launch/sr.py``. Every command-line option overrides its preset.

- ``srgan``: the SRGAN recipe (Ledig et al.): 96x96 HR crops, batch 16, Adam lr 1e-4
  betas (0.9, 0.999), 10^6 updates, MSE loss. Trains on ``--train-dir`` or
  ``<data root>/coco/train2017`` (the BAM paper's training set).
- ``t91``: the same recipe on the 91-image set ``<data root>/sr/train/T91``, shortened to a
  single-GPU run (30k updates, evaluation every 2k).
- ``quick``: the main job on a CPU: SRResNet and SRResNet+BAM, each 1,500 small updates (batch 4
  of 48x48 HR crops of T91, L1 loss, Adam 2e-4 with a cosine decay) with a global bicubic residual
  (``--global-residual``: not SRGAN's network, and every table says so), scored on Set5 five times
  per run and on Set14 at the end. T91, Set5 and Set14 ship with the repository (``datasets/sr``), so nothing is
  downloaded. Without the global residual, 1,500 updates leave SRResNet below bicubic with its
  colours off (it must first learn the identity colour map); with it the untrained network is
  bicubic and every update improves on it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "get_preset", "list_presets"]

_SRGAN: dict[str, Any] = {
    "train_dir": None,            # None -> <data root>/coco/train2017
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
    "attention": ["none"],
    "attention_interval": 4,
    "sets": ["Set5", "Set14"],
    "curve_sets": "all",
    "protocol": "basicsr",
    "repeat": 1,                  # visits of each image per epoch
    "cache": False,               # decode on the fly (COCO is far too big to keep in memory)
}

PRESETS: dict[str, dict[str, Any]] = {
    "srgan": _SRGAN,
    "t91": {**_SRGAN, "train_subdir": "sr/train/T91", "max_steps": 30_000, "eval_every": 2_000,
            # 91 images: decode once, and make an epoch ~100 batches rather than 5.
            "cache": True, "repeat": 20},
    "quick": {
        **_SRGAN,
        "train_subdir": "sr/train/T91",
        "patch_size": 48,
        "batch_size": 4,
        "global_residual": True,
        "lr": 2e-4,               # with the global residual; 1e-3 suited the plain network's first steps
        "lr_schedule": "cosine",  # a constant rate leaves the weights noisy at the end
        "loss": "l1",
        "max_steps": 1_500,
        "eval_every": 300,        # five points per curve...
        "curve_sets": "first",    # ...on Set5; Set14 (4x its pixels) is scored at the end
        "log_every": 25,
        "attention": ["none", "bam"],  # the main job: baseline and BAM, then their comparison
        "cache": True,
        "repeat": 20,
        "num_workers": 0,         # cached crops are cheap; worker start-up would cost more
    },
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}")
    preset = dict(PRESETS[name])
    preset["sets"] = list(preset["sets"])
    preset["attention"] = list(preset["attention"])
    return preset
