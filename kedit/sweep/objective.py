"""What a search maximises or minimises: a metric of a bench summary, by a short name or its path.

``S`` is the ROME/MEMIT CounterFact score, the harmonic mean of the dataset means of ES, PS and NS
after editing (:func:`kedit.evaluate.summarize` writes it as ``probability.post.score_s``). Any
other mean of a summary is named by its path, ``PROTOCOL.STATE.NAME`` (``token.post.locality``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kedit.sweep.settings import SweepError

METRICS: Mapping[str, tuple[str, str, str]] = {
    "S": ("probability", "post", "score_s"),
    "ES": ("probability", "post", "efficacy_score"),
    "PS": ("probability", "post", "paraphrase_score"),
    "NS": ("probability", "post", "neighborhood_score"),
    "reliability": ("token", "post", "reliability"),
    "generalization": ("token", "post", "generalization"),
    "locality": ("token", "post", "locality"),
    "portability": ("token", "post", "portability"),
}
GOALS = ("max", "min")


def metric_path(name: str) -> tuple[str, str, str]:
    """The summary path of ``name`` (a short name above, or ``PROTOCOL.STATE.NAME``)."""
    if name in METRICS:
        return METRICS[name]
    parts = tuple(name.split("."))
    if len(parts) == 3 and all(parts) and parts[1] in ("pre", "post"):
        return parts  # type: ignore[return-value]
    raise SweepError(f"unknown metric {name!r}; use one of {', '.join(METRICS)} or PROTOCOL.STATE.NAME "
                     "(e.g. token.post.locality)")


def metric_value(summary: Mapping[str, Any], name: str) -> float | None:
    """The metric in a :func:`kedit.evaluate.summarize` summary (None where the summary lacks it)."""
    protocol, state, key = metric_path(name)
    value = ((summary.get(protocol) or {}).get(state) or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
