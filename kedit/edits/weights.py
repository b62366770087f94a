"""The ``weight-deltas`` kind: additive parameter changes, each held dense or factored (ΔW = U Vᵀ)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from kedit.edits.base import (
    check_base,
    check_combinable,
    check_files,
    manifest_of,
    read_manifest,
    register_kind,
    requests_of,
    save_edit_files,
)
from kedit.edits.deltas import Delta, Deltas, LowRankDelta, as_dense, dense_nbytes
from kedit.edits.snapshot import ParameterSnapshot
from kedit.errors import EditStateError, KeditError
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest

WEIGHT_DELTAS = "weight-deltas"
DELTAS_FILE = "deltas.safetensors"
FACTORED_FIELD = "factored"  # edit.json: {name: {"rank": r, "dtype": dense dtype}} for the factored deltas
FACTOR_KEYS = ("#U", "#V")  # a factored delta's tensors in deltas.safetensors: f"{name}#U", f"{name}#V"


@register_kind(WEIGHT_DELTAS)
@dataclass
class WeightEdit:
    """Additive weight deltas ``{parameter name: change}`` (in each parameter's own orientation).

    A change is a dense tensor or a :class:`~kedit.edits.deltas.LowRankDelta`; ``deltas`` is a
    :class:`~kedit.edits.deltas.Deltas` mapping in which every entry reads as a dense tensor (a
    factored one is formed on each read, one parameter at a time).

    ``apply`` keeps a copy of every parameter it changes and ``revert`` copies it back, so a revert
    is bit-exact (W + d - d is not W in floating point). An :class:`~kedit.edits.stack.EditStack`
    applies it without a copy of its own (:meth:`add_to`; the stack keeps the copies and takes it
    off). ``base_fingerprint`` is the fingerprint of the model the deltas were computed on;
    applying to a different model is refused.
    """

    kind: ClassVar[str]
    stacks: ClassVar[bool] = True
    touches_parameters: ClassVar[bool] = True
    export_refusal: ClassVar[str | None] = None
    additive: ClassVar[bool] = True  # an EditStack may add it with add_to and take it off from its own copies

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    deltas: Mapping[str, Delta]
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _snapshot: ParameterSnapshot | None = field(default=None, repr=False)
    _stacked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.deltas, Deltas):
            self.deltas = Deltas(self.deltas)

    @property
    def is_applied(self) -> bool:
        return self._snapshot is not None or self._stacked

    def touches(self) -> tuple[str, ...]:
        return tuple(self.deltas)

    def changes(self) -> list[tuple[str, str]]:
        rows = []
        for name, delta in self.deltas.items():  # one dense matrix at a time
            form = self.deltas.form(name)
            rank = f" (rank {form.rank}, factored)" if isinstance(form, LowRankDelta) else ""
            rows.append((name, f"{'×'.join(map(str, delta.shape))} delta{rank}, ‖delta‖ = {float(delta.float().norm()):.4g}"))
        return rows

    def check_model(self, lm: LoadedModel) -> None:
        """Refuse a model other than the base, or one without a parameter of each delta's name and shape."""
        check_base(self, lm)
        for name in self.deltas:
            try:
                parameter = lm.parameter(name)
            except AttributeError as error:
                raise EditStateError(f"the model has no parameter {name!r} to edit") from error
            shape = self.deltas.shape(name)
            if parameter.shape != shape:
                raise EditStateError(f"{name}: delta shape {tuple(shape)} != parameter {tuple(parameter.shape)}")

    @torch.no_grad()
    def add_to(self, lm: LoadedModel, names: Iterable[str] | None = None) -> None:
        """Add the deltas of ``names`` (default: all, in order) to the model's parameters and keep nothing.

        The one place a weight delta meets a parameter: ``apply`` and the stack's re-applications
        call it, so the same delta always adds the same bits.
        """
        for name in self.deltas if names is None else names:
            parameter = lm.parameter(name)
            parameter.add_(self.deltas.dense_on(name, parameter.device, parameter.dtype))

    def mark_stacked(self, stacked: bool) -> None:
        """Set by an :class:`~kedit.edits.stack.EditStack` that added this edit through :meth:`add_to`
        (it is then applied, and only the stack can take it off)."""
        self._stacked = stacked

    def apply(self, lm: LoadedModel) -> None:
        if self.is_applied:
            raise EditStateError(f"this {self.method} edit is already applied")
        self.check_model(lm)
        snapshot = ParameterSnapshot(lm)
        snapshot.record(self.deltas)
        self.add_to(lm)
        self._snapshot = snapshot

    def revert(self, lm: LoadedModel) -> None:
        if self._stacked:
            raise EditStateError(f"this {self.method} edit was put on the model by an EditStack, which keeps the "
                                 "copies of the parameters; take it off through the stack (pop or lifted)")
        if not self.is_applied:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        self._snapshot.restore()
        self._snapshot = None

    def manifest(self) -> dict[str, Any]:
        factored = {name: {"rank": form.rank, "dtype": _dtype_name(form.dtype)}
                    for name, form in self.deltas.forms.items() if isinstance(form, LowRankDelta)}
        return manifest_of(self, parameters={name: list(self.deltas.shape(name)) for name in self.deltas},
                           **({FACTORED_FIELD: factored} if factored else {}))

    def save(self, directory: str | Path) -> Path:
        """Write ``deltas.safetensors`` (dense deltas under their names, factored ones as ``name#U`` and
        ``name#V``) and ``edit.json`` (with the file's sha256) atomically."""
        tensors: dict[str, torch.Tensor] = {}
        for name, form in self.deltas.forms.items():
            if isinstance(form, LowRankDelta):
                tensors[name + FACTOR_KEYS[0]] = form.u.cpu().contiguous()
                tensors[name + FACTOR_KEYS[1]] = form.v.cpu().contiguous()
            else:
                tensors[name] = form.detach().cpu().contiguous()
        return save_edit_files(directory, self.manifest(), lambda folder: save_file(tensors, str(folder / DELTAS_FILE)))

    @classmethod
    def load(cls, directory: str | Path) -> WeightEdit:
        """A saved edit; files written before factored deltas existed (all dense) load as they always did."""
        manifest = read_manifest(directory, WEIGHT_DELTAS)
        check_files(directory, manifest)
        tensors = load_file(str(Path(directory) / DELTAS_FILE))
        return cls(
            method=manifest["method"],
            requests=requests_of(manifest),
            hparams=manifest["hparams"],
            deltas=_stored_deltas(Path(directory), manifest, tensors),
            base_fingerprint=manifest["base_fingerprint"],
            info=manifest.get("info", {}),
        )

    @classmethod
    def combine(cls, edits: Sequence[WeightEdit]) -> WeightEdit:
        """One edit holding, per parameter, the sum of the edits' deltas.

        Floating point: applying the combination gives the chain's weights up to rounding, not bit for
        bit — the chain adds each delta to the weights in turn, W + d1 + d2, the combination adds
        their sum once, W + (d1 + d2). Where every summed delta is factored (same dtypes) and the
        factors side by side (ΣU_iV_iᵀ = [U_1 …][V_1 …]ᵀ, exact in exact arithmetic) are smaller
        than the dense matrix, the sum is kept that way; its dense form is one product, rounded
        differently again from a dense sum. Otherwise the deltas are formed dense one at a time and
        summed in edit order, as before factored deltas existed (dense inputs give the same bits as
        then).
        """
        check_combinable(cls, edits)
        names = list(dict.fromkeys(name for edit in edits for name in edit.deltas))
        totals = {name: _summed([edit.deltas.form(name) for edit in edits if name in edit.deltas]) for name in names}
        return cls(method=edits[0].method, requests=tuple(r for e in edits for r in e.requests),
                   hparams=dict(edits[0].hparams), deltas=totals, base_fingerprint=edits[0].base_fingerprint,
                   info={"combined": len(edits), "steps": [dict(e.info) for e in edits]})


def _summed(forms: Sequence[Delta]) -> Delta:
    """Σ forms (see :meth:`WeightEdit.combine` for the floating-point behaviour)."""
    factored = [form for form in forms if isinstance(form, LowRankDelta)]
    if len(factored) == len(forms) and len({(f.u.dtype, f.u.device, f.dtype) for f in factored}) == 1:
        if len(forms) == 1:
            return forms[0]
        rank = sum(form.rank for form in factored)
        rows, cols = factored[0].shape
        if rank * (rows + cols) * factored[0].u.element_size() < dense_nbytes((rows, cols), factored[0].dtype):
            return LowRankDelta.concatenate(factored)
    total = as_dense(forms[0]).clone()
    for form in forms[1:]:
        total = total + as_dense(form)
    return total


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _stored_deltas(directory: Path, manifest: Mapping[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Delta]:
    """The deltas of a saved edit: its factored ones (listed in ``edit.json``) from their factors, the rest dense."""
    factored = manifest.get(FACTORED_FIELD) or {}
    where = directory / DELTAS_FILE
    deltas: dict[str, Delta] = {}
    for name, entry in factored.items():
        keys = [name + suffix for suffix in FACTOR_KEYS]
        missing = [key for key in keys if key not in tensors]
        if missing:
            raise KeditError(f"{where}: the factored delta of {name} lacks tensor {missing[0]!r}; the edit is damaged")
        dtype = getattr(torch, str(entry.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise KeditError(f"{directory / 'edit.json'}: {FACTORED_FIELD}.{name}.dtype {entry.get('dtype')!r} is not "
                             "a torch dtype (e.g. 'float32'); the edit is damaged")
        try:
            deltas[name] = LowRankDelta(tensors.pop(keys[0]), tensors.pop(keys[1]), dtype)
        except ValueError as error:
            raise KeditError(f"{where}: the factors of {name} do not fit ({error}); the edit is damaged") from None
    deltas.update(tensors)
    shapes = manifest.get("parameters")
    if not isinstance(shapes, Mapping):
        return deltas
    for name, shape in shapes.items():
        if name not in deltas or list(deltas[name].shape) != list(shape):
            found = list(deltas[name].shape) if name in deltas else "nothing"
            raise KeditError(f"{where}: {name} should be a {shape} delta (edit.json 'parameters') but the file "
                             f"holds {found}; the edit is damaged")
    # in the order the edit had (its manifest's), not the file's
    return {name: deltas[name] for name in [*shapes, *(name for name in deltas if name not in shapes)]}
