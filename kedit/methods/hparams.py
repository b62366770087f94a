"""Hyperparameters: a frozen dataclass per method, defaults per model from a YAML file beside it.

Resolution order (later wins): the dataclass defaults, the YAML's ``generic`` section, its
``families`` entry for the model's ``config.model_type``, its ``models`` entry for the name the
model was loaded by (bundled models), the same three levels under the method's own key when the
file is shared by several methods (``ft-l:`` in ft.yaml), a user YAML file, then ``key=value``
overrides.

EasyEdit spellings are accepted where they mean the same thing (``layers: [5]`` for ``layer: 5``,
``mom2_n_samples`` is ignored with a warning because it counts Wikipedia articles, not tokens) so users can bring
their files; unknown keys are errors that list the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kedit.errors import KeditError
from kedit.methods.hparam_types import check_values
from kedit.models.loading import LoadedModel

H = TypeVar("H")


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``5e-4`` as a number, as YAML 1.2 does.

    YAML 1.1 (PyYAML) only treats exponent floats with a dot (``5.0e-4``) as numbers, so the
    spelling every paper's config uses (``lr: 5e-4``) would arrive as a string.
    """


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: no arbitrary objects

# EasyEdit / ROME keys that name something kedit finds itself; they are accepted and ignored.
IGNORED_KEYS = frozenset({
    "alg_name", "model_name", "device", "rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp",
    "attn_module_tmp", "ln_f_module", "lm_head_module", "v_loss_layer", "stats_dir", "model_parallel",
    "max_length", "fp16", "batch_size", "mom2_dtype",
})


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` → (key, value parsed as YAML: numbers, booleans, lists work)."""
    if "=" not in text:
        raise KeditError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key.strip(), load_yaml(raw)


def _family_key(lm: LoadedModel) -> str:
    config = lm.model.config
    return str(getattr(config, "model_type", "unknown"))


def load_defaults(yaml_path: Path, lm: LoadedModel | None, section: str | None = None) -> dict[str, Any]:
    """``generic``, then ``families[model_type]``, then ``models[load name]``; with ``section``
    (a method sharing the file with others), that top-level key's own three levels after them."""
    data = load_yaml(Path(yaml_path).read_text()) or {}
    merged: dict[str, Any] = {}
    for levels in (data, (data.get(section) or {}) if section else {}):
        merged.update(levels.get("generic") or {})
        if lm is not None:
            merged.update((levels.get("families") or {}).get(_family_key(lm)) or {})
            merged.update((levels.get("models") or {}).get(lm.source) or {})
    return merged


def build_hparams(
    cls: type[H],
    lm: LoadedModel | None,
    defaults_yaml: Path | None,
    user_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    aliases: Mapping[str, Callable[[Any], tuple[str, Any]]] | None = None,
    derive: Callable[[dict[str, Any], LoadedModel | None], dict[str, Any]] | None = None,
    defaults_section: str | None = None,
) -> H:
    """Merge the layers of configuration into an instance of the frozen dataclass ``cls``.

    ``aliases`` maps a foreign key to a function returning (our key, our value); ``derive`` fills
    values that depend on the model (for example a layer chosen as a fraction of the depth);
    ``defaults_section`` names this method's own part of a defaults file shared by several methods.
    """
    values: dict[str, Any] = load_defaults(defaults_yaml, lm, defaults_section) if defaults_yaml else {}
    origins = dict.fromkeys(values, f"the defaults in {defaults_yaml.name}" if defaults_yaml else "the defaults")
    if user_file is not None:
        loaded = load_yaml(Path(user_file).read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise KeditError(f"{user_file} must hold a mapping of hyperparameters")
        values.update(loaded)
        origins.update(dict.fromkeys(loaded, str(user_file)))
    values.update(overrides or {})
    origins.update(dict.fromkeys(overrides or {}, "the overrides (--set or keyword arguments)"))
    fields = {f.name for f in dataclasses.fields(cls)}
    resolved: dict[str, Any] = {}
    for key, value in values.items():
        origin = origins.get(key, "the arguments")
        if aliases and key in aliases and key not in fields:
            key, value = aliases[key](value)
            if key is None:  # an alias that means "accepted, not used"
                continue
            origins[key] = origin
        if key in IGNORED_KEYS and key not in fields:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeditError(f"unknown hyperparameter {key!r} for {cls.__name__}{hint}; valid: {', '.join(sorted(fields))}")
        resolved[key] = value
    resolved = check_values(cls, resolved, origins)
    if derive is not None:
        resolved = check_values(cls, derive(resolved, lm), origins)
    try:
        return cls(**resolved)
    except TypeError as error:
        raise KeditError(f"bad hyperparameters for {cls.__name__}: {error}") from error


def single_layer_alias(value: Any) -> tuple[str, Any]:
    """EasyEdit's ROME files say ``layers: [5]``; ROME edits exactly one layer."""
    if isinstance(value, list) and len(value) == 1:
        return "layer", int(value[0])
    raise KeditError(f"ROME edits one layer; 'layers' must be a one-element list, got {value!r}")
