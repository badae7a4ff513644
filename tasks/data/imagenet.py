"""ImageNet-1k from the standard folder layout, with the standard augmentation.

Layout: ``<data_root>/imagenet/{train,val}/n01440764/*.JPEG``. Class indices come from the sorted
training class folders and validation uses the same mapping, so a validation folder that lacks a
class cannot silently shift the labels.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from tasks.data.images import read_rgb
from tasks.data.root import data_root as resolve_data_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transform(train: bool) -> transforms.Compose:
    """Train: random-resized 224 crop + flip. Eval: short side to 256, 224 center crop."""
    if train:
        steps = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(256), transforms.CenterCrop(224)]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_rgb_image(path: str) -> Image.Image:
    """8-bit RGB through the shared reader (16-bit files scaled, errors naming the file); no EXIF
    rotation, as torchvision's loader."""
    return Image.fromarray(read_rgb(path, exif=False))


def check_layout(split_dir: Path) -> list[str]:
    """Return the sorted class folder names of ``split_dir``; explain any other layout."""
    expected = f"expected {split_dir}/CLASS/*.JPEG (one sub-folder per class, e.g. n01440764)"
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"ImageNet folder {split_dir} does not exist: {expected}. Set the data root with "
            "--data-root or $BAM_DATA_ROOT (ImageNet lives at <data_root>/imagenet).")
    entries = list(os.scandir(split_dir))
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    loose_images = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)]
    tars = [e.name for e in entries if e.is_file() and e.name.endswith(".tar")]
    if loose_images and not classes:
        hint = ("The official ILSVRC2012 validation archive extracts to one flat folder; sort it into class "
                "folders first, e.g. with the usual `valprep.sh` script (from soumith/imagenetloader.torch) "
                "run inside val/." if split_dir.name == "val" else "Move each image into its class folder.")
        raise ValueError(
            f"wrong ImageNet layout in {split_dir}: {expected}, but found {len(loose_images)} images "
            f"directly in it (e.g. {sorted(loose_images)[0]}) and no class folders. {hint}")
    if tars and not classes:
        raise ValueError(
            f"wrong ImageNet layout in {split_dir}: {expected}, but found {len(tars)} .tar archives "
            f"(e.g. {sorted(tars)[0]}). Extract each class archive into a folder of its own name.")
    if not classes:
        raise ValueError(f"wrong ImageNet layout in {split_dir}: {expected}, but it has no class folders.")
    return classes


class ImageNetFolder(ImageFolder):
    """``ImageFolder`` labelled by the training set's classes, with image errors that name the file."""

    def __init__(self, root: str | os.PathLike, classes: list[str], transform=None):
        self._train_classes = classes
        super().__init__(str(root), transform=transform, loader=load_rgb_image)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        present = check_layout(Path(directory))
        unknown = sorted(set(present) - set(self._train_classes))
        if unknown:
            raise ValueError(
                f"{directory} has class folders that the training set lacks: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''} ({len(unknown)} in all); both splits must "
                "use the same class folder names.")
        index = {name: i for i, name in enumerate(self._train_classes)}
        return list(self._train_classes), {name: index[name] for name in present}


def build_imagenet(data_root: str | os.PathLike | None = None, train: bool = True) -> ImageNetFolder:
    """The ``train`` or ``val`` split of ``<data_root>/imagenet`` (labels from train's classes)."""
    folder = resolve_data_root(data_root) / "imagenet"
    return ImageNetFolder(folder / ("train" if train else "val"), classes=check_layout(folder / "train"),
                          transform=imagenet_transform(train))
