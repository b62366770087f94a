"""An edit that does not reach its target says so: a warning naming the request and its final
loss, ``targets_reached`` in the edit's info, ``target_reached`` in run records."""

from __future__ import annotations

import warnings

import pytest
import torch

import kedit
from kedit.edits import WeightEdit
from kedit.errors import KeditWarning
from kedit.evaluate.runner import run_bench
from kedit.methods.outcome import check_targets
from kedit.models.batching import encode, pad_left
from kedit.models.scoring import encode_pair, score
from kedit.models.tracing import final_hidden
from kedit.requests import Case, EditRequest
from kedit.runs import RESULTS_FILE, read_lines

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


def _boost_unembedding(lm, request: EditRequest, scale: float = 50.0) -> WeightEdit:
    """An edit that raises the logit of the target's (single) token after ``request``'s prompt by
    ``scale``: its unembedding row gains scale * h / |h|^2, h the final hidden state there."""
    (token,) = encode_pair(lm.tokenizer, request.text, request.target_new)[1]
    hidden = final_hidden(lm, pad_left([encode(lm.tokenizer, request.text)], lm.pad_token_id))[0, -1]
    name = f"{lm.anatomy.unembed_path}.weight"
    delta = torch.zeros_like(lm.parameter(name))
    delta[token] = scale * hidden / hidden.dot(hidden)
    return WeightEdit(method="boost", requests=(request,), hparams={}, deltas={name: delta},
                      base_fingerprint=lm.fingerprint)


def test_check_targets_reads_the_edited_model(lm):
    """An edit that makes the target the argmax is reached; a zero edit is not; neither stays applied."""
    request = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "Paris", target_true="French")
    assert len(encode_pair(lm.tokenizer, request.text, request.target_new)[1]) == 1
    boost = _boost_unembedding(lm, request)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeditWarning)
        assert check_targets(lm, boost) == [True]
    assert boost.info["targets_reached"] == [True] and not boost.is_applied
    assert not all(score(lm, [(request.text, request.target_new)])[0].hits)  # the unedited model says otherwise
    zero = _boost_unembedding(lm, request, scale=0.0)
    with pytest.warns(KeditWarning, match="boost edit did not reach its target: 'The mother tongue"):
        assert check_targets(lm, zero) == [False]


@pytest.mark.parametrize("mode", ["single", "sequential:1"])
def test_run_records_flag_the_unreached_edit(make_lm, tmp_path, mode):
    lm = make_lm("llama")
    case = Case(REQUEST, rephrases=("Danielle Darrieux speaks",), case_id="c0")
    run_bench(lm, "rome", [case], mode=mode, out_dir=tmp_path / "run", overrides=NO_STEP, progress=False)
    record = read_lines(tmp_path / "run" / RESULTS_FILE)[0]
    assert record["edit"]["target_reached"] is False
    assert any("did not reach its target" in note for note in record["warnings"])
