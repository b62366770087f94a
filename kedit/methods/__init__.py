"""Editing methods. Importing this package registers every method."""

from kedit.methods import (
    ft,  # noqa: F401  (registers "ft-l", "ft-m")
    memit,  # noqa: F401  (registers "memit")
    rome,  # noqa: F401  (registers "rome")
)
from kedit.methods.base import Edit, WeightEdit, get_method, load_edit, register, registered_methods

__all__ = ["Edit", "WeightEdit", "get_method", "load_edit", "register", "registered_methods"]
