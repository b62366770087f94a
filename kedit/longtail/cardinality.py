"""One-to-one and one-to-many facts, with the paper's meaning.

The paper: a fact is one-to-many when its subject and relation have several objects ("Ulnar
neuropathy — finding site — ?" has one answer, "Marfan syndrome — has phenotype — ?" dozens). Per
relation r, with ``hc(s)`` = the number of objects (s, r) has and ``tc(o)`` = the number of subjects
(r, o) has, a triple (s, r, o) is

* ``one-to-many`` when ``hc(s) > 1``, else ``one-to-one`` (:func:`cardinalities`);
* in the finer four-way mapping class (:func:`mapping_classes`), named the conventional way (head
  first): ``1-1`` (hc = 1, tc = 1), ``1-N`` (hc > 1, tc = 1: one subject, many objects), ``N-1``
  (hc = 1, tc > 1), ``N-N``.

The reference code (``generate_CliKT.py``) writes these labels the other way round — hc > 1, tc = 1
is its ``N_to_1`` — and its one-to-many bucket is ``1_to_N ∪ N_to_N`` in its labels, i.e. tc > 1: the
triples whose *object* has several subjects, not what the paper describes. kedit follows the paper
text (hc > 1). The reference code also recomputes the labels within each frequency bin; kedit counts
over the whole filtered triple set, so a fact's cardinality does not depend on its bin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from kedit.longtail.triples import Triple

ONE_TO_ONE = "one-to-one"
ONE_TO_MANY = "one-to-many"


def object_sets(triples: Iterable[Triple]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(subject, relation) -> its distinct object ids, sorted."""
    objects: dict[tuple[str, str], set[str]] = {}
    for triple in triples:
        objects.setdefault((triple.subject_id, triple.relation), set()).add(triple.object_id)
    return {key: tuple(sorted(values)) for key, values in objects.items()}


def cardinalities(triples: Iterable[Triple]) -> dict[tuple[str, str], str]:
    """(subject, relation) -> ``one-to-many`` when it has several objects, else ``one-to-one``."""
    return {key: ONE_TO_MANY if len(objects) > 1 else ONE_TO_ONE for key, objects in object_sets(triples).items()}


def mapping_classes(triples: Iterable[Triple]) -> Mapping[str, str]:
    """Triple key -> ``1-1``, ``1-N``, ``N-1`` or ``N-N`` (conventional, head first; see the module docstring)."""
    triples = list({triple.key: triple for triple in triples}.values())
    heads = Counter((triple.relation, triple.subject_id) for triple in triples)
    tails = Counter((triple.relation, triple.object_id) for triple in triples)
    classes = {}
    for triple in triples:
        many_objects = heads[(triple.relation, triple.subject_id)] > 1
        many_subjects = tails[(triple.relation, triple.object_id)] > 1
        classes[triple.key] = f"{'N' if many_subjects else '1'}-{'N' if many_objects else '1'}"
    return classes
