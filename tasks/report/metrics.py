"""What each task's per-sample results (``per_sample.npz``) mean to a paired comparison.

For every task, :func:`metric_specs` names the metrics a comparison reports and says, for each,
which items a run was scored on (their keys, to line up two runs item by item) and how the
metric is computed from item weights (see :mod:`tasks.report.stats`). The arrays are the ones
the tasks' evaluations return under ``"per_sample"``:

- ``sr``: ``{set}/names``, ``{set}/psnr``, ``{set}/ssim`` per evaluation set (per image);
- ``classify``: ``index`` (position in the evaluation set), ``top1`` and ``top5`` (0/1 per sample);
- ``parse``: ``index``, ``intersection`` and ``union`` (images x classes pixel counts), ``labelled``
  (labelled pixels per image);
- ``detect``: COCOeval's per-image matches (:func:`tasks.detect.coco_eval.per_image_matches`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from tasks.report.stats import COSTLY_RESAMPLES, RESAMPLES, Statistic, weighted_mean

PerSample = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a comparison: how it is named, read and judged."""

    name: str  # the runs' own metric name (psnr/Set5, top1_err, miou, mAP)
    label: str  # for people: "PSNR on Set5"
    unit: str  # of a difference: "dB", "pts" (percentage points), "AP" (AP points), "" (SSIM)
    mode: str  # "max": higher is better; "min": lower is better
    digits: int
    resamples: int
    keys: str  # the array that names the items a run was scored on
    # The metric over item weights, with the run's items put in the order ``positions`` gives
    # (``positions[i]``: where the i-th item of the comparison sits in this run's arrays).
    statistic: Callable[[PerSample, np.ndarray], Statistic]
    correct: Callable[[PerSample, np.ndarray], np.ndarray] | None = None  # 0/1 per item, for McNemar


def align(reference: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Positions in ``keys`` of each item of ``reference``; ValueError unless both hold the same
    items once each (two runs scored on different items are not a pair)."""
    reference, keys = np.asarray(reference), np.asarray(keys)
    if len(np.unique(reference)) != len(reference):
        raise ValueError("an item appears twice in the per-sample results")
    ref_order, order = np.argsort(reference, kind="stable"), np.argsort(keys, kind="stable")
    if reference.shape != keys.shape or not np.array_equal(reference[ref_order], keys[order]):
        raise ValueError("the runs were scored on different items")
    positions = np.empty(len(reference), dtype=np.int64)
    positions[ref_order] = order
    return positions


# -- super-resolution --------------------------------------------------------------------------
def _column_mean(name: str, scale: float = 1.0, complement: bool = False):
    """The weighted mean of one per-item column (``100 * (1 - mean)`` for an error from hits)."""
    def statistic(per_sample: PerSample, positions: np.ndarray) -> Statistic:
        mean = weighted_mean(np.asarray(per_sample[name], dtype=np.float64)[positions])
        return (lambda w: scale * (1.0 - mean(w))) if complement else (lambda w: scale * mean(w))
    return statistic


def _sr_specs(per_sample: PerSample) -> list[MetricSpec]:
    sets = [key[: -len("/psnr")] for key in per_sample if key.endswith("/psnr")]
    return [MetricSpec(f"{kind}/{name}", f"{kind.upper()} on {name}", unit, "max", digits,
                       RESAMPLES, f"{name}/names", _column_mean(f"{name}/{kind}"))
            for name in sets for kind, unit, digits in (("psnr", "dB", 2), ("ssim", "", 4))]


# -- classification ----------------------------------------------------------------------------
def _hits(name: str):
    return lambda per_sample, positions: np.asarray(per_sample[name], dtype=bool)[positions]


def _classify_specs(per_sample: PerSample) -> list[MetricSpec]:
    return [MetricSpec(f"{k}_err", f"top-{k[-1]} error", "pts", "min", 2, RESAMPLES, "index",
                       _column_mean(k, 100.0, complement=True), _hits(k)) for k in ("top1", "top5")]


# -- scene parsing -----------------------------------------------------------------------------
def _pooled_miou(per_sample: PerSample, positions: np.ndarray) -> Statistic:
    """mIoU pooled over the drawn images: per-class sums of intersections over sums of unions,
    averaged over the classes whose union is not empty (as ``tasks.parse.metrics``)."""
    intersection = np.asarray(per_sample["intersection"], dtype=np.float64)[positions]
    union = np.asarray(per_sample["union"], dtype=np.float64)[positions]

    def statistic(weights: np.ndarray) -> np.ndarray:
        inter, uni = weights @ intersection, weights @ union
        with warnings.catch_warnings():  # a resample without any labelled class: NaN, without a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return 100.0 * np.nanmean(np.divide(inter, uni, out=np.full_like(inter, np.nan), where=uni > 0), axis=1)
    return statistic


def _pooled_pixel_accuracy(per_sample: PerSample, positions: np.ndarray) -> Statistic:
    correct = np.asarray(per_sample["intersection"], dtype=np.float64)[positions].sum(axis=1)
    labelled = np.asarray(per_sample["labelled"], dtype=np.float64)[positions]
    return lambda weights: 100.0 * (weights @ correct) / (weights @ labelled)


def _parse_specs(per_sample: PerSample) -> list[MetricSpec]:
    return [MetricSpec("miou", "mIoU", "pts", "max", 2, RESAMPLES, "index", _pooled_miou),
            MetricSpec("pixel_acc", "pixel accuracy", "pts", "max", 2, RESAMPLES, "index", _pooled_pixel_accuracy)]


# -- detection ---------------------------------------------------------------------------------
# COCOeval's 101 recall points.
_RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1, endpoint=True)
_ELEMENTS_PER_BLOCK = 2_000_000


class WeightedCocoAP:
    """COCOeval's ``accumulate`` (area "all", 100 detections per image) with image weights.

    Detections of one category are ranked by score once, in COCOeval's order (image by image,
    then a stable sort by score); a resample only changes how much each detection and each
    ground truth counts, so the precision-recall curve is re-accumulated with weighted cumulative
    sums and read at the 101 recall points as COCOeval does. With unit weights it gives
    COCOeval's own AP for every IoU threshold.
    """

    def __init__(self, per_sample: PerSample, positions: np.ndarray, thresholds: slice | list[int] = slice(None)):
        n_items = len(positions)
        item_of = np.empty(n_items, dtype=np.int64)
        item_of[positions] = np.arange(n_items)  # this run's image position -> comparison item
        det_item = item_of[np.asarray(per_sample["det_image"], dtype=np.int64)]
        det_category = np.asarray(per_sample["det_category"])
        score = np.asarray(per_sample["det_score"], dtype=np.float64)
        matched = np.asarray(per_sample["det_matched"], dtype=bool)[:, thresholds]
        ignored = np.asarray(per_sample["det_ignored"], dtype=bool)[:, thresholds]
        gt_item = item_of[np.asarray(per_sample["gt_image"], dtype=np.int64)]
        gt_category = np.asarray(per_sample["gt_category"])
        gt_count = np.asarray(per_sample["gt_count"], dtype=np.float64)
        self.categories = []
        for category in np.unique(np.concatenate([det_category, gt_category])):
            mine = np.flatnonzero(det_category == category)
            mine = mine[np.argsort(-score[mine], kind="mergesort")]  # COCOeval's ranking
            counted = ~ignored[mine].T  # (T, D): a detection on a crowd region counts neither way
            truth = gt_category == category
            # float32 halves the memory traffic of the cumulative sums, which stay exact (integer
            # weights, far fewer than 2**24 detections); recalls are divided in float64.
            self.categories.append(_Category(det_item[mine], (matched[mine].T & counted).astype(np.float32),
                                             None if counted.all() else counted.astype(np.float32),
                                             gt_item[truth], gt_count[truth]))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """Mean AP over the categories with ground truth and the chosen IoU thresholds, per row."""
        total = np.zeros(len(weights))
        counted = np.zeros(len(weights))
        for category in self.categories:
            positives = weights[:, category.gt_items] @ category.gt_counts  # ground truths that count
            valid = positives > 0
            total += np.where(valid, category.average_precision(weights, positives), 0.0)
            counted += valid
        return np.divide(total, counted, out=np.full(len(weights), np.nan), where=counted > 0)


@dataclass(frozen=True)
class _Category:
    items: np.ndarray  # (D,) the comparison item (image) of each ranked detection
    hits: np.ndarray  # (T, D) 1 where the detection matches a ground truth at that IoU threshold
    counted: np.ndarray | None  # (T, D) 0 where it is ignored (crowd); None: none is
    gt_items: np.ndarray
    gt_counts: np.ndarray

    def average_precision(self, weights: np.ndarray, positives: np.ndarray) -> np.ndarray:
        """(R,) AP of the category, averaged over its thresholds."""
        thresholds, count = self.hits.shape
        if count == 0:
            return np.zeros(len(weights))  # ground truth and no detection: precision 0 everywhere
        block = max(1, _ELEMENTS_PER_BLOCK // (count * thresholds))
        out = []
        for start in range(0, len(weights), block):
            w = weights[start:start + block, self.items].astype(np.float32)  # (r, D)
            true_positives = np.cumsum(w[:, None, :] * self.hits, axis=2)  # (r, T, D)
            # Detections so far: the same at every threshold unless some are ignored.
            detections = (np.cumsum(w, axis=1)[:, None, :] if self.counted is None
                          else np.cumsum(w[:, None, :] * self.counted, axis=2))
            # A resample without this category's ground truth has no true positive either (its
            # recall, 0 here, is not used: the category is left out of that resample's mean).
            recall = true_positives / np.maximum(positives[start:start + block], 1.0)[:, None, None]
            precision = true_positives / (detections + np.spacing(np.float32(1)))
            precision = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1]  # COCOeval's envelope
            out.append(_precision_at_recalls(recall, precision).mean(axis=(1, 2)))
        return np.concatenate(out)


def _precision_at_recalls(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(r, T, 101): for each curve, the precision at the first point reaching each recall point
    (0 where the curve never reaches it), i.e. COCOeval's ``searchsorted(rc, recThrs, 'left')``."""
    rows, thresholds, count = recall.shape
    curves, points = rows * thresholds, len(_RECALL_POINTS)
    # How many recall points each point of a curve reaches (the same float comparisons as
    # COCOeval's); the first point reaching recall point j is the first whose count exceeds j.
    reached = np.searchsorted(_RECALL_POINTS, recall.reshape(curves, count), side="right")
    # One integer searchsorted over all curves at once, each curve shifted by its own offset
    # (shifting the float recalls instead would round away COCOeval's exact ties).
    offset = (points + 1) * np.arange(curves)[:, None]
    found = np.searchsorted((reached + offset).ravel(), (np.arange(points)[None, :] + offset).ravel(), side="right")
    found = found.reshape(curves, points) - count * np.arange(curves)[:, None]
    inside = found < count
    values = np.take_along_axis(precision.reshape(curves, count), np.minimum(found, count - 1), axis=1)
    return np.where(inside, values, 0.0).reshape(rows, thresholds, points)


def _coco_ap(thresholds: slice | list[int]):
    def statistic(per_sample: PerSample, positions: np.ndarray) -> Statistic:
        ap = WeightedCocoAP(per_sample, positions, thresholds)
        return lambda weights: 100.0 * ap(weights)
    return statistic


def _detect_specs(per_sample: PerSample) -> list[MetricSpec]:
    iou = [round(float(t), 2) for t in per_sample["iou_thresholds"]]
    specs = [MetricSpec("mAP", "box mAP@[.5:.95]", "AP", "max", 2, COSTLY_RESAMPLES, "image_id", _coco_ap(slice(None)))]
    for threshold, key in ((0.5, "AP50"), (0.75, "AP75")):
        if threshold in iou:
            specs.append(MetricSpec(key, f"box AP@{threshold:g}", "AP", "max", 2, COSTLY_RESAMPLES, "image_id",
                                    _coco_ap([iou.index(threshold)])))
    return specs


_TASKS = {"sr": _sr_specs, "classify": _classify_specs, "parse": _parse_specs, "detect": _detect_specs}


def metric_specs(task: str, per_sample: PerSample) -> list[MetricSpec]:
    """The metrics a comparison of ``task`` runs reports, read from one run's per-sample arrays."""
    if task not in _TASKS:
        raise ValueError(f"no per-sample comparison for task {task!r} (known: {', '.join(_TASKS)})")
    return _TASKS[task](per_sample)
