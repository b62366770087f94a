"""The high-level API: ``kedit.edit(lm, "rome", requests, **overrides) -> Edit``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedit.edits import Edit, EditStack
from kedit.errors import KeditError
from kedit.methods import method_for
from kedit.methods.base import Method, open_session
from kedit.methods.outcome import check_targets, warn_known_targets
from kedit.models.loading import LoadedModel
from kedit.requests import Case, EditRequest, as_requests

MODES = ("batch", "sequential")


def edit(
    lm: LoadedModel,
    method: str,
    requests: EditRequest | Case | Iterable[EditRequest | Case],
    *,
    hparams_file: str | Path | None = None,
    apply: bool = True,
    mode: str = "batch",
    batch_size: int = 1,
    stack: EditStack | None = None,
    **overrides: Any,
) -> Edit:
    """Compute an edit with ``method`` and (by default) apply it to ``lm``.

    ``overrides`` set hyperparameters by name (``layer=6``, ``key_mode="original"``); a YAML file
    of hyperparameters can be given as ``hparams_file``. The returned :class:`Edit` can be
    reverted bit for bit with ``edit.revert(lm)``.

    ``mode="batch"`` hands every request to the method at once: batch-capable methods (MEMIT,
    AlphaEdit, MLE, FT, IKE) compute them jointly, the others (ROME) loop over them, each computed on
    the model edited by the previous ones. ``mode="sequential"`` edits ``batch_size`` requests at
    a time, each group computed on the model carrying every earlier group (through the method's
    session, so statistics are computed once and AlphaEdit accumulates earlier keys); the result
    is one edit standing for the sequence, made by its kind's ``combine`` (the summed weight change;
    for IKE one memory holding every fact).

    ``stack`` holds edits already kept on the model (a ledger's chain): the new edit is checked
    and applied through it, so it sits on them the way the stack keeps edits (an IKE edit joins
    the installed prompt context instead of being put in front of it).

    Before it is returned the edit is checked on the model: a request whose new target the edited
    model does not predict raises a ``KeditWarning`` and is marked False in
    ``edit.info["targets_reached"]`` (:mod:`kedit.methods.outcome`).
    """
    if mode not in MODES:
        raise KeditError(f"mode {mode!r} is not one of {MODES} (single-edit runs: kedit.evaluate.runner)")
    if batch_size < 1:
        raise KeditError(f"batch_size must be at least 1, got {batch_size}")
    request_list = as_requests(requests)
    chosen = method_for(lm, method)
    hparams = chosen.default_hparams(lm, hparams_file, overrides)
    warn_known_targets(lm, request_list)
    started = time.perf_counter()
    if mode == "batch":
        result = chosen.compute(lm, request_list, hparams)
    else:
        result = _sequential(chosen, lm, hparams, request_list, batch_size)
    result.info["seconds"] = time.perf_counter() - started
    check_targets(lm, result, stacklevel=2, stack=stack)
    if apply:
        if stack is not None:
            stack.push(result)
        else:
            result.apply(lm)
    return result


def _sequential(method: Method, lm: LoadedModel, hparams: Any, requests: list[EditRequest],
                batch_size: int) -> Edit:
    """Groups of ``batch_size`` requests kept one after another (:class:`EditStack`), each computed on
    the model carrying the earlier ones; the model is restored and one edit standing for the whole
    sequence returned (the kind's ``combine``: summed deltas, one memory of facts, the swaps in order)."""
    session = open_session(method, lm, hparams)
    steps: list[Edit] = []
    with EditStack(lm) as stack:
        for start in range(0, len(requests), batch_size):
            step = session.compute(requests[start:start + batch_size])
            stack.push(step)
            steps.append(step)
            session.applied(step)
    kinds = {type(step) for step in steps}
    if len(kinds) > 1:
        raise KeditError(f"{method.name} returned edits of several kinds in one sequence; they cannot be combined")
    result = type(steps[0]).combine(steps)
    result.info.update({"mode": "sequential", "batch_size": batch_size, "steps": [step.info for step in steps]})
    return result
