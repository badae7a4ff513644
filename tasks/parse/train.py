"""Train UperNet (ResNet encoder, with or without BAM) for scene parsing on ADE20K.

    accelerate launch launch/parse.py --data-root DATA --attention bam --encoder-weights resnet50.pth
    python launch/parse.py --data-root DATA --max-steps 200            # one process, a quick look

Recipe of CSAILVision's semantic-segmentation-pytorch: SGD lr 0.02, momentum 0.9, weight decay
1e-4 (not on BN and biases, as that code does), poly schedule with power 0.9 per step over 150k
steps (30 epochs x 5000 iterations), 2 images per process, random short side in (300, 375, 450,
525, 600) with the long side at most 1000, flips. Unlike that code,
the short side is drawn per image rather than per batch, images are padded rather than stretched
to a multiple of 32, and the loss sees full-resolution labels (see ``tasks.data.ade20k``). Results
depend on the effective batch size (CSAIL used 8 GPUs x 2), which is logged everywhere. Batch norm
is synchronised across processes when there are several GPU processes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bam import list_attentions
from bam.placement import PLACEMENTS
from tasks.data.ade20k import (
    ADE20K, IGNORE_INDEX, MAX_LONG_SIDE, TRAIN_SHORT_SIDES, SegmentationFolder, TrainTransform,
    collate_segmentation, folder_split,
)
from tasks.common.cli import positive_int
from tasks.common.model_io import ModelDescription
from tasks.common.run import RunInfo, Schedule, Task, main as run_main
from tasks.common.tracking import Tracker
from tasks.data.root import data_root
from tasks.parse.evaluate import evaluate_segmentation
from tasks.networks import load_imagenet_weights
from tasks.parse.model import BACKBONES, UperNet, mac_breakdown, parameter_breakdown
from tasks.parse.visualize import save_panels
from tasks.utils.files import write_json_atomic, write_text_atomic
from tasks.utils.messages import note

ATTENTIONS = tuple(list_attentions(include_none=True))
PRIMARY_METRIC = "miou"
# Schedule length of CSAILVision's config/ade20k-resnet50-upernet.yaml (the code and defaults the
# paper used): 30 epochs x 5000 iterations of 16 images (8 GPUs x 2). With another effective batch
# size, scale it yourself with --max-steps (mmsegmentation's UperNet schedule is 160k at 16).
DEFAULT_MAX_STEPS = 150_000


# ------------------------------------------------------------------------------------------ data
def build_datasets(args) -> tuple[SegmentationFolder, SegmentationFolder]:
    """(training set with the recipe's augmentation, validation set at original size)."""
    root = data_root(args.data_root)
    if args.dataset == "ade20k":
        train = ADE20K(root, "train", short_sides=args.short_sides, max_long_side=args.max_long_side)
        return train, ADE20K(root, "val", train_transform=False)
    if args.num_classes is None:
        raise ValueError("--dataset folder needs --num-classes")
    train = folder_split(root, "train", args.num_classes, args.label_offset,
                         TrainTransform(args.short_sides, args.max_long_side))
    return train, folder_split(root, "val", args.num_classes, args.label_offset)


# ----------------------------------------------------------------------------------------- model
def uses_sync_bn(num_processes: int, device_type: str = "cuda") -> bool:
    """SyncBN only with several GPU processes: on one process it needs a process group that does
    not exist (CSAIL's code fails there), and PyTorch's SyncBN has no CPU implementation."""
    return num_processes > 1 and device_type != "cpu"


def network_kwargs(args, num_classes: int) -> dict:
    """Arguments of ``tasks.parse.model.upernet`` for these options (what ``network.json`` keeps)."""
    return {"num_classes": num_classes, "backbone": args.backbone, "attention": args.attention,
            "placement": args.placement, "channels": args.decoder_channels}


def count_macs_of(args, num_classes: int) -> dict:
    """Params split and MACs (whole, encoder, decoder) at ``--macs-size``, counted on the meta device."""
    size = (3, args.macs_size, args.macs_size)
    with torch.device("meta"):
        macs = mac_breakdown(UperNet(**network_kwargs(args, num_classes)), size)
    return {"macs": macs["total"], "macs_encoder": macs["encoder"], "macs_decoder": macs["decoder"],
            "macs_input_size": list(size)}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only; BN parameters and biases are not decayed (CSAIL)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def poly_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, power: float = 0.9):
    """lr = base_lr * (1 - step / max_steps) ** power, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / max_steps) ** power)


# ---------------------------------------------------------------------------------- loss, eval
def segmentation_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel-wise cross entropy over labelled pixels (padding and unlabeled are ignored)."""
    logits = model(batch["image"])
    labels = batch["label"]
    valid = labels != IGNORE_INDEX
    # Summed then divided by max(count, 1): a batch without any labelled pixel gives 0, not NaN.
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    loss = total / valid.sum().clamp(min=1)
    with torch.no_grad():
        correct = ((logits.argmax(dim=1) == labels) & valid).sum()
        accuracy = 100.0 * correct.float() / valid.sum().clamp(min=1)
    return loss, {"pixel_acc": accuracy.item()}


def make_evaluate_fn(val_set, args, run_dir: Path, tracker: Tracker):
    """Evaluation for the Trainer: scores in percent, per-class IoU (in the summary, not the
    history), per-step JSON and prediction pictures on the side."""

    def evaluate(model: nn.Module, accelerator, step: int) -> dict:
        scores = evaluate_segmentation(model, val_set, accelerator, num_workers=args.num_workers,
                                       num_pictures=args.num_pictures if accelerator.is_main_process else 0,
                                       max_images=args.max_images, per_image=True)
        visuals, per_image = scores.pop("visuals"), scores.pop("per_image")
        if accelerator.is_main_process:
            write_json_atomic(run_dir / "eval" / f"step_{step:07d}.json", scores)
            if visuals:
                paths = save_panels(visuals, run_dir / "predictions", step)
                tracker.log_images({f"predictions/{name}": str(path) for (name, _), path in zip(visuals, paths)},
                                   step, caption="image | prediction | ground truth")
        return {"miou": 100.0 * scores["miou"], "pixel_acc": 100.0 * scores["pixel_acc"],
                "mean_acc": 100.0 * scores["mean_acc"], "classes_present": float(scores["classes_present"]),
                "per_class_iou": scores["per_class_iou"], "per_sample": per_image}

    return evaluate


# ------------------------------------------------------------------------------------------ task
@dataclass
class ParseData:
    train: SegmentationFolder
    val: SegmentationFolder
    sync_bn: bool


class ParseTask(Task):
    name = "parse"
    title = "Scene parsing"
    prog = "accelerate launch launch/parse.py"
    description = __doc__.split("\n\n")[0]
    attentions = ATTENTIONS
    # CSAIL's batch: 8 GPUs x 2 images.
    run_defaults = {"eval_every": 5000, "batch_size": 16, "max_steps": DEFAULT_MAX_STEPS, "num_pictures": 4}
    primary_metric = PRIMARY_METRIC
    primary_mode = "max"
    fixed_shapes = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", choices=("ade20k", "folder"), default="ade20k",
                            help="ade20k: <data-root>/ADEChallengeData2016; folder: <data-root>/{images,annotations}/"
                                 "{training,validation} with --num-classes")
        parser.add_argument("--num-classes", type=int, default=None, help="class count of --dataset folder")
        parser.add_argument("--label-offset", type=int, default=1,
                            help="--dataset folder: raw label v is class v - offset; lower values are ignored")
        parser.add_argument("--backbone", choices=BACKBONES, default="resnet50")
        parser.add_argument("--decoder-channels", type=int, default=512, help="PPM/FPN width (512 in UperNet)")
        parser.add_argument("--placement", choices=PLACEMENTS, default="bottleneck")
        parser.add_argument("--encoder-weights", default=None, metavar="PATH",
                            help="ImageNet weights for the encoder: torchvision state dict or a classification "
                                 "checkpoint/run folder of this repository")
        recipe = parser.add_argument_group("recipe (CSAILVision's defaults)")
        recipe.add_argument("--lr", type=float, default=0.02)
        recipe.add_argument("--momentum", type=float, default=0.9)
        recipe.add_argument("--weight-decay", type=float, default=1e-4)
        recipe.add_argument("--poly-power", type=float, default=0.9)
        recipe.add_argument("--short-sides", type=positive_int, nargs="+",
                            default=list(TRAIN_SHORT_SIDES),
                            help="training short sides (one drawn per image)")
        recipe.add_argument("--max-long-side", type=positive_int, default=MAX_LONG_SIDE)
        parser.add_argument("--macs-size", type=int, default=512, help="square input side for the MAC count")

    def check(self, args: argparse.Namespace) -> None:
        super().check(args)
        for name in ("lr", "momentum", "poly_power", "weight_decay"):
            if getattr(args, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be non-negative, got {getattr(args, name)}")
        if args.encoder_weights and not Path(args.encoder_weights).exists():
            raise FileNotFoundError(f"--encoder-weights: {args.encoder_weights} does not exist")

    def data(self, args: argparse.Namespace, accelerator) -> ParseData:
        world = accelerator.num_processes
        sync_bn = uses_sync_bn(world, accelerator.device.type)
        train, val = build_datasets(args)
        if accelerator.is_main_process:
            bn = "SyncBN" if sync_bn else "plain BN" + (" (one process)" if world == 1 else " (CPU has no SyncBN)")
            print(f"batch size {args.batch_size} = {args.batch_size // world} per process x {world} "
                  f"process(es) (CSAIL's recipe: 16 = 2 x 8 GPUs); {bn}", flush=True)
        return ParseData(train, val, sync_bn)

    def batch_statistics_span_processes(self, accelerator) -> bool:
        return uses_sync_bn(accelerator.num_processes, accelerator.device.type)

    def collate(self, data: ParseData):
        return collate_segmentation

    def model(self, args: argparse.Namespace, data: ParseData) -> nn.Module:
        model = UperNet(**network_kwargs(args, data.train.num_classes))
        args.encoder_load_report = None
        if args.encoder_weights:
            args.encoder_load_report = load_imagenet_weights(model.encoder, args.encoder_weights,
                                                             args.backbone)
        else:
            note("no --encoder-weights: the encoder starts from random weights (the paper's runs start "
                 "from ImageNet weights)")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model) if data.sync_bn else model

    def optimizer(self, args: argparse.Namespace, model: nn.Module, data: ParseData, schedule: Schedule):
        optimizer = torch.optim.SGD(parameter_groups(model, args.weight_decay), lr=args.lr, momentum=args.momentum,
                                    fused=True)
        return optimizer, poly_scheduler(optimizer, schedule.max_steps, args.poly_power)

    def loss(self, args: argparse.Namespace):
        return segmentation_loss

    def describe(self, args: argparse.Namespace, data: ParseData, model: nn.Module, schedule: Schedule) -> RunInfo:
        num_classes = data.train.num_classes
        counts = count_macs_of(args, num_classes)
        params = dict(parameter_breakdown(model))
        report = args.encoder_load_report
        config = {
            "dataset": args.dataset, "arch": f"upernet-{args.backbone}", "backbone": args.backbone,
            "decoder_channels": args.decoder_channels,
            "attention": args.attention, "placement": args.placement if args.attention != "none" else None,
            "attention_sites": list(model.attention_targets), "num_classes": num_classes,
            "encoder_weights": str(args.encoder_weights) if args.encoder_weights else None,
            "encoder_weights_missing": len(report["missing"]) if report else None,
            "encoder_weights_unexpected": len(report["unexpected"]) if report else None,
            "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay, "poly_power": args.poly_power,
            "short_sides": list(args.short_sides), "max_long_side": args.max_long_side, "ignore_index": IGNORE_INDEX,
            "label_offset": data.train.label_offset, "grad_accumulation": 1,
            "effective_batch_size": args.batch_size, "sync_bn": data.sync_bn, "max_steps": schedule.max_steps,
            "train_images": len(data.train), "eval_images": min(len(data.val), args.max_images or len(data.val)),
            "data_root": str(args.data_root) if args.data_root else None,
            "params_encoder": params["encoder"], "params_decoder": params["decoder"],
            "params_attention": params["attention"], **counts,
        }
        return RunInfo(
            name=f"{args.dataset}-upernet-{args.backbone}-{args.attention}-s{args.seed}",
            group=f"{args.dataset}-upernet-{args.backbone}", config=config,
            description=ModelDescription("tasks.parse.model:upernet", network_kwargs(args, num_classes), self.name,
                                         {"dataset": args.dataset, "label_offset": data.train.label_offset,
                                          "class_names": list(data.train.class_names)}),
            summary_extra={**counts, "params_breakdown": params, "effective_batch_size": args.batch_size,
                           "class_names": list(data.train.class_names)})

    def evaluator(self, args: argparse.Namespace, data: ParseData, run_dir: Path, tracker: Tracker):
        return make_evaluate_fn(data.val, args, run_dir, tracker)

    def report(self, args: argparse.Namespace, run_dir: Path, summary: dict) -> None:
        final, best, nan = summary.get("final", {}), summary.get("best", {}), float("nan")
        # The last evaluation's per-class IoU, next to summary.md.
        lines = [f"# Per-class IoU of {summary.get('name')} "
                 f"(evaluation at step {summary.get('steps')})", "",
                 f"mIoU {final.get('miou', nan):.2f} over the classes present; "
                 "'-' marks a class absent from the labels and never predicted.", "",
                 "| id | class | IoU (%) |", "|---:|---|---:|"]
        lines += [f"| {i} | {name} | {'-' if iou is None else f'{100 * iou:.2f}'} |"
                  for i, (name, iou) in enumerate((final.get("per_class_iou") or {}).items())]
        write_text_atomic(run_dir / "per_class_iou.md", "\n".join(lines) + "\n")
        print(f"{run_dir}: mIoU {final.get('miou', nan):.2f}, pixel acc {final.get('pixel_acc', nan):.2f}% "
              f"(best mIoU {best.get('miou', nan):.2f} at step {summary['best_step']}); effective batch "
              f"{summary['effective_batch_size']}; {summary['params'] / 1e6:.2f}M params, "
              f"{summary['macs'] / 1e9:.1f} GMACs at {args.macs_size}x{args.macs_size}", flush=True)


TASK = ParseTask()


def main(argv: list[str] | None = None) -> list[dict]:
    from tasks.report import report_paired_runs

    return run_main(TASK, argv, compare=report_paired_runs)


if __name__ == "__main__":
    main()
