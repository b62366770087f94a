"""The high-level API: ``kedit.edit(lm, "rome", requests, **overrides) -> Edit``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedit.errors import KeditWarning
from kedit.evaluate.metrics import token_accuracy
from kedit.evaluate.scoring import score
from kedit.methods import get_method
from kedit.methods.base import Edit
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


def edit(
    lm: LoadedModel,
    method: str,
    requests: EditRequest | Case | Iterable[EditRequest | Case],
    *,
    hparams_file: str | Path | None = None,
    apply: bool = True,
    **overrides: Any,
) -> Edit:
    """Compute an edit with ``method`` and (by default) apply it to ``lm``.

    ``overrides`` set hyperparameters by name (``layer=6``, ``key_mode="original"``); a YAML file
    of hyperparameters can be given as ``hparams_file``. The returned :class:`Edit` can be
    reverted bit for bit with ``edit.revert(lm)``.
    """
    request_list = as_requests(requests)
    chosen = get_method(method)
    hparams = chosen.default_hparams(lm, hparams_file, overrides)
    warn_known_targets(lm, request_list)
    started = time.perf_counter()
    result = chosen.compute(lm, request_list, hparams)
    if hasattr(result, "info"):
        result.info["seconds"] = time.perf_counter() - started
    if apply:
        result.apply(lm)
    return result
