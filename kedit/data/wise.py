"""WISE (Wang et al. 2024) hallucination and temporal sets (``{hallucination,temporal}-{train,edit}.json``).

Record -> case: ``prompt`` (a passage or a name that contains ``subject``) is continued with
``target_new`` (a sentence or a paragraph); ``locality_prompt`` / ``locality_ground_truth`` (a web
text cut in two) is the locality probe. The temporal set adds ``ood_rephrase``, a different passage
about the same subject, read as the rephrase (WISE's out-of-distribution generalisation probe).
WISE's ZsRE file (``zsre_mend_edit.json``) is in the MEND ZsRE layout: load it as ``zsre``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedit.data.loaders import (
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


def wise_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a WISE hallucination or temporal record (see the module docstring)."""
    prompt = text_field(record, "prompt")
    subject = text_field(record, "subject")
    target_new = answer_text(field_value(record, "target_new"), "target_new")
    with blame("prompt/subject"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new)
    locality = ()
    locality_prompt = optional_text(record, "locality_prompt")
    if locality_prompt is not None:
        answer = answer_text(field_value(record, "locality_ground_truth"), "locality_ground_truth")
        locality = (LocalityProbe(locality_prompt, answer),)
    return (Case(request=request, rephrases=text_list(record, "ood_rephrase"), locality=locality,
                 case_id=str(index)),)


def load_wise(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """A WISE hallucination or temporal file as cases."""
    return build_dataset("wise", path, read_records(path), wise_case, limit=limit, strict=strict)
