"""Baseline vs variant: one comparison folder, written alike by a paired run and by
``python -m tasks.report``.

Within every group of comparable runs (:func:`tasks.report.runs.group_comparable`: same network,
evaluation and options but the attention), each variant is set against the baseline (``none``) on
each metric of the task (:mod:`tasks.report.metrics`), by the method of ``docs/statistics.md``.
:func:`write_comparison` writes into one folder

* ``comparison.md``: the table, then per network its cost (parameters, MACs, wall time), its
  curves and, for SR, the per-image picture with the images where the variant gains and loses
  most, and what :func:`tasks.sr.samples.comparison_section` adds (panels of the final networks,
  their colour error and what runs of this length can say);
* ``comparison.csv``: the table's rows, with the costs and the runs behind each row;
* ``forest.png`` (the differences with their intervals), ``curves_<network>.png``,
  ``per_image_<network>.png`` (SR) and ``samples/*.png`` (SR).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from tasks.common.per_sample import load_per_sample
from tasks.report.metrics import MetricSpec, align, metric_specs
from tasks.report.plots import (line_label, network_groups, plot_forest, plot_network_curves, plot_per_image,
                                variant_name)
from tasks.report.publish import log_comparison
from tasks.report.runs import BASELINE, Run, discover_runs, group_comparable
from tasks.report.stats import (RESAMPLING_SEED, Interval, McNemar, bootstrap_difference, decide, mcnemar_exact,
                                verdict)
from tasks.utils.files import write_text_atomic
from tasks.utils.formatting import count, signed
from tasks.utils.messages import note, warn

# The pictures a comparison writes: an earlier comparison's are removed before a folder is rewritten.
_PICTURES = ("forest.png", "curves_*.png", "per_image_*.png", "samples/*.png")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation over seeds; 0.0 for a single run
    n: int

    def format(self, digits: int) -> str:
        text = f"{self.mean:.{digits}f}"
        return f"{text} ± {self.std:.{digits}f} (n={self.n})" if self.n > 1 else text


def summarize(values: Sequence[float]) -> Stat:
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


Reference = tuple[str, float | None, float | None]  # name, its figure for the baseline, for the variant


@dataclass(frozen=True)
class SeedResult:
    seed: int | None
    delta: float  # variant − baseline on this seed
    p_value: float | None = None  # McNemar on this seed's pair (classification)


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
    label: str = ""  # the paper's name of the variant's row
    reference: Reference = ("", None, None)
    baseline_runs: list[Run] = field(default_factory=list)
    variant_runs: list[Run] = field(default_factory=list)

    @property
    def network_label(self) -> str:
        """How a table names the network: its architecture, and what sets its runs apart if anything."""
        return f"{self.network[2]} ({self.setting})" if self.setting else self.network[2]


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
    return sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.source))


def _paired_seeds(baselines: Sequence[Run], variants: Sequence[Run]) -> bool:
    """True when both models ran the same seeds, once each: then seed s of one pairs with seed s
    of the other (same data order, same evaluation) and the seeds are resampled as pairs."""
    seeds = [r.seed for r in baselines]
    return None not in seeds and len(set(seeds)) == len(seeds) and sorted(seeds) == sorted(r.seed for r in variants)


def _compare_metric(spec: MetricSpec, variant: str, baselines: Sequence[Run],
                    variants: Sequence[Run], samples: dict, resamples: int | None,
                    seed: int) -> dict:
    """One metric, as the :class:`Comparison` fields it fills: items, each model's value over seeds,
    the difference with its interval, per-seed results, McNemar, decision and verdict."""
    reference = samples[id(baselines[0])][spec.keys]
    positions = {id(run): align(reference, samples[id(run)][spec.keys]) for run in [*baselines, *variants]}
    statistic = lambda run: spec.statistic(samples[id(run)], positions[id(run)])  # noqa: E731
    base_stats, var_stats = [statistic(r) for r in baselines], [statistic(r) for r in variants]
    paired = _paired_seeds(baselines, variants)
    delta, interval = bootstrap_difference(base_stats, var_stats, len(reference), pair_seeds=paired,
                                           resamples=resamples or spec.resamples, seed=seed)
    ones = np.ones((1, len(reference)))
    base_values = [float(s(ones)[0]) for s in base_stats]
    var_values = [float(s(ones)[0]) for s in var_stats]

    def test(b_run: Run, v_run: Run) -> McNemar | None:
        if not spec.correct:
            return None
        return mcnemar_exact(*(spec.correct(samples[id(r)], positions[id(r)]) for r in (b_run, v_run)))

    tests = [test(b_run, v_run) for b_run, v_run in zip(baselines, variants)] if paired else []
    per_seed = [SeedResult(run.seed, v - b, t.p_value if t else None)
                for run, b, v, t in zip(baselines, base_values, var_values, tests)]
    mcnemar = test(baselines[0], variants[0]) if len(baselines) == len(variants) == 1 else None
    p_value = mcnemar.p_value if mcnemar else None
    words = verdict(delta, interval, spec.mode, spec.unit, variant_name(variant), spec.digits,
                    p_value=p_value)
    if interval.levels == "images" and not words.startswith("within noise"):
        # One run per model: the interval holds these two trained networks to their test items;
        # another seed may move both. Say so where the claim is read.
        words += " (one seed each: over test items only)"
    return {"items": len(reference), "baseline": summarize(base_values), "value": summarize(var_values),
            "delta": delta, "interval": interval, "per_seed": per_seed, "mcnemar": mcnemar,
            "decision": decide(interval, spec.mode, p_value), "verdict": words}


def _reference(metric: str, baselines: Sequence[Run], variants: Sequence[Run]) -> Reference:
    """What the runs set both models against, for one metric: a reference they were scored beside
    (SR: bicubic), else the paper's figures of their rows; ("", None, None) when neither."""
    for run in baselines:
        value = (run.reference.get("metrics") or {}).get(metric)
        if value is not None:
            return str(run.reference.get("name") or "reference"), value, None
    paper = (baselines[0].paper.get(metric), variants[0].paper.get(metric))
    return ("paper", *paper) if paper != (None, None) else ("", None, None)


def _compare_variant(network: tuple[str, str, str], setting: str, variant: str,
                     baselines: Sequence[Run], variants: Sequence[Run], resamples: int | None,
                     seed: int, notes: list[str]) -> list[Comparison]:
    samples = _load_samples([*baselines, *variants], notes)
    baselines = _by_seed([r for r in baselines if id(r) in samples])
    variants = _by_seed([r for r in variants if id(r) in samples])
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
            numbers = _compare_metric(spec, variant, baselines, variants, samples, resamples, seed)
        except (KeyError, ValueError) as error:  # e.g. scored on different images: not a pair
            notes.append(f"{where}, {spec.label}: {error}; no interval")
            continue
        comparisons.append(Comparison(network, setting, variant, spec, **numbers,
                                      protocol=baselines[0].protocol, label=variants[0].label,
                                      reference=_reference(spec.name, baselines, variants),
                                      baseline_runs=baselines, variant_runs=variants))
    return comparisons


def _unpaired_note(network: tuple[str, str, str], setting: str,
                   variants: Mapping[str, Sequence[Run]]) -> str:
    """What a group without a baseline holds, so that its numbers are not lost."""
    metric = next(iter(variants.values()))[0].primary_metric
    values = ", ".join(f"{variant_name(v)} {summarize([r.metric(metric) for r in rs]).format(4)}"
                       for v, rs in variants.items() if all(r.metric(metric) is not None for r in rs))
    return (f"{'/'.join(network)}" + (f" ({setting})" if setting else "")
            + f": no baseline run (--attention {BASELINE}) scored the same way; no interval"
            + (f" ({metric}: {values})" if values else ""))


def compare_runs(runs: Sequence[Run], resamples: int | None = None,
                 seed: int = RESAMPLING_SEED) -> tuple[list[Comparison], list[str]]:
    """Every comparable (baseline, variant) pair of ``runs``, metric by metric; and notes on what
    could not be compared (no baseline, no per-sample results, different items...). ``resamples``
    overrides each metric's own count."""
    comparisons, notes = [], []
    for network, setting, variants in group_comparable(runs):
        if BASELINE not in variants:
            notes.append(_unpaired_note(network, setting, variants))
            continue
        for variant in sorted(v for v in variants if v != BASELINE):
            comparisons += _compare_variant(network, setting, variant, variants[BASELINE],
                                            variants[variant], resamples, seed, notes)
    return comparisons, notes


# -- the table -------------------------------------------------------------------------------------
def _per_seed_cell(c: Comparison) -> str:
    if len(c.per_seed) < 2:
        return "–"
    return ", ".join(f"s{r.seed}: {signed(r.delta, c.spec.digits)}" for r in c.per_seed)


def _p_cell(c: Comparison) -> str:
    if c.mcnemar is not None:
        return f"{c.mcnemar.p_value:.3g} ({c.mcnemar.baseline_only}/{c.mcnemar.variant_only})"
    ps = [r.p_value for r in c.per_seed if r.p_value is not None]
    return ", ".join(f"{p:.3g}" for p in ps) if ps else "–"


def _reference_cell(c: Comparison) -> str:
    name, base, value = c.reference
    text = lambda v: "–" if v is None else f"{v:.{c.spec.digits}f}"  # noqa: E731
    if not name:
        return "–"
    return f"{name} {text(base)}" if name != "paper" else f"paper {text(base)} → {text(value)}"


def _metric_cell(c: Comparison) -> str:
    arrow = "↑" if c.spec.mode == "max" else "↓"
    unit = f" ({c.spec.unit})" if c.spec.unit else ""
    return f"{c.spec.label}{unit} {arrow}"


# (header, cell, shown only when some row has it)
_COLUMNS = [
    ("dataset", lambda c: c.network[1], None),
    ("network", lambda c: c.network_label, None),
    ("variant", lambda c: c.label or variant_name(c.variant), None),
    ("metric", _metric_cell, None),
    ("items", lambda c: count(c.items), None),
    ("reference", _reference_cell, lambda c: bool(c.reference[0])),
    ("baseline", lambda c: c.baseline.format(c.spec.digits), None),
    ("with variant", lambda c: c.value.format(c.spec.digits), None),
    ("Δ", lambda c: signed(c.delta, c.spec.digits), None),
    ("95% interval", lambda c: c.interval.format(c.spec.digits), None),
    ("interval over", lambda c: c.interval.levels, None),
    ("McNemar p (base only/variant only)", _p_cell, lambda c: c.spec.correct is not None),
    ("Δ per seed", _per_seed_cell, lambda c: len(c.per_seed) > 1),
    ("verdict", lambda c: c.verdict, None),
]


def comparison_markdown(comparisons: Sequence[Comparison], notes: Sequence[str] = ()) -> str:
    """The table (its optional columns only where a row has them) and the notes below it."""
    lines = ["No baseline/variant pair with per-sample results to compare."]
    if comparisons:
        columns = [(name, cell) for name, cell, shown in _COLUMNS if shown is None or any(map(shown, comparisons))]
        kinds = sorted({c.interval.kind for c in comparisons})
        lines = ["Δ = variant − baseline; intervals: " + "; ".join(kinds) + ". \"within noise\" "
                 "whenever the interval holds 0 (classification: or McNemar's p ≥ 0.05); see "
                 "docs/statistics.md.", "",
                 "| " + " | ".join(name for name, _ in columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(cell(c) for _, cell in columns) + " |" for c in comparisons]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _first(values):
    return next((v for v in values if v is not None), None)


def _costs(runs: Sequence[Run]) -> tuple[int | None, int | None, float | None]:
    times = [r.wall_time_s for r in runs if r.wall_time_s is not None]
    return _first(r.params for r in runs), _first(r.macs for r in runs), statistics.fmean(times) if times else None


def comparison_csv(comparisons: Sequence[Comparison]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "dataset", "network", "setting", "protocol", "variant", "label", "metric", "unit", "mode",
                     "items", "reference", "reference_baseline", "reference_variant", "baseline_mean", "baseline_std",
                     "baseline_n", "variant_mean", "variant_std", "variant_n", "delta", "low", "high", "confidence",
                     "interval_over", "resamples", "resampling_seed", "mcnemar_p", "baseline_only", "variant_only",
                     "delta_per_seed", "verdict", "baseline_params", "variant_params", "baseline_macs",
                     "variant_macs", "baseline_wall_time_s", "variant_wall_time_s", "baseline_runs", "variant_runs"])
    blank = lambda v: "" if v is None else v  # noqa: E731
    for c in comparisons:
        m = c.mcnemar
        tested = (m.p_value, m.baseline_only, m.variant_only) if m else ("", "", "")
        costs = zip(_costs(c.baseline_runs), _costs(c.variant_runs))
        writer.writerow([*c.network, c.setting, c.protocol, c.variant, c.label, c.spec.name, c.spec.unit, c.spec.mode,
                         c.items, *map(blank, c.reference), c.baseline.mean, c.baseline.std, c.baseline.n,
                         c.value.mean, c.value.std, c.value.n, c.delta, c.interval.low, c.interval.high,
                         c.interval.confidence, c.interval.levels, c.interval.resamples, c.interval.seed,
                         *tested, " ".join(f"{r.seed}:{r.delta}" for r in c.per_seed), c.verdict,
                         *(blank(v) for pair in costs for v in pair),
                         *(json.dumps([r.source for r in runs]) for runs in (c.baseline_runs, c.variant_runs))])
    return out.getvalue()


# -- the sections of each network -----------------------------------------------------------------
def _change(base: float | None, variant: float | None, text) -> str:
    """``1.547M → 1.552M (+0.32%)``; one value when both are equal or one is unknown."""
    if base is None or variant is None or base == variant:
        return text(_first([variant, base]))
    return f"{text(base)} → {text(variant)} ({signed(100 * (variant - base) / base, 2)}%)"


def _cost_line(variant: str, baselines: Sequence[Run], variants: Sequence[Run]) -> str:
    (b_params, b_macs, b_time), (v_params, v_macs, v_time) = _costs(baselines), _costs(variants)
    seconds = lambda s: "–" if s is None else f"{s:,.0f} s"  # noqa: E731
    per_run = ", mean per run" if len(baselines) > 1 or len(variants) > 1 else ""
    return (f"Cost of {variant_name(variant)} (baseline → variant): parameters {_change(b_params, v_params, count)}"
            f", MACs {_change(b_macs, v_macs, count)}, wall time {_change(b_time, v_time, seconds)}{per_run}.")


def _per_image_scores(baselines: Sequence[Run], variants: Sequence[Run]) -> dict[str, tuple]:
    """SR: ``{set: (image names, baseline PSNR, variant PSNR)}`` per image, means over seeds."""
    missing = [run.source for run in [*baselines, *variants] if not run.per_sample_file]
    if missing:
        raise FileNotFoundError(f"no per-sample results (per_sample.npz) for {', '.join(missing)}")
    arrays = [load_per_sample(run.per_sample_file) for run in [*baselines, *variants]]
    scores = {}
    for key in (k for k in arrays[0] if k.endswith("/psnr")):
        set_name = key[: -len("/psnr")]
        names = arrays[0][f"{set_name}/names"]
        values = [np.asarray(a[key], dtype=np.float64)[align(names, a[f"{set_name}/names"])] for a in arrays]
        scores[set_name] = (names, np.mean(values[:len(baselines)], axis=0), np.mean(values[len(baselines):], axis=0))
    return scores


def _extremes(variant: str, scores: Mapping[str, tuple], named: int = 3) -> str:
    deltas = sorted((float(v - b), f"{s}/{n}") for s, (names, base, var) in scores.items()
                    for n, b, v in zip(names, base, var))
    text = lambda rows: ", ".join(f"{name} ({signed(d, 2)} dB)" for d, name in rows)  # noqa: E731
    gains, losses = [r for r in deltas[::-1] if r[0] > 0][:named], [r for r in deltas if r[0] < 0][:named]
    return (f"{variant_name(variant)} does better on {sum(d > 0 for d, _ in deltas)} of {len(deltas)} images "
            f"(PSNR); gains most on {text(gains) or 'none'}; loses most on {text(losses) or 'none'}.")


def _network_section(variants: Mapping[str, Sequence[Run]], title: str, stem: str, folder: Path) -> list[str]:
    """Markdown of one network (and setting): costs, per-image picture, the task's own part, curves."""
    order = sorted(variants, key=lambda v: (v != BASELINE, v))
    variants = {v: _by_seed(variants[v]) for v in order}
    others = [v for v in order if v != BASELINE]
    heading = title.replace("\n", ", ")
    lines = [f"## {heading}", ""]
    if BASELINE in variants:
        lines += [_cost_line(v, variants[BASELINE], variants[v]) for v in others] + [""]
    task = next(iter(variants.values()))[0].task
    if task == "sr" and BASELINE in variants and others:
        from tasks.sr.samples import comparison_section

        try:
            per_image = {v: _per_image_scores(variants[BASELINE], variants[v]) for v in others}
        except (FileNotFoundError, ValueError, KeyError) as error:
            lines += [f"No per-image picture: {error}.", ""]
        else:
            path = plot_per_image(per_image, folder / f"per_image_{stem}.png",
                                  f"PSNR per test image: {title}")
            lines += [_extremes(v, scores) for v, scores in per_image.items()]
            lines += ["", f"![PSNR per image]({path.name})", ""]
        lines += comparison_section(variants, folder, f"{stem}_") + [""]
    curves = plot_network_curves(variants, folder / f"curves_{stem}.png", title)
    if curves:
        lines += [f"Validation curves ({', '.join(line_label(v) for v in order)}; lines: mean over seeds, "
                  "bands: min to max):", "", f"![validation curves]({curves.name})", ""]
    return lines


def write_comparison(runs: Sequence[Run], folder: str | Path, title: str, resamples: int | None = None) -> str:
    """Compare ``runs`` and write the comparison folder (see the module docstring); return
    ``comparison.md``'s text."""
    folder = Path(folder)  # made by the first file written into it
    for pattern in _PICTURES:
        for path in folder.glob(pattern):
            path.unlink()
    comparisons, notes = compare_runs(runs, resamples)
    parts = [f"# {title}", "", comparison_markdown(comparisons, notes)]
    if plot_forest(comparisons, folder / "forest.png", title):
        parts += ["![differences with their intervals](forest.png)", ""]
    for heading, stem, variants in network_groups(runs):
        parts += _network_section(variants, heading, stem, folder)
    parts += ["## Runs", ""]
    order = sorted(runs, key=lambda r: (r.comparable, r.attention != BASELINE, r.attention, r.seed or 0, r.source))
    parts += [f"- `{r.name}`: {r.arch}, {line_label(r.attention)}, seed {r.seed}: {r.source}" for r in order]
    text = "\n".join(parts) + "\n"
    write_text_atomic(folder / "comparison.md", text)
    write_text_atomic(folder / "comparison.csv", comparison_csv(comparisons))
    return text


# -- a paired run's comparison --------------------------------------------------------------------
def _compared_runs(folder: Path) -> set[str]:
    """The run folders whose comparison ``folder`` holds (from its ``comparison.csv``)."""
    table = folder / "comparison.csv"
    if not table.is_file():
        return set()
    with open(table, newline="") as handle:
        return {run for row in csv.DictReader(handle) for key in ("baseline_runs", "variant_runs")
                for run in json.loads(row.get(key) or "[]")}


def comparison_folder(output_dir: str | Path, group: str, run_dirs: Sequence[str | Path]) -> Path:
    """Where a paired run's comparison goes: ``<output-dir>/<group>-comparison``, unless that holds
    the comparison of other runs: then ``-2``, ``-3``... (the comparison of the same runs, e.g. of
    a resumed paired run, is rewritten in place)."""
    base = Path(output_dir) / f"{group or 'paired'}-comparison"
    wanted = {str(Path(d).resolve()) for d in run_dirs}
    folder, number = base, 1
    while folder.is_dir() and any(folder.iterdir()) and _compared_runs(folder) != wanted:
        number += 1
        folder = base.with_name(f"{base.name}-{number}")
    if folder != base:
        note(f"{base} holds the comparison of other runs; writing this one to {folder}")
    return folder


def report_paired_runs(run_dirs: Sequence[str | Path], output_dir: str | Path, group: str, title: str,
                       task: str = "", wandb_project: str = "bam", wandb_mode: str = "disabled") -> Path | None:
    """The end of a paired training run (``--attention none bam``): the comparison of its runs
    written to :func:`comparison_folder`, printed, and logged to W&B as a run of the group with
    everything in that folder. Never fails the finished runs: a comparison that cannot be made says
    why (``python -m tasks.report`` can redo it later)."""
    folder = comparison_folder(output_dir, group, run_dirs)
    try:
        text = write_comparison(discover_runs(run_dirs), folder, title)
    except (FileNotFoundError, ValueError) as error:
        warn(f"comparison not written: {error}")
        return None
    pictures = sorted(p.relative_to(folder).as_posix() for pattern in _PICTURES for p in folder.glob(pattern))
    print(f"\n{text}\ncomparison of {', '.join(str(d) for d in run_dirs)} written to {folder}: comparison.md, "
          f"comparison.csv, {', '.join(pictures)}", flush=True)
    log_comparison(folder, [Path(d) for d in run_dirs], group, task, wandb_project, wandb_mode)
    return folder
