"""What a ledger stores, as plain data: the index (``ledger.json``), each entry's own record
(``entry.json``), and the chain rules the index must satisfy.

The index is the root of trust: it lists the entries in the order they apply and holds the sha256
of each entry's ``entry.json``, which in turn holds the sha256 of the entry's ``edit.json`` and
``deltas.safetensors``. Everything below the index is immutable once written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kedit.errors import KeditError

FORMAT = 1
INDEX_FILE = "ledger.json"
ENTRIES_DIR = "entries"
ENTRY_FILE = "entry.json"
LOCK_FILE = ".lock"
LAST = "last"


class LedgerError(KeditError):
    """A ledger is inconsistent, tampered with, or asked to do something it cannot do exactly."""


def entry_id(number: int) -> str:
    return f"e{number:04d}"


def _entry_number(identifier: str) -> int:
    return int(identifier[1:])


@dataclass(frozen=True)
class BaseModel:
    """The model every entry's chain starts from."""

    source: str  # what load_model was given (local paths made absolute)
    fingerprint: str
    dtype: str  # e.g. "float32": the dtype the edits were applied in (part of the arithmetic)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "fingerprint": self.fingerprint, "dtype": self.dtype}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> BaseModel:
        return cls(source=str(record["source"]), fingerprint=str(record["fingerprint"]), dtype=str(record["dtype"]))


@dataclass(frozen=True)
class EntryManifest:
    """``entry.json``: how and on what one edit was made. Written once, never changed."""

    id: str
    created: str  # ISO 8601, UTC
    method: str
    parent: str | None  # the entry that was the head when this edit was computed
    base_fingerprint: str
    state_fingerprint: str  # the model state (base + chain up to parent) the edit was computed on
    result_fingerprint: str  # that state with this edit's deltas added
    requests: tuple[dict[str, Any], ...]
    parameters: tuple[str, ...]  # what the edit changes (Edit.touches: parameter names, module paths, the prompt context)
    files: Mapping[str, str]  # file name -> sha256, for every other file of the entry folder
    kind: str = "weight-deltas"  # the edit kind (entries written before kinds existed are weight deltas)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "created": self.created,
            "method": self.method,
            "parent": self.parent,
            "base_fingerprint": self.base_fingerprint,
            "state_fingerprint": self.state_fingerprint,
            "result_fingerprint": self.result_fingerprint,
            "requests": list(self.requests),
            "parameters": list(self.parameters),
            "files": dict(self.files),
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> EntryManifest:
        return cls(
            id=str(record["id"]),
            created=str(record["created"]),
            method=str(record["method"]),
            parent=record["parent"],
            base_fingerprint=str(record["base_fingerprint"]),
            state_fingerprint=str(record["state_fingerprint"]),
            result_fingerprint=str(record["result_fingerprint"]),
            requests=tuple(record["requests"]),
            parameters=tuple(record["parameters"]),
            files=dict(record["files"]),
            kind=str(record.get("kind", "weight-deltas")),
        )


@dataclass(frozen=True)
class EntryLink:
    """One entry's place in the chain, as the index records it.

    ``parent``, ``state_fingerprint`` and ``result_fingerprint`` equal the entry's manifest unless
    an earlier entry was dropped beneath it with ``revert --force``; then they describe the chain as
    it is now and ``rebased_over`` names the dropped entries (the deltas were computed with them).
    """

    id: str
    parent: str | None
    state_fingerprint: str
    result_fingerprint: str
    entry_sha256: str
    rebased_over: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "state_fingerprint": self.state_fingerprint,
            "result_fingerprint": self.result_fingerprint,
            "entry_sha256": self.entry_sha256,
            "rebased_over": list(self.rebased_over),
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> EntryLink:
        return cls(
            id=str(record["id"]),
            parent=record["parent"],
            state_fingerprint=str(record["state_fingerprint"]),
            result_fingerprint=str(record["result_fingerprint"]),
            entry_sha256=str(record["entry_sha256"]),
            rebased_over=tuple(record.get("rebased_over", ())),
        )

    def agrees_with(self, manifest: EntryManifest) -> bool:
        """Whether the index and the entry's own record tell the same story."""
        if manifest.id != self.id:
            return False
        if self.rebased_over:
            return True  # the index holds the chain after a forced revert; the manifest the original
        return (manifest.parent, manifest.state_fingerprint, manifest.result_fingerprint) == (
            self.parent, self.state_fingerprint, self.result_fingerprint)


@dataclass(frozen=True)
class LedgerIndex:
    """``ledger.json``: the base model and the entries in the order they apply."""

    base: BaseModel
    entries: tuple[EntryLink, ...] = ()
    next_number: int = 1  # entry numbers are never reused, so an id names one edit forever

    @property
    def head_fingerprint(self) -> str:
        """The fingerprint of base + every entry: the state the next edit must be computed on."""
        return self.entries[-1].result_fingerprint if self.entries else self.base.fingerprint

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(link.id for link in self.entries)

    def position(self, reference: str) -> int:
        """Index in the chain of ``reference``: an id (``e0003``), its number (``3``) or ``last``."""
        if not self.entries:
            raise LedgerError("the ledger has no entries")
        if reference == LAST:
            return len(self.entries) - 1
        wanted = entry_id(int(reference)) if reference.isdigit() else reference
        for position, link in enumerate(self.entries):
            if link.id == wanted:
                return position
        raise LedgerError(f"no entry {reference!r} in the ledger; its entries are {', '.join(self.ids)}")

    def with_entries(self, entries: Sequence[EntryLink], next_number: int | None = None) -> LedgerIndex:
        return replace(self, entries=tuple(entries), next_number=self.next_number if next_number is None else next_number)

    def check(self) -> None:
        """Raise :class:`LedgerError` unless the entries form one chain starting at the base."""
        expected_parent, expected_state = None, self.base.fingerprint
        seen: set[str] = set()
        for link in self.entries:
            if link.id in seen:
                raise LedgerError(f"the index lists entry {link.id} twice")
            seen.add(link.id)
            if not link.id.startswith("e") or not link.id[1:].isdigit() or _entry_number(link.id) >= self.next_number:
                raise LedgerError(f"entry id {link.id!r} is malformed or not below next_number {self.next_number}")
            if link.parent != expected_parent:
                raise LedgerError(f"entry {link.id} names parent {link.parent} but follows {expected_parent}")
            if link.state_fingerprint != expected_state:
                raise LedgerError(f"entry {link.id} was computed on state {link.state_fingerprint[:12]}, "
                                  f"but the chain before it ends in {expected_state[:12]}")
            expected_parent, expected_state = link.id, link.result_fingerprint

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "base": self.base.to_json(),
            "next_number": self.next_number,
            "entries": [link.to_json() for link in self.entries],
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> LedgerIndex:
        if record.get("format") != FORMAT:
            raise LedgerError(f"{INDEX_FILE} has format {record.get('format')!r}; this kedit reads format {FORMAT}")
        try:
            index = cls(
                base=BaseModel.from_json(record["base"]),
                entries=tuple(EntryLink.from_json(link) for link in record["entries"]),
                next_number=int(record["next_number"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise LedgerError(f"{INDEX_FILE} is malformed ({error.__class__.__name__}: {error})") from error
        index.check()
        return index
