"""The pictures of a comparison (PNG): validation curves, the forest plot of the differences, and
per-image scores of two models against each other."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tasks.report.runs import BASELINE, Run, group_comparable
from tasks.utils.formatting import count, signed

# Baseline in grey, BAM in the colour people associate with "ours"; other variants after.
_COLOURS = {BASELINE: "#555555", "bam": "#d62728", "bam-c": "#ff7f0e", "bam-released": "#9467bd",
            "se": "#1f77b4", "cbam": "#2ca02c"}
_REFERENCE_COLOUR = "#1f77b4"


# Axis titles for the tasks' primary metrics; others are shown by name.
_AXIS_TITLES = {"top1_err": "top-1 error (%)", "top5_err": "top-5 error (%)", "miou": "mIoU",
                "pixel_acc": "pixel accuracy", "mAP": "box mAP@[.5:.95]", "loss": "evaluation loss"}
# The text sizes of every picture, set once rather than at each title, label and legend.
_STYLE = {"figure.titlesize": 11, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
          "ytick.labelsize": 8, "legend.fontsize": 8}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on a cluster node), in this
    module's text sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(_STYLE)
    return plt


def save_figure(fig, path: Path, title: str = "", rect: tuple[float, float, float, float] | None = None) -> Path:
    """``fig`` with its title (if any) and a tight layout (within ``rect``, a fraction of the figure
    kept for what is drawn around the axes) as the PNG ``path``; the figure is closed."""
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


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


def line_label(variant: str) -> str:
    return "baseline" if variant == BASELINE else f"+{variant_name(variant)}"


# -- validation curves -----------------------------------------------------------------------------
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


# What evaluations record beside their metrics: how much was scored, not how well.
_NOT_METRICS = frozenset({"step", "split", "num_images", "classes_present"})


def curve_metrics(runs: Sequence[Run]) -> list[str]:
    """Every metric the runs' evaluations recorded, in the order the first evaluation lists them."""
    return list(dict.fromkeys(name for run in runs for row in run.history
                              for name, value in row.items() if name not in _NOT_METRICS
                              and isinstance(value, (int, float)) and not isinstance(value, bool)))


def _grid(metrics: Sequence[str]) -> tuple[list[str], int, int]:
    """The metrics in panel order, and rows and columns of the panels: SR's ``psnr/Set5``,
    ``ssim/Set5``, ``psnr/Set14``... as one row per kind and one column per set; any other list
    three panels to a row."""
    kinds = list(dict.fromkeys(m.partition("/")[0] for m in metrics))
    places = list(dict.fromkeys(m.partition("/")[2] for m in metrics))
    if all("/" in m for m in metrics) and len(kinds) * len(places) == len(metrics):
        return [f"{kind}/{place}" for kind in kinds for place in places], len(kinds), len(places)
    columns = min(3, len(metrics))
    return list(metrics), math.ceil(len(metrics) / columns), columns


def plot_network_curves(variants: Mapping[str, Sequence[Run]], path: Path, title: str) -> Path | None:
    """One panel per evaluated metric: the mean over seeds of each model's curve, the min-max band
    over seeds, and the reference (e.g. bicubic) as a dashed line where the runs record one."""
    runs = [run for group in variants.values() for run in group]
    metrics, rows, columns = _grid(curve_metrics(runs))
    if not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows + 0.5), dpi=120, squeeze=False)
    last_step = max((step for run in runs for step in run.curve(metrics[0])[0]), default=0)
    last_step = max([last_step, *(int(run.steps or 0) for run in runs)])
    reference = next((run.reference for run in runs if run.reference.get("metrics")), {})
    for ax, metric in zip(axes.flat, metrics):
        for variant in sorted(variants, key=lambda v: (v != BASELINE, v)):
            curve = _mean_curve(variants[variant], metric)
            if curve is None:
                continue
            steps, mean, low, high, n = curve
            label = line_label(variant) + (f" (n={n})" if n > 1 else "")
            (line,) = ax.plot(steps, mean, marker="o" if len(steps) < 30 else None, ms=3,
                              color=_COLOURS.get(variant), label=label)
            if n > 1:  # the band in its line's colour, also where the colour came from matplotlib's cycle
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        value = reference.get("metrics", {}).get(metric)
        if value is not None:
            ax.axhline(value, color=_REFERENCE_COLOUR, linestyle="--", linewidth=1, label=reference.get("name"))
        # One step axis for every panel: a metric scored only at the end is a dot there.
        ax.set(xlim=(0, last_step * 1.04 or 1), title=axis_title(metric), xlabel="training step")
        ax.ticklabel_format(axis="y", useOffset=False)  # 25.9609, not 0.0009 + 2.596e1
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    return save_figure(fig, path, title)


def network_groups(runs: Sequence[Run]):
    """``(title, file stem, {variant: runs})`` of every network (and setting), in table order; the
    stem is ``<task>_<dataset>_<arch>``, ``_2`` added for a second setting of a network."""
    seen: dict[tuple, int] = defaultdict(int)
    for network, setting, variants in group_comparable(runs):
        task, dataset, arch = network
        seen[network] += 1
        suffix = f"_{seen[network]}" if seen[network] > 1 else ""
        title = f"{arch} on {dataset} ({task})" + (f"\n{setting}" if setting else "")
        yield title, f"{task}_{dataset}_{arch}{suffix}".replace("/", "-"), variants


def plot_curves(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    """The curves of every network (and setting) of ``runs``, ``curves_<stem>.png`` each; returns the files."""
    paths = [plot_network_curves(variants, out_dir / f"curves_{stem}.png", title)
             for title, stem, variants in network_groups(runs)]
    return [path for path in paths if path]


# -- forest plot -----------------------------------------------------------------------------------
# Verdict colours of the forest plot: what a reader should see first.
_DECISION_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "within noise": "#7f7f7f"}


def _forest_label(c) -> str:
    arrow = "↑" if c.spec.mode == "max" else "↓"
    items = f"{count(c.items)} {'samples' if c.network[0] == 'classify' else 'images'}"
    seeds = f", {c.value.n} seeds" if c.value.n > 1 else ""
    return f"{c.spec.label} {arrow} ({items}{seeds})\n{c.network_label}, {c.network[1]}: +{variant_name(c.variant)}"


def plot_forest(comparisons, path: Path, title: str = "") -> Path | None:
    """The differences (variant − baseline) with their intervals, one row each, one panel per
    unit (dB, pts, AP, SSIM), a zero line, colours by verdict, the numbers on the right."""
    if not comparisons:
        return None
    plt = pyplot()
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
    fig.legend(handles=handles, loc="upper right", ncol=3, frameon=False)
    fig.suptitle(title or "Baseline vs variant", x=0.02, ha="left")
    return save_figure(fig, path, rect=(0, 0, 1, 0.97))


def _forest_panel(ax, rows, unit: str) -> None:
    from matplotlib.ticker import MaxNLocator

    positions = np.arange(len(rows))[::-1]  # the first comparison on top
    for y, c in zip(positions, rows):
        colour = _DECISION_COLOURS[c.decision]
        ax.plot([c.interval.low, c.interval.high], [y, y], color=colour, linewidth=2.5, solid_capstyle="butt")
        ax.plot([c.delta], [y], marker="o", color=colour, markersize=6)
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(positions, [_forest_label(c) for c in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    right = ax.twinx()  # the numbers beside each row: nobody has to read them off the axis
    right.set_ylim(ax.get_ylim())
    numbers = [f"{signed(c.delta, c.spec.digits)} {c.interval.format(c.spec.digits)}" for c in rows]
    right.set_yticks(positions, numbers)
    low = min(min(c.interval.low for c in rows), 0.0)
    high = max(max(c.interval.high for c in rows), 0.0)
    margin = 0.08 * (high - low) or 1e-3
    ax.set_xlim(low - margin, high + margin)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    kinds = sorted({c.interval.levels for c in rows})
    ax.set_xlabel(f"Δ = variant − baseline ({unit or 'SSIM'}); 95% bootstrap interval over "
                  f"{' / '.join(kinds)}")
    ax.grid(axis="x", alpha=0.3)


# -- per-image scores ------------------------------------------------------------------------------
_SET_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def plot_per_image(scores: Mapping[str, Mapping[str, tuple]], path: Path, title: str, named: int = 3) -> Path:
    """``scores[variant][set] = (names, baseline PSNR, variant PSNR)``, one point per image.

    One row per variant. Left: the variant's score against the baseline's, the diagonal drawn
    (above it: the variant does better on that image). Right: the same points with the diagonal
    turned flat, the difference against the baseline's score, so that differences far smaller
    than the spread of image difficulty can be seen; the ``named`` largest gains (above) and
    losses (below) are labelled with the image's name.
    """
    plt = pyplot()
    fig, axes = plt.subplots(len(scores), 2, figsize=(11.0, 4.6 * len(scores) + 0.4), dpi=120, squeeze=False)
    for (left, right), (variant, sets) in zip(axes, scores.items()):
        name = variant_name(variant)
        every = np.concatenate([np.concatenate([base, var]) for _, base, var in sets.values()])
        low, high = every.min(), every.max()
        margin = 0.04 * (high - low) or 0.5
        deltas = []
        for colour, (set_name, (names, base, var)) in zip(_SET_COLOURS * 4, sets.items()):
            label = f"{set_name} ({len(names)})"
            left.scatter(base, var, s=18, color=colour, alpha=0.8, label=label, edgecolors="none")
            right.scatter(base, var - base, s=18, color=colour, alpha=0.8, label=label, edgecolors="none")
            deltas += [(float(v - b), float(b), f"{set_name}/{n}") for n, b, v in zip(names, base, var)]
        limits = (low - margin, high + margin)
        left.plot(limits, limits, color="black", linewidth=1, linestyle="--", label="equal")
        left.set(xlim=limits, ylim=limits, aspect="equal", xlabel="baseline PSNR (dB)",
                 ylabel=f"{name} PSNR (dB)", title=f"{name} against baseline, one point per image")
        left.legend(loc="upper left")
        right.axhline(0.0, color="black", linewidth=1, linestyle="--")
        _name_extremes(right, sorted(deltas), named)
        right.set(xlabel="baseline PSNR (dB)", ylabel=f"PSNR difference, {name} − baseline (dB)",
                  title=f"difference per image (above 0: {name} better)")
        for ax in (left, right):
            ax.grid(alpha=0.3)
    return save_figure(fig, path, title)


def _name_extremes(ax, deltas: Sequence[tuple[float, float, str]], named: int) -> None:
    """Label the ``named`` largest gains (above 0) in rows above the cloud and the largest losses
    (below 0) in rows below it, one row each (the extremes often lie close together), a line to
    each point; ``deltas``: sorted ``(difference, x, name)`` rows."""
    values = [d for d, _, _ in deltas]
    spread = (max(values) - min(values)) or 1.0
    ax.set_ylim(min(values) - 0.35 * spread, max(values) + 0.35 * spread)  # room for the rows
    middle = np.mean(ax.get_xlim())
    gains = [d for d in deltas[::-1] if d[0] > 0][:named]
    losses = [d for d in deltas if d[0] < 0][:named]
    for top, rows in ((True, gains), (False, losses)):
        for rank, (delta, x, label) in enumerate(rows):
            row = 0.96 - 0.07 * rank if top else 0.04 + 0.07 * rank
            ax.annotate(label, (x, delta), xytext=(x, row), textcoords=("data", "axes fraction"), fontsize=7,
                        va="center", ha="left" if x < middle else "right",
                        arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.6})
