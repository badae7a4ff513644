"""ImageNet-1k from the standard folder layout, with the standard augmentation.

Expected layout (``<data_root>/imagenet``)::

    train/n01440764/n01440764_10026.JPEG ...
    val/n01440764/ILSVRC2012_val_00000293.JPEG ...

Class indices come from the sorted training class folders, and validation uses the same mapping,
so a validation folder that lacks a class cannot silently shift the labels.
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
FOLDER = "imagenet"
VALPREP_HINT = (
    "The official ILSVRC2012 validation archive extracts to one flat folder; sort it into class "
    "folders first, e.g. with the usual `valprep.sh` script (from soumith/imagenetloader.torch) "
    "run inside val/."
)


def imagenet_transform(train: bool, crop: int = 224, resize: int = 256) -> transforms.Compose:
    """Train: random-resized crop + flip. Eval: resize the short side to ``resize``, center crop."""
    if train:
        steps = [transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(resize), transforms.CenterCrop(crop)]
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


def load_rgb_image(path: str) -> Image.Image:
    """Open an image as 8-bit RGB through the shared reader (gray, palette, RGBA and 16-bit files
    converted; no EXIF rotation, as torchvision's loader); a missing or broken file raises an
    error naming it, not a bare PIL error."""
    return Image.fromarray(read_rgb(path, exif=False))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def check_layout(split_dir: Path) -> list[str]:
    """Return the sorted class folder names of ``split_dir``; explain any other layout."""
    expected = f"expected {split_dir}/CLASS/*.JPEG (one sub-folder per class, e.g. n01440764)"
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"ImageNet folder {split_dir} does not exist: {expected}. Set the data root with "
            "--data-root or $BAM_DATA_ROOT (ImageNet lives at <data_root>/imagenet)."
        )
    entries = list(os.scandir(split_dir))
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    loose_images = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    tars = [e.name for e in entries if e.is_file() and e.name.endswith(".tar")]
    if loose_images and not classes:
        hint = VALPREP_HINT if split_dir.name == "val" else "Move each image into its class folder."
        raise ValueError(
            f"wrong ImageNet layout in {split_dir}: {expected}, but found {len(loose_images)} images "
            f"directly in it (e.g. {sorted(loose_images)[0]}) and no class folders. {hint}"
        )
    if tars and not classes:
        raise ValueError(
            f"wrong ImageNet layout in {split_dir}: {expected}, but found {len(tars)} .tar archives "
            f"(e.g. {sorted(tars)[0]}). Extract each class archive into a folder of its own name."
        )
    if not classes:
        raise ValueError(f"wrong ImageNet layout in {split_dir}: {expected}, but it has no class folders.")
    return classes


class ImageNetFolder(ImageFolder):
    """``ImageFolder`` with a fixed class list and image errors that name the file."""

    def __init__(self, root: str | os.PathLike, classes: list[str] | None = None, transform=None):
        self._fixed_classes = classes
        super().__init__(str(root), transform=transform, loader=load_rgb_image)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        present = check_layout(Path(directory))
        if self._fixed_classes is None:
            return present, {name: index for index, name in enumerate(present)}
        unknown = sorted(set(present) - set(self._fixed_classes))
        if unknown:
            raise ValueError(
                f"{directory} has class folders that the training set lacks: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''} ({len(unknown)} in all); both splits must "
                "use the same class folder names."
            )
        index = {name: i for i, name in enumerate(self._fixed_classes)}
        return list(self._fixed_classes), {name: index[name] for name in present}


def imagenet_folder(data_root: str | os.PathLike | None = None) -> Path:
    return resolve_data_root(data_root) / FOLDER


def build_imagenet(
    data_root: str | os.PathLike | None = None, train: bool = True, transform=None
) -> ImageNetFolder:
    """The ``train`` or ``val`` split of ``<data_root>/imagenet`` (labels from train's classes)."""
    folder = imagenet_folder(data_root)
    train_classes = check_layout(folder / "train")
    transform = imagenet_transform(train) if transform is None else transform
    split = folder / ("train" if train else "val")
    return ImageNetFolder(split, classes=train_classes, transform=transform)
