"""BioC JSON documents: passages with annotations (and relations), as PubTator3 and BioRED export them.

Accepted top levels: a collection ``{"documents": [...]}``, a list of collections, or PubTator3's
``{"PubTator3": [documents]}``. A document is ``{"id", "passages": [{"offset", "text", "infons":
{"type"}, "annotations": [{"id", "text", "infons": {"type", "identifier"}, "locations": [{"offset",
"length"}]}]}], "relations": [...]}``.

The first passage typed ``title`` (else the first passage) becomes the title; the other passages,
joined by single spaces, the abstract. Annotation offsets (global in BioC) are moved to where their
passage lands in :attr:`Document.text`. A relation names its two concepts as ``role1``/``role2``
(an id, or ``{"identifier": ...}``), ``entity1``/``entity2``, or ``nodes`` referring to annotation ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kedit.errors import DataError
from kedit.longtail.documents import AnnotatedRelation, Document, Mention
from kedit.longtail.ids import normalise_id, split_ids


def _documents_of(payload: Any, path: Path) -> list[Any]:
    if isinstance(payload, Mapping):
        if "PubTator3" in payload:
            return list(payload["PubTator3"])
        if "documents" in payload:
            return list(payload["documents"])
    if isinstance(payload, list):
        return [document for collection in payload for document in _documents_of(collection, path)]
    raise DataError(f"{path}: not BioC JSON (expected a collection with 'documents', a list of them, "
                    "or PubTator3's {'PubTator3': [...]})")


def _identifier(infons: Mapping[str, Any]) -> str:
    for key in ("identifier", "Identifier", "MESH", "NCBI Gene", "id"):
        if infons.get(key) not in (None, ""):
            return str(infons[key])
    return ""


def _relation_end(value: Any) -> str:
    if isinstance(value, Mapping):
        return _identifier(value)
    return "" if value is None else str(value)


def _document(record: Any, path: Path, index: int) -> Document:
    where = f"{path}: document {index}"
    if not isinstance(record, Mapping) or "passages" not in record:
        raise DataError(f"{where}: field 'passages' is missing")
    doc_id = str(record.get("id", record.get("_id", index)))
    passages = [passage for passage in record["passages"] if isinstance(passage, Mapping)]
    if not passages:
        raise DataError(f"{where} (id {doc_id}): no passages")
    title_at = next((i for i, passage in enumerate(passages)
                     if str(passage.get("infons", {}).get("type", "")).lower() in {"title", "front"}), 0)
    order = [title_at] + [i for i in range(len(passages)) if i != title_at]
    # Not stripped: the offsets of its annotations count its characters as they are.
    title = str(passages[title_at].get("text", ""))
    body_parts: list[str] = []
    placed: dict[int, int] = {title_at: 0}  # passage index -> where its text starts in Document.text
    cursor = len(title) + 1 if title else 0  # Document.text puts one space after a non-empty title
    for i in order[1:]:
        text = str(passages[i].get("text", ""))
        if not text.strip():
            continue
        placed[i] = cursor
        body_parts.append(text)
        cursor += len(text) + 1
    mentions: list[Mention] = []
    annotation_ids: dict[str, str] = {}
    for i, passage in enumerate(passages):
        if i not in placed:
            continue
        base = int(passage.get("offset", 0))
        for annotation in passage.get("annotations", ()):
            infons = annotation.get("infons", {})
            kind = str(infons.get("type", ""))
            raw = _identifier(infons)
            ids = split_ids(raw, kind) if raw else ()
            if annotation.get("id") is not None and ids:
                annotation_ids[str(annotation["id"])] = ids[0]
            for location in annotation.get("locations", ()):
                try:
                    start = int(location["offset"]) - base + placed[i]
                    end = start + int(location["length"])
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{where} (id {doc_id}): annotation {annotation.get('id')!r} has a location "
                                    "without integer 'offset' and 'length'") from None
                mentions.append(Mention(start=start, end=end, text=str(annotation.get("text", "")), kind=kind,
                                        ids=ids))
    relations = []
    for relation in record.get("relations", ()):
        infons = relation.get("infons", {})
        kind = str(infons.get("type", ""))
        first = _relation_end(infons.get("role1", infons.get("entity1", infons.get("Chemical"))))
        second = _relation_end(infons.get("role2", infons.get("entity2", infons.get("Disease"))))
        nodes = relation.get("nodes", ())
        if (not first or not second) and len(nodes) >= 2:
            first = annotation_ids.get(str(nodes[0].get("refid")), "")
            second = annotation_ids.get(str(nodes[1].get("refid")), "")
        if first and second:
            relations.append(AnnotatedRelation(kind=kind, first=normalise_id(first), second=normalise_id(second)))
    return Document(doc_id=doc_id, title=title, abstract=" ".join(body_parts),
                    mentions=tuple(mentions), relations=tuple(relations), source=path.name)


def read_bioc(path: Path) -> Iterator[Document]:
    """The documents of a BioC JSON file, in file order."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    for index, record in enumerate(_documents_of(payload, path)):
        yield _document(record, path, index)
