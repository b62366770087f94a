"""Edits kept on a model one after another, and taken off again last first.

The one implementation of "apply this edit on top of the earlier ones" that the runner's
sequential mode, ``kedit.edit(mode="sequential")``, the pitfalls suite and the ledger share.
Kinds whose edits accumulate by being applied in turn (``stacks``: weight deltas, module swaps)
are simply applied. A kind that does not stack (a prompt context: a second one would be
concatenated in front of the first) is kept as *one* installed edit: pushing another of the same
kind reverts the installed one and applies :meth:`combine` of all of them, and popping goes back
to the combination of the rest.

**Weight deltas are kept lean.** An edit applied on its own keeps a copy of every parameter it
changes (a MEND edit of SmolLM2: nine 576×1536 matrices, 32 MB), so a thousand kept edits would
hold a thousand copies. Here an additive edit (:class:`AdditiveEdit`: weight deltas) is added
without a copy of its own; consecutive additive layers form a *run*, which keeps one copy of each
parameter as it was before the run first touched it. Taking the top edit off copies the originals
of the parameters it touched back and adds, in the order they were pushed, the deltas the run's
remaining edits have for those parameters: floating-point addition of the same tensors in the same
order gives the same bits, so the result is bit for bit what a copy taken before the edit would
restore. The edit pushed last also keeps a copy of what it changed (one edit's worth, dropped at
the next push), so the frequent push-then-pop (outcome checks, evaluation) costs no re-adding;
popping deeper re-adds the run's edits below (cost: one delta per remaining edit of the run that
touches those parameters). Any other layer (a module swap, a prompt context) ends the run: a later
weight edit starts a new one, with its own copies, so an edit is never re-added across a layer that
may have moved parameters. Memory: the originals once, the top edit's copy, and each edit's own
deltas (factored ones: r·(rows + cols) numbers instead of rows·cols).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from kedit.edits.base import Edit
from kedit.edits.snapshot import ParameterSnapshot
from kedit.errors import EditStateError
from kedit.models.loading import LoadedModel


@runtime_checkable
class AdditiveEdit(Protocol):
    """An edit whose whole change is deltas added to the parameters ``touches()`` names, so the
    stack can add them without a copy per edit (:class:`kedit.edits.weights.WeightEdit`). A subclass
    that changes what apply and revert do sets ``additive = False`` and is applied and reverted by
    itself."""

    additive: ClassVar[bool]

    def check_model(self, lm: LoadedModel) -> None: ...

    def add_to(self, lm: LoadedModel, names: Iterable[str] | None = None) -> None: ...

    def mark_stacked(self, stacked: bool) -> None: ...


def _additive(edit: Edit) -> bool:
    kind = type(edit)
    return kind.stacks and kind.touches_parameters and getattr(kind, "additive", False) and isinstance(edit, AdditiveEdit)


class _Run:
    """Consecutive additive layers, and the value each parameter they touch had before the first of them touched it."""

    def __init__(self, lm: LoadedModel) -> None:
        self.originals = ParameterSnapshot(lm)


@dataclass(frozen=True)
class _Layer:
    installed: Edit  # what is applied to the model
    parts: tuple[Edit, ...]  # the pushed edits it stands for (one, or several combined)
    run: _Run | None = None  # an additive layer's run (None: the edit applied and reverts itself)


class EditStack:
    """Edits applied in order on ``lm``. Before the first change of a parameter its value is copied,
    so :meth:`verify_restored` can check, bit for bit, that unwinding gave the original back. Used as
    a context manager it unwinds whatever is still applied on the way out, even after an error."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.layers: list[_Layer] = []
        self.pristine = ParameterSnapshot(lm)
        self.overlays_at_start = lm.overlays
        self._top_copy: tuple[_Layer, ParameterSnapshot] | None = None  # the last additive push and what it changed

    @property
    def edits(self) -> tuple[Edit, ...]:
        """Every pushed edit still on the model, in the order pushed."""
        return tuple(part for layer in self.layers for part in layer.parts)

    def __len__(self) -> int:
        return sum(len(layer.parts) for layer in self.layers)

    @property
    def copies_nbytes(self) -> int:
        """Bytes of the parameter copies the stack holds (a copy shared by several is counted once)."""
        snapshots = [self.pristine, *{id(layer.run): layer.run.originals for layer in self.layers if layer.run}.values()]
        if self._top_copy is not None:
            snapshots.append(self._top_copy[1])
        unique = {(t.untyped_storage().data_ptr(), t.device): t.nbytes for s in snapshots for t in s.originals.values()}
        return sum(unique.values())

    def push(self, edit: Edit) -> None:
        kind = type(edit)
        top = self.layers[-1] if self.layers else None
        if not kind.stacks and top is not None and type(top.installed) is kind:
            self._replace_top(top, (*top.parts, edit))
            return
        if _additive(edit):
            self._push_additive(edit, top)
            return
        if kind.touches_parameters:
            self.pristine.record(edit.touches())
        edit.apply(self.lm)
        self.layers.append(_Layer(edit, (edit,)))

    def _push_additive(self, edit: AdditiveEdit, top: _Layer | None) -> None:
        if edit.is_applied:
            raise EditStateError(f"this {edit.method} edit is already applied")
        edit.check_model(self.lm)
        names = edit.touches()
        run = top.run if top is not None and top.run is not None else _Run(self.lm)
        self.pristine.record(names)
        run.originals.record(names, shared=self.pristine)
        copy = ParameterSnapshot(self.lm)
        copy.record(names, shared=run.originals)
        self._top_copy = None
        edit.add_to(self.lm, names)
        edit.mark_stacked(True)
        layer = _Layer(edit, (edit,), run)
        self.layers.append(layer)
        self._top_copy = (layer, copy)

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
        if top.run is None:
            top.installed.revert(self.lm)
            return top.installed
        names = top.installed.touches()
        if self._top_copy is not None and self._top_copy[0] is top:
            self._top_copy[1].restore()  # the values right before this edit: nothing to re-add
            self._release_names(top.run, names)
        else:
            self._rebuild(top.run, names)
        self._top_copy = None
        top.installed.mark_stacked(False)
        return top.installed

    def _rebuild(self, run: _Run, names: Iterable[str]) -> None:
        """Parameters ``names`` set to their value before ``run`` plus, in push order, the deltas the
        run's layers still on the stack hold for them."""
        wanted = tuple(names)
        run.originals.restore(wanted, keep=True)
        for layer in self.layers:
            if layer.run is run:
                touched = [name for name in layer.installed.touches() if name in wanted]
                if touched:
                    layer.installed.add_to(self.lm, touched)
        self._release_names(run, wanted)

    def _release_names(self, run: _Run, names: Iterable[str]) -> None:
        """Forget the run's originals of ``names`` that none of its layers still on the stack touches."""
        still = {name for layer in self.layers if layer.run is run for name in layer.installed.touches()}
        run.originals.forget(name for name in names if name not in still)

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
        pushed here; taken out of the middle when it is an additive edit of the top run (the stack
        must be as it was when the block ends); reverted when it was applied to the model directly."""
        index = next((i for i, layer in enumerate(self.layers) if layer.run is not None and layer.installed is edit),
                     None)
        if self.holds_last(edit):
            self.pop()
            try:
                yield
            finally:
                self.push(edit)
        elif index is not None:
            with self._lifted_from_middle(index):
                yield
        elif edit.is_applied:
            edit.revert(self.lm)
            try:
                yield
            finally:
                edit.apply(self.lm)
        else:
            raise EditStateError(f"this {edit.method} edit is not on the model; there is nothing to take off")

    @contextmanager
    def _lifted_from_middle(self, index: int) -> Iterator[None]:
        layer = self.layers[index]
        above = self.layers[index + 1:]
        if any(other.run is not layer.run for other in above):
            raise EditStateError(f"this {layer.installed.method} edit sits under a module swap or prompt context on "
                                 "the stack; take the later edits off first")
        names = layer.installed.touches()
        self._top_copy = None  # re-adding below the top changes what the top edit's copy would restore
        del self.layers[index]
        remaining = [id(other) for other in self.layers]
        self._rebuild(layer.run, names)
        layer.installed.mark_stacked(False)
        try:
            yield
        finally:
            if [id(other) for other in self.layers] != remaining:
                raise EditStateError("the stack changed while an edit was lifted out of its middle; it cannot be put back")
            self._top_copy = None
            layer.run.originals.record(names, shared=self.pristine)  # those forgotten hold their original again
            self.layers.insert(index, layer)
            layer.installed.mark_stacked(True)
            self._rebuild(layer.run, names)

    def unwind(self) -> None:
        """Take every edit off, last first (a run of weight edits at once: its originals copied back)."""
        self._top_copy = None
        while self.layers:
            top = self.layers[-1]
            if top.run is None:
                self.layers.pop().installed.revert(self.lm)
                continue
            while self.layers and self.layers[-1].run is top.run:
                self.layers.pop().installed.mark_stacked(False)
            top.run.originals.restore()

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
