"""Loading models and finding their parts."""

from kedit.models.anatomy import Anatomy, find_anatomy
from kedit.models.bundled import BUNDLED_MODELS, BundledModel
from kedit.models.fingerprint import weights_fingerprint
from kedit.models.loading import DEFAULT_MODEL, LoadedModel, load_model, prepare_model, resolve_device

__all__ = [
    "Anatomy",
    "BUNDLED_MODELS",
    "BundledModel",
    "DEFAULT_MODEL",
    "LoadedModel",
    "find_anatomy",
    "load_model",
    "prepare_model",
    "resolve_device",
    "weights_fingerprint",
]
