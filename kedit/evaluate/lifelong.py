"""Lifelong-editing metrics of one model state in a sequence of edits (GRACE's ERR and TRR).

Pure functions over the records the runner measures at a checkpoint of a sequential run (every
case edited so far, scored on the state after those edits, each record with the ``held_out`` block
of :mod:`kedit.evaluate.survey` when the run has a held-out / upstream set). Token protocol
(teacher-forced token accuracy), as the edits' own metrics:

* **edit retention** (GRACE's ERR: accuracy on all past edits) — the mean, over the cases edited so
  far, of their ``reliability`` (token accuracy of ``target_new`` after the edit prompt) on the
  current state; ``edit_retention_rate`` is the fraction of them recalled perfectly (every target
  token the argmax: the survey's success rate at this state).
* **upstream accuracy** (GRACE's TRR: accuracy on the model's own held-out test data) — the token
  accuracy of the true answers of a fixed set of unedited cases (``kedit bench --upstream FILE`` or
  ``--held-out N``; its probes are :func:`kedit.evaluate.survey.held_out_probe_case`'s), on the
  current state; ``upstream_retention`` = upstream accuracy now / before any edit (1 = nothing lost).
  The survey's drawdown on that set is the unedited accuracy minus this one.

``pre`` holds the same numbers on the unedited model (edit retention there: how much of the new
targets the model already produced). GRACE measures QA with token F1 of generated answers; kedit's
numbers are the teacher-forced token accuracies every other kedit metric uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kedit.evaluate import metrics as m
from kedit.evaluate.survey import HELD_OUT, success_rate

LIFELONG = "lifelong"  # the summary block
PROTOCOL = ("token protocol: edit retention = mean reliability of every case edited so far (GRACE's ERR); "
            "upstream accuracy = token accuracy of a fixed held-out set's true answers (GRACE's TRR)")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def edit_retention(records: Sequence[Mapping[str, Any]], state: str = "post") -> float | None:
    """Mean token reliability of the records' cases in ``state`` (None without records)."""
    values = [_number(((record.get(m.TOKEN_PROTOCOL) or {}).get(state) or {}).get("reliability")) for record in records]
    return m.mean(value for value in values if value is not None)


def upstream_accuracy(records: Sequence[Mapping[str, Any]], state: str = "post") -> float | None:
    """Token accuracy of the held-out (upstream) set in ``state``: every record of one checkpoint
    carries the same block; None when the run has no such set."""
    for record in records:
        value = _number((((record.get(HELD_OUT) or {}).get(m.TOKEN_PROTOCOL)) or {}).get(state))
        if value is not None:
            return value
    return None


def lifelong_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"lifelong": {...}}``: the block a sequential run's curve lines and summary carry."""
    before, after = upstream_accuracy(records, "pre"), upstream_accuracy(records, "post")
    retention = after / before if before and after is not None else None
    return {LIFELONG: {
        "protocol": PROTOCOL,
        "cases": len(records),
        "pre": {"edit_retention": edit_retention(records, "pre"), "upstream_accuracy": before},
        "post": {"edit_retention": edit_retention(records, "post"),
                 "edit_retention_rate": success_rate(records, m.TOKEN_PROTOCOL),
                 "upstream_accuracy": after, "upstream_retention": retention},
    }}
