"""The edit contract and the registry of edit kinds.

An edit is what a method's ``compute`` returns. Every edit, whatever it changes, can be applied,
reverted bit for bit, saved and loaded; the kind decides *how*:

* ``weight-deltas`` (:class:`kedit.edits.weights.WeightEdit`): additive parameter changes
  (ROME, MEMIT, AlphaEdit, MLE, FT; MEND's edits);
* ``prompt-context`` (IKE's :class:`kedit.methods.ike.IKEEdit`): a prefix put before every prompt,
  no weight changes;
* ``module-swap`` (:class:`kedit.edits.modules.ModuleSwapEdit`): modules added, wrapped or replaced
  (memories, adapters, routers between models: GRACE, WISE; SERAC has its own `edit-memory` kind).

A kind is a class decorated with :func:`register_kind`; :func:`load_edit` finds the class of a
saved edit by the ``kind`` its ``edit.json`` names. Importing :mod:`kedit.methods` registers the
kinds of every built-in method.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from kedit.errors import EditStateError, KeditError
from kedit.models.loading import LoadedModel
from kedit.paths import atomic_path, sha256_file
from kedit.registry import Registry
from kedit.requests import EditRequest

EDIT_MANIFEST = "edit.json"


@runtime_checkable
class Edit(Protocol):
    """What every edit kind provides (see the module docstring).

    ``touches`` names what the edit changes — parameter names, module paths, or the model's prompt
    context — so a ledger can tell whether two edits overlap. ``stacks`` says whether edits of the
    kind applied one after another give the accumulated state (weights, modules) or whether the
    accumulated state is one edit made by :meth:`combine` (prompt contexts, which would otherwise
    concatenate). ``export_refusal`` is None when the edited model can be written as a plain
    checkpoint, else the one-line reason it cannot. ``touches_parameters``: the names ``touches``
    returns are parameters whose values the edit changes in place.
    """

    kind: ClassVar[str]
    stacks: ClassVar[bool]
    touches_parameters: ClassVar[bool]
    export_refusal: ClassVar[str | None]
    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    base_fingerprint: str
    info: dict[str, Any]

    @property
    def is_applied(self) -> bool: ...

    def touches(self) -> tuple[str, ...]: ...

    def changes(self) -> list[tuple[str, str]]:
        """(where, what) rows describing the change for people (``kedit ledger show``)."""
        ...

    def apply(self, lm: LoadedModel) -> None: ...

    def revert(self, lm: LoadedModel) -> None: ...

    def manifest(self) -> dict[str, Any]: ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def load(cls, directory: str | Path) -> Edit: ...

    @classmethod
    def combine(cls, edits: Sequence[Edit]) -> Edit: ...


_KINDS = Registry("edit kind", "kind")


def register_kind(name: str) -> Callable[[type], type]:
    """Class decorator adding an edit kind under ``name`` (the ``kind`` its saved ``edit.json`` holds)."""
    return _KINDS.register(name)


def edit_kinds() -> Mapping[str, type]:
    """Read-only view of the registered kinds."""
    return _KINDS.view()


def read_manifest(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """``edit.json`` of a saved edit (of ``kind`` when given), with a one-line error when it is not one."""
    path = Path(directory) / EDIT_MANIFEST
    if not path.is_file():
        raise KeditError(f"{directory} holds no saved edit ({EDIT_MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise KeditError(f"{path} is not valid JSON ({error.msg}); the saved edit is damaged") from None
    if kind is not None and manifest.get("kind") != kind:
        raise KeditError(f"{directory} holds a {manifest.get('kind')!r} edit, not a {kind!r} one")
    return manifest


def manifest_of(edit: Edit, **details: Any) -> dict[str, Any]:
    """What every kind's ``edit.json`` holds (kind, method, base model, hyperparameters, requests,
    info), plus the kind's own ``details``."""
    return {"kind": edit.kind, "method": edit.method, "base_fingerprint": edit.base_fingerprint,
            "hparams": dict(edit.hparams), "requests": [r.to_dict() for r in edit.requests], **details,
            "info": edit.info}


def requests_of(manifest: Mapping[str, Any]) -> tuple[EditRequest, ...]:
    """The requests a saved ``edit.json`` lists."""
    return tuple(EditRequest.from_dict(r) for r in manifest["requests"])


def check_files(directory: str | Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a saved edit any of whose files is missing or differs from the sha256 in its manifest."""
    files = manifest.get("files")
    if not isinstance(files, Mapping) or not files:
        raise KeditError(f"{Path(directory) / EDIT_MANIFEST} lists no files with their sha256; the edit is damaged")
    for name, expected in files.items():
        path = Path(directory) / name
        if not path.is_file() or sha256_file(path) != expected:
            raise KeditError(f"{path} is missing or does not match the sha256 in {EDIT_MANIFEST} (tampered or truncated)")


def save_edit_files(directory: str | Path, manifest: Mapping[str, Any], write: Callable[[Path], None]) -> Path:
    """Write an edit folder atomically: ``write(folder)`` puts its data files there, then ``edit.json``
    is written with ``manifest`` plus the sha256 of every data file."""
    directory = Path(directory)
    with atomic_path(directory) as building:
        building.mkdir(parents=True)
        write(building)
        files = {path.name: sha256_file(path) for path in sorted(building.iterdir()) if path.is_file()}
        (building / EDIT_MANIFEST).write_text(json.dumps(dict(manifest) | {"files": files}, indent=2, default=str),
                                              encoding="utf-8")
    return directory


def load_edit(directory: str | Path) -> Edit:
    """Load a saved edit of any registered kind from its folder (its files are sha256-checked)."""
    kind = read_manifest(directory).get("kind")
    cls = edit_kinds().get(kind)
    if cls is None:
        known = ", ".join(sorted(edit_kinds())) or "none"
        raise KeditError(f"{directory}: unknown edit kind {kind!r} (registered kinds: {known}); import the "
                         "package that defines it (kedit.methods registers the built-in ones)")
    return cls.load(directory)


def check_base(edit: Any, lm: LoadedModel) -> None:
    """Refuse to apply ``edit`` to a model other than the one it was computed on."""
    if lm.fingerprint != edit.base_fingerprint:
        raise EditStateError(
            f"this {edit.method} edit was computed on model {edit.base_fingerprint[:12]}, "
            f"not on {lm.fingerprint[:12]} ({lm.source}); load the model it was made for"
        )


def check_combinable(cls: type, edits: Sequence[Any]) -> None:
    """What every ``combine`` needs: at least one edit, all of ``cls``'s kind, one method, one base model."""
    if not edits:
        raise KeditError("nothing to combine: no edits")
    kinds = {type(edit).__name__ for edit in edits if not isinstance(edit, cls)}
    if kinds:
        raise KeditError(f"cannot combine {cls.kind} edits with {', '.join(sorted(kinds))}")
    if len({edit.base_fingerprint for edit in edits}) != 1:
        raise KeditError("cannot combine edits computed on different base models")
    if len({edit.method for edit in edits}) != 1:
        raise KeditError(f"cannot combine edits of different methods ({', '.join(sorted({e.method for e in edits}))})")
