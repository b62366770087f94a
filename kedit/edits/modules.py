"""The ``module-swap`` kind: modules put in the place of the model's own (wrappers with a memory,
adapters, routers that send some inputs to another model).

A swap is stored as a recipe, not as a live module: the path of the submodule it replaces, the
name of a registered *swap module* class, its JSON config and its own tensors. ``apply`` builds the
replacement around the module found at that path (so the edit applies to any load of the same
base model), puts it in place and keeps the original object; ``revert`` puts the original object
back, so the model is exactly as before (nothing was written into its weights).

A swap module class is an ``nn.Module`` registered with :func:`register_swap_module` that
provides ``swap_config()`` (JSON-able), ``swap_state()`` (its own tensors, not those of the module
it wraps) and ``rebuild(config, state, replaced)`` (a classmethod).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

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
from kedit.errors import EditStateError, KeditError
from kedit.models.loading import LoadedModel
from kedit.registry import Registry
from kedit.requests import EditRequest

MODULE_SWAP = "module-swap"
STATE_FILE = "modules.safetensors"


class SwapModule(Protocol):
    swap_name: ClassVar[str]

    def swap_config(self) -> dict[str, Any]: ...

    def swap_state(self) -> dict[str, torch.Tensor]: ...

    @classmethod
    def rebuild(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], replaced: nn.Module) -> nn.Module: ...


_SWAP_MODULES = Registry("swap module", "swap_name")


def register_swap_module(name: str) -> Callable[[type], type]:
    """Class decorator: ``name`` is what a saved swap calls the class that rebuilds it."""
    return _SWAP_MODULES.register(name)


def swap_modules() -> Mapping[str, type]:
    return _SWAP_MODULES.view()


@dataclass(frozen=True)
class ModuleSwap:
    """One replacement: build ``module`` (a registered swap module) around the submodule at ``path``."""

    path: str
    module: str
    config: Mapping[str, Any]
    state: Mapping[str, torch.Tensor]

    def build(self, replaced: nn.Module) -> nn.Module:
        cls = swap_modules().get(self.module)
        if cls is None:
            raise KeditError(f"swap module {self.module!r} is not registered (known: "
                             f"{', '.join(sorted(swap_modules())) or 'none'}); import the method that defines it")
        return cls.rebuild(self.config, self.state, replaced)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "module": self.module, "config": dict(self.config),
                "state": {name: list(t.shape) for name, t in self.state.items()}}


def swap_of(path: str, module: nn.Module) -> ModuleSwap:
    """The recipe of a built swap module (what ``apply`` will rebuild)."""
    return ModuleSwap(path, module.swap_name, module.swap_config(),
                      {name: t.detach().cpu().contiguous() for name, t in module.swap_state().items()})


@dataclass(frozen=True)
class _Installed:
    path: str
    original: nn.Module
    replacement: nn.Module


@register_kind(MODULE_SWAP)
@dataclass(eq=False)
class ModuleSwapEdit:
    """Submodules replaced in order; reverted last first by putting the original objects back."""

    kind: ClassVar[str]
    stacks: ClassVar[bool] = True
    touches_parameters: ClassVar[bool] = False
    export_refusal: ClassVar[str | None] = (
        "puts modules into the model that a checkpoint of its architecture cannot hold; save the edit "
        "(kedit edit --save DIR) or keep it in a ledger, and load it with kedit.load_edit")

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    swaps: tuple[ModuleSwap, ...]
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _installed: list[_Installed] | None = field(default=None, repr=False)
    _digest: str = field(default="", repr=False)

    @property
    def is_applied(self) -> bool:
        return self._installed is not None

    def touches(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(swap.path for swap in self.swaps))

    def changes(self) -> list[tuple[str, str]]:
        return [(swap.path, f"replaced by {swap.module} ({', '.join(f'{n} {chr(215).join(map(str, t.shape))}' for n, t in swap.state.items()) or 'no tensors'})")
                for swap in self.swaps]

    def content_digest(self) -> str:
        """sha256 over the recipe: paths, module names, configs and the bytes of every state tensor."""
        if not self._digest:
            digest = hashlib.sha256(json.dumps([s.describe() for s in self.swaps], sort_keys=True).encode())
            for swap in self.swaps:
                for name in sorted(swap.state):
                    tensor = swap.state[name].detach().cpu().contiguous().reshape(-1)
                    digest.update(name.encode())
                    digest.update(tensor.view(torch.uint8).numpy().tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def apply(self, lm: LoadedModel) -> None:
        if self.is_applied:
            raise EditStateError(f"this {self.method} edit is already applied")
        check_base(self, lm)
        installed: list[_Installed] = []
        try:
            for swap in self.swaps:
                try:
                    original = lm.module(swap.path)
                except AttributeError as error:
                    raise EditStateError(f"the model has no module {swap.path!r} to swap") from error
                replacement = swap.build(original)
                reference = next(original.parameters(), None)
                if reference is not None:
                    replacement = replacement.to(device=reference.device)
                lm.model.set_submodule(swap.path, replacement)
                installed.append(_Installed(swap.path, original, replacement))
        except BaseException:
            for done in reversed(installed):
                lm.model.set_submodule(done.path, done.original)
            raise
        lm.push_overlay(self.content_digest())
        self._installed = installed

    def revert(self, lm: LoadedModel) -> None:
        if not self.is_applied:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        # last swap first: a later swap of the same path wraps the earlier one, so each is on top when undone
        last = self._installed[-1]
        if lm.module(last.path) is not last.replacement:
            raise EditStateError(f"{last.path} no longer holds this edit's module; revert the later edits first")
        lm.pop_overlay(self.content_digest())
        for done in reversed(self._installed):
            if lm.module(done.path) is not done.replacement:
                raise EditStateError(f"{done.path} does not hold the module this edit put there; the model was "
                                     "changed behind the edit's back")
            lm.model.set_submodule(done.path, done.original)
        self._installed = None

    def manifest(self) -> dict[str, Any]:
        return manifest_of(self, swaps=[swap.describe() for swap in self.swaps])

    def save(self, directory: str | Path) -> Path:
        tensors = {f"{number}/{name}": tensor.contiguous()
                   for number, swap in enumerate(self.swaps) for name, tensor in swap.state.items()}

        def write(folder: Path) -> None:
            save_file(tensors, str(folder / STATE_FILE))

        return save_edit_files(directory, self.manifest(), write)

    @classmethod
    def load(cls, directory: str | Path) -> ModuleSwapEdit:
        manifest = read_manifest(directory, MODULE_SWAP)
        check_files(directory, manifest)
        tensors = load_file(str(Path(directory) / STATE_FILE))
        swaps = []
        for number, described in enumerate(manifest["swaps"]):
            prefix = f"{number}/"
            state = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
            swaps.append(ModuleSwap(described["path"], described["module"], described["config"], state))
        return cls(method=manifest["method"], requests=requests_of(manifest),
                   hparams=manifest["hparams"], swaps=tuple(swaps), base_fingerprint=manifest["base_fingerprint"],
                   info=manifest.get("info", {}))

    @classmethod
    def combine(cls, edits: Sequence[ModuleSwapEdit]) -> ModuleSwapEdit:
        """One edit making every swap in order (a later swap of the same path wraps the earlier one)."""
        check_combinable(cls, edits)
        return cls(method=edits[0].method, requests=tuple(r for e in edits for r in e.requests),
                   hparams=dict(edits[0].hparams), swaps=tuple(s for e in edits for s in e.swaps),
                   base_fingerprint=edits[0].base_fingerprint,
                   info={"combined": len(edits), "steps": [dict(e.info) for e in edits]})
