"""Modules that stand in for one of the model's own, for the memory editors (GRACE, WISE).

A :class:`TransparentWrapper` takes the place of ``base`` in the module tree while showing the same
parameters, buffers and children under the same names (the very same objects, registered again
on the wrapper), and reaches every other attribute of ``base`` (``in_features``, ``nf``,
``attention_type``, ...) through it. So while a wrapper is installed, ``lm.parameter(name)``,
weight edits of those parameters, weight fingerprints and anatomy paths all work unchanged;
reverting the swap puts the original object back.

The original object itself is kept outside the module tree (it is not a child), so nothing is
registered twice. A wrapper's ``forward`` calls ``self.base(...)``, i.e. exactly the original
computation, and changes its result where its memory says so.

Memory wrappers are rebuilt edit by edit: a new edit's wrapper is built *over* the previous one
(:meth:`kedit.edits.modules.ModuleSwap.build` passes it as ``replaced``), takes its memory, adds
the edit's part and wraps the same original module, so a sequence of edits is one wrapper deep.
Each edit's part is checked against the memory it was computed on through :func:`chain_digest`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from kedit.models.loading import LoadedModel

EMPTY_MEMORY = "empty"  # the chain digest of a memory that holds nothing yet


class TransparentWrapper(nn.Module):
    """Stands in for ``base`` with the same parameters, buffers and children (see the module docstring)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        if isinstance(base, TransparentWrapper):
            raise TypeError("a transparent wrapper must be built over the original module, not another wrapper")
        for name, parameter in base.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        non_persistent = getattr(base, "_non_persistent_buffers_set", set())
        for name, buffer in base.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in non_persistent)
        for name, child in base.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_base", base)  # outside _modules: not registered twice

    @property
    def base(self) -> nn.Module:
        """The original module this wrapper stands in for."""
        return self.__dict__["_base"]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_base")
            if base is None:
                raise
            return getattr(base, name)


def original_of(module: nn.Module) -> nn.Module:
    """The model's own module behind ``module`` (itself when it is not a wrapper)."""
    return module.base if isinstance(module, TransparentWrapper) else module


@contextlib.contextmanager
def swapped(lm: LoadedModel, path: str, module: nn.Module) -> Iterator[None]:
    """``module`` at ``path`` for the block; whatever was there is put back afterwards (also on errors)."""
    previous = lm.module(path)
    lm.model.set_submodule(path, module)
    try:
        yield
    finally:
        lm.model.set_submodule(path, previous)


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` (dtype-exact: bfloat16 is viewed, not converted)."""
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def chain_digest(parent: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a memory after one edit's part: the digest of the memory it was added to, the
    part's JSON config and the bytes of each of its tensors (by name)."""
    digest = hashlib.sha256(parent.encode())
    digest.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(str(tuple(state[name].shape)).encode())
        digest.update(tensor_bytes(state[name]))
    return digest.hexdigest()
