"""Markdown tables and the demo report page, from records and summaries (plain dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kedit.reports.formatting import (
    MISSING,
    format_change,
    format_probability,
    format_score,
    format_seconds,
    format_targets,
)
from kedit.reports.records import PROTOCOLS, case_row, metric_rows, protocol_description

PROTOCOL_TITLES = {
    "token": "Token protocol (EasyEdit)",
    "probability": "Probability protocol (ROME/MEMIT CounterFact)",
    "fluency": "Fluency (generated text)",
}
CASE_HEADERS = (
    "case", "subject", "true → new", "P(new) before", "P(new) after", "P(true) before", "P(true) after",
    "top-1 after", "reliability", "generalization", "locality",
)


def _cell(value: Any) -> str:
    """Table cells may not contain pipes or newlines; code-ish tokens keep their spaces visible."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 1) -> str:
    """A GitHub-flavoured markdown table: the first ``text_columns`` left-aligned, numbers right-aligned."""
    align = [":---"] * text_columns + ["---:"] * (len(headers) - text_columns)
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)


def _token(text: str | None) -> str:
    # Decoded tokens usually start with a space; backticks keep it visible and stop markdown parsing.
    return MISSING if text is None else f"`{text}`"


def case_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per edited fact: probabilities before/after and the token-protocol scores after."""
    rows = []
    for record in records:
        row = case_row(record)
        rows.append((
            row.case_id, row.subject, format_targets(row.target_true, row.target_new),
            format_probability(row.p_new_pre), format_probability(row.p_new_post),
            format_probability(row.p_true_pre), format_probability(row.p_true_post),
            _token(row.top1_post), format_score(row.reliability), format_score(row.generalization),
            format_score(row.locality),
        ))
    return markdown_table(CASE_HEADERS, rows, text_columns=3)


def metrics_table(metrics: Mapping[str, Any], protocol: str) -> str:
    """Mean of each metric of one protocol before and after, with the change."""
    rows = [
        (row.name, format_score(row.pre), format_score(row.post), format_change(row.pre, row.post))
        for row in metric_rows(metrics, protocol)
    ]
    return markdown_table(("metric", "before", "after", "change"), rows)


def metrics_tables(metrics: Mapping[str, Any]) -> str:
    """A titled table per protocol present in a :func:`kedit.summarize` dict, never mixed."""
    sections = []
    for protocol in PROTOCOLS:
        if protocol not in metrics:
            continue
        description = protocol_description(metrics, protocol)
        sections.append(
            f"### {PROTOCOL_TITLES.get(protocol, protocol)}\n\n"
            + (f"_{description}_\n\n" if description else "")
            + metrics_table(metrics, protocol)
        )
    return "\n\n".join(sections)


def run_details(summary: Mapping[str, Any]) -> str:
    """The facts needed to reproduce and compare a run: command, model fingerprint, method, timings."""
    model = summary.get("model") or {}
    seconds = summary.get("seconds") or {}
    versions = summary.get("versions") or {}
    rows = [
        ("command", f"`{summary.get('command', MISSING)}`"),
        ("model", f"{model.get('name', MISSING)} on {model.get('device', MISSING)}"),
        ("model fingerprint (sha256 of the weights)", f"`{model.get('fingerprint', MISSING)}`"),
        ("method", f"{summary.get('method', MISSING)}" + (f", layer {summary['layer']}" if "layer" in summary else "")),
        ("cases", summary.get("cases", MISSING)),
        ("time: loading the model", format_seconds(seconds.get("load_model"))),
        ("time: computing the edits", format_seconds(seconds.get("edits"))
         + " (the first includes statistics and context templates when not cached)"),
        ("time: evaluation (incl. fluency generation)", format_seconds(seconds.get("evaluation"))),
        ("time: total", format_seconds(seconds.get("total"))),
        ("versions", ", ".join(f"{name} {version}" for name, version in versions.items()) or MISSING),
        ("created", summary.get("created", MISSING)),
    ]
    return markdown_table(("", ""), rows, text_columns=2)


def _images(plots: Sequence[str]) -> str:
    return "\n\n".join(f"![{name.rsplit('.', 1)[0].replace('_', ' ')}]({name})" for name in plots)


def demo_report(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The whole ``report.md`` of a demo run; ``plots`` are image paths relative to the report."""
    title = f"kedit demo: {summary.get('method', 'edit')} on {(summary.get('model') or {}).get('name', 'a model')}"
    parts = [
        f"# {title}",
        "Each fact was edited into the model on its own, measured, and reverted before the next one. "
        "P(·) is the per-token geometric-mean probability of the object after the prompt; reliability, "
        "generalization and locality are teacher-forced token accuracies (locality: agreement with the "
        "unedited model on neighbouring facts).",
        "## Run",
        run_details(summary),
        "## Per fact",
        case_table(records),
        "## Means over all facts",
        metrics_tables(summary.get("metrics") or {}),
    ]
    if plots:
        parts += ["## Plots", _images(plots)]
    files = summary.get("files") or {}
    if files:
        parts += ["## Files", "\n".join(f"- `{name}`: {what}" for name, what in files.items())]
    return "\n\n".join(parts) + "\n"
