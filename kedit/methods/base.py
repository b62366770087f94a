"""The method contract: ``compute(lm, requests, hparams) -> Edit`` (an edit of any kind in
:mod:`kedit.edits`), the training step of trained editors (:class:`TrainedMethod`), and the
registry every method is found through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from kedit.edits.base import Edit
from kedit.errors import KeditError
from kedit.models.loading import LoadedModel
from kedit.registry import Registry
from kedit.requests import EditRequest


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


class TrainedMethod(Method, Protocol):
    """A method that learns to edit before it edits (MEND, SERAC).

    ``train`` meta-trains an editor for ``lm`` on ``data`` (resuming what ``out_dir`` holds) and
    returns the published artifact; ``compute`` then finds that artifact again — by the base
    model's fingerprint, :meth:`training_hparams` and ``editor_version``, or from the folder named by
    the ``artifact`` hyperparameter (:func:`kedit.training.resolve_artifact`). ``trained_artifact``
    is that lookup, which the benchmark runner also uses for the training-overlap check.
    """

    editor_version: ClassVar[int]

    def training_hparams(self, hparams: Any) -> dict[str, Any]:
        """The hyperparameters that shape the trained editor (the artifact's key), as plain JSON values."""

    def train(self, lm: LoadedModel, data: Any, hparams: Any, schedule: Any, out_dir: Path) -> Any:
        """Train on ``data`` (:class:`kedit.training.TrainingData`) under ``schedule`` → an Artifact."""

    def trained_artifact(self, lm: LoadedModel, hparams: Any) -> Any:
        """The artifact ``compute`` would edit with (a KeditError saying how to train one if none)."""


def is_trained(method: Any) -> bool:
    """Whether ``method`` (an instance or class) trains an editor before editing."""
    return callable(getattr(method, "train", None)) and hasattr(method, "editor_version")


_METHODS = Registry("method", "name")
_REGISTRY = _METHODS.classes  # the table itself (tests save and restore it)


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a method to the registry under ``name``."""
    return _METHODS.register(name)


def registered_methods() -> Mapping[str, type]:
    """Read-only view of the registry (importing :mod:`kedit.methods` fills it)."""
    return _METHODS.view()


def get_method(name: str) -> Method:
    """A new instance of the method registered as ``name``."""
    methods = registered_methods()
    if name not in methods:
        raise KeditError(f"unknown method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]()


METHOD_REUSE_KEY = "method:"


def method_for(lm: LoadedModel, name: str) -> Method:
    """The instance of method ``name`` kept for ``lm`` (built on first use, in ``lm.reuse``).

    What a method object builds and keeps (IKE's sentence embedder and embedded demonstration
    pools) is then built once per model, not once per ``kedit.edit`` call. A method whose
    registration changed since (a test re-registering a name) gets a fresh instance.
    """
    cls = registered_methods().get(name)
    key = METHOD_REUSE_KEY + name
    kept = lm.reuse.get(key)
    if cls is not None and type(kept) is cls:
        return kept
    method = get_method(name)
    lm.reuse[key] = method
    return method


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
