"""SR | bicubic | HR comparison panels (PNG files and W&B images)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.common.panels import side_by_side
from tasks.utils.images import to_hwc_uint8

__all__ = ["make_panel", "save_panel"]

_GAP = 4          # white pixels between panels


def _center_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def make_panel(sr, bicubic, hr, labels=("SR", "bicubic", "HR"), crop: int | None = 256) -> Image.Image:
    """Side by side: SR | bicubic | HR (same size), optionally the central ``crop`` pixels, each
    under its label (``\\n`` starts another line). Images: CxHxW (or 1xCxHxW) tensors in
    [0, 1], rounded as the metrics round them, or HxWx3 uint8 arrays."""
    tiles = [_center_crop(to_hwc_uint8(x), crop) for x in (sr, bicubic, hr)]
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"SR, bicubic and HR images differ in size: {[t.shape for t in tiles]}")
    return Image.fromarray(side_by_side(tiles, labels, gap=_GAP))


def save_panel(panel: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panel.save(path)
    return path
