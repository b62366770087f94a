"""OBO ontologies (HPO, MONDO, Disease Ontology, GO …): terms as entities, ``is_a`` and ``relationship``
lines as triples.

Each ``[Term]`` stanza gives an :class:`~kedit.longtail.triples.Entity`: ``id``, ``name``, the
``synonym`` lines of the kept scopes (EXACT by default: BROAD, NARROW and RELATED synonyms name
other concepts often enough to link mentions wrongly), and ``xref`` lines (ids in MeSH, OMIM, UMLS
…, what the id crosswalk of :mod:`kedit.longtail.linking` follows). ``alt_id`` lines point old ids
at the term (:attr:`Ontology.resolve`). Obsolete terms are skipped. ``is_a: X`` is the triple
(term, ``is a``, X); ``relationship: part_of X`` is (term, the ``[Typedef]``'s name ``part of``, X).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import DataError
from kedit.longtail.ids import normalise_id
from kedit.longtail.triples import Entity, Triple, TripleSet

IS_A = "is a"
_SYNONYM = re.compile(r'^"((?:[^"\\]|\\.)*)"\s+(EXACT|BROAD|NARROW|RELATED)\b')
DEFAULT_SCOPES = frozenset({"EXACT"})


@dataclass(frozen=True)
class Ontology:
    """An OBO file's terms by id, old ids (``alt_id``) to current ones, and its triples."""

    terms: Mapping[str, Entity]
    alternatives: Mapping[str, str]
    triples: tuple[Triple, ...]
    source: str

    def resolve(self, term_id: str) -> str | None:
        """The current id of ``term_id`` (itself, or the term that lists it as ``alt_id``); None if unknown."""
        term_id = normalise_id(term_id)
        if term_id in self.terms:
            return term_id
        return self.alternatives.get(term_id)

    def triple_set(self) -> TripleSet:
        return TripleSet(entities=self.terms, triples=self.triples, sources=(self.source,))


def _value(line: str) -> str:
    """The value of ``tag: value ! comment`` (the trailing comment dropped)."""
    value = line.partition(":")[2]
    if " ! " in value:
        value = value.split(" ! ", 1)[0]
    return value.strip()


def read_obo(path: Path, scopes: frozenset[str] = DEFAULT_SCOPES) -> Ontology:
    """Parse ``path`` (see the module docstring); a malformed line is an error naming file and line."""
    terms: dict[str, Entity] = {}
    alternatives: dict[str, str] = {}
    typedef_names: dict[str, str] = {}
    edges: list[tuple[str, str, str, int]] = []  # (term, relation id or IS_A, target, line)
    stanza: str | None = None
    current: dict[str, list[str]] = {}
    start_line = 0

    def finish() -> None:
        if stanza == "[Typedef]" and current.get("id"):
            typedef_names[current["id"][0]] = (current.get("name") or current["id"])[0]
        if stanza != "[Term]" or not current.get("id") or current.get("is_obsolete") == ["true"]:
            return
        term_id = normalise_id(current["id"][0])
        name = (current.get("name") or [""])[0]
        if not name:
            raise DataError(f"{path}:{start_line}: term {term_id} has no 'name' line")
        synonyms = []
        for raw in current.get("synonym", ()):
            match = _SYNONYM.match(raw)
            if match is None:
                raise DataError(f"{path}:{start_line}: term {term_id}: synonym {raw!r} is not '\"text\" SCOPE …'")
            if match.group(2) in scopes:
                synonyms.append(match.group(1).replace('\\"', '"'))
        xrefs = tuple(normalise_id(x.split()[0]) for x in current.get("xref", ()) if ":" in x)
        terms[term_id] = Entity(term_id, name, tuple(dict.fromkeys(s for s in synonyms if s != name)), xrefs)
        for alt in current.get("alt_id", ()):
            alternatives[normalise_id(alt)] = term_id

    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("!"):
                continue
            if line.startswith("["):
                finish()
                stanza, current, start_line = line, {}, number
                continue
            if stanza is None:
                continue  # the header
            tag, colon, _ = line.partition(":")
            if not colon:
                raise DataError(f"{path}:{number}: not a 'tag: value' line: {line[:80]!r}")
            value = line.partition(":")[2].strip() if tag == "synonym" else _value(line)
            current.setdefault(tag, []).append(value)
            if stanza == "[Term]" and tag in {"is_a", "relationship"} and current.get("id"):
                if tag == "is_a":
                    edges.append((current["id"][0], IS_A, value.split()[0], number))
                else:
                    parts = value.split()
                    if len(parts) < 2:
                        raise DataError(f"{path}:{number}: 'relationship:' needs a relation and a target term")
                    edges.append((current["id"][0], parts[0], parts[1], number))
        finish()
    triples = []
    for subject, relation, target, number in edges:
        subject_id, target_id = normalise_id(subject), normalise_id(target)
        if subject_id not in terms or target_id not in terms:
            continue  # an edge of an obsolete term, or to another ontology's term this file does not define
        name = relation if relation == IS_A else typedef_names.get(relation, relation.replace("_", " "))
        triples.append(Triple(subject_id, name, target_id, f"{path.name}:{number}"))
    return Ontology(terms=terms, alternatives=alternatives, triples=tuple(triples), source=str(path))
