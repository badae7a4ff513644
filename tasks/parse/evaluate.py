"""Scene-parsing evaluation: single scale (the image at its own size) or multi-scale + flip.

Single scale runs each validation image at its original size, padded to a multiple of 32 for the
network and cropped back before scoring. Multi-scale follows CSAILVision's test recipe: the image
is rescaled to each short side of ``scales`` (long side capped at 1000), the softmax
probabilities are brought back to the original size and averaged, optionally together with those
of the mirrored image. Metrics pool the confusion matrix over the data set (see ``metrics``).

    python -m tasks.parse.evaluate --checkpoint runs/NAME [--multi-scale] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from tasks.common.cli import add_evaluation_args, evaluation_folder, run_cli
from tasks.common.distributed import MIXED_PRECISION_CHOICES, make_accelerator
from tasks.common.model_io import find_model_file, load_model
from tasks.data.ade20k import (
    ADE20K, MAX_LONG_SIDE, SIZE_DIVISOR, TRAIN_SHORT_SIDES, collate_segmentation, denormalize,
    folder_split, round_up, scaled_size,
)
from tasks.data.root import data_root
from tasks.parse.metrics import confusion_matrix, scores_from_confusion, shard_indices
from tasks.parse.visualize import prediction_panel, save_panels
from tasks.utils.progress import progress as progress_bar

MULTI_SCALES = TRAIN_SHORT_SIDES


def _forward_padded(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Logits for a 1x3xHxW image: zero-pad to a multiple of 32, run, crop back."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (0, round_up(width, SIZE_DIVISOR) - width, 0, round_up(height, SIZE_DIVISOR) - height))
    return model(padded)[..., :height, :width]


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image: torch.Tensor, scales: Sequence[int] | None = None,
                          flip: bool = False) -> torch.Tensor:
    """Class probabilities (1xCxHxW, at the image's size) for one unpadded, normalised 1x3xHxW image.

    ``scales=None`` keeps the image size; otherwise the probabilities of every short side in
    ``scales`` (and of the mirrored image when ``flip``) are averaged.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape 1x3xHxW, got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    sizes = [(height, width)] if not scales else [scaled_size(height, width, s, MAX_LONG_SIDE) for s in scales]
    total = None
    for size in sizes:
        resized = image if size == (height, width) else F.interpolate(
            image, size=size, mode="bilinear", align_corners=False, antialias=True)
        for mirrored in ((False, True) if flip else (False,)):
            inputs = resized.flip(-1) if mirrored else resized
            logits = _forward_padded(model, inputs).float()
            if mirrored:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
    return total / (len(sizes) * (2 if flip else 1))


def _gather_per_image(rows: list[np.ndarray], accelerator, num_classes: int) -> dict:
    """Every process's rows ``[index, labelled pixels, intersection per class, union per class]``,
    each image once, in order."""
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)  # the shards are disjoint (shard_indices): no image twice
    rows = sorted(rows, key=lambda row: row[0])
    table = np.stack(rows) if rows else np.zeros((0, 2 + 2 * num_classes), dtype=np.int64)
    return {"index": table[:, 0], "labelled": table[:, 1],
            "intersection": table[:, 2:2 + num_classes], "union": table[:, 2 + num_classes:]}


@torch.no_grad()
def evaluate_segmentation(model: torch.nn.Module, dataset, accelerator=None, scales: Sequence[int] | None = None,
                          flip: bool = False, num_workers: int = 2, num_pictures: int = 0,
                          max_images: int | None = None, progress: bool = True, per_image: bool = False) -> dict:
    """Pixel accuracy, mIoU, mean accuracy and per-class IoU of ``model`` on ``dataset``.

    Returns the :func:`~tasks.parse.metrics.scores_from_confusion` dict plus ``"visuals"``: up to
    ``num_pictures`` ``(name, panel)`` pictures of this process's first images. ``per_image`` adds
    ``"per_image"``: each image's ``index`` in ``dataset`` and its per-class ``intersection`` and
    ``union`` pixel counts (images x classes) and ``labelled`` pixels, gathered from every process:
    what a paired comparison of two runs resamples.
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    if accelerator is not None:
        model = accelerator.unwrap_model(model)  # no DDP collectives while shards differ in length
    num_classes, ignore_index = dataset.num_classes, dataset.ignore_index
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    images = list(range(count))  # this process's share, in loading order
    if accelerator is not None:
        images = shard_indices(count, accelerator.process_index, accelerator.num_processes)
    loader = DataLoader(Subset(dataset, images), batch_size=1, num_workers=num_workers,
                        collate_fn=collate_segmentation, pin_memory=torch.cuda.is_available())
    loader = progress_bar(loader, desc="evaluate", leave=False, disable=not progress,
                          main_process=accelerator is None or accelerator.is_main_process)
    was_training = model.training
    model.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    visuals, rows = [], []
    for position, batch in zip(images, loader):
        height, width = batch["size"][0].tolist()
        image = batch["image"][:, :, :height, :width].to(device, non_blocking=True)
        label = batch["label"][:, :height, :width].to(device, non_blocking=True)
        with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            probabilities = predict_probabilities(model, image, scales, flip)
        prediction = probabilities.argmax(dim=1)
        matrix = confusion_matrix(prediction, label, num_classes, ignore_index)
        total += matrix
        if per_image:
            counts = matrix.cpu()
            intersection = counts.diag()
            union = counts.sum(dim=0) + counts.sum(dim=1) - intersection
            row = [torch.tensor([position, int(counts.sum())]), intersection, union]
            rows.append(torch.cat(row).numpy())
        if len(visuals) < num_pictures:
            panel = prediction_panel(denormalize(image[0]), prediction[0].cpu().numpy(), label[0].cpu().numpy(),
                                     ignore_index=ignore_index)
            visuals.append((batch["name"][0], panel))
    model.train(was_training)
    if accelerator is not None and accelerator.num_processes > 1:
        total = accelerator.reduce(total, reduction="sum")  # exact: the shards are disjoint
    scores = scores_from_confusion(total, dataset.class_names)
    scores["visuals"] = visuals
    if per_image:
        scores["per_image"] = _gather_per_image(rows, accelerator, num_classes)
    return scores


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.parse.evaluate", description=__doc__.split("\n\n")[0])
    add_evaluation_args(parser)
    parser.add_argument("--multi-scale", action="store_true",
                        help=f"average over short sides {MULTI_SCALES} and the mirrored image")
    parser.add_argument("--scales", type=int, nargs="+", default=None, help="short sides for --multi-scale")
    parser.add_argument("--flip", action="store_true", help="also average with the mirrored image")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION_CHOICES, default="no")
    return parser


def _evaluate(args: argparse.Namespace) -> dict:
    if args.scales and not args.multi_scale:
        raise ValueError("--scales needs --multi-scale")
    accelerator = make_accelerator(args.mixed_precision, cpu=args.device == "cpu", fixed_shapes=False)
    model, description = load_model(args.checkpoint, task="parse")  # the run's best checkpoint
    model_file, trained_on = find_model_file(args.checkpoint), description.extra
    model.to(accelerator.device)
    root = data_root(args.data_root)
    if trained_on.get("dataset") == "folder":  # a run of `--dataset folder`: the same layout and labels
        dataset = folder_split(root, args.split, description.kwargs["num_classes"],
                               trained_on.get("label_offset", 1))
    else:
        dataset = ADE20K(root, args.split, train_transform=False)
    scales = (args.scales or MULTI_SCALES) if args.multi_scale else None
    flip = args.flip or args.multi_scale
    scores = evaluate_segmentation(model, dataset, accelerator, scales=scales, flip=flip,
                                   num_workers=args.num_workers, num_pictures=args.num_pictures,
                                   max_images=args.max_images)
    visuals = scores.pop("visuals")
    scores.update(checkpoint=str(model_file), split=args.split, scales=list(scales) if scales else "original",
                  flip=flip, images=min(len(dataset), args.max_images or len(dataset)))
    if accelerator.is_main_process:
        if visuals:
            save_panels(visuals, args.output_dir or evaluation_folder(model_file))
        if args.json:
            print(json.dumps(scores, indent=2))
        else:
            print(f"{model_file} on {trained_on.get('dataset', 'ade20k')} {args.split} "
                  f"({'multi-scale' if scales else 'single scale'}{' + flip' if flip else ''})\n"
                  f"mIoU {100 * scores['miou']:.2f}  pixel acc {100 * scores['pixel_acc']:.2f}%  "
                  f"mean acc {100 * scores['mean_acc']:.2f}%  "
                  f"({scores['classes_present']} classes present)")
    return scores


def main(argv: Sequence[str] | None = None) -> dict:
    return run_cli(_evaluate, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
