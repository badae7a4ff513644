"""Real photographs that ship inside scikit-image: the SR evaluation set ``embedded``.

They are read straight from scikit-image's ``skimage/data`` package folder (``skimage.data.<name>()``
would fetch some other images over the network), so nothing is ever downloaded. Only photographs of
real scenes are used; the split is fixed: three held-out test images (two colour, one gray).
"""

from __future__ import annotations

from pathlib import Path

import skimage

# Training photos (the tests' tiny SR runs): colour ones first (a model trained mostly on gray pictures learns no colour,
# which shows in the sample panels though PSNR/SSIM on Y do not see it), then gray textures that
# teach fine detail.
EMBEDDED_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
        "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "coins.png", "moon.png", "brick.png",
        "grass.png", "gravel.png",
    ),
    "test": ("chelsea.png", "coffee.png", "camera.png"),
}


def embedded_sr_files(split: str = "train") -> list[Path]:
    """Paths of the bundled photographs of a split (inside the installed scikit-image)."""
    if split not in EMBEDDED_SPLITS:
        raise ValueError(f"unknown embedded split {split!r}; choose one of {sorted(EMBEDDED_SPLITS)}")
    folder = Path(skimage.__file__).resolve().parent / "data"
    files = [folder / name for name in EMBEDDED_SPLITS[split]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-image's bundled sample images are missing: {', '.join(missing)} "
                                "(reinstall scikit-image)")
    return files
