"""Publish a comparison as a W&B Report (needs an API key, a network and ``wandb-workspaces``)."""

from __future__ import annotations

from typing import Sequence

from tasks.report.table import Row


def group_filter(group: str | None) -> str:
    """The runset filter that keeps one experiment group, in W&B's filter expression language
    (``Group`` is the run's group; the value is a Python string literal, so any quote in the
    group name stays inside it). No group: no filter."""
    return f"Group = {group!r}" if group else ""


def build_wandb_report(project_path: str, group: str | None, table_markdown: str, comparison_markdown: str,
                       metrics: Sequence[str], title: str):
    """The W&B Report (not saved): the means table, the paired comparison with its intervals and
    verdicts, and the validation curves of the group's runs."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as error:
        raise ValueError("--wandb-report needs the W&B reports library: pip install -e '.[reports]' (wandb-workspaces)") from error
    entity, _, project = project_path.partition("/")
    if not entity or not project:
        raise ValueError(f"--wandb-report takes ENTITY/PROJECT, got {project_path!r}")
    runset = wr.Runset(entity=entity, project=project, name=group or "all runs", filters=group_filter(group))
    panels = [wr.LinePlot(x="Step", y=[name], title=name) for name in metrics]
    report = wr.Report(entity=entity, project=project, title=title,
                       description="Baseline vs BAM, made by python -m tasks.report")
    report.blocks = [
        wr.H1("Baseline vs BAM"),
        wr.MarkdownBlock(text=table_markdown),
        wr.H2("Is the difference bigger than the noise?"),
        wr.MarkdownBlock(text=comparison_markdown),
        wr.PanelGrid(runsets=[runset], panels=panels),
    ]
    return report


def create_wandb_report(project_path: str, group: str | None, table_markdown: str, comparison_markdown: str,
                        metrics: Sequence[str], title: str) -> str:  # pragma: no cover - needs a network
    """Create (save) the :func:`build_wandb_report` report; return its URL."""
    report = build_wandb_report(project_path, group, table_markdown, comparison_markdown, metrics, title)
    report.save()
    return report.url


def rows_metrics(rows: Sequence[Row]) -> list[str]:
    """The metric names the curves should show, in table order, without repeats."""
    return list(dict.fromkeys(f"eval/{row.metric}" for row in rows))
