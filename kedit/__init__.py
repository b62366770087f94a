"""kedit: knowledge editing of causal language models, measured honestly."""

from kedit.api import edit
from kedit.errors import KeditError, KeditWarning
from kedit.evaluate import evaluate, score, summarize
from kedit.methods import Edit, load_edit, registered_methods
from kedit.models import LoadedModel, load_model
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe

__version__ = "0.1.0"

__all__ = [
    "Case",
    "Edit",
    "edit",
    "evaluate",
    "load_edit",
    "registered_methods",
    "score",
    "summarize",
    "EditRequest",
    "KeditError",
    "KeditWarning",
    "LoadedModel",
    "LocalityProbe",
    "PortabilityProbe",
    "__version__",
    "load_model",
]
