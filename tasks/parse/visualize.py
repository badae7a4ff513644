"""Prediction pictures: the input, the prediction overlaid in palette colours, the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tasks.data.ade20k import IGNORE_INDEX, colorize
from tasks.utils.files import write_png_atomic
from tasks.utils.images import side_by_side


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.6, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Blend palette colours of ``label`` over the uint8 HxWx3 ``image``; ignored pixels stay as they are."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} sizes differ")
    colours = colorize(label, ignore_index).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    keep = (label == ignore_index)[..., None]
    return np.where(keep, image, blended.round().clip(0, 255)).astype(np.uint8)


def prediction_panel(image: np.ndarray, prediction: np.ndarray, target: np.ndarray, gap: int = 4,
                     ignore_index: int = IGNORE_INDEX, captions: bool = True) -> np.ndarray:
    """``image | prediction overlay | ground-truth overlay`` side by side (uint8 HxWx3), each under
    its caption (the prediction's with this image's pixel accuracy) when ``captions``.

    The prediction is drawn only where a label exists, so both overlays cover the same pixels.
    """
    labelled = target != ignore_index
    shown = np.where(labelled, prediction, ignore_index)
    tiles = [image, overlay(image, shown, ignore_index=ignore_index), overlay(image, target, ignore_index=ignore_index)]
    accuracy = f", pixel acc. {(prediction == target)[labelled].mean():.1%}" if labelled.any() else ""
    texts = ["image", f"prediction{accuracy}", "ground truth"] if captions else None
    return side_by_side(tiles, texts, gap=gap)


def save_panels(panels: Sequence[tuple[str, np.ndarray]], folder: str | Path, step: int | None = None) -> list[Path]:
    """Write each ``(name, panel)`` as ``folder/[step_XXXXXXX_]name.png``; returns the paths."""
    prefix = f"step_{step:07d}_" if step is not None else ""
    return [write_png_atomic(Path(folder) / f"{prefix}{name}.png", panel) for name, panel in panels]
