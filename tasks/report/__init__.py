"""Baseline vs BAM: the comparison folder :func:`write_comparison` makes, for the command
``python -m tasks.report`` and at the end of a paired run (:func:`report_paired_runs`), and its W&B
reports."""

from tasks.report.comparison import compare_runs, comparison_folder, report_paired_runs, write_comparison

__all__ = ["compare_runs", "comparison_folder", "report_paired_runs", "write_comparison"]
