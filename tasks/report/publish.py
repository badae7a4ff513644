"""Publish a comparison as a W&B Report (needs an API key, a network and ``wandb-workspaces``)."""

from __future__ import annotations

from typing import Sequence

from tasks.report.table import Row


def create_wandb_report(project_path: str, group: str | None, table_markdown: str,
                        metrics: Sequence[str], title: str) -> str:  # pragma: no cover - needs a network
    """Create a W&B Report with the comparison table and the validation curves; return its URL."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as error:
        raise ValueError("--wandb-report needs the W&B reports library: pip install -e '.[reports]' (wandb-workspaces)") from error
    entity, _, project = project_path.partition("/")
    if not entity or not project:
        raise ValueError(f"--wandb-report takes ENTITY/PROJECT, got {project_path!r}")
    runset = wr.Runset(entity=entity, project=project, name=group or "all runs",
                       filters=f"Group = '{group}'" if group else "")
    panels = [wr.LinePlot(x="Step", y=[name], title=name) for name in metrics]
    report = wr.Report(entity=entity, project=project, title=title,
                       description="Baseline vs BAM, made by python -m tasks.report")
    report.blocks = [
        wr.H1("Baseline vs BAM"),
        wr.MarkdownBlock(text=table_markdown),
        wr.PanelGrid(runsets=[runset], panels=panels),
    ]
    report.save()
    return report.url


def rows_metrics(rows: Sequence[Row]) -> list[str]:
    """The metric names the curves should show, in table order, without repeats."""
    return list(dict.fromkeys(f"eval/{row.metric}" for row in rows))
