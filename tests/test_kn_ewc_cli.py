"""KN and FT+EWC from the command line on a tiny model folder: `kedit edit` into a ledger (computed one
on top of the other), `kedit ledger apply` reaching the recorded state, and an exact `revert last`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kedit.cli import app
from kedit.ledger import Ledger

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")


def _edit(ledger, method: str, *settings: str, model=None):
    args = ["edit", "--ledger", str(ledger), "--method", method, "--prompt", "The mother tongue of {} is",
            "--subject", "Danielle Darrieux", "--target", "English", "--target-true", "French", "--json"]
    if model is not None:
        args += ["--model", str(model)]
    for setting in settings:
        args += ["--set", setting]
    return runner.invoke(app, args)


def test_kn_and_ft_ewc_go_through_kedit_edit_and_the_ledger(tiny_folder, tmp_path, corpus_file):
    ledger = tmp_path / "ledger"
    first = _edit(ledger, "kn", "ig_steps=3", "refine_templates=[[4,2]]", model=tiny_folder)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["ledger_entry"] == "e0001"
    second = _edit(ledger, "ft-ewc", "num_steps=3", "fisher_texts=3", "fisher_text_tokens=8",
                   f"fisher_corpus={corpus_file}", "ewc_lambda=100")
    assert second.exit_code == 0, second.output
    book = Ledger.open(ledger)
    assert [entry.id for entry in book.entries] == ["e0001", "e0002"]
    assert book.entries[1].state_fingerprint == book.entries[0].result_fingerprint
    for number, method in ((1, "kn"), (2, "ft-ewc")):
        shown = runner.invoke(app, ["ledger", "show", str(number), "--ledger", str(ledger)])
        assert shown.exit_code == 0 and method in shown.stdout and "down_proj" in shown.stdout, shown.output
    applied = runner.invoke(app, ["ledger", "apply", "--ledger", str(ledger)])
    assert applied.exit_code == 0, applied.output
    assert "matches the ledger" in " ".join(applied.stdout.split())
    reverted = runner.invoke(app, ["ledger", "revert", "last", "--ledger", str(ledger)])
    assert reverted.exit_code == 0, reverted.output
    assert [entry.id for entry in Ledger.open(ledger).entries] == ["e0001"]
