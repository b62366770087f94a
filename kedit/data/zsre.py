"""ZsRE in the MEND/EasyEdit layout (``zsre_mend_{train,eval}.json``, WISE's ``zsre_mend_edit.json``).

Record -> case: ``src`` is the question (the subject written out), ``subject``, ``alt`` the new
answer, ``answers[0]`` the true one; ``rephrase`` is the rephrased question; ``loc`` (a Natural
Questions question, kept verbatim with its ``"nq question: "`` prefix as EasyEdit scores it) and
``loc_ans`` make the locality probe. The GPT-4 portability variant adds
``portability = {"New Question", "New Answer"}`` (one object or a list of them), read as portability
probes. ``pred`` and ``cond`` (the MEND model's prediction and its conditioning string) are not read.
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
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe


def _portability(record: Mapping[str, Any]) -> tuple[PortabilityProbe, ...]:
    value = record.get("portability")
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    probes = []
    for position, item in enumerate(items):
        where = "portability" if len(items) == 1 else f"portability[{position}]"
        if not isinstance(item, Mapping):
            raise FieldProblem(where, f"must be an object with 'New Question' and 'New Answer', got {item!r:.80}")
        question = text_field(item, "New Question", path=f"{where}.New Question")
        answer = answer_text(field_value(item, "New Answer", path=f"{where}.New Answer"), f"{where}.New Answer")
        probes.append(PortabilityProbe(question, answer))
    return tuple(probes)


def zsre_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a MEND-layout ZsRE record (see the module docstring for the mapping)."""
    prompt = text_field(record, "src")
    subject = text_field(record, "subject")
    target_new = answer_text(field_value(record, "alt"), "alt")
    answers = record.get("answers")
    target_true = answer_text(answers, "answers") if answers else None
    with blame("src/subject"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
    locality = ()
    loc = optional_text(record, "loc")
    if loc is not None:
        locality = (LocalityProbe(loc, answer_text(field_value(record, "loc_ans"), "loc_ans")),)
    return (Case(request=request, rephrases=text_list(record, "rephrase"), locality=locality,
                 portability=_portability(record), case_id=str(index)),)


def load_zsre(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """A MEND/EasyEdit ZsRE file (with or without GPT-4 portability questions) as cases."""
    return build_dataset("zsre", path, read_records(path), zsre_case, limit=limit, strict=strict)
