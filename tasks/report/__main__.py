"""``python -m tasks.report RUN_DIRS...``: baseline vs BAM as a Markdown/CSV table and PNG curves.

Examples::

    python -m tasks.report runs/                      # every finished run below runs/
    python -m tasks.report runs/ --group sr-t91-x4    # one experiment group
    python -m tasks.report --wandb-api me/bam --group sr-t91-x4   # runs fetched from W&B
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    return parser


def write_report(runs, output: Path, metric: str | None, which: str, title: str) -> str:
    """Write report.md, report.csv and the curve PNGs; return the Markdown text."""
    rows = build_rows(runs, metric, which)
    output.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(runs, output, metric)
    parts = [f"# {title}\n",
             f"{len(runs)} runs; {which} metrics; mean ± sample std over seeds where several ran. "
             "Δ = variant − baseline; ✓ marks an improvement.\n",
             markdown_table(rows),
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
    return markdown_table(rows)


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
        table = write_report(runs, output, args.metric, args.which, title)
        print(table)
        print(f"wrote {output / 'report.md'}, {output / 'report.csv'} and the curves")
        if args.wandb_report:
            from tasks.report.publish import create_wandb_report, rows_metrics

            url = create_wandb_report(args.wandb_report, args.group, table,
                                      rows_metrics(build_rows(runs, args.metric, args.which)), title)
            print(f"W&B report: {url}")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
