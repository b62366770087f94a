"""Triples from the relations a corpus annotates, e.g. BC5CDR's chemical-induces-disease (``CID``) lines.

``relation_names`` maps an annotated relation type to the relation the triples get (default
``CID`` -> ``induces``: (chemical, induces, disease)). An entity is named by the mention text its id
is written with most often in the corpus (case-folded counts; ties to the alphabetically first),
the other spellings becoming its synonyms. A mention carrying several ids (a composite mention such
as "ocular and auditory toxicity") names each by the per-id name the corpus gives
(:attr:`~kedit.longtail.documents.Mention.names`), else none of them. A relation naming a concept
that no mention names (BC5CDR writes "choreoathetosis" as D002819|D001264 with no per-id names)
is left out and counted in :attr:`~kedit.longtail.triples.TripleSet.skipped`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from kedit.errors import DataError
from kedit.longtail.documents import Document
from kedit.longtail.triples import Entity, Triple, TripleSet

BC5CDR_RELATIONS: Mapping[str, str] = MappingProxyType({"CID": "induces"})


def _names(documents: Iterable[Document]) -> dict[str, Entity]:
    spellings: dict[str, Counter[str]] = {}
    for document in documents:
        for mention in document.mentions:
            if len(mention.ids) == 1 and mention.text.strip():
                spellings.setdefault(mention.ids[0], Counter())[" ".join(mention.text.split())] += 1
            elif mention.names:
                for concept, text in zip(mention.ids, mention.names, strict=True):
                    if text.strip():
                        spellings.setdefault(concept, Counter())[" ".join(text.split())] += 1
    entities = {}
    for concept, counter in spellings.items():
        folded: Counter[str] = Counter()
        for text, count in counter.items():
            folded[text.casefold()] += count
        best_folded = min(folded, key=lambda text: (-folded[text], text))
        name = min((text for text in counter if text.casefold() == best_folded), key=lambda text: (-counter[text], text))
        others = sorted({text for text in counter if text.casefold() != best_folded}, key=str.casefold)
        entities[concept] = Entity(concept, name, tuple(dict.fromkeys(others)))
    return entities


def annotated_triples(documents: Iterable[Document], relation_names: Mapping[str, str] = BC5CDR_RELATIONS,
                      source: str = "") -> TripleSet:
    """(first, relation, second) for every annotated relation of a type in ``relation_names``."""
    documents = tuple(documents)
    names = _names(documents)
    triples: dict[str, Triple] = {}
    unnamed = 0
    for document in documents:
        for relation in document.relations:
            name = relation_names.get(relation.kind)
            if name is None:
                continue
            if relation.first not in names or relation.second not in names:
                unnamed += 1
                continue
            triple = Triple(relation.first, name, relation.second, f"{document.source}:{document.doc_id}")
            triples.setdefault(triple.key, triple)
    if not triples:
        raise DataError(f"{source or 'the documents'}: no annotated relation of type {sorted(relation_names)}")
    used = {concept for triple in triples.values() for concept in (triple.subject_id, triple.object_id)}
    return TripleSet(entities={concept: names[concept] for concept in sorted(used)},
                     triples=tuple(triples.values()), sources=(source,) if source else (),
                     skipped={"annotated relation naming a concept no mention names": unnamed} if unnamed else {})
