"""``python -m tasks.classify``: train a classifier with or without attention; top-1/top-5 error.

With no arguments: a small CIFAR network on the embedded digits (no download, minutes on a CPU).
The paper's runs: ``python -m tasks.classify --dataset cifar100 --arch resnet50 --attention bam``,
``accelerate launch launch/classify.py --dataset imagenet ...``. The recipe defaults to the network
family's (``tasks.classify.recipes``), each field overridable on the command line.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from bam.counting import count_macs, to_resnet_v1
from bam.placement import PLACEMENTS, find_bottlenecks
from tasks.classify import recipes
from tasks.common.distributed import prepare_eval_loader
from tasks.common.model_io import ModelDescription, model_builder
from tasks.common.run import RunInfo, Schedule, Task, main as run_main, per_process_batch
from tasks.data.sampling import SeededDataset
from tasks.networks import (
    build_network, default_placement, get_network_entry, input_size_for, list_networks,
    valid_attentions,
)
from tasks.utils.processes import world_size
from tasks.utils.progress import progress

DATASETS = ("digits", "cifar100", "imagenet")
# Every attention the networks take, and the paper's control of equal cost: one more residual block.
ATTENTIONS = (*valid_attentions(), "extra-block")
DEFAULT_DIGITS_ARCH = "resnet20"  # the no-argument default: a small CIFAR ResNet, minutes on a CPU


# ------------------------------------------------------------------------------------------- data
def load_split(dataset: str, data_root=None, train: bool = True, download: bool = False) -> tuple[Dataset, int]:
    """(the training or evaluation split of ``dataset``, number of classes)."""
    if dataset == "digits":
        from tasks.data.digits import NUM_CLASSES, Digits

        return Digits(train=train), NUM_CLASSES
    if dataset == "cifar100":
        from tasks.data.cifar import NUM_CLASSES, build_cifar100

        return build_cifar100(data_root, train=train, download=download), NUM_CLASSES
    from tasks.data.imagenet import build_imagenet

    if download:
        raise ValueError("ImageNet cannot be downloaded automatically (it needs a licence from "
                         "image-net.org); put it at <data_root>/imagenet/{train,val}/CLASS/*.JPEG")
    images = build_imagenet(data_root, train=train)
    return images, len(images.classes)


# ---------------------------------------------------------------------------------------- network
def network_dataset(dataset: str) -> str:
    """The registry's data set whose networks run on ``dataset`` (digits is CIFAR-sized)."""
    return "cifar100" if dataset == "digits" else dataset


def attention_options(args) -> dict:
    """Keyword arguments of the attention module, checked against what it has."""
    given = {
        "reduction": args.reduction, "dilation": args.dilation, "branches": args.branches,
        "combine": args.combine, "identity": False if args.no_identity else None,
    }
    given = {k: v for k, v in given.items() if v is not None}
    allowed = {"bam": set(given), "bam-c": set(given), "bam-released": set(given) - {"combine"},
               "se": {"reduction"}, "cbam": {"reduction"}}.get(args.attention, set())
    unsupported = sorted(set(given) - allowed)
    if unsupported:
        flags = ", ".join("--no-identity" if k == "identity" else f"--{k}" for k in unsupported)
        raise ValueError(f"{flags} do(es) not apply to --attention {args.attention}")
    return given


def add_extra_blocks(model: nn.Module, arch: str, dataset: str, num_classes: int, model_kwargs: dict) -> None:
    """Table 1(c)'s baseline: one more block of the stage's own type where BAM would go.

    At each bottleneck (the end of a stage, right before downsampling) the stage gets a copy of
    its last block (same topology, input and output width), freshly initialised the way the
    network initialises it (taken from an independently built instance).
    """
    fresh = build_network(arch, dataset, num_classes=num_classes, model_kwargs=model_kwargs)
    for target in find_bottlenecks(model, input_size_for(dataset)):
        stage_name, module = target, model.get_submodule(target)
        if not isinstance(module, nn.Sequential):  # the target is a stage's last block
            stage_name, _, last = target.rpartition(".")
            parent = model.get_submodule(stage_name) if stage_name else model
            if not (isinstance(parent, nn.Sequential) and last == str(len(parent) - 1)):
                raise ValueError(f"--attention extra-block needs stages built as nn.Sequential; {arch} has "
                                 f"{type(module).__name__} at {target}")
            module = parent
        module.append(copy.deepcopy(fresh.get_submodule(stage_name)[-1]))


@model_builder
def network_from_config(arch: str, dataset: str, attention: str, placement: str | None, num_classes: int,
                        model_kwargs: dict | None = None, attention_kwargs: dict | None = None) -> nn.Module:
    """The network of a run, rebuilt from plain values (the builder that ``network.json`` names)."""
    model_kwargs = dict(model_kwargs or {})
    if attention == "extra-block":
        model = build_network(arch, dataset, num_classes=num_classes, model_kwargs=model_kwargs)
        add_extra_blocks(model, arch, dataset, num_classes, model_kwargs)
        return model
    return build_network(arch, dataset, attention, placement, num_classes=num_classes,
                         model_kwargs=model_kwargs, **(attention_kwargs or {}))


def model_config(args, num_classes: int) -> dict:
    """Keyword arguments of :func:`network_from_config` for these options."""
    return {"arch": args.arch, "dataset": network_dataset(args.dataset), "attention": args.attention,
            "placement": args.placement, "num_classes": num_classes,
            "model_kwargs": {"dropout": args.recipe.dropout} if args.recipe.dropout > 0 else {},
            "attention_kwargs": attention_options(args)}


def preprocessing(dataset: str) -> dict:
    """How the evaluation images were normalised, so tools can feed a saved model new images."""
    from tasks.data.cifar import CIFAR100_MEAN, CIFAR100_STD
    from tasks.data.digits import digits_stats
    from tasks.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

    if dataset == "digits":
        mean, std = digits_stats()
    else:
        mean, std = (CIFAR100_MEAN, CIFAR100_STD) if dataset == "cifar100" else (IMAGENET_MEAN, IMAGENET_STD)
    return {"mean": list(mean), "std": list(std), "image_size": 224 if dataset == "imagenet" else 32,
            "dataset": dataset}


def count_macs_of(model: nn.Module, args) -> dict:
    """MACs of one image at the data set's input size; ResNet bottleneck networks also get ``macs_v1``,
    counted on a copy with the stride in the first 1x1 conv of each bottleneck (the paper's layout)."""
    dataset = network_dataset(args.dataset)
    size = input_size_for(dataset)
    result = {"macs": count_macs(model, size)}
    if get_network_entry(args.arch, dataset).resnet_blocks == "bottleneck":
        result["macs_v1"] = count_macs(to_resnet_v1(copy.deepcopy(model)), size)
    return result


# ------------------------------------------------------------------------------- loss and metrics
def classification_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
    images, labels = batch
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        error = 100.0 * (logits.argmax(dim=1) != labels).float().mean()
    return loss, {"top1_err": error.item()}


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """Per-sample 0/1 'label among the k highest logits' for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: hits[:, :k].any(dim=1) for k in ks}


class WithIndex(Dataset):
    """``(image, label, index)``: each evaluation sample says where it sits in the evaluation set,
    so that two runs' per-sample results line up sample by sample."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, label, index


def make_evaluate_fn(eval_set: Dataset, batch_size: int, num_workers: int):
    loader = DataLoader(WithIndex(eval_set), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.cuda.is_available())

    def evaluate(model: nn.Module, accelerator, step: int) -> dict:
        parts = [], [], [], []  # top-1 hits, top-5 hits, losses, indices
        for images, labels, index in progress(prepare_eval_loader(accelerator, loader), desc="eval", leave=False,
                                              main_process=accelerator.is_main_process):
            with accelerator.autocast():
                logits = model(images).float()
            correct = topk_correct(logits, labels)
            loss = F.cross_entropy(logits, labels, reduction="none")
            # gather_for_metrics drops the samples padded in to even out the last batch.
            for part, value in zip(parts, accelerator.gather_for_metrics((correct[1], correct[5], loss, index))):
                part.append(value.cpu())
        hits1, hits5, losses, indices = (torch.cat(part) for part in parts)
        return {
            "top1_err": 100.0 * (1.0 - hits1.double().mean().item()),
            "top5_err": 100.0 * (1.0 - hits5.double().mean().item()),
            "loss": losses.mean().item(),
            "num_images": float(len(hits1)),
            # per sample, for a paired comparison with another run (tasks.report): 50,000 ImageNet
            # images take about 0.5 MB
            "per_sample": {"index": indices, "top1": hits1, "top5": hits5},
        }

    return evaluate


# ------------------------------------------------------------------------------------------- task
@dataclass
class ClassifyData:
    train: Dataset
    eval: Dataset
    num_classes: int


@dataclass
class ClassifySchedule(Schedule):
    steps_per_epoch: int = 0


class ClassifyTask(Task):
    name = "classify"
    title = "Classification"
    prog = "python -m tasks.classify"
    description = ("Train an image classifier with or without BAM (top-1/top-5 error, params, MACs). "
                   "Without arguments: a quick CPU run on the embedded digits data set.")
    attentions = ATTENTIONS
    run_defaults = {"eval_every": None}
    primary_metric = "top1_err"
    primary_mode = "min"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", choices=DATASETS, default="digits",
                            help="digits (default): scikit-learn's handwritten digits at 32x32, no download")
        parser.add_argument("--arch", default=None,
                            help=f"network (`python -m tasks.profile --help` lists them); "
                            f"default {DEFAULT_DIGITS_ARCH} on digits")
        parser.add_argument("--placement", choices=PLACEMENTS, default=None,
                            help="where attention goes (default: bottleneck; block for se and cbam); "
                                 "--attention bam-c = BAM in every block; extra-block = one more conv block "
                                 "of the stage's type at BAM's places (Table 1c)")
        bam = parser.add_argument_group("BAM settings (Table 1 ablations)")
        bam.add_argument("--reduction", type=int, default=None, help="channel reduction r (default 16)")
        bam.add_argument("--dilation", type=int, default=None, help="dilation d of the spatial branch (default 4)")
        bam.add_argument("--branches", choices=("both", "channel", "spatial"), default=None)
        bam.add_argument("--combine", choices=("sum", "max", "product", "sigmoid_sum"), default=None)
        bam.add_argument("--no-identity", action="store_true", help="F * M instead of F + F * M")
        recipe = parser.add_argument_group("recipe (defaults from --recipe, else the network family's)")
        recipe.add_argument("--recipe", default=None, help=f"one of {', '.join(recipes.list_recipes())}")
        recipe.add_argument("--epochs", type=int, default=None)
        recipe.add_argument("--lr", type=float, default=None)
        recipe.add_argument("--milestones", type=int, nargs="*", default=None, help="epochs of the lr steps")
        recipe.add_argument("--gamma", type=float, default=None, help="lr factor at each milestone")
        recipe.add_argument("--weight-decay", type=float, default=None)
        recipe.add_argument("--momentum", type=float, default=None)
        recipe.add_argument("--nesterov", action="store_true", default=None)
        recipe.add_argument("--dropout", type=float, default=None, help="dropout inside WideResNet blocks")
        parser.add_argument("--eval-batch-size", type=int, default=None, help="default: twice the training batch")
        parser.add_argument("--download", action="store_true", help="download CIFAR-100 if it is missing")
        parser.add_argument("--experiment", default=None, metavar="TABLE:ROW",
                            help="record the paper table row this run reproduces (set by tasks.classify.experiments)")

    def check(self, args: argparse.Namespace) -> None:
        super().check(args)
        resolve_args(args)

    def data(self, args: argparse.Namespace, accelerator) -> ClassifyData:
        train_set, num_classes = load_split(args.dataset, args.data_root, train=True, download=args.download)
        eval_set, _ = load_split(args.dataset, args.data_root, train=False)
        if args.max_images is not None:
            eval_set = Subset(eval_set, range(min(args.max_images, len(eval_set))))
        # torchvision transforms draw from the global RNGs: seeded per sample, they resume exactly.
        return ClassifyData(SeededDataset(train_set), eval_set, num_classes)

    def batch_size(self, args: argparse.Namespace, num_processes: int) -> int:
        return per_process_batch(args.batch_size or args.recipe.batch_size, num_processes)

    def schedule(self, args: argparse.Namespace, data: ClassifyData, steps_per_epoch: int) -> ClassifySchedule:
        return ClassifySchedule(max_steps=args.max_steps or args.recipe.epochs * steps_per_epoch,
                                eval_every=steps_per_epoch if args.eval_every is None else args.eval_every,
                                steps_per_epoch=steps_per_epoch)

    def model(self, args: argparse.Namespace, data: ClassifyData) -> nn.Module:
        return network_from_config(**model_config(args, data.num_classes))

    def optimizer(self, args: argparse.Namespace, model: nn.Module, data: ClassifyData, schedule: ClassifySchedule):
        optimizer = recipes.build_optimizer(model.parameters(), args.recipe)
        return optimizer, recipes.build_scheduler(optimizer, args.recipe, schedule.steps_per_epoch)

    def loss(self, args: argparse.Namespace):
        return classification_loss

    def describe(self, args: argparse.Namespace, data: ClassifyData, model: nn.Module,
                 schedule: ClassifySchedule) -> RunInfo:
        counts = count_macs_of(model, args)
        placement = "block" if args.attention == "bam-c" else args.placement
        epoch_steps = schedule.steps_per_epoch
        config = {
            "dataset": args.dataset, "arch": args.arch, "attention": args.attention, "placement": placement,
            "attention_options": attention_options(args), "num_classes": data.num_classes,
            "recipe": asdict(args.recipe), "steps_per_epoch": epoch_steps,
            "epochs": schedule.max_steps / epoch_steps, "max_steps": schedule.max_steps,
            "milestone_steps": [m * epoch_steps for m in args.recipe.milestones],
            "train_images": len(data.train),
            "eval_images": len(data.eval), "data_root": str(args.data_root) if args.data_root else None,
            "experiment": args.experiment_info, **counts,
        }
        experiment = args.experiment_info
        # The attention with its non-default settings, e.g. bam(dilation=1): what a row differs by.
        options = ", ".join(f"{k}={v}" for k, v in sorted(attention_options(args).items()))
        variant = f"{args.attention}({options})" if options else args.attention
        return RunInfo(
            # Runs to compare share a W&B group: the same network, data set and recipe.
            name=f"{args.dataset}-{args.arch}-{args.attention}-s{args.seed}", group=f"{args.dataset}-{args.arch}",
            config=config, tags=[experiment["table"]] if experiment else [],
            description=ModelDescription("tasks.classify.train:network_from_config",
                                         model_config(args, data.num_classes), self.name,
                                         preprocessing(args.dataset)),
            summary_extra={**counts, "placement": placement, "variant": variant,
                           "experiment": experiment})

    def evaluator(self, args: argparse.Namespace, data: ClassifyData, run_dir, tracker):
        batch = self.batch_size(args, world_size())
        return make_evaluate_fn(data.eval, args.eval_batch_size or 2 * batch, args.num_workers)

    def report(self, args: argparse.Namespace, run_dir, summary: dict) -> None:
        from tasks.report.plots import plot_curves
        from tasks.report.runs import load_local_run

        curves = plot_curves([load_local_run(run_dir)], run_dir)  # top-1 error against step, as PNG
        final, best = summary.get("final", {}), summary.get("best", {})
        nan = float("nan")
        macs_v1 = summary.get("macs_v1")
        print(f"{run_dir}: top-1 error {final.get('top1_err', nan):.2f}%, top-5 error {final.get('top5_err', nan):.2f}% "
              f"(best top-1 {best.get('top1_err', nan):.2f}% at step {summary['best_step']}); "
              f"{summary['params'] / 1e6:.3f}M params, {summary['macs'] / 1e9:.3f} GMACs"
              + (f" ({macs_v1 / 1e9:.3f} on the paper's v1 layout)" if macs_v1 else "")
              + "".join(f"\ncurves: {path}" for path in curves))


def resolve_args(args) -> argparse.Namespace:
    """Fill dataset-dependent defaults and check names (one run's options); ValueError lists the
    valid choices."""
    dataset = network_dataset(args.dataset)
    if args.arch is None and args.dataset == "digits":
        args.arch = DEFAULT_DIGITS_ARCH
    if args.arch is None:
        raise ValueError(f"--arch is required for {args.dataset}; valid: {', '.join(list_networks(dataset))}")
    if args.arch not in list_networks(dataset):
        raise ValueError(f"unknown architecture {args.arch!r} for --dataset {args.dataset}; valid names: "
                         f"{', '.join(list_networks(dataset))}")
    if args.placement is None:
        args.placement = default_placement(args.attention)
    if not isinstance(args.recipe, recipes.Recipe):
        base = recipes.get_recipe(args.recipe) if args.recipe else recipes.recipe_for(args.arch, args.dataset)
        args.recipe = recipes.with_overrides(
            base, epochs=args.epochs, lr=args.lr, milestones=args.milestones, gamma=args.gamma,
            weight_decay=args.weight_decay, momentum=args.momentum, nesterov=args.nesterov, dropout=args.dropout,
        )
    if args.recipe.epochs <= 0:
        raise ValueError(f"--epochs must be positive, got {args.recipe.epochs}")
    attention_options(args)  # options the attention lacks are refused now, not after the data loads
    args.experiment_info = None
    if args.experiment:
        from tasks.classify.experiments import lookup_row

        experiment, run = lookup_row(args.experiment)
        args.experiment_info = {"table": experiment.name, "title": experiment.title, "row": run.row,
                                "label": run.label, "paper": run.paper}
    return args


TASK = ClassifyTask()


def main(argv: list[str] | None = None) -> list[dict]:
    from tasks.report import report_paired_runs

    return run_main(TASK, argv, compare=report_paired_runs)


if __name__ == "__main__":
    main()
