"""The command line on a tiny model saved to a folder: JSON output, saved edits, bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kedit.cli import app
from kedit.methods import load_edit

runner = CliRunner()


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


@pytest.mark.parametrize(("setting", "message"), [
    ("v_lr=abc", "hyperparameter v_lr (ROMEHparams, from the overrides (--set or keyword arguments)) must be a finite number, "
                 "got 'abc'"),
    ("v_num_grad_steps=0", "v_num_grad_steps (ROMEHparams, from the overrides (--set or keyword arguments)) must be >= 1"),
    ("v_lr=-0.1", "must be > 0"),
    ("kl_factor=-1", "must be >= 0"),
    ("context_template_length_params=5", "must be a list of [int, int]"),
])
def test_bad_hyperparameter_value_is_one_line_naming_the_field(tiny_folder, setting, message):
    result = runner.invoke(app, [*_edit_args(tiny_folder), "--set", setting])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich may wrap the line
    assert message in text and "fix: e.g. --set" in text


EASYEDIT_RECORD = {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
                   "target_new": "English", "ground_truth": "French", "rephrase_prompt": "Danielle Darrieux speaks",
                   "locality_prompt": "The Louvre is in", "locality_ground_truth": "Paris"}


def _bench_error(tmp_path, data: str) -> str:
    result = runner.invoke(app, ["bench", "--data", data, "--n", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def test_bench_on_a_file_of_another_layout_names_the_layout_and_the_spelling(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([EASYEDIT_RECORD] * 2))
    text = _bench_error(tmp_path, f"counterfact:{path}")
    assert "read as 'counterfact' holds no cases; its records look like 'counterfact-easyedit'" in text
    assert f"use --data counterfact-easyedit:{path}" in text


def test_bench_on_malformed_records_says_how_many_were_skipped_and_why(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"prompt": 3}, dict(EASYEDIT_RECORD, subject=None)]))
    text = _bench_error(tmp_path, f"counterfact-easyedit:{path}")
    assert "holds no cases: 2 of 2 records were skipped" in text
    assert "record 0: field 'prompt': must be a string" in text and "record 1: field 'subject'" in text
