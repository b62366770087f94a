"""Every Pitfalls metric on hand-computed examples (SPEC A.2, A.4-A.8)."""

from __future__ import annotations

import math

import pytest
import torch

from kedit.errors import KeditError
from kedit.pitfalls import metrics as m
from kedit.pitfalls.conflict import (
    NEW_EXPLICIT,
    NEW_IMPLICIT,
    OLD,
    THETA,
    THETA_2,
    THETA_E2,
    THETA_M,
    TIED,
    conflict_case_metrics,
    summarize_conflict,
)
from kedit.pitfalls.distortion import INTERMEDIATE, TARGET, round_case_metrics, summarize_round

# JS by hand for p = [1, 3] -> [1/4, 3/4] and q = [1, 1] -> [1/2, 1/2]; middle = [3/8, 5/8]:
#   KL(p||m) = 1/4 ln(2/3) + 3/4 ln(6/5) = -0.1013663 + 0.1367412 = 0.0353749
#   KL(q||m) = 1/2 ln(4/3) + 1/2 ln(4/5) =  0.1438410 - 0.1115718 = 0.0322693
#   JS = (0.0353749 + 0.0322693) / 2 = 0.0338221
JS_HAND = 0.0338221


def test_fact_probability_is_the_arithmetic_mean_of_prompt_probabilities():
    assert m.fact_probability([0.1, 0.2, 0.6]) == pytest.approx(0.3)
    assert m.fact_probability(torch.tensor([0.5, 0.25])) == pytest.approx(0.375)


def test_newer_wins_is_strict():
    assert m.newer_wins(0.3, 0.2) is True
    assert m.newer_wins(0.2, 0.3) is False
    assert m.newer_wins(0.25, 0.25) is False  # a tie is no win for the newer fact


def test_conflict_magnitude_paper_and_reference_clipping():
    assert m.conflict_magnitude(0.8, 0.2) == pytest.approx(0.75)
    assert m.conflict_magnitude(0.1, 0.35) == pytest.approx(-2.5)  # the paper does not clip
    assert m.conflict_magnitude(0.1, 0.35, clip_at=-1.0) == -1.0  # the reference code clips at -1
    assert m.conflict_magnitude(0.8, 0.2, clip_at=-1.0) == pytest.approx(0.75)


def test_tied_fact_damage_relative_drop_can_be_negative():
    assert m.tied_fact_damage(0.5, 0.4) == pytest.approx(0.2)
    assert m.tied_fact_damage(0.5, 0.6) == pytest.approx(-0.2)
    with pytest.raises(KeditError, match="reference probability"):
        m.relative_drop(0.0, 0.1)


def test_round_success_gives_half_a_point_per_edit():
    assert m.round_success(0.6, 0.3, 0.5, 0.45) == 1.0
    assert m.round_success(0.2, 0.3, 0.5, 0.45) == 0.5  # e1 did not take
    assert m.round_success(0.6, 0.3, 0.4, 0.45) == 0.5  # e2 did not take
    assert m.round_success(0.3, 0.3, 0.45, 0.45) == 0.0  # ties take nothing


def test_ignore_rate_and_failure_on_hand_made_lists():
    # decreases: 0.5 -> 0.4 yes, 0.4 -> 0.4 no (equal), 0.3 -> 0.1 yes, 0.2 -> 0.3 no
    rate = m.ignore_rate([0.5, 0.4, 0.3, 0.2], [0.4, 0.4, 0.1, 0.3])
    assert rate == 0.5
    assert m.is_failure(rate) is False  # exactly half is not "more than half"
    rate = m.ignore_rate([0.5, 0.4, 0.3, 0.2], [0.4, 0.3, 0.1, 0.3])
    assert rate == 0.75 and m.is_failure(rate) is True
    with pytest.raises(KeditError, match="pair up"):
        m.ignore_rate([0.1, 0.2], [0.1])


def test_js_divergence_by_hand():
    assert m.js_divergence([1, 3], [1, 1]) == pytest.approx(JS_HAND, abs=1e-7)
    assert m.js_divergence([1, 1], [1, 3]) == pytest.approx(JS_HAND, abs=1e-7)  # symmetric
    assert m.js_divergence([0.2, 0.6], [0.1, 0.3]) == pytest.approx(0.0, abs=1e-15)  # same after normalising
    assert m.js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))  # disjoint: the maximum, ln 2


def test_distortion_paper_and_reference_forms():
    assert m.distortion([1, 3], [1, 1]) == pytest.approx(JS_HAND, abs=1e-7)
    assert m.distortion([1, 3], [1, 1], per_object=True) == pytest.approx(JS_HAND / 2, abs=1e-7)


def test_reference_form_matches_torch_kldivloss_batchmean():
    """The reference's js_div: KLDivLoss(batchmean) on 1-D L1-normalised tensors (an independent computation)."""
    after, before = [0.5, 0.1, 0.1, 0.35], [0.4, 0.2, 0.1, 0.3]
    p = torch.nn.functional.normalize(torch.tensor(after, dtype=torch.float64), p=1, dim=0)
    q = torch.nn.functional.normalize(torch.tensor(before, dtype=torch.float64), p=1, dim=0)
    log_middle = ((p + q) / 2).log()
    loss = torch.nn.KLDivLoss(reduction="batchmean")
    reference = float((loss(log_middle, p) + loss(log_middle, q)) / 2)
    assert m.distortion(after, before, per_object=True) == pytest.approx(reference, rel=1e-12)
    assert m.distortion(after, before) == pytest.approx(reference * 4, rel=1e-12)


@pytest.mark.parametrize("values", [[], [0.1, -0.2], [float("nan")]])
def test_bad_probabilities_are_refused(values):
    with pytest.raises(KeditError):
        m.fact_probability(values)


def test_zero_distribution_is_refused():
    with pytest.raises(KeditError, match="sums to 0"):
        m.js_divergence([0.0, 0.0], [0.1, 0.2])


def _states(**states):
    return {name: dict(facts) for name, facts in states.items()}


def test_conflict_case_metrics_composite_on_hand_set_probabilities():
    s = _states(
        theta={OLD: 0.05, NEW_EXPLICIT: 0.01, NEW_IMPLICIT: 0.02, TIED: 0.5},
        theta_m={OLD: 0.8, NEW_EXPLICIT: 0.02, NEW_IMPLICIT: 0.03, TIED: 0.4},
        theta_2={OLD: 0.2, NEW_EXPLICIT: 0.6, NEW_IMPLICIT: 0.1, TIED: 0.3},
        theta_e2={OLD: 0.04, NEW_EXPLICIT: 0.7, NEW_IMPLICIT: 0.05, TIED: 0.45},
    )
    got = conflict_case_metrics("composite", s)
    assert got["CS_exp"] == 1.0  # 0.6 > 0.2
    assert got["CS_imp"] == 0.0  # 0.1 < 0.2
    assert got["CM"] == pytest.approx(0.75)  # (0.8 - 0.2) / 0.8
    assert got["TFD"] == pytest.approx(0.25)  # paper, relative to theta_m: (0.4 - 0.3) / 0.4
    assert got["TFD_ref"] == pytest.approx(0.4)  # reference, relative to theta: (0.5 - 0.3) / 0.5
    assert got["TFD_e2_only"] == pytest.approx(0.1)  # (0.5 - 0.45) / 0.5
    assert "Succ" not in got


def test_conflict_case_metrics_coverage_and_reverse():
    s = _states(
        theta={OLD: 0.1, NEW_EXPLICIT: 0.1},
        theta_m={OLD: 0.1, NEW_EXPLICIT: 0.05},
        theta_2={OLD: 0.3, NEW_EXPLICIT: 0.3},
        theta_e2={OLD: 0.2, NEW_EXPLICIT: 0.5},
    )
    got = conflict_case_metrics("coverage", s)
    assert got == {"CS_exp": 0.0, "CM": pytest.approx(-2.0), "CM_ref": -1.0, "Succ": 1.0}
    reverse = conflict_case_metrics("reverse", {**s, THETA_2: {OLD: 0.3, NEW_EXPLICIT: 0.1, NEW_IMPLICIT: 0.4}})
    assert reverse["CS_exp"] == 0.0 and reverse["CS_imp"] == 1.0 and "TFD" not in reverse


def test_round_case_metrics_on_hand_set_probabilities():
    s = _states(
        theta={TARGET: 0.4, INTERMEDIATE: 0.01, "other_0": 0.2, "other_1": 0.1, "other_2": 0.3},
        theta_m={TARGET: 0.3, INTERMEDIATE: 0.6, "other_0": 0.15, "other_1": 0.1, "other_2": 0.3},
        theta_2={TARGET: 0.5, INTERMEDIATE: 0.45, "other_0": 0.1, "other_1": 0.1, "other_2": 0.35},
    )
    got = round_case_metrics(s, n_others=3)
    assert got["Succ"] == 1.0
    assert got["IR"] == pytest.approx(1 / 3)  # only other_0 went down
    assert got["FR"] == 0.0
    # one other object; after = [0.1, 0.3] ~ [1, 3], before = [0.1, 0.1] ~ [1, 1]: the hand-computed JS
    s = _states(
        theta={TARGET: 0.1, INTERMEDIATE: 0.01, "other_0": 0.1},
        theta_m={TARGET: 0.3, INTERMEDIATE: 0.2, "other_0": 0.1},
        theta_2={TARGET: 0.1, INTERMEDIATE: 0.2, "other_0": 0.3},
    )
    got = round_case_metrics(s, n_others=1)
    assert got["D"] == pytest.approx(JS_HAND, abs=1e-7)
    assert got["D_ref"] == pytest.approx(JS_HAND / 2, abs=1e-7)
    assert got["Succ"] == 0.0 and got["IR"] == 0.0 and got["FR"] == 0.0


def test_summaries_average_cases_per_data_set():
    def case(kind, **values):
        return {"case_id": kind, "type": kind, "pitfalls": {"metrics": values}}

    cases = [case("reverse", CS_exp=1.0, CS_imp=0.0, CM=0.5, CM_ref=0.5),
             case("reverse", CS_exp=0.0, CS_imp=0.0, CM=-3.0, CM_ref=-1.0)]
    summary = summarize_conflict(cases)
    assert summary == {"reverse": {"cases": 2, "CS_exp": 0.5, "CS_imp": 0.0, "CM": -1.25, "CM_ref": -0.25}}
    with pytest.raises(KeditError, match="type"):
        summarize_conflict([case("sideways", CS_exp=1.0)])
    rounds = [{"pitfalls": {"metrics": {"Succ": 1.0, "D": 0.2, "D_ref": 0.1, "IR": 0.5, "FR": 0.0}}},
              {"pitfalls": {"metrics": {"Succ": 0.5, "D": 0.4, "D_ref": 0.1, "IR": 1.0, "FR": 1.0}}}]
    assert summarize_round(rounds, "easy") == {
        "easy": {"cases": 2, "Succ": 0.75, "D": pytest.approx(0.3), "D_ref": 0.1, "IR": 0.75, "FR": 0.5}}


def test_state_names_are_the_papers():
    assert (THETA, THETA_M, THETA_2, THETA_E2) == ("theta", "theta_m", "theta_2", "theta_e2")
