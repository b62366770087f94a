"""``kedit edit | demo | stats | methods | models``: one edit on the spot, the demo job, the key
statistics, and the listings. Registered on the ``kedit`` app by :mod:`kedit.cli`."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from tqdm.auto import tqdm

from kedit.cli import common
from kedit.models.bundled import BUNDLED_MODELS
from kedit.models.loading import DEFAULT_MODEL
from kedit.reports.formatting import format_probability, format_score, format_targets
from kedit.reports.records import PROTOCOLS, case_row, metric_rows, protocol_description
from kedit.runs import RESULTS_FILE, command_line, read_lines

TOP_K = 5


def _parse_layers(text: str) -> list[int]:
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of layer numbers, e.g. 4,5,6") from None
    if not layers:
        raise typer.BadParameter("give at least one layer, e.g. --layers 5")
    return layers


# ----------------------------------------------------------------------------------------------- listings


@common.reports_errors
def methods() -> None:
    """List the registered editing methods."""
    from kedit.methods import registered_methods
    from kedit.methods.base import is_trained

    console = common.stdout_console()
    for name, method in sorted(registered_methods().items()):
        trained = f"  [dim](trained: `kedit train {name}` first)[/]" if is_trained(method) else ""
        console.print(f"[bold]{name}[/]  {escape(getattr(method, 'summary', ''))}{trained}", soft_wrap=True)


@common.reports_errors
def models() -> None:
    """List the bundled offline models and the other forms --model accepts."""
    table = Table(title="Bundled models")
    for column in ("name", "description", "status"):
        table.add_column(column)
    for name, spec in BUNDLED_MODELS.items():
        status = "[green]installed[/]" if spec.is_installed() else f"[yellow]not installed:[/] {escape(spec.install_hint)}"
        table.add_row(name, escape(spec.description), status)
    console = common.stdout_console()
    console.print(table)
    console.print(
        "--model also accepts a local Hugging Face model folder (with config.json), a local .gguf file "
        "(converted once under $KEDIT_HOME) or a Hugging Face hub id (needs the network)."
    )


# ---------------------------------------------------------------------------------------------- statistics


@common.reports_errors
def stats(
    layers: Annotated[str, typer.Option(help="Comma-separated layer numbers, e.g. 4,5,6.")],
    model: common.ModelOption = DEFAULT_MODEL,
    tokens: Annotated[int, typer.Option(min=1, help="Corpus tokens to average over.")] = 100_000,
    corpus: Annotated[str, typer.Option(help="'stdlib' (offline default), 'wikipedia', or a text file/folder.")] = "stdlib",
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
) -> None:
    """Precompute (and cache) the MLP key statistics that ROME-style methods need."""
    from kedit.stats import resolve_corpus, second_moments
    from kedit.stats.second_moment import statistics_cache_path

    layer_list = _parse_layers(layers)
    log = common.stderr_console()
    lm, _ = common.load_lm(model, device, log, start_token)
    resolved = resolve_corpus(corpus)
    paths = {layer: statistics_cache_path(lm, layer, resolved, tokens) for layer in layer_list}
    was_cached = {layer: path.is_file() for layer, path in paths.items()}
    started = time.perf_counter()
    second_moments(lm, layer_list, resolved, tokens)
    seconds = time.perf_counter() - started

    table = Table(title=f"Key statistics of {escape(model)} ({tokens} tokens of {escape(resolved.name[:60])})")
    table.add_column("layer")
    table.add_column("status")
    table.add_column("file", overflow="fold")
    for layer, path in paths.items():
        table.add_row(str(layer), "was cached" if was_cached[layer] else "computed", escape(str(path)))
    console = common.stdout_console()
    console.print(table)
    console.print(f"{seconds:.1f} s")


# ------------------------------------------------------------------------------------------------- edit


@dataclass(frozen=True)
class Prompt:
    """A prompt whose next tokens are shown before and after the edit."""

    role: str  # "prompt", "rephrase" or "probe"
    text: str


def _prompts(request_text: str, rephrases: Sequence[str], probes: Sequence[str]) -> list[Prompt]:
    return (
        [Prompt("prompt", request_text)]
        + [Prompt("rephrase", text) for text in rephrases]
        + [Prompt("probe", text) for text in probes]
    )


def _top_tokens(lm: Any, prompts: Sequence[Prompt]) -> list[list[tuple[str, float]]]:
    from kedit.models.scoring import top_next_tokens

    return top_next_tokens(lm, [prompt.text for prompt in prompts], k=TOP_K)


def _first_target_token(lm: Any, prompt: str, target: str) -> str:
    """The target's first token as the model would produce it after ``prompt`` (the one to highlight)."""
    from kedit.models.scoring import encode_pair

    _, target_ids = encode_pair(lm.tokenizer, prompt, target)
    return lm.tokenizer.decode(target_ids[:1])


def _token_lines(tokens: Sequence[tuple[str, float]], highlight: str) -> str:
    """One line per token; the token that starts the new target is highlighted."""
    lines = []
    for token, probability in tokens:
        shown = f"{escape(repr(token))} {format_probability(probability)}"
        lines.append(f"[bold green]{shown}[/]" if token == highlight else shown)
    return "\n".join(lines)


def _top_tokens_table(title: str, prompts: Sequence[Prompt], tokens: Sequence[Sequence[tuple[str, float]]],
                      highlights: Sequence[str]) -> Table:
    table = Table(title=title, show_lines=True)
    table.add_column("prompt", overflow="fold")
    table.add_column(f"top-{TOP_K} next tokens", no_wrap=True)
    for prompt, top, highlight in zip(prompts, tokens, highlights, strict=True):
        table.add_row(f"[dim]{prompt.role}[/]\n{escape(prompt.text)}", _token_lines(top, highlight))
    return table


def _metrics_tables(metrics: dict[str, Any]) -> list[Table]:
    """One table per protocol of a summarize() dict (the protocols are never mixed in one table)."""
    tables = []
    for protocol in PROTOCOLS:
        rows = metric_rows(metrics, protocol)
        if not rows:
            continue
        table = Table(title=f"{protocol} protocol", caption=escape(protocol_description(metrics, protocol)))
        for column, justify in (("metric", "left"), ("before", "right"), ("after", "right")):
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(row.name, format_score(row.pre), format_score(row.post))
        tables.append(table)
    return tables


def _open_ledger(path: Path) -> Any:
    from kedit.ledger import Ledger

    return Ledger.open(path, create=True)


def _token_dicts(tokens: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"token": token, "probability": probability} for token, probability in tokens]


@common.reports_errors
def edit(
    prompt: Annotated[str, typer.Option(help="The prompt, with the subject written out or as '{}'.")],
    subject: Annotated[str, typer.Option(help="The subject, as it occurs in the prompt.")],
    target: Annotated[str, typer.Option(help="The new object the model should answer.")],
    target_true: Annotated[str | None, typer.Option(help="The current object (enables the probability protocol).")] = None,
    rephrase: Annotated[list[str] | None, typer.Option(help="A rephrase of the prompt: shown and scored as generalization. Repeatable.")] = None,
    probe: Annotated[list[str] | None, typer.Option(help="Any prompt whose next tokens to show before and after. Repeatable.")] = None,
    model: Annotated[str | None, typer.Option(help="Bundled name, HF folder, .gguf file or hub id (default: the ledger's base model with --ledger, else smollm2-135m).")] = None,
    method: common.MethodOption = "rome",
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    save: Annotated[Path | None, typer.Option(help="Save the edit (deltas + manifest) to this folder.")] = None,
    ledger: Annotated[Path | None, typer.Option(file_okay=False, help="Append the edit to this ledger (created if missing); it is computed on top of the ledger's edits. See `kedit ledger`.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout and nothing else.")] = False,
) -> None:
    """Edit one fact, show the next tokens before and after, and measure the edit."""
    import kedit

    overrides = common.parse_overrides(set_)
    request = kedit.EditRequest(prompt=prompt, subject=subject, target_new=target, target_true=target_true)
    case = kedit.Case(request=request, rephrases=tuple(rephrase or ()), case_id="cli")
    prompts = _prompts(request.text, case.rephrases, probe or ())
    common.check_method(method, hparams, overrides)
    out, log = common.stdout_console(), common.stderr_console()
    book = _open_ledger(ledger) if ledger else None
    model = model or (book.base.source if book and book.base else DEFAULT_MODEL)

    # With --json every stray print (ours or a library's) goes to stderr; stdout gets the JSON alone.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        lm, load_seconds = common.load_lm(model, device, log, start_token)
        chain = book.apply(lm) if book is not None else None
        if chain is not None:
            log.print(f"applied the ledger's {len(chain.ids)} edit(s); the edit is computed on top of them")
        before = _top_tokens(lm, prompts)
        highlights = [_first_target_token(lm, p.text, request.target_new) for p in prompts]
        if not as_json:
            out.print(_top_tokens_table("Before the edit", prompts, before, highlights))
        started = time.perf_counter()
        with log.status(f"computing the {escape(method)} edit …"):
            # on top of the ledger's edits, checked and kept the way a replay of the ledger will put it
            result = kedit.edit(lm, method, request, hparams_file=hparams, apply=True,
                                stack=chain.stack if chain is not None else None, **overrides)
        edit_seconds = time.perf_counter() - started
        log.print(f"edit computed and applied in {edit_seconds:.1f} s")
        after = _top_tokens(lm, prompts)
        started = time.perf_counter()
        records = kedit.evaluate(lm, [case], result, stack=chain.stack if chain is not None else None)
        eval_seconds = time.perf_counter() - started
        summary = kedit.summarize(records)
        saved = result.save(save) if save else None
        if saved:
            log.print(f"edit saved to {escape(str(saved))}")
        entry = book.append(result, lm, chain) if book is not None else None
        if entry is not None:
            log.print(f"edit appended to the ledger {escape(str(ledger))} as {entry.id}")

    if as_json:
        payload = {
            "model": {"name": model, "fingerprint": lm.fingerprint, "device": str(lm.device),
                      "start_token": lm.start_token},
            "method": method,
            "hparams": dict(result.hparams),
            "request": request.to_dict(),
            "prompts": [
                {"role": p.role, "text": p.text, "pre": _token_dicts(b), "post": _token_dicts(a)}
                for p, b, a in zip(prompts, before, after, strict=True)
            ],
            "metrics": summary,
            "record": records[0],
            "seconds": {"load": load_seconds, "edit": edit_seconds, "evaluate": eval_seconds},
            "saved": str(saved) if saved else None,
            "ledger_entry": entry.id if entry is not None else None,
        }
        typer.echo(json.dumps(payload, default=str))
        return
    out.print(_top_tokens_table("After the edit", prompts, after, highlights))
    for table in _metrics_tables(summary):
        out.print(table)
    out.print(f"seconds: load {load_seconds:.1f}, edit {edit_seconds:.1f}, evaluate {eval_seconds:.1f}")


# ------------------------------------------------------------------------------------------------- demo


class _DemoProgress:
    """A tqdm bar over the facts plus one line per finished fact (all on stderr)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def case_started(self, index: int, total: int, case: Any) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit="fact", desc="demo", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix_str(case.request.subject)

    def case_finished(self, index: int, total: int, record: dict[str, Any]) -> None:
        row = case_row(record)
        seconds = record.get("seconds", {})
        tqdm.write(
            f"[{index + 1}/{total}] {row.subject}: {format_targets(row.target_true, row.target_new)}  "
            f"P(new) {format_probability(row.p_new_pre)} → {format_probability(row.p_new_post)}  "
            f"top-1 after {row.top1_post!r}  "
            f"(edit {seconds.get('edit', 0):.1f} s, evaluation {seconds.get('evaluate', 0):.1f} s)",
            file=sys.stderr,
        )
        for warning in record.get("warnings", ()):
            tqdm.write(f"    warning: {warning}", file=sys.stderr)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _demo_table(records: Sequence[dict[str, Any]]) -> Table:
    """Per-fact results, narrow enough for an 80-column terminal."""
    table = Table(title="Each fact edited alone, then reverted",
                  caption="rel., gen., loc.: reliability, generalization, locality (token protocol, after the edit)")
    table.add_column("fact")
    for column in ("P(new)\nbefore", "P(new)\nafter", "top-1\nafter", "rel.", "gen.", "loc."):
        table.add_column(column, justify="right", no_wrap=True)
    for record in records:
        row = case_row(record)
        table.add_row(
            escape(f"{row.subject}: {format_targets(row.target_true, row.target_new)}"),
            format_probability(row.p_new_pre), format_probability(row.p_new_post),
            escape(repr(row.top1_post)) if row.top1_post is not None else "–",
            format_score(row.reliability), format_score(row.generalization), format_score(row.locality),
        )
    return table


@common.reports_errors
def demo(
    model: common.ModelOption = DEFAULT_MODEL,
    n: Annotated[int, typer.Option(min=1, help="How many of the built-in demo facts to edit.")] = 10,
    out: Annotated[Path, typer.Option(file_okay=False, help="Folder for results.jsonl, summary.json, report.md, plots.")] = Path("demo-report"),
    method: common.MethodOption = "rome",
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
) -> None:
    """Edit built-in facts one at a time, measure each, and write a report with tables and plots."""
    from kedit.demo import REPORT_FILE, run_demo

    overrides = common.parse_overrides(set_)
    log = common.stderr_console()
    command = command_line()
    progress = _DemoProgress()
    log.print(f"editing {n} demo facts in {escape(model)} with {escape(method)}; writing to {escape(str(out))}")
    try:
        summary = run_demo(model, n, out, method, device=device, overrides=overrides, hparams_file=hparams,
                           command=command, listener=progress)
    except KeyboardInterrupt:
        progress.close()
        finished = len(read_lines(out / RESULTS_FILE))
        log.print(f"[yellow]interrupted:[/] {out / RESULTS_FILE} holds {finished} finished fact(s)")
        raise typer.Exit(common.INTERRUPTED) from None
    progress.close()

    console = common.stdout_console()
    console.print(_demo_table(read_lines(out / RESULTS_FILE)))
    for table in _metrics_tables(summary["metrics"]):
        console.print(table)
    seconds = summary["seconds"]
    console.print(
        f"report: {escape(str(out / REPORT_FILE))}  (load {seconds['load_model']:.1f} s, "
        f"edits {seconds['edits']:.1f} s, evaluation {seconds['evaluation']:.1f} s, total {seconds['total']:.1f} s)"
    )
