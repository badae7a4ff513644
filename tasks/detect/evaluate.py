"""Evaluate a trained detector on COCO val2017 with COCOeval (box APs of the paper's Table 5).

    python -m tasks.detect.evaluate --checkpoint runs/fasterrcnn-resnet101-c4-bam-s0 --data-root /data
    python -m tasks.detect.evaluate --checkpoint runs/x/checkpoints/best --max-images 500 --json

``--checkpoint`` takes a ``network.json``, a checkpoint folder or a run folder (its best checkpoint).
Prints a Markdown table in % (or the metrics as JSON, fractions in [0, 1], with ``--json``);
``--num-pictures N`` also saves N detection | ground-truth panels (in ``--output-dir``, default
``<run>/evaluation``, with ``metrics.json``). Under ``accelerate launch``
the images are split over the processes, each scored once, and the main process prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from tasks.common.cli import (add_evaluation_args, default_device, evaluation_folder, positive_int,
                              run_cli)
from tasks.common.distributed import make_accelerator, prepare_eval_loader
from tasks.common.model_io import find_model_file, load_model
from tasks.data.coco import CocoDetection
from tasks.data.root import data_root as resolve_root
from tasks.detect.coco_eval import evaluate_distributed
from tasks.detect.train import ap_table, eval_loader
from tasks.detect.visualize import save_detection_panels
from tasks.utils.files import write_json_atomic
from tasks.utils.processes import is_main_process, world_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.detect.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluation_args(parser)
    parser.add_argument("--batch-size", type=positive_int, default=2, help="images per forward pass (default: 2)")
    parser.add_argument("--picture-score", type=float, default=0.5,
                        help="score threshold of the boxes drawn (default: %(default)s)")
    return parser


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path | None = None, split: str = "val",
                        max_images: int | None = None, batch_size: int = 2, num_workers: int = 0,
                        device: str | None = None, num_pictures: int = 0, picture_score: float = 0.5,
                        output_dir: str | Path | None = None) -> dict[str, Any]:
    """Rebuild the detector from ``checkpoint`` and score it; returns ``{"metrics", "images", ...}``."""
    model, record = load_model(checkpoint, task="detect")
    output_dir = Path(output_dir) if output_dir else evaluation_folder(find_model_file(checkpoint))
    device = torch.device(device or default_device())
    accelerator = None
    if world_size() > 1:  # several processes (accelerate launch) share the images out
        accelerator = make_accelerator("no", cpu=device.type == "cpu", fixed_shapes=False)
        device = accelerator.device  # this process's GPU, or the CPU
    model.to(device).eval()
    dataset = CocoDetection(resolve_root(data_root), split=split, train=False, remove_empty=False)
    loader = eval_loader(dataset, batch_size, num_workers, max_images)
    images = len(loader.dataset)
    if accelerator is not None:
        loader = prepare_eval_loader(accelerator, loader)
    metrics = evaluate_distributed(model, loader, dataset.coco, accelerator=accelerator,
                                   progress=sys.stderr.isatty())
    result = {"checkpoint": str(checkpoint), "split": split, "images": images,
              "model": record.kwargs, "metrics": metrics}
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        if num_pictures:
            save_detection_panels(model, dataset, range(min(num_pictures, len(dataset))), output_dir,
                                  score_threshold=picture_score, device=device)
        write_json_atomic(output_dir / "metrics.json", result)
    return result


def _run(args: argparse.Namespace) -> dict[str, Any]:
    result = evaluate_checkpoint(args.checkpoint, args.data_root, args.split, args.max_images, args.batch_size,
                                 args.num_workers, args.device, args.num_pictures, args.picture_score,
                                 args.output_dir)
    if not is_main_process():
        return result
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        percent = {k: 100 * v if v >= 0 else v for k, v in result["metrics"].items()}
        print(f"COCO {args.split}2017, {result['images']} images, box AP (%):\n")
        print(ap_table({Path(args.checkpoint).name or str(args.checkpoint): percent}))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
