"""SR | bicubic | HR comparison panels (PNG files and W&B images)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tasks.common.panels import side_by_side

__all__ = ["to_uint8", "make_panel", "save_panel"]

_GAP = 4          # white pixels between panels


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """CxHxW / 1xCxHxW float tensor in [0, 1] (clamped, rounded) or HxWx3 uint8 -> HxWx3 uint8."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        return image
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    pixels = image.detach().float().clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).cpu().numpy()


def _center_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def make_panel(sr, bicubic, hr, labels=("SR", "bicubic", "HR"), crop: int | None = 256) -> Image.Image:
    """Side by side: SR | bicubic | HR (same size), optionally the central ``crop`` pixels, each
    under its label (``\\n`` starts another line)."""
    tiles = [_center_crop(to_uint8(x), crop) for x in (sr, bicubic, hr)]
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"SR, bicubic and HR images differ in size: {[t.shape for t in tiles]}")
    return Image.fromarray(side_by_side(tiles, labels, gap=_GAP))


def save_panel(panel: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panel.save(path)
    return path
