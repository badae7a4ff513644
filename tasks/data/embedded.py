"""Real photographs that ship inside scikit-image: the no-download SR default.

scikit-image bundles a few sample photographs as files inside its ``skimage/data`` package
folder. They are read here straight from that folder (not through ``skimage.data.<name>()``,
which fetches some other images over the network with pooch), so nothing is ever downloaded.
Only photographs of real scenes are used; synthetic images (color wheel, chessboards, phantom,
logo, binary horse) and the near-duplicate ``motorcycle_right`` view are left out.

The split is fixed: three held-out test images (two colour, one gray) and the rest for training.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tasks.data.images import read_image, read_rgb
from tasks.utils.files import write_png_atomic

__all__ = ["EMBEDDED_SPLITS", "embedded_sr_files", "embedded_sr_images", "write_embedded_images"]

# Training photos: colour ones first (a model trained mostly on gray pictures learns no colour,
# which shows in the sample panels even though PSNR/SSIM on Y do not see it), then gray textures
# that teach fine detail. Scanned text and synthetic pictures are left out.
EMBEDDED_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
        "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "coins.png", "moon.png", "brick.png",
        "grass.png", "gravel.png",
    ),
    "test": ("chelsea.png", "coffee.png", "camera.png"),
}


def _package_folder() -> Path:
    try:
        import skimage
    except ImportError as error:  # pragma: no cover - scikit-image is a dependency
        raise ImportError("embedded SR images need scikit-image (`pip install scikit-image`)") from error
    return Path(skimage.__file__).resolve().parent / "data"


def _check_split(split: str) -> tuple[str, ...]:
    if split not in EMBEDDED_SPLITS:
        raise ValueError(f"unknown embedded split {split!r}; choose one of {sorted(EMBEDDED_SPLITS)}")
    return EMBEDDED_SPLITS[split]


def embedded_sr_files(split: str = "train") -> list[Path]:
    """Paths of the bundled photographs of a split (inside the installed scikit-image)."""
    folder = _package_folder()
    files = [folder / name for name in _check_split(split)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"scikit-image's bundled sample images are missing: {', '.join(missing)} "
            "(reinstall scikit-image)")
    return files


def embedded_sr_images(split: str = "train", keep_gray: bool = False) -> list[np.ndarray]:
    """The photographs of a split as uint8 arrays: (H, W, 3), or (H, W) for gray files when
    ``keep_gray`` (the Y-only protocol needs to know which files were gray)."""
    reader = read_image if keep_gray else read_rgb
    return [reader(path) for path in embedded_sr_files(split)]


def write_embedded_images(folder: str | os.PathLike, split: str = "train") -> list[Path]:
    """Copy a split's photographs as PNG files into ``folder`` (e.g. to use them as a benchmark
    folder); returns the written paths. Gray files stay single-channel."""
    return [write_png_atomic(Path(folder) / f"{path.stem}.png", read_image(path))
            for path in embedded_sr_files(split)]
