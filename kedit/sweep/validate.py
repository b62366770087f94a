"""Checking every run of a sweep against kedit's own validators before any work starts.

Each check is the one the single-run command uses, so a sweep refuses exactly what ``kedit bench``
would: the method registry (:func:`kedit.methods.get_method`), hyperparameter names and value types
(the method's ``default_hparams`` → :mod:`kedit.methods.hparams` / :mod:`kedit.methods.hparam_types`),
the mode (:func:`kedit.evaluate.runner.parse_mode`), the dataset format
(:func:`kedit.data.registry.dataset_spec`) and the cases the data gives (``kedit bench``'s reader).
Every failure is one line naming the sweep file, the run and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from kedit.errors import KeditError
from kedit.paths import sha256_file
from kedit.sweep.cases import resolved_data, run_cases
from kedit.sweep.settings import RunSettings, SweepError

T = TypeVar("T")
DEVICES = ("cpu", "cuda", "auto")
# names kedit bench reads itself rather than through kedit.data.registry (see kedit.cli.bench)
CASE_FILE_FORMATS = ("cases", "demo", "auto")


@dataclass(frozen=True)
class CheckedRun:
    """A run whose settings passed every check, with what its name digests."""

    settings: RunSettings  # as the workers get it: model resolved, mode normalised, file paths absolute
    identity: dict[str, Any]  # kedit.sweep.naming.run_identity of the settings as written


def _field(origin: str, name: str, check: Callable[[], T]) -> T:
    try:
        return check()
    except KeditError as error:
        raise SweepError(f"{origin}: {name}: {error}") from None


def check_model(model: str) -> None:
    """A bundled name, a model folder with config.json, a .gguf file, or else (not path-like) a hub id."""
    from kedit.models.bundled import BUNDLED_MODELS

    if model in BUNDLED_MODELS:
        return
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise KeditError(f"GGUF file {path} does not exist")
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise KeditError(f"{path} is a folder but has no config.json: it is not a Hugging Face model folder")
    elif path.exists() or model.startswith((".", "/", "~")):
        raise KeditError(f"{model!r} is neither a model folder nor a .gguf file")


def check_device(device: str) -> None:
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise KeditError(f"device {device!r}: use cpu, cuda, cuda:N or auto")


def check_data_format(data: str) -> None:
    from kedit.data.registry import dataset_spec

    name, _, path = data.partition(":")
    name = name.strip().lower()
    if name not in CASE_FILE_FORMATS:
        dataset_spec(name)  # unknown names: a DataError listing the known ones
    if name != "demo":
        if not path:
            raise KeditError(f"{data!r} needs a file: write it as NAME:PATH, e.g. counterfact:/data/counterfact.json")
        if not Path(path).expanduser().is_file():
            raise KeditError(f"{path} does not exist or is not a file")


def _resolved_model(model: str, base: Path) -> str:
    """A model given by a local path, made absolute (workers may start elsewhere); names stay as written."""
    from kedit.models.bundled import BUNDLED_MODELS

    path = Path(model).expanduser()
    located = path if path.is_absolute() else base / path
    return str(located.resolve()) if model not in BUNDLED_MODELS and located.exists() else model


def check_run(origin: str, settings: RunSettings, base: Path, seen: dict[Any, Any]) -> CheckedRun:
    """Every field of one run; ``seen`` keeps what was read already during this check (the same data
    file recurs in many runs of a sweep: its cases are read and its digest taken once)."""
    from kedit.evaluate.runner import SINGLE, parse_mode
    from kedit.methods import get_method
    from kedit.models.loading import DEFAULT_MODEL
    from kedit.sweep.naming import run_identity

    model = settings.model or DEFAULT_MODEL
    located = _resolved_model(model, base)
    _field(origin, "model", lambda: check_model(located))
    method = _field(origin, "method", lambda: get_method(settings.method))
    mode = _field(origin, "mode", lambda: parse_mode(settings.mode))
    if settings.shards > 1 and mode.kind != SINGLE:
        raise SweepError(f"{origin}: shards: only single-mode runs are sharded (each case is edited alone); "
                         f"this run's mode is {mode.spec}")
    _field(origin, "device", lambda: check_device(settings.device))
    hparams_file = None
    if settings.hparams is not None:
        hparams_file = (base / Path(settings.hparams).expanduser()).resolve()
        if not hparams_file.is_file():
            raise SweepError(f"{origin}: hparams: {hparams_file} does not exist")
    _field(origin, "set", lambda: method.default_hparams(None, hparams_file, settings.overrides_dict()))
    data = resolved_data(settings.data, base)
    _field(origin, "data", lambda: check_data_format(data))
    checked = replace(settings, model=located, mode=mode.spec, data=data,
                      hparams=str(hparams_file) if hparams_file else None)
    key = ("cases", data, settings.n, settings.held_out, settings.seed)
    if key not in seen:
        seen[key] = len(_field(origin, "data", lambda: run_cases(checked)).cases)
    if seen[key] < settings.n:  # kedit bench would take what there is; a sweep's n is part of the run's name
        raise SweepError(f"{origin}: n: {settings.data} gives {seen[key]} case(s), fewer than n = {settings.n}; lower n")
    _, _, path = data.partition(":")
    if path and ("sha256", path) not in seen:
        seen[("sha256", path)] = sha256_file(Path(path))
    identity = run_identity(replace(settings, model=model, mode=mode.spec), seen.get(("sha256", path)),
                            sha256_file(hparams_file) if hparams_file else None)
    return CheckedRun(checked, identity)
