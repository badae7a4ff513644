"""Class-selectivity index per stage (paper Sec. 6.1, Fig. 4; Morcos et al. 2018).

    python -m tasks.analysis.selectivity --checkpoint runs/bam --baseline runs/base [--max-images 5000]

For a unit (a channel), let ``mu_max`` be its largest class-conditional mean activity and
``mu_rest`` the mean of its class-conditional means over all other classes; the index is
``(mu_max - mu_rest) / (mu_max + mu_rest)``: 0 for a unit that fires the same for every class,
1 for one that fires for a single class. A unit's activity on an image is the spatial mean of its
rectified feature map, ``mean(relu(F))``, as Morcos et al. take post-ReLU activity (the same as the
plain mean where a stage already ends in a ReLU). Units that never fire have no index and are left
out (NaN).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from tasks.common.cli import add_data_args, add_device_arg, positive_int
from tasks.report.plots import pyplot, save_figure


def class_selectivity(activity: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Index of each unit from an (images x units) activity table; NaN for silent units."""
    if activity.ndim != 2 or labels.shape != activity.shape[:1]:
        raise ValueError(f"expected activity (N, units) and labels (N,), got {tuple(activity.shape)} "
                         f"and {tuple(labels.shape)}")
    if (activity < 0).any():
        raise ValueError("class selectivity is defined for non-negative (post-ReLU) activity")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    activity = activity.double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    if present.sum() < 2:
        raise ValueError("class selectivity needs images of at least two classes")
    sums = torch.zeros(num_classes, activity.shape[1], dtype=torch.float64).index_add_(0, labels, activity)
    class_means = sums[present] / counts[present, None]  # (classes present, units)
    top = class_means.max(0).values
    rest = (class_means.sum(0) - top) / (class_means.shape[0] - 1)
    index = (top - rest) / (top + rest)
    return torch.where(top > 0, index, torch.full_like(index, float("nan")))


@torch.no_grad()
def stage_selectivity(model: nn.Module, loader, layers: list[str], num_classes: int,
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Selectivity index of every channel at each named stage, over a labelled loader.

    Hooks registered here run after any attention hook already on the same module, so for a
    network with BAM they see the refined (post-BAM) features. A unit's activity is rectified
    before the spatial mean: negative values must not cancel positive ones.
    """
    from tasks.analysis.attention_maps import record_features

    model.eval().to(device)
    labels, activity = [], {name: [] for name in layers}
    with record_features(model, layers, reduce=lambda out: out.clamp_min(0).mean(dim=(2, 3))) as last:
        for images, targets in loader:
            model(images.to(device))
            labels.append(targets.cpu())
            for name in layers:
                activity[name].append(last[name])
    if not labels:
        raise ValueError("class selectivity needs at least one batch of images; the data set is empty")
    labels = torch.cat(labels)
    return {name: class_selectivity(torch.cat(activity[name]), labels, num_classes) for name in layers}


def stage_numbers(index: torch.Tensor) -> dict:
    """Mean and median index over the units that fire (None when none does), and the unit counts."""
    fired = index[~torch.isnan(index)]
    return {"mean": float(fired.mean()) if len(fired) else None,
            "median": float(fired.median()) if len(fired) else None,
            "units": len(fired), "silent_units": len(index) - len(fired)}


def plot_selectivity(results: dict[str, dict[str, torch.Tensor]], out_dir, title: str = "") -> list:
    """One PNG per stage with the histogram of every model (e.g. baseline, BAM) overlaid.

    ``results`` maps a model label to {stage name: indices}; stages are matched by position, since
    the same stage may carry different module names in the two networks.
    """
    plt = pyplot()

    out_dir = Path(out_dir)  # made by save_figure
    stage_names = {label: list(stages) for label, stages in results.items()}
    count = min(len(names) for names in stage_names.values())
    bins = torch.linspace(0, 1, 26).tolist()
    written = []
    for i in range(count):
        fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=120)
        for label, names in stage_names.items():
            values = results[label][names[i]]
            values = values[~torch.isnan(values)]
            legend = f"{label}: mean {values.mean():.3f}, {len(values)} units" if len(values) else label
            ax.hist(values.tolist(), bins=bins, alpha=0.55, density=True, label=legend)
        first = next(iter(stage_names.values()))[i]
        ax.set(title=f"{title + ' — ' if title else ''}stage {i + 1} ({first})",
               xlabel="class-selectivity index", ylabel="density of units")
        ax.legend()
        written.append(save_figure(fig, out_dir / f"selectivity_stage{i + 1}.png"))
    return written


def evaluation_set(record, data_root: str | None):
    """The labelled evaluation images of the data set the checkpoint (its ModelDescription) was trained on."""
    from tasks.classify.train import DATASETS, load_split

    dataset = record.extra.get("dataset") or record.kwargs.get("dataset")
    if dataset not in DATASETS:
        raise ValueError(f"class selectivity needs a classification checkpoint (digits, cifar100 or imagenet); "
                         f"this one was trained on {dataset!r}")
    return load_split(dataset, data_root, train=False)


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them when ``count >= total``).

    Evaluation sets stored by class (an ImageNet folder: 50 images of one class after another)
    would give only the first few classes to the first ``count`` images. ``count`` is at least 1
    (``--max-images`` takes positive numbers only).
    """
    count = min(count, total)
    return [i * total // count for i in range(count)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.analysis.selectivity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="run folder, checkpoint folder or network.json of a network with BAM")
    parser.add_argument("--baseline", help="the same for the same network without BAM")
    add_data_args(parser)
    parser.add_argument("--max-images", type=positive_int, help="use N evaluation images spread evenly over the set "
                        "(not the first N: an ImageNet folder is sorted by class)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default: 64)")
    add_device_arg(parser)
    parser.add_argument("--output-dir", type=Path, help="folder for the PNGs and selectivity.json "
                        "(default: <checkpoint>/selectivity)")
    return parser


def _measure(args: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader, Subset

    from bam import attention_targets, find_bottlenecks
    from tasks.common.model_io import load_model
    from tasks.common.summary import load_summary, write_summary
    from tasks.utils.files import write_json_atomic

    models = {"BAM": load_model(args.checkpoint, task="classify")}  # class selectivity needs classes
    if args.baseline:
        models = {"baseline": load_model(args.baseline, task="classify"), **models}
    record = models["BAM"][1]
    images, num_classes = evaluation_set(record, args.data_root)
    if args.max_images is not None:
        images = Subset(images, spread_indices(len(images), args.max_images))
    size = int(record.extra.get("image_size", 224))
    results = {}
    for label, (model, _) in models.items():
        # The stage ends: where BAM sits in a BAM network, the same bottlenecks in a baseline.
        layers = list(attention_targets(model)) or find_bottlenecks(model, (3, size, size))
        loader = DataLoader(images, batch_size=args.batch_size)
        results[label] = stage_selectivity(model, loader, layers, num_classes, args.device)
    checkpoint = Path(args.checkpoint)
    output = args.output_dir or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "selectivity"
    files = plot_selectivity(results, output, title=str(record.kwargs.get("arch", "")))
    numbers = {label: {stage: stage_numbers(v) for stage, v in stages.items()} for label, stages in results.items()}
    write_json_atomic(output / "selectivity.json", numbers)
    if (checkpoint / "summary.json").is_file():  # keep the numbers with the run they describe
        summary = load_summary(checkpoint)
        summary["class_selectivity"] = numbers
        write_summary(checkpoint, summary)
    for label, stages in numbers.items():
        print(label + ": " + ", ".join(f"{stage} mean " + ("-" if n["mean"] is None else f"{n['mean']:.3f}")
                                       for stage, n in stages.items()))
    print("\n".join(str(f) for f in files))
    return numbers


def main(argv: list[str] | None = None) -> dict:
    from tasks.common.cli import run_cli

    return run_cli(_measure, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
