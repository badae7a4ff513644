"""The embedded classification default: scikit-learn's handwritten digits, shaped like CIFAR.

1,797 real 8x8 gray images of the digits 0-9 (UCI optical recognition data set) ship inside
scikit-learn, so nothing is downloaded. Images are scaled to [0, 1], upsampled bilinearly to 32x32
and repeated over three channels so that every CIFAR network runs on them unchanged. The split is
fixed: within each digit, every fifth image in file order is test -> 1,433 train / 364 test.
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


@lru_cache(maxsize=1)
def _load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # The 8x8 images count pen pixels in a 4x4 cell: values 0..16.
    return torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0, torch.as_tensor(bunch.target, dtype=torch.long)


def digits_arrays(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N x 3 x 32 x 32 in [0, 1] and labels N of one split (before normalisation)."""
    images, labels = _load_sklearn_digits()
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(NUM_CLASSES):
        is_test[(labels == digit).nonzero().flatten()[::TEST_EVERY]] = True
    keep = ~is_test if train else is_test
    big = F.interpolate(images[keep].unsqueeze(1), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return big.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous(), labels[keep]


def digits_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the upsampled training images (the same on all 3 channels)."""
    images, _ = digits_arrays(train=True)
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())


class Digits(Dataset):
    """The digits as a CIFAR-sized classification set: ``(3x32x32 tensor, label)``, normalised by
    the training statistics; training images are random 32x32 crops of the 4-pixel padded image
    (no flips: a flipped digit is another shape)."""

    def __init__(self, train: bool = True):
        self.images, self.targets = digits_arrays(train)
        crop = [transforms.RandomCrop(IMAGE_SIZE, padding=4)] if train else []
        self.transform = transforms.Compose([*crop, transforms.Normalize(*digits_stats())])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.targets[index])
