"""kedit: knowledge editing of causal language models, measured honestly.

The names below are imported on first use (PEP 562), so ``import kedit.reports`` or
``import kedit.data`` does not import torch and the model stack.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "edit": "kedit.api",
    "KeditError": "kedit.errors",
    "KeditWarning": "kedit.errors",
    "evaluate": "kedit.evaluate",
    "score": "kedit.models.scoring",
    "summarize": "kedit.evaluate",
    "Edit": "kedit.edits",
    "load_edit": "kedit.methods",
    "registered_methods": "kedit.methods",
    "LoadedModel": "kedit.models",
    "load_model": "kedit.models",
    "Case": "kedit.requests",
    "EditRequest": "kedit.requests",
    "LocalityProbe": "kedit.requests",
    "PortabilityProbe": "kedit.requests",
}

__all__ = [
    "Case", "Edit", "EditRequest", "KeditError", "KeditWarning", "LoadedModel", "LocalityProbe", "PortabilityProbe",
    "__version__", "edit", "evaluate", "load_edit", "load_model", "registered_methods", "score", "summarize",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # a subpackage (kedit.methods, kedit.ledger, ...) is imported on first access, as an eager
        # package import would have made it available
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'kedit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """``kedit.evaluate`` is both a function and a subpackage. Importing the subpackage would set the
    package attribute to the module; the function keeps the name (as it did when imported eagerly)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from kedit.api import edit
    from kedit.edits import Edit
    from kedit.errors import KeditError, KeditWarning
    from kedit.evaluate import evaluate, summarize
    from kedit.methods import load_edit, registered_methods
    from kedit.models import LoadedModel, load_model
    from kedit.models.scoring import score
    from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe
