"""Which relations make benchmark questions: enough triples, and not on the drop list.

The paper keeps SNOMED CT relations with more than 100 triples and removes 36 it judged to make no
answerable question (:data:`PAPER_DROPPED`, from the reference code's
``dsets/corpus_linked_to_kg_dataset.py``; names compared without SNOMED's ``(attribute)`` tag and
case-insensitively). ``is a`` is among them: a hierarchy edge has too many right answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kedit.longtail.templates import relation_key
from kedit.longtail.triples import Triple

PAPER_MIN_TRIPLES = 101  # the reference code keeps relations with > 100 triples
PAPER_DROPPED: tuple[str, ...] = (
    "Is a", "Pathological process", "Procedure site", "Occurrence", "Procedure site - Direct", "Method",
    "Has interpretation", "Laterality", "Has disposition", "Component", "After", "Clinical course", "Course",
    "Finding method", "Temporally follows", "Has focus", "Has intent", "Using device", "Access", "Using",
    "Inheres in", "Extent", "Has realization", "Severity", "Temporal context", "Has device intended site",
    "Plays role", "Property", "Associated procedure", "Has specimen", "Using energy", "During",
    "Specimen source topography", "Communication with wound", "Procedure morphology", "Has dose form",
)


def _key(name: str) -> str:
    key = relation_key(name)
    return key[: -len(" (attribute)")] if key.endswith(" (attribute)") else key


@dataclass(frozen=True)
class RelationFilter:
    """Keep relations with at least ``min_triples`` triples whose name is not in ``dropped``."""

    min_triples: int = PAPER_MIN_TRIPLES
    dropped: tuple[str, ...] = PAPER_DROPPED

    def decide(self, triples: Iterable[Triple]) -> tuple[frozenset[str], dict[str, str]]:
        """The relations kept, and for each one left out why (``"dropped"`` / ``"N triples < M"``)."""
        counts = Counter(triple.relation for triple in triples)
        dropped = {_key(name) for name in self.dropped}
        kept: set[str] = set()
        reasons: dict[str, str] = {}
        for relation, count in sorted(counts.items()):
            if _key(relation) in dropped:
                reasons[relation] = "on the drop list"
            elif count < self.min_triples:
                reasons[relation] = f"{count} triples < --min-triples {self.min_triples}"
            else:
                kept.add(relation)
        return frozenset(kept), reasons


def keep_relations(triples: Sequence[Triple], kept: frozenset[str]) -> tuple[Triple, ...]:
    return tuple(triple for triple in triples if triple.relation in kept)
