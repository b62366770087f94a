"""The markdown of a comparison report, results first and provenance last.

Page order (the same in ``report.md`` and ``report.html``):

1. **Results**: per protocol a headline table, method × dataset, each mean with its bootstrap
   interval (how the intervals were computed is said once, above the tables), the best edited run
   per column and dataset in bold; the pitfalls tables; the paired differences of runs that
   measured the same cases;
2. **Plots**: one figure per metric group, one panel per dataset;
3. **Sequential editing**: curves (one panel per metric) and the checkpoint tables;
4. **All metrics**: every mean the summaries hold, without intervals;
5. **Provenance**: the run table (folders, fingerprints, digests), notes, the commands, and the
   folders that could not be read.

Pure text from already-read runs (:mod:`kedit.reports.runs`), their estimates
(:mod:`kedit.reports.headline`) and the names of plots already written;
:mod:`kedit.reports.report_writer` draws the plots and writes the files. Paths and commands are
shown by the path rule of :mod:`kedit.runs.portable` (never an absolute path of the machine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kedit.reports.comparison import (
    CURVE_GROUPS,
    GROUPS,
    TABLE_GROUPS,
    MetricGroup,
    curves,
    group_value,
    metric_series,
    run_labels,
)
from kedit.reports.formatting import MISSING, format_score
from kedit.reports.headline import (
    NO_VALUE,
    DatasetBlock,
    Estimate,
    Estimates,
    IntervalSettings,
    PairedRow,
    best_rows,
    curve_lines,
    headline_blocks,
    log_spaced,
    paired_rows,
    present_specs,
)
from kedit.reports.intervals import Interval
from kedit.reports.markdown import markdown_table
from kedit.reports.pitfalls_tables import pitfalls_sections
from kedit.reports.records import protocol_description
from kedit.reports.runs import BENCH, Run, RunFailure
from kedit.runs.portable import portable_command_text, portable_path

FINGERPRINT_CHARS = 12  # enough to tell models apart in a table; run.json keeps the whole hash
RESULTS_HEADING = "## Results"
PROVENANCE_HEADING = "## Provenance"


def bars_plot_name(group: MetricGroup) -> str:
    return f"metrics_{group.name}.png"


def curves_plot_name(group: MetricGroup) -> str:
    return f"curves_{group.name}.png"


def _image(name: str, alt: str) -> str:
    return f"![{alt}]({name})"


# ------------------------------------------------------------------------------------------- numbers


def _number(value: float, signed: bool) -> str:
    text = format(value, "+.2f" if signed else ".2f")
    return text.replace("-0.00", "+0.00" if signed else "0.00")


def format_interval(interval: Interval, signed: bool = False) -> str:
    return f"[{_number(interval.low, signed)}, {_number(interval.high, signed)}]"


def format_estimate(estimate: Estimate, best: bool = False) -> str:
    """``0.98 [0.96, 0.99]``; the value in bold when it is the column's best; no brackets without records."""
    if estimate.value is None:
        return MISSING
    value = format_score(estimate.value)
    value = f"**{value}**" if best else value
    return value if estimate.interval is None else f"{value} {format_interval(estimate.interval)}"


def format_difference(interval: Interval | None) -> str:
    if interval is None:
        return MISSING
    return f"{_number(interval.estimate, True)} {format_interval(interval, signed=True)}"


# ------------------------------------------------------------------------------------------- results


def headline_table(blocks: Sequence[DatasetBlock], group: MetricGroup) -> str:
    """Rows: per dataset, the unedited model(s) then each edited run; a column per headline metric."""
    specs = present_specs(blocks, group.headline)
    rows = []
    for block in blocks:
        best = {spec.key: best_rows(block, spec.key) for spec in specs}
        for index, row in enumerate(block.rows):
            rows.append((
                block.label if index == 0 else "", row.label,
                *(format_estimate(row.cells.get(spec.key, NO_VALUE), index in best[spec.key]) for spec in specs),
            ))
    return markdown_table(("dataset", "method", *(spec.label for spec in specs)), rows, text_columns=2)


def _description(runs: Sequence[Run], group: MetricGroup) -> str:
    for run in runs:
        if run.kind == BENCH and (text := protocol_description(run.metrics, group.name)):
            return text
    return ""


def paired_table(pairs: Sequence[PairedRow], group: MetricGroup) -> str:
    specs = [spec for spec in group.headline if any(pair.differences.get(spec.key) for pair in pairs)]
    several = len({pair.dataset for pair in pairs}) > 1
    rows = [
        ((pair.dataset,) if several else ()) + (f"{pair.first.label} − {pair.second.label}", pair.n,
                                                *(format_difference(pair.differences.get(spec.key)) for spec in specs))
        for pair in pairs
    ]
    headers = (("dataset",) if several else ()) + ("first − second", "cases", *(spec.label for spec in specs))
    return markdown_table(headers, rows, text_columns=2 if several else 1)


def results_section(runs: Sequence[Run], estimates: Estimates) -> list[str]:
    """Headline tables per protocol, the pitfalls tables, then the paired differences."""
    parts: list[str] = []
    paired: list[str] = []
    for group in GROUPS:
        blocks = headline_blocks(runs, group, group.headline, estimates)
        if not blocks:
            continue
        parts += [f"### {group.title}", headline_table(blocks, group)]
        if description := _description(runs, group):
            parts.append(f"_{description}_")
        if group.name in ("probability", "token") and (pairs := paired_rows(blocks, group, group.headline,
                                                                            estimates.settings)):
            paired += [f"#### {group.title}", paired_table(pairs, group)]
    if parts:
        parts.insert(0, f"_Means over cases with {estimates.settings.describe()}; **bold**: the best edited run "
                        "per column and dataset. A value without an interval has no per-case records that "
                        "reproduce it (e.g. an unfinished sequential run, shown at its last checkpoint)._")
    parts += pitfalls_sections(runs)
    if paired:
        parts += ["### Paired differences (runs on the same cases)",
                  "_first − second over the cases both measured, each resample drawing the same cases for both "
                  "runs, so what the cases share cancels: usually far tighter than the two intervals above. An interval "
                  "that excludes 0 is a difference the cases resolve._", *paired]
    return parts


def plots_section(runs: Sequence[Run], plots: Mapping[str, str]) -> list[str]:
    parts = []
    for group in GROUPS:
        if (name := plots.get(bars_plot_name(group))) is not None:
            parts.append(_image(name, f"{group.title}: mean after editing, one panel per dataset"))
    if parts:
        parts.insert(0, "_Bars: each edited run, in the same colour for the same method in every report; error "
                        "bars: the intervals of the tables above; grey lines: the unedited model._")
    return parts


# ---------------------------------------------------------------------------------------- sequential


def curve_table(run: Run, label: str) -> str:
    """One row per checkpoint of one sequential run, the headline metrics of every group it has."""
    columns = [
        (group, spec) for group in CURVE_GROUPS for spec in group.headline if curves([run], group, spec.key)
    ]
    rows = []
    for point in run.curve:
        rows.append((point.n_edits, *(format_score(group_value(point.summary, g, s.key)) for g, s in columns)))
    headers = ("edits", *(f"{spec.label}" for _, spec in columns))
    return f"#### {label}\n\n" + markdown_table(headers, rows, text_columns=0)


def groups_with_lines(runs: Sequence[Run], estimates: Estimates) -> list[MetricGroup]:
    return [g for g in CURVE_GROUPS if any(curve_lines(runs, g, spec.key, estimates) for spec in g.headline)]


def curves_section(runs: Sequence[Run], plots: Mapping[str, str]) -> list[str]:
    sequential = [(run, label) for run, label in zip(runs, run_labels(runs), strict=True) if run.curve]
    if not sequential:
        return []
    log = log_spaced(runs)
    parts = [
        "Each point is the mean over the cases evaluated at that checkpoint, after that many edits were "
        "made one after another without reverting; bands (or an error bar) are the intervals over the cases "
        "measured there, where the run kept them (its final records are those of its last checkpoint)."
        + (" The x axis is logarithmic; checkpoints at 0 edits appear in the tables only." if log else "")
    ]
    for group in CURVE_GROUPS:
        if (name := plots.get(curves_plot_name(group))) is not None:
            parts.append(_image(name, f"{group.title} against the number of edits"))
    parts.extend(curve_table(run, label) for run, label in sequential)
    return parts


# ----------------------------------------------------------------------------------------- all metrics


def group_table(runs: Sequence[Run], group: MetricGroup) -> str:
    """Rows: the unedited model(s), then each run; columns: the group's metrics that any row has."""
    series = metric_series(runs, group)
    specs = [spec for spec in group.specs if any(s.values.get(spec.key) is not None for s in series)]
    rows = [(s.label, *(format_score(s.values.get(spec.key)) for spec in specs)) for s in series]
    return markdown_table(("run", *(spec.label for spec in specs)), rows)


def all_metrics_section(runs: Sequence[Run]) -> list[str]:
    parts = []
    for group in TABLE_GROUPS:
        if metric_series(runs, group):
            parts += [f"### {group.title}", group_table(runs, group)]
    return parts


# ------------------------------------------------------------------------------------------ provenance


def _data_label(run: Run) -> str:
    name = run.data.get("name") or (portable_path(run.data["path"]) if run.data.get("path") else MISSING)
    sha = run.data.get("sha256")
    return f"{name}" + (f" (sha256 `{str(sha)[:FINGERPRINT_CHARS]}`)" if sha else "")


def runs_table(runs: Sequence[Run]) -> str:
    rows = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        fingerprint = f"`{run.fingerprint[:FINGERPRINT_CHARS]}`" if run.fingerprint else MISSING
        cases = run.data.get("cases_sha256")
        rows.append((
            label, f"`{portable_path(run.path)}`", run.kind, run.model_name, fingerprint,
            str(run.info.get("mode_spec") or run.mode or MISSING), _data_label(run),
            f"`{str(cases)[:FINGERPRINT_CHARS]}`" if cases else MISSING,
            run.n if run.n is not None else MISSING, len(run.records),
        ))
    headers = ("run", "folder", "kind", "model", "fingerprint", "mode", "data", "cases sha256", "n", "records")
    return markdown_table(headers, rows, text_columns=8)


def _commands(runs: Sequence[Run]) -> str:
    lines = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        if command := run.info.get("command") or run.summary.get("command"):
            lines.append(f"- {label}: `{portable_command_text(str(command))}`")
    return "\n".join(lines)


def _notes(runs: Sequence[Run]) -> str:
    return "\n".join(
        f"- {label}: {note}" for run, label in zip(runs, run_labels(runs), strict=True) for note in run.notes
    )


def failures_list(failures: Sequence[RunFailure]) -> str:
    return "\n".join(f"- `{portable_path(failure.path)}`: {failure.reason}" for failure in failures)


def provenance_section(runs: Sequence[Run], failures: Sequence[RunFailure], command: str | None) -> list[str]:
    parts = []
    if runs:
        parts += ["### Runs", "_Folders relative to the repository; fingerprint: sha256 of the model's weights; "
                              "data: the dataset's registered name and the sha256 of its file; cases sha256: "
                              "the digest of the cases in their order (equal digests: the runs can be paired)._",
                  runs_table(runs)]
        if notes := _notes(runs):
            parts += ["### Notes", notes]
    commands = _commands(runs)
    if command or commands:
        parts.append("### Commands")
        if command:
            parts.append(f"This report: `{portable_command_text(command)}`")
        if commands:
            parts += ["The runs (from the repository root):", commands]
    if failures:
        parts += ["### Runs that could not be read", failures_list(failures)]
    return parts


# ------------------------------------------------------------------------------------------------ page


def _subtitle(runs: Sequence[Run]) -> str:
    models = ", ".join(dict.fromkeys(run.model_name for run in runs))
    datasets = ", ".join(dict.fromkeys(str(run.data["name"]) for run in runs if run.data.get("name")))
    return (f"{len(runs)} run(s) of {models}" + (f" on {datasets}." if datasets else ".")) if runs else ""


def comparison_report(
    runs: Sequence[Run],
    failures: Sequence[RunFailure],
    plots: Mapping[str, str],
    command: str | None = None,
    estimates: Estimates | None = None,
    extra_sections: Sequence[str] = (),
    extra_runs: int = 0,
) -> str:
    """The whole report page; ``plots`` maps each plot's standard name to its path relative to the page.

    ``extra_sections`` (a suite's own results, e.g. the long-tail part) come right after the headline
    results (after the introduction where there are none);
    ``extra_runs`` counts the runs only they show (long-tail probe folders) in the title.
    """
    estimates = estimates or Estimates(IntervalSettings())
    parts = [f"# kedit report: {len(runs) + extra_runs} run(s)"]
    intro = _subtitle(runs)
    if failures:
        intro += (f" {len(failures)} folder(s) could not be read: listed under “Runs that could not be read” "
                  "at the end.")
    if intro.strip():
        parts.append(intro.strip())
    if results := results_section(runs, estimates):
        parts += [RESULTS_HEADING, *results]
    parts += list(extra_sections)  # after the headline table, which opens every page that has one
    if plotted := plots_section(runs, plots):
        parts += ["## Plots", *plotted]
    if sequential := curves_section(runs, plots):
        parts += ["## Sequential editing", *sequential]
    if every := all_metrics_section(runs):
        parts += ["## All metrics", "_Every mean the summaries hold, without intervals._", *every]
    if not runs and not extra_sections:
        parts.append("No run could be read, so there is nothing to compare.")
    parts += [PROVENANCE_HEADING, *provenance_section(runs, failures, command)]
    return "\n\n".join(parts) + "\n"
