"""The ledger folder: an ordered chain of edits (of any kind) on one base model, safe against crashes.

Layout::

    LEDGER/
      ledger.json            the index: base model (source, fingerprint, dtype), entries in order
      entries/e0001/         one folder per entry, immutable once written:
        edit.json              the edit's manifest (kind, method, hparams, requests, base fingerprint, sha256)
        deltas.safetensors     the edit's data files (weight deltas; demonstrations; module state)
        entry.json             ledger record: parent, state/result fingerprints, sha256 of every other file
      .lock                  taken (flock) by every write, shared by readers

Writes keep one invariant: *every entry the index lists has a complete folder*. An append writes the
entry folder atomically first, then the index atomically; a revert writes the index first, then
deletes the folder. A crash between the two steps leaves a folder the index does not list: it is
ignored, reported as a leftover and removed by the next write or by :meth:`Ledger.clean`.

Fingerprints are *state* fingerprints (:meth:`LoadedModel.state_fingerprint`): the weights, plus
the digests of installed prompt contexts and swapped modules, so an entry that changes no weight
(IKE) still moves the chain to a new, checkable state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from kedit.edits import Edit, EditStack
from kedit.ledger.records import (
    ENTRIES_DIR,
    ENTRY_FILE,
    INDEX_FILE,
    LOCK_FILE,
    BaseModel,
    EntryLink,
    EntryManifest,
    LedgerError,
    LedgerIndex,
    entry_id,
)
from kedit.ledger.replay import AppliedChain, apply_in_order
from kedit.methods import load_edit
from kedit.models.loading import LoadedModel
from kedit.paths import atomic_path, sha256_file, write_json_atomic


@dataclass(frozen=True)
class RevertOutcome:
    removed: str
    rebased: tuple[str, ...]  # later entries kept on top of a dropped earlier one (revert --force)
    head: str | None
    head_fingerprint: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _source_for_index(source: str) -> str:
    """Local paths are stored absolute so the ledger works from any working directory."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _dtype_name(lm: LoadedModel) -> str:
    return str(lm.dtype).removeprefix("torch.")


@contextlib.contextmanager
def _locked(root: Path, exclusive: bool) -> Iterator[None]:
    """flock on ``root/.lock``: exclusive for writes; shared for reads where the folder is writable."""
    try:
        if exclusive:
            root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+")  # noqa: SIM115 (held across the yield)
    except OSError:
        if exclusive:
            raise
        yield  # a read-only or not yet created ledger: nothing can write to it concurrently
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_index_leftover(name: str) -> bool:
    # atomic_path's temporaries for ledger.json, left behind only if the process was killed
    return name.startswith(f".{INDEX_FILE}.") and name.endswith((".tmp", ".old"))


def _read_index(root: Path) -> LedgerIndex | None:
    """The index, or None for a ledger that has no entry yet (new, or its first append was interrupted)."""
    path = root / INDEX_FILE
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise LedgerError(f"{path} is not valid JSON ({error}); the ledger was modified outside kedit") from error
        return LedgerIndex.from_json(record)
    if root.exists():
        if not root.is_dir():
            raise LedgerError(f"{root} is a file, not a ledger folder")
        foreign = [p.name for p in root.iterdir()
                   if p.name not in (ENTRIES_DIR, LOCK_FILE) and not _is_index_leftover(p.name)]
        if foreign:
            raise LedgerError(f"{root} is not a kedit ledger: it has no {INDEX_FILE} but holds {', '.join(sorted(foreign)[:5])}; "
                              "choose an empty or new folder for a new ledger")
    return None


class Ledger:
    """A handle on one ledger folder. ``index`` is None until the first edit is appended."""

    def __init__(self, root: Path, index: LedgerIndex | None) -> None:
        self.root = root
        self.index = index

    # ------------------------------------------------------------------------------------ reading

    @classmethod
    def open(cls, root: str | Path, *, create: bool = False) -> Ledger:
        """Open a ledger and check that its index and entry records agree (no delta is read yet).

        With ``create`` a folder that does not exist (or is empty) is a new, empty ledger; it is
        written on the first :meth:`append`.
        """
        root = Path(root).expanduser()
        if not root.exists() and not create:
            raise LedgerError(f"no ledger at {root}; `kedit edit … --ledger {root}` creates one")
        with _locked(root, exclusive=False):
            ledger = cls(root, _read_index(root))
            for link in ledger.entries:
                ledger.manifest(link.id)
        return ledger

    @property
    def entries(self) -> tuple[EntryLink, ...]:
        return self.index.entries if self.index is not None else ()

    @property
    def base(self) -> BaseModel | None:
        return self.index.base if self.index is not None else None

    def entry_dir(self, identifier: str) -> Path:
        return self.root / ENTRIES_DIR / identifier

    def link(self, reference: str) -> EntryLink:
        """The index record of an entry named by id, number or ``last``."""
        return self.entries[self._require_index().position(reference)]

    def manifest(self, reference: str) -> EntryManifest:
        """An entry's ``entry.json``, checked against the sha256 the index holds for it."""
        link = self.link(reference)
        path = self.entry_dir(link.id) / ENTRY_FILE
        if not path.is_file():
            raise LedgerError(f"ledger {self.root} is inconsistent: entry {link.id} is in the index but {path} is "
                              "missing (the folder was changed outside kedit); restore it from a backup")
        if sha256_file(path) != link.entry_sha256:
            raise LedgerError(f"entry {link.id}: {path} does not match the sha256 in {INDEX_FILE} (tampered or truncated)")
        manifest = EntryManifest.from_json(json.loads(path.read_text()))
        if not link.agrees_with(manifest) or manifest.base_fingerprint != self.index.base.fingerprint:
            raise LedgerError(f"entry {link.id}: {ENTRY_FILE} disagrees with {INDEX_FILE} about its place in the chain")
        return manifest

    def file_problems(self, reference: str) -> list[str]:
        """Every file of the entry whose sha256 differs from its record (empty when all are intact)."""
        link = self.link(reference)
        problems = []
        for name, expected in self.manifest(link.id).files.items():
            path = self.entry_dir(link.id) / name
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif sha256_file(path) != expected:
                problems.append(f"{name} does not match its sha256 (tampered or truncated)")
        return problems

    def load_edit(self, reference: str) -> Edit:
        """The entry's edit, after checking the sha256 of every file it is made of."""
        link = self.link(reference)
        problems = self.file_problems(link.id)
        if problems:
            raise LedgerError(f"entry {link.id} is damaged: {'; '.join(problems)}. The ledger will not apply it; "
                              "restore the entry folder from a backup")
        edit = load_edit(self.entry_dir(link.id))
        if edit.base_fingerprint != self.index.base.fingerprint:
            raise LedgerError(f"entry {link.id} was computed on model {edit.base_fingerprint[:12]}, "
                              f"not on the ledger's base {self.index.base.fingerprint[:12]}")
        return edit

    def leftovers(self) -> list[Path]:
        """Folders and temporaries no index entry accounts for (from interrupted writes)."""
        listed = set(self.index.ids if self.index is not None else ())
        found = [p for p in self.root.iterdir() if _is_index_leftover(p.name)] if self.root.is_dir() else []
        entries = self.root / ENTRIES_DIR
        if entries.is_dir():
            found += [p for p in entries.iterdir() if p.name not in listed]
        return sorted(found)

    # ------------------------------------------------------------------------------------ applying

    def check_base_model(self, lm: LoadedModel) -> None:
        """Refuse a model other than the ledger's base, or the base with something already applied."""
        base = self._require_index().base
        if lm.fingerprint != base.fingerprint:
            raise LedgerError(
                f"refusing: this ledger's edits were made on base model {base.source} (fingerprint "
                f"{base.fingerprint[:12]}), but {lm.source} has fingerprint {lm.fingerprint[:12]}. "
                "Load the ledger's base model (leave out --model and kedit loads it)")
        if lm.state_fingerprint() != base.fingerprint:
            raise LedgerError(f"{lm.source} was changed since it was loaded (is an edit still applied?); "
                              "apply the ledger to a freshly loaded copy of the base model")

    def apply(self, lm: LoadedModel, upto: str | None = None) -> AppliedChain:
        """Apply the chain (up to and including ``upto``) to the base model ``lm``, in order.

        The model must be the unedited base (checked by fingerprint); every file is checked by
        sha256 before anything is applied; the fingerprint reached must be the one recorded for the
        last entry applied, otherwise the model is restored and :class:`LedgerError` raised.
        """
        if self.index is None:
            return AppliedChain(lm, (), EditStack(lm))
        links = self.entries[: self.index.position(upto) + 1] if upto is not None else self.entries
        self.check_base_model(lm)
        with _locked(self.root, exclusive=False):
            edits = [self.load_edit(link.id) for link in links]
        chain, _ = apply_in_order(lm, [link.id for link in links], edits)
        expected = links[-1].result_fingerprint if links else self.index.base.fingerprint
        reached = lm.state_fingerprint()
        if reached != expected:
            chain.revert()
            raise LedgerError(f"applying the chain gave fingerprint {reached[:12]}, but the ledger recorded "
                              f"{expected[:12]}; the model was left unedited. Apply on the device and dtype "
                              f"the edits were made with ({self.index.base.dtype})")
        return chain

    # ------------------------------------------------------------------------------------ writing

    def append(self, edit: Edit, lm: LoadedModel, chain: AppliedChain | None = None) -> EntryLink:
        """Add ``edit`` (of any kind) as the new last entry.

        ``lm`` must hold the ledger's head state (the base model with the chain applied, see
        :meth:`apply`), with ``edit`` applied on top of it or not; it is left as it was given. Pass
        the ``chain`` that :meth:`apply` returned when there is one: the edit is then put on top of
        it the way a replay will (a prompt context joins the chain's installed one instead of being
        put in front of it), and may already have been pushed onto ``chain.stack``. The edit must
        have been computed on the head state: this is checked by fingerprint.
        """
        if self.index is not None:
            _check_same_base(self.index, edit, lm)  # fail before spending two fingerprints
        state, result = _fingerprints_around(edit, lm, chain.stack if chain is not None else None)
        with _locked(self.root, exclusive=True):
            index = _read_index(self.root) or LedgerIndex(
                BaseModel(_source_for_index(lm.source), lm.fingerprint, _dtype_name(lm)))
            self.index = index
            _check_same_base(index, edit, lm)
            _check_computed_on_head(index, state)
            self._remove(self.leftovers())
            identifier = entry_id(index.next_number)
            parent = index.entries[-1].id if index.entries else None
            with atomic_path(self.entry_dir(identifier)) as building:
                edit.save(building)
                manifest = EntryManifest(
                    id=identifier, created=_now(), method=edit.method, parent=parent,
                    base_fingerprint=index.base.fingerprint, state_fingerprint=state, result_fingerprint=result,
                    requests=tuple(r.to_dict() for r in edit.requests), parameters=edit.touches(),
                    files={path.name: sha256_file(path) for path in sorted(building.iterdir()) if path.is_file()},
                    kind=edit.kind,
                )
                (building / ENTRY_FILE).write_text(json.dumps(manifest.to_json(), indent=2, default=str))
                entry_sha256 = sha256_file(building / ENTRY_FILE)
            link = EntryLink(identifier, parent, state, result, entry_sha256)
            updated = index.with_entries([*index.entries, link], next_number=index.next_number + 1)
            write_json_atomic(self.root / INDEX_FILE, updated.to_json())
            self.index = updated
        return link

    def revert(self, reference: str, *, force: bool = False, lm: LoadedModel | None = None) -> RevertOutcome:
        """Remove an entry from the chain.

        The last entry is removed exactly: the chain's merged state becomes the one recorded before
        it. An earlier entry is refused, because the later edits were computed on a model that
        contained it. With ``force`` it is dropped only if no later entry changes a parameter it
        changes (then every parameter ends exactly where the later edits or the state before it
        left it); ``lm`` (the base model) is needed to record the new fingerprints of the later
        entries, which are marked as rebased.
        """
        with _locked(self.root, exclusive=True):
            self.index = _read_index(self.root)
            index = self._require_index()
            position = index.position(reference)
            target = index.entries[position]
            later = index.entries[position + 1:]
            if self.check_revert(reference, force):
                if lm is None:
                    raise LedgerError(f"dropping {target.id} from under later entries needs the base model, to "
                                      "record the fingerprints of the chain without it")
                kept = self._rebase_over(position, lm)
            else:
                kept = list(index.entries[:-1])
            updated = index.with_entries(kept)
            write_json_atomic(self.root / INDEX_FILE, updated.to_json())
            self.index = updated
            self._remove([self.entry_dir(target.id)])
        return RevertOutcome(removed=target.id, rebased=tuple(link.id for link in later),
                             head=kept[-1].id if kept else None, head_fingerprint=updated.head_fingerprint)

    def check_revert(self, reference: str, force: bool = False) -> bool:
        """Raise the reason why ``reference`` cannot be reverted; return whether the base model is
        needed to do it (to recompute the fingerprints of later entries kept over a dropped one)."""
        index = self._require_index()
        position = index.position(reference)
        target = index.entries[position]
        later = index.entries[position + 1:]
        if not later:
            return False
        later_ids = ", ".join(link.id for link in later)
        if not force:
            raise LedgerError(
                f"refusing to revert {target.id}: it is not the last entry, and {later_ids} were computed on a "
                f"model that contained it, so without it they are not the edits they were made as. Revert "
                f"them first, last first (kedit ledger revert {later[-1].id}), or pass --force to drop "
                f"{target.id} and keep them unchanged (allowed only if none of them changes a parameter "
                f"{target.id} changes)")
        changed = set(self.manifest(target.id).parameters)
        clashes = {link.id: sorted(changed & set(self.manifest(link.id).parameters)) for link in later}
        clashes = {identifier: names for identifier, names in clashes.items() if names}
        if clashes:
            listing = "; ".join(f"{identifier} changes {', '.join(names)}" for identifier, names in clashes.items())
            raise LedgerError(
                f"refusing to revert {target.id} even with --force: later entries change the same parameters "
                f"({listing}) and their deltas were added on top of its, so it cannot be taken out exactly. "
                f"Revert them first, last first (kedit ledger revert {later[-1].id})")
        return True

    def _rebase_over(self, position: int, lm: LoadedModel) -> list[EntryLink]:
        """The chain without entry ``position``, with the later entries' fingerprints recomputed."""
        index = self.index
        target = index.entries[position]
        later = index.entries[position + 1:]
        self.check_base_model(lm)
        kept = [*index.entries[:position], *later]
        edits = [self.load_edit(link.id) for link in kept]
        chain, fingerprints = apply_in_order(lm, [link.id for link in kept], edits, fingerprint_each=True)
        chain.revert()
        if position and fingerprints[position - 1] != kept[position - 1].result_fingerprint:
            raise LedgerError(f"replaying the chain up to {kept[position - 1].id} did not reproduce its recorded "
                              "fingerprint; apply on the device and dtype the edits were made with")
        rebased = list(kept[:position])
        for offset, link in enumerate(later, start=position):
            rebased.append(replace(
                link,
                parent=kept[offset - 1].id if offset else None,
                state_fingerprint=fingerprints[offset - 1] if offset else index.base.fingerprint,
                result_fingerprint=fingerprints[offset],
                rebased_over=(*link.rebased_over, target.id),
            ))
        return rebased

    def clean(self) -> list[str]:
        """Remove leftovers of interrupted writes; return their names (relative to the ledger)."""
        if not self.root.is_dir():
            return []
        with _locked(self.root, exclusive=True):
            self.index = _read_index(self.root)
            leftovers = self.leftovers()
            self._remove(leftovers)
        return [str(path.relative_to(self.root)) for path in leftovers]

    def _remove(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _require_index(self) -> LedgerIndex:
        if self.index is None:
            raise LedgerError(f"the ledger {self.root} has no entries yet; `kedit edit … --ledger {self.root}` adds one")
        return self.index


def _fingerprints_around(edit: Edit, lm: LoadedModel, stack: EditStack | None) -> tuple[str, str]:
    """State fingerprints of the model without and with ``edit`` on top; it is left as it was given."""
    stack = stack if stack is not None else EditStack(lm)
    if stack.holds_last(edit) or edit.is_applied:
        result = lm.state_fingerprint()
        with stack.lifted(edit):
            state = lm.state_fingerprint()
    else:
        state = lm.state_fingerprint()
        with stack.pushed(edit):
            result = lm.state_fingerprint()
    return state, result


def _check_same_base(index: LedgerIndex, edit: Edit, lm: LoadedModel) -> None:
    if edit.base_fingerprint != index.base.fingerprint or lm.fingerprint != index.base.fingerprint:
        raise LedgerError(
            f"refusing: this ledger's base model is {index.base.source} (fingerprint {index.base.fingerprint[:12]}), "
            f"but the edit was computed on {lm.source} (fingerprint {edit.base_fingerprint[:12]})")


def _check_computed_on_head(index: LedgerIndex, state: str) -> None:
    """An edit is valid only on the state it was computed on: the ledger's head."""
    if state == index.head_fingerprint:
        return
    earlier = {index.base.fingerprint: "the base model"} | {
        link.result_fingerprint: f"the state after entry {link.id}" for link in index.entries}
    where = earlier.get(state, f"an unknown state (fingerprint {state[:12]})")
    raise LedgerError(
        f"refusing: the edit was computed on {where}, but the ledger's head is the state after "
        f"{index.entries[-1].id if index.entries else 'the base model'}. Apply the ledger to the base model "
        "first (Ledger.apply) and compute the edit on top of it (kedit edit --ledger does this)")
