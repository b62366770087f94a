"""What every ``kedit`` command shares: consoles, error handling, ``--set`` parsing, shared options.

Results go to stdout, progress and log lines to stderr, so ``kedit edit --json > out.json`` keeps a
clean file. A :class:`~kedit.errors.KeditError` (bad input) ends a command with its message and
exit code 2, never with a traceback; a traceback means a bug in kedit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from kedit.errors import KeditError

F = TypeVar("F", bound=Callable[..., Any])
USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

# Options several commands take, with one help text each.
ModelOption = Annotated[str, typer.Option(help="Bundled name, HF folder, .gguf file or hub id.")]
MethodOption = Annotated[str, typer.Option(help="Editing method (see `kedit methods`).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Hyperparameter override key=value. Repeatable.")]
HparamsOption = Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="YAML file of hyperparameters.")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
StartTokenOption = Annotated[str, typer.Option(
    "--start-token", help="Token put before every text when the tokenizer adds none: 'auto' (<|endoftext|>, "
    "else BOS, else EOS), 'none' (as reference code), or a token of the vocabulary.")]


def stdout_console() -> Console:
    return Console()


def stderr_console() -> Console:
    return Console(stderr=True)


def reports_errors(command: F) -> F:
    """Turn bad input (KeditError) and Ctrl-C into a one-line message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeditError as error:
            stderr_console().print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(USAGE_ERROR) from None
        except KeyboardInterrupt:
            stderr_console().print("[yellow]interrupted[/]")
            raise typer.Exit(INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` options as a dict (values parsed as YAML: numbers, booleans, lists)."""
    from kedit.methods.hparams import parse_override

    return dict(parse_override(item) for item in items or ())


def check_method(method: str, hparams_file: Path | None, overrides: dict[str, Any]) -> None:
    """Reject an unknown method or hyperparameter before spending seconds on loading the model."""
    from kedit.methods import get_method

    get_method(method).default_hparams(None, hparams_file, overrides)


def load_lm(model: str, device: str, log: Console, start_token: str = "auto") -> tuple[Any, float]:
    """Load ``model`` with a spinner on ``log``, then say how long it took and which weights it has."""
    from kedit.models.loading import load_model

    started = time.perf_counter()
    with log.status(f"loading {escape(model)} …"):
        lm = load_model(model, device=device, start_token=start_token)
    seconds = time.perf_counter() - started
    log.print(f"loaded {escape(model)} in {seconds:.1f} s (fingerprint {lm.fingerprint[:12]}…, {lm.device})")
    return lm, seconds
