"""Detections drawn on images: prediction | ground truth panels saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from tasks.utils.images import quantize, side_by_side

# A fixed, distinguishable colour per category id (hue walk), so one class keeps its colour.
_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
            "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
               categories: Mapping[int, str], scores: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 CxHxW image with the xyxy ``boxes`` and their class names (and scores) drawn."""
    canvas = quantize(image.detach().cpu())
    if len(boxes) == 0:
        return canvas
    labels = labels.detach().cpu().tolist()
    names = [categories.get(int(label), str(label)) for label in labels]
    if scores is not None:
        names = [f"{name} {float(score):.2f}" for name, score in zip(names, scores.detach().cpu())]
    width = max(1, round(min(canvas.shape[-2:]) / 200))
    return draw_bounding_boxes(canvas, boxes.detach().float().cpu(), labels=names,
                               colors=[_PALETTE[label % len(_PALETTE)] for label in labels],
                               width=width)


def detection_panel(image: torch.Tensor, detections: Mapping[str, torch.Tensor], target: Mapping,
                    categories: Mapping[int, str], score_threshold: float = 0.5) -> Image.Image:
    """Side-by-side PIL image: detections scoring at least ``score_threshold`` | ground truth."""
    keep = detections["scores"] >= score_threshold
    left = draw_boxes(image, detections["boxes"][keep], detections["labels"][keep], categories,
                      detections["scores"][keep])
    right = draw_boxes(image, target["boxes"], target["labels"], categories)
    tiles = [tile.permute(1, 2, 0).numpy() for tile in (left, right)]
    captions = [f"detections, score >= {score_threshold:g} ({int(keep.sum())})",
                f"ground truth ({len(target['boxes'])})"]
    return Image.fromarray(side_by_side(tiles, captions))


@torch.no_grad()
def save_detection_panels(model: torch.nn.Module, dataset, indices: Sequence[int], out_dir: str | Path,
                          prefix: str = "", score_threshold: float = 0.5,
                          device: torch.device | str = "cpu") -> dict[str, Image.Image]:
    """Run ``model`` on ``dataset[i]`` for each index; save ``out_dir/<prefix><image id>.png``.

    Returns ``{"detections/<image id>": panel}`` for the tracker."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    panels = {}
    for index in indices:
        image, target = dataset[index]
        detections = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        panel = detection_panel(image, detections, target, dataset.categories, score_threshold)
        image_id = int(target["image_id"])
        panel.save(out_dir / f"{prefix}{image_id:012d}.png")
        panels[f"detections/{image_id}"] = panel
    model.train(was_training)
    return panels
