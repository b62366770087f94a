"""Export a ledger as a merged Hugging Face model folder that plain ``transformers`` loads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kedit.edits import edit_kinds
from kedit.ledger.records import LedgerError
from kedit.ledger.storage import Ledger
from kedit.models.loading import LoadedModel
from kedit.paths import atomic_path

PROVENANCE_FILE = "kedit-ledger.json"


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    entries: tuple[str, ...]
    fingerprint: str  # of the merged weights: loading the folder with kedit gives this fingerprint


def export_merged(ledger: Ledger, lm: LoadedModel, out: str | Path, upto: str | None = None) -> ExportResult:
    """Apply the chain (up to ``upto``) to the base model ``lm`` and write it with ``save_pretrained``.

    The folder holds the config, the merged weights as safetensors, the tokenizer and
    ``kedit-ledger.json`` (which entries, on which base). It is written atomically; ``lm`` is left
    unedited afterwards. The weights keep ``lm``'s dtype (the dtype the edits were applied in).
    """
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LedgerError(f"--out {out} exists and is not an empty folder; choose a new folder or remove it")
    check_exportable(ledger, upto)
    chain = ledger.apply(lm, upto)
    try:
        links = ledger.entries[: len(chain.ids)]
        fingerprint = links[-1].result_fingerprint if links else ledger.base.fingerprint
        provenance = {
            "ledger": str(ledger.root.resolve()),
            "base": ledger.base.to_json(),
            "entries": [{"id": m.id, "method": m.method, "requests": list(m.requests)}
                        for m in (ledger.manifest(link.id) for link in links)],
            "fingerprint": fingerprint,
        }
        with atomic_path(out) as building:
            lm.model.save_pretrained(building, safe_serialization=True)
            lm.tokenizer.save_pretrained(building)
            (building / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
    finally:
        chain.revert()
    return ExportResult(folder=out, entries=chain.ids, fingerprint=fingerprint)


def check_exportable(ledger: Ledger, upto: str | None) -> None:
    """A chain holding an edit whose kind a plain checkpoint cannot hold (IKE's prompt context, swapped
    modules) is refused, naming the first such entry and the kind's reason."""
    if ledger.index is None:
        return
    links = ledger.entries[: ledger.index.position(upto) + 1] if upto is not None else ledger.entries
    for link in links:
        manifest = ledger.manifest(link.id)
        kind = edit_kinds().get(manifest.kind)
        if kind is None:
            raise LedgerError(f"entry {link.id} holds an edit of unknown kind {manifest.kind!r}; import the package "
                              "that defines it")
        reason = kind.export_refusal
        if reason:
            raise LedgerError(f"cannot export a merged model: entry {link.id} ({manifest.method}, {manifest.kind}) "
                              f"{reason}")
