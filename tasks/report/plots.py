"""Validation curves of baseline and attention runs on one axis (PNG)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from tasks.report.runs import BASELINE, Run, group_comparable, setting_labels

# Baseline in grey, BAM in the colour people associate with "ours"; other variants after.
_COLOURS = {BASELINE: "#555555", "bam": "#d62728", "bam-c": "#ff7f0e", "bam-released": "#9467bd",
            "se": "#1f77b4", "cbam": "#2ca02c"}


# Axis titles for the tasks' primary metrics; others are shown by name.
_AXIS_TITLES = {"top1_err": "top-1 error (%)", "top5_err": "top-5 error (%)", "miou": "mIoU",
                "pixel_acc": "pixel accuracy", "mAP": "box mAP@[.5:.95]"}


def axis_title(metric: str) -> str:
    """``psnr/Set5`` -> ``PSNR on Set5 (dB)``; known names spelled out; anything else as is."""
    kind, _, where = metric.partition("/")
    if kind in ("psnr", "ssim") and where:
        return f"PSNR on {where} (dB)" if kind == "psnr" else f"SSIM on {where}"
    return _AXIS_TITLES.get(metric, metric)


def variant_name(variant: str) -> str:
    """``bam`` -> ``BAM``, ``bam-c`` -> ``BAM-C``; an ablation's options keep their spelling:
    ``bam(dilation=1)`` -> ``BAM(dilation=1)``."""
    name, paren, options = variant.partition("(")
    return name.upper() + paren + options


def _mean_curve(runs: Sequence[Run], metric: str):
    """Mean over seeds at the steps every run evaluated, with the min-max band."""
    curves = [run.curve(metric) for run in runs]
    curves = [c for c in curves if c[0]]
    if not curves:
        return None
    common = sorted(set.intersection(*(set(steps) for steps, _ in curves)))
    if not common:  # seeds evaluated at different steps: draw the first run alone
        common = curves[0][0]
        curves = curves[:1]
    table = np.array([[dict(zip(steps, values))[s] for s in common] for steps, values in curves])
    return np.array(common), table.mean(0), table.min(0), table.max(0), len(curves)


def plot_curves(runs: Sequence[Run], out_dir: Path, metric: str | None = None) -> list[Path]:
    """One PNG per network; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = setting_labels(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, per_network = [], defaultdict(int)
    for comparable, variants in group_comparable(runs).items():
        (task, dataset, arch), setting = comparable[0], labels.get(comparable, "")
        per_network[comparable[0]] += 1  # a second setting of a network gets its own file
        name = metric or next(iter(variants.values()))[0].primary_metric
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        drawn = False
        for variant in sorted(variants, key=lambda v: (v != BASELINE, v)):
            curve = _mean_curve(variants[variant], name)
            if curve is None:
                continue
            steps, mean, low, high, n = curve
            colour = _COLOURS.get(variant, None)
            label = ("baseline" if variant == BASELINE else f"+{variant_name(variant)}") + (f" (n={n})" if n > 1 else "")
            (line,) = ax.plot(steps, mean, marker="o" if len(steps) < 30 else None, ms=3, color=colour, label=label)
            if n > 1:  # the band in its line's colour, also where the colour came from matplotlib's cycle
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_title(f"{arch} on {dataset} ({task})" + (f"\n{setting}" if setting else ""), fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(axis_title(name))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        suffix = f"_{per_network[comparable[0]]}" if per_network[comparable[0]] > 1 else ""
        path = out_dir / f"curves_{task}_{dataset}_{arch}{suffix}.png".replace("/", "-")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# Verdict colours of the forest plot: what a reader should see first.
_DECISION_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "within noise": "#7f7f7f"}


def _forest_label(comparison) -> str:
    c = comparison
    arrow = "↑" if c.spec.mode == "max" else "↓"
    items = f"{c.items:,} {'samples' if c.network[0] == 'classify' else 'images'}"
    seeds = f", {c.value.n} seeds" if c.value.n > 1 else ""
    return f"{c.spec.label} {arrow} ({items}{seeds})\n{c.network_label}, {c.network[1]}: +{variant_name(c.variant)}"


def plot_forest(comparisons, path: Path, title: str = "") -> Path | None:
    """The differences (variant − baseline) with their intervals, one row each, one panel per
    unit (dB, pts, AP, SSIM), a zero line, colours by verdict, the numbers on the right."""
    if not comparisons:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units: dict[str, list] = defaultdict(list)
    for comparison in comparisons:
        units[comparison.spec.unit].append(comparison)
    heights = [len(rows) + 1.2 for rows in units.values()]
    fig, axes = plt.subplots(len(units), 1, figsize=(9.0, 0.55 * sum(heights) + 1.0), dpi=120, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (unit, rows) in zip(axes[:, 0], units.items()):
        _forest_panel(ax, rows, unit)
    handles = [plt.Line2D([], [], color=colour, marker="o", label=decision)
               for decision, colour in _DECISION_COLOURS.items()]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or "Baseline vs variant", x=0.02, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _forest_panel(ax, rows, unit: str) -> None:
    from matplotlib.ticker import MaxNLocator

    positions = np.arange(len(rows))[::-1]  # the first comparison on top
    for y, c in zip(positions, rows):
        colour = _DECISION_COLOURS[c.decision]
        ax.plot([c.interval.low, c.interval.high], [y, y], color=colour, linewidth=2.5, solid_capstyle="butt")
        ax.plot([c.delta], [y], marker="o", color=colour, markersize=6)
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(positions, [_forest_label(c) for c in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    right = ax.twinx()  # the numbers beside each row: nobody has to read them off the axis
    right.set_ylim(ax.get_ylim())
    right.set_yticks(positions, [f"{c.delta:+.{c.spec.digits}f} [{c.interval.low:+.{c.spec.digits}f}, "
                                 f"{c.interval.high:+.{c.spec.digits}f}]" for c in rows], fontsize=8)
    low = min(min(c.interval.low for c in rows), 0.0)
    high = max(max(c.interval.high for c in rows), 0.0)
    margin = 0.08 * (high - low) or 1e-3
    ax.set_xlim(low - margin, high + margin)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.tick_params(axis="x", labelsize=8)
    kinds = sorted({c.interval.levels for c in rows})
    ax.set_xlabel(f"Δ = variant − baseline ({unit or 'SSIM'}); 95% bootstrap interval over {' / '.join(kinds)}",
                  fontsize=9)
    ax.grid(axis="x", alpha=0.3)
