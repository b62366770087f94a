"""The build's Parquet tables and their schemas: documents, sentences, linked mentions, entities, triples.

Documents, sentences and mentions are written in parts of consecutive documents (part i holds
documents ``i * chunk`` to ``(i + 1) * chunk - 1``), so each stage over them resumes part by part.
Documents and entities are numbered (``doc``, ``entity``: int32) so that counting joins integers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kedit.longtail.documents import Document, Mention
from kedit.longtail.linking import Link
from kedit.longtail.triples import Entity, Triple, TripleSet


def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    mention = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()), ("kind", pa.string()),
                         ("ids", pa.list_(pa.string())), ("names", pa.list_(pa.string()))])
    return {
        "documents": pa.schema([("doc", pa.int32()), ("doc_id", pa.string()), ("source", pa.string()),
                                ("title", pa.string()), ("abstract", pa.string()), ("mentions", pa.list_(mention))]),
        "sentences": pa.schema([("doc", pa.int32()), ("sentence", pa.int32()), ("start", pa.int32()),
                                ("end", pa.int32())]),
        "mentions": pa.schema([("doc", pa.int32()), ("sentence", pa.int32()), ("entity", pa.int32()),
                               ("method", pa.string()), ("start", pa.int32()), ("end", pa.int32())]),
        "entities": pa.schema([("entity", pa.int32()), ("id", pa.string()), ("name", pa.string()),
                               ("synonyms", pa.list_(pa.string())), ("xrefs", pa.list_(pa.string()))]),
        "triples": pa.schema([("subject", pa.int32()), ("relation", pa.string()), ("object", pa.int32()),
                              ("source", pa.string())]),
        "pairs": pa.schema([("subject", pa.int32()), ("object", pa.int32())]),
    }


def table(kind: str, rows: Sequence[dict[str, Any]]) -> Any:
    """A pyarrow table of ``kind``'s schema from row dicts."""
    import pyarrow as pa

    return pa.Table.from_pylist(list(rows), schema=_schemas()[kind])


def read_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The rows of Parquet files, in file then row order."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in paths:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def document_rows(documents: Sequence[Document], first: int) -> list[dict[str, Any]]:
    return [{"doc": first + offset, "doc_id": document.doc_id, "source": document.source, "title": document.title,
             "abstract": document.abstract,
             "mentions": [{"start": m.start, "end": m.end, "text": m.text, "kind": m.kind, "ids": list(m.ids),
                           "names": list(m.names)} for m in document.mentions]}
            for offset, document in enumerate(documents)]


def documents_from_rows(rows: Iterable[dict[str, Any]]) -> list[tuple[int, Document]]:
    """(doc number, document) for each row of a documents part."""
    return [(row["doc"], Document(
        doc_id=row["doc_id"], title=row["title"], abstract=row["abstract"], source=row["source"],
        mentions=tuple(Mention(m["start"], m["end"], m["text"], m["kind"], tuple(m["ids"]), tuple(m["names"] or ()))
                       for m in row["mentions"])))
        for row in rows]


def link_rows(doc: int, links: Sequence[Link], starts: Sequence[int], entity_index: dict[str, int]) -> list[dict[str, Any]]:
    """Mention rows of one document: each link with its sentence (by the sentence starts) and entity number."""
    from kedit.longtail.sentences import sentence_of

    return [{"doc": doc, "sentence": sentence_of(starts, link.start), "entity": entity_index[link.entity],
             "method": link.method, "start": link.start, "end": link.end} for link in links]


def entity_rows(triple_set: TripleSet) -> list[dict[str, Any]]:
    """Entities numbered in id order (so the numbering does not depend on input order)."""
    return [{"entity": index, "id": entity.id, "name": entity.name, "synonyms": list(entity.synonyms),
             "xrefs": list(entity.xrefs)} for index, entity in enumerate(sorted(triple_set.entities.values(),
                                                                                 key=lambda e: e.id))]


def triple_rows(triple_set: TripleSet, entity_index: dict[str, int]) -> list[dict[str, Any]]:
    triples = sorted(triple_set.triples, key=lambda t: t.key)
    return [{"subject": entity_index[t.subject_id], "relation": t.relation, "object": entity_index[t.object_id],
             "source": t.source} for t in triples]


def triple_set_from_rows(entities: Sequence[dict[str, Any]], triples: Sequence[dict[str, Any]]) -> TripleSet:
    by_number = {row["entity"]: Entity(row["id"], row["name"], tuple(row["synonyms"] or ()), tuple(row["xrefs"] or ()))
                 for row in entities}
    return TripleSet(entities={entity.id: entity for entity in by_number.values()},
                     triples=tuple(Triple(by_number[row["subject"]].id, row["relation"], by_number[row["object"]].id,
                                          row["source"]) for row in triples))
