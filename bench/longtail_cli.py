"""``kedit longtail genes | probe | edit`` before ``kedit longtail`` itself is registered (helper C's build half).

Runs the same commands (:func:`kedit.cli.longtail_eval.register`) on an app of its own, with
``longtail`` put back into the recorded command line, so run.json holds the ``kedit longtail …``
command that reproduces it. Once ``kedit longtail`` exists, bench/longtail_genes.sh calls that instead.

    .venv/bin/python bench/longtail_cli.py probe BENCH --out RUN
"""

from __future__ import annotations

import sys

import typer

from kedit.cli.longtail_eval import register


def main() -> None:
    root = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    longtail = typer.Typer(name="longtail", no_args_is_help=True)
    register(longtail)
    root.add_typer(longtail, name="longtail")
    sys.argv = [sys.argv[0], "longtail", *sys.argv[1:]]  # kedit.runs.command_line reads sys.argv[1:]
    root()


if __name__ == "__main__":
    main()
