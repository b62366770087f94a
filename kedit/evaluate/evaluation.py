"""``evaluate(lm, cases, edit)``: score every probe of every case before and after an edit.

All probes of all cases go through one :func:`score` call per model state, so a state costs one
batched forward per batch of probes. Records are plain dicts, one per case, with each number under
the protocol that produced it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.edits import Edit, EditStack
from kedit.evaluate import metrics as m
from kedit.models.generation import generate
from kedit.models.loading import LoadedModel
from kedit.models.scoring import TargetScore, score
from kedit.requests import Case


@dataclass(frozen=True)
class ProbeLayout:
    """Where each probe of one case sits in the flat list of scored pairs."""

    rewrite_new: int
    rewrite_true: int | None
    rephrase_new: tuple[int, ...]
    rephrase_true: tuple[int, ...]
    locality_answer: tuple[int, ...]
    locality_new: tuple[int, ...]
    portability: tuple[int, ...]
    locality_kinds: tuple[str | None, ...] = ()  # per locality probe (Pre-/Distract-Neighbour, ...)
    portability_kinds: tuple[str | None, ...] = ()


def layout_probes(cases: Sequence[Case]) -> tuple[list[tuple[str, str]], list[ProbeLayout]]:
    pairs: list[tuple[str, str]] = []

    def add(prompt: str, target: str) -> int:
        pairs.append((prompt, target))
        return len(pairs) - 1

    layouts = []
    for case in cases:
        request = case.request
        true = request.target_true
        layouts.append(
            ProbeLayout(
                rewrite_new=add(request.text, request.target_new),
                rewrite_true=None if true is None else add(request.text, true),
                rephrase_new=tuple(add(p, request.target_new) for p in case.rephrases),
                rephrase_true=() if true is None else tuple(add(p, true) for p in case.rephrases),
                locality_answer=tuple(add(p.prompt, p.answer) for p in case.locality),
                locality_new=tuple(add(p.prompt, request.target_new) for p in case.locality),
                portability=tuple(add(p.prompt, p.answer) for p in case.portability),
                locality_kinds=tuple(p.kind for p in case.locality),
                portability_kinds=tuple(p.kind for p in case.portability),
            )
        )
    return pairs, layouts


def by_kind(indices: Sequence[int], kinds: Sequence[str | None]) -> dict[str, list[int]]:
    """The probe indices grouped by their kind (probes without a kind are not grouped)."""
    groups: dict[str, list[int]] = {}
    for index, kind in zip(indices, kinds, strict=False):
        if kind is not None:
            groups.setdefault(kind, []).append(index)
    return groups


def _token_metrics(layout: ProbeLayout, now: list[TargetScore], before: list[TargetScore] | None) -> dict:
    result = {
        "reliability": m.token_accuracy(now[layout.rewrite_new]),
        "generalization": m.mean(m.token_accuracy(now[i]) for i in layout.rephrase_new),
        "portability": m.mean(m.token_accuracy(now[i]) for i in layout.portability),
        # accuracy of the locality answers themselves: how well the model knows the neighbours
        "locality_accuracy": m.mean(m.token_accuracy(now[i]) for i in layout.locality_answer),
    }
    if before is not None:
        result["locality"] = m.mean(m.argmax_agreement(before[i], now[i]) for i in layout.locality_answer)
    # Probes of a named kind (the Yao et al. sets) also get their own keys, e.g. "locality.distract-neighbour".
    for kind, indices in by_kind(layout.portability, layout.portability_kinds).items():
        result[f"portability.{kind}"] = m.mean(m.token_accuracy(now[i]) for i in indices)
    if before is not None:
        for kind, indices in by_kind(layout.locality_answer, layout.locality_kinds).items():
            result[f"locality.{kind}"] = m.mean(m.argmax_agreement(before[i], now[i]) for i in indices)
    return result


def _probability_metrics(layout: ProbeLayout, now: list[TargetScore]) -> dict | None:
    if layout.rewrite_true is None:
        return None  # the probability protocol compares against the true object: none was given
    new, true = now[layout.rewrite_new], now[layout.rewrite_true]
    paraphrase = list(zip(layout.rephrase_new, layout.rephrase_true, strict=True))
    neighbours = list(zip(layout.locality_answer, layout.locality_new, strict=True))
    kinds = dict(zip(layout.locality_answer, layout.locality_kinds, strict=False))
    per_kind = {
        f"neighborhood_score.{kind}": m.mean(float(m.prefers(now[a], now[b])) for a, b in neighbours
                                            if kinds.get(a) == kind)
        for kind in dict.fromkeys(k for k in layout.locality_kinds if k is not None)
    }
    return per_kind | {
        "efficacy_score": float(m.prefers(new, true)),
        "efficacy_magnitude": m.probability_margin(new, true),
        "paraphrase_score": m.mean(float(m.prefers(now[a], now[b])) for a, b in paraphrase),
        "paraphrase_magnitude": m.mean(m.probability_margin(now[a], now[b]) for a, b in paraphrase),
        "neighborhood_score": m.mean(float(m.prefers(now[a], now[b])) for a, b in neighbours),
        "neighborhood_magnitude": m.mean(m.probability_margin(now[a], now[b]) for a, b in neighbours),
        "p_new": new.geometric_mean_prob,
        "p_true": true.geometric_mean_prob,
    }


def _fluency(lm: LoadedModel, cases: Sequence[Case], max_new_tokens: int, seed: int) -> list[dict]:
    texts = generate(lm, [case.request.text for case in cases], max_new_tokens=max_new_tokens, seed=seed)
    return [{"ngram_entropy": m.ngram_entropy(text), "text": text} for text in texts]


def evaluate(
    lm: LoadedModel,
    cases: Iterable[Case],
    edit: Edit | None = None,
    *,
    stack: EditStack | None = None,
    fluency: bool = False,
    max_new_tokens: int = 40,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Evaluate ``cases`` on the unedited model and, when ``edit`` is given, on the edited one.

    The model is left in the state it was found in (an applied edit stays applied). Without an
    edit only the ``pre`` state is measured. ``stack`` is the :class:`~kedit.edits.EditStack` that
    holds (or will hold) the edit when it sits on other kept edits (a ledger's chain): the edit is
    taken off and put on through it, as the stack would combine it. Each record holds, per protocol, a ``pre`` and a
    ``post`` dict; locality (token protocol) exists only for ``post``, because it is agreement
    with the unedited model.
    """
    cases = list(cases)
    pairs, layouts = layout_probes(cases)
    stack = stack if stack is not None else EditStack(lm)
    was_applied = edit is not None and (edit.is_applied or stack.holds_last(edit))
    with stack.lifted(edit) if was_applied else contextlib.nullcontext():
        before = score(lm, pairs)
        fluency_before = _fluency(lm, cases, max_new_tokens, seed) if fluency else None
        after = fluency_after = None
        if edit is not None:
            with stack.pushed(edit):
                after = score(lm, pairs)
                fluency_after = _fluency(lm, cases, max_new_tokens, seed) if fluency else None

    records = []
    for index, (case, layout) in enumerate(zip(cases, layouts, strict=True)):
        record = case_record(case, layout, before, after)
        if fluency:
            record[m.FLUENCY_PROTOCOL] = {
                "protocol": m.PROTOCOL_DESCRIPTIONS[m.FLUENCY_PROTOCOL],
                "pre": fluency_before[index],
                **({"post": fluency_after[index]} if fluency_after else {}),
            }
        records.append(record)
    return records


def case_record(case: Case, layout: ProbeLayout, before: Sequence[TargetScore],
                after: Sequence[TargetScore] | None) -> dict[str, Any]:
    """The record of one case from the scores of its probes (``layout`` indexes ``before``/``after``)
    on the unedited state and, when given, the edited one. :func:`evaluate` and the runner (which
    scores the unedited state once for all cases) both build their records here."""
    token = {"protocol": m.PROTOCOL_DESCRIPTIONS[m.TOKEN_PROTOCOL], "pre": _token_metrics(layout, before, None)}
    probability = {
        "protocol": m.PROTOCOL_DESCRIPTIONS[m.PROBABILITY_PROTOCOL],
        "pre": _probability_metrics(layout, before),
    }
    if after is not None:
        token["post"] = _token_metrics(layout, after, before)
        probability["post"] = _probability_metrics(layout, after)
    return {
        "case_id": case.case_id,
        "request": case.request.to_dict(),
        "edited": after is not None,
        m.TOKEN_PROTOCOL: token,
        m.PROBABILITY_PROTOCOL: probability,
    }


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every metric per protocol and state; S = harmonic mean of mean ES, PS, NS."""
    summary: dict[str, Any] = {"cases": len(records)}
    for protocol in (m.TOKEN_PROTOCOL, m.PROBABILITY_PROTOCOL, m.FLUENCY_PROTOCOL):
        block: dict[str, Any] = {}
        for state in ("pre", "post"):
            values: dict[str, list[float]] = {}
            for record in records:
                metrics = (record.get(protocol) or {}).get(state) or {}
                for name, value in metrics.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        values.setdefault(name, []).append(float(value))
            if values:
                block[state] = {name: m.mean(vals) for name, vals in values.items()}
                if protocol == m.PROBABILITY_PROTOCOL:
                    block[state]["score_s"] = m.harmonic_mean([
                        block[state].get("efficacy_score"),
                        block[state].get("paraphrase_score"),
                        block[state].get("neighborhood_score"),
                    ])
        if block:
            summary[protocol] = {"protocol": m.PROTOCOL_DESCRIPTIONS[protocol], **block}
    return summary
