"""The command line on a tiny model saved to a folder: JSON output, saved edits, bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kedit.cli import app
from kedit.methods import load_edit
from tests.tiny_models import build_model, train_tokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = train_tokenizer()
    build_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _edit_args(folder, *extra):
    return ["edit", "--model", str(folder), "--prompt", "The Eiffel Tower is located in the city of",
            "--subject", "Eiffel Tower", "--target", "Rome", "--target-true", "Paris",
            "--set", "mom2_adjustment=false", "--set", "v_num_grad_steps=15",
            "--set", "context_template_length_params=[[3,2]]", *extra]


def test_edit_json_is_one_object_and_the_edit_took(tiny_folder, tmp_path):
    saved = tmp_path / "saved-edit"
    result = runner.invoke(app, _edit_args(tiny_folder, "--json", "--save", str(saved)))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["method"] == "rome" and payload["request"]["target_new"] == "Rome"
    record = payload["record"]
    assert record["probability"]["post"]["p_new"] > record["probability"]["pre"]["p_new"]
    assert payload["prompts"][0]["role"] == "prompt" and len(payload["prompts"][0]["post"]) == 5
    assert load_edit(saved).method == "rome"


def test_unknown_hyperparameter_exits_2_with_a_hint(tiny_folder):
    result = runner.invoke(app, [*_edit_args(tiny_folder), "--set", "lyer=3"])
    assert result.exit_code == 2
    assert "did you mean 'layer'" in result.output


def test_subject_not_in_prompt_exits_2(tiny_folder):
    args = _edit_args(tiny_folder)
    args[args.index("Eiffel Tower")] = "Big Ben"
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "does not occur in prompt" in result.output


def test_methods_lists_rome():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0 and "rome" in result.stdout
