"""Copies of parameters taken before they change, and putting them back bit for bit.

``W + d - d`` is not ``W`` in floating point, so every undo in kedit (an edit's revert, the
runner's restore after a sequential run, the pitfalls suite's per-case unwind) copies the
original values back instead of subtracting. This is the one place that does it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from kedit.errors import EditStateError
from kedit.models.loading import LoadedModel


class ParameterSnapshot:
    """The values of named parameters as they were when first recorded (later records of the same name are ignored)."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.originals: dict[str, torch.Tensor] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.originals

    def __len__(self) -> int:
        return len(self.originals)

    def record(self, names: Iterable[str]) -> None:
        """Copy every parameter of ``names`` not yet recorded (call before changing them)."""
        for name in names:
            if name not in self.originals:
                self.originals[name] = self.lm.parameter(name).detach().clone()

    @torch.no_grad()
    def restore(self) -> None:
        """Copy every recorded value back and forget them."""
        for name, original in self.originals.items():
            self.lm.parameter(name).copy_(original)
        self.originals.clear()

    def differing(self) -> list[str]:
        """Names whose current value is not, bit for bit, the recorded one."""
        return [name for name, original in self.originals.items()
                if not torch.equal(self.lm.parameter(name), original)]

    def verify(self) -> None:
        """Raise when a recorded parameter does not hold its recorded value."""
        changed = self.differing()
        if changed:
            raise EditStateError(f"parameter {changed[0]} was not restored to its original value"
                                 + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""))
