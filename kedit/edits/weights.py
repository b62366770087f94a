"""The ``weight-deltas`` kind: additive parameter changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from kedit.edits.snapshot import ParameterSnapshot
from kedit.errors import EditStateError
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest

WEIGHT_DELTAS = "weight-deltas"
DELTAS_FILE = "deltas.safetensors"


@register_kind(WEIGHT_DELTAS)
@dataclass
class WeightEdit:
    """Additive weight deltas ``{parameter name: tensor}`` (in each parameter's own orientation).

    ``apply`` keeps a copy of every parameter it changes and ``revert`` copies it back, so a revert
    is bit-exact (W + d - d is not W in floating point). ``base_fingerprint`` is the fingerprint of
    the model the deltas were computed on; applying to a different model is refused.
    """

    kind: ClassVar[str]
    stacks: ClassVar[bool] = True
    touches_parameters: ClassVar[bool] = True
    export_refusal: ClassVar[str | None] = None

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    deltas: dict[str, torch.Tensor]
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _snapshot: ParameterSnapshot | None = field(default=None, repr=False)

    @property
    def is_applied(self) -> bool:
        return self._snapshot is not None

    def touches(self) -> tuple[str, ...]:
        return tuple(self.deltas)

    def changes(self) -> list[tuple[str, str]]:
        return [(name, f"{'×'.join(map(str, delta.shape))} delta, ‖delta‖ = {float(delta.float().norm()):.4g}")
                for name, delta in self.deltas.items()]

    def _check_model(self, lm: LoadedModel) -> None:
        check_base(self, lm)
        for name, delta in self.deltas.items():
            try:
                parameter = lm.parameter(name)
            except AttributeError as error:
                raise EditStateError(f"the model has no parameter {name!r} to edit") from error
            if parameter.shape != delta.shape:
                raise EditStateError(f"{name}: delta shape {tuple(delta.shape)} != parameter {tuple(parameter.shape)}")

    @torch.no_grad()
    def apply(self, lm: LoadedModel) -> None:
        if self.is_applied:
            raise EditStateError(f"this {self.method} edit is already applied")
        self._check_model(lm)
        snapshot = ParameterSnapshot(lm)
        snapshot.record(self.deltas)
        for name, delta in self.deltas.items():
            parameter = lm.parameter(name)
            parameter.add_(delta.to(device=parameter.device, dtype=parameter.dtype))
        self._snapshot = snapshot

    def revert(self, lm: LoadedModel) -> None:
        if not self.is_applied:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        self._snapshot.restore()
        self._snapshot = None

    def manifest(self) -> dict[str, Any]:
        return manifest_of(self, parameters={name: list(delta.shape) for name, delta in self.deltas.items()})

    def save(self, directory: str | Path) -> Path:
        """Write ``deltas.safetensors`` and ``edit.json`` (with the deltas' sha256) atomically."""
        tensors = {name: delta.detach().cpu().contiguous() for name, delta in self.deltas.items()}
        return save_edit_files(directory, self.manifest(), lambda folder: save_file(tensors, str(folder / DELTAS_FILE)))

    @classmethod
    def load(cls, directory: str | Path) -> WeightEdit:
        manifest = read_manifest(directory, WEIGHT_DELTAS)
        check_files(directory, manifest)
        return cls(
            method=manifest["method"],
            requests=requests_of(manifest),
            hparams=manifest["hparams"],
            deltas=load_file(str(Path(directory) / DELTAS_FILE)),
            base_fingerprint=manifest["base_fingerprint"],
            info=manifest.get("info", {}),
        )

    @classmethod
    def combine(cls, edits: Sequence[WeightEdit]) -> WeightEdit:
        """One edit holding the summed deltas (its apply gives the chain's weights up to float rounding)."""
        check_combinable(cls, edits)
        totals: dict[str, torch.Tensor] = {}
        for edit in edits:
            for name, delta in edit.deltas.items():
                totals[name] = totals[name] + delta if name in totals else delta.clone()
        return cls(method=edits[0].method, requests=tuple(r for e in edits for r in e.requests),
                   hparams=dict(edits[0].hparams), deltas=totals, base_fingerprint=edits[0].base_fingerprint,
                   info={"combined": len(edits), "steps": [dict(e.info) for e in edits]})
