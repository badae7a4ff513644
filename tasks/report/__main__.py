"""``python -m tasks.report RUN_DIRS...``: baseline vs BAM, the same comparison a paired run writes.

Examples::

    python -m tasks.report runs/                      # every finished run below runs/
    python -m tasks.report runs/ --group sr-t91-x4    # one experiment group
    python -m tasks.report --wandb-api me/bam --group sr-t91-x4   # runs fetched from W&B

Every baseline/variant pair scored on the same items gets, per metric, the means over seeds, the
difference with a 95% bootstrap interval and a verdict ("BAM better by 0.42 dB [+0.18, +0.66]",
"within noise: ..."), in one table (comparison.md, comparison.csv), with the forest plot of the
differences, the curves, the costs and the task's pictures (docs/statistics.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks.report.comparison import write_comparison
from tasks.report.plots import curve_metrics
from tasks.report.runs import discover_runs, load_api_runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="run folders, or folders of runs")
    parser.add_argument("--group", help="keep only the runs of this experiment group")
    parser.add_argument("--output-dir", type=Path, help="the comparison folder (default: reports/<group or 'all'>)")
    parser.add_argument("--wandb-api", metavar="ENTITY/PROJECT", help="also fetch runs through the W&B API")
    parser.add_argument("--wandb-report", metavar="ENTITY/PROJECT",
                        help="create a W&B Report with the table and curves (needs a key and a network)")
    parser.add_argument("--resamples", type=int, default=None,
                        help="bootstrap resamples of every interval (default: 10,000; 1,000 for COCO AP)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb_api:
        parser.error("give run folders, or --wandb-api ENTITY/PROJECT")
    try:
        runs = discover_runs(args.paths, args.group) if args.paths else []
        if args.wandb_api:
            runs += load_api_runs(args.wandb_api, args.group)
        output = args.output_dir or Path("reports") / (args.group or "all")
        title = f"Baseline vs BAM — {args.group}" if args.group else "Baseline vs BAM"
        text = write_comparison(runs, output, title, args.resamples)
        print(text)
        print(f"wrote {output / 'comparison.md'}, comparison.csv and the pictures beside it")
        if args.wandb_report:
            from tasks.report.publish import build_wandb_report

            metrics = curve_metrics(runs)
            report = build_wandb_report(args.wandb_report, args.group, text, metrics, title)
            report.save()  # needs a key and a network
            print(f"W&B report: {report.url}")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
