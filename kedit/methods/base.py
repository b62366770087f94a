"""The method contract: ``compute(lm, requests, hparams) -> Edit``, an ``Edit`` that can be applied,
reverted bit for bit, saved and loaded, and the registry every method is found through.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file

from kedit.errors import EditStateError, KeditError
from kedit.models.loading import LoadedModel
from kedit.paths import atomic_path, sha256_file
from kedit.requests import EditRequest

EDIT_MANIFEST = "edit.json"
DELTAS_FILE = "deltas.safetensors"


@runtime_checkable
class Edit(Protocol):
    method: str

    @property
    def is_applied(self) -> bool: ...

    def apply(self, lm: LoadedModel) -> None: ...

    def revert(self, lm: LoadedModel) -> None: ...

    def save(self, directory: str | Path) -> Path: ...


@dataclass
class WeightEdit:
    """Additive weight deltas ``{parameter name: tensor}`` (in each parameter's own orientation).

    ``apply`` keeps a copy of every parameter it changes and ``revert`` copies it back, so a revert
    is bit-exact (W + d - d is not W in floating point). ``base_fingerprint`` is the fingerprint of
    the model the deltas were computed on; applying to a different model is refused.
    """

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    deltas: dict[str, torch.Tensor]
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _originals: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def is_applied(self) -> bool:
        return self._originals is not None

    def _check_model(self, lm: LoadedModel) -> None:
        if lm.fingerprint != self.base_fingerprint:
            raise EditStateError(
                f"this {self.method} edit was computed on model {self.base_fingerprint[:12]}, "
                f"not on {lm.fingerprint[:12]} ({lm.source}); load the model it was made for"
            )
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
        originals = {}
        for name, delta in self.deltas.items():
            parameter = lm.parameter(name)
            originals[name] = parameter.detach().clone()
            parameter.add_(delta.to(device=parameter.device, dtype=parameter.dtype))
        self._originals = originals

    @torch.no_grad()
    def revert(self, lm: LoadedModel) -> None:
        if not self.is_applied:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        for name, original in self._originals.items():
            lm.parameter(name).copy_(original)
        self._originals = None

    def manifest(self) -> dict[str, Any]:
        return {
            "kind": "weight-deltas",
            "method": self.method,
            "base_fingerprint": self.base_fingerprint,
            "hparams": dict(self.hparams),
            "requests": [r.to_dict() for r in self.requests],
            "parameters": {name: list(delta.shape) for name, delta in self.deltas.items()},
            "info": self.info,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``deltas.safetensors`` and ``edit.json`` (with the deltas' sha256) atomically."""
        directory = Path(directory)
        with atomic_path(directory) as building:
            building.mkdir(parents=True)
            tensors = {name: delta.detach().cpu().contiguous() for name, delta in self.deltas.items()}
            save_file(tensors, str(building / DELTAS_FILE))
            manifest = self.manifest() | {"files": {DELTAS_FILE: sha256_file(building / DELTAS_FILE)}}
            (building / EDIT_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> WeightEdit:
        directory = Path(directory)
        manifest_path = directory / EDIT_MANIFEST
        if not manifest_path.is_file():
            raise KeditError(f"{directory} holds no saved edit ({EDIT_MANIFEST} is missing)")
        manifest = json.loads(manifest_path.read_text())
        deltas_path = directory / DELTAS_FILE
        expected = manifest.get("files", {}).get(DELTAS_FILE)
        if not deltas_path.is_file() or sha256_file(deltas_path) != expected:
            raise KeditError(f"{deltas_path} is missing or does not match the sha256 in {EDIT_MANIFEST} (tampered or truncated)")
        return cls(
            method=manifest["method"],
            requests=tuple(EditRequest.from_dict(r) for r in manifest["requests"]),
            hparams=manifest["hparams"],
            deltas=load_file(str(deltas_path)),
            base_fingerprint=manifest["base_fingerprint"],
            info=manifest.get("info", {}),
        )


def load_edit(directory: str | Path) -> Edit:
    """Load a saved edit of any kind from its folder."""
    manifest_path = Path(directory) / EDIT_MANIFEST
    if not manifest_path.is_file():
        raise KeditError(f"{directory} holds no saved edit ({EDIT_MANIFEST} is missing)")
    kind = json.loads(manifest_path.read_text()).get("kind")
    if kind == "weight-deltas":
        return WeightEdit.load(directory)
    if kind == "prompt-context":
        from kedit.methods.ike import IKEEdit  # imported here: ike.py imports this module

        return IKEEdit.load(directory)
    raise KeditError(f"{directory}: unknown edit kind {kind!r}")


class Method(Protocol):
    """What a registered method provides.

    ``batch_capable`` methods compute many requests jointly in one ``compute`` call (MEMIT,
    AlphaEdit, FT); the others are looped request by request on the progressively edited model.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    hparams_class: ClassVar[type]
    batch_capable: ClassVar[bool]

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> Any: ...

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: Any) -> Edit: ...


_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a method to the registry under ``name``."""
    def decorate(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise KeditError(f"two methods are registered as {name!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def registered_methods() -> Mapping[str, type]:
    """Read-only view of the registry (importing :mod:`kedit.methods` fills it)."""
    return MappingProxyType(_REGISTRY)


def get_method(name: str) -> Method:
    methods = registered_methods()
    if name not in methods:
        raise KeditError(f"unknown method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]()


def hparams_dict(hparams: Any) -> dict[str, Any]:
    return dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams)


class EditSession:
    """A method bound to one model and one set of hyperparameters for a series of edits.

    It holds what is computed once and reused across edits (statistics, projectors) and state
    that accumulates (AlphaEdit's keys of earlier edits). Methods with such needs return their own
    subclass from ``open_session(lm, hparams)``; the default just calls ``compute``. Callers must
    call :meth:`applied` after applying each edit the session computed, so the state follows the
    model.
    """

    def __init__(self, method: Method, lm: LoadedModel, hparams: Any) -> None:
        self.method = method
        self.lm = lm
        self.hparams = hparams

    def compute(self, requests: Sequence[EditRequest]) -> Edit:
        return self.method.compute(self.lm, requests, self.hparams)

    def applied(self, edit: Edit) -> None:
        """Called once ``edit`` (computed by this session) is applied to the model."""


def open_session(method: Method, lm: LoadedModel, hparams: Any) -> EditSession:
    """The method's own session when it defines one, else the stateless default."""
    opener = getattr(method, "open_session", None)
    return opener(lm, hparams) if opener is not None else EditSession(method, lm, hparams)
