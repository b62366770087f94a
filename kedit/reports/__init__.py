"""Tables and plots built from results records and summaries (plain dicts, never models).

Everything here reads the JSON that evaluation writes (``results.jsonl`` lines and ``summary.json``),
so a report can be rebuilt later from the files alone.
"""

from kedit.reports.markdown import case_table, demo_report, markdown_table, metrics_tables
from kedit.reports.plots import plot_case_probabilities, plot_metric_means, write_plots
from kedit.reports.records import CaseRow, MetricRow, case_row, metric_rows, read_records

__all__ = [
    "CaseRow",
    "MetricRow",
    "case_row",
    "case_table",
    "demo_report",
    "markdown_table",
    "metric_rows",
    "metrics_tables",
    "plot_case_probabilities",
    "plot_metric_means",
    "read_records",
    "write_plots",
]
