"""Survey metrics (SR, GR, DD) on hand-made records, checked against numbers computed by hand."""

from __future__ import annotations

import pytest

from kedit.evaluate.survey import (
    SOURCE_HELD_OUT,
    SOURCE_LOCALITY,
    accuracy,
    generalization_rate,
    held_out_block,
    held_out_drawdown,
    held_out_probe_case,
    locality_drawdown,
    success_rate,
    survey_summary,
)
from kedit.requests import Case, EditRequest, LocalityProbe


def record(reliability, generalization, loc_pre, loc_post, *, es=None, ps=None, ns_pre=None, ns_post=None,
           held_out=None) -> dict:
    token_pre = {"reliability": 0.0, "generalization": 0.0, "locality_accuracy": loc_pre}
    token_post = {"reliability": reliability, "generalization": generalization, "locality_accuracy": loc_post,
                  "locality": 1.0}
    probability = {"pre": None, "post": None}
    if es is not None:
        probability = {"pre": {"efficacy_score": 0.0, "paraphrase_score": 0.0, "neighborhood_score": ns_pre},
                       "post": {"efficacy_score": es, "paraphrase_score": ps, "neighborhood_score": ns_post}}
    result = {"token": {"pre": token_pre, "post": token_post}, "probability": probability}
    if held_out is not None:
        result["held_out"] = held_out
    return result


# Four cases. Token: reliabilities 1, 0.5, 1, 1 -> SR 3/4; generalization 1, 1, 0.5, None (no rephrase)
# -> GR 2/3; locality accuracy pre/post (1, .5), (.5, .5), (None), (1, 0) -> DD = mean(.5, 0, 1) = 0.5.
# Probability (case 2 has no target_true): ES 1, -, 0, 1 -> SR 2/3; PS 1, -, 1, 0.5 -> GR 2/3;
# NS pre/post (1, 0), -, (0.5, 0.5), (1, 1) -> DD = mean(1, 0, 0) = 1/3.
RECORDS = [
    record(1.0, 1.0, 1.0, 0.5, es=1.0, ps=1.0, ns_pre=1.0, ns_post=0.0),
    record(0.5, 1.0, 0.5, 0.5),
    record(1.0, 0.5, None, None, es=0.0, ps=1.0, ns_pre=0.5, ns_post=0.5),
    record(1.0, None, 1.0, 0.0, es=1.0, ps=0.5, ns_pre=1.0, ns_post=1.0),
]


def test_success_rate_token_needs_every_target_token():
    assert success_rate(RECORDS, "token") == pytest.approx(3 / 4)


def test_success_rate_probability_skips_cases_without_true_target():
    assert success_rate(RECORDS, "probability") == pytest.approx(2 / 3)


def test_generalization_rate_counts_cases_with_rephrases_only():
    assert generalization_rate(RECORDS, "token") == pytest.approx(2 / 3)
    assert generalization_rate(RECORDS, "probability") == pytest.approx(2 / 3)


def test_locality_drawdown_is_pre_minus_post_accuracy():
    assert locality_drawdown(RECORDS, "token") == pytest.approx(0.5)
    assert locality_drawdown(RECORDS, "probability") == pytest.approx(1 / 3)
    assert accuracy(RECORDS, "token", "pre") == pytest.approx(2.5 / 3)
    assert accuracy(RECORDS, "token", "post") == pytest.approx(1.0 / 3)


def test_survey_summary_keeps_protocols_apart_and_uses_locality_without_held_out():
    summary = survey_summary(RECORDS)
    token, probability = summary["survey"], summary["survey_probability"]
    assert token["success_rate"] == pytest.approx(0.75) and probability["success_rate"] == pytest.approx(2 / 3)
    assert token["drawdown"] == pytest.approx(0.5) and token["drawdown_source"] == SOURCE_LOCALITY
    assert probability["drawdown"] == pytest.approx(1 / 3)
    assert token["drawdown_held_out"] is None
    assert "token" in token["protocol"] and "probability" in probability["protocol"]


def test_held_out_drawdown_is_mean_over_records_and_wins_when_present():
    # held-out accuracy before editing 0.8 (token) / 0.9 (probability); after: .6, .8 and .7, .9
    first = {"token": {"pre": 0.8, "post": 0.6}, "probability": {"pre": 0.9, "post": 0.7}}
    second = {"token": {"pre": 0.8, "post": 0.8}, "probability": {"pre": 0.9, "post": 0.9}}
    records = [record(1.0, 1.0, 1.0, 1.0, held_out=first), record(1.0, 1.0, 1.0, 0.0, held_out=second)]
    assert held_out_drawdown(records, "token") == pytest.approx(0.1)  # mean(0.2, 0.0)
    assert held_out_drawdown(records, "probability") == pytest.approx(0.1)
    summary = survey_summary(records)["survey"]
    assert summary["drawdown"] == pytest.approx(0.1) and summary["drawdown_source"] == SOURCE_HELD_OUT
    assert summary["drawdown_locality"] == pytest.approx(0.5)


def test_held_out_block_averages_the_held_out_cases_accuracy():
    held = [record(0.0, None, 1.0, 0.5, es=0.0, ps=0.0, ns_pre=1.0, ns_post=0.5),
            record(0.0, None, 0.5, 0.5, es=0.0, ps=0.0, ns_pre=0.0, ns_post=0.0)]
    block = held_out_block(held)
    assert block["token"] == {"pre": pytest.approx(0.75), "post": pytest.approx(0.5)}
    assert block["probability"] == {"pre": pytest.approx(0.5), "post": pytest.approx(0.25)}


def test_held_out_probe_case_asks_every_prompt_for_the_true_object():
    case = Case(EditRequest("The capital of {} is", "France", "Rome", target_true="Paris"),
                rephrases=("France has its capital in",), locality=(LocalityProbe("Germany's capital is", "Berlin"),),
                case_id="7")
    probe = held_out_probe_case(case)
    assert [(p.prompt, p.answer) for p in probe.locality] == [
        ("The capital of France is", "Paris"), ("France has its capital in", "Paris"), ("Germany's capital is", "Berlin")]
    assert probe.rephrases == () and probe.request == case.request and probe.case_id == "7"


def test_empty_records_give_none_not_zero():
    assert success_rate([], "token") is None and locality_drawdown([], "probability") is None
    with pytest.raises(ValueError):
        success_rate(RECORDS, "fluency")
