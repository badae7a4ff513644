"""COCO loading: the released on-disk layout, box conversion, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from tasks.data.coco import CocoDetection, coco_paths, collate_detection, hflip  # noqa: E402
from conftest import COCO_BAD_IMAGES, COCO_CLEAN_IMAGES  # noqa: E402


def test_released_layout_parsed_into_torchvision_targets(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "val")
    data = CocoDetection(root, split="val")
    assert len(data) == 3 and data.num_classes == 8 and data.categories[7] == "car"
    image, target = data[2]  # image id 3, 200x150
    assert image.shape == (3, 150, 200) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["image_id"] == 3
    # xywh -> xyxy
    expected = torch.tensor([[20, 20, 60, 60], [100, 40, 190, 140], [150, 10, 180, 35]], dtype=torch.float32)
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [3, 7, 1] and target["labels"].dtype == torch.int64
    # The pixels inside the first box are the bright rectangle written there.
    assert image[:, 25:55, 25:55].mean() > 0.55 and image[:, 0:15, 0:15].mean() < 0.3

    images, targets = collate_detection([data[0], data[1]])
    assert [i.shape[-2:] for i in images] == [(120, 160), (128, 128)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_horizontal_flip_moves_boxes_with_pixels():
    image = torch.zeros(3, 10, 20)
    image[:, 2:5, 1:4] = 1.0  # object at x 1..4
    target = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "labels": torch.tensor([1])}
    flipped, flipped_target = hflip(image, target)
    x1, y1, x2, y2 = flipped_target["boxes"][0].int().tolist()
    assert (x1, y1, x2, y2) == (16, 2, 19, 5)
    assert flipped[:, y1:y2, x1:x2].min() == 1.0 and flipped.sum() == image.sum()
    assert target["boxes"][0, 0] == 1.0  # input untouched


def test_training_flip_is_random_consistent_and_seeded(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "train")
    data = CocoDetection(root, split="train")
    lefts = {}
    for seed in range(30):
        image, target = data[(0, seed)]  # the sampler's (index, sample_seed) key
        box = target["boxes"][0].int().tolist()
        lefts[seed] = box[0]
        # the bright object is always under its (possibly mirrored) box
        assert image[:, box[1]:box[3], box[0]:box[2]].mean() > 0.55
        assert data[(0, seed)][1]["boxes"][0, 0] == box[0]  # same key, same flip
    assert set(lefts.values()) == {10, 130}  # 160 - (10 + 20) when mirrored
    assert CocoDetection(root, split="train", train=False)[0][1]["boxes"][0, 0] == 10  # no flip


def test_bad_boxes_clipped_dropped_and_counted(tmp_path, write_tiny_coco, capsys):
    root = write_tiny_coco(tmp_path, "val", COCO_CLEAN_IMAGES + COCO_BAD_IMAGES)
    data = CocoDetection(root, split="val")  # evaluation keeps images without boxes
    assert data.stats["clipped_boxes"] == 1 and data.stats["dropped_boxes"] == 1
    warning = capsys.readouterr().err
    assert "clipped" in warning and "instances_val2017.json" in warning
    assert len(data) == 5
    image, target = data[3]
    # (60, 80, 110, 140) clipped to the 96x128 image; the crowd region is not a training target
    torch.testing.assert_close(target["boxes"], torch.tensor([[60.0, 80.0, 96.0, 128.0]]))
    assert target["labels"].tolist() == [3]
    image, target = data[4]  # empty annotation list: a valid negative image
    assert image.shape == (3, 64, 64) and target["boxes"].shape == (0, 4) and target["labels"].numel() == 0


def test_training_skips_images_without_boxes(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "train", COCO_CLEAN_IMAGES + COCO_BAD_IMAGES)
    data = CocoDetection(root, split="train")
    assert len(data) == 4 and 5 not in data.ids
    assert data.stats["removed_images"] == 1


def test_missing_image_file_is_named(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "val")
    (root / "coco" / "val2017" / "000000000002.jpg").unlink()
    data = CocoDetection(root, split="val")
    with pytest.raises(FileNotFoundError, match="000000000002.jpg"):
        data[1]


def test_wrong_image_size_is_named(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "val")
    Image.new("RGB", (10, 10)).save(root / "coco" / "val2017" / "000000000001.jpg")
    with pytest.raises(ValueError, match="000000000001.jpg.*10x10"):
        CocoDetection(root, split="val")[0]


def test_missing_coco_explains_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_val2017.json.*cocodataset.org"):
        coco_paths(tmp_path, "val")
    with pytest.raises(ValueError, match="split"):
        coco_paths(tmp_path, "test")
    bad = tmp_path / "coco" / "annotations"
    bad.mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    (bad / "instances_val2017.json").write_text(json.dumps({"images": "nope"}))
    with pytest.raises(ValueError, match="instances_val2017.json"):
        CocoDetection(tmp_path, split="val")


def _rewrite_annotations(root: Path, change) -> None:
    path = root / "coco" / "annotations" / "instances_val2017.json"
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["annotations"][0].update(category_id=99), r"image id 1: category ids \[99\].*\[1, 3, 7\]"),
    (lambda c: c["annotations"][0].pop("bbox"), r"image id 1: annotation 1 has no 'bbox'"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), r"image id 1: annotation 1: non-finite"),
    (lambda c: c["images"][1].pop("width"), r"image id 2: image records need .*'width'"),
])
def test_bad_annotations_are_named(tmp_path, write_tiny_coco, change, message):
    root = write_tiny_coco(tmp_path, "val")
    _rewrite_annotations(root, change)
    with pytest.raises(ValueError, match=r"instances_val2017\.json, " + message):
        CocoDetection(root, split="val")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("categories"), r"\.json is not a COCO instances annotation file: it needs a list of "
                                    r"'categories' and has none"),
    (lambda c: c.pop("images"), r"\.json is not a COCO instances annotation file: it needs a list of 'images'"),
    (lambda c: c.update(images=[]), r"\.json lists no images"),
    (lambda c: [a.pop("area") for a in c["annotations"]],
     r"\.json, image id 1: annotation 1 has no 'area' \(COCO evaluation needs them for every box\); 10 of 10"),
    (lambda c: c["annotations"][2].pop("iscrowd"), r"\.json, image id 2: annotation 3 has no 'iscrowd'"),
])
def test_annotation_files_missing_what_pycocotools_needs_are_named(tmp_path, write_tiny_coco, change, message):
    """pycocotools would raise a KeyError (categories), the loader a misleading "no images left",
    COCOeval a KeyError after training (area, iscrowd): each is found when the set is built."""
    root = write_tiny_coco(tmp_path, "val", images=COCO_CLEAN_IMAGES + COCO_BAD_IMAGES)
    _rewrite_annotations(root, change)
    with pytest.raises(ValueError, match=message):
        CocoDetection(root, split="val")


def test_training_annotations_need_no_area(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "train")
    path = root / "coco" / "annotations" / "instances_train2017.json"
    content = json.loads(path.read_text())
    for annotation in content["annotations"]:
        annotation.pop("area")
    path.write_text(json.dumps(content))
    assert len(CocoDetection(root, split="train")) == 3  # boxes are enough to train on


def test_annotation_file_that_is_a_list_is_named(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "val")
    (root / "coco" / "annotations" / "instances_val2017.json").write_text("[]")
    with pytest.raises(ValueError, match="instances_val2017.json is not a COCO"):
        CocoDetection(root, split="val")


def test_gray_16bit_and_truncated_images(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "val")
    values = np.full((120, 160), 30000, np.uint16)  # round(30000 * 255 / 65535) = 117, not clipped to 255
    Image.fromarray(values).save(root / "coco" / "val2017" / "gray16.png")
    _rewrite_annotations(root, lambda c: c["images"][0].update(file_name="gray16.png"))
    data = CocoDetection(root, split="val")
    image = data[0][0]
    assert image.shape == (3, 120, 160)
    torch.testing.assert_close(image, torch.full_like(image, 117 / 255))
    path = root / "coco" / "val2017" / "000000000002.jpg"
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ValueError, match="000000000002.jpg"):
        data[1]


def test_category_id_zero_is_refused(tmp_path, write_tiny_coco):
    """Label 0 is torchvision's background: a category 0 would be trained as background."""
    root = write_tiny_coco(tmp_path, "val")
    _rewrite_annotations(root, lambda c: [c["categories"][0].update(id=0),
                                          *[a.update(category_id=0) for a in c["annotations"] if a["category_id"] == 1]])
    with pytest.raises(ValueError, match=r"instances_val2017\.json: category ids must be integers >= 1.*\[0, 3, 7\]"):
        CocoDetection(root, split="val")
