"""The high-level API: ``kedit.edit(lm, "rome", requests, **overrides) -> Edit``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from kedit.errors import KeditError, KeditWarning
from kedit.evaluate.metrics import token_accuracy
from kedit.evaluate.scoring import score
from kedit.methods import get_method
from kedit.methods.base import Edit, Method, WeightEdit, hparams_dict, open_session
from kedit.methods.outcome import check_targets
from kedit.models.loading import LoadedModel
from kedit.requests import Case, EditRequest, as_requests


def warn_known_targets(lm: LoadedModel, requests: list[EditRequest]) -> list[int]:
    """Warn about requests whose new target the model already predicts; return their indices."""
    scored = score(lm, [(r.text, r.target_new) for r in requests])
    known = [i for i, s in enumerate(scored) if token_accuracy(s) == 1.0]
    for index in known:
        request = requests[index]
        warnings.warn(
            f"request {index}: the model already answers {request.target_new!r} to {request.text!r}; "
            "the edit will change little",
            KeditWarning,
            stacklevel=3,
        )
    return known


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
    is one edit holding the summed weight change.

    Before it is returned the edit is checked on the model: a request whose new target the edited
    model does not predict raises a ``KeditWarning`` and is marked False in
    ``edit.info["targets_reached"]`` (:mod:`kedit.methods.outcome`).
    """
    if mode not in MODES:
        raise KeditError(f"mode {mode!r} is not one of {MODES} (single-edit runs: kedit.evaluate.runner)")
    if batch_size < 1:
        raise KeditError(f"batch_size must be at least 1, got {batch_size}")
    request_list = as_requests(requests)
    chosen = get_method(method)
    hparams = chosen.default_hparams(lm, hparams_file, overrides)
    warn_known_targets(lm, request_list)
    started = time.perf_counter()
    if mode == "batch":
        result = chosen.compute(lm, request_list, hparams)
    else:
        result = _sequential(chosen, lm, hparams, request_list, batch_size)
    if hasattr(result, "info"):
        result.info["seconds"] = time.perf_counter() - started
    check_targets(lm, result, stacklevel=2)
    if apply:
        result.apply(lm)
    return result


def _sequential(method: Method, lm: LoadedModel, hparams: Any, requests: list[EditRequest],
                batch_size: int) -> WeightEdit:
    """Groups of ``batch_size`` requests applied one after another; the model is restored and the
    summed change returned (its apply gives the sequence's weights up to float rounding)."""
    session = open_session(method, lm, hparams)
    steps: list[Edit] = []
    try:
        for start in range(0, len(requests), batch_size):
            step = session.compute(requests[start:start + batch_size])
            if not isinstance(step, WeightEdit):
                raise KeditError(f"{method.name} does not change weights; sequential mode needs a weight edit "
                                 "(use mode='batch')")
            step.apply(lm)
            steps.append(step)
            session.applied(step)
        totals: dict[str, torch.Tensor] = {}
        for step in steps:
            for name, delta in step.deltas.items():
                totals[name] = totals[name] + delta if name in totals else delta.clone()
    finally:
        for step in reversed(steps):
            step.revert(lm)
    return WeightEdit(
        method=method.name,
        requests=tuple(requests),
        hparams=hparams_dict(hparams),
        deltas=totals,
        base_fingerprint=lm.fingerprint,
        info={"mode": "sequential", "batch_size": batch_size, "steps": [step.info for step in steps]},
    )
