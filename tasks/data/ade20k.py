"""Scene-parsing data: ADE20K (SceneParsing 2016) and plain image/label folders.

Labels are classes ``0 .. num_classes-1`` and ``IGNORE_INDEX = 255`` for unlabeled pixels (255, not
-1, so labels stay ``uint8``). ADE20K stores ``0 = unlabeled`` and ``1..150``, hence
``label_offset=1``. Unlike CSAILVision's loader, padding fills labels with the ignore index (never
0, which is "wall" after the shift), and labels stay at full resolution (the model upsamples its
logits, so loss and metric see every labelled pixel).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from tasks.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from tasks.data.images import list_images, read_rgb
from tasks.data.sampling import split_key
from tasks.utils.images import to_hwc_uint8

IGNORE_INDEX = 255
# The recipe of CSAILVision's ADE20K configs.
TRAIN_SHORT_SIDES = (300, 375, 450, 525, 600)
MAX_LONG_SIDE = 1000
SIZE_DIVISOR = 32

# objectInfo150 order (label value k+1 in the released PNGs is class k here).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
    "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)


def scaled_size(height: int, width: int, short_side: int, max_long_side: int = MAX_LONG_SIDE) -> tuple[int, int]:
    """Size after scaling the short side to ``short_side`` unless the long side would exceed the cap."""
    scale = min(short_side / min(height, width), max_long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class TrainTransform:
    """Random short side from ``short_sides`` (long side capped), then a random horizontal flip."""

    short_sides: Sequence[int] = TRAIN_SHORT_SIDES
    max_long_side: int = MAX_LONG_SIDE

    def __call__(self, image: Image.Image, label: Image.Image,
                 rng: random.Random | None = None) -> tuple[Image.Image, Image.Image]:
        rng = rng or random  # a per-sample RNG makes augmentation reproducible on resume
        new_h, new_w = scaled_size(image.height, image.width, rng.choice(list(self.short_sides)), self.max_long_side)
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), Image.BILINEAR)
            label = label.resize((new_w, new_h), Image.NEAREST)  # never blend class ids
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            label = label.transpose(Image.FLIP_LEFT_RIGHT)
        return image, label


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float 3xHxW normalised with the ImageNet statistics."""
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: 3xHxW float -> uint8 HxWx3 (for visualisation)."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return to_hwc_uint8(image.float() * std + mean)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def collate_segmentation(batch: list[dict]) -> dict:
    """Pad images (with 0, the mean colour after normalisation) and labels (with the ignore index)
    to the batch's largest height and width, rounded up to ``SIZE_DIVISOR``.

    Returns ``image`` Bx3xHxW, ``label`` BxHxW (long), ``size`` Bx2 (the unpadded sizes) and ``name``.
    """
    height = round_up(max(item["image"].shape[1] for item in batch), SIZE_DIVISOR)
    width = round_up(max(item["image"].shape[2] for item in batch), SIZE_DIVISOR)
    images = batch[0]["image"].new_zeros(len(batch), 3, height, width)
    labels = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.long)
    for i, item in enumerate(batch):
        h, w = item["label"].shape
        images[i, :, :h, :w] = item["image"]
        labels[i, :h, :w] = item["label"]
    sizes = torch.tensor([tuple(item["label"].shape) for item in batch], dtype=torch.long)
    return {"image": images, "label": labels, "size": sizes, "name": [item["name"] for item in batch]}


class SegmentationFolder(Dataset):
    """Images in ``images_dir`` paired by file stem with label PNGs in ``labels_dir``.

    A raw label value ``v`` becomes class ``v - label_offset``; values below the offset and the raw
    value ``ignore_index`` become ``ignore_index``. Any other value outside ``0..num_classes-1`` is
    an error naming the file. Items: ``{"image": 3xHxW float, "label": HxW long, "name": str}``.
    """

    def __init__(self, images_dir: str | Path, labels_dir: str | Path, num_classes: int,
                 ignore_index: int = IGNORE_INDEX, label_offset: int = 0, transform=None,
                 class_names: Sequence[str] | None = None, layout_hint: str | None = None):
        if not 0 < num_classes <= 255 or not num_classes <= ignore_index <= 255:
            # Labels travel as 8-bit images (nearest-neighbour resizing keeps class ids exact).
            raise ValueError(f"num_classes={num_classes} must be in 1..255 and ignore_index={ignore_index} in "
                             f"{num_classes}..255 (not a class id, and 8-bit)")
        self.images_dir, self.labels_dir = Path(images_dir), Path(labels_dir)
        self.num_classes, self.ignore_index, self.label_offset = num_classes, ignore_index, label_offset
        self.transform = transform
        self.class_names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for num_classes={num_classes}")
        self.samples = self._pair_files(f" (expected layout: {layout_hint})" if layout_hint else "")

    def _pair_files(self, hint: str) -> list[tuple[Path, Path]]:
        for folder in (self.images_dir, self.labels_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"folder not found: {folder}{hint}")
        try:  # hidden files skipped: macOS copies leave "._NAME.jpg" resource files beside the images
            images = list_images(self.images_dir, recursive=False)
        except ValueError as error:
            raise ValueError(f"{error}{hint}") from None
        labels = {p.stem: p for p in self.labels_dir.iterdir()
                  if p.suffix.lower() == ".png" and not p.name.startswith(".")}
        missing = [p for p in images if p.stem not in labels]
        if missing:
            shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise FileNotFoundError(f"{len(missing)} image(s) have no label PNG in {self.labels_dir}: {shown}")
        return [(p, labels[p.stem]) for p in images]

    def __len__(self) -> int:
        return len(self.samples)

    def read_label(self, path: Path) -> np.ndarray:
        """Raw label PNG -> uint8 HxW with classes 0..num_classes-1 and the ignore index."""
        try:
            with Image.open(path) as pil:
                mode = pil.mode
                raw = np.asarray(pil).astype(np.int64)  # decodes: truncation shows up here
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: cannot read label PNG ({error})") from error
        if mode not in ("L", "P", "I;16", "I"):
            raise ValueError(f"{path}: label PNG must be single-channel (mode L or P), got mode {mode}")
        ignored = (raw < self.label_offset) | (raw == self.ignore_index)
        label = raw - self.label_offset
        # Judged on the raw values: with an offset, a 16-bit raw ignore_index + offset must not
        # silently become the ignore index.
        bad = (label >= self.num_classes) & ~ignored
        label[ignored] = self.ignore_index
        if bad.any():
            values = sorted(set(raw[bad].tolist()))[:5]
            raise ValueError(
                f"{path}: label values {values} exceed the class count (num_classes={self.num_classes}, "
                f"label_offset={self.label_offset}, ignore_index={self.ignore_index})")
        return label.astype(np.uint8)

    def load(self, index: int) -> tuple[Image.Image, Image.Image, str]:
        """The untransformed RGB image, shifted label (mode L) and file stem of sample ``index``."""
        image_path, label_path = self.samples[index]
        # No EXIF rotation: the label map refers to the stored pixel grid.
        image = Image.fromarray(read_rgb(image_path, exif=False))
        label = Image.fromarray(self.read_label(label_path))
        if image.size != label.size:
            raise ValueError(f"size mismatch: image {image_path} is {image.width}x{image.height} but label "
                             f"{label_path} is {label.width}x{label.height} (width x height)")
        return image, label, image_path.stem

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index, or ``(index, sample_seed)`` whose seed alone drives the augmentation."""
        index, seed = split_key(key)
        image, label, name = self.load(index)
        if self.transform is not None:
            image, label = self.transform(image, label, None if seed is None else random.Random(seed))
        return {"image": to_tensor(image), "label": torch.from_numpy(np.array(label, dtype=np.int64)), "name": name}


def split_folder(split: str) -> str:
    """The folder ADE20K keeps a split (``train`` or ``val``, as every command names them) in."""
    folders = {"train": "training", "val": "validation"}
    if split not in folders:
        raise ValueError(f"split must be one of {', '.join(folders)}, got {split!r}")
    return folders[split]


def folder_split(root: str | Path, split: str, num_classes: int, label_offset: int = 0,
                 transform=None) -> SegmentationFolder:
    """Split ``train`` or ``val`` of a plain data set in ADE20K's layout (``--dataset folder``):
    images in ``root/images/{training,validation}``, label PNGs in ``root/annotations/...``."""
    folder, root = split_folder(split), Path(root)
    layout = ("<data-root>/images/{training,validation}/* and "
              "<data-root>/annotations/{training,validation}/*.png")
    return SegmentationFolder(root / "images" / folder, root / "annotations" / folder, num_classes,
                              label_offset=label_offset, transform=transform, layout_hint=layout)


class ADE20K(SegmentationFolder):
    """ADE20K SceneParsing 2016 under ``root/ADEChallengeData2016`` (or ``root`` itself if it is that
    folder). ``train_transform`` (default: for the training split) applies the recipe's random
    rescale and flip."""

    NUM_CLASSES = 150

    def __init__(self, root: str | Path, split: str = "train", train_transform: bool | None = None,
                 short_sides: Sequence[int] = TRAIN_SHORT_SIDES, max_long_side: int = MAX_LONG_SIDE):
        folder = split_folder(split)
        base = Path(root)
        if base.name != "ADEChallengeData2016":
            base = base / "ADEChallengeData2016"
        augment = split == "train" if train_transform is None else train_transform
        super().__init__(base / "images" / folder, base / "annotations" / folder, self.NUM_CLASSES,
                         label_offset=1, transform=TrainTransform(short_sides, max_long_side) if augment else None,
                         class_names=ADE20K_CLASSES,
                         layout_hint="<data-root>/ADEChallengeData2016/images/{training,validation}/*.jpg and "
                                     "ADEChallengeData2016/annotations/{training,validation}/*.png")


def palette(num_classes: int = 256) -> np.ndarray:
    """Distinct colours per class (bit-interleaved, as in the PASCAL VOC palette), uint8 Nx3."""
    value = np.arange(num_classes) + 1  # +1 so class 0 is not black
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((value >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def colorize(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 colours; ignored pixels are black."""
    label = np.asarray(label)
    out = palette(256)[np.clip(label, 0, 255).astype(np.int64)]
    out[label == ignore_index] = 0
    return out
