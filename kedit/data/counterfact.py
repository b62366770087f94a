"""CounterFact in the EasyEdit layout (``easyedit_counterfact-edit.json``).

Each record: ``prompt`` (subject written out), ``subject``, ``target_new``, ``ground_truth``,
``rephrase_prompt`` and one neighbourhood ``locality_prompt`` with ``locality_ground_truth``.
"""

from __future__ import annotations

import json
from pathlib import Path

from kedit.errors import RequestError
from kedit.requests import Case, EditRequest, LocalityProbe


def counterfact_case(record: dict, index: int) -> Case:
    request = EditRequest(
        prompt=record["prompt"],
        subject=record["subject"],
        target_new=record["target_new"],
        target_true=record.get("ground_truth"),
    )
    rephrases = record.get("rephrase_prompt") or ()
    if isinstance(rephrases, str):
        rephrases = (rephrases,)
    locality = ()
    if record.get("locality_prompt") and record.get("locality_ground_truth"):
        locality = (LocalityProbe(record["locality_prompt"], record["locality_ground_truth"]),)
    return Case(request=request, rephrases=tuple(rephrases), locality=locality,
                case_id=str(record.get("case_id", index)))


def load_counterfact(path: str | Path, limit: int | None = None) -> list[Case]:
    """Read the first ``limit`` records (all when None); a malformed record raises with its index."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise RequestError(f"{path}: expected a JSON list of CounterFact records")
    cases = []
    for index, record in enumerate(records[:limit] if limit else records):
        try:
            cases.append(counterfact_case(record, index))
        except (KeyError, RequestError) as error:
            raise RequestError(f"{path}: record {index}: {error}") from error
    return cases
