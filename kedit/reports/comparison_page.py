"""The markdown of a comparison report: which runs, metrics by method, sequential curves, pitfalls.

Pure text from already-read runs (:mod:`kedit.reports.runs`) and the names of plots already
written; :mod:`kedit.reports.report_writer` draws the plots and writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kedit.reports.comparison import (
    GROUPS,
    TABLE_GROUPS,
    MetricGroup,
    curves,
    group_value,
    groups_with_curves,
    metric_series,
    run_labels,
)
from kedit.reports.formatting import MISSING, format_score
from kedit.reports.markdown import markdown_table
from kedit.reports.pitfalls_tables import pitfalls_sections
from kedit.reports.records import protocol_description
from kedit.reports.runs import BENCH, Run, RunFailure

FINGERPRINT_CHARS = 12  # enough to tell models apart in a table; run.json keeps the whole hash


def bars_plot_name(group: MetricGroup) -> str:
    return f"metrics_{group.name}.png"


def curves_plot_name(group: MetricGroup) -> str:
    return f"curves_{group.name}.png"


def _image(name: str, alt: str) -> str:
    return f"![{alt}]({name})"


def _data_label(run: Run) -> str:
    data = run.data
    name = data.get("name") or data.get("path") or MISSING
    sha = data.get("sha256")
    return f"{name}" + (f" (sha256 `{str(sha)[:FINGERPRINT_CHARS]}`)" if sha else "")


def runs_table(runs: Sequence[Run]) -> str:
    rows = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        fingerprint = f"`{run.fingerprint[:FINGERPRINT_CHARS]}`" if run.fingerprint else MISSING
        rows.append((
            label, f"`{run.path}`", run.kind, run.model_name, fingerprint, run.mode or MISSING,
            str(run.info.get("protocol") or MISSING), _data_label(run), run.n if run.n is not None else MISSING,
            len(run.records),
        ))
    headers = ("run", "folder", "kind", "model", "fingerprint", "mode", "protocol", "data", "n", "records")
    return markdown_table(headers, rows, text_columns=8)


def _commands(runs: Sequence[Run]) -> str:
    lines = [
        f"- {label}: `{run.info.get('command') or run.summary.get('command')}`"
        for run, label in zip(runs, run_labels(runs), strict=True)
        if run.info.get("command") or run.summary.get("command")
    ]
    return "\n".join(lines)


def _notes(runs: Sequence[Run]) -> str:
    return "\n".join(
        f"- {label}: {note}" for run, label in zip(runs, run_labels(runs), strict=True) for note in run.notes
    )


def failures_list(failures: Sequence[RunFailure]) -> str:
    return "\n".join(f"- `{failure.path}`: {failure.reason}" for failure in failures)


def _description(runs: Sequence[Run], group: MetricGroup) -> str:
    for run in runs:
        if run.kind == BENCH and (text := protocol_description(run.metrics, group.name)):
            return text
    return ""


def group_table(runs: Sequence[Run], group: MetricGroup) -> str:
    """Rows: the unedited model(s), then each run; columns: the group's metrics that any row has."""
    series = metric_series(runs, group)
    specs = [spec for spec in group.specs if any(s.values.get(spec.key) is not None for s in series)]
    rows = [(s.label, *(format_score(s.values.get(spec.key)) for spec in specs)) for s in series]
    return markdown_table(("run", *(spec.label for spec in specs)), rows)


def metrics_section(runs: Sequence[Run], plots: Mapping[str, str]) -> list[str]:
    parts = []
    for group in TABLE_GROUPS:
        if not metric_series(runs, group):
            continue
        description = _description(runs, group)
        parts.append(f"### {group.title}")
        if description:
            parts.append(f"_{description}_")
        parts.append(group_table(runs, group))
        if (name := plots.get(bars_plot_name(group))) is not None:
            parts.append(_image(name, f"{group.title}: mean after editing, per run"))
    return parts


def curve_table(run: Run, label: str) -> str:
    """One row per checkpoint of one sequential run, the headline metrics of every group it has."""
    columns = [
        (group, spec) for group in GROUPS for spec in group.headline if curves([run], group, spec.key)
    ]
    rows = []
    for point in run.curve:
        rows.append((point.n_edits, *(format_score(group_value(point.summary, g, s.key)) for g, s in columns)))
    headers = ("edits", *(f"{spec.label}" for _, spec in columns))
    return f"#### {label}\n\n" + markdown_table(headers, rows, text_columns=0)


def curves_section(runs: Sequence[Run], plots: Mapping[str, str]) -> list[str]:
    sequential = [(run, label) for run, label in zip(runs, run_labels(runs), strict=True) if run.curve]
    if not sequential:
        return []
    parts = [
        "Each point is the mean over the cases evaluated at that checkpoint, after that many edits were "
        "made one after another without reverting. The x axis is logarithmic; checkpoints at 0 edits "
        "appear in the tables only."
    ]
    for group in groups_with_curves(runs):
        if (name := plots.get(curves_plot_name(group))) is not None:
            parts.append(_image(name, f"{group.title} against the number of edits"))
    parts.extend(curve_table(run, label) for run, label in sequential)
    return parts


def comparison_report(
    runs: Sequence[Run],
    failures: Sequence[RunFailure],
    plots: Mapping[str, str],
    command: str | None = None,
) -> str:
    """The whole report page; ``plots`` maps each plot's standard name to its path relative to the page."""
    title = f"kedit report: {len(runs)} run(s)"
    parts = [f"# {title}"]
    if command:
        parts.append(f"Made with `{command}`.")
    if failures:
        parts += ["## Runs that could not be read", failures_list(failures)]
    if runs:
        parts += ["## Runs", runs_table(runs)]
        if commands := _commands(runs):
            parts += ["Commands:", commands]
        if notes := _notes(runs):
            parts += ["Notes:", notes]
    if metrics := metrics_section(runs, plots):
        parts += ["## Metrics by method", *metrics]
    if sequential := curves_section(runs, plots):
        parts += ["## Sequential editing", *sequential]
    if pitfalls := pitfalls_sections(runs):
        parts += ["## Pitfalls of knowledge editing", *pitfalls]
    if not runs:
        parts.append("No run could be read, so there is nothing to compare.")
    return "\n\n".join(parts) + "\n"
