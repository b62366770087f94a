"""The Pitfalls metrics (Li et al., "Unveiling the Pitfalls of Knowledge Editing") as pure functions.

Every function works on plain probabilities (floats, or anything ``float()`` accepts, such as the
elements of a 1-D tensor); none of them touches a model. Probabilities are the fact probabilities
S(s, r, o) of SPEC A.2 (:mod:`kedit.pitfalls.probability`).

Where the paper and the reference code (``zjunlp/PitfallsKnowledgeEditing``) differ, the default
is the paper and the reference form is one argument away:

* CM: the paper's relative drop is unbounded below; the reference clips each case at -1
  (``conflict_magnitude(..., clip_at=-1.0)``).
* TFD: the paper computes it "like CM with the tied fact in place of k_o", i.e. relative to the
  model after the first edit (θm); the reference code divides by the original model θ (summary key
  ``FFD``). Both are the same :func:`relative_drop`, given a different reference probability.
* D: the paper's Jensen-Shannon divergence; the reference's ``KLDivLoss(reduction="batchmean")``
  on 1-D tensors also divides by the number of objects (``distortion(..., per_object=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from kedit.errors import KeditError

FAILURE_THRESHOLD = 0.5  # FR counts a case when strictly more than half of the other true objects lost probability


def _floats(values: Iterable[float], name: str) -> list[float]:
    numbers = [float(value) for value in values]
    if not numbers:
        raise KeditError(f"{name} is empty; a metric needs at least one probability")
    bad = [value for value in numbers if not math.isfinite(value) or value < 0.0]
    if bad:
        raise KeditError(f"{name} holds {bad[0]!r}; probabilities must be finite and non-negative")
    return numbers


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean (the dataset average of every per-case metric)."""
    numbers = [float(value) for value in values]
    if not numbers:
        raise KeditError("cannot average zero cases")
    return sum(numbers) / len(numbers)


def fact_probability(prompt_probabilities: Sequence[float]) -> float:
    """S(s, r, o): the arithmetic mean of the per-prompt probabilities (edit prompt + paraphrases)."""
    return mean(_floats(prompt_probabilities, "prompt probabilities"))


def newer_wins(p_new: float, p_old: float) -> bool:
    """One case of CS (and of coverage Succ): the newer fact is strictly more probable (ties lose)."""
    return float(p_new) > float(p_old)


def relative_drop(p_reference: float, p_after: float) -> float:
    """(p_reference - p_after) / p_reference: the share of the reference probability that was lost."""
    reference = float(p_reference)
    if not reference > 0.0:
        raise KeditError(f"the reference probability is {reference!r}; a relative drop needs one above 0")
    return (reference - float(p_after)) / reference


def conflict_magnitude(p_mid: float, p_post: float, *, clip_at: float | None = None) -> float:
    """One case of CM: relative drop of the first edit's fact k_o from θm (after e1) to θ'' (after e2).

    ``clip_at=-1.0`` reproduces the reference code's ``max(..., -1)``; the paper does not clip.
    """
    drop = relative_drop(p_mid, p_post)
    return drop if clip_at is None else max(drop, clip_at)


def tied_fact_damage(p_reference: float, p_post: float) -> float:
    """One case of TFD: relative drop of the tied fact k_f from a reference model to θ''.

    The paper's reference is θm (TFD is CM with k_f in place of k_o); the reference code uses the
    original model θ. Not clipped, can be negative.
    """
    return relative_drop(p_reference, p_post)


def round_success(p_mid_intermediate: float, p_mid_target: float,
                  p_post_target: float, p_post_intermediate: float) -> float:
    """One case of RoundEdit Succ: half a point per edit of the round trip that took.

    e1 took when θm prefers o* over o; e2 took when θ'' prefers o over o* (strict comparisons).
    """
    first = newer_wins(p_mid_intermediate, p_mid_target)
    second = newer_wins(p_post_target, p_post_intermediate)
    return 0.5 * first + 0.5 * second


def ignore_rate(before: Sequence[float], after: Sequence[float]) -> float:
    """One case of IR: the share of the other true objects whose probability went down (any decrease)."""
    p_before, p_after = _floats(before, "probabilities before"), _floats(after, "probabilities after")
    if len(p_before) != len(p_after):
        raise KeditError(f"{len(p_before)} probabilities before but {len(p_after)} after; they must pair up")
    return sum(b > a for b, a in zip(p_before, p_after, strict=True)) / len(p_before)


def is_failure(case_ignore_rate: float) -> bool:
    """One case of FR: strictly more than half of the other true objects lost probability."""
    return float(case_ignore_rate) > FAILURE_THRESHOLD


def _normalised(values: Sequence[float], name: str) -> list[float]:
    numbers = _floats(values, name)
    total = sum(numbers)
    if not total > 0.0:
        raise KeditError(f"{name} sums to 0; it cannot be normalised into a distribution")
    return [value / total for value in numbers]


def kl_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """KL(p || q) in nats for two distributions of the same length; 0 log 0 = 0."""
    total = 0.0
    for p_i, q_i in zip(p, q, strict=True):
        if p_i > 0.0:
            if q_i <= 0.0:
                return math.inf
            total += p_i * math.log(p_i / q_i)
    return total


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence (nats) of two non-negative vectors, each first normalised to sum 1."""
    p_n, q_n = _normalised(p, "first distribution"), _normalised(q, "second distribution")
    if len(p_n) != len(q_n):
        raise KeditError(f"distributions of {len(p_n)} and {len(q_n)} objects cannot be compared")
    middle = [(a + b) / 2.0 for a, b in zip(p_n, q_n, strict=True)]
    return 0.5 * (kl_divergence(p_n, middle) + kl_divergence(q_n, middle))


def distortion(after: Sequence[float], before: Sequence[float], *, per_object: bool = False) -> float:
    """One case of D: JS divergence between the true-object distributions after and before the round trip.

    ``after`` = [S_θ''(o), S_θ''(o'_1), ...], ``before`` = the same objects on θ; o* is not part of
    either. ``per_object=True`` divides by the number of objects, which is what the reference
    code's ``KLDivLoss(reduction="batchmean")`` on 1-D tensors computes.
    """
    value = js_divergence(after, before)
    return value / len(after) if per_object else value
