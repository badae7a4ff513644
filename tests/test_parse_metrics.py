"""Scene-parsing metrics against direct NumPy computations."""

import numpy as np
import pytest
import torch

from tasks.parse.metrics import confusion_matrix, scores_from_confusion, shard_indices

IGNORE = 255


def numpy_pooled_scores(preds, targets, num_classes):
    """Textbook definition, one class at a time with boolean masks, pooled over all images."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    correct = labelled = 0
    for pred, target in zip(preds, targets):
        valid = target != IGNORE
        correct += np.sum((pred == target) & valid)
        labelled += np.sum(valid)
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (target == c) & valid)
            union[c] += np.sum(((pred == c) | (target == c)) & valid)
    present = union > 0
    return correct / labelled, np.mean(inter[present] / union[present]), inter, union


def random_batch(rng, num_classes, shape):
    target = rng.integers(0, num_classes, size=shape)
    target[rng.random(shape) < 0.2] = IGNORE
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, num_classes, size=shape))
    pred[pred == IGNORE] = 0
    return pred, target


def test_hand_made_example():
    target = torch.tensor([[0, 0, 1, 1, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])  # the ignored pixel's prediction must not count
    matrix = confusion_matrix(pred, target, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    scores = scores_from_confusion(matrix, ["a", "b", "c"])
    assert scores["pixel_acc"] == pytest.approx(3 / 4)
    assert scores["per_class_iou"] == {"a": pytest.approx(1 / 2), "b": pytest.approx(2 / 3), "c": None}
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # class "c" has no union: left out
    assert scores["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)


def test_matches_numpy_pooled_over_images():
    rng = np.random.default_rng(0)
    num_classes = 7
    preds, targets = zip(*(random_batch(rng, num_classes, shape) for shape in [(9, 13), (20, 5), (4, 31)]))
    matrix = sum(confusion_matrix(torch.from_numpy(p)[None], torch.from_numpy(t)[None], num_classes)
                 for p, t in zip(preds, targets))
    scores = scores_from_confusion(matrix)
    acc, miou, inter, union = numpy_pooled_scores(preds, targets, num_classes)
    assert scores["pixel_acc"] == pytest.approx(acc, abs=1e-12)
    assert scores["miou"] == pytest.approx(miou, abs=1e-12)
    assert [scores["per_class_iou"][str(c)] for c in range(num_classes)] == pytest.approx(list(inter / union))
    # Pooled, not the mean of per-image mIoUs (which would give another number here).
    per_image = np.mean([numpy_pooled_scores([p], [t], num_classes)[1] for p, t in zip(preds, targets)])
    assert abs(per_image - miou) > 1e-4


def test_sharded_sum_equals_single_process():
    """What two processes with disjoint shards reduce to equals one process over everything."""
    rng = np.random.default_rng(1)
    images = [random_batch(rng, 5, (6, 7)) for _ in range(7)]  # odd count: a padding loader would duplicate
    full = sum(confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), 5) for p, t in images)
    shards = [shard_indices(len(images), rank, 2) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(len(images)))
    reduced = torch.zeros(5, 5, dtype=torch.long)
    for shard in shards:
        for i in shard:
            pred, target = images[i]
            reduced += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 5)
    assert torch.equal(reduced, full)


def test_bad_values_raise():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), num_classes=3)
