"""Edit kinds: what a method's edit changes, and how it is applied, reverted, stacked, saved and loaded."""

from kedit.edits.base import EDIT_MANIFEST, Edit, edit_kinds, load_edit, register_kind
from kedit.edits.deltas import Deltas, LowRankDelta
from kedit.edits.modules import ModuleSwap, ModuleSwapEdit, register_swap_module, swap_of
from kedit.edits.snapshot import ParameterSnapshot
from kedit.edits.stack import EditStack
from kedit.edits.weights import DELTAS_FILE, WeightEdit

__all__ = ["DELTAS_FILE", "EDIT_MANIFEST", "Deltas", "Edit", "EditStack", "LowRankDelta", "ModuleSwap", "ModuleSwapEdit",
           "ParameterSnapshot", "WeightEdit", "edit_kinds", "load_edit", "register_kind", "register_swap_module", "swap_of"]
