"""What a paired SR run ends with: SRResNet against SRResNet+BAM, beside bicubic, per set.

``accelerate launch launch/sr.py --preset quick --attention none bam`` trains both networks the
same way; :func:`write_sr_comparison` then writes into the comparison folder

* ``sr_comparison.md``: per set, bicubic and each network (PSNR, SSIM, gain over bicubic, mean
  colour error of SR minus HR per channel, parameters, MACs, wall time) and BAM minus baseline;
* ``psnr_curves.png``: PSNR against step of both runs on every set, bicubic as a dashed line;
* ``samples/*.png``: bicubic | SRResNet | SRResNet+BAM | HR crops of the first set's images, each
  captioned with its PSNR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from tasks.sr.evaluate import load_sets

__all__ = ["write_sr_comparison", "SRRun"]

# The BAM paper's Table 8 (its own SRResNet training, 10^6 updates): BAM minus baseline, in dB.
PAPER_GAIN_DB = {"Set5": 31.6688 - 31.5548, "Set14": 28.2827 - 28.2529}
PAPER_UPDATES = 1_000_000


@dataclass
class SRRun:
    """One finished SR run, read from its folder."""

    folder: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]

    @classmethod
    def read(cls, folder: str | Path) -> "SRRun":
        folder = Path(folder)
        summary = json.loads((folder / "summary.json").read_text())
        if summary.get("task") != "sr":
            raise ValueError(f"{folder} is a {summary.get('task')!r} run, not a super-resolution run")
        lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").is_file() else []
        history = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if row.get("split") == "eval":
                history.append(row)
        return cls(folder, summary, history)

    @property
    def attention(self) -> str:
        return str(self.summary.get("attention") or "none")

    @property
    def label(self) -> str:
        return "SRResNet" + ("" if self.attention == "none" else f"+{self.attention.upper()}")

    def score(self, metric: str, set_name: str) -> float | None:
        return (self.summary.get("final") or {}).get(f"{metric}/{set_name}")

    def curve(self, set_name: str) -> tuple[list[int], list[float]]:
        rows = [(row["step"], row[f"psnr/{set_name}"]) for row in self.history if f"psnr/{set_name}" in row]
        return [s for s, _ in rows], [v for _, v in rows]


def _network_words(config: dict) -> str:
    model = config.get("model") or {}
    base = "SRResNet with a global bicubic residual (--global-residual; not SRGAN's network)" \
        if model.get("global_residual") else "SRGAN's SRResNet"
    return (f"{base}, x{config.get('scale')}, {model.get('num_blocks')} blocks of {model.get('channels')} channels, "
            f"BAM after every {model.get('attention_interval')}th block")


def _count(value: int | None, scale: float, unit: str) -> str:
    return "–" if value is None else f"{value / scale:.3f}{unit}"


@dataclass
class Outputs:
    """A network's outputs on one set: the images, their PSNR, and the mean colour error."""

    images: list[torch.Tensor]
    psnr: list[float]
    colour_error: list[float]  # mean of SR minus HR per channel, 0-255 levels


def _outputs(model: torch.nn.Module, dataset, protocol: str) -> Outputs:
    from tasks.sr.metrics import score_sr
    from tasks.utils.images import quantize

    totals, pixels, images, psnrs = torch.zeros(3, dtype=torch.float64), 0, [], []
    for item in dataset:
        sr = model(item["lr"][None]).float()[0].clamp(0, 1)
        images.append(sr)
        psnrs.append(float(score_sr(sr, item["hr"], dataset.scale, protocol, gray=item["gray"],
                                    value_range=1.0)["psnr"][0]))
        difference = quantize(sr).double() - quantize(item["hr"]).double()
        totals += difference.sum(dim=(1, 2))
        pixels += difference[0].numel()
    return Outputs(images, psnrs, (totals / pixels).tolist())


@torch.no_grad()
def _final_outputs(runs: Sequence[SRRun], dataset, protocol: str) -> dict[str, Outputs]:
    """Each run's final network (``checkpoints/last``) on ``dataset``."""
    from tasks.common.model_io import load_model

    results = {}
    for run in runs:
        model, _ = load_model(run.folder / "checkpoints" / "last", task="sr")
        results[run.label] = _outputs(model.eval(), dataset, protocol)
    return results


def _set_table(set_name: str, dataset, runs: Sequence[SRRun], bicubic: dict, biases: dict) -> list[str]:
    lines = [f"### {set_name} ({len(dataset)} images)", "",
             "| | PSNR (dB) | SSIM | PSNR gain over bicubic (dB) | colour error R/G/B (levels) | params | MACs "
             "| wall time |", "|---|---:|---:|---:|---|---:|---:|---:|"]
    lines.append(f"| bicubic | {bicubic['psnr']:.4f} | {bicubic['ssim']:.4f} | – | – | – | – | – |")
    for run in runs:
        psnr, ssim = run.score("psnr", set_name), run.score("ssim", set_name)
        found = biases.get(run.label)
        colour = "/".join(f"{b:+.2f}" for b in found.colour_error) if found else "–"
        lines.append(f"| {run.label} | {psnr:.4f} | {ssim:.4f} | {psnr - bicubic['psnr']:+.4f} | {colour} "
                     f"| {_count(run.summary.get('params'), 1e6, 'M')} | {_count(run.summary.get('macs'), 1e9, 'G')} "
                     f"| {run.summary.get('wall_time_s', 0):.0f} s |")
    if len(runs) == 2:
        base, other = runs
        psnr, ssim = (other.score(m, set_name) - base.score(m, set_name) for m in ("psnr", "ssim"))
        lines.append(f"| **{other.label} − {base.label}** | {psnr:+.4f} | {ssim:+.4f} | | "
                     f"| {(other.summary['params'] - base.summary['params']) / 1e6:+.3f}M "
                     f"| {(other.summary['macs'] - base.summary['macs']) / 1e9:+.3f}G | |")
    return lines + [""]


def _plot_curves(runs: Sequence[SRRun], sets: Sequence[str], bicubic: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 3.8), dpi=120, squeeze=False, sharex=True)
    colours = {"none": "#555555", "bam": "#d62728"}
    last_step = max(int(run.summary.get("steps") or 0) for run in runs)
    axes[0][0].set_xlim(0, last_step * 1.04)  # one step axis: a set scored only at the end is a dot there
    for ax, set_name in zip(axes[0], sets):
        for run in runs:
            steps, values = run.curve(set_name)
            ax.plot(steps, values, marker="o", ms=3, label=run.label, color=colours.get(run.attention))
        ax.axhline(bicubic[set_name]["psnr"], color="#1f77b4", linestyle="--", linewidth=1, label="bicubic")
        ax.set_title(f"{set_name}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"PSNR on {set_name} (dB, Y channel)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _panels(runs: Sequence[SRRun], dataset, outputs: dict[str, Outputs], bicubic_scores: dict, folder: Path,
            count: int = 2) -> list[Path]:
    from tasks.data.imresize import imresize
    from tasks.sr.samples import make_panel, save_panel
    from tasks.utils.images import quantize

    paths = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        name = item["name"]
        bicubic = quantize(imresize(quantize(item["lr"]).double(), float(dataset.scale)), peak=255).double() / 255
        images = [bicubic, *(outputs[run.label].images[index] for run in runs), item["hr"]]
        captions = [f"bicubic\n{bicubic_scores['images'][name]['psnr']:.2f} dB",
                    *(f"{run.label}\n{outputs[run.label].psnr[index]:.2f} dB" for run in runs), "HR"]
        paths.append(save_panel(make_panel(images, captions), folder / f"{dataset.name}_{name}.png"))
    return paths


def _against_bicubic(runs: Sequence[SRRun], sets: Sequence[str], bicubic: dict) -> str:
    """What the numbers say of each network against bicubic, without rounding up."""
    below = [f"{run.label} on {s} ({run.score('psnr', s) - bicubic[s]['psnr']:+.2f} dB)"
             for run in runs for s in sets if run.score("psnr", s) <= bicubic[s]["psnr"]]
    if below:
        return f"Not above bicubic: {', '.join(below)}."
    least = min(run.score("psnr", s) - bicubic[s]["psnr"] for run in runs for s in sets)
    return f"Both networks end above bicubic on every set (by at least {least:+.2f} dB)."


def _honest_note(runs: Sequence[SRRun], sets: Sequence[str], bicubic: dict) -> str:
    steps = min(int(run.summary.get("steps") or 0) for run in runs)
    paper = ", ".join(f"{PAPER_GAIN_DB[s]:+.2f} dB on {s}" for s in sets if s in PAPER_GAIN_DB)
    facts = _against_bicubic(runs, sets, bicubic)
    if steps >= PAPER_UPDATES:
        return f"{facts} Both networks had the paper's {PAPER_UPDATES:,} updates; its Table 8 gain: {paper}."
    return (f"{facts} What a run of {steps:,} updates each can say: whether the pipeline trains both networks "
            f"the same way and how far each gets; the difference between them is mostly where two short "
            f"trainings happened to end. What it cannot say: whether BAM helps. The paper's Table 8 gain "
            f"({paper or 'Set5 +0.11 dB, Set14 +0.03 dB'}) comes after {PAPER_UPDATES:,} updates and is smaller "
            f"than the spread of short runs over seeds and test images: train longer (the t91 or srgan preset) "
            f"and read the interval of the difference.")


def write_sr_comparison(run_dirs: Sequence[str | Path], output: str | Path) -> str:
    """Write the paired SR comparison (see the module docstring) into ``output``; return its Markdown."""
    runs = sorted((SRRun.read(d) for d in run_dirs), key=lambda r: (r.attention != "none", r.attention))
    output = Path(output)
    config = runs[0].summary["config"]
    sets = list(config["sets"])
    scale = int(config["scale"])
    protocol = config.get("protocol", "basicsr")
    datasets = dict(zip(sets, load_sets(config.get("set_sources") or sets, scale, config.get("data_root")).values()))
    bicubic = {name: {m: runs[0].summary["reference"]["metrics"][f"{m}/{name}"] for m in ("psnr", "ssim")}
               for name in sets}
    first = datasets[sets[0]]
    outputs = _final_outputs(runs, first, protocol)
    lines = [f"## {' vs '.join(run.label for run in runs)}, x{scale}, protocol `{config.get('protocol')}`", "",
             f"Network: {_network_words(config)}. {runs[0].summary.get('steps'):,} updates each, seed "
             f"{runs[0].summary.get('seed')}, the same data order and evaluation; final checkpoints. Colour error: "
             f"mean of SR minus HR per channel over {sets[0]} (0-255).", ""]
    for set_name in sets:
        lines += _set_table(set_name, datasets[set_name], runs, bicubic[set_name],
                            outputs if set_name == sets[0] else {})
    curves = _plot_curves(runs, sets, bicubic, output / "psnr_curves.png")
    from tasks.sr.evaluate import BICUBIC, score_set

    panels = _panels(runs, first, outputs, score_set(first, BICUBIC, protocol), output / "samples")
    lines += [_honest_note(runs, sets, bicubic), "", f"![PSNR against step]({curves.name})", ""]
    lines += [f"![{p.stem}](samples/{p.name})" for p in panels]
    text = "\n".join(lines) + "\n"
    from tasks.utils.files import write_text_atomic

    write_text_atomic(output / "sr_comparison.md", text)
    return text
