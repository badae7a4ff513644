"""The embedded classification default: scikit-learn's handwritten digits, shaped like CIFAR.

1,797 real 8x8 gray images of the digits 0-9 (UCI optical recognition data set) ship inside
scikit-learn, so this needs no download. Images are scaled to [0, 1], upsampled bilinearly to
32x32 and repeated over three channels so that every CIFAR network runs on them unchanged.

Split (fixed, independent of any random generator): within each digit, every fifth image in file
order (occurrence 0, 5, 10, ...) is test and the rest train -> 1,433 train / 364 test, every class
split 4:1.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import transforms

NUM_CLASSES = 10
IMAGE_SIZE = 32
TEST_EVERY = 5
_MAX_VALUE = 16.0  # the 8x8 images count pen pixels in a 4x4 cell: values 0..16


@lru_cache(maxsize=1)
def _load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - environment problem
        raise ImportError(
            "the embedded `digits` data set needs scikit-learn (`pip install scikit-learn>=1.3`)"
        ) from error
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / _MAX_VALUE  # N x 8 x 8 in [0, 1]
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


def digits_arrays(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N x 3 x 32 x 32 in [0, 1] and labels N of one split (before normalisation)."""
    images, labels = _load_sklearn_digits()
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(NUM_CLASSES):
        members = (labels == digit).nonzero().flatten()
        is_test[members[::TEST_EVERY]] = True
    keep = ~is_test if train else is_test
    small = images[keep].unsqueeze(1)
    big = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return big.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous(), labels[keep]


def digits_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the upsampled training images (the same on all 3 channels)."""
    images, _ = digits_arrays(train=True)
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())


def digits_transform(train: bool, mean, std) -> transforms.Compose:
    """Train: random 32x32 crop of the 4-pixel padded image (no flips: a flipped digit is another
    shape). Both splits: normalise by the training statistics."""
    steps = [transforms.RandomCrop(IMAGE_SIZE, padding=4)] if train else []
    return transforms.Compose([*steps, transforms.Normalize(mean, std)])


class Digits(Dataset):
    """The scikit-learn digits as a CIFAR-sized classification set: ``(3x32x32 tensor, label)``."""

    num_classes = NUM_CLASSES
    classes = [str(d) for d in range(NUM_CLASSES)]

    def __init__(self, train: bool = True, transform=None):
        self.train = train
        self.images, self.targets = digits_arrays(train)
        if transform is None:
            transform = digits_transform(train, *digits_stats())
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def build_digits(train: bool = True, transform=None) -> Digits:
    return Digits(train=train, transform=transform)
