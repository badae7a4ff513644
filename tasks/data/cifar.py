"""CIFAR-100 through torchvision's own reader, with the standard CIFAR augmentation.

Files live at ``<data_root>/cifar100/cifar-100-python/{train,test,meta}`` (the official
``cifar-100-python.tar.gz`` extracted); nothing is downloaded unless asked (``--download``).
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision import transforms
from torchvision.datasets import CIFAR100
from torchvision.datasets import cifar as tv_cifar  # looked up at call time, so tests can replace its functions

from tasks.data.root import data_root as resolve_data_root

# Per-channel statistics of the 50,000 CIFAR-100 training images (RGB, pixel values in [0, 1]).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
NUM_CLASSES = 100


def cifar100_transform(train: bool) -> transforms.Compose:
    """Random 32x32 crop from a 4-pixel zero-padded image + horizontal flip (train); normalise."""
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)])


def _check_files(folder: Path) -> None:
    """Fail with a message naming the folder, the missing or corrupt file and how to fix it."""
    base = folder / CIFAR100.base_folder
    # torchvision checks both splits whichever one is asked for, so we do too.
    wanted = [*CIFAR100.train_list, *CIFAR100.test_list, [CIFAR100.meta["filename"], CIFAR100.meta["md5"]]]
    missing = [name for name, _ in wanted if not (base / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-100 not found: looked for {', '.join(missing)} in {base}. Download it with "
            f"`python -m tasks.classify --dataset cifar100 --download` (fetches {CIFAR100.url} into "
            f"{folder}), or extract that archive there yourself; set the data root with --data-root "
            f"or $BAM_DATA_ROOT.")
    for name, md5 in wanted:
        if not tv_cifar.check_integrity(str(base / name), md5):
            raise ValueError(f"CIFAR-100 file {base / name} does not have the official checksum (md5 {md5}): "
                             "it is partial or corrupt. Delete it and download again (--download).")


def _download(folder: Path) -> None:
    try:
        tv_cifar.download_and_extract_archive(CIFAR100.url, str(folder), filename=CIFAR100.filename,
                                              md5=CIFAR100.tgz_md5)
    except (OSError, RuntimeError) as error:  # URLError and HTTPError are OSErrors
        raise ValueError(
            f"could not download CIFAR-100 from {CIFAR100.url} into {folder}: {error}. Without network "
            f"access, fetch {CIFAR100.filename} elsewhere and extract it into {folder}.") from error


def build_cifar100(data_root: str | os.PathLike | None = None, train: bool = True,
                   download: bool = False) -> CIFAR100:
    """torchvision's ``CIFAR100`` at ``<data_root>/cifar100`` with the standard transforms of the split."""
    folder = resolve_data_root(data_root) / "cifar100"
    try:
        _check_files(folder)
    except (FileNotFoundError, ValueError):
        if not download:
            raise
        _download(folder)
        _check_files(folder)
    return CIFAR100(str(folder), train=train, transform=cifar100_transform(train), download=False)
