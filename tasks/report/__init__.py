"""Baseline vs BAM: one comparison (a table with intervals and verdicts, the costs, the forest plot,
the curves, the task's pictures), W&B reports.

``python -m tasks.report`` is the command line; the tasks call :func:`report_paired_runs` at the
end of a paired run (``--attention none bam``). Both write the folder :func:`write_comparison` makes.
"""

from tasks.report.comparison import compare_runs, comparison_folder, report_paired_runs, write_comparison

__all__ = ["compare_runs", "comparison_folder", "report_paired_runs", "write_comparison"]
