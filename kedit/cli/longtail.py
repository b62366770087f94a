"""``kedit longtail build | stats``: the long-tail knowledge suite's benchmark folders.

``build`` turns documents and triples into a benchmark folder (:mod:`kedit.longtail.schema`);
``stats`` counts a folder's facts per frequency bin and cardinality, at each level it counts.
The probing and editing commands are registered from :mod:`kedit.cli.longtail_eval`.
Registered on the ``kedit`` app by :mod:`kedit.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kedit.cli import common

longtail_app = typer.Typer(
    name="longtail",
    help="The long-tail knowledge suite: build frequency-binned benchmarks from documents and triples.",
    no_args_is_help=True,
)

BenchArgument = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A folder written by `kedit longtail build`.")]


def _manifest(folder: Path) -> dict[str, Any]:
    from kedit.longtail.schema import MANIFEST_FILE

    path = folder / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@longtail_app.command()
@common.reports_errors
def stats(
    bench: BenchArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON instead of tables.")] = False,
) -> None:
    """Facts per frequency bin and cardinality, at the document and the sentence level."""
    from kedit.longtail.stats import benchmark_stats

    labels = _manifest(bench).get("bins", {}).get("labels", [])
    result = benchmark_stats(bench, labels)
    out = common.stdout_console()
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    for table in result.tables:
        shown = Table(title=f"{table.axis} — {table.level} level ({table.total} facts)")
        for column in ("bin", "one-to-one", "one-to-many", "total"):
            shown.add_column(column, justify="left" if column == "bin" else "right")
        for row in table.rows:
            shown.add_row(row.label, str(row.one_to_one), str(row.one_to_many), str(row.total))
        out.print(shown)
    relations = Table(title=f"relations ({result.cases} cases, {result.demonstrations} held-out demonstrations)")
    for column in ("relation", "one-to-one", "one-to-many"):
        relations.add_column(column, justify="left" if column == "relation" else "right")
    for name, one, many in result.relations:
        relations.add_row(escape(name), str(one), str(many))
    out.print(relations)
