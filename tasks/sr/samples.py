"""SR pictures: side-by-side panels (PNG files and W&B images), SR | bicubic | HR during training,
and what a comparison of SR runs shows of their final networks (:func:`comparison_section`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from tasks.common.model_io import load_model
from tasks.data.imresize import imresize
from tasks.report.plots import variant_name
from tasks.sr.evaluate import BICUBIC, load_sets, score_set
from tasks.utils.files import write_png_atomic
from tasks.utils.formatting import signed
from tasks.utils.images import quantize, side_by_side, to_hwc_uint8

_GAP = 4          # white pixels between panels
_CROP = 256       # panels show the central 256x256 pixels of each image (all of a smaller one)
# The BAM paper's Table 8 (its own SRResNet training, 10^6 updates): BAM minus baseline, in dB.
PAPER_GAIN_DB = {"Set5": 31.6688 - 31.5548, "Set14": 28.2827 - 28.2529}
PAPER_UPDATES = 1_000_000


def make_panel(images: Sequence, labels: Sequence[str]) -> Image.Image:
    """The images side by side (same size), their central ``_CROP`` pixels, each under its label
    (``\\n`` starts another line): SR | bicubic | HR during training, bicubic | SRResNet |
    SRResNet+BAM | HR in a comparison. Images: CxHxW (or 1xCxHxW) tensors in [0, 1], rounded as
    the metrics round them, or HxWx3 uint8 arrays."""
    tiles = []
    for image in map(to_hwc_uint8, images):
        top, left = max(0, (image.shape[0] - _CROP) // 2), max(0, (image.shape[1] - _CROP) // 2)
        tiles.append(image[top:top + _CROP, left:left + _CROP])
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"panel images differ in size: {[t.shape for t in tiles]}")
    return Image.fromarray(side_by_side(tiles, labels, gap=_GAP))


def bicubic_picture(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-bicubic upscaling of a CxHxW LR image in [0, 1], rounded to 8 bits as the bicubic
    baseline's scores round it."""
    return quantize(imresize(quantize(lr).double(), float(scale)), peak=255).double() / 255


# -- comparisons ---------------------------------------------------------------------------------
def model_label(attention: str = "none", global_residual: bool = False) -> str:
    """How tables and panels name the network: ``SRResNet+BAM``, with ``(global residual)`` when
    it has one."""
    name = "SRResNet" + ("" if attention == "none" else f"+{variant_name(attention)}")
    return name + (" (global residual)" if global_residual else "")


def _network_words(config: Mapping) -> str:
    model = config.get("model") or {}
    base = "SRResNet with a global bicubic residual (--global-residual; not SRGAN's network)" \
        if model.get("global_residual") else "SRGAN's SRResNet"
    words = f"{base}, x{config.get('scale')}, {model.get('num_blocks')} blocks of {model.get('channels')} channels"
    interval = model.get("attention_interval")
    if interval:
        suffix = "th" if interval % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(interval % 10, "th")
        words += f", attention after every {'block' if interval == 1 else f'{interval}{suffix} block'}"
    return words


def _honest_note(variants: Mapping[str, Sequence], sets: Sequence[str], bicubic: Mapping[str, float]) -> str:
    """What the numbers say of each network against bicubic without rounding up, and what runs of
    this length can say of the difference between them."""
    gains = {(attention, s): np.mean([run.metric(f"psnr/{s}") for run in runs])
             - bicubic[f"psnr/{s}"]
             for attention, runs in variants.items() for s in sets if f"psnr/{s}" in bicubic}
    below = [f"{model_label(a)} on {s} ({signed(gain, 2)} dB)"
             for (a, s), gain in gains.items() if gain <= 0]
    facts = (f"Not above bicubic: {', '.join(below)}." if below else
             f"Every network ends above bicubic on every set (by at least {signed(min(gains.values()), 2)} dB)."
             if gains else "")
    steps = min(int(run.steps or 0) for runs in variants.values() for run in runs)
    paper = ", ".join(f"{signed(PAPER_GAIN_DB[s], 2)} dB on {s}" for s in sets if s in PAPER_GAIN_DB)
    if steps >= PAPER_UPDATES:
        return f"{facts} Every network had the paper's {PAPER_UPDATES:,} updates; its Table 8 gain: {paper}.".strip()
    return (f"{facts} What runs of {steps:,} updates each can say: whether the pipeline trains the networks "
            f"the same way and how far each gets; the difference between them is mostly where short "
            f"trainings happened to end. What they cannot say: whether BAM helps. The paper's Table 8 gain "
            f"({paper or 'Set5 +0.11 dB, Set14 +0.03 dB'}) comes after {PAPER_UPDATES:,} updates and is smaller "
            f"than the spread of short runs over seeds and test images: train longer (the t91 or srgan preset) "
            f"and read the interval of the difference.").strip()


def _colour_error(outputs: Mapping[int, torch.Tensor], dataset) -> list[float]:
    """The mean of SR minus HR per channel over a set's images (``outputs``: index: SR), 0-255
    levels."""
    differences = [(quantize(sr).double() - quantize(dataset[index]["hr"]).double()).flatten(1)
                   for index, sr in outputs.items()]
    return torch.cat(differences, dim=1).mean(dim=1).tolist()


def _final_networks(runs: Sequence, folder: Path, stem: str, count: int = 2) -> list[str]:
    """Each run's final network (``checkpoints/last``) on the first set: the colour error line and
    the bicubic | networks | HR panels of its first ``count`` images (written under ``folder``)."""
    missing = [run.source for run in runs if run.folder is None]
    if missing:
        raise FileNotFoundError(f"no checkpoints at hand for {', '.join(missing)} (runs fetched from W&B)")
    config = runs[0].config
    protocol = config.get("protocol", "basicsr")
    source = (config.get("set_sources") or config["sets"])[0]
    dataset = next(iter(load_sets([source], int(config["scale"]), config.get("data_root")).values()))
    # Every image's output is kept: the colour error is over the whole set.
    networks = [load_model(run.folder / "checkpoints" / "last", task="sr")[0].eval() for run in runs]
    results = [score_set(dataset, network, protocol, keep=len(dataset)) for network in networks]
    bicubic_scores = score_set(dataset, BICUBIC, protocol)["images"]
    labels = [model_label(run.attention) for run in runs]
    errors = [_colour_error(result["outputs"], dataset) for result in results]
    colour = "; ".join(f"{label} {'/'.join(signed(v, 2) for v in error)}" for label, error in zip(labels, errors))
    lines = [f"Mean colour error of the final networks on {dataset.name} (SR − HR per channel R/G/B, 0–255 "
             f"levels; near 0 when the colours are right): {colour}.", ""]
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        outputs = [result["outputs"][index] for result in results]
        images = [bicubic_picture(item["lr"], dataset.scale), *outputs, item["hr"]]
        captions = [f"bicubic\n{bicubic_scores[item['name']]['psnr']:.2f} dB",
                    *(f"{label}\n{result['images'][item['name']]['psnr']:.2f} dB"
                      for label, result in zip(labels, results)), "HR"]
        name = f"{stem}{dataset.name}_{item['name']}.png"
        path = write_png_atomic(folder / "samples" / name, make_panel(images, captions))
        lines.append(f"![{path.stem}](samples/{path.name})")
    return lines


def comparison_section(variants: Mapping[str, Sequence], folder: Path, stem: str = "") -> list[str]:
    """What a comparison of SR runs (``tasks.report``) adds to its network's section, as Markdown
    lines: the network in words, what runs of this length can and cannot say, and from the final
    network of each model (first seed): its mean colour error on the first set and bicubic |
    baseline | variants | HR panels of that set's first images, captioned with their PSNR.
    ``variants``: ``{attention: runs}``, the baseline first; panels go to ``folder/samples``."""
    first = next(iter(variants.values()))[0]
    config = first.config
    precision = config.get("mixed_precision") or "no"
    trained = f" ({precision} autocast; scored in float32)" if precision != "no" else ""
    lines = [f"Network: {_network_words(config)}; {first.steps or 0:,} updates{trained}, protocol "
             f"`{config.get('protocol')}`, final checkpoints.", "",
             _honest_note(variants, list(config.get("sets") or []), first.reference.get("metrics") or {}), ""]
    try:
        lines += _final_networks([runs[0] for runs in variants.values()], folder, stem)
    except (FileNotFoundError, ValueError, KeyError) as error:
        lines.append(f"No panels or colour error: {error}.")
    return lines
