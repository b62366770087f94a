"""From counted triples to benchmark cases: filtering, cardinality, demonstrations, locality, bins, sampling.

The order (the paper's, B.1 of SPEC-ALGORITHMS, with kedit's departures marked *):

1. drop triples whose subject or object no document mentions (the paper's step 4; with an
   imported count table: triples whose pair the table lacks);
2. keep relations with at least ``min_triples`` triples, not on the drop list (:mod:`.relations`);
3. every kept relation needs a question template (:mod:`.templates`), else a one-line error;
4. the answer is the object's name with any "(...)" removed and whitespace and quotes stripped;
5. cardinality per (subject, relation) — one-to-many when it has several objects — and every valid
   object, *counted over the whole triple set as read*, not over the filtered pool nor within a
   bin (the reference code does both; a phenotype the corpus never mentions is still a right answer);
6. per relation, ``k`` demonstrations held out (seeded): *k subjects are drawn and all of their
   (subject, relation) triples leave the pool*, one of them becoming the demonstration, so that no
   case has a demonstration that answers it (the reference code draws k triples, which can leave
   another object of the same subject in the pool); at least one subject always stays;
7. a locality partner per triple: another triple of the same relation (seeded) *with another
   subject* (a same-subject partner of a one-to-many fact asks the edited question again);
8. bins at each level and sampling per bin (:mod:`.bins`, :mod:`.sampling`), seeded; optionally
   per bin x cardinality cell, so that the few one-to-one facts of a bin are not crowded out.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kedit.errors import DataError, RequestError
from kedit.longtail.bins import Bins
from kedit.longtail.cardinality import cardinalities, mapping_classes, object_sets
from kedit.longtail.relations import RelationFilter
from kedit.longtail.sampling import SAMPLING_MODES, SamplingMode, sample_per_bin
from kedit.longtail.schema import CARDINALITIES, LEVELS, Demonstration, LongTailCase, LongTailFact
from kedit.longtail.templates import RelationTemplates, TemplateBook
from kedit.longtail.triples import Triple, TripleSet
from kedit.requests import Case, EditRequest, LocalityProbe

_PARENTHESES = re.compile(r"\([^()]*\)")


def clean_answer(name: str) -> str:
    """The paper's answer: "(...)" removed, whitespace and quotes stripped ("Fever (finding)" -> "Fever")."""
    text = name
    while _PARENTHESES.search(text):
        text = _PARENTHESES.sub("", text)
    return " ".join(text.split()).strip(" \"'")


@dataclass(frozen=True)
class AssemblyConfig:
    """The choices of steps 1-8 (see the module docstring)."""

    relation_filter: RelationFilter = field(default_factory=RelationFilter)
    keep_unmentioned: bool = False
    bins: Bins = field(default_factory=Bins)
    demonstrations: int = 5
    sample: int | None = None
    sampling: SamplingMode = "natural"
    sample_level: str = "document"
    seed: int = 42
    per_cardinality: bool = False  # sample each bin x cardinality cell on its own (n per cell when stratified)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_MODES:
            raise DataError(f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {self.sampling!r}")
        if self.sample_level not in LEVELS:
            raise DataError(f"--sample-level must be one of {', '.join(LEVELS)}, got {self.sample_level!r}")
        if self.demonstrations < 0 or (self.sample is not None and self.sample < 0):
            raise DataError("--demonstrations and --sample must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {"min_triples": self.relation_filter.min_triples, "dropped_relations": list(self.relation_filter.dropped),
                "keep_unmentioned": self.keep_unmentioned, "bin_edges": list(self.bins.edges),
                "demonstrations": self.demonstrations, "sample": self.sample, "sampling": self.sampling,
                "sample_level": self.sample_level, "seed": self.seed, "per_cardinality": self.per_cardinality}


@dataclass(frozen=True)
class Counted:
    """The counting stage's result as assembly reads it.

    ``pair_counts`` maps (subject id, object id) to a count per level; ``frequencies`` an entity id
    to its document frequency (None for an imported table, which has none); ``imported`` says a
    missing pair means "not covered", not "zero".
    """

    levels: tuple[str, ...]
    pair_counts: Mapping[tuple[str, str], Mapping[str, int]]
    frequencies: Mapping[str, int] | None
    imported: bool = False


@dataclass(frozen=True)
class Assembled:
    """The benchmark's cases and demonstrations, and what each step kept and left out (for the manifest)."""

    cases: tuple[LongTailCase, ...]
    demonstrations: tuple[Demonstration, ...]
    report: dict[str, Any]


def _table(facts: Sequence[LongTailFact], levels: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """level -> bin -> cardinality -> count (every bin and cardinality present, zeros included)."""
    table: dict[str, Any] = {}
    for level in levels:
        counter = Counter((fact.bins[level], fact.cardinality) for fact in facts)
        table[level] = {label: {card: counter[(label, card)] for card in CARDINALITIES} for label in labels}
    return table


def _usable(triple: TripleSet, item: Triple) -> str | None:
    """Why a triple cannot become a question, or None."""
    subject = triple.entities[item.subject_id].name.strip()
    if not subject:
        return "subject has no name"
    if "{" in subject or "}" in subject:
        return "subject name has a brace"
    if not clean_answer(triple.entities[item.object_id].name):
        return "object name is empty once cleaned"
    return None


def _hold_out(pool: list[Triple], k: int, seed: int, answer: Mapping[str, str],
              templates: Mapping[str, RelationTemplates], names: Mapping[str, str]
              ) -> tuple[list[Triple], list[Demonstration], int]:
    """Step 6: the pool without the held-out subjects' triples, the demonstrations, how many triples left."""
    by_relation: dict[str, dict[str, list[Triple]]] = {}
    for triple in pool:
        by_relation.setdefault(triple.relation, {}).setdefault(triple.subject_id, []).append(triple)
    held: set[tuple[str, str]] = set()
    demonstrations = []
    for relation in sorted(by_relation):
        groups = by_relation[relation]
        subjects = sorted(groups)
        rng = random.Random(f"{seed}:demonstrations:{relation}")
        for subject in rng.sample(subjects, min(k, len(subjects) - 1)):
            chosen = rng.choice(sorted(groups[subject], key=lambda t: t.key))
            demonstrations.append(Demonstration(relation, templates[relation].question(names[subject]),
                                                answer[chosen.object_id]))
            held.add((subject, relation))
    kept = [triple for triple in pool if (triple.subject_id, triple.relation) not in held]
    return kept, demonstrations, len(pool) - len(kept)


def _partners(pool: Sequence[Triple], seed: int) -> dict[str, Triple]:
    """Step 7: triple key -> a triple of the same relation with another subject (absent when none exists)."""
    by_relation: dict[str, list[Triple]] = {}
    for triple in pool:
        by_relation.setdefault(triple.relation, []).append(triple)
    partners: dict[str, Triple] = {}
    for relation, triples in sorted(by_relation.items()):
        triples = sorted(triples, key=lambda t: t.key)
        rng = random.Random(f"{seed}:locality:{relation}")
        for triple in triples:
            for _ in range(8):  # a random draw almost always has another subject; scan only when unlucky
                candidate = triples[rng.randrange(len(triples))]
                if candidate.subject_id != triple.subject_id:
                    partners[triple.key] = candidate
                    break
            else:
                others = [t for t in triples if t.subject_id != triple.subject_id]
                if others:
                    partners[triple.key] = rng.choice(others)
    return partners


def assemble(triple_set: TripleSet, counted: Counted, templates: TemplateBook, config: AssemblyConfig) -> Assembled:
    """Steps 1-8 of the module docstring."""
    if config.sample_level not in counted.levels:
        raise RequestError(f"--sample-level {config.sample_level}: the counts have levels {list(counted.levels)}")
    everything = sorted(triple_set.triples, key=lambda t: t.key)
    report: dict[str, Any] = {"triples_read": len(everything), "left_out": {}}
    left_out: dict[str, int] = report["left_out"]
    objects_of = object_sets(everything)
    cardinality = cardinalities(everything)
    mapping = mapping_classes(everything)

    # 1. mentioned (or covered by the imported table)
    if counted.imported:
        pool = [t for t in everything if (t.subject_id, t.object_id) in counted.pair_counts]
        reason = "pair not in the count table"
    else:
        frequency = counted.frequencies or {}
        pool = [t for t in everything if config.keep_unmentioned
                or (frequency.get(t.subject_id, 0) > 0 and frequency.get(t.object_id, 0) > 0)]
        reason = "subject or object in no document"
    left_out[reason] = len(everything) - len(pool)

    # 2-3. relations and their templates
    kept, why = config.relation_filter.decide(pool)
    report["relations_left_out"] = why
    before = len(pool)
    pool = [t for t in pool if t.relation in kept]
    left_out["relation left out"] = before - len(pool)
    first_source = {}
    for triple in pool:
        first_source.setdefault(triple.relation, triple.source)
    relation_templates = {relation: templates.require(relation, first_source[relation]) for relation in sorted(kept)
                          if relation in first_source}

    # 4. answers, and triples that make no question
    names = {entity.id: entity.name.strip() for entity in triple_set.entities.values()}
    answer = {entity.id: clean_answer(entity.name) for entity in triple_set.entities.values()}
    usable = []
    for triple in pool:
        problem = _usable(triple_set, triple)
        if problem is None:
            usable.append(triple)
        else:
            left_out[problem] = left_out.get(problem, 0) + 1
    pool = usable

    # 5 was done on the whole set above (objects_of, cardinality, mapping). 6-7: demonstrations, locality partners
    pool, demonstrations, held = _hold_out(pool, config.demonstrations, config.seed, answer, relation_templates, names)
    report["held_out_triples"] = held
    partners = _partners(pool, config.seed)
    report["relations"] = dict(sorted(Counter(t.relation for t in pool).items()))

    # 8. facts with counts and bins, then the sample
    facts: dict[str, LongTailFact] = {}
    for triple in pool:
        counts = counted.pair_counts.get((triple.subject_id, triple.object_id), {})
        level_counts = {level: int(counts.get(level, 0)) for level in counted.levels}
        own = triple.object_id
        others = sorted((o for o in objects_of[(triple.subject_id, triple.relation)] if o != own),
                        key=lambda o: (answer[o], o))
        extra: dict[str, Any] = {"mapping": mapping[triple.key]}
        if counted.frequencies is not None:
            extra["object_doc_freq"] = int(counted.frequencies.get(own, 0))
        facts[triple.key] = LongTailFact(
            subject_id=triple.subject_id, subject=names[triple.subject_id], relation=triple.relation,
            object_id=own, object=answer[own], objects=(answer[own], *(answer[o] for o in others)),
            object_ids=(own, *others), cardinality=cardinality[(triple.subject_id, triple.relation)],  # type: ignore[arg-type]
            axis="cooccurrence", counts=level_counts,
            bins={level: config.bins.label(count) for level, count in level_counts.items()},
            subject_doc_freq=None if counted.frequencies is None else int(counted.frequencies.get(triple.subject_id, 0)),
            source=triple.source, extra=extra)
    labels = config.bins.labels
    report["population"] = _table(list(facts.values()), counted.levels, labels)
    if config.sample is None:
        chosen = list(facts)
    elif config.per_cardinality:
        cells = [f"{label} {card}" for label in labels for card in CARDINALITIES]
        chosen = sample_per_bin(list(facts), lambda key: f"{facts[key].bins[config.sample_level]} {facts[key].cardinality}",
                                lambda key: key, cells, config.sample, config.sampling, config.seed)
    else:
        chosen = sample_per_bin(list(facts), lambda key: facts[key].bins[config.sample_level], lambda key: key, labels,
                                config.sample, config.sampling, config.seed)
    cases = []
    no_partner = 0
    for key in chosen:
        fact = facts[key]
        case, had_partner = _case(fact, partners.get(key), relation_templates, names, answer)
        no_partner += not had_partner
        if case is None:
            left_out["case rejected by EditRequest"] = left_out.get("case rejected by EditRequest", 0) + 1
            continue
        cases.append(case)
    report["cases_without_locality_partner"] = no_partner
    report["cases"] = _table([case.fact for case in cases], counted.levels, labels)
    report["case_count"] = len(cases)
    report["demonstrations"] = len(demonstrations)
    return Assembled(cases=tuple(cases), demonstrations=tuple(demonstrations), report=report)


def _case(fact: LongTailFact, partner: Triple | None, templates: Mapping[str, RelationTemplates],
          names: Mapping[str, str], answer: Mapping[str, str]) -> tuple[LongTailCase | None, bool]:
    """The case of one fact (None when EditRequest refuses its text), and whether it has a locality probe."""
    subject = fact.subject
    template = templates[fact.relation]
    extra_targets = tuple(dict.fromkeys(o for o in fact.objects[1:] if o != fact.object))
    try:
        request = EditRequest(prompt=template.prompt(), subject=subject, target_new=fact.object,
                              target_true=fact.object, extra_targets=extra_targets)
        rephrases = tuple(prompt.replace("{}", subject) for prompt in template.rephrase_prompts())
        locality = ()
        if partner is not None:
            locality = (LocalityProbe(prompt=templates[partner.relation].question(names[partner.subject_id]),
                                      answer=answer[partner.object_id]),)
        case_id = f"{fact.relation}|{fact.subject_id}|{fact.object_id}"
        return LongTailCase(case=Case(request=request, rephrases=rephrases, locality=locality, case_id=case_id),
                            fact=fact), partner is not None
    except RequestError:
        return None, partner is not None
