"""Applying a chain of weight edits to a model in order, and taking it off again bit for bit.

The merged state of a chain is *defined* as the base weights with each entry's deltas added in
chain order, each addition done by :meth:`WeightEdit.apply` (the same code that applied the edit
when it was made), so replaying a chain reproduces the recorded fingerprints exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kedit.methods.base import WeightEdit
from kedit.models.fingerprint import weights_fingerprint
from kedit.models.loading import LoadedModel


@dataclass
class AppliedChain:
    """Edits applied to ``lm`` in order; :meth:`revert` restores the weights from before them."""

    lm: LoadedModel
    ids: tuple[str, ...]
    edits: tuple[WeightEdit, ...]

    def revert(self) -> None:
        """Undo the edits last-first; each restores the copies it kept, so the result is bit-exact."""
        for edit in reversed(self.edits):
            if edit.is_applied:
                edit.revert(self.lm)


def apply_in_order(lm: LoadedModel, ids: Sequence[str], edits: Sequence[WeightEdit],
                   fingerprint_each: bool = False) -> tuple[AppliedChain, tuple[str, ...]]:
    """Apply ``edits`` in order; return the applied chain and, if asked, the fingerprint after each.

    On any failure the edits applied so far are reverted, so the model is left as it was given.
    """
    chain = AppliedChain(lm, tuple(ids), tuple(edits))
    fingerprints = []
    try:
        for edit in edits:
            edit.apply(lm)
            if fingerprint_each:
                fingerprints.append(weights_fingerprint(lm.model))
    except BaseException:
        chain.revert()
        raise
    return chain, tuple(fingerprints)
