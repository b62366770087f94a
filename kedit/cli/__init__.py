"""The ``kedit`` command. Thin on purpose: it parses arguments, calls the API and prints with rich.

``app`` is the typer application (the ``kedit`` console script and ``python -m kedit``). Each group
of commands lives in its own module and takes what they share from :mod:`kedit.cli.common`:

* :mod:`kedit.cli.edit` — ``edit``, ``demo``, ``stats``, ``methods``, ``models``;
* :mod:`kedit.cli.report` — ``report``; :mod:`kedit.cli.bench` — ``bench``; :mod:`kedit.cli.train` — ``train``;
* :mod:`kedit.cli.ledger` — ``ledger …``; :mod:`kedit.cli.data` — ``data …``;
  :mod:`kedit.cli.pitfalls` — ``pitfalls …``; :mod:`kedit.cli.longtail` — ``longtail …``;
  :mod:`kedit.cli.sweep` — ``sweep …``.

Results go to stdout, progress and log lines to stderr; bad input ends a command with its message
and exit code 2 (see :func:`kedit.cli.common.reports_errors`).
"""

import typer

from kedit.cli import bench, data, edit, ledger, longtail, pitfalls, report, sweep, train

app = typer.Typer(
    name="kedit",
    help="Edit facts inside causal language models and measure what each edit did.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold whole models and tensors
)

# In this order in `kedit --help`.
for command in (edit.methods, edit.models, edit.stats, edit.edit, edit.demo, report.report, bench.bench,
                train.train):
    app.command()(command)
app.add_typer(ledger.ledger_app, name="ledger")
app.add_typer(data.data_app, name="data")
app.add_typer(pitfalls.pitfalls_app, name="pitfalls")
app.add_typer(longtail.longtail_app, name="longtail")
app.add_typer(sweep.sweep_app, name="sweep")

__all__ = ["app"]
