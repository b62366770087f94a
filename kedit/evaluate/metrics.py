"""Every metric as a small pure function of :class:`TargetScore` values (or of generated text).

Two protocols, never mixed:

* ``token`` — teacher-forced token accuracy (the EasyEdit protocol): reliability,
  generalization and portability are the fraction of target tokens that are the model's argmax;
  locality is the fraction of a locality answer's positions where the edited model's argmax
  equals the unedited model's.
* ``probability`` — probability comparisons (the ROME/MEMIT CounterFact protocol): efficacy,
  paraphrase and neighborhood scores compare the per-token geometric-mean probabilities of the new
  and the true object; magnitudes are their differences; S is the harmonic mean of ES, PS, NS.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from kedit.models.scoring import TargetScore

TOKEN_PROTOCOL = "token"
PROBABILITY_PROTOCOL = "probability"
FLUENCY_PROTOCOL = "fluency"

PROTOCOL_DESCRIPTIONS = {
    TOKEN_PROTOCOL: "teacher-forced token accuracy (EasyEdit protocol); locality = agreement with the unedited model",
    PROBABILITY_PROTOCOL: "probability comparison of new vs true object (ROME/MEMIT CounterFact protocol)",
    FLUENCY_PROTOCOL: "weighted 2-/3-gram entropy of generated text (ROME protocol)",
}


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean, or None for no values (a metric with no probes is absent, not zero)."""
    values = list(values)
    return sum(values) / len(values) if values else None


def token_accuracy(scored: TargetScore) -> float:
    """Fraction of target tokens that are the argmax given the prompt and the earlier target tokens."""
    return sum(scored.hits) / len(scored.hits)


def argmax_agreement(before: TargetScore, after: TargetScore) -> float:
    """Fraction of positions where two model states predict the same token (teacher-forced on the same text)."""
    if before.target_ids != after.target_ids:
        raise ValueError("agreement needs the same target tokens before and after")
    same = [a == b for a, b in zip(before.predicted, after.predicted, strict=True)]
    return sum(same) / len(same)


def prefers(first: TargetScore, second: TargetScore) -> bool:
    """True when ``first`` is strictly more probable per token than ``second`` (ties count as False)."""
    return first.mean_log_prob > second.mean_log_prob


def probability_margin(first: TargetScore, second: TargetScore) -> float:
    """P(first) - P(second), each the per-token geometric-mean probability (the ROME magnitude)."""
    return first.geometric_mean_prob - second.geometric_mean_prob


def harmonic_mean(values: Sequence[float | None]) -> float | None:
    """Harmonic mean; 0 if any value is 0; None if any value is missing."""
    if not values or any(value is None for value in values):
        return None
    if any(value <= 0 for value in values):
        return 0.0
    return len(values) / sum(1.0 / value for value in values)


_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, orders: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted mean of the n-gram entropies (bits) of one text, as in ROME's fluency measure.

    For each order n, the entropy of the empirical n-gram distribution of the text's words is
    weighted and the weighted values are averaged: mean_i(w_i * H_{n_i}). Words are split on a
    regular expression (words and single punctuation marks); ROME uses NLTK's tokenizer, which
    differs only on contractions and quotes.
    """
    words = _WORD.findall(text.lower())
    weighted = []
    for order, weight in zip(orders, weights, strict=True):
        grams = Counter(tuple(words[i : i + order]) for i in range(len(words) - order + 1))
        total = sum(grams.values())
        entropy = -sum((c / total) * math.log2(c / total) for c in grams.values()) if total else 0.0
        weighted.append(weight * entropy)
    return sum(weighted) / len(weighted)
