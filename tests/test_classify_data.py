"""Classification data: CIFAR-100 pickles, ImageNet folders and the embedded digits, in real formats.

CIFAR-100: the files are written the way the official archive has them (Python 2 pickles of dicts
whose keys and file names are byte strings, pixel rows as R, G, B planes) and read by torchvision's
own parser. torchvision also compares each file's md5 with the official one, which no synthetic
file can match: the tests swap torchvision's ``check_integrity`` for an existence check (monkeypatch,
tests only), so everything else is torchvision's real code path.
"""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image

from tasks.data.cifar import CIFAR100_MEAN, CIFAR100_STD, build_cifar100
from tasks.data.digits import Digits, digits_arrays
from tasks.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, build_imagenet, imagenet_transform


# --------------------------------------------------------------------------------------- CIFAR-100
class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as cPickle did for CIFAR."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        size = len(obj)
        if size < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([size]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", size) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _write_py2_pickle(path, obj) -> None:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())


def _make_cifar100(root, n_train=6, n_test=4, seed=0):
    """Write cifar-100-python/{train,test,meta} under root/cifar100; return the HWC images/labels."""
    rng = np.random.default_rng(seed)
    base = root / "cifar100" / "cifar-100-python"
    base.mkdir(parents=True)
    images = {}
    for split, count in (("train", n_train), ("test", n_test)):
        hwc = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, size=count).tolist()
        # The documented row layout: 1024 red, then 1024 green, then 1024 blue values, row-major.
        rows = hwc.transpose(0, 3, 1, 2).reshape(count, 3072)
        _write_py2_pickle(base / split, {
            b"filenames": [f"img_{split}_{i}.png".encode() for i in range(count)],
            b"batch_label": f"{split} batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": rows,
        })
        images[split] = (hwc, fine)
    _write_py2_pickle(base / "meta", {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    })
    return images


@pytest.fixture
def skip_md5(monkeypatch):
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar100_pickles_read_by_torchvision(tmp_path, skip_md5):
    written = _make_cifar100(tmp_path)
    train = build_cifar100(tmp_path, train=True)
    test = build_cifar100(tmp_path, train=False)
    assert len(train) == 6 and len(test) == 4
    assert train.classes[:2] == ["fine0", "fine1"]
    np.testing.assert_array_equal(train.data, written["train"][0])  # planes -> HWC done right
    assert train.targets == written["train"][1]

    # Test split: no augmentation, just (x / 255 - mean) / std, recomputed here in numpy.
    image, label = test[2]
    expected = (written["test"][0][2].astype(np.float64) / 255 - CIFAR100_MEAN) / CIFAR100_STD
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert label == written["test"][1][2]


def test_cifar100_train_augmentation_is_crop_and_flip(tmp_path, skip_md5):
    written = _make_cifar100(tmp_path, n_train=2)
    train = build_cifar100(tmp_path, train=True)
    # Zero padding happens in pixel space, before normalisation.
    raw = written["train"][0][0].astype(np.float64) / 255
    padded = (np.pad(raw, ((4, 4), (4, 4), (0, 0))) - CIFAR100_MEAN) / CIFAR100_STD
    windows = [padded[dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
    windows += [w[:, ::-1] for w in windows]  # and their mirror images
    torch.manual_seed(0)
    seen = set()
    for _ in range(8):
        out = train[0][0].permute(1, 2, 0).numpy()
        matches = [i for i, w in enumerate(windows) if np.allclose(w, out, atol=1e-5)]
        assert matches, "a training image is not a (mirrored) 32x32 window of the padded image"
        seen.add(matches[0])
    assert len(seen) > 1  # random: not the same crop every time


def test_cifar100_missing_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        build_cifar100(tmp_path, train=True)
    message = str(info.value)
    assert str(tmp_path / "cifar100" / "cifar-100-python") in message
    assert "--download" in message and "cifar-100-python.tar.gz" in message


def test_cifar100_wrong_checksum_names_the_file(tmp_path):
    _make_cifar100(tmp_path)  # real md5 check (no monkeypatch): synthetic files cannot match
    with pytest.raises(ValueError, match=r"cifar-100-python[/\\]train.*checksum"):
        build_cifar100(tmp_path, train=True)


# ---------------------------------------------------------------------------------------- ImageNet
def _save_jpeg(path, color=(200, 30, 90), size=(48, 36)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG", quality=100)


def _make_imagenet(root, classes=("n01440764", "n01443537", "n01484850"), per_class=2):
    for split in ("train", "val"):
        for c in classes:
            for i in range(per_class):
                _save_jpeg(root / "imagenet" / split / c / f"{c}_{split}_{i}.JPEG")
    return root / "imagenet"


def test_imagenet_folder_loads_with_standard_transforms(tmp_path):
    folder = _make_imagenet(tmp_path)
    train = build_imagenet(tmp_path, train=True)
    val = build_imagenet(tmp_path, train=False)
    assert len(train) == 6 and len(val) == 6
    assert train.classes == ["n01440764", "n01443537", "n01484850"]
    image, label = train[3]
    assert image.shape == (3, 224, 224) and label == 1
    # Val: a one-colour JPEG stays (nearly) one colour through resize + centre crop, so every
    # pixel must equal (colour / 255 - mean) / std (JPEG rounding allows 3 levels).
    image, label = val[5]
    assert image.shape == (3, 224, 224) and label == 2
    pixel = np.asarray(Image.open(folder / "val" / "n01484850" / "n01484850_val_1.JPEG").convert("RGB"))[0, 0]
    expected = (pixel / 255 - np.array(IMAGENET_MEAN)) / IMAGENET_STD
    np.testing.assert_allclose(image.mean(dim=(1, 2)).numpy(), expected, atol=3 / 255 / 0.224)


def test_imagenet_val_resizes_short_side_then_center_crops():
    image = Image.new("RGB", (512, 300))
    image.paste((255, 0, 0), (0, 0, 256, 300))  # left half red, right half black
    out = imagenet_transform(train=False)(image)
    # 512x300 -> short side 256: 437x256; centre crop 224 keeps columns 106..329 of 437, the red/
    # black edge sits at column 218.5 -> crop column ~112.
    red = (out[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0])[112]
    assert red[:108].min() > 0.95 and red[117:].max() < 0.05


def test_imagenet_val_keeps_train_class_indices(tmp_path):
    _make_imagenet(tmp_path)
    # A validation folder missing the first class must not shift the other labels.
    for f in (tmp_path / "imagenet" / "val" / "n01440764").iterdir():
        f.unlink()
    (tmp_path / "imagenet" / "val" / "n01440764").rmdir()
    val = build_imagenet(tmp_path, train=False)
    assert sorted(set(val.targets)) == [1, 2] and len(val.classes) == 3


def test_imagenet_flat_val_folder_is_explained(tmp_path):
    _make_imagenet(tmp_path)
    val = tmp_path / "imagenet" / "val"
    for c in list(val.iterdir()):
        for f in c.iterdir():
            f.rename(val / f.name)
        c.rmdir()
    with pytest.raises(ValueError) as info:
        build_imagenet(tmp_path, train=False)
    message = str(info.value)
    assert str(val) in message and "CLASS/*.JPEG" in message
    assert "found 6 images directly" in message and "valprep" in message


def test_imagenet_train_of_class_archives_is_explained(tmp_path):
    train = tmp_path / "imagenet" / "train"
    train.mkdir(parents=True)
    (train / "n01440764.tar").write_bytes(b"")  # ILSVRC2012_img_train.tar holds one tar per class
    with pytest.raises(ValueError, match=r"1 \.tar archives.*Extract each class archive"):
        build_imagenet(tmp_path, train=True)


def test_imagenet_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet.train.*does not exist"):
        build_imagenet(tmp_path, train=True)


def test_imagenet_corrupt_jpeg_names_the_file(tmp_path):
    folder = _make_imagenet(tmp_path, per_class=1)
    broken = folder / "train" / "n01443537" / "n01443537_train_0.JPEG"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated download
    train = build_imagenet(tmp_path, train=True)
    train[0]  # intact files still load
    with pytest.raises(ValueError, match="n01443537_train_0.JPEG"):
        train[1]


def test_imagenet_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    """Pillow's convert("RGB") clips a 16-bit gray PNG to white; the shared reader scales it."""
    folder = _make_imagenet(tmp_path, per_class=1)
    path = folder / "val" / "n01443537" / "extra16.png"
    Image.fromarray(np.full((40, 50), 30000, np.uint16)).save(path)  # mode I;16
    val = build_imagenet(tmp_path, train=False)
    index = [p for p, _ in val.samples].index(str(path))
    image, label = val[index]
    assert label == 1
    expected = (round(30000 * 255 / 65535) / 255 - np.array(IMAGENET_MEAN)) / IMAGENET_STD  # level 117
    np.testing.assert_allclose(image.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


# ------------------------------------------------------------------------------------------ digits
def test_digits_shapes_split_and_labels():
    from sklearn.datasets import load_digits

    reference = load_digits()
    train, test = Digits(train=True), Digits(train=False)
    assert len(train) + len(test) == len(reference.target) == 1797
    assert len(test) == 364  # ceil(n_class / 5) summed over the ten classes
    for split in (train, test):
        counts = torch.bincount(split.targets, minlength=10)
        assert counts.min() > 0
    np.testing.assert_array_equal(
        torch.bincount(train.targets, minlength=10) + torch.bincount(test.targets, minlength=10),
        np.bincount(reference.target),
    )
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_digits_upsampling_matches_the_8x8_images():
    """Box-averaging each 4x4 cell of a bilinear x4 upsampling gives the 8x8 image filtered by
    [1/8, 3/4, 1/8] along each axis (edges replicated): an exact check of the resize."""
    from sklearn.datasets import load_digits

    reference = load_digits()
    big, labels = digits_arrays(train=False)
    first_test = np.flatnonzero(reference.target == labels[0].item())[0]  # every 5th per class: 1st is test
    small = reference.images[first_test] / 16.0
    padded = np.pad(small, 1, mode="edge")
    rows = padded[:-2] / 8 + padded[1:-1] * 3 / 4 + padded[2:] / 8
    expected = rows[:, :-2] / 8 + rows[:, 1:-1] * 3 / 4 + rows[:, 2:] / 8
    cells = big[0, 0].reshape(8, 4, 8, 4).mean(dim=(1, 3)).numpy()
    np.testing.assert_allclose(cells, expected, atol=1e-5)


def test_digits_train_normalised_by_train_statistics():
    train = Digits(train=True)
    stacked = torch.stack([train.transform.transforms[-1](img) for img in train.images[:500]])
    raw = train.images
    mean, std = raw.mean().item(), raw.std().item()
    assert abs(((raw[:500] - mean) / std - stacked).abs().max().item()) < 1e-5


def test_cifar100_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.error

    def offline(url, root, filename=None, md5=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(ValueError, match=r"could not download CIFAR-100 .*name resolution.*extract it into"):
        build_cifar100(tmp_path, train=True, download=True)


def test_cifar100_download_skipped_when_files_are_there(tmp_path, skip_md5, monkeypatch):
    written = _make_cifar100(tmp_path)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", lambda *a, **k: pytest.fail("downloaded"))
    assert build_cifar100(tmp_path, train=False, download=True).targets == written["test"][1]


def test_cifar100_download_fetches_when_missing(tmp_path, skip_md5, monkeypatch):
    fetched = []

    def fake_download(url, root, filename=None, md5=None):
        fetched.append((url, filename))
        _make_cifar100(tmp_path)  # what extracting the official archive leaves in root

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    assert len(build_cifar100(tmp_path, train=True, download=True)) == 6
    assert fetched == [(tv_cifar.CIFAR100.url, "cifar-100-python.tar.gz")]
