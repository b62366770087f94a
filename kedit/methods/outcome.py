"""Did an edit reach its targets? Checked on the edited model, never assumed.

An edit method can finish without error and still leave the model's answer unchanged (a v*
optimisation that plateaued, a key the update was not solved for). :func:`check_targets` applies
the edit, asks the model for each request's prompt, and reverts: a request is *reached* when the
edited model's greedy (argmax, teacher-forced) prediction is the new target at every target
token — the token-reliability criterion. Unreached requests raise a :class:`KeditWarning` naming
the request, what the model says instead and, where the method optimised a value, its final loss;
the outcome is stored in ``edit.info`` (``targets_reached``) so edit files and run records carry it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from kedit.edits import Edit, EditStack
from kedit.errors import KeditWarning
from kedit.models.loading import LoadedModel
from kedit.models.scoring import TargetScore, score
from kedit.requests import EditRequest

TARGETS_REACHED = "targets_reached"


def _optimisation_note(info: Mapping[str, Any], index: int) -> str:
    """'; v* final loss 0.83 after 20 steps' when the method recorded it for request ``index``."""
    details = info.get("requests")
    if not isinstance(details, list) or index >= len(details) or not isinstance(details[index], Mapping):
        return ""
    detail = details[index]
    if "final_loss" not in detail:
        return ""
    steps = detail.get("optimisation_steps")
    return f"; its value optimisation ended at loss {detail['final_loss']:.3f}" + (
        f" after {steps} steps" if steps is not None else "")


def check_targets(lm: LoadedModel, edit: Edit, stacklevel: int = 2, stack: EditStack | None = None) -> list[bool]:
    """Whether the edited model predicts each request's new target; the edit must not be applied.

    Puts the edit on the model (through ``stack`` when it is to sit on kept edits, so a prompt
    context joins theirs as it will when kept), scores each request's prompt, takes it off again
    (the model is left as it was found) and hands the scores to :func:`record_outcome`.
    """
    with (stack if stack is not None else EditStack(lm)).pushed(edit):
        scores = score(lm, [(request.text, request.target_new) for request in edit.requests])
    return record_outcome(lm, edit, scores, stacklevel=stacklevel + 1)


def record_outcome(lm: LoadedModel, edit: Edit, scores: Sequence[TargetScore], stacklevel: int = 2) -> list[bool]:
    """The outcome of ``edit`` from ``scores``, the edited model's scores of (request.text,
    request.target_new) for each of its requests (a caller that scores them anyway passes its own):
    stored in ``edit.info["targets_reached"]`` (when the edit has an ``info`` dict), one warning
    per unreached request."""
    requests = list(edit.requests)
    if len(scores) != len(requests):
        raise ValueError(f"{len(scores)} scores for the {len(requests)} requests of the edit")
    reached = [all(s.hits) for s in scores]
    info = edit.info
    info[TARGETS_REACHED] = reached
    for index, (request, ok, scored) in enumerate(zip(requests, reached, scores, strict=True)):
        if ok:
            continue
        first_miss = next(j for j, hit in enumerate(scored.hits) if not hit)
        said = lm.tokenizer.decode([scored.predicted[first_miss]])
        note = _optimisation_note(info or {}, index)
        warnings.warn(
            f"{edit.method} edit did not reach its target: {request.text!r} -> {request.target_new!r} "
            f"(the edited model predicts {said!r} at target token {first_miss + 1}, "
            f"p(target) = {math.exp(sum(scored.log_probs)):.3f}{note})",
            KeditWarning, stacklevel=stacklevel + 1,
        )
    return reached


def warn_known_targets(lm: LoadedModel, requests: Sequence[EditRequest]) -> list[int]:
    """Warn about requests whose new target the model already predicts; return their indices."""
    scored = score(lm, [(r.text, r.target_new) for r in requests])
    known = [i for i, s in enumerate(scored) if all(s.hits)]
    for index in known:
        request = requests[index]
        warnings.warn(
            f"request {index}: the model already answers {request.target_new!r} to {request.text!r}; "
            "the edit will change little",
            KeditWarning,
            stacklevel=3,
        )
    return known
