"""Copies of parameters taken before they change, and putting them back bit for bit.

``W + d - d`` is not ``W`` in floating point, so every undo in kedit (an edit's revert, the
runner's restore after a sequential run, the pitfalls suite's per-case unwind) copies the
original values back instead of subtracting. This is the one place that does it.

An :class:`~kedit.edits.stack.EditStack` keeps one snapshot per run of weight edits instead of one
per edit: it restores some names and keeps the rest (``restore(names, keep=True)``, ``forget``), and
two snapshots of the same unchanged value share one copy (``record(..., shared=)``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from kedit.errors import EditStateError
from kedit.models.loading import LoadedModel


def same_bits(first: torch.Tensor, second: torch.Tensor) -> bool:
    """Whether two tensors hold the same bits (``torch.equal`` calls 0.0 and -0.0 equal; this does not)."""
    if first.shape != second.shape or first.dtype != second.dtype or first.device != second.device:
        return False
    return torch.equal(first.reshape(-1).view(torch.uint8), second.reshape(-1).view(torch.uint8))


class ParameterSnapshot:
    """The values of named parameters as they were when first recorded (later records of the same name are ignored)."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.originals: dict[str, torch.Tensor] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.originals

    def __len__(self) -> int:
        return len(self.originals)

    def record(self, names: Iterable[str], shared: ParameterSnapshot | None = None) -> None:
        """Copy every parameter of ``names`` not yet recorded (call before changing them).

        Where ``shared`` holds a name whose recorded value is, bit for bit, the parameter's value now,
        that tensor is kept instead of a new copy (recorded values are never written to).
        """
        for name in names:
            if name in self.originals:
                continue
            current = self.lm.parameter(name).detach()
            held = shared.originals.get(name) if shared is not None else None
            if held is not None and same_bits(held, current):
                self.originals[name] = held
            else:
                self.originals[name] = current.clone()

    @torch.no_grad()
    def restore(self, names: Iterable[str] | None = None, keep: bool = False) -> None:
        """Copy the recorded values of ``names`` (default: all) back; forget them unless ``keep``."""
        chosen = list(self.originals) if names is None else list(names)
        for name in chosen:
            self.lm.parameter(name).copy_(self.originals[name])
        if not keep:
            self.forget(chosen)

    def forget(self, names: Iterable[str]) -> None:
        """Drop the recorded values of ``names`` (those not recorded are ignored)."""
        for name in list(names):
            self.originals.pop(name, None)

    @property
    def nbytes(self) -> int:
        """Bytes of the recorded copies (a copy shared with another snapshot is counted in both)."""
        return sum(original.nbytes for original in self.originals.values())

    def differing(self) -> list[str]:
        """Names whose current value is not, bit for bit, the recorded one."""
        return [name for name, original in self.originals.items()
                if not same_bits(self.lm.parameter(name).detach(), original)]

    def verify(self) -> None:
        """Raise when a recorded parameter does not hold its recorded value."""
        changed = self.differing()
        if changed:
            raise EditStateError(f"parameter {changed[0]} was not restored to its original value"
                                 + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""))
