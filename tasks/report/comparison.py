"""Baseline vs variant, item by item: is each difference bigger than the noise?

For every group of comparable runs (:func:`tasks.report.runs.group_comparable`: same network,
evaluation and options but the attention) and every variant beside the baseline (``none``), each
metric of the task (:mod:`tasks.report.metrics`) gets: the mean ± std of each model over its
seeds, the difference, its 95% bootstrap interval over the test items (and the seeds, when there
are several), the difference per seed, McNemar's exact test for classification, and a verdict in
words (:func:`tasks.report.stats.verdict`). The method is written down in ``docs/statistics.md``.

    write_comparison(run_dirs, output_dir, title)   # what a paired training run calls at its end
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tasks.common.per_sample import load_per_sample
from tasks.report.metrics import MetricSpec, align, metric_specs
from tasks.report.plots import plot_forest, variant_name
from tasks.report.publish import log_comparison
from tasks.report.runs import BASELINE, Run, discover_runs, group_comparable, network_label, setting_labels
from tasks.report.stats import (RESAMPLING_SEED, Interval, McNemar, bootstrap_difference, decide, mcnemar_exact,
                                verdict)
from tasks.report.table import Stat, summarize
from tasks.utils.files import write_text_atomic

__all__ = ["Comparison", "SeedResult", "compare_runs", "comparison_markdown", "comparison_csv", "write_comparison",
           "write_comparison_files", "report_paired_runs", "comparison_folder"]


@dataclass(frozen=True)
class SeedResult:
    seed: int | None
    baseline: float
    variant: float
    p_value: float | None = None  # McNemar on this seed's pair (classification)

    @property
    def delta(self) -> float:
        return self.variant - self.baseline


@dataclass
class Comparison:
    network: tuple[str, str, str]  # task, dataset, arch
    setting: str  # what sets these runs apart from other rows of the same network ("" if nothing)
    variant: str
    spec: MetricSpec
    items: int  # test items both models were scored on
    baseline: Stat  # the metric of each baseline run, over seeds
    value: Stat  # and of each variant run
    delta: float  # variant − baseline, mean over seeds
    interval: Interval
    decision: str  # "better", "worse" or "within noise" (:func:`tasks.report.stats.decide`)
    verdict: str
    per_seed: list[SeedResult] = field(default_factory=list)  # seeds that both models ran
    mcnemar: McNemar | None = None  # one seed per model: the exact test on their discordant items
    protocol: str = ""

    @property
    def network_label(self) -> str:
        return network_label(self.network[2], self.setting)


def _load_samples(runs: Iterable[Run], notes: list[str]) -> dict[int, dict[str, np.ndarray]]:
    """``{id(run): per-sample arrays}`` for the runs that have them; a note for the others."""
    samples = {}
    for run in runs:
        if not run.per_sample_file:
            notes.append(f"{run.source}: no per-sample results (per_sample.npz); left out of the intervals")
            continue
        try:
            samples[id(run)] = load_per_sample(run.per_sample_file)
        except (FileNotFoundError, ValueError) as error:
            notes.append(f"{run.source}: {error}; left out of the intervals")
    return samples


def _by_seed(runs: Sequence[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.source))


def _paired_seeds(baselines: Sequence[Run], variants: Sequence[Run]) -> bool:
    """True when both models ran the same seeds, once each: then seed s of one pairs with seed s
    of the other (same data order, same evaluation) and the seeds are resampled as pairs."""
    seeds = [r.seed for r in baselines]
    return None not in seeds and len(set(seeds)) == len(seeds) and sorted(seeds) == sorted(r.seed for r in variants)


def _compare_metric(spec: MetricSpec, baselines: Sequence[Run], variants: Sequence[Run], samples: dict,
                    resamples: int | None, seed: int) -> tuple[dict, list[SeedResult], McNemar | None]:
    """The numbers of one metric: difference, interval, per-run values, per-seed results, McNemar."""
    reference = spec.keys(samples[id(baselines[0])])
    positions = {id(run): align(reference, spec.keys(samples[id(run)])) for run in [*baselines, *variants]}
    statistic = lambda run: spec.statistic(samples[id(run)], positions[id(run)])  # noqa: E731
    base_stats, var_stats = [statistic(r) for r in baselines], [statistic(r) for r in variants]
    paired = _paired_seeds(baselines, variants)
    delta, interval = bootstrap_difference(base_stats, var_stats, len(reference), pair_seeds=paired,
                                           resamples=resamples or spec.resamples, seed=seed)
    ones = np.ones((1, len(reference)))
    base_values = [float(s(ones)[0]) for s in base_stats]
    var_values = [float(s(ones)[0]) for s in var_stats]
    correct = (lambda run: spec.correct(samples[id(run)], positions[id(run)])) if spec.correct else None  # noqa: E731
    per_seed = []
    if paired:
        for b_run, v_run, b, v in zip(baselines, variants, base_values, var_values):
            p = mcnemar_exact(correct(b_run), correct(v_run)).p_value if correct else None
            per_seed.append(SeedResult(b_run.seed, b, v, p))
    mcnemar = None
    if correct and len(baselines) == len(variants) == 1:
        mcnemar = mcnemar_exact(correct(baselines[0]), correct(variants[0]))
    numbers = {"delta": delta, "interval": interval, "items": len(reference),
               "baseline": summarize(base_values), "value": summarize(var_values)}
    return numbers, per_seed, mcnemar


def _compare_variant(comparable, labels, variant: str, baselines: Sequence[Run], variants: Sequence[Run],
                     resamples: int | None, seed: int, notes: list[str]) -> list[Comparison]:
    samples = _load_samples([*baselines, *variants], notes)
    baselines = _by_seed([r for r in baselines if id(r) in samples])
    variants = _by_seed([r for r in variants if id(r) in samples])
    network = comparable[0]
    where = f"{'/'.join(network)}, {variant}"
    if not baselines or not variants:
        notes.append(f"{where}: no per-sample results on one side; no interval")
        return []
    try:
        specs = metric_specs(network[0], samples[id(baselines[0])])
    except (KeyError, ValueError) as error:
        notes.append(f"{where}: {error}")
        return []
    comparisons = []
    for spec in specs:
        try:
            numbers, per_seed, mcnemar = _compare_metric(spec, baselines, variants, samples, resamples, seed)
        except (KeyError, ValueError) as error:  # e.g. scored on different images: not a pair
            notes.append(f"{where}, {spec.label}: {error}; no interval")
            continue
        p_value = mcnemar.p_value if mcnemar else None
        words = verdict(numbers["delta"], numbers["interval"], spec.mode, spec.unit, variant_name(variant),
                        spec.digits, p_value=p_value)
        if numbers["interval"].levels == "images" and not words.startswith("within noise"):
            # One run per model: the interval holds these two trained networks to their test items;
            # another seed may move both. Say so where the claim is read.
            words += " (one seed each: over test items only)"
        comparisons.append(Comparison(network, labels.get(comparable, ""), variant, spec, numbers["items"],
                                      numbers["baseline"], numbers["value"], numbers["delta"], numbers["interval"],
                                      decide(numbers["interval"], spec.mode, p_value), words, per_seed, mcnemar,
                                      baselines[0].protocol))
    return comparisons


def compare_runs(runs: Sequence[Run], resamples: int | None = None,
                 seed: int = RESAMPLING_SEED) -> tuple[list[Comparison], list[str]]:
    """Every comparable (baseline, variant) pair of ``runs``, metric by metric; and notes on what
    could not be compared (no per-sample results, different items...). ``resamples`` overrides
    each metric's own count."""
    labels = setting_labels(runs)
    comparisons, notes = [], []
    for comparable, variants in group_comparable(runs).items():
        if BASELINE not in variants:
            where = "/".join(comparable[0]) + (f" ({labels[comparable]})" if labels.get(comparable) else "")
            notes.append(f"{where}: no baseline run (--attention {BASELINE}) scored the same way; no interval")
            continue
        for variant in sorted(v for v in variants if v != BASELINE):
            comparisons += _compare_variant(comparable, labels, variant, variants[BASELINE], variants[variant],
                                            resamples, seed, notes)
    return comparisons, notes


# -- tables ------------------------------------------------------------------------------------
def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def _interval_cell(c: Comparison) -> str:
    digits = c.spec.digits
    return f"[{_signed(c.interval.low, digits)}, {_signed(c.interval.high, digits)}]"


def _per_seed_cell(c: Comparison) -> str:
    if len(c.per_seed) < 2:
        return "–"
    return ", ".join(f"s{r.seed}: {_signed(r.delta, c.spec.digits)}" for r in c.per_seed)


def _p_cell(c: Comparison) -> str:
    if c.mcnemar is not None:
        return f"{c.mcnemar.p_value:.3g} ({c.mcnemar.baseline_only}/{c.mcnemar.variant_only})"
    ps = [r.p_value for r in c.per_seed if r.p_value is not None]
    return ", ".join(f"{p:.3g}" for p in ps) if ps else "–"


def _metric_cell(c: Comparison) -> str:
    arrow = "↑" if c.spec.mode == "max" else "↓"
    unit = f" ({c.spec.unit})" if c.spec.unit else ""
    return f"{c.spec.label}{unit} {arrow}"


def interval_note(comparisons: Sequence[Comparison]) -> str:
    """The sentence every comparison table carries: which interval it shows."""
    kinds = sorted({c.interval.kind for c in comparisons})
    return ("Δ = variant − baseline; intervals: " + "; ".join(kinds) + ". "
            "\"within noise\" whenever the interval holds 0 (classification: or McNemar's p ≥ 0.05); "
            "see docs/statistics.md.")


def comparison_markdown(comparisons: Sequence[Comparison], notes: Sequence[str] = ()) -> str:
    if not comparisons:
        text = "No baseline/variant pair with per-sample results to compare.\n"
        return text + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")
    lines = [interval_note(comparisons), "",
             "| task | dataset | network | metric | items | baseline | variant | with variant | Δ | 95% interval "
             "| interval over | McNemar p (base only/variant only) | Δ per seed | verdict |",
             "|" + " --- |" * 14]
    for c in comparisons:
        digits = c.spec.digits
        lines.append(
            f"| {c.network[0]} | {c.network[1]} | {c.network_label} | {_metric_cell(c)} | {c.items} | "
            f"{c.baseline.format(digits)} | {variant_name(c.variant)} | {c.value.format(digits)} | "
            f"{_signed(c.delta, digits)} | {_interval_cell(c)} | {c.interval.levels} | {_p_cell(c)} | "
            f"{_per_seed_cell(c)} | {c.verdict} |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def comparison_csv(comparisons: Sequence[Comparison]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "dataset", "network", "setting", "protocol", "variant", "metric", "unit", "mode", "items",
                     "baseline_mean", "baseline_std", "baseline_n", "variant_mean", "variant_std", "variant_n",
                     "delta", "low", "high", "confidence", "interval_over", "resamples", "resampling_seed",
                     "mcnemar_p", "baseline_only", "variant_only", "delta_per_seed", "verdict"])
    for c in comparisons:
        m = c.mcnemar
        writer.writerow([*c.network, c.setting, c.protocol, c.variant, c.spec.name, c.spec.unit, c.spec.mode, c.items,
                         c.baseline.mean, c.baseline.std, c.baseline.n, c.value.mean, c.value.std, c.value.n,
                         c.delta, c.interval.low, c.interval.high, c.interval.confidence, c.interval.levels,
                         c.interval.resamples, c.interval.seed, m.p_value if m else "", m.baseline_only if m else "",
                         m.variant_only if m else "", " ".join(f"{r.seed}:{r.delta}" for r in c.per_seed), c.verdict])
    return out.getvalue()


def write_comparison(run_dirs: Iterable[str | Path], output_dir: str | Path, title: str,
                     resamples: int | None = None) -> str:
    """Compare the runs found under ``run_dirs``; write ``comparison.md``, ``comparison.csv`` and
    the forest plot ``forest.png`` into ``output_dir``; return the Markdown."""
    comparisons, notes = compare_runs(discover_runs(run_dirs), resamples)
    return write_comparison_files(comparisons, notes, Path(output_dir), title)


def write_comparison_files(comparisons: Sequence[Comparison], notes: Sequence[str], output_dir: Path,
                           title: str) -> str:
    output_dir.mkdir(parents=True, exist_ok=True)
    table = comparison_markdown(comparisons, notes)
    plot = plot_forest(comparisons, output_dir / "forest.png", title)
    text = f"# {title}\n\n{table}" + (f"\n![differences with their intervals]({plot.name})\n" if plot else "")
    write_text_atomic(output_dir / "comparison.md", text)
    write_text_atomic(output_dir / "comparison.csv", comparison_csv(comparisons))
    return table


def comparison_folder(output_dir: str | Path, group: str) -> Path:
    """Where a paired run's comparison goes: ``<output-dir>/<group>-comparison``."""
    return Path(output_dir) / f"{group or 'paired'}-comparison"


def report_paired_runs(run_dirs: Sequence[str | Path], output_dir: str | Path, group: str, title: str,
                       task: str = "", wandb_project: str = "bam", wandb_mode: str = "disabled") -> Path | None:
    """The end of a paired training run (``--attention none bam``): the comparison of its runs
    written to ``output_dir/<group>-comparison/``, printed, and logged to W&B as a run of the group
    with everything in that folder (a task's own files written there first included). Never fails
    the finished runs: a comparison that cannot be made says why (``python -m tasks.report`` can
    redo it later)."""
    folder = comparison_folder(output_dir, group)
    try:
        table = write_comparison(run_dirs, folder, title)
    except (FileNotFoundError, ValueError) as error:
        print(f"comparison not written: {error}", flush=True)
        return None
    print(f"\n{title}\n\n{table}\nwrote {folder / 'comparison.md'}, comparison.csv and forest.png", flush=True)
    log_comparison(folder, [Path(d) for d in run_dirs], group, task, wandb_project, wandb_mode)
    return folder
