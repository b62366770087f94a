"""``kedit ledger list | show ID | revert ID | apply | export --out DIR``: the edit ledger's commands.

Entries are appended by ``kedit edit … --ledger DIR``. Commands that need the model load the base
model the ledger recorded (``--model`` only overrides where it is loaded from; its fingerprint
must still match). Exit status: 0 on success; 1 when ``list`` or ``show`` finds a damaged entry;
2 for bad input, a refused operation or an inconsistent ledger. Registered on the ``kedit`` app by
:mod:`kedit.cli`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kedit.cli.common import DeviceOption, load_lm, reports_errors, stderr_console, stdout_console

if TYPE_CHECKING:
    from kedit.ledger import Ledger
    from kedit.models.loading import LoadedModel

DAMAGED = 1
TOP_K = 5

ledger_app = typer.Typer(
    name="ledger",
    help="Saved edits as an ordered chain on one base model: list, show, revert, apply, export.",
    no_args_is_help=True,
)

LedgerPath = Annotated[Path, typer.Option("--ledger", file_okay=False, help="The ledger folder (written by kedit edit --ledger).")]
EntryRef = Annotated[str, typer.Argument(help="An entry id (e0003), its number (3) or 'last'.")]
ModelOption = Annotated[str | None, typer.Option(help="Where to load the base model from (default: the source the ledger recorded).")]
UptoOption = Annotated[str | None, typer.Option(help="Stop after this entry (id, number or 'last') (default: all).")]


def _load_base(book: Ledger, model: str | None, device: str) -> LoadedModel:
    from kedit.ledger import LedgerError

    if book.base is None:
        raise LedgerError(f"the ledger {book.root} has no entries yet, so it has no base model to load")
    lm, _ = load_lm(model or book.base.source, device, stderr_console())
    return lm


def _request_text(request: dict[str, Any]) -> str:
    from kedit.reports.formatting import format_targets

    return f"{request['subject']}: {format_targets(request.get('target_true'), request['target_new'])}"


def _announce_leftovers(book: Ledger) -> None:
    removed = book.clean()
    if removed:
        stderr_console().print(f"[yellow]removed leftovers of an interrupted write[/] (not part of the chain): "
                                   f"{escape(', '.join(removed))}", soft_wrap=True)


@ledger_app.command("list")
@reports_errors
def list_entries(ledger: LedgerPath) -> None:
    """List the entries in the order they apply; check every file's sha256; remove leftovers of interrupted writes."""
    from kedit.ledger import Ledger

    book = Ledger.open(ledger)
    _announce_leftovers(book)
    console = stdout_console()
    if book.base is None:
        console.print(f"the ledger {escape(str(ledger))} has no entries")
        return
    table = Table(title=f"Ledger {escape(str(ledger))}",
                  caption=f"base: {escape(book.base.source)} ({book.base.fingerprint[:12]}, {book.base.dtype})")
    for column in ("#", "id", "method", "edit", "parameters", "created", "files"):
        table.add_column(column)
    damaged = []
    for number, link in enumerate(book.entries, start=1):
        manifest = book.manifest(link.id)
        problems = book.file_problems(link.id)
        if problems:
            damaged.append(link.id)
        note = f"\n[dim]rebased over {', '.join(link.rebased_over)}[/]" if link.rebased_over else ""
        table.add_row(
            str(number), link.id + note, escape(manifest.method),
            escape("\n".join(_request_text(r) for r in manifest.requests)), str(len(manifest.parameters)),
            manifest.created, "[red]" + escape("; ".join(problems)) + "[/]" if problems else "[green]ok[/]",
        )
    console.print(table)
    console.print(f"head fingerprint {book.index.head_fingerprint[:12]}")
    if damaged:
        stderr_console().print(f"[bold red]damaged:[/] {', '.join(damaged)}; the ledger will not apply or export them")
        raise typer.Exit(DAMAGED)


@ledger_app.command()
@reports_errors
def show(entry: EntryRef, ledger: LedgerPath) -> None:
    """Show one entry: requests, hyperparameters, fingerprints, changed parameters, file hashes."""
    from kedit.ledger import Ledger

    book = Ledger.open(ledger)
    link = book.link(entry)
    manifest = book.manifest(link.id)
    problems = book.file_problems(link.id)
    console = stdout_console()
    position = book.entries.index(link) + 1
    console.print(f"[bold]{link.id}[/] (#{position} of {len(book.entries)}) — {escape(manifest.method)}, created {manifest.created}")
    console.print(f"parent: {link.parent or 'none (applies to the base model)'}")
    console.print(f"computed on state {link.state_fingerprint[:12]}, gives {link.result_fingerprint[:12]} "
                  f"(base {escape(book.base.source)} {book.base.fingerprint[:12]})")
    if link.rebased_over:
        console.print(f"[yellow]rebased:[/] computed with {', '.join(link.rebased_over)} applied beneath it, "
                      f"which were dropped with revert --force (originally computed on {manifest.state_fingerprint[:12]})")
    for request in manifest.requests:
        console.print(f"request: {escape(request['prompt'].replace('{}', request['subject']))} "
                      f"[dim]→[/] {escape(_request_text(request))}")
    files = Table(title="files")
    files.add_column("file")
    files.add_column("sha256")
    for name, digest in manifest.files.items():
        files.add_row(name, digest)
    if problems:
        console.print(files)
        stderr_console().print(f"[bold red]damaged:[/] {escape('; '.join(problems))}")
        raise typer.Exit(DAMAGED)
    edit = book.load_edit(link.id)
    console.print("hyperparameters: " + escape(json.dumps(dict(edit.hparams), default=str, sort_keys=True)), soft_wrap=True)
    changed = Table(title=f"what the edit changes ({edit.kind})")
    for column in ("where", "change"):
        changed.add_column(column)
    for where, what in edit.changes():
        changed.add_row(escape(where), escape(what))
    console.print(changed)
    console.print(files)


@ledger_app.command()
@reports_errors
def revert(
    entry: EntryRef,
    ledger: LedgerPath,
    force: Annotated[bool, typer.Option(help="Drop an entry that is not the last, if no later entry changes its parameters.")] = False,
    model: ModelOption = None,
    device: DeviceOption = "cpu",
) -> None:
    """Remove an entry: the last one exactly; an earlier one is refused (see --force)."""
    from kedit.ledger import Ledger

    book = Ledger.open(ledger)
    needs_model = book.check_revert(entry, force)
    lm = _load_base(book, model, device) if needs_model else None
    outcome = book.revert(entry, force=force, lm=lm)
    console = stdout_console()
    console.print(f"reverted {outcome.removed}; the head is now {outcome.head or 'the base model'} "
                  f"(fingerprint {outcome.head_fingerprint[:12]})")
    if outcome.rebased:
        console.print(f"[yellow]kept on top, rebased:[/] {', '.join(outcome.rebased)} (computed with "
                      f"{outcome.removed} applied; `kedit ledger show` marks them)")


def _top_tokens_table(prompts: Sequence[str], before: Sequence[Sequence[tuple[str, float]]],
                      after: Sequence[Sequence[tuple[str, float]]]) -> Table:
    from kedit.reports.formatting import format_probability

    def lines(tokens: Sequence[tuple[str, float]]) -> str:
        return "\n".join(f"{escape(repr(token))} {format_probability(p)}" for token, p in tokens)

    table = Table(title="Next tokens: base model and with the ledger applied", show_lines=True)
    for column in ("prompt", "base", "with the ledger"):
        table.add_column(column, overflow="fold" if column == "prompt" else None, no_wrap=column != "prompt")
    for prompt, was, now in zip(prompts, before, after, strict=True):
        table.add_row(escape(prompt), lines(was), lines(now))
    return table


@ledger_app.command()
@reports_errors
def apply(
    ledger: LedgerPath,
    upto: UptoOption = None,
    prompt: Annotated[list[str] | None, typer.Option(help="Show this prompt's next tokens before and after. Repeatable.")] = None,
    model: ModelOption = None,
    device: DeviceOption = "cpu",
) -> None:
    """Apply the chain to the base model in order and check the fingerprint it reaches."""
    from kedit.ledger import Ledger
    from kedit.models.scoring import top_next_tokens

    book = Ledger.open(ledger)
    lm = _load_base(book, model, device)
    before = top_next_tokens(lm, prompt, k=TOP_K) if prompt else []
    chain = book.apply(lm, upto)
    console = stdout_console()
    reached = book.entries[len(chain.ids) - 1].result_fingerprint if chain.ids else book.base.fingerprint
    console.print(f"applied {len(chain.ids)} entr{'y' if len(chain.ids) == 1 else 'ies'} "
                  f"({', '.join(chain.ids) or 'none'}) to {escape(book.base.source)}: "
                  f"fingerprint {reached[:12]} matches the ledger")
    if prompt:
        console.print(_top_tokens_table(prompt, before, top_next_tokens(lm, prompt, k=TOP_K)))


@ledger_app.command()
@reports_errors
def export(
    ledger: LedgerPath,
    out: Annotated[Path, typer.Option(file_okay=False, help="New folder for the merged Hugging Face model.")],
    upto: UptoOption = None,
    model: ModelOption = None,
    device: DeviceOption = "cpu",
) -> None:
    """Write the base model with the chain applied as a Hugging Face folder (loads without kedit)."""
    from kedit.ledger import Ledger, check_exportable, export_merged

    book = Ledger.open(ledger)
    check_exportable(book, upto)  # before seconds are spent loading the model
    lm = _load_base(book, model, device)
    result = export_merged(book, lm, out, upto)
    stdout_console().print(f"exported {len(result.entries)} entr{'y' if len(result.entries) == 1 else 'ies'} "
                    f"({', '.join(result.entries) or 'none'}) to {escape(str(result.folder))} "
                    f"(fingerprint {result.fingerprint[:12]}); load it with "
                    f"AutoModelForCausalLM.from_pretrained({escape(repr(str(result.folder)))})")
