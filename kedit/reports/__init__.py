"""Tables and plots built from results records and summaries (plain dicts, never models).

Everything here reads the JSON that evaluation writes (``results.jsonl`` lines and ``summary.json``),
so a report can be rebuilt later from the files alone: the demo's page (:func:`demo_report`) and
the comparison of run directories behind ``kedit report`` (:func:`write_comparison_report`).
"""

from kedit.reports.html import markdown_to_html
from kedit.reports.markdown import case_table, demo_report, markdown_table, metrics_tables
from kedit.reports.plots import plot_case_probabilities, plot_metric_means, write_plots
from kedit.reports.records import CaseRow, MetricRow, case_row, metric_rows
from kedit.reports.report_writer import ComparisonReport, write_comparison_report
from kedit.reports.runs import Run, RunFailure, read_run, read_runs

__all__ = [
    "CaseRow",
    "ComparisonReport",
    "MetricRow",
    "Run",
    "RunFailure",
    "case_row",
    "case_table",
    "demo_report",
    "markdown_table",
    "markdown_to_html",
    "metric_rows",
    "metrics_tables",
    "plot_case_probabilities",
    "plot_metric_means",
    "read_run",
    "read_runs",
    "write_comparison_report",
    "write_plots",
]
