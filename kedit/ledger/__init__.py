"""The edit ledger: saved weight edits as an ordered chain on one base model.

Each entry records its parent and the fingerprint of the model state it was computed on (the base
plus every earlier entry), so an edit is only ever applied on top of the edits it was made after.
``Ledger.apply`` replays the chain on the base model and checks the fingerprint it reaches;
``Ledger.revert`` removes the last entry exactly and refuses (or, with ``force`` and disjoint
parameters, drops exactly) an earlier one; ``export_merged`` writes a plain Hugging Face folder.
"""

from kedit.ledger.export import PROVENANCE_FILE, ExportResult, check_exportable, export_merged
from kedit.ledger.records import (
    ENTRIES_DIR,
    ENTRY_FILE,
    INDEX_FILE,
    BaseModel,
    EntryLink,
    EntryManifest,
    LedgerError,
    LedgerIndex,
)
from kedit.ledger.replay import AppliedChain
from kedit.ledger.storage import Ledger, RevertOutcome

__all__ = [
    "ENTRIES_DIR",
    "ENTRY_FILE",
    "INDEX_FILE",
    "PROVENANCE_FILE",
    "AppliedChain",
    "BaseModel",
    "EntryLink",
    "EntryManifest",
    "ExportResult",
    "Ledger",
    "LedgerError",
    "LedgerIndex",
    "RevertOutcome",
    "check_exportable",
    "export_merged",
]
