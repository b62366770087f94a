"""Pitfalls tables in the paper's layout (Li et al., "Unveiling the Pitfalls of Knowledge Editing").

* Knowledge conflict (ConflictEdit): one row per model and method; columns Coverage Succ, Reverse
  CS_exp / CS_imp / CM, Composite CS_exp / CS_imp / CM / TFD.
* Knowledge distortion (RoundEdit): one row per model and method; columns Succ, D, IR, FR for the
  easy and the hard split.

A row collects every ``pitfalls-*`` run of its model and method: one run per data set (or split)
is the usual case, and a run that covers several writes one block per data set in its summary.
Which data set a run measured is read from its summary blocks (``{"reverse": {...}}``) or else
from ``run.json`` (``subset`` / ``split`` / ``dataset`` / ``type`` or the data file's name). Metric
names are matched without regard to case or punctuation (``CS_exp`` = ``cs_exp`` = ``csexp``).

The paper has CM_exp and CM_imp columns; CM never reads the newer fact (SPEC A.5), so both are
the same number and the tables show one CM column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.reports.comparison import run_labels
from kedit.reports.formatting import format_score
from kedit.reports.markdown import markdown_table
from kedit.reports.runs import PITFALLS_CONFLICT, PITFALLS_ROUND, Run
from kedit.runs.portable import portable_path


@dataclass(frozen=True)
class Column:
    subset: str  # the data set / split the number comes from
    label: str  # header cell
    aliases: tuple[str, ...]  # normalised metric names that mean this column


@dataclass(frozen=True)
class PaperTable:
    kind: str
    title: str
    caption: str
    subsets: tuple[str, ...]
    columns: tuple[Column, ...]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_CS_EXP = ("csexp", "csexplicit", "conflictscoreexplicit")
_CS_IMP = ("csimp", "csimplicit", "conflictscoreimplicit")
_CM = ("cm", "conflictmagnitude", "cmexp", "cmimp")
_SUCC = ("succ", "success", "successrate")
CONFLICT = PaperTable(
    PITFALLS_CONFLICT, "Knowledge conflict (ConflictEdit)",
    "Succ: the second edit alone wins (coverage). CS: after both edits the newer fact is more probable "
    "than the first edit's (explicit / implicit form of the newer fact). CM: relative drop of the first "
    "edit's fact caused by the second edit. TFD: relative drop of the tied fact (composite).",
    ("coverage", "reverse", "composite"),
    (
        Column("coverage", "Coverage Succ", _SUCC),
        Column("reverse", "Reverse CS_exp", _CS_EXP),
        Column("reverse", "Reverse CS_imp", _CS_IMP),
        Column("reverse", "Reverse CM", _CM),
        Column("composite", "Composite CS_exp", _CS_EXP),
        Column("composite", "Composite CS_imp", _CS_IMP),
        Column("composite", "Composite CM", _CM),
        Column("composite", "Composite TFD", ("tfd", "ffd", "tiedfactdamage")),
    ),
)
_ROUND_METRICS = (("Succ ↑", _SUCC), ("D ↓", ("d", "distortion")), ("IR ↓", ("ir", "ignorancerate")),
                  ("FR ↓", ("fr", "failurerate")))
ROUND = PaperTable(
    PITFALLS_ROUND, "Knowledge distortion (RoundEdit)",
    "Succ: both edits of the round trip took. D: divergence of the true-object distribution before "
    "and after the round trip (the paper's Jensen-Shannon divergence; the reference code's JS / |objects| is D_ref in summary.json). IR: share of the other true "
    "objects that lost probability. FR: share of cases where more than half of them did.",
    ("easy", "hard"),
    tuple(Column(split, f"{split.capitalize()} {label}", aliases)
          for split in ("easy", "hard") for label, aliases in _ROUND_METRICS),
)
PAPER_TABLES = (CONFLICT, ROUND)
_SUBSET_FIELDS = ("subset", "split", "dataset", "type")


def _number(value: Any) -> float | None:
    if isinstance(value, Mapping):  # {"mean": x, ...}
        value = value.get("mean")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _run_subset(run: Run, subsets: Sequence[str]) -> str | None:
    """The one data set a run with flat metrics measured, from run.json."""
    texts = [str(run.info.get(field) or "") for field in _SUBSET_FIELDS]
    texts += [str(run.data.get(field) or "") for field in ("name", "path")]
    for text in texts:
        found = [subset for subset in subsets if subset in text.lower()]
        if len(found) == 1:
            return found[0]
    return None


def subset_blocks(run: Run, table: PaperTable) -> dict[str, Mapping[str, float | None]]:
    """Normalised metric name -> value, per data set the run measured."""
    summary = run.summary.get("metrics") if isinstance(run.summary.get("metrics"), Mapping) else run.summary
    nested = {s: summary[s] for s in table.subsets if isinstance(summary.get(s), Mapping)}
    if not nested and (subset := _run_subset(run, table.subsets)) is not None:
        nested = {subset: summary}
    blocks = {}
    for subset, block in nested.items():
        values = {_normalise(key): _number(value) for key, value in block.items()}
        # A bare "cs" is explicit unless the run says it measured the implicit form.
        if "cs" in values:
            implicit = run.info.get("explicit") is False or run.info.get("implicit") is True
            values.setdefault("csimp" if implicit else "csexp", values["cs"])
        blocks[subset] = values
    return blocks


def _lookup(blocks: Mapping[str, Mapping[str, float | None]], column: Column) -> float | None:
    block = blocks.get(column.subset) or {}
    return next((block[alias] for alias in column.aliases if block.get(alias) is not None), None)


@dataclass(frozen=True)
class PaperRows:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    text_columns: int  # model (when several) and method
    notes: tuple[str, ...]  # runs that fill no cell, cells given twice


def paper_rows(runs: Sequence[Run], table: PaperTable) -> PaperRows:
    """One row per (model, method) over every run of the table's kind, in the order runs were given."""
    labels = dict(zip((id(run) for run in runs), run_labels(runs), strict=True))
    mine = [run for run in runs if run.kind == table.kind]
    several_models = len({run.model_name for run in mine}) > 1
    cells: dict[tuple[str, str], dict[str, tuple[float, str]]] = {}
    notes = []
    for run in mine:
        blocks = subset_blocks(run, table)
        row = cells.setdefault((run.model_name, run.method), {})
        filled = False
        for column in table.columns:
            value = _lookup(blocks, column)
            if value is None:
                continue
            filled = True
            if column.label in row and row[column.label][0] != value:
                first, by = row[column.label]
                notes.append(f"{column.label} of {run.method} is {format_score(first)} in {by} and "
                             f"{format_score(value)} in {labels[id(run)]}; the table shows the first")
                continue
            row.setdefault(column.label, (value, labels[id(run)]))
        if not filled:
            notes.append(f"{labels[id(run)]} ({portable_path(run.path)}) has none of the table's metrics for "
                         f"{', '.join(table.subsets)}; its summary keys: {', '.join(sorted(run.summary))}")
    columns = [c for c in table.columns if any(c.label in row for row in cells.values())]
    headers = ((("model",) if several_models else ()) + ("method",) + tuple(c.label for c in columns))
    rows = tuple(
        ((model,) if several_models else ()) + (method,)
        + tuple(format_score(row[c.label][0]) if c.label in row else "–" for c in columns)
        for (model, method), row in cells.items() if row
    )
    return PaperRows(headers, rows, 2 if several_models else 1, tuple(notes))


def pitfalls_sections(runs: Sequence[Run]) -> list[str]:
    """Markdown blocks (heading, caption, table, notes) for each pitfalls table that has runs."""
    parts = []
    for table in PAPER_TABLES:
        if not any(run.kind == table.kind for run in runs):
            continue
        result = paper_rows(runs, table)
        parts += [f"### {table.title}", f"_{table.caption}_"]
        if result.rows:
            parts.append(markdown_table(result.headers, result.rows, text_columns=result.text_columns))
        if result.notes:
            parts.append("\n".join(f"- {note}" for note in result.notes))
    return parts
