"""One colour and one place per method, the same in every plot of every report.

Colours are keyed by the method's registered name, not by a run's position in a report, so ROME is
the same blue in a report of two runs and in one of twenty. A name the table does not know (a
method added later, a test's toy method) gets a colour from a second palette chosen by a digest
of the name: deterministic across runs, machines and Python versions (no ``hash()``, which is
salted per process). Grey is kept for the unedited model.

Runs of one method in one report (MEMIT one at a time and in batches, FT-L with two bounds) share
the method's colour and are told apart by a hatch (bars) or a line style (curves), given in the
order the runs are shown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# The methods kedit ships, in the order tables and plots show them: the locate-then-edit family
# first, then fine-tuning, then the editors that keep the weights (prompts, trained networks, memories).
METHOD_ORDER = ("rome", "memit", "alphaedit", "mle", "ft-l", "ft-m", "ike", "mend", "serac", "grace", "wise")
METHOD_COLOURS = {
    "rome": "#1f77b4",  # blue
    "memit": "#ff7f0e",  # orange
    "alphaedit": "#2ca02c",  # green
    "mle": "#9467bd",  # purple
    "ft-l": "#d62728",  # red
    "ft-m": "#8c564b",  # brown
    "ike": "#e377c2",  # pink
    "mend": "#bcbd22",  # olive
    "serac": "#17becf",  # cyan
    "grace": "#393b79",  # indigo
    "wise": "#637939",  # moss
}
# For names not above (none of these is in METHOD_COLOURS, and none is grey).
FALLBACK_COLOURS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
                    "#9edae5", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b", "#ce6dbd")
UNEDITED_COLOUR = "#7f7f7f"
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo")
LINE_STYLES = ("-", "--", ":", "-.")


def _base(method: str) -> str:
    return method.strip().lower()


def method_colour(method: str) -> str:
    """The method's fixed colour; an unknown name gets one from FALLBACK_COLOURS by a digest of the name."""
    name = _base(method)
    if name in METHOD_COLOURS:
        return METHOD_COLOURS[name]
    digest = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)
    return FALLBACK_COLOURS[digest % len(FALLBACK_COLOURS)]


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: the methods of METHOD_ORDER in that order, then every other name alphabetically."""
    name = _base(method)
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), name)


def stable_order(methods: Sequence[str]) -> list[int]:
    """Indices of ``methods`` sorted by :func:`method_rank`; equal methods keep their given order."""
    return sorted(range(len(methods)), key=lambda index: (method_rank(methods[index]), index))


def variant_numbers(methods: Sequence[str]) -> list[int]:
    """For each entry, how many entries of the same method come before it (0 for the first run of a method)."""
    seen: dict[str, int] = {}
    numbers = []
    for method in methods:
        name = _base(method)
        numbers.append(seen.get(name, 0))
        seen[name] = seen.get(name, 0) + 1
    return numbers


def hatch(variant: int) -> str:
    return HATCHES[variant % len(HATCHES)]


def line_style(variant: int) -> str:
    return LINE_STYLES[variant % len(LINE_STYLES)]
