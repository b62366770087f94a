"""Pulling out of results records the numbers that tables and plots show.

A record is one line of ``results.jsonl`` (read with :func:`kedit.runs.read_lines`) as written by
:func:`kedit.evaluate`, plus whatever the writer added, e.g. ``top_tokens``; a summary is the dict
returned by :func:`kedit.summarize`. The accessors tolerate missing pieces (a case without
``target_true`` has no probability protocol) and return ``None`` for them, so one table layout
serves every dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Protocol keys as written in records; spelled out here so reports depend on the files, not on kedit internals.
PROTOCOLS = ("token", "probability", "fluency")
STATES = ("pre", "post")


def metric(record: Mapping[str, Any], protocol: str, state: str, name: str) -> float | None:
    """One number of one record, or None when the protocol, state or metric is absent."""
    value = ((record.get(protocol) or {}).get(state) or {}).get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class CaseRow:
    """What a per-case table row or bar shows about one edited fact."""

    case_id: str
    subject: str
    target_true: str | None
    target_new: str
    p_new_pre: float | None
    p_new_post: float | None
    p_true_pre: float | None
    p_true_post: float | None
    top1_post: str | None
    reliability: float | None
    generalization: float | None
    locality: float | None
    portability: float | None


def _top1(record: Mapping[str, Any], state: str) -> str | None:
    tokens = (record.get("top_tokens") or {}).get(state) or []
    return tokens[0][0] if tokens else None


def case_row(record: Mapping[str, Any]) -> CaseRow:
    """Flatten one record into the numbers a per-case table shows."""
    request = record.get("request") or {}
    return CaseRow(
        case_id=str(record.get("case_id", "")),
        subject=str(request.get("subject", "")),
        target_true=request.get("target_true"),
        target_new=str(request.get("target_new", "")),
        p_new_pre=metric(record, "probability", "pre", "p_new"),
        p_new_post=metric(record, "probability", "post", "p_new"),
        p_true_pre=metric(record, "probability", "pre", "p_true"),
        p_true_post=metric(record, "probability", "post", "p_true"),
        top1_post=_top1(record, "post"),
        reliability=metric(record, "token", "post", "reliability"),
        generalization=metric(record, "token", "post", "generalization"),
        locality=metric(record, "token", "post", "locality"),
        portability=metric(record, "token", "post", "portability"),
    )


@dataclass(frozen=True)
class MetricRow:
    """One metric of one protocol in a summary, before and after the edit."""

    protocol: str
    name: str
    pre: float | None
    post: float | None


def metric_rows(metrics: Mapping[str, Any], protocol: str) -> list[MetricRow]:
    """The metrics of ``protocol`` in a :func:`kedit.summarize` dict, in first-seen order (pre, then post)."""
    block = metrics.get(protocol) or {}
    names: list[str] = []
    for state in STATES:
        names.extend(name for name in (block.get(state) or {}) if name not in names)
    return [
        MetricRow(protocol, name, *((block.get(state) or {}).get(name) for state in STATES))
        for name in names
    ]


def protocol_description(metrics: Mapping[str, Any], protocol: str) -> str:
    return str((metrics.get(protocol) or {}).get("protocol", ""))
