"""Side-by-side picture panels with captions (SR samples, parsing and detection results)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

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
