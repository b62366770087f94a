"""Co-occurrence counts in DuckDB over Parquet tables, so that counting scales to all of PubMed.

Inputs (integer ids keep the join keys narrow; strings live in the entity and document tables):

* mentions — ``doc INT32, sentence INT32, entity INT32`` (more columns are ignored): one row per
  linked mention, ``sentence`` numbered within its document;
* pairs — ``subject INT32, object INT32``: the (subject, object) pairs of the triples.

Outputs:

* counts — ``subject, object, documents, sentences``: for every pair, the number of documents, and
  of sentences, in which both occur (0 when never together);
* frequencies — ``entity, documents, sentences``: each mentioned entity's document frequency (the
  subject popularity) and sentence frequency.

Both levels are the same query over distinct (doc, entity) and (doc, sentence, entity) rows:
the concept pairs of each document (sentence), kept when a triple has them, counted; DuckDB
spills to ``temp_directory`` beyond ``memory_limit``. ``bench/longtail_counting.py`` measures it on a million synthetic documents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import DataError

DEFAULT_MEMORY_LIMIT = "2GB"


@dataclass(frozen=True)
class CountSettings:
    """DuckDB's limits: ``memory_limit`` (e.g. ``"2GB"``), ``threads`` (None: DuckDB's default,
    the cores), ``temp_directory`` (where it spills; None: DuckDB's default ``.tmp`` beside the database)."""

    memory_limit: str = DEFAULT_MEMORY_LIMIT
    threads: int | None = None
    temp_directory: Path | None = None


@dataclass(frozen=True)
class CountSummary:
    """What a count produced and how long it took."""

    pairs: int
    pairs_in_a_document: int
    pairs_in_a_sentence: int
    entities: int
    seconds: float


def _quoted(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _file_list(paths: Sequence[Path]) -> str:
    if not paths:
        raise DataError("no mention tables to count (the linking stage wrote no parts)")
    return "[" + ", ".join(_quoted(path) for path in paths) + "]"


def connect(settings: CountSettings) -> Any:
    """An in-memory DuckDB connection with ``settings`` applied."""
    import duckdb

    connection = duckdb.connect(":memory:")
    connection.execute(f"SET memory_limit = {_quoted(settings.memory_limit)}")
    if settings.threads is not None:
        connection.execute(f"SET threads = {int(settings.threads)}")
    if settings.temp_directory is not None:
        Path(settings.temp_directory).mkdir(parents=True, exist_ok=True)
        connection.execute(f"SET temp_directory = {_quoted(settings.temp_directory)}")
    connection.execute("SET preserve_insertion_order = false")  # lets DuckDB stream and spill aggregates
    return connection


# Document-first: the pairs of concepts each document (sentence) holds, kept when they are a triple's
# pair. Its work is the sum over documents of (distinct concepts)^2 — bounded by the corpus. The
# pair-first plan DuckDB picks for the plain join (each pair's subject documents, then its object)
# costs the sum over pairs of the subject's document frequency, which explodes for popular subjects
# in many triples: on 50,000 synthetic abstracts 0.09 s against minutes.
COUNTS_SQL = """
COPY (
  WITH pairs AS (SELECT DISTINCT subject, object FROM read_parquet({pairs})),
  wanted AS (SELECT subject AS entity FROM pairs UNION SELECT object FROM pairs),
  dm AS (SELECT DISTINCT doc, entity FROM read_parquet({mentions})
         WHERE entity IN (SELECT entity FROM wanted)),
  sm AS (SELECT DISTINCT doc, sentence, entity FROM read_parquet({mentions})
         WHERE entity IN (SELECT entity FROM wanted)),
  in_document AS (SELECT s.entity AS subject, o.entity AS object FROM dm s JOIN dm o ON o.doc = s.doc),
  in_sentence AS (SELECT s.entity AS subject, o.entity AS object
                  FROM sm s JOIN sm o ON o.doc = s.doc AND o.sentence = s.sentence),
  by_document AS (SELECT subject, object, count(*) AS documents
                  FROM in_document SEMI JOIN pairs USING (subject, object) GROUP BY subject, object),
  by_sentence AS (SELECT subject, object, count(*) AS sentences
                  FROM in_sentence SEMI JOIN pairs USING (subject, object) GROUP BY subject, object)
  SELECT p.subject, p.object,
         coalesce(d.documents, 0)::BIGINT AS documents, coalesce(t.sentences, 0)::BIGINT AS sentences
  FROM pairs p LEFT JOIN by_document d USING (subject, object) LEFT JOIN by_sentence t USING (subject, object)
  ORDER BY p.subject, p.object
) TO {out} (FORMAT parquet)
"""

FREQUENCIES_SQL = """
COPY (
  SELECT entity, count(DISTINCT doc)::BIGINT AS documents, count(*)::BIGINT AS sentences
  FROM (SELECT DISTINCT doc, sentence, entity FROM read_parquet({mentions}))
  GROUP BY entity ORDER BY entity
) TO {out} (FORMAT parquet)
"""


def count_cooccurrences(mentions: Sequence[Path], pairs: Path, counts_out: Path, frequencies_out: Path,
                        settings: CountSettings = CountSettings()) -> CountSummary:
    """Write the counts and frequencies tables (see the module docstring), each atomically."""
    started = time.perf_counter()
    connection = connect(settings)
    files = _file_list(mentions)
    for sql, out in ((COUNTS_SQL, counts_out), (FREQUENCIES_SQL, frequencies_out)):
        temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        connection.execute(sql.format(pairs=_quoted(pairs), mentions=files, out=_quoted(temporary)))
        os.replace(temporary, out)
    pairs_total, in_document, in_sentence = connection.execute(
        f"SELECT count(*), count(*) FILTER (documents > 0), count(*) FILTER (sentences > 0) "
        f"FROM read_parquet({_quoted(counts_out)})").fetchone()
    (entities,) = connection.execute(f"SELECT count(*) FROM read_parquet({_quoted(frequencies_out)})").fetchone()
    connection.close()
    return CountSummary(pairs=int(pairs_total), pairs_in_a_document=int(in_document),
                        pairs_in_a_sentence=int(in_sentence), entities=int(entities),
                        seconds=time.perf_counter() - started)
