"""Side-by-side SR panels (PNG files and W&B images): SR | bicubic | HR, or bicubic | models | HR."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from tasks.common.panels import side_by_side
from tasks.utils.files import write_png_atomic
from tasks.utils.images import to_hwc_uint8

__all__ = ["make_panel", "save_panel"]

_GAP = 4          # white pixels between panels


def _center_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def make_panel(images: Sequence, labels: Sequence[str], crop: int | None = 256) -> Image.Image:
    """The images side by side (same size), optionally their central ``crop`` pixels, each under
    its label (``\\n`` starts another line): SR | bicubic | HR during training, bicubic | SRResNet |
    SRResNet+BAM | HR after a paired run. Images: CxHxW (or 1xCxHxW) tensors in [0, 1], rounded as
    the metrics round them, or HxWx3 uint8 arrays."""
    tiles = [_center_crop(to_hwc_uint8(x), crop) for x in images]
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"panel images differ in size: {[t.shape for t in tiles]}")
    return Image.fromarray(side_by_side(tiles, labels, gap=_GAP))


def save_panel(panel: Image.Image, path: str | os.PathLike) -> Path:
    return write_png_atomic(path, panel)
