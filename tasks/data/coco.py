"""COCO 2017 object detection in its released layout, as torchvision detection samples.

Layout: :data:`LAYOUT`. 2017 train/val is the paper's split (trainval35k / minival).

A sample is ``(image, target)``: ``image`` a float CxHxW tensor in [0, 1], ``target`` a dict with
``boxes`` (float Nx4, x1 y1 x2 y2 pixels), ``labels`` (COCO category ids, so ``num_classes = 91``),
``image_id``, ``area`` and ``iscrowd``. As in torchvision's detection reference, crowd regions are
left out of the targets (COCOeval ignores them on its own), boxes are clipped to the image, boxes
with no area left are dropped and, for training, images without a usable box are skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.data.images import read_rgb
from tasks.data.sampling import key_generator
from tasks.utils.messages import warn

SPLITS = ("train", "val")
LAYOUT = (
    "<root>/coco/{train2017,val2017}/*.jpg and <root>/coco/annotations/instances_{train2017,val2017}.json "
    "(download train2017.zip, val2017.zip and annotations_trainval2017.zip from "
    "https://cocodataset.org/#download and unzip them into <root>/coco)"
)


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(image_dir, annotation_file)`` of a split under ``<root>/coco``; clear error if absent."""
    if split not in SPLITS:
        raise ValueError(f"COCO split must be one of {SPLITS}, got {split!r}")
    base = Path(root) / "coco"
    image_dir = base / f"{split}2017"
    ann_file = base / "annotations" / f"instances_{split}2017.json"
    for path in (ann_file, image_dir):
        if not path.exists():
            raise FileNotFoundError(f"COCO not found: {path} is missing. Expected {LAYOUT}")
    return image_dir, ann_file


_TOP_LEVEL = ("images", "annotations", "categories")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_EVALUATION_KEYS = ("area", "iscrowd")  # COCOeval reads both for every ground-truth box


def check_coco_content(content: dict, ann_file: Path, for_evaluation: bool = False) -> None:
    """Refuse, naming the file and the first faulty record, what pycocotools or COCOeval would
    stumble over later (a ``KeyError`` deep inside, possibly after a whole training run).

    ``for_evaluation``: the file is the ground truth of an evaluation, whose boxes COCOeval also
    needs an ``area`` and an ``iscrowd`` for.
    """
    if not isinstance(content, dict):
        raise ValueError(f"{ann_file} is not a COCO instances annotation file: it holds a "
                         f"{type(content).__name__}, not an object with {', '.join(_TOP_LEVEL)}")
    for key in _TOP_LEVEL:
        if not isinstance(content.get(key), list):
            found = "has none" if key not in content else f"has a {type(content[key]).__name__}"
            raise ValueError(f"{ann_file} is not a COCO instances annotation file: it needs a list of {key!r} "
                             f"and {found}")
    if not content["images"]:
        raise ValueError(f"{ann_file} lists no images")
    for image in content["images"]:
        if not isinstance(image, dict) or "id" not in image:
            raise ValueError(f"{ann_file}: every image record needs an 'id', got {image!r}"[:500])
    needed = _ANNOTATION_KEYS + (_EVALUATION_KEYS if for_evaluation else ())
    annotations = content["annotations"]
    bad = [a for a in annotations if not isinstance(a, dict) or any(k not in a for k in needed)]
    if bad:
        first = bad[0] if isinstance(bad[0], dict) else {}
        missing = [key for key in needed if key not in first]
        where = (f"image id {first.get('image_id')}: annotation {first.get('id')}"
                 if first else f"annotation {bad[0]!r}")
        evaluation = set(missing) & set(_EVALUATION_KEYS)
        purpose = " (COCO evaluation needs them for every box)" if evaluation else ""
        raise ValueError(f"{ann_file}, {where} has no {', '.join(map(repr, missing))}{purpose}; "
                         f"{len(bad)} of {len(annotations)} annotations lack one of "
                         f"{', '.join(needed)}")


def load_coco_api(ann_file: str | Path, for_evaluation: bool = False):
    """pycocotools' ``COCO`` index of an annotation file, quietly, its content checked first
    (:func:`check_coco_content`), with errors that name the file."""
    try:
        from pycocotools.coco import COCO
    except ImportError as error:  # optional dependency
        raise ImportError("COCO needs pycocotools: pip install 'bam-attention[detection]'") from error
    ann_file = Path(ann_file)
    try:
        content = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{ann_file} is not a readable JSON file ({error})") from None
    check_coco_content(content, ann_file, for_evaluation)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timing lines
            coco = COCO()
            coco.dataset = content
            coco.createIndex()
            return coco
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ValueError(f"{ann_file} is not a COCO instances annotation file: {error!r}") from error


def convert_annotations(annotations: Sequence[dict], width: int,
                        height: int) -> tuple[dict[str, np.ndarray], int, int]:
    """COCO annotations of one image -> arrays of xyxy boxes clipped to the image.

    Returns ``(arrays, clipped, dropped)``: how many boxes reached outside the image (clipped)
    and how many had no area left (dropped)."""
    boxes, labels, areas = [], [], []
    clipped = dropped = 0
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"annotation {ann.get('id')}: 'bbox' must be [x, y, width, height], "
                             f"got {ann.get('bbox', 'nothing')!r}") from error
        if not all(map(np.isfinite, (x, y, w, h))):
            raise ValueError(f"annotation {ann.get('id')}: non-finite bbox {ann['bbox']!r}")
        box = np.array([x, y, x + w, y + h])
        inside = box.clip(0, [width, height, width, height])
        if inside[2] <= inside[0] or inside[3] <= inside[1]:
            dropped += 1
            continue
        clipped += bool((inside != box).any())
        boxes.append(inside)
        labels.append(int(ann["category_id"]))
        areas.append(float(ann.get("area", w * h)))
    arrays = {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "area": np.asarray(areas, dtype=np.float32),
        "iscrowd": np.zeros(len(boxes), dtype=np.int64),  # crowd regions were left out above
    }
    return arrays, clipped, dropped


def hflip(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mirror an image and its xyxy boxes left-right."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    return image.flip(-1), target


class CocoDetection(Dataset):
    """COCO instances of ``split`` (``"train"`` or ``"val"``) under ``<root>/coco``.

    ``train`` (default: ``split == "train"``) flips half the images left-right; ``remove_empty``
    (default: ``train``, as torchvision's reference) skips images with no usable box.
    """

    def __init__(self, root: str | Path, split: str = "train", train: bool | None = None,
                 remove_empty: bool | None = None):
        self.image_dir, self.ann_file = coco_paths(root, split)
        self.train = split == "train" if train is None else train
        # An evaluation set's ground truth is checked for what COCOeval needs too, now, not when the
        # first evaluation runs after training.
        self.coco = load_coco_api(self.ann_file, for_evaluation=not self.train)
        self.categories = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        if any(not isinstance(i, int) or i < 1 for i in self.categories):
            raise ValueError(f"{self.ann_file}: category ids must be integers >= 1 (0 is the detector's "
                             f"background class), got {sorted(self.categories, key=str)}")
        # Category ids are the labels (COCO's 1..90 with gaps), background is 0.
        self.num_classes = max(self.categories, default=0) + 1
        self._build_index(self.train if remove_empty is None else remove_empty)

    def _build_index(self, remove_empty: bool) -> None:
        self.ids, self.targets = [], {}
        clipped = dropped = empty = 0
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            anns = self.coco.imgToAnns.get(image_id, [])
            where = f"{self.ann_file}, image id {image_id}"
            if not all(isinstance(info.get(k), (int, float)) and info[k] > 0 for k in ("width", "height")) \
                    or "file_name" not in info:
                raise ValueError(f"{where}: image records need 'file_name' and positive 'width' and "
                                 f"'height', got {info!r}")
            unknown = sorted({a.get("category_id") for a in anns} - self.categories.keys(), key=str)
            if unknown:  # would index past the classifier (a device-side assert on the GPU)
                raise ValueError(f"{where}: category ids {unknown} are not in the file's categories "
                                 f"{sorted(self.categories)}")
            try:
                arrays, n_clipped, n_dropped = convert_annotations(anns, info["width"], info["height"])
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            clipped, dropped = clipped + n_clipped, dropped + n_dropped
            if len(arrays["boxes"]) == 0:
                empty += 1
                if remove_empty:
                    continue
            self.ids.append(image_id)
            self.targets[image_id] = arrays
        self.stats = {"images": len(self.ids), "clipped_boxes": clipped, "dropped_boxes": dropped,
                      "images_without_boxes": empty, "removed_images": empty if remove_empty else 0}
        if clipped or dropped:
            warn(f"{self.ann_file}: {clipped} boxes reached outside their image and were clipped, "
                 f"{dropped} boxes with no area inside the image were dropped")
        if not self.ids:
            raise ValueError(f"{self.ann_file}: no images left (images without boxes removed: {empty})")

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"COCO image not found: {path} (image id {image_id} in {self.ann_file})")
        # No EXIF rotation: the boxes (and torchvision's reference) refer to the stored pixel grid.
        array = read_rgb(path, exif=False)
        if array.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"{path} is {array.shape[1]}x{array.shape[0]} pixels but {self.ann_file} "
                             f"says {info['width']}x{info['height']}")
        return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, key) -> tuple[torch.Tensor, dict[str, Any]]:
        """``key``: an index, or ``(index, sample_seed)`` whose seed alone decides the flip."""
        index, generator = key_generator(key)
        image_id = self.ids[index]
        image = self.load_image(image_id)
        target = {key: torch.from_numpy(value) for key, value in self.targets[image_id].items()}
        target["image_id"] = image_id
        if self.train and float(torch.rand((), generator=generator)) < 0.5:
            image, target = hflip(image, target)
        return image, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list, list]:
    """Keep images of different sizes apart: ``([images], [targets])``."""
    images, targets = zip(*batch)
    return list(images), list(targets)

