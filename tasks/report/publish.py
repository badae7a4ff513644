"""Publish a comparison to W&B: the comparison folder of a paired run as a run of its group
(offline without a key or a network), and a W&B Report (needs an API key, a network and
``wandb-workspaces``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from tasks.common.tracking import Tracker
from tasks.report.runs import COMPARISON_JOB


def build_wandb_report(project_path: str, group: str | None, comparison_markdown: str, metrics: Sequence[str],
                       title: str):
    """The W&B Report (``.save()`` creates it): the comparison (``comparison.md`` without its local
    pictures) and the validation curves of the group's runs, one panel per metric."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as error:
        raise ValueError("--wandb-report needs the W&B reports library: "
                         "pip install -e '.[reports]' (wandb-workspaces)") from error
    entity, _, project = project_path.partition("/")
    if not entity or not project:
        raise ValueError(f"--wandb-report takes ENTITY/PROJECT, got {project_path!r}")
    # W&B's filter expressions take Python string literals: repr keeps any quote inside the group name.
    runset = wr.Runset(entity=entity, project=project, name=group or "all runs",
                       filters=f"Group = {group!r}" if group else "")
    panels = [wr.LinePlot(x="Step", y=[f"eval/{name}"], title=name) for name in metrics]
    report = wr.Report(entity=entity, project=project, title=title,
                       description="Baseline vs BAM, made by python -m tasks.report")
    text = "\n".join(line for line in comparison_markdown.splitlines() if not line.startswith("!["))
    report.blocks = [wr.MarkdownBlock(text=text), wr.PanelGrid(runsets=[runset], panels=panels)]
    return report


def log_comparison(folder: Path, run_dirs: Sequence[Path], group: str, task: str, project: str, mode: str) -> None:
    """Log a paired run's comparison folder, as :func:`write_comparison` wrote it, as one W&B run
    of the group (job type "comparison"): the table (``comparison.csv``), every picture (forest
    plot, curves, per-image picture, panels) and ``comparison.md``."""
    if mode == "disabled":
        return
    config = {"task": task, "group": group, "compared_runs": [str(d) for d in run_dirs]}
    tracker = Tracker(folder, config, project=project, group=group, tags=[COMPARISON_JOB], mode=mode, task=task,
                      name=folder.name, job_type=COMPARISON_JOB)
    with open(folder / "comparison.csv", newline="") as handle:
        header, *rows = csv.reader(handle)
    rows = [[_cell(v) for v in row] for row in rows]
    tracker.log_table("comparison/differences", header, rows, step=0)
    pictures = sorted([*folder.glob("*.png"), *folder.glob("samples/*.png")])
    tracker.log_images({f"comparison/{p.relative_to(folder).with_suffix('').as_posix()}": p for p in pictures},
                       step=0)
    for text in sorted(folder.glob("*.md")):
        tracker.save_file(text)
    tracker.finish()


def _cell(text: str) -> float | str:
    """A CSV cell as W&B should sort it: numbers as numbers."""
    try:
        return float(text)
    except ValueError:
        return text
