"""Scene-parsing metrics pooled over a whole data set, from one confusion matrix.

Convention (CSAILVision / mmsegmentation): intersections and unions are summed over all images
first, then divided, so large and small images weigh by their pixels. Pixels whose label is the
ignore index never count. The matrix lives on the model's device (``torch.bincount``) and is
summed across processes, which is exact as long as every process sees a disjoint share of the
images (see :func:`shard_indices`).

Classes whose union is 0 (absent from the labels and never predicted) have no defined IoU; they
are left out of the mean (a NaN-mean, as mmsegmentation does). CSAILVision divides by
``union + 1e-10`` instead, which scores such classes 0 and lowers the mean. On the ADE20K
validation set every one of the 150 classes occurs, so both give the same number there.
"""

from __future__ import annotations

from typing import Sequence

import torch


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``num_classes x num_classes`` int64 counts, rows = ground truth, columns = prediction."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    target = target.reshape(-1).long()
    prediction = prediction.reshape(-1).long().to(target.device)
    keep = target != ignore_index
    target, prediction = target[keep], prediction[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target holds values outside 0..{num_classes - 1} other than ignore_index={ignore_index}")
    if prediction.numel() and (int(prediction.min()) < 0 or int(prediction.max()) >= num_classes):
        raise ValueError(f"prediction holds values outside 0..{num_classes - 1}")
    counts = torch.bincount(target * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores_from_confusion(matrix: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Pixel accuracy, mean accuracy, mIoU (fractions in [0, 1]) and per-class IoU from a matrix.

    ``per_class_iou`` maps class name -> IoU, or ``None`` for a class with an empty union.
    """
    matrix = matrix.double().cpu()
    intersection = matrix.diag()
    labelled = matrix.sum(dim=1)
    union = labelled + matrix.sum(dim=0) - intersection
    present = union > 0
    iou = torch.where(present, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))
    accuracy = torch.where(labelled > 0, intersection / labelled.clamp(min=1), torch.full_like(union, float("nan")))
    total = float(matrix.sum())
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    return {
        "pixel_acc": float(intersection.sum()) / total if total else float("nan"),
        "mean_acc": float(accuracy.nanmean()) if (labelled > 0).any() else float("nan"),
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "classes_present": int(present.sum()),
        "labelled_pixels": int(total),
        "per_class_iou": {name: (float(value) if ok else None) for name, value, ok in zip(names, iou, present)},
    }


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Disjoint, non-padded share of ``range(length)`` for process ``rank``.

    Accelerate's prepared loaders repeat samples to even out the last batch; summing confusion
    matrices from such loaders would count those images twice, so evaluation shards by hand.
    """
    return list(range(rank, length, world_size))
