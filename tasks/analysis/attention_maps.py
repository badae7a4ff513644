"""Pictures of what BAM does (paper Figs. 5 and 6), one PNG panel per image.

Row 1: the input and, per stage (with more than six modules, as BAM-C has, the last module at
each resolution), BAM's 3-D attention map averaged over channels, resized to the
image and overlaid. Row 2 (with a baseline checkpoint): the baseline network's feature map at the
same position (mean absolute activation over channels), beside row 3: the BAM network's refined
feature map there. Last row: each stage's channel attention (BAM's sigmoid(Mc), CBAM's channel
gate), sorted, so its spread (how strongly the module picks channels) reads at a glance.

    python -m tasks.analysis.attention_maps --checkpoint runs/bam --baseline runs/base \\
        --images photos/ --output-dir runs/bam/attention
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import functional as TF

from bam import BAM, attention_targets, capture_attention, find_bottlenecks
from tasks.report.plots import pyplot, save_figure
from tasks.utils.messages import note

# More modules than this (BAM-C: one per block) are shown one per resolution: the last of each.
MAX_COLUMNS = 6


@contextmanager
def record_features(model: nn.Module, layers: Sequence[str],
                    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda out: out
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """Keep ``reduce(output)`` of each named module's last call, in float on the CPU; hooks added
    here see the post-attention output."""
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"model has no module named {unknown[0]!r}")
    store: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: store.__setitem__(name, reduce(out.detach().float()).cpu()))
        for name in layers]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _heat(values: torch.Tensor, size: tuple[int, int], normalise: bool) -> np.ndarray:
    """A 2-D map resized (bilinear) to the image; min-max scaled when it is not already in [0, 1]."""
    heat = F.interpolate(values[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    if normalise:
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    return heat.numpy()


def render_panel(image: np.ndarray, attention: dict[str, dict[str, torch.Tensor]],
                 bam_features: dict[str, torch.Tensor] | None, baseline_features: dict[str, torch.Tensor] | None,
                 path: Path, title: str = "") -> Path:
    """Draw one image's panel (see the module docstring) and save it as PNG."""
    plt = pyplot()

    features = {} if baseline_features is None else {"baseline\nfeatures": baseline_features,
                                                      "+BAM\nfeatures": bam_features}
    labels = [*features, "channel\nattention"]
    rows, columns = 1 + len(labels), 1 + len(attention)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.5 * rows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")  # the channel attention plots turn theirs back on
    axes[0][0].imshow(image)
    axes[0][0].set_title("input", fontsize=9)
    for ax, label in zip(axes[1:, 0], labels):
        ax.text(0.5, 0.5, label, ha="center", va="center", fontsize=11)
    size = image.shape[:2]
    for c, (stage, maps) in enumerate(attention.items()):
        column = axes[:, c + 1]
        heat = _heat(maps["combined"].mean(0), size, normalise=False)
        column[0].imshow(image)
        shown = column[0].imshow(heat, cmap="jet", alpha=0.5, vmin=0,
                                 vmax=float(max(1.0, heat.max())))
        column[0].set_title(f"{stage}\nM mean {heat.mean():.2f}", fontsize=9)
        for ax, stored in zip(column[1:], features.values()):
            # The feature map at the same stage: same module path if present, else same position.
            key = stage if stage in stored else list(stored)[min(c, len(stored) - 1)]
            ax.imshow(image)
            ax.imshow(_heat(stored[key].abs().mean(0), size, normalise=True), cmap="jet", alpha=0.5)
            ax.set_title(key, fontsize=9)
        if "channel_gate" in maps:
            ax = column[-1]
            ax.axis("on")
            gates = maps["channel_gate"].flatten().sort(descending=True).values
            ax.plot(gates.numpy(), color="#d62728")
            ax.set_ylim(0, 1)
            ax.set_xlabel("channel (sorted)", fontsize=8)
            ax.set_ylabel("channel gate", fontsize=8)
            ax.tick_params(labelsize=7)
    if attention:
        # An inset colour bar: one taken from the last axes would shrink that stage's image.
        fig.colorbar(shown, cax=axes[0][-1].inset_axes([1.04, 0.0, 0.05, 1.0]))
    return save_figure(fig, path, title)


def load_image(path: Path, size: int) -> np.ndarray:
    """An RGB image resized so that its short side is ``size`` and center-cropped to a square (the
    network's input size); says so when it changes the image."""
    from PIL import Image

    from tasks.data.images import read_rgb

    picture = Image.fromarray(read_rgb(path))
    if picture.size != (size, size):
        note(f"{path} is {picture.width}x{picture.height}: resized (short side {size}) and center-cropped "
             f"to {size}x{size}, the network's input size")
    picture = TF.resize(picture, size, interpolation=TF.InterpolationMode.BICUBIC)
    return np.array(TF.center_crop(picture, size))  # writable, as torch wants


@torch.no_grad()
def attention_panels(bam_model: nn.Module, images: Sequence[Path], out_dir: Path, mean, std, size: int,
                     baseline: nn.Module | None = None) -> list[Path]:
    """One PNG per image; returns the files written."""
    bam_model.eval()
    targets = attention_targets(bam_model)  # module path -> attention key
    stages, path_of = list(targets), {key: path for path, key in targets.items()}
    if not stages:
        raise ValueError("the checkpoint's network has no attention modules (was it trained with --attention none?)")
    base_layers = []
    if baseline is not None:
        baseline.eval()
        # The same module paths as the BAM network's where the baseline has them (same network
        # without BAM); otherwise its own bottlenecks, matched by position.
        own = dict(baseline.named_modules())
        base_layers = [p for p in stages if p in own] or find_bottlenecks(baseline, (3, size, size))
    written = []
    for path in images:
        image = load_image(path, size)
        batch = TF.normalize(TF.to_tensor(image), mean, std)[None]
        with capture_attention(bam_model) as maps, record_features(bam_model, stages) as refined:
            bam_model(batch)
        attention = {path_of.get(key, key): _panel_maps(bam_model, key, values) for key, values in maps.items()}
        attention = last_per_resolution(attention) if len(attention) > MAX_COLUMNS else attention
        bam_features = base_features = None
        if baseline is not None:
            with record_features(baseline, base_layers) as base:
                baseline(batch)
            bam_features, base_features = {k: v[0] for k, v in refined.items()}, {k: v[0] for k, v in base.items()}
        written.append(render_panel(image, attention, bam_features, base_features,
                                    out_dir / f"attention_{path.stem}.png", title=path.name))
    return written


def last_per_resolution(attention: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """Keep, of modules in forward order, the last one at each resolution (a stage's end)."""
    # Later modules overwrite earlier ones at the same resolution.
    names = set({tuple(maps["combined"].shape[-2:]): name for name, maps in attention.items()}.values())
    return {name: maps for name, maps in attention.items() if name in names}


def _panel_maps(model: nn.Module, key: str, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One image's maps of attention module ``key``, with ``channel_gate`` in [0, 1].

    ``capture_attention`` gives BAM's raw Mc (before its sigmoid) but CBAM's gate after it.
    """
    if "combined" not in maps:
        raise ValueError(f"attention module {key!r} has no spatial attention map (SE?); attention-map panels "
                         "need a network with BAM or CBAM")
    module = dict(model.named_modules()).get(f"attention.{key}")
    panel = {name: value[0] for name, value in maps.items()}
    if "channel" in panel:
        panel["channel_gate"] = torch.sigmoid(panel["channel"]) if isinstance(module, BAM) else panel["channel"]
    return panel


def build_parser() -> argparse.ArgumentParser:
    from tasks.common.tracking import WANDB_MODES

    parser = argparse.ArgumentParser(prog="python -m tasks.analysis.attention_maps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="run folder, checkpoint folder or network.json of a network with BAM")
    parser.add_argument("--baseline", help="the same for the same network without BAM")
    parser.add_argument("--images", nargs="+", required=True, help="image files or folders")
    parser.add_argument("--output-dir", type=Path, help="folder for the PNGs (default: <checkpoint>/attention)")
    parser.add_argument("--wandb", choices=WANDB_MODES, default="disabled",
                        help="also log the panels to W&B (default: %(default)s)")
    parser.add_argument("--wandb-project", default="bam")
    return parser


def _draw(args: argparse.Namespace) -> list[Path]:
    from tasks.common.model_io import load_model
    from tasks.data.images import list_images

    model, record = load_model(args.checkpoint)
    extra = record.extra  # how its classification run normalised the training images
    if not {"mean", "std", "image_size"} <= set(extra):
        raise ValueError("the checkpoint does not say how its images were normalised (mean, std, image_size): "
                         "attention maps are drawn for classification runs of this repository")
    baseline = load_model(args.baseline)[0] if args.baseline else None
    files = [f for item in args.images for f in (list_images(item) if Path(item).is_dir() else [Path(item)])]
    output = args.output_dir or (Path(args.checkpoint) if Path(args.checkpoint).is_dir()
                                 else Path(args.checkpoint).parent) / "attention"
    written = attention_panels(model, files, output, extra["mean"], extra["std"],
                               int(extra["image_size"]), baseline)
    for path in written:
        print(path)
    if args.wandb != "disabled":
        from tasks.common.tracking import Tracker

        tracker = Tracker(output, {"checkpoint": str(args.checkpoint), "baseline": args.baseline},
                          project=args.wandb_project, mode=args.wandb, task="analysis")
        tracker.log_images({f"attention/{p.stem}": p for p in written}, step=0)
        tracker.finish()
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    from tasks.common.cli import run_cli

    return run_cli(_draw, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
