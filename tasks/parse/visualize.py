"""Prediction pictures: the input, the prediction overlaid in palette colours, the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from datasets.ade20k import IGNORE_INDEX, colorize


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.6, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Blend palette colours of ``label`` over the uint8 HxWx3 ``image``; ignored pixels stay as they are."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} sizes differ")
    colours = colorize(label, ignore_index).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    keep = (label == ignore_index)[..., None]
    return np.where(keep, image, blended.round().clip(0, 255)).astype(np.uint8)


_CAPTION_HEIGHT = 14  # one line of PIL's default font


def prediction_panel(image: np.ndarray, prediction: np.ndarray, target: np.ndarray, gap: int = 4,
                     ignore_index: int = IGNORE_INDEX, captions: bool = True) -> np.ndarray:
    """``image | prediction overlay | ground-truth overlay`` side by side (uint8 HxWx3), each under
    its caption (the prediction's with this image's pixel accuracy) when ``captions``.

    The prediction is drawn only where a label exists, so both overlays cover the same pixels.
    """
    labelled = target != ignore_index
    shown = np.where(labelled, prediction, ignore_index)
    tiles = [image, overlay(image, shown, ignore_index=ignore_index), overlay(image, target, ignore_index=ignore_index)]
    spacer = np.full((image.shape[0], gap, 3), 255, np.uint8)
    panel = np.concatenate([tiles[0], spacer, tiles[1], spacer, tiles[2]], axis=1)
    if not captions:
        return panel
    accuracy = f", pixel acc. {(prediction == target)[labelled].mean():.1%}" if labelled.any() else ""
    return _add_captions(panel, ["image", f"prediction{accuracy}", "ground truth"], image.shape[1], gap)


def _add_captions(panel: np.ndarray, texts: Sequence[str], tile_width: int, gap: int) -> np.ndarray:
    band = Image.new("RGB", (panel.shape[1], _CAPTION_HEIGHT), "white")
    for i, text in enumerate(texts):
        caption = Image.new("RGB", (tile_width, _CAPTION_HEIGHT), "white")  # clips text to its tile
        ImageDraw.Draw(caption).text((2, 1), text, fill="black")
        band.paste(caption, (i * (tile_width + gap), 0))
    return np.concatenate([np.asarray(band), panel], axis=0)


def save_panels(panels: Sequence[tuple[str, np.ndarray]], folder: str | Path, step: int | None = None) -> list[Path]:
    """Write each ``(name, panel)`` as ``folder/[step_XXXXXXX_]name.png``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"step_{step:07d}_" if step is not None else ""
    paths = []
    for name, panel in panels:
        path = folder / f"{prefix}{name}.png"
        Image.fromarray(panel).save(path)
        paths.append(path)
    return paths
