"""Float images to 8-bit pixels (one rounding rule for every picture and every metric), and
side-by-side panels with captions (SR samples, parsing and detection results)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


def quantize(x: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """``x`` on a 0..``peak`` scale as uint8: MATLAB's uint8 cast (round half up, clamp to 0..255),
    the rounding of the SR evaluation convention. Computed in float64 so that no value near a
    half-level rounds the wrong way."""
    if x.dtype == torch.uint8:
        return x
    scaled = x.to(torch.float64) * (255.0 / peak)  # exact for peak 255: x * 1.0 is x
    return torch.floor(scaled + 0.5).clamp_(0, 255).to(torch.uint8)


def to_hwc_uint8(image: torch.Tensor | np.ndarray, peak: float = 1.0) -> np.ndarray:
    """A CxHxW (or 1xCxHxW) image tensor on a 0..``peak`` scale, or an HxWx3 uint8 array, as an
    HxWx3 uint8 array (for PNG files, panels and W&B)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        return image
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"expected a CxHxW image, got shape {tuple(image.shape)}")
    return quantize(image.detach(), peak).permute(1, 2, 0).cpu().numpy()


LINE_HEIGHT = 12  # PIL's default bitmap font is 11 pixels high


def side_by_side(tiles: Sequence[np.ndarray], captions: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """HxWx3 uint8 ``tiles`` of one height, left to right with ``gap`` white pixels between them,
    each under its caption (``\\n`` starts another line; text wider than its tile is cut there)."""
    heights = {tile.shape[0] for tile in tiles}
    if len(heights) != 1:
        raise ValueError(f"panel tiles differ in height: {[tile.shape for tile in tiles]}")
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = np.concatenate([part for tile in tiles for part in (spacer, tile)][1:], axis=1)
    if not captions:
        return row
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    band_height = LINE_HEIGHT * max(text.count("\n") + 1 for text in captions) + 2
    band = Image.new("RGB", (row.shape[1], band_height), "white")
    x = 0
    for tile, text in zip(tiles, captions):
        caption = Image.new("RGB", (tile.shape[1], band_height), "white")  # its own image: clips the text
        ImageDraw.Draw(caption).multiline_text((2, 1), text, fill="black", spacing=1)
        band.paste(caption, (x, 0))
        x += tile.shape[1] + gap
    return np.concatenate([np.asarray(band), row], axis=0)
