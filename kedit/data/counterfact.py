"""CounterFact, in both public layouts.

* ROME/MEMIT's ``counterfact.json`` (name ``counterfact``): ``case_id``, ``requested_rewrite``
  (``prompt`` with ``{}``, ``subject``, ``target_new``/``target_true`` as ``{"str", "id"}``,
  ``relation_id``), ``paraphrase_prompts`` (rephrases), ``neighborhood_prompts`` (other subjects
  whose true answer is the edited subject's old answer, so each becomes a locality probe answered by
  ``target_true``). ``attribute_prompts`` and ``generation_prompts`` have no place in a
  :class:`Case` and are not read.
* EasyEdit/MEND's flat ``counterfact-{train,edit,val}.json`` (name ``counterfact-easyedit``):
  ``prompt`` (subject written out), ``subject``, ``target_new``, ``ground_truth``,
  ``rephrase_prompt`` and one ``locality_prompt`` with ``locality_ground_truth``.
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
    optional_text,
    read_records,
    text_field,
    text_list,
)
from kedit.requests import Case, EditRequest, LocalityProbe


def _case_id(record: Mapping[str, Any], index: int) -> str:
    return str(record["case_id"]) if record.get("case_id") is not None else str(index)


def rome_counterfact_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a ROME-layout record (see the module docstring for the mapping)."""
    rewrite = field_value(record, "requested_rewrite")
    if not isinstance(rewrite, Mapping):
        raise FieldProblem("requested_rewrite", f"must be an object, got {type(rewrite).__name__}")
    prompt = text_field(rewrite, "prompt", path="requested_rewrite.prompt")
    subject = text_field(rewrite, "subject", path="requested_rewrite.subject")
    target_new = answer_text(field_value(rewrite, "target_new", path="requested_rewrite.target_new"),
                             "requested_rewrite.target_new")
    target_true = answer_text(field_value(rewrite, "target_true", path="requested_rewrite.target_true"),
                              "requested_rewrite.target_true")
    with blame("requested_rewrite"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
    rephrases = text_list(record, "paraphrase_prompts")
    neighbours = text_list(record, "neighborhood_prompts")
    locality = tuple(LocalityProbe(prompt, request.target_true) for prompt in neighbours)
    return (Case(request=request, rephrases=rephrases, locality=locality, case_id=_case_id(record, index)),)


def easyedit_counterfact_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from an EasyEdit flat record (see the module docstring for the mapping)."""
    prompt = text_field(record, "prompt")
    subject = text_field(record, "subject")
    target_new = answer_text(field_value(record, "target_new"), "target_new")
    truth = record.get("ground_truth")
    target_true = None if truth is None else answer_text(truth, "ground_truth")
    with blame("prompt"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
    locality_prompt = optional_text(record, "locality_prompt")
    locality = ()
    if locality_prompt is not None:
        answer = answer_text(field_value(record, "locality_ground_truth"), "locality_ground_truth")
        locality = (LocalityProbe(locality_prompt, answer),)
    return (Case(request=request, rephrases=text_list(record, "rephrase_prompt"), locality=locality,
                 case_id=_case_id(record, index)),)


def load_counterfact_rome(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """ROME/MEMIT ``counterfact.json`` (also ``multi_counterfact.json``) as cases."""
    return build_dataset("counterfact", path, read_records(path), rome_counterfact_case,
                         limit=limit, strict=strict, id_key="case_id")


def load_counterfact_easyedit(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """EasyEdit/MEND ``counterfact-{train,edit,val}.json`` as cases."""
    return build_dataset("counterfact-easyedit", path, read_records(path), easyedit_counterfact_case,
                         limit=limit, strict=strict, id_key="case_id")


def load_counterfact(path: str | Path, limit: int | None = None) -> list[Case]:
    """Either CounterFact layout as a list of cases; the first malformed record raises
    :class:`~kedit.errors.DataError` naming its index and field (the benchmarks' strict entry point)."""
    records = read_records(path)
    rome = bool(records) and isinstance(records[0], Mapping) and "requested_rewrite" in records[0]
    build = rome_counterfact_case if rome else easyedit_counterfact_case
    name = "counterfact" if rome else "counterfact-easyedit"
    return list(build_dataset(name, path, records, build, limit=limit, strict=True, id_key="case_id").cases)
