"""Editing methods. Importing this package registers every built-in method and the edit kinds they return."""

from kedit.edits import Edit, WeightEdit, load_edit
from kedit.methods import (
    alphaedit,  # noqa: F401  (registers "alphaedit")
    ft,  # noqa: F401  (registers "ft-l", "ft-m")
    ft_ewc,  # noqa: F401  (registers "ft-ewc")
    grace,  # noqa: F401  (registers "grace" and its module-swap codebook)
    ike,  # noqa: F401  (registers "ike" and the "prompt-context" edit kind)
    kn,  # noqa: F401  (registers "kn")
    memit,  # noqa: F401  (registers "memit")
    mend,  # noqa: F401  (registers "mend")
    mle,  # noqa: F401  (registers "mle")
    rome,  # noqa: F401  (registers "rome")
    serac,  # noqa: F401  (registers "serac" and the "edit-memory" edit kind)
    wise,  # noqa: F401  (registers "wise" and the "wise-memory" edit kind)
)
from kedit.methods.base import get_method, method_for, register, registered_methods

__all__ = ["Edit", "WeightEdit", "get_method", "load_edit", "method_for", "register", "registered_methods"]
