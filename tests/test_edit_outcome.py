"""An edit that does not reach its target says so: a warning naming the request and its final
loss, ``targets_reached`` in the edit's info, ``target_reached`` in run records."""

from __future__ import annotations

import pytest
import torch

import kedit
from kedit.errors import KeditWarning
from kedit.evaluate.run_files import RESULTS_FILE, recover_lines
from kedit.evaluate.runner import run_bench
from kedit.evaluate.scoring import score
from kedit.methods.base import WeightEdit
from kedit.methods.outcome import check_targets
from kedit.requests import Case, EditRequest

REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
# One optimisation step takes none (the last iteration never steps): v* = v_init and the edit is zero.
NO_STEP = {"layer": 1, "v_num_grad_steps": 1, "mom2_adjustment": False, "context_template_length_params": [[3, 2]]}


def test_an_edit_that_changes_nothing_warns_with_its_final_loss(lm):
    with pytest.warns(KeditWarning) as caught:
        edit = kedit.edit(lm, "rome", REQUEST, apply=False, **NO_STEP)
    messages = [str(w.message) for w in caught if "did not reach its target" in str(w.message)]
    assert len(messages) == 1
    assert "'The mother tongue of Danielle Darrieux is' -> 'English'" in messages[0]
    final_loss = edit.info["requests"][0]["final_loss"]
    assert f"ended at loss {final_loss:.3f} after 1 steps" in messages[0]
    assert edit.info["targets_reached"] == [False]
    assert not edit.is_applied  # the check applied and reverted it


def test_check_targets_reads_the_edited_model(lm):
    """The same zero edit is reached for a target the model already predicts, and not for another."""
    said = lm.tokenizer.decode(list(score(lm, [(REQUEST.text, REQUEST.target_new)])[0].predicted[:1])).strip()
    known = EditRequest(REQUEST.prompt, REQUEST.subject, said or "x", target_true="French")
    if not said or not all(score(lm, [(known.text, known.target_new)])[0].hits):
        pytest.skip("the model's greedy answer does not re-tokenise to itself")
    name = lm.anatomy.mlp_out_weight(1)
    zero = WeightEdit(method="zero", requests=(known, REQUEST), hparams={},
                      deltas={name: torch.zeros_like(lm.parameter(name))}, base_fingerprint=lm.fingerprint)
    with pytest.warns(KeditWarning, match="zero edit did not reach its target: 'The mother tongue"):
        assert check_targets(lm, zero) == [True, False]
    assert zero.info["targets_reached"] == [True, False]


@pytest.mark.parametrize("mode", ["single", "sequential:1"])
def test_run_records_flag_the_unreached_edit(make_lm, tmp_path, mode):
    lm = make_lm("llama")
    case = Case(REQUEST, rephrases=("Danielle Darrieux speaks",), case_id="c0")
    run_bench(lm, "rome", [case], mode=mode, out_dir=tmp_path / "run", overrides=NO_STEP, progress=False)
    record = recover_lines(tmp_path / "run" / RESULTS_FILE)[0]
    assert record["edit"]["target_reached"] is False
    assert any("did not reach its target" in note for note in record["warnings"])
