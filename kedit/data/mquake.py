"""MQuAKE (Zhong et al. 2023): multi-hop questions whose answers change through chains of edits.

``mquake`` reads the MQuAKE-CF / MQuAKE-T / MQuAKE-hard layout. A record asks for several edits
together (``requested_rewrite``: ``prompt`` with ``{}``, ``subject``, ``target_new`` and
``target_true`` as ``{"str", "id"}``, ``question``), so it becomes one case per rewrite, with case ids
``"<case_id>/<i>"`` (:func:`record_groups` puts them back together: a benchmark applies a group as
one batch). Each rewrite's single-hop ``question`` is its rephrase. The record's multi-hop
``questions``, answered by ``new_answer``, are portability probes; the new chain's single hops that
no rewrite touches (``new_single_hops`` whose ``cloze`` is not an edited prompt) are real facts the
edits must leave alone, so they are locality probes. Both sit on the group's first case only, so a
record's probes are scored once, not once per rewrite. Answer aliases are not read.

``mquake-t`` reads the flat triples of Benchmarking-KE's ``new_mquake-t.json`` (``prompt`` with
``{}``, ``subject``, ``target_new``, ``target_true``, ``question``): one case each, the question
being its rephrase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kedit.data.loaders import (
    FieldProblem,
    LoadedDataset,
    answer_text,
    blame,
    build_dataset,
    field_value,
    read_records,
    text_field,
    text_list,
)
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe

GROUP_SEPARATOR = "/"


def _rewrite(item: Any, where: str) -> tuple[EditRequest, tuple[str, ...]]:
    """A rewrite object as a request and its rephrases; ``where`` prefixes field names ("" at top level)."""

    def at(key: str) -> str:
        return f"{where}.{key}" if where else key

    if not isinstance(item, Mapping):
        raise FieldProblem(where or "record", f"must be an object, got {type(item).__name__}")
    prompt = text_field(item, "prompt", path=at("prompt"))
    subject = text_field(item, "subject", path=at("subject"))
    target_new = answer_text(field_value(item, "target_new", path=at("target_new")), at("target_new"))
    truth = item.get("target_true")
    with blame(where or "prompt/subject"):
        request = EditRequest(prompt=prompt, subject=subject, target_new=target_new,
                              target_true=None if truth is None else answer_text(truth, at("target_true")))
    question = item.get("question")
    rephrases = (text_field(item, "question", path=at("question")),) if question is not None else ()
    return request, rephrases


def _unedited_hops(record: Mapping[str, Any], requests: Sequence[EditRequest]) -> tuple[LocalityProbe, ...]:
    edited = {request.text for request in requests}
    hops = record.get("new_single_hops") or []
    if not isinstance(hops, list):
        raise FieldProblem("new_single_hops", f"must be a list, got {type(hops).__name__}")
    probes = []
    for position, hop in enumerate(hops):
        where = f"new_single_hops[{position}]"
        if not isinstance(hop, Mapping):
            raise FieldProblem(where, f"must be an object with cloze and answer, got {hop!r:.80}")
        cloze = text_field(hop, "cloze", path=f"{where}.cloze")
        if cloze.strip() not in edited:
            probes.append(LocalityProbe(cloze, answer_text(field_value(hop, "answer", path=f"{where}.answer"),
                                                           f"{where}.answer")))
    return tuple(probes)


def mquake_cases(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """The cases of one MQuAKE record, one per requested rewrite (see the module docstring)."""
    rewrites = field_value(record, "requested_rewrite")
    if not isinstance(rewrites, list) or not rewrites:
        raise FieldProblem("requested_rewrite", f"must be a non-empty list of rewrites, got {rewrites!r:.80}")
    edits = [_rewrite(item, f"requested_rewrite[{i}]") for i, item in enumerate(rewrites)]
    new_answer = answer_text(field_value(record, "new_answer"), "new_answer")
    portability = tuple(PortabilityProbe(question, new_answer)
                        for question in text_list(record, "questions", required=True))
    locality = _unedited_hops(record, [request for request, _ in edits])
    group = str(record["case_id"]) if record.get("case_id") is not None else str(index)
    return tuple(
        Case(request=request, rephrases=rephrases,
             locality=locality if i == 0 else (), portability=portability if i == 0 else (),
             case_id=f"{group}{GROUP_SEPARATOR}{i}")
        for i, (request, rephrases) in enumerate(edits)
    )


def mquake_triple_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """One case from a flat MQuAKE-T triple."""
    request, rephrases = _rewrite(record, "")
    return (Case(request=request, rephrases=rephrases, case_id=str(index)),)


def record_groups(cases: Sequence[Case]) -> tuple[tuple[Case, ...], ...]:
    """Cases that came from one MQuAKE record (ids ``"<record>/<i>"``), in file order."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.case_id.rsplit(GROUP_SEPARATOR, 1)[0], []).append(case)
    return tuple(tuple(group) for group in groups.values())


def load_mquake(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """MQuAKE-CF / -T / -hard records (``limit`` counts records, each giving one case per rewrite)."""
    return build_dataset("mquake", path, read_records(path), mquake_cases, limit=limit, strict=strict,
                         id_key="case_id")


def load_mquake_triples(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    """Benchmarking-KE's flat MQuAKE-T triples as cases."""
    return build_dataset("mquake-t", path, read_records(path), mquake_triple_case, limit=limit, strict=strict)
