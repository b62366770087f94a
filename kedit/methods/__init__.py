"""Editing methods. Importing this package registers every method."""

from kedit.methods import (
    alphaedit,  # noqa: F401  (registers "alphaedit")
    ft,  # noqa: F401  (registers "ft-l", "ft-m")
    ike,  # noqa: F401  (registers "ike")
    memit,  # noqa: F401  (registers "memit")
    mle,  # noqa: F401  (registers "mle")
    rome,  # noqa: F401  (registers "rome")
)
from kedit.methods.base import Edit, WeightEdit, get_method, load_edit, register, registered_methods

__all__ = ["Edit", "WeightEdit", "get_method", "load_edit", "register", "registered_methods"]
