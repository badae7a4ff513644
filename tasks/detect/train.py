"""Train Faster R-CNN with a ResNet101 (+ BAM) backbone on COCO (paper Sec. 5.5, Tables 5-6).

    accelerate launch launch/detect.py --data-root /data --backbone-weights resnet101.pth
    accelerate launch launch/detect.py --data-root /data --backbone-weights runs/r101-bam --attention bam

Data: COCO 2017 (train2017 for training, val2017 = the 5k held-out "minival" for evaluation).
Recipe (Detectron's "1x" schedule, which torchvision's detection reference follows too): SGD,
momentum 0.9, weight decay 1e-4, lr 0.02 for 16 images per step scaled linearly with the total
batch, linear warm-up over 1000 steps from lr/1000, 90k steps at 16 images (scaled inversely
with the batch), lr x0.1 at 2/3 and 8/9 of the schedule; horizontal flips; short side 800, long
side at most 1333. The run folder gets ``checkpoints/{last,best}`` (each with ``network.safetensors``
+ ``network.json`` for ``python -m tasks.detect.evaluate``), ``metrics.jsonl``, ``detections/*.png``
(detections | ground truth), ``summary.json`` and ``summary.md`` (box APs next to the paper's).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, Subset

from bam import count_params
from tasks.common.cli import positive_int
from tasks.common.distributed import prepare_eval_loader
from tasks.common.model_io import ModelDescription
from tasks.common.run import RunInfo, Schedule, Task, main as run_main
from tasks.common.summary import render_markdown
from tasks.data.coco import CocoDetection, collate_detection
from tasks.data.root import data_root
from tasks.detect.coco_eval import METRIC_KEYS, evaluate_distributed
from tasks.detect.model import fasterrcnn_resnet101
from tasks.detect.visualize import save_detection_panels
from tasks.utils.files import write_text_atomic
from tasks.utils.processes import world_size

MODEL_BUILDER = "tasks.detect.model:fasterrcnn_resnet101"
ARCH = "fasterrcnn-resnet101"
PRIMARY_METRIC = "mAP"
REFERENCE_BATCH, REFERENCE_LR, REFERENCE_STEPS = 16, 0.02, 90_000
# Paper Table 5 (and Table 6 for mAP), in %.
PAPER_TABLE5 = {
    "none": {"mAP": 29.1, "AP50": 48.4, "AP55": 45.9, "AP60": 43.4, "AP65": 40.0, "AP70": 35.7, "AP75": 30.7,
             "AP80": 24.1, "AP85": 15.6, "AP90": 6.5, "AP95": 0.59, "AP_small": 11.5, "AP_medium": 33.2,
             "AP_large": 44.3},
    "bam": {"mAP": 30.4, "AP50": 50.2, "AP55": 47.5, "AP60": 44.7, "AP65": 41.7, "AP70": 37.4, "AP75": 32.5,
            "AP80": 25.5, "AP85": 17.0, "AP90": 7.3, "AP95": 0.76, "AP_small": 12.6, "AP_medium": 34.6,
            "AP_large": 46.4},
}


def learning_rate(args: argparse.Namespace) -> float:
    """``--lr``, else the reference rate scaled linearly with the total batch (Goyal et al.)."""
    return args.lr if args.lr is not None else REFERENCE_LR * args.batch_size / REFERENCE_BATCH


def warmup_multistep(optimizer: torch.optim.Optimizer, warmup_steps: int, milestones: list[int],
                     warmup_factor: float = 1e-3, gamma: float = 0.1):
    """Linear warm-up from ``lr * warmup_factor`` to ``lr``, then x``gamma`` at each milestone."""
    def factor(step: int) -> float:
        scale = gamma ** sum(step >= m for m in milestones)
        if step < warmup_steps:
            alpha = step / warmup_steps
            scale *= warmup_factor * (1 - alpha) + alpha
        return scale

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def detection_loss(model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of torchvision's RPN and box-head losses; the parts are logged."""
    images, targets = batch
    losses = model(images, targets)
    return sum(losses.values()), {name: value.detach() for name, value in losses.items()}


def eval_loader(dataset, batch_size: int, num_workers: int, max_images: int | None) -> DataLoader:
    """The first ``max_images`` images of ``dataset`` (all of them by default), in order."""
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    return DataLoader(Subset(dataset, range(count)), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, collate_fn=collate_detection)


def make_evaluate_fn(dataset, run_dir: Path, tracker, batch_size: int, num_workers: int,
                     max_images: int | None, num_pictures: int, picture_score: float):
    """``evaluate_fn`` for the Trainer: COCOeval box APs over all processes, detection panels
    (main process), named after the step they show."""
    loader = eval_loader(dataset, batch_size, num_workers, max_images)
    num_pictures = min(num_pictures, len(loader.dataset))

    def evaluate(model: torch.nn.Module, accelerator, step: int) -> dict[str, float]:
        # per-image matches: what a paired comparison with another run needs (tasks.report)
        metrics = evaluate_distributed(model, prepare_eval_loader(accelerator, loader),
                                       dataset.coco, accelerator, per_image=True)
        if accelerator.is_main_process and num_pictures:
            panels = save_detection_panels(model, dataset, range(num_pictures),
                                           Path(run_dir) / "detections", prefix=f"step{step:07d}_",
                                           score_threshold=picture_score, device=accelerator.device)
            tracker.log_images(panels, step,
                               caption=f"detections (score >= {picture_score}) | ground truth")
        return metrics

    return evaluate


def model_kwargs(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """Builder arguments; ``backbone_weights`` is only read at the start of training."""
    return {"num_classes": num_classes, "attention": args.attention, "fpn": args.fpn,
            "trainable_layers": args.trainable_layers, "min_size": args.min_size, "max_size": args.max_size,
            "frozen_bn": args.backbone_weights is not None, "box_batch_size_per_image": args.rois_per_image}


def ap_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of box APs in %, one row per entry (``{row name: metrics}``)."""
    lines = ["| | " + " | ".join(METRIC_KEYS) + " |", "|---|" + "---:|" * len(METRIC_KEYS)]
    for name, metrics in results.items():
        cells = ["-" if metrics.get(key) is None or metrics[key] < 0 else f"{metrics[key]:.1f}" for key in METRIC_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class DetectData:
    train: Any
    val: Any


class DetectTask(Task):
    name = "detect"
    title = "Detection"
    prog = "accelerate launch launch/detect.py"
    description = __doc__
    attentions = ("none", "bam")
    run_defaults = {"batch_size": REFERENCE_BATCH, "eval_every": 10_000, "log_every": 20, "num_pictures": 4}
    primary_metric = PRIMARY_METRIC
    primary_mode = "max"
    fixed_shapes = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        model = parser.add_argument_group("model")
        model.add_argument("--backbone-weights", default=None, metavar="PATH",
                           help="local ImageNet ResNet101 weights: torchvision state dict, or this repository's "
                                "classification checkpoint/run folder (BAM weights included). Default: from "
                                "scratch (then use --grad-clip: gradient norms reach the thousands)")
        model.add_argument("--fpn", action="store_true",
                           help="torchvision's FPN detector instead of the paper's C4 Faster R-CNN")
        model.add_argument("--trainable-layers", type=int, choices=range(6), default=3,
                           help="ResNet stages trained, counted from layer4 (default: %(default)s, as torchvision)")
        model.add_argument("--min-size", type=positive_int, default=800,
                           help="short side after resizing (default: %(default)s)")
        model.add_argument("--max-size", type=positive_int, default=1333,
                           help="long side at most (default: %(default)s)")
        model.add_argument("--rois-per-image", type=positive_int, default=512,
                           help="RoIs sampled per image for the box head loss (default: %(default)s)")
        optim = parser.add_argument_group("optimisation")
        optim.add_argument("--lr", type=float, default=None,
                           help=f"learning rate (default: {REFERENCE_LR} x total batch / {REFERENCE_BATCH})")
        optim.add_argument("--momentum", type=float, default=0.9)
        optim.add_argument("--weight-decay", type=float, default=1e-4)
        optim.add_argument("--warmup-steps", type=int, default=1000, help="linear warm-up steps (default: %(default)s)")
        optim.add_argument("--lr-milestones", type=float, nargs="*", default=[2 / 3, 8 / 9],
                           help="fractions of --max-steps where the lr drops x0.1 (default: 2/3 8/9)")
        optim.add_argument("--grad-clip", type=float, default=None)
        evaluation = parser.add_argument_group("evaluation")
        evaluation.add_argument("--eval-batch-size", type=int, default=None,
                                help="per process (default: the training batch per process)")
        evaluation.add_argument("--picture-score", type=float, default=0.5,
                                help="score threshold of the boxes drawn (default: %(default)s)")

    def check(self, args: argparse.Namespace) -> None:
        super().check(args)
        if args.min_size > args.max_size:
            raise ValueError(f"--min-size {args.min_size} is larger than --max-size {args.max_size}")
        if any(not 0 < m < 1 for m in args.lr_milestones):
            raise ValueError(f"--lr-milestones are fractions of --max-steps in (0, 1), got {args.lr_milestones}")
        if args.lr is not None and not args.lr > 0:
            raise ValueError(f"--lr must be positive, got {args.lr}")
        if args.backbone_weights is not None and not Path(args.backbone_weights).exists():
            raise FileNotFoundError(f"--backbone-weights: {args.backbone_weights} does not exist")

    def data(self, args: argparse.Namespace, accelerator) -> DetectData:
        root = data_root(args.data_root)
        return DetectData(CocoDetection(root, split="train"), CocoDetection(root, split="val"))

    def collate(self, data: DetectData):
        return collate_detection

    def schedule(self, args: argparse.Namespace, data: DetectData, steps_per_epoch: int) -> Schedule:
        # Detectron's 1x schedule is 90k steps of 16 images: as many images at any batch size.
        max_steps = args.max_steps or round(REFERENCE_STEPS * REFERENCE_BATCH / args.batch_size)
        return Schedule(max_steps, args.eval_every, args.grad_clip)

    def model(self, args: argparse.Namespace, data: DetectData) -> torch.nn.Module:
        return fasterrcnn_resnet101(backbone_weights=args.backbone_weights,
                                    **model_kwargs(args, data.train.num_classes))

    def optimizer(self, args: argparse.Namespace, model: torch.nn.Module, data: DetectData, schedule: Schedule):
        # Torchvision's reference: no weight decay exemption, frozen parameters left out.
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=learning_rate(args),
                                    momentum=args.momentum, weight_decay=args.weight_decay, fused=True)
        milestones = [round(m * schedule.max_steps) for m in args.lr_milestones]
        return optimizer, warmup_multistep(optimizer, args.warmup_steps, milestones)

    def loss(self, args: argparse.Namespace):
        return detection_loss

    def describe(self, args: argparse.Namespace, data: DetectData, model: torch.nn.Module,
                 schedule: Schedule) -> RunInfo:
        layout = "fpn" if args.fpn else "c4"
        kwargs = model_kwargs(args, data.train.num_classes)
        config = {
            "arch": ARCH, "attention": args.attention, "dataset": "coco", "layout": layout, "model": kwargs,
            "backbone_weights": args.backbone_weights, "batch_size": args.batch_size,
            "total_batch": args.batch_size, "lr": learning_rate(args), "momentum": args.momentum,
            "weight_decay": args.weight_decay, "warmup_steps": args.warmup_steps,
            "lr_milestones": [round(m * schedule.max_steps) for m in args.lr_milestones],
            "max_steps": schedule.max_steps, "train_images": len(data.train), "val_images": len(data.val),
            "eval_images": min(args.max_images or len(data.val), len(data.val)), "params": count_params(model),
            "train_data_stats": data.train.stats,
        }
        return RunInfo(
            name=f"{ARCH}-{layout}-{args.attention}-s{args.seed}", group=f"detect-coco-{layout}", config=config,
            tags=[layout],
            description=ModelDescription(MODEL_BUILDER, kwargs, self.name,
                                         {"dataset": "coco", "categories": data.val.categories}),
            summary_extra={"paper": PAPER_TABLE5[args.attention], "metric_units": "fraction (paper: %)"})

    def evaluator(self, args: argparse.Namespace, data: DetectData, run_dir: Path, tracker):
        batch = args.eval_batch_size or self.batch_size(args, world_size())
        return make_evaluate_fn(data.val, run_dir, tracker, batch, args.num_workers,
                                args.max_images, args.num_pictures, args.picture_score)

    def report(self, args: argparse.Namespace, run_dir: Path, summary: dict) -> None:
        """Append the box-AP table (this run vs the paper's Table 5) to summary.md and print it."""
        rows = {f"this run, {which}": {k: 100 * v if v >= 0 else v
                                       for k, v in summary[which].items()}
                for which in ("best", "final") if summary.get(which)}
        label = "ResNet101" + (" + BAM" if args.attention == "bam" else "")
        rows[f"paper Table 5, {label}"] = PAPER_TABLE5[args.attention]
        config = summary.get("config") or {}
        section = (f"## COCO box AP (%), {config.get('eval_images')} val2017 images\n\n"
                   f"{ap_table(rows)}\n\n"
                   f"Layout: {config.get('layout')}; AP_small/medium/large: COCO area ranges; "
                   "'-' = no such objects.\n")
        write_text_atomic(run_dir / "summary.md", render_markdown(summary) + "\n" + section)
        print("\n" + section.replace("## ", ""), flush=True)
        print(f"run folder: {run_dir}", flush=True)


TASK = DetectTask()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from tasks.report import report_paired_runs

    return run_main(TASK, argv, compare=report_paired_runs)


if __name__ == "__main__":
    main()
