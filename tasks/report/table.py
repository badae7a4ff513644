"""The paper-style comparison table: one row per network, baseline and attention side by side."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from typing import Sequence

from tasks.report.runs import BASELINE, Run, group_comparable, network_label, setting_labels


@dataclass
class Stat:
    mean: float
    std: float  # sample standard deviation over seeds; 0.0 for a single run
    n: int

    def format(self, digits: int) -> str:
        text = f"{self.mean:.{digits}f}"
        return f"{text} ± {self.std:.{digits}f} (n={self.n})" if self.n > 1 else text


def summarize(values: Sequence[float]) -> Stat | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, len(values))


@dataclass
class Row:
    network: tuple[str, str, str]  # task, dataset, arch
    variant: str
    metric: str
    mode: str
    baseline: Stat | None
    value: Stat | None
    params: tuple[int | None, int | None]  # baseline, variant
    macs: tuple[int | None, int | None]
    protocol: str = ""
    label: str = ""  # the paper's name of the variant's row
    paper: tuple[float | None, float | None] = (None, None)  # the paper's baseline, variant figures
    setting: str = ""  # what sets this row's runs apart from other rows of the same network

    @property
    def network_label(self) -> str:
        return network_label(self.network[2], self.setting)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.value is None:
            return None
        return self.value.mean - self.baseline.mean

    @property
    def improved(self) -> bool | None:
        if self.delta is None:
            return None
        return self.delta > 0 if self.mode == "max" else self.delta < 0


def _first(values):
    return next((v for v in values if v is not None), None)


def build_rows(runs: Sequence[Run], metric: str | None = None, which: str = "final") -> list[Row]:
    """Group comparable runs (:func:`group_comparable`) by attention variant, averaging over seeds."""
    labels = setting_labels(runs)
    rows = []
    for comparable, variants in group_comparable(runs).items():
        network = comparable[0]
        base_runs = variants.get(BASELINE, [])
        reference = (base_runs or next(iter(variants.values())))[0]
        name = metric or reference.primary_metric
        baseline = summarize([r.metric(name, which) for r in base_runs])
        for variant in sorted(v for v in variants if v != BASELINE) or [BASELINE]:
            group = variants[variant]
            rows.append(Row(
                network=network, variant=variant, metric=name, mode=reference.primary_mode,
                baseline=baseline,
                value=summarize([r.metric(name, which) for r in group]) if variant != BASELINE else None,
                params=(_first(r.params for r in base_runs), _first(r.params for r in group)),
                macs=(_first(r.macs for r in base_runs), _first(r.macs for r in group)),
                protocol=reference.protocol,
                label=group[0].label,
                paper=(_first(r.paper.get(name) for r in base_runs), _first(r.paper.get(name) for r in group)),
                setting=labels.get(comparable, ""),
            ))
    return rows


def _overhead(pair: tuple[int | None, int | None], unit: float, suffix: str) -> str:
    base, variant = pair
    if base is None and variant is None:
        return "–"
    if base is None or variant is None or base == variant:
        value = variant if variant is not None else base
        return f"{value / unit:.2f}{suffix}"
    return f"{base / unit:.2f}{suffix} → {variant / unit:.2f}{suffix} ({100 * (variant - base) / base:+.2f}%)"


def _digits(metric: str) -> int:
    return 4 if "ssim" in metric.lower() else 2


def _paper_cell(row: Row, digits: int) -> str:
    base, value = row.paper
    if base is None and value is None:
        return "–"
    text = lambda v: "–" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return f"{text(base)} → {text(value)}"


def markdown_table(rows: Sequence[Row]) -> str:
    with_paper = any(p is not None for row in rows for p in row.paper)
    header = "| task | dataset | network | metric | baseline | variant | with variant | Δ | params | MACs |"
    lines = [header + (" paper (baseline → variant) |" if with_paper else ""),
             "| --- " * (10 + with_paper) + "|"]
    for row in rows:
        digits = _digits(row.metric)
        delta = "–" if row.delta is None else f"{row.delta:+.{digits}f}" + (" ✓" if row.improved else "")
        arrow = "↑" if row.mode == "max" else "↓"
        metric = f"{row.metric} {arrow}" + (f" ({row.protocol})" if row.protocol else "")
        lines.append(
            f"| {row.network[0]} | {row.network[1]} | {row.network_label} | {metric} | "
            f"{row.baseline.format(digits) if row.baseline else '–'} | {row.label or row.variant} | "
            f"{row.value.format(digits) if row.value else '–'} | {delta} | "
            f"{_overhead(row.params, 1e6, 'M')} | {_overhead(row.macs, 1e9, 'G')} |"
            + (f" {_paper_cell(row, digits)} |" if with_paper else "")
        )
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "dataset", "network", "setting", "metric", "mode", "protocol", "variant",
                     "baseline_mean", "baseline_std", "baseline_n", "variant_mean", "variant_std",
                     "variant_n", "delta", "baseline_params", "variant_params", "baseline_macs",
                     "variant_macs"])
    for row in rows:
        b, v = row.baseline, row.value
        writer.writerow([*row.network, row.setting, row.metric, row.mode, row.protocol, row.variant,
                         b.mean if b else "", b.std if b else "", b.n if b else 0,
                         v.mean if v else "", v.std if v else "", v.n if v else 0,
                         "" if row.delta is None else row.delta,
                         row.params[0] or "", row.params[1] or "", row.macs[0] or "", row.macs[1] or ""])
    return out.getvalue()


def all_metrics_table(runs: Sequence[Run], which: str = "final") -> str:
    """Every final metric of every (network, variant), averaged over seeds: the detail table."""
    labels = setting_labels(runs)
    names = sorted({k for run in runs for k, v in (run.final if which == "final" else run.best).items()
                    if isinstance(v, (int, float))})
    lines = ["| network | variant | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
    for comparable, variants in group_comparable(runs).items():
        (_, dataset, arch), setting = comparable[0], labels.get(comparable, "")
        for variant in sorted(variants):
            cells = []
            for name in names:
                stat = summarize([r.metric(name, which) for r in variants[variant]])
                cells.append(stat.format(_digits(name)) if stat else "–")
            where = f"{dataset}, {setting}" if setting else dataset
            lines.append(f"| {arch} ({where}) | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
