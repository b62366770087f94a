"""Edits kept on a model one after another, and taken off again last first.

The one implementation of "apply this edit on top of the earlier ones" that the runner's
sequential mode, ``kedit.edit(mode="sequential")``, the pitfalls suite and the ledger share.
Kinds whose edits accumulate by being applied in turn (``stacks``: weight deltas, module swaps)
are simply applied. A kind that does not stack (a prompt context: a second one would be
concatenated in front of the first) is kept as *one* installed edit: pushing another of the same
kind reverts the installed one and applies :meth:`combine` of all of them, and popping goes back
to the combination of the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kedit.edits.base import Edit
from kedit.edits.snapshot import ParameterSnapshot
from kedit.errors import EditStateError
from kedit.models.loading import LoadedModel


@dataclass(frozen=True)
class _Layer:
    installed: Edit  # what is applied to the model
    parts: tuple[Edit, ...]  # the pushed edits it stands for (one, or several combined)


class EditStack:
    """Edits applied in order on ``lm``. Before the first change of a parameter its value is copied,
    so :meth:`verify_restored` can check, bit for bit, that unwinding gave the original back. Used as
    a context manager it unwinds whatever is still applied on the way out, even after an error."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.layers: list[_Layer] = []
        self.pristine = ParameterSnapshot(lm)
        self.overlays_at_start = lm.overlays

    @property
    def edits(self) -> tuple[Edit, ...]:
        """Every pushed edit still on the model, in the order pushed."""
        return tuple(part for layer in self.layers for part in layer.parts)

    def __len__(self) -> int:
        return sum(len(layer.parts) for layer in self.layers)

    def push(self, edit: Edit) -> None:
        kind = type(edit)
        top = self.layers[-1] if self.layers else None
        if not kind.stacks and top is not None and type(top.installed) is kind:
            self._replace_top(top, (*top.parts, edit))
            return
        if kind.touches_parameters:
            self.pristine.record(edit.touches())
        edit.apply(self.lm)
        self.layers.append(_Layer(edit, (edit,)))

    def _replace_top(self, top: _Layer, parts: tuple[Edit, ...]) -> None:
        kind = type(top.installed)
        combined = parts[0] if len(parts) == 1 else kind.combine(parts)
        top.installed.revert(self.lm)
        self.layers.pop()
        try:
            combined.apply(self.lm)
        except BaseException:
            top.installed.apply(self.lm)
            self.layers.append(top)
            raise
        self.layers.append(_Layer(combined, parts))

    def pop(self) -> Edit:
        """Take the last pushed edit off the model and return it."""
        if not self.layers:
            raise EditStateError("no edit to take off: the stack is empty")
        top = self.layers[-1]
        if len(top.parts) > 1:
            self._replace_top(top, top.parts[:-1])
            return top.parts[-1]
        self.layers.pop()
        top.installed.revert(self.lm)
        return top.installed

    def holds_last(self, edit: Edit) -> bool:
        """Whether ``edit`` is the last edit pushed (and still on the model)."""
        return bool(self.layers) and self.layers[-1].parts[-1] is edit

    @contextmanager
    def pushed(self, edit: Edit) -> Iterator[None]:
        """``edit`` on top of the stack for the block, taken off again afterwards."""
        self.push(edit)
        try:
            yield
        finally:
            self.pop()

    @contextmanager
    def lifted(self, edit: Edit) -> Iterator[None]:
        """``edit`` off the model for the block and back afterwards: popped when it is the last one
        pushed here, reverted when it was applied to the model directly."""
        if self.holds_last(edit):
            self.pop()
            try:
                yield
            finally:
                self.push(edit)
        elif edit.is_applied:
            edit.revert(self.lm)
            try:
                yield
            finally:
                edit.apply(self.lm)
        else:
            raise EditStateError(f"this {edit.method} edit is not on the model; there is nothing to take off")

    def unwind(self) -> None:
        while self.layers:
            self.layers.pop().installed.revert(self.lm)

    def verify_restored(self) -> None:
        """Raise unless every edit is off and the model is bit for bit as before the first push."""
        if self.layers:
            raise EditStateError(f"{len(self)} edit(s) are still applied")
        self.pristine.verify()
        if self.lm.overlays != self.overlays_at_start:
            raise EditStateError("the model's prompt contexts or swapped modules differ from before the edits")

    def __enter__(self) -> EditStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unwind()
