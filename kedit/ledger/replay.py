"""Applying a chain of edits (of any kind) to a model in order, and taking it off again bit for bit.

The merged state of a chain is *defined* as the base model with each entry pushed, in chain order,
onto one :class:`kedit.edits.EditStack` — the same code that kept the edits when they were made —
so replaying a chain reproduces the recorded state fingerprints exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kedit.edits import Edit, EditStack
from kedit.models.loading import LoadedModel


@dataclass
class AppliedChain:
    """Edits applied to ``lm`` in order; :meth:`revert` restores the model from before them.

    ``stack`` is where a further edit is pushed to sit on top of the chain (``Ledger.append`` with
    ``chain=`` reads the state fingerprints around it there)."""

    lm: LoadedModel
    ids: tuple[str, ...]
    stack: EditStack

    @property
    def edits(self) -> tuple[Edit, ...]:
        return self.stack.edits

    def revert(self) -> None:
        """Undo every edit still on the stack, last first; each restores what it kept, so the result is bit-exact."""
        self.stack.unwind()


def apply_in_order(lm: LoadedModel, ids: Sequence[str], edits: Sequence[Edit],
                   fingerprint_each: bool = False) -> tuple[AppliedChain, tuple[str, ...]]:
    """Apply ``edits`` in order; return the applied chain and, if asked, the state fingerprint after each.

    On any failure the edits applied so far are reverted, so the model is left as it was given.
    """
    chain = AppliedChain(lm, tuple(ids), EditStack(lm))
    fingerprints = []
    try:
        for edit in edits:
            chain.stack.push(edit)
            if fingerprint_each:
                fingerprints.append(lm.state_fingerprint())
    except BaseException:
        chain.revert()
        raise
    return chain, tuple(fingerprints)
