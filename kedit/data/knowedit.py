"""KnowEdit (Zhang et al. 2024, as distributed with EasyEdit): its sub-sets as cases.

* ``knowedit`` — ZsRE (``ZsRE-test-all.json``), Wiki-counterfact (``train_cf.json``,
  ``test_cf*.json``) and Wiki-recent (``recent_*.json``) share one layout: ``prompt`` (subject
  written out), ``subject``, ``target_new``, ``ground_truth`` (absent in Wiki-recent: a new fact has
  no old answer), ``rephrase_prompt`` (ZsRE only), and ``locality`` / ``portability`` objects that map
  a probe kind (``Relation_Specificity``, ``Forgetfulness``; ``Reasoning``, ``Subject_Aliasing``,
  ``Logical_Generalization``) to a list of ``{prompt, ground_truth}``. The kinds are read in file
  order and flattened (a :class:`Case` has no kind per probe); each probe keeps the first answer of
  its ``ground_truth`` (later entries are aliases). The JSON-lines variant with ``generate_prompt``
  loads the same way (that field is not read).
* ``knowedit-wikibio`` — ``text`` (a Wikipedia passage that names the subject, the prompt),
  ``concept`` (the subject), ``labels`` (the sentence to write, the new target) and ``locality``.
* ``knowedit-sanitation`` — ``trivia_qa_{train,test}.json``: a JSON object with the questions to
  forget (``success``, or ``K_F`` in the train file) and the questions to retain (``locality``, or
  ``K_R``). A forget record (``question``, ``ground_truth``, ``target_new`` "I don't know.") is an edit;
  its ``subject`` when given (train file) must occur in the question; without one (test file) the
  whole question is the subject, so methods that look for the subject's last token use the
  question's last token. A retain question and its ``ground_truth`` is a locality probe. Retain
  questions are not paired with edits in the file; they are dealt round-robin over the cases
  (question ``j`` goes to case ``j mod n``), so each is used once.

ConvSent (``blender_*.json``: ``ent``, ``pos``, ``neg``) edits a sentiment, not an answer; it has
no loader (EasyEdit's KnowEdit code does not load it either).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedit.data.loaders import (
    FieldProblem,
    LoadedDataset,
    answer_text,
    blame,
    build_dataset,
    field_value,
    read_json,
    read_records,
    text_field,
    text_list,
)
from kedit.errors import DataError
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe


def _probes(record: Mapping[str, Any], section: str, kind: type) -> tuple[Any, ...]:
    """``record[section]`` = ``{probe kind: [{prompt, ground_truth}, ...]}`` as probes of ``kind``."""
    value = record.get(section)
    if not value:
        return ()
    if not isinstance(value, Mapping):
        raise FieldProblem(section, f"must be an object of probe kinds, got {type(value).__name__}")
    probes = []
    for name, items in value.items():
        if not isinstance(items, list):
            raise FieldProblem(f"{section}.{name}", f"must be a list of probes, got {type(items).__name__}")
        for position, item in enumerate(items):
            where = f"{section}.{name}[{position}]"
            if not isinstance(item, Mapping):
                raise FieldProblem(where, f"must be an object with prompt and ground_truth, got {item!r:.80}")
            prompt = text_field(item, "prompt", path=f"{where}.prompt")
            answer = answer_text(field_value(item, "ground_truth", path=f"{where}.ground_truth"),
                                 f"{where}.ground_truth")
            probes.append(kind(prompt, answer))
    return tuple(probes)


def knowedit_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a ZsRE / Wiki-counterfact / Wiki-recent record (see the module docstring)."""
    prompt = text_field(record, "prompt")
    subject = text_field(record, "subject")
    target_new = answer_text(field_value(record, "target_new"), "target_new")
    truth = record.get("ground_truth")
    target_true = answer_text(truth, "ground_truth") if truth else None
    with blame("prompt/subject"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
    return (Case(
        request=request,
        rephrases=text_list(record, "rephrase_prompt"),
        locality=_probes(record, "locality", LocalityProbe),
        portability=_probes(record, "portability", PortabilityProbe),
        case_id=str(index),
    ),)


def wikibio_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a WikiBio record: continue the passage ``text`` with the sentence ``labels``."""
    text = text_field(record, "text")
    subject = text_field(record, "concept")
    target_new = text_field(record, "labels")
    with blame("text/concept"):
        request = EditRequest(prompt=text, subject=subject, target_new=target_new)
    return (Case(request=request, locality=_probes(record, "locality", LocalityProbe), case_id=str(index)),)


def load_knowedit(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """KnowEdit ZsRE, Wiki-counterfact or Wiki-recent (JSON list or JSON lines) as cases."""
    return build_dataset("knowedit", path, read_records(path), knowedit_case, limit=limit, strict=strict)


def load_knowedit_wikibio(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """KnowEdit WikiBio as cases."""
    return build_dataset("knowedit-wikibio", path, read_records(path), wikibio_case, limit=limit, strict=strict)


FORGET_KEYS = ("success", "K_F")
RETAIN_KEYS = ("locality", "K_R")


def _first_list(document: Mapping[str, Any], keys: tuple[str, ...], path: str | Path) -> list[Any] | None:
    for key in keys:
        if key in document:
            if not isinstance(document[key], list):
                raise DataError(f"{path}: {key!r} must be a list, got {type(document[key]).__name__}")
            return document[key]
    return None


def _sanitation_parts(path: str | Path) -> tuple[list[Any], list[LocalityProbe]]:
    document = read_json(path)
    forget = _first_list(document, FORGET_KEYS, path) if isinstance(document, Mapping) else None
    if forget is None:
        raise DataError(f"{path}: expected a JSON object with the questions to forget under "
                        f"{' or '.join(FORGET_KEYS)} (and those to retain under {' or '.join(RETAIN_KEYS)})")
    retain = _first_list(document, RETAIN_KEYS, path) or []
    probes = []
    for position, item in enumerate(retain):
        try:
            question = text_field(item, "question")
            probes.append(LocalityProbe(question, answer_text(field_value(item, "ground_truth"), "ground_truth")))
        except FieldProblem as problem:
            # Retain questions belong to no case, so a bad one makes the file unusable, not a record.
            raise DataError(f"{path}: retain question {position}: field {problem.field!r}: {problem.message}") from problem
    return forget, probes


def load_knowedit_sanitation(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """KnowEdit Sanitation (TriviaQA "I don't know." edits) as cases (see the module docstring)."""
    records, locality = _sanitation_parts(path)
    n_cases = len(records) if limit is None else min(limit, len(records))

    def build(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
        question = text_field(record, "question").strip()
        subject = text_field(record, "subject").strip() if record.get("subject") is not None else question
        target_new = answer_text(field_value(record, "target_new"), "target_new")
        truth = record.get("ground_truth")
        with blame("question/subject"):
            request = EditRequest(prompt=question, subject=subject, target_new=target_new,
                                  target_true=answer_text(truth, "ground_truth") if truth else None)
        return (Case(request=request, locality=locality[index::n_cases], case_id=str(index)),)

    return build_dataset("knowedit-sanitation", path, records, build, limit=limit, strict=strict)
