"""COCO box evaluation: perfect / empty / hand-computed detections through pycocotools."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("pycocotools")

from tasks.data.coco import CocoDetection, collate_detection, load_coco_api  # noqa: E402
from tasks.detect.coco_eval import (  # noqa: E402
    AP_KEYS, METRIC_KEYS, coco_metrics, detections_to_coco, evaluate_distributed, merge_records, run_cocoeval,
)


def evaluate_coco(coco_gt, results, image_ids=None) -> dict[str, float]:
    return coco_metrics(run_cocoeval(coco_gt, results, image_ids))


@pytest.fixture
def tiny(tmp_path, write_tiny_coco):
    root = write_tiny_coco(tmp_path, "val")
    return CocoDetection(root, split="val")


def perfect_outputs(data):
    """The ground truth as torchvision detections with score 1."""
    outputs, ids = [], []
    for image_id in data.ids:
        target = data.targets[image_id]
        outputs.append({"boxes": torch.from_numpy(target["boxes"]), "labels": torch.from_numpy(target["labels"]),
                        "scores": torch.ones(len(target["labels"]))})
        ids.append(image_id)
    return outputs, ids


def test_perfect_detections_score_one_everywhere(tiny):
    outputs, ids = perfect_outputs(tiny)
    results = detections_to_coco(outputs, ids)
    assert len(results) == 7
    first = results[0]  # xyxy (10, 10, 30, 30) -> xywh
    assert first["bbox"] == [10.0, 10.0, 20.0, 20.0] and first["category_id"] == 1 and first["image_id"] == 1
    metrics = evaluate_coco(tiny.coco, results)
    assert set(metrics) == set(METRIC_KEYS) and len(AP_KEYS) == 10
    for key, value in metrics.items():  # the tiny set has small, medium and large objects
        assert value == pytest.approx(1.0), key


def test_no_detections_score_zero(tiny):
    metrics = evaluate_coco(tiny.coco, [])
    assert set(metrics) == set(METRIC_KEYS) and all(v == 0.0 for v in metrics.values())
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}]
    assert detections_to_coco(empty * 3, [1, 2, 3]) == []


def test_no_detections_keep_cocoeval_minus_one_where_there_is_no_ground_truth(tmp_path):
    coco = one_box_coco(tmp_path, [(50, 50, 100, 100)])  # one large object only
    metrics = evaluate_coco(coco, [], image_ids=[1])
    assert metrics["mAP"] == 0.0 and all(metrics[k] == 0.0 for k in AP_KEYS) and metrics["AP_large"] == 0.0
    assert metrics["AP_small"] == -1.0 and metrics["AP_medium"] == -1.0  # as with any detections


def one_box_coco(tmp_path, boxes):
    """A COCO ground truth with one 300x300 image, category 1, the given xywh boxes."""
    content = {"images": [{"id": 1, "file_name": "a.jpg", "width": 300, "height": 300}],
               "categories": [{"id": 1, "name": "thing"}],
               "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": list(b),
                                "area": float(b[2] * b[3]), "iscrowd": 0} for i, b in enumerate(boxes)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(content))
    return load_coco_api(path)


def test_iou_thresholds_indexed_correctly(tmp_path):
    # Prediction covers 82% of a 100x100 box: IoU 0.82 matches at 0.50 .. 0.80 (7 thresholds), not
    # at 0.85 .. 0.95, so AP@[.5:.95] = 7/10 (hand computation of COCO's definition).
    coco = one_box_coco(tmp_path, [(50, 50, 100, 100)])
    results = [{"image_id": 1, "category_id": 1, "bbox": [50, 50, 100, 82], "score": 0.9}]
    metrics = evaluate_coco(coco, results)
    assert metrics["mAP"] == pytest.approx(0.7)
    assert [metrics[k] for k in AP_KEYS] == pytest.approx([1.0] * 7 + [0.0] * 3)
    assert metrics["AP_large"] == pytest.approx(0.7)  # 100^2 > 96^2
    assert metrics["AP_small"] == -1.0 and metrics["AP_medium"] == -1.0  # no such objects


def test_half_recall_gives_coco_101_point_ap(tmp_path):
    # Two objects, one found with precision 1: the 101-point interpolated precision is 1 for the
    # recall points 0, .01, ..., .50 (51 of them) and 0 afterwards -> AP = 51 / 101.
    coco = one_box_coco(tmp_path, [(10, 10, 50, 50), (150, 150, 50, 50)])
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.8}]
    metrics = evaluate_coco(coco, results)
    assert metrics["mAP"] == pytest.approx(51 / 101) and metrics["AP50"] == pytest.approx(51 / 101)


def test_padding_duplicates_are_counted_once(tiny):
    outputs, ids = perfect_outputs(tiny)
    records = [{"image_id": i, "detections": detections_to_coco([o], [i])} for o, i in zip(outputs, ids)]
    # a distributed sampler repeats the first image to even out the shards
    results, image_ids = merge_records(records + records[:1])
    assert image_ids == [1, 2, 3] and len(results) == 7
    assert evaluate_coco(tiny.coco, results, image_ids)["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(tiny.coco, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}])


class Oracle(torch.nn.Module):
    """Returns the ground truth of each image (recognised by its size) as its detections."""

    def __init__(self, data):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        outputs, _ = perfect_outputs(data)
        self.by_size = {tuple(data[i][0].shape[-2:]): outputs[i] for i in range(len(data))}

    def forward(self, images):
        return [self.by_size[tuple(image.shape[-2:])] for image in images]


def test_prediction_loop_with_a_model(tiny):
    loader = torch.utils.data.DataLoader(tiny, batch_size=2, collate_fn=collate_detection)
    metrics = evaluate_distributed(Oracle(tiny), loader, tiny.coco, accelerator=None, progress=False)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["AP_small"] == pytest.approx(1.0)


def test_per_threshold_aps_agree_with_cocoeval_summary(tiny):
    # Jittered ground truth with random scores plus false positives: imperfect, all thresholds differ.
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    generator = torch.Generator().manual_seed(0)
    results = []
    for ann in tiny.coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(2):
            jitter = (torch.rand(4, generator=generator) - 0.5) * 0.3 * torch.tensor([w, h, w, h])
            box = [x + jitter[0].item(), y + jitter[1].item(), w + jitter[2].item(), h + jitter[3].item()]
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box,
                            "score": torch.rand(1, generator=generator).item()})
    results.append({"image_id": 1, "category_id": 7, "bbox": [0, 0, 30, 30], "score": 0.99})
    metrics = evaluate_coco(tiny.coco, results)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(tiny.coco, tiny.coco.loadRes(results), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    stats = reference.stats  # COCO's own summary: AP, AP50, AP75, APs, APm, APl
    per_threshold = [metrics[k] for k in AP_KEYS]
    assert 0.05 < metrics["mAP"] < 0.95 and len(set(per_threshold)) > 3
    assert metrics["mAP"] == pytest.approx(stats[0]) == pytest.approx(sum(per_threshold) / 10)
    assert metrics["AP50"] == pytest.approx(stats[1]) and metrics["AP75"] == pytest.approx(stats[2])
    assert [metrics["AP_small"], metrics["AP_medium"], metrics["AP_large"]] == pytest.approx(list(stats[3:6]))
    assert per_threshold == sorted(per_threshold, reverse=True)  # stricter IoU, lower AP
