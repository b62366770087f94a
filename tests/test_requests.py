"""Edit requests fail fast with a message naming the field; a target the model already gives warns."""

from __future__ import annotations

import warnings

import pytest
import torch

from kedit.errors import KeditWarning, RequestError
from kedit.evaluate import score
from kedit.methods.outcome import warn_known_targets
from kedit.models import prepare_model
from kedit.requests import Case, EditRequest, LocalityProbe, as_requests

GOOD = {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "target_new": "English"}


@pytest.mark.parametrize("field", ["prompt", "subject", "target_new", "target_true"])
@pytest.mark.parametrize("value", ["", "   ", "\n\t"], ids=["empty", "spaces", "newline-tab"])
def test_empty_or_whitespace_field_is_named(field, value):
    with pytest.raises(RequestError, match=f"^{field} is empty or whitespace only"):
        EditRequest(**(GOOD | {field: value}))


NON_STRINGS = {"int": 5, "none": None, "list": ["English"], "bytes": b"English"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(field, value, id=f"{field}-{kind}")
        for field in ("prompt", "subject", "target_new", "target_true")
        for kind, value in NON_STRINGS.items()
        if not (field == "target_true" and value is None)  # None: no true target given
    ],
)
def test_non_string_field_is_named(field, value):
    with pytest.raises(RequestError, match=f"^{field} must be a string"):
        EditRequest(**(GOOD | {field: value}))


def test_subject_absent_from_prompt():
    with pytest.raises(RequestError, match="subject 'Albert Einstein' does not occur in prompt"):
        EditRequest("The mother tongue of Danielle Darrieux is", "Albert Einstein", "English")


def test_more_than_one_slot():
    with pytest.raises(RequestError, match=r"prompt has 2 '\{\}' slots"):
        EditRequest("{} said that {} speaks", "Danielle Darrieux", "English")


@pytest.mark.parametrize("prompt", ["The {tongue} of {} is", "The mother tongue of Danielle Darrieux is {"])
def test_stray_brace_in_prompt(prompt):
    with pytest.raises(RequestError, match="^prompt has a stray brace"):
        EditRequest(prompt, "Danielle Darrieux", "English")


def test_subject_with_surrounding_whitespace():
    with pytest.raises(RequestError, match="^subject ' Danielle Darrieux' has leading or trailing whitespace"):
        EditRequest("The mother tongue of {} is", " Danielle Darrieux", "English")


def test_slot_and_verbatim_subject_give_the_same_request():
    slotted = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French")
    verbatim = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", " English ", "French")
    assert slotted == verbatim
    assert verbatim.prompt == "The mother tongue of {} is"
    assert verbatim.target_new == "English"
    assert verbatim.text == "The mother tongue of Danielle Darrieux is"
    # The first occurrence becomes the slot; the rest of the prompt is kept verbatim.
    twice = EditRequest("Paris is Paris", "Paris", "France")
    assert twice.prompt == "{} is Paris"
    assert EditRequest.from_dict(slotted.to_dict()) == slotted


def test_from_dict_names_missing_keys_and_accepts_counterfact_targets():
    with pytest.raises(RequestError, match="missing target_new"):
        EditRequest.from_dict({"prompt": "{} is", "subject": "Paris"})
    record = {"requested_rewrite": {"prompt": "{} is in", "subject": "Paris",
                                    "target_new": {"str": "Italy"}, "target_true": {"str": "France"}}}
    assert EditRequest.from_dict(record) == EditRequest("{} is in", "Paris", "Italy", "France")


def test_case_and_request_lists():
    request = EditRequest(**GOOD)
    with pytest.raises(RequestError, match=r"rephrases\[1\] is empty"):
        Case(request, rephrases=("Danielle Darrieux speaks", " "))
    with pytest.raises(RequestError, match="locality answer is empty"):
        LocalityProbe("Paris is the capital of", "")
    with pytest.raises(RequestError, match="no edit requests"):
        as_requests([])
    case = Case(request, rephrases=["Danielle Darrieux speaks"])
    assert as_requests([case, request]) == [request, request]


# --------------------------------------------------------------------------- known targets

PROMPT = "The mother tongue of {} is"
SUBJECT = "Danielle Darrieux"
KNOWN = "Paris"  # a single token (" Paris") of the tiny vocabulary


def test_target_the_model_already_predicts_warns(make_lm):
    lm = make_lm("llama")
    request = EditRequest(PROMPT, SUBJECT, KNOWN)
    [scored] = score(lm, [(request.text, KNOWN)])
    assert len(scored.target_ids) == 1
    assert scored.predicted != scored.target_ids  # the random model does not know it yet

    # Make it known: point the unembedding row of " Paris" along the prompt's final hidden state.
    with torch.no_grad():
        ids = torch.tensor([lm.tokenizer(request.text)["input_ids"]])
        hidden = lm.model.model(ids).last_hidden_state[0, -1]
        lm.model.lm_head.weight[scored.target_ids[0]] = 50 * hidden / hidden.norm() ** 2
    lm = prepare_model(lm.model, lm.tokenizer)
    [scored] = score(lm, [(request.text, KNOWN)])
    assert scored.predicted == scored.target_ids

    other = EditRequest(PROMPT, SUBJECT, "Rome")
    with pytest.warns(KeditWarning, match="already answers 'Paris'"):
        known = warn_known_targets(lm, [other, request])
    assert known == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeditWarning)
        assert warn_known_targets(lm, [other]) == []
