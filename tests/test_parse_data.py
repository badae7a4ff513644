"""ADE20K-layout loading: label shift, ignore padding, augmentation alignment, clear errors."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.ade20k import (
    ADE20K, ADE20K_CLASSES, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, SegmentationFolder, TrainTransform,
    collate_segmentation, colorize, scaled_size,
)


@pytest.fixture()
def ade_root(tmp_path, write_tiny_ade20k):
    return write_tiny_ade20k(tmp_path)


def test_label_shift_and_class_names(ade_root):
    data = ADE20K(ade_root, "val")
    assert len(data) == 3 and len(ADE20K_CLASSES) == 150 == len(set(ADE20K_CLASSES))
    raw = np.array(Image.open(data.samples[0][1]))
    label = data[0]["label"].numpy()
    assert label.shape == raw.shape == (64, 80)
    expected = raw.astype(np.int64) - 1
    expected[raw == 0] = IGNORE_INDEX
    assert np.array_equal(label, expected)
    assert set(np.unique(label)) == {0, 4, 149, IGNORE_INDEX}


def test_image_normalised_and_aligned(ade_root):
    item = ADE20K(ade_root, "val")[1]
    image = item["image"] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    red_where_class0 = image[0][item["label"] == 0].mean() - image[2][item["label"] == 0].mean()
    assert red_where_class0 > 0.6  # pixels of raw class 1 are red in the image


def test_collate_pads_labels_with_ignore_never_a_class(ade_root):
    data = ADE20K(ade_root, "val")
    batch = collate_segmentation([data[0], data[1]])  # 64x80 and 80x64 -> 96x96
    assert batch["image"].shape == (2, 3, 96, 96) and batch["label"].shape == (2, 96, 96)
    assert batch["size"].tolist() == [[64, 80], [80, 64]]
    padded = torch.ones(2, 96, 96, dtype=torch.bool)
    padded[0, :64, :80] = False
    padded[1, :80, :64] = False
    assert (batch["label"][padded] == IGNORE_INDEX).all()
    assert (batch["image"][padded.unsqueeze(1).expand(-1, 3, -1, -1)] == 0).all()
    assert torch.equal(batch["label"][0, :64, :80], data[0]["label"])
    assert torch.equal(batch["image"][1, :, :80, :64], data[1]["image"])


def test_train_transform_scale_cap_and_flip_alignment(ade_root):
    assert scaled_size(64, 400, 300, 1000) == (160, 1000)  # long side capped
    assert scaled_size(400, 300, 450, 1000) == (600, 450)
    data = ADE20K(ade_root, "train")
    image, label, _ = data.load(0)
    flipped_image, flipped_label = TrainTransform(short_sides=(64,))(image, label, _FlipAlways())
    assert np.array_equal(np.array(flipped_label), np.array(label)[:, ::-1])
    assert np.array_equal(np.array(flipped_image), np.array(image)[:, ::-1])
    # Random rescale: short side from the list, nearest-neighbour labels stay aligned with the image.
    for seed in range(4):
        item = data[(0, seed)]
        assert min(item["label"].shape) in (300, 375, 450, 525, 600)
        assert set(item["label"].unique().tolist()) <= {0, 4, 149, IGNORE_INDEX}
        image = item["image"] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        mask = item["label"] == 4  # raw class 5 is green
        agree = (image[1][mask] > image[0][mask]).float().mean()
        assert agree > 0.97
        assert torch.equal(data[(0, seed)]["label"], item["label"])  # same key, same augmentation


class _FlipAlways(random.Random):
    def random(self):
        return 0.0


def test_segmentation_folder_offset_zero_and_255_ignored(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    label = np.zeros((8, 8), np.uint8)
    label[0, 0], label[1, 1] = 2, 255
    Image.fromarray(label).save(tmp_path / "lab" / "a.png")
    data = SegmentationFolder(tmp_path / "img", tmp_path / "lab", num_classes=3, label_offset=0)
    out = data[0]["label"]
    assert out[0, 0] == 2 and out[1, 1] == IGNORE_INDEX and out[2, 2] == 0
    label[2, 2] = 3
    Image.fromarray(label).save(tmp_path / "lab" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png.*\[3\].*num_classes=3"):
        data[0]


def test_label_value_above_class_count_names_file(ade_root):
    path = ade_root / "ADEChallengeData2016/annotations/validation/ADE_valid_00000001.png"
    label = np.array(Image.open(path))
    label[3, 3] = 151
    Image.fromarray(label).save(path)
    data = ADE20K(ade_root, "val")
    with pytest.raises(ValueError, match=r"ADE_valid_00000001\.png.*151"):
        data[1]


def test_missing_label_names_image(ade_root):
    (ade_root / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_train_00000002.jpg"):
        ADE20K(ade_root, "train")


def test_size_mismatch_names_both_files(ade_root):
    path = ade_root / "ADEChallengeData2016/annotations/validation/ADE_valid_00000000.png"
    Image.fromarray(np.ones((10, 10), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"ADE_valid_00000000\.jpg.*ADE_valid_00000000\.png"):
        ADE20K(ade_root, "val")[0]


def test_missing_folder_says_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ADEChallengeData2016/images/\{training,validation\}"):
        ADE20K(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        ADE20K(tmp_path, "test")


def test_colorize_ignore_black_and_classes_distinct():
    colours = colorize(np.array([[0, 1, 149, IGNORE_INDEX]]))
    assert colours[0, 3].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colours[0, :3].tolist()}) == 3 and colours[0, 0].any()


def test_ignore_index_must_be_8bit_and_not_a_class(tmp_path):
    with pytest.raises(ValueError, match="ignore_index=-1"):
        SegmentationFolder(tmp_path, tmp_path, num_classes=3, ignore_index=-1)
    with pytest.raises(ValueError, match="ignore_index=2"):
        SegmentationFolder(tmp_path, tmp_path, num_classes=3, ignore_index=2)


def test_16bit_and_rgba_images_read_like_the_sr_loader(tmp_path):
    """Pillow's convert("RGB") clips 16-bit gray to 255; the shared reader scales by 255/65535."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    values = np.linspace(0, 65535, 6 * 8).reshape(6, 8).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "img" / "a.png")
    rgba = np.random.default_rng(0).integers(0, 256, (6, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "img" / "b.png")
    for name in ("a", "b"):
        Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "lab" / f"{name}.png")
    data = SegmentationFolder(tmp_path / "img", tmp_path / "lab", num_classes=2)
    gray = np.asarray(data.load(0)[0])
    expected = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(gray[:, :, c], expected)
    np.testing.assert_array_equal(np.asarray(data.load(1)[0]), rgba[:, :, :3])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_broken_label_png_names_the_file(ade_root, damage):
    path = ade_root / "ADEChallengeData2016/annotations/validation/ADE_valid_00000002.png"
    if damage == "garbage":
        path.write_bytes(b"not a png")
    else:
        noisy = np.random.default_rng(0).integers(0, 151, (64, 80), dtype=np.uint8)
        Image.fromarray(noisy).save(path)
        path.write_bytes(path.read_bytes()[:300])
    data = ADE20K(ade_root, "val")
    with pytest.raises(ValueError, match=r"ADE_valid_00000002\.png.*cannot read label"):
        data[2]


def test_16bit_label_value_that_lands_on_the_ignore_index_is_an_error(tmp_path):
    """Raw 256 with offset 1 becomes 255 = the ignore index: out of range, not silently ignored."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    label = np.ones((4, 4), np.uint16)
    label[0, 0] = 256
    Image.fromarray(label).save(tmp_path / "lab" / "a.png")  # mode I;16
    data = SegmentationFolder(tmp_path / "img", tmp_path / "lab", num_classes=150, label_offset=1)
    with pytest.raises(ValueError, match=r"a\.png: label values \[256\]"):
        data[0]


def test_hidden_macos_resource_files_are_skipped(ade_root):
    images = ade_root / "ADEChallengeData2016" / "images" / "validation"
    (images / "._ADE_valid_00000000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert [p.name for p, _ in ADE20K(ade_root, "val").samples] == [
        "ADE_valid_00000000.jpg", "ADE_valid_00000001.jpg", "ADE_valid_00000002.jpg"]
