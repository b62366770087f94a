"""Metrics on hand-computed examples, and evaluate()/summarize() on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

import kedit
from kedit.evaluate import TargetScore, evaluate, score, summarize
from kedit.evaluate import metrics as m
from kedit.methods import WeightEdit
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe


def test_ngram_entropy_by_hand():
    # words: the cat sat . the cat ran .                              (8 words, punctuation split off)
    # bigrams (7): (the,cat) x2, (cat,sat), (sat,.), (.,the), (cat,ran), (ran,.)
    #   H2 = -(2/7) log2(2/7) - 5 * (1/7) log2(1/7) = (2/7) log2(3.5) + (5/7) log2(7)
    # trigrams (6), all different: H3 = log2(6)
    # weighted mean with weights 2/3 and 4/3: ((2/3) H2 + (4/3) H3) / 2
    h2 = (2 / 7) * math.log2(3.5) + (5 / 7) * math.log2(7)
    h3 = math.log2(6)
    expected = ((2 / 3) * h2 + (4 / 3) * h3) / 2
    assert expected == pytest.approx(2.5639, abs=1e-4)  # H2 = 2.5216, H3 = 2.5850
    assert m.ngram_entropy("the cat sat. the cat ran.") == pytest.approx(expected, abs=1e-12)

    # "a b a b c": bigrams ab x2, ba, bc -> H2 = 1/2 * 1 + 2 * 1/4 * 2 = 1.5; trigrams aba, bab, abc -> log2(3)
    assert m.ngram_entropy("a b a b c") == pytest.approx((2 / 3 * 1.5 + 4 / 3 * math.log2(3)) / 2, abs=1e-12)
    # A text repeating one word has one bigram and one trigram: no entropy.
    assert m.ngram_entropy("go go go go go") == 0.0
    assert m.ngram_entropy("") == 0.0


def test_harmonic_mean_by_hand():
    assert m.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert m.harmonic_mean([0.6, 0.6]) == pytest.approx(0.6)
    assert m.harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    assert m.harmonic_mean([0.5, None, 1.0]) is None
    assert m.harmonic_mean([]) is None
    assert m.mean([]) is None
    assert m.mean([1.0, 2.0, 6.0]) == pytest.approx(3.0)


FIRST = TargetScore(target_ids=(5, 6), log_probs=(math.log(0.5), math.log(0.2)), predicted=(5, 9))
SECOND = TargetScore(target_ids=(7,), log_probs=(math.log(0.3),), predicted=(7,))


def test_probability_comparisons_by_hand():
    # geometric mean of 0.5 and 0.2 is sqrt(0.1) = 0.31623 > 0.3
    assert FIRST.geometric_mean_prob == pytest.approx(math.sqrt(0.1))
    assert FIRST.mean_log_prob == pytest.approx((math.log(0.5) + math.log(0.2)) / 2)
    assert m.prefers(FIRST, SECOND) is True
    assert m.prefers(SECOND, FIRST) is False
    assert m.prefers(SECOND, SECOND) is False  # ties are not preferences
    assert m.probability_margin(FIRST, SECOND) == pytest.approx(math.sqrt(0.1) - 0.3)
    assert m.probability_margin(SECOND, FIRST) == pytest.approx(0.3 - math.sqrt(0.1))


def test_token_accuracy_and_argmax_agreement_by_hand():
    assert FIRST.hits == (True, False)
    assert m.token_accuracy(FIRST) == 0.5
    assert m.token_accuracy(SECOND) == 1.0
    log_probs = (-1.0, -2.0, -3.0)
    before = TargetScore((5, 6, 7), log_probs, (5, 1, 2))
    after = TargetScore((5, 6, 7), log_probs, (5, 1, 3))
    assert m.argmax_agreement(before, after) == pytest.approx(2 / 3)
    assert m.argmax_agreement(before, before) == 1.0
    assert m.token_accuracy(before) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same target tokens"):
        m.argmax_agreement(before, FIRST)


def _record(es: float, ps: float, ns: float) -> dict:
    post = {"efficacy_score": es, "paraphrase_score": ps, "neighborhood_score": ns}
    return {"probability": {"pre": None, "post": post}, "token": {"post": {"reliability": es}}}


def test_summarize_by_hand():
    records = [_record(1.0, 1.0, 1.0), _record(0.0, 0.5, 1.0), _record(1.0, 0.5, 0.5)]
    summary = summarize(records)
    post = summary["probability"]["post"]
    # means: ES = 2/3, PS = 2/3, NS = 5/6;  S = 3 / (3/2 + 3/2 + 6/5) = 3 / 4.2
    assert post["efficacy_score"] == pytest.approx(2 / 3)
    assert post["paraphrase_score"] == pytest.approx(2 / 3)
    assert post["neighborhood_score"] == pytest.approx(5 / 6)
    assert post["score_s"] == pytest.approx(3 / 4.2)
    assert "pre" not in summary["probability"]
    assert summary["token"]["post"]["reliability"] == pytest.approx(2 / 3)
    assert summary["cases"] == 3


CASES = [
    Case(
        EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
        rephrases=("Danielle Darrieux was a French actress who spoke", "Danielle Darrieux speaks"),
        locality=(LocalityProbe("The official language of Spain is", "Spanish"),
                  LocalityProbe("Lionel Messi plays the sport of", "football")),
        portability=(PortabilityProbe("The language of the films of Danielle Darrieux is", "English"),),
        case_id="darrieux",
    ),
    Case(
        EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris"),
        rephrases=("The Eiffel Tower stands in",),
        locality=(LocalityProbe("The Colosseum is located in the city of", "Rome"),),
        case_id="eiffel",
    ),
    Case(
        EditRequest("{} plays the sport of", "Michael Jordan", "football", "basketball"),
        rephrases=("Michael Jordan is a professional", "The sport Michael Jordan plays is"),
        locality=(LocalityProbe("Lionel Messi plays the sport of", "football"),
                  LocalityProbe("Toko Yasuda plays the", "guitar")),
        case_id="jordan",
    ),
]


def _by_hand(lm, case: Case) -> dict:
    """The probability-protocol and token-protocol numbers of one case, straight from score()."""
    request = case.request
    new, true = score(lm, [(request.text, request.target_new), (request.text, request.target_true)])
    rephrase_new = score(lm, [(p, request.target_new) for p in case.rephrases])
    rephrase_true = score(lm, [(p, request.target_true) for p in case.rephrases])
    answers = score(lm, [(p.prompt, p.answer) for p in case.locality])
    answers_new = score(lm, [(p.prompt, request.target_new) for p in case.locality])
    return {
        "efficacy_score": float(new.mean_log_prob > true.mean_log_prob),
        "efficacy_magnitude": math.exp(new.mean_log_prob) - math.exp(true.mean_log_prob),
        "paraphrase_score": sum(a.mean_log_prob > b.mean_log_prob for a, b in zip(rephrase_new, rephrase_true,
                                                                                   strict=True)) / len(rephrase_new),
        "neighborhood_score": sum(a.mean_log_prob > b.mean_log_prob for a, b in zip(answers, answers_new,
                                                                                    strict=True)) / len(answers),
        "reliability": sum(new.hits) / len(new.hits),
        "generalization": sum(sum(s.hits) / len(s.hits) for s in rephrase_new) / len(rephrase_new),
    }


def test_evaluate_with_a_zero_edit(make_lm):
    lm = make_lm("gpt2")
    name = lm.anatomy.mlp_out_weight(1)
    zero = WeightEdit(method="rome", requests=tuple(c.request for c in CASES), hparams={},
                      deltas={name: torch.zeros_like(lm.parameter(name))}, base_fingerprint=lm.fingerprint)
    records = evaluate(lm, CASES, zero)
    assert not zero.is_applied  # left as found
    assert [r["case_id"] for r in records] == ["darrieux", "eiffel", "jordan"]
    for case, record in zip(CASES, records, strict=True):
        token, probability = record["token"], record["probability"]
        assert token["post"]["locality"] == 1.0  # nothing changed: the argmax agrees everywhere
        for key, value in token["pre"].items():
            assert token["post"][key] == value
        assert probability["post"] == probability["pre"]
        expected = _by_hand(lm, case)
        for key, value in expected.items():
            protocol = token if key in ("reliability", "generalization") else probability
            # by hand = separate score() calls, packed differently: equal up to float32 rounding
            assert protocol["post"][key] == pytest.approx(value, abs=1e-6), key
    assert records[1]["token"]["post"]["portability"] is None  # no probes: absent, not zero

    summary = summarize(records)
    post = summary["probability"]["post"]
    for key in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
        assert post[key] == pytest.approx(sum(r["probability"]["post"][key] for r in records) / 3)
    parts = [post["efficacy_score"], post["paraphrase_score"], post["neighborhood_score"]]
    expected_s = 0.0 if min(parts) == 0 else 3 / sum(1 / p for p in parts)
    assert post["score_s"] == pytest.approx(expected_s)
    assert summary["token"]["post"]["locality"] == 1.0
    assert "locality" not in summary["token"]["pre"]


def test_evaluate_real_edit_keeps_model_state(make_lm):
    lm = make_lm("llama")
    edit = kedit.edit(lm, "rome", CASES[0], layer=1, v_num_grad_steps=4,
                      context_template_length_params=[[3, 2]], mom2_adjustment=False)
    applied = {k: v.clone() for k, v in lm.model.state_dict().items()}
    [record] = evaluate(lm, CASES[:1], edit)
    assert edit.is_applied
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, applied[key])
    # pre is measured on the unedited weights, post on the edited ones: the rewrite moved.
    pre, post = record["probability"]["pre"], record["probability"]["post"]
    assert post["p_new"] > pre["p_new"]
    assert post["p_new"] == pytest.approx(math.exp(score(lm, [(CASES[0].request.text, "English")])[0].mean_log_prob))
    edit.revert(lm)
    assert pre["p_new"] == pytest.approx(math.exp(score(lm, [(CASES[0].request.text, "English")])[0].mean_log_prob))
