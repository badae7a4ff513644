"""Baseline vs BAM: tables, curves, paired comparisons with intervals, W&B reports.

``python -m tasks.report`` is the command line; the tasks call :func:`write_comparison` (through
:func:`report_paired_runs`) at the end of a paired run (``--attention none bam``).
"""

from tasks.report.comparison import compare_runs, comparison_folder, report_paired_runs, write_comparison

__all__ = ["compare_runs", "comparison_folder", "report_paired_runs", "write_comparison"]
