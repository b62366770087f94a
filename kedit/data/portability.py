"""The portability and locality sets of Yao et al. 2023 ("Editing Large Language Models: Problems,
Methods, and Opportunities"), as distributed with EasyEdit, with each probe's kind.

A probe's kind (:attr:`~kedit.requests.LocalityProbe.kind`, :attr:`~kedit.requests.PortabilityProbe.kind`)
says what it measures, so an evaluation can report each kind apart:

* locality — ``pre-neighbour`` (a CounterFact neighbourhood prompt: another subject whose true answer
  is the edited subject's old one), ``distract-neighbour`` (the same prompt after the edit sentence,
  Hoelscher-Obermaier et al. 2023, "Detecting Edit Failures in Large Language Models"; called
  Post-Neighbour in some tables), ``unrelated-attribute`` (another relation of the edited subject),
  ``commonsense`` (a PIQA goal and its correct solution);
* portability — ``one-hop`` (a GPT-4 question whose answer follows from the new fact),
  ``subject-replace`` (the edit asked about an alias of the subject), ``inverse-relation`` (the edit
  read backwards).

The formats (all files under ``portability-locality/`` of the shared data):

* ``counterfact-distracting`` — ``locality/distracting_neighbor/counterfact_distracting_neighbor.json``
  (804 records): ROME-layout CounterFact (``requested_rewrite``, ``paraphrase_prompts``,
  ``neighborhood_prompts``, ``attribute_prompts``, ``generation_prompts``) plus
  ``distracting_neighborhood_prompts`` (each neighbourhood prompt after
  ``"<the edit prompt filled> <target_new>. "``: "Spike Hughes originates from Philadelphia. Max
  Mosley originates from"), ``unrelated_relation`` (``relation_id``, ``object``, ``question``: "What
  is Spike Hughes an instance of?" -> "human") and a one-hop ``portability`` question. Case: the
  request; rephrases = ``paraphrase_prompts``; locality = the neighbourhood prompts
  (``pre-neighbour``), then the distracting prompts (``distract-neighbour``), both answered by
  ``target_true`` as in ``counterfact``, then ``unrelated_relation.question`` answered by its
  ``object`` (``unrelated-attribute``); portability = ``New Question`` -> ``New Answer``
  (``one-hop``).
* ``counterfact-one-hop`` — ``portability/one_hop/counterfact_portability_gpt4.json`` (1,031): the
  same without the distracting prompts and the unrelated relation; neighbourhood prompts are
  ``pre-neighbour`` probes, the ``portability`` question a ``one-hop`` one.
* ``counterfact-subject-replace`` — ``portability/subject_replace/counterfact_subject_replace.json``
  (213): plus ``alternative_subject``; portability = the edit prompt with the alternative subject in
  the subject's place, answered by ``target_new`` (``subject-replace``).
* ``zsre-subject-replace`` — ``portability/subject_replace/zsre_subject_replace.json`` (293): MEND
  ZsRE records (``src``, ``subject``, ``alt`` new, ``answers`` true, ``rephrase``; no ``loc``) plus
  ``alternative_subject`` and ``alter_subject_question``, answered by ``alt`` (``subject-replace``).
* ``zsre-inverse-relation`` — ``portability/inverse_relation/zsre_inverse_relation.json`` (385):
  MEND ZsRE records plus ``"inverse question"`` ("Who is Marian Clairmont's sister?" after Claire
  Clairmont's sister becomes Marian Clairmont), answered by the edited ``subject``
  (``inverse-relation``).
* ``piqa`` — ``locality/commonsense_task/piqa_valid.jsonl`` (1,838: ``goal``, ``sol1``, ``sol2``) with
  its labels (0 or 1, one a line) in ``piqa_valid-labels.lst`` beside it (``NAME.jsonl`` ->
  ``NAME-labels.lst``; ``labels=`` names another file; a missing, short or long labels file, or a
  label other than 0/1, is refused naming the line). PIQA asks no edit, so it gives no cases: its
  records are :class:`PiqaQuestion` (``LoadedDataset.records``); :meth:`PiqaQuestion.probe` is a
  ``commonsense`` locality probe (the goal, answered by the correct solution, stripped), and
  :func:`deal_locality` adds such probes to the cases of an edit dataset.

All CounterFact variants share one builder, which reads every section a record has; each format
requires its own section (a record without it is a problem of that record). ``attribute_prompts``
(other subjects whose true answer is ``target_new``) and ``generation_prompts`` are not read, as in
``counterfact``. The zsre variants read the request as ``zsre`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kedit.data.counterfact import rome_counterfact_case
from kedit.data.loaders import (
    FieldProblem,
    LoadedDataset,
    answer_text,
    blame,
    build_dataset,
    field_value,
    parse_dataset,
    read_records,
    text_field,
    text_list,
)
from kedit.data.zsre import portability_probes, zsre_case
from kedit.errors import DataError
from kedit.requests import SUBJECT_SLOT, Case, LocalityProbe, PortabilityProbe

PRE_NEIGHBOUR = "pre-neighbour"
DISTRACT_NEIGHBOUR = "distract-neighbour"
UNRELATED_ATTRIBUTE = "unrelated-attribute"
COMMONSENSE = "commonsense"
ONE_HOP = "one-hop"
SUBJECT_REPLACE = "subject-replace"
INVERSE_RELATION = "inverse-relation"

LOCALITY_KINDS = (PRE_NEIGHBOUR, DISTRACT_NEIGHBOUR, UNRELATED_ATTRIBUTE, COMMONSENSE)
PORTABILITY_KINDS = (ONE_HOP, SUBJECT_REPLACE, INVERSE_RELATION)

Builder = Callable[[Mapping[str, Any], int], tuple[Case, ...]]


# ---------------------------------------------------------------- CounterFact variants

def _unrelated_attribute(record: Mapping[str, Any]) -> tuple[LocalityProbe, ...]:
    value = record.get("unrelated_relation")
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise FieldProblem("unrelated_relation", f"must be an object with question and object, got {value!r:.80}")
    question = text_field(value, "question", path="unrelated_relation.question")
    answer = answer_text(field_value(value, "object", path="unrelated_relation.object"), "unrelated_relation.object")
    return (LocalityProbe(question, answer, kind=UNRELATED_ATTRIBUTE),)


def counterfact_plus_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a ROME-layout CounterFact record with any of the Yao et al. sections (module docstring)."""
    (base,) = rome_counterfact_case(record, index)
    request = base.request
    true = request.target_true
    locality = [LocalityProbe(probe.prompt, probe.answer, kind=PRE_NEIGHBOUR) for probe in base.locality]
    locality += [LocalityProbe(prompt, true, kind=DISTRACT_NEIGHBOUR)
                 for prompt in text_list(record, "distracting_neighborhood_prompts")]
    locality += _unrelated_attribute(record)
    portability = list(portability_probes(record, kind=ONE_HOP))
    alternative = record.get("alternative_subject")
    if alternative is not None:
        alternative = text_field(record, "alternative_subject")
        with blame("alternative_subject"):
            portability.append(PortabilityProbe(request.prompt.replace(SUBJECT_SLOT, alternative.strip()),
                                                request.target_new, kind=SUBJECT_REPLACE))
    return (replace(base, locality=tuple(locality), portability=tuple(portability)),)


def _requiring(field: str, build: Builder) -> Builder:
    """``build``, after checking that the record has ``field`` (the section its format is for)."""
    def checked(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
        field_value(record, field)
        return build(record, index)

    return checked


def _loader(name: str, field: str, build: Builder, id_key: str | None) -> Callable[..., LoadedDataset]:
    checked = _requiring(field, build)

    def load(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
        return build_dataset(name, path, read_records(path), checked, limit=limit, strict=strict, id_key=id_key)

    load.__name__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"``{name}`` (records with ``{field}``) as cases; see :mod:`kedit.data.portability`."
    return load


# ---------------------------------------------------------------- ZsRE variants

def _zsre_portability(question_key: str, kind: str, answer: Callable[[Case], str]) -> Builder:
    def build(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
        (base,) = zsre_case(record, index)
        question = text_field(record, question_key)
        with blame(question_key):
            probe = PortabilityProbe(question, answer(base), kind=kind)
        return (replace(base, portability=(*base.portability, probe)),)

    return build


zsre_subject_replace_case = _zsre_portability("alter_subject_question", SUBJECT_REPLACE,
                                              lambda case: case.request.target_new)
zsre_inverse_relation_case = _zsre_portability("inverse question", INVERSE_RELATION,
                                               lambda case: case.request.subject)

load_counterfact_distracting = _loader("counterfact-distracting", "distracting_neighborhood_prompts",
                                       counterfact_plus_case, "case_id")
load_counterfact_one_hop = _loader("counterfact-one-hop", "portability", counterfact_plus_case, "case_id")
load_counterfact_subject_replace = _loader("counterfact-subject-replace", "alternative_subject",
                                           counterfact_plus_case, "case_id")
load_zsre_subject_replace = _loader("zsre-subject-replace", "alter_subject_question", zsre_subject_replace_case,
                                    None)
load_zsre_inverse_relation = _loader("zsre-inverse-relation", "inverse question", zsre_inverse_relation_case,
                                     None)


# ---------------------------------------------------------------- PIQA (commonsense locality)

@dataclass(frozen=True)
class PiqaQuestion:
    """One PIQA question: a goal, its two solutions as written, and which one is right (0 or 1)."""

    goal: str
    solutions: tuple[str, str]
    label: int

    @property
    def answer(self) -> str:
        """The correct solution, stripped."""
        return self.solutions[self.label].strip()

    def probe(self) -> LocalityProbe:
        """The goal answered by the correct solution, as a ``commonsense`` locality probe."""
        return LocalityProbe(self.goal.strip(), self.answer, kind=COMMONSENSE)


def piqa_labels_path(path: str | Path) -> Path:
    """The labels file beside a PIQA file: ``NAME.jsonl`` -> ``NAME-labels.lst``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-labels.lst")


def read_piqa_labels(labels: str | Path, count: int, source: str | Path) -> list[int]:
    """One 0/1 label a line, exactly ``count`` of them (the records of ``source``)."""
    labels = Path(labels)
    fix = (f"put PIQA's labels file (0 or 1, one a line, one per record of {Path(source).name}) at {labels}, "
           f"or pass labels=PATH to load_piqa")
    if not labels.is_file():
        raise DataError(f"{labels}: the labels of {source} are missing; {fix}")
    lines = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != count:
        raise DataError(f"{labels}: {len(lines)} labels for the {count} records of {source}; {fix}")
    found = []
    for number, line in enumerate(lines, start=1):
        if line not in ("0", "1"):
            raise DataError(f"{labels}: line {number} is {line!r:.40}, expected 0 or 1; {fix}")
        found.append(int(line))
    return found


def load_piqa(
    path: str | Path, *, limit: int | None = None, strict: bool = False, labels: str | Path | None = None
) -> LoadedDataset:
    """PIQA (``goal``, ``sol1``, ``sol2`` and the labels file beside it) as :class:`PiqaQuestion` records."""
    records = read_records(path)
    found = read_piqa_labels(labels if labels is not None else piqa_labels_path(path), len(records), path)

    def parse(record: Mapping[str, Any], index: int) -> PiqaQuestion:
        return PiqaQuestion(text_field(record, "goal"), (text_field(record, "sol1"), text_field(record, "sol2")),
                            found[index])

    return parse_dataset("piqa", path, records, parse, limit=limit, strict=strict)


def deal_locality(cases: Sequence[Case], probes: Sequence[LocalityProbe]) -> tuple[Case, ...]:
    """``cases`` with ``probes`` added to their locality round-robin (probe ``j`` to case ``j mod n``),
    so each probe is used once (how ``knowedit-sanitation`` deals its retain questions)."""
    if not cases:
        raise DataError("no cases to add locality probes to")
    return tuple(replace(case, locality=(*case.locality, *probes[index::len(cases)]))
                 for index, case in enumerate(cases))
