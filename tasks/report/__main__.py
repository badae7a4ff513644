"""``python -m tasks.report RUN_DIRS...``: baseline vs BAM as a Markdown/CSV table and PNG curves.

Examples::

    python -m tasks.report runs/                      # every finished run below runs/
    python -m tasks.report runs/ --group sr-t91-x4    # one experiment group
    python -m tasks.report --wandb-api me/bam --group sr-t91-x4   # runs fetched from W&B

Besides the table of means, every baseline/variant pair scored on the same items gets the
difference with a 95% bootstrap interval and a verdict ("BAM better by 0.42 dB [+0.18, +0.66]",
"within noise: ..."), and a forest plot of the differences (docs/statistics.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from tasks.report.comparison import compare_runs, write_comparison_files
from tasks.report.plots import plot_curves
from tasks.report.runs import discover_runs, load_api_runs
from tasks.report.table import all_metrics_table, build_rows, csv_table, markdown_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="run folders, folders of runs, or W&B offline run folders")
    parser.add_argument("--group", help="keep only the runs of this experiment group")
    parser.add_argument("--metric", help="metric to compare (default: each run's primary metric)")
    parser.add_argument("--which", choices=["final", "best"], default="final",
                        help="compare final metrics (default, as the paper reports) or best ones")
    parser.add_argument("--output", type=Path, help="where to write report.md/csv and the plots "
                        "(default: reports/<group or 'all'>)")
    parser.add_argument("--wandb-api", metavar="ENTITY/PROJECT", help="also fetch runs through the W&B API")
    parser.add_argument("--wandb-report", metavar="ENTITY/PROJECT",
                        help="create a W&B Report with the table and curves (needs a key and a network)")
    parser.add_argument("--resamples", type=int, default=None,
                        help="bootstrap resamples of every interval (default: 10,000; 1,000 for COCO AP)")
    return parser


@dataclass
class Report:
    table: str  # the means table (Markdown)
    comparison: str  # the paired comparison with intervals and verdicts (Markdown)


def write_report(runs, output: Path, metric: str | None, which: str, title: str,
                 resamples: int | None = None) -> Report:
    """Write report.md, report.csv, the curve PNGs and the paired comparison (comparison.md/csv,
    forest.png); return the two tables' Markdown."""
    rows = build_rows(runs, metric, which)
    output.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(runs, output, metric)
    # The intervals come from the final evaluation's per-sample results, whatever --which says.
    comparisons, notes = compare_runs(runs, resamples)
    comparison = write_comparison_files(comparisons, notes, output, title)
    parts = [f"# {title}\n",
             f"{len(runs)} runs; {which} metrics; mean ± sample std over seeds where several ran. "
             "Δ = variant − baseline; ✓ marks an improvement (of the means: whether it is bigger "
             "than the noise is the next table's business).\n",
             markdown_table(rows),
             "\n## Is the difference bigger than the noise?\n",
             "Final evaluations, item by item (paired). Forest plot: [forest.png](forest.png).\n",
             comparison,
             "\n## Every metric\n", all_metrics_table(runs, which)]
    if plots:
        parts.append("\n## Validation curves\n\nLines: mean over seeds; bands: min to max over seeds.\n")
        parts += [f"![{p.stem}]({p.name})\n" for p in plots]
    parts.append("\n## Runs\n")
    parts.append("".join(f"- `{r.name}`: {r.arch}, attention {r.attention}, seed {r.seed} — {r.source}\n"
                         for r in runs))
    text = "\n".join(parts)
    (output / "report.md").write_text(text)
    (output / "report.csv").write_text(csv_table(rows))
    return Report(markdown_table(rows), comparison)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb_api:
        parser.error("give run folders, or --wandb-api ENTITY/PROJECT")
    try:
        runs = discover_runs(args.paths, args.group) if args.paths else []
        if args.wandb_api:
            runs += load_api_runs(args.wandb_api, args.group)
        output = args.output or Path("reports") / (args.group or "all")
        title = f"Baseline vs BAM — {args.group}" if args.group else "Baseline vs BAM"
        report = write_report(runs, output, args.metric, args.which, title, args.resamples)
        print(report.table)
        print(report.comparison)
        print(f"wrote {output / 'report.md'}, {output / 'report.csv'}, the curves, "
              f"{output / 'comparison.md'}, comparison.csv and forest.png")
        if args.wandb_report:
            from tasks.report.publish import create_wandb_report, rows_metrics

            url = create_wandb_report(args.wandb_report, args.group, report.table, report.comparison,
                                      rows_metrics(build_rows(runs, args.metric, args.which)), title)
            print(f"W&B report: {url}")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
