"""COCO box evaluation with pycocotools' COCOeval, with the breakdown of the paper's Table 5.

Metrics are fractions in [0, 1] (COCO's own convention; the paper prints percentages):
``mAP`` (AP@[.5:.95]), ``AP50`` ... ``AP95`` (every IoU threshold of the [.5:.95] range),
``AP_small``, ``AP_medium``, ``AP_large`` (area < 32^2, 32^2..96^2, > 96^2). As in COCOeval, -1 means
the data set has no ground truth for that entry (e.g. no large object).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from tasks.utils.progress import progress as progress_bar

AP_KEYS = tuple(f"AP{percent}" for percent in range(50, 100, 5))  # COCOeval's IoU thresholds
METRIC_KEYS = ("mAP",) + AP_KEYS + ("AP_small", "AP_medium", "AP_large")


def detections_to_coco(outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int]) -> list[dict]:
    """torchvision detections (xyxy boxes, labels = category ids, scores) -> COCO results list."""
    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels = output["labels"].detach().cpu().tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        for box, label, score in zip(xywh, labels, scores):
            results.append({"image_id": int(image_id), "category_id": int(label),
                            "bbox": [round(v, 3) for v in box], "score": float(score)})
    return results


def _empty_results(coco_gt):
    """A detection set without detections for COCOeval (``loadRes`` rejects an empty list)."""
    from pycocotools.coco import COCO

    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset.get("images", [])),
                       "categories": list(coco_gt.dataset.get("categories", [])), "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def run_cocoeval(coco_gt, results: list[dict], image_ids: Iterable[int] | None = None):
    """COCOeval (bbox) of ``results`` against ``coco_gt`` (a pycocotools ``COCO``), evaluated,
    accumulated and summarised.

    ``image_ids`` restricts the evaluation to the images that were actually run (all images of
    ``coco_gt`` otherwise). No detections at all scores 0 wherever there is ground truth and
    -1 where there is none (e.g. ``AP_large`` without large objects), as COCOeval does."""
    from pycocotools.cocoeval import COCOeval

    known = set(coco_gt.getImgIds())
    stray = {r["image_id"] for r in results} - known
    if stray:
        raise ValueError(f"detections for image ids not in the ground truth: {sorted(stray)[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        coco_dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_metrics(evaluator) -> dict[str, float]:
    """``METRIC_KEYS`` (mAP, AP per IoU threshold, AP by object size) of a summarised ``COCOeval``."""
    stats = evaluator.stats
    # precision: [iou threshold, recall, category, area range, max detections]; area 0 = all,
    # max detections index 2 = 100, as COCOeval's own summary.
    precision = evaluator.eval["precision"]
    metrics = {"mAP": float(stats[0])}
    for index, key in enumerate(AP_KEYS):
        values = precision[index, :, :, 0, 2]
        values = values[values > -1]  # -1: no ground truth of that category
        metrics[key] = float(values.mean()) if values.size else -1.0
    metrics.update(AP_small=float(stats[3]), AP_medium=float(stats[4]), AP_large=float(stats[5]))
    return metrics


def per_image_matches(evaluator) -> dict[str, np.ndarray]:
    """What a paired bootstrap over images needs from an evaluated ``COCOeval``, as arrays.

    The detections COCOeval ranks for AP (area "all", the 100 best of each image and category),
    in its own order (category, then image, then score): ``det_image`` (position in
    ``image_id``), ``det_category``, ``det_score``, and per IoU threshold (``iou_thresholds``)
    ``det_matched`` / ``det_ignored`` (matched a ground truth / matched a crowd region); and per
    image and category with any, ``gt_count``: the ground truths that count (not crowd) at
    ``gt_image``, ``gt_category``. AP can be re-accumulated from these on any weighting of the
    images (``tasks.report.metrics.WeightedCocoAP``) without the annotation file. The boxes
    themselves are left out: a comparison never needs them, and they would double the file.
    """
    params = evaluator.params
    position = {int(image_id): i for i, image_id in enumerate(params.imgIds)}
    everything, max_detections = list(params.areaRng[0]), params.maxDets[-1]
    det = {"image": [], "category": [], "score": [], "matched": [], "ignored": []}
    gt = []  # (image, category, ground truths that count)
    for entry in evaluator.evalImgs:
        if entry is None or list(entry["aRng"]) != everything or entry["maxDet"] != max_detections:
            continue
        image, category = position[int(entry["image_id"])], int(entry["category_id"])
        scores = np.asarray(entry["dtScores"][:max_detections], dtype=np.float64)
        det["image"].append(np.full(len(scores), image))
        det["category"].append(np.full(len(scores), category))
        det["score"].append(scores)
        det["matched"].append(np.asarray(entry["dtMatches"])[:, :max_detections].T > 0)
        det["ignored"].append(np.asarray(entry["dtIgnore"])[:, :max_detections].T.astype(bool))
        counted = int(np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0))
        if counted:
            gt.append((image, category, counted))
    gt = np.asarray(gt, dtype=np.int32).reshape(-1, 3)
    thresholds = len(params.iouThrs)

    def joined(parts, dtype, shape=(0,)):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    return {
        "image_id": np.asarray(params.imgIds, dtype=np.int64),
        "iou_thresholds": np.asarray(params.iouThrs, dtype=np.float64),
        "det_image": joined(det["image"], np.int32), "det_category": joined(det["category"], np.int32),
        "det_score": joined(det["score"], np.float64),
        "det_matched": joined(det["matched"], bool, (0, thresholds)),
        "det_ignored": joined(det["ignored"], bool, (0, thresholds)),
        "gt_image": gt[:, 0], "gt_category": gt[:, 1], "gt_count": gt[:, 2],
    }


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Iterable, device: torch.device,
            progress: bool = False) -> list[dict[str, Any]]:
    """Run ``model`` on ``loader``; one record ``{"image_id", "detections"}`` per image, on CPU."""
    was_training = model.training
    model.eval()
    records = []
    for images, targets in progress_bar(loader, desc="detect", leave=False, disable=not progress):
        outputs = model([image.to(device, non_blocking=True) for image in images])
        for output, target in zip(outputs, targets):
            image_id = int(target["image_id"])
            records.append({"image_id": image_id, "detections": detections_to_coco([output], [image_id])})
    model.train(was_training)
    return records


def merge_records(records: Iterable[dict[str, Any]]) -> tuple[list[dict], list[int]]:
    """Per-image records from all processes -> (results, image ids), each image once.

    Distributed samplers pad the last batch by repeating images; the first copy is kept."""
    seen: dict[int, list[dict]] = {}
    for record in records:
        seen.setdefault(int(record["image_id"]), record["detections"])
    results = [d for detections in seen.values() for d in detections]
    return results, sorted(seen)


def evaluate_distributed(model, loader, coco_gt, accelerator=None, progress: bool = True,
                         per_image: bool = False) -> dict[str, Any]:
    """Predict on every process's shard, gather on the main process, run COCOeval there once,
    and give every process the same metrics. ``per_image``: the main process's metrics also hold
    ``"per_sample"``, the :func:`per_image_matches` of that evaluation."""
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    main = accelerator is None or accelerator.is_main_process
    records = predict(model, loader, device, progress=progress and main)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list, gather_object

        records = gather_object(records)
    evaluator = None
    if main:
        results, image_ids = merge_records(records)
        evaluator = run_cocoeval(coco_gt, results, image_ids)
    metrics = [coco_metrics(evaluator) if main else None]
    if accelerator is not None and accelerator.num_processes > 1:
        broadcast_object_list(metrics)
    if per_image and main:  # the trainer keeps the main process's copy only
        return {**metrics[0], "per_sample": per_image_matches(evaluator)}
    return metrics[0]
