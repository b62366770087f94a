"""How numbers are written in tables (markdown and terminal alike)."""

from __future__ import annotations

MISSING = "–"


def format_probability(value: float | None) -> str:
    """Probabilities span many decades (1e-6 before an edit, 0.9 after): three significant digits."""
    if value is None:
        return MISSING
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def format_score(value: float | None) -> str:
    """Scores and accuracies in [0, 1], entropies in bits: two decimals are what differs between runs.

    A tiny negative value is written "0.00", not "-0.00".
    """
    if value is None:
        return MISSING
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def format_change(pre: float | None, post: float | None) -> str:
    if pre is None or post is None:
        return MISSING
    return f"{post - pre:+.2f}"


def format_seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f} s"


def format_targets(true: str | None, new: str) -> str:
    return f"{true} → {new}" if true else f"→ {new}"
