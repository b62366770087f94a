"""Multi-Label Edit (Li et al., 2024, "Unveiling the Pitfalls of Knowledge Editing"), SPEC-ALGORITHMS A.9.

For a (subject, relation) with several correct objects, one MEMIT batch receives one request per
label — ``target_new`` and every ``extra_targets`` entry — all with the same prompt and subject.
Their keys coincide, so MEMIT's least-squares solve writes a blend of the labels' target vectors
z_i at that key (with K Kᵀ = n k kᵀ, ΔW k is proportional to Σ r_i). This is the paper's mitigation
of knowledge distortion: the round-edit's return edit restores the whole object set instead of a
single object.

The edit keeps the caller's requests (evaluation asks about ``target_new``); the expanded label
requests are listed in ``info["labels"]``. Hyperparameters are MEMIT's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from kedit.edits import WeightEdit
from kedit.errors import KeditError
from kedit.methods.base import register
from kedit.methods.memit import MEMIT, MEMITHparams
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest


def label_requests(request: EditRequest) -> list[EditRequest]:
    """One request per distinct label (``target_new`` first, then ``extra_targets`` in order)."""
    labels = list(dict.fromkeys((request.target_new, *request.extra_targets)))
    return [dataclasses.replace(request, target_new=label, extra_targets=()) for label in labels]


@register("mle")
class MultiLabelEdit:
    summary: ClassVar[str] = "One MEMIT batch holding every correct object of a one-to-many fact (Li et al. 2024)"
    hparams_class: ClassVar[type] = MEMITHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(
        self, lm: LoadedModel | None, user_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> MEMITHparams:
        return MEMIT().default_hparams(lm, user_file, overrides)

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: MEMITHparams) -> WeightEdit:
        requests = list(requests)
        if not requests:
            raise KeditError("mle needs at least one request")
        expanded = [label for request in requests for label in label_requests(request)]
        edit = MEMIT().compute(lm, expanded, hparams)
        return dataclasses.replace(
            edit,
            method=self.name,
            requests=tuple(requests),
            info={**edit.info, "labels": [[r.target_new for r in label_requests(q)] for q in requests]},
        )
