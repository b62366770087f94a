"""A long-tail benchmark's ``cases.jsonl`` (written by ``kedit longtail build``) as plain cases.

Each line is ``Case.to_dict()`` plus ``"longtail"`` (:mod:`kedit.longtail.schema`); ``kedit bench
--data longtail:BENCH/cases.jsonl`` edits them like any other dataset (the long-tail record — counts,
bins, cardinality — is checked here and used by ``kedit longtail probe`` / ``edit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedit.data.loaders import FieldProblem, LoadedDataset, build_dataset, read_records
from kedit.errors import DataError
from kedit.longtail.schema import LongTailCase
from kedit.requests import Case


def longtail_case(record: Mapping[str, Any], index: int) -> tuple[Case, ...]:
    """The case of one benchmark line (its long-tail record must be whole too)."""
    try:
        return (LongTailCase.from_dict(record).case,)
    except DataError as error:
        raise FieldProblem("longtail", str(error)) from None


def load_longtail(path: str | Path, *, limit: int | None = None, strict: bool = False) -> LoadedDataset:
    return build_dataset("longtail", path, read_records(path), longtail_case, limit=limit, strict=strict,
                         id_key="case_id")
