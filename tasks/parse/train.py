"""Train UperNet (ResNet encoder, with or without BAM) for scene parsing on ADE20K.

    accelerate launch launch/parse.py --data-root DATA --attention bam --encoder-weights resnet50.pth
    python launch/parse.py --data-root DATA --max-steps 200            # one process, a quick look

Recipe of CSAILVision's semantic-segmentation-pytorch (reference facts, section 5): SGD lr 0.02,
momentum 0.9, weight decay 1e-4 (not on BN and biases, as that code does), poly schedule with
power 0.9 per step over 150k steps (30 epochs x 5000 iterations), 2 images per process, random
short side in (300, 375, 450, 525, 600) with the long side at most 1000, flips. Unlike that code,
the short side is drawn per image rather than per batch, images are padded rather than stretched
to a multiple of 32, and the loss sees full-resolution labels (see ``tasks.data.ade20k``). Results
depend on the effective batch size (per process x processes; CSAIL used 8 GPUs x 2), which is
therefore logged everywhere. Batch norm is synchronised across processes when there are several
and stays plain on one process.

The loop, checkpoints, resume, W&B and summaries are the shared ``tasks.common`` machinery.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tasks.data.ade20k import (
    ADE20K, IGNORE_INDEX, MAX_LONG_SIDE, TRAIN_SHORT_SIDES, SegmentationFolder, TrainTransform,
    collate_segmentation,
)
from tasks.common.cli import add_run_args, run_cli, run_dir_for
from tasks.utils.files import write_json_atomic, write_text_atomic
from tasks.data.sampling import EpochSeededSampler
from tasks.common.seeding import seed_everything
from tasks.common.tracking import Tracker
from tasks.common.trainer import Trainer, make_accelerator
from tasks.parse.evaluate import evaluate_segmentation
from tasks.parse.model import BACKBONES, UperNet, describe_load_report, parameter_breakdown
from tasks.parse.visualize import save_panels

TASK = "parse"
ATTENTIONS = ("none", "bam", "bam-released", "se", "cbam")
PRIMARY_METRIC = "miou"
# Schedule length of CSAILVision's config/ade20k-resnet50-upernet.yaml (the code and defaults the
# paper used): 30 epochs x 5000 iterations of 16 images (8 GPUs x 2). With another effective batch
# size, scale it yourself with --max-steps (mmsegmentation's UperNet schedule is 160k at 16).
DEFAULT_MAX_STEPS = 150_000


# ------------------------------------------------------------------------------------------ data
def build_datasets(args) -> tuple[SegmentationFolder, SegmentationFolder]:
    """(training set with the recipe's augmentation, validation set at original size)."""
    from tasks.data.root import data_root

    root = data_root(args.data_root)
    if args.dataset == "ade20k":
        train = ADE20K(root, "training", short_sides=args.short_sides, max_long_side=args.max_long_side)
        return train, ADE20K(root, "validation", train_transform=False)
    if args.num_classes is None:
        raise ValueError("--dataset folder needs --num-classes")
    layout = "<data-root>/images/{training,validation}/* and <data-root>/annotations/{training,validation}/*.png"
    common = dict(num_classes=args.num_classes, ignore_index=IGNORE_INDEX, label_offset=args.label_offset,
                  layout_hint=layout)
    train = SegmentationFolder(root / "images" / "training", root / "annotations" / "training",
                               transform=TrainTransform(args.short_sides, args.max_long_side), **common)
    return train, SegmentationFolder(root / "images" / "validation", root / "annotations" / "validation", **common)


# ----------------------------------------------------------------------------------------- model
def build_model(args, num_classes: int) -> UperNet:
    return UperNet(num_classes=num_classes, backbone=args.backbone, attention=args.attention,
                   placement=args.placement, channels=args.decoder_channels)


def uses_sync_bn(num_processes: int, device_type: str = "cuda") -> bool:
    """SyncBN only with several GPU processes: on one process it needs a process group that does
    not exist (CSAIL's code fails there), and PyTorch's SyncBN has no CPU implementation."""
    return num_processes > 1 and device_type != "cpu"


def prepare_model(model: nn.Module, num_processes: int, device_type: str = "cuda") -> nn.Module:
    """Convert batch norm to SyncBN when :func:`uses_sync_bn`; plain BN otherwise."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if uses_sync_bn(num_processes, device_type) else model


def count_macs_of(args, num_classes: int) -> dict:
    """Params split and MACs (whole, encoder, decoder) at ``--macs-size``, counted on the meta device."""
    from tasks.parse.model import mac_breakdown

    size = (3, args.macs_size, args.macs_size)
    with torch.device("meta"):
        model = build_model(args, num_classes)
        macs = mac_breakdown(model, size)
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


def make_evaluate_fn(val_set, args, run_dir: Path, tracker: Tracker, state: dict):
    """Evaluation for the Trainer: scores in percent; pictures and per-class IoU on the side."""

    def evaluate(model: nn.Module, accelerator) -> dict[str, float]:
        step = state["trainer"].step if state.get("trainer") is not None else 0
        scores = evaluate_segmentation(model, val_set, accelerator, num_workers=args.num_workers,
                                       num_visuals=args.num_visuals if accelerator.is_main_process else 0,
                                       max_images=args.eval_images)
        visuals = scores.pop("visuals")
        if accelerator.is_main_process:
            write_json_atomic(run_dir / "eval" / f"step_{step:07d}.json", scores)
            if visuals:
                paths = save_panels(visuals, run_dir / "predictions", step)
                tracker.log_images({f"predictions/{name}": str(path) for (name, _), path in zip(visuals, paths)},
                                   step, caption="image | prediction | ground truth")
        if state.get("trainer") is not None:
            state["trainer"].summary_extra["per_class_iou"] = scores["per_class_iou"]
            state["trainer"].summary_extra["per_class_iou_step"] = step
        return {"miou": 100.0 * scores["miou"], "pixel_acc": 100.0 * scores["pixel_acc"],
                "mean_acc": 100.0 * scores["mean_acc"], "classes_present": float(scores["classes_present"])}

    return evaluate


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch/parse.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=("ade20k", "folder"), default="ade20k",
                        help="ade20k: <data-root>/ADEChallengeData2016; folder: <data-root>/{images,annotations}/"
                             "{training,validation} with --num-classes")
    parser.add_argument("--num-classes", type=int, default=None, help="class count of --dataset folder")
    parser.add_argument("--label-offset", type=int, default=1,
                        help="--dataset folder: raw label v is class v - offset; lower values are ignored")
    parser.add_argument("--backbone", choices=BACKBONES, default="resnet50")
    parser.add_argument("--attention", choices=ATTENTIONS, default="none")
    parser.add_argument("--decoder-channels", type=int, default=512, help="PPM/FPN width (512 in UperNet)")
    parser.add_argument("--placement", choices=("bottleneck", "block"), default="bottleneck")
    parser.add_argument("--encoder-weights", default=None, metavar="PATH",
                        help="ImageNet weights for the encoder: torchvision state dict or a classification "
                             "checkpoint/run folder of this repository")
    recipe = parser.add_argument_group("recipe (CSAILVision's defaults)")
    recipe.add_argument("--lr", type=float, default=0.02)
    recipe.add_argument("--momentum", type=float, default=0.9)
    recipe.add_argument("--weight-decay", type=float, default=1e-4)
    recipe.add_argument("--poly-power", type=float, default=0.9)
    recipe.add_argument("--short-sides", type=int, nargs="+", default=list(TRAIN_SHORT_SIDES),
                        help="training short sides (one drawn per image)")
    recipe.add_argument("--max-long-side", type=int, default=MAX_LONG_SIDE)
    parser.add_argument("--eval-images", type=int, default=None,
                        help="evaluate on the first N validation images only (default: all)")
    parser.add_argument("--num-visuals", type=int, default=4, help="prediction pictures per evaluation")
    parser.add_argument("--macs-size", type=int, default=512, help="square input side for the MAC count")
    add_run_args(parser, defaults={"output_dir": "runs/parse", "eval_every": 5000, "batch_size": 2,
                                   "max_steps": DEFAULT_MAX_STEPS})
    return parser


def check_args(args) -> None:
    for name in ("lr", "momentum", "poly_power"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be non-negative, got {getattr(args, name)}")
    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay must be non-negative, got {args.weight_decay}")
    if any(s <= 0 for s in args.short_sides) or args.max_long_side <= 0:
        raise ValueError("--short-sides and --max-long-side must be positive")
    if args.encoder_weights and not Path(args.encoder_weights).exists():
        raise FileNotFoundError(f"--encoder-weights: {args.encoder_weights} does not exist")


def default_run_name(args) -> str:
    return f"{args.dataset}-upernet-{args.backbone}-{args.attention}-s{args.seed}"


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    check_args(args)
    accelerator = make_accelerator(args.mixed_precision, fixed_shapes=False)
    world = accelerator.num_processes
    sync_bn = uses_sync_bn(world, accelerator.device.type)
    bn_batch = args.batch_size * (world if sync_bn else 1)
    if bn_batch < 2 and args.attention != "none":
        raise ValueError(f"--batch-size {args.batch_size} gives batch norm {bn_batch} image(s) per statistic: the "
                         f"attention's channel MLP (BatchNorm1d on pooled vectors) needs at least 2 in training; "
                         f"use --batch-size 2 or more" + ("" if sync_bn else " (SyncBN is off here)"))
    train_set, val_set = build_datasets(args)
    num_classes = train_set.num_classes

    seed_everything(args.seed)  # the same initial weights for a given seed
    model = build_model(args, num_classes)
    load_report = None
    if args.encoder_weights:
        load_report = model.load_encoder_weights(args.encoder_weights)
        if accelerator.is_main_process:
            print(describe_load_report(args.encoder_weights, load_report), flush=True)
    elif accelerator.is_main_process:
        print("note: no --encoder-weights: the encoder starts from random weights (the paper's runs start "
              "from ImageNet weights)", flush=True)
    model = prepare_model(model, world, accelerator.device.type)

    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=EpochSeededSampler(len(train_set), seed=args.seed),
        collate_fn=collate_segmentation, drop_last=True, num_workers=args.num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=args.num_workers > 0,
    )
    optimizer = torch.optim.SGD(parameter_groups(model, args.weight_decay), lr=args.lr, momentum=args.momentum)
    scheduler = poly_scheduler(optimizer, args.max_steps, args.poly_power)

    run_dir = run_dir_for(args, default_run_name(args))
    counts = count_macs_of(args, num_classes)
    params = dict(parameter_breakdown(model))
    effective_batch = args.batch_size * world
    config = {
        "task": TASK, "dataset": args.dataset, "arch": f"upernet-{args.backbone}", "backbone": args.backbone,
        "decoder_channels": args.decoder_channels,
        "attention": args.attention, "placement": args.placement if args.attention != "none" else None,
        "attention_sites": list(model.attention_targets), "num_classes": num_classes,
        "encoder_weights": str(args.encoder_weights) if args.encoder_weights else None,
        "encoder_weights_missing": len(load_report["missing"]) if load_report else None,
        "encoder_weights_unexpected": len(load_report["unexpected"]) if load_report else None,
        "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay, "poly_power": args.poly_power,
        "short_sides": list(args.short_sides), "max_long_side": args.max_long_side, "ignore_index": IGNORE_INDEX,
        "label_offset": train_set.label_offset,
        "batch_size_per_process": args.batch_size, "num_processes": world, "grad_accumulation": 1,
        "effective_batch_size": effective_batch, "sync_bn": sync_bn, "max_steps": args.max_steps,
        "train_images": len(train_set), "eval_images": min(len(val_set), args.eval_images or len(val_set)),
        "data_root": str(args.data_root) if args.data_root else None, "group": args.group,
        "params_encoder": params["encoder"], "params_decoder": params["decoder"],
        "params_attention": params["attention"], **counts,
    }
    group = args.group or f"{args.dataset}-upernet-{args.backbone}"
    if accelerator.is_main_process:
        bn = "SyncBN" if sync_bn else "plain BN" + (" (one process)" if world == 1 else " (CPU has no SyncBN)")
        print(f"effective batch size {effective_batch} = {args.batch_size} per process x {world} process(es) "
              f"x 1 accumulation step (CSAIL's recipe: 16 = 2 x 8 GPUs); "
              f"{bn}", flush=True)
    tracker = Tracker(run_dir, config, project=args.wandb_project, group=group, tags=args.tags or (),
                      mode=args.wandb, task=TASK, name=run_dir.name)
    state: dict = {}
    trainer = Trainer(
        model=model, optimizer=optimizer, train_loader=train_loader, loss_fn=segmentation_loss,
        channels_last=args.channels_last,
        evaluate_fn=make_evaluate_fn(val_set, args, run_dir, tracker, state), run_dir=run_dir, config=config,
        max_steps=args.max_steps, scheduler=scheduler, eval_every=args.eval_every, best_metric=PRIMARY_METRIC,
        best_mode="max", seed=args.seed, resume=args.resume, tracker=tracker, task=TASK, log_every=args.log_every,
        accelerator=accelerator,
        summary_extra={**counts, "params_breakdown": params, "effective_batch_size": effective_batch,
                       "group": group, "class_names": list(train_set.class_names)},
    )
    state["trainer"] = trainer
    summary = trainer.fit()
    if accelerator.is_main_process:
        write_per_class_table(run_dir / "per_class_iou.md", summary)
        final = summary.get("final", {})
        print(f"{run_dir}: mIoU {final.get('miou', float('nan')):.2f}, pixel acc "
              f"{final.get('pixel_acc', float('nan')):.2f}% (best mIoU {summary['best'].get('miou', float('nan')):.2f}"
              f" at step {summary['best_step']}); effective batch {effective_batch}; "
              f"{summary['params'] / 1e6:.2f}M params, {counts['macs'] / 1e9:.1f} GMACs at "
              f"{args.macs_size}x{args.macs_size}", flush=True)
    return summary


def write_per_class_table(path: Path, summary: dict) -> None:
    """Markdown table of the last evaluation's per-class IoU, next to summary.md."""
    per_class = summary.get("per_class_iou") or {}
    lines = [f"# Per-class IoU of {summary.get('name')} (evaluation at step {summary.get('per_class_iou_step')})", "",
             f"mIoU {summary.get('final', {}).get('miou', float('nan')):.2f} over the classes present; "
             "'-' marks a class absent from the labels and never predicted.", "",
             "| id | class | IoU (%) |", "|---:|---|---:|"]
    lines += [f"| {i} | {name} | {'-' if iou is None else f'{100 * iou:.2f}'} |"
              for i, (name, iou) in enumerate(per_class.items())]
    write_text_atomic(path, "\n".join(lines) + "\n")


def cli(argv: list[str] | None = None) -> None:
    run_cli(main, argv)


if __name__ == "__main__":
    cli()
