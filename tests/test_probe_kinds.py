"""Per-kind locality and portability keys in case records (the Yao et al. sets name each probe's kind)."""

from __future__ import annotations

import pytest

from kedit.evaluate.evaluation import case_record, layout_probes
from kedit.models.scoring import TargetScore
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe


def _score(hit: bool, log_prob: float) -> TargetScore:
    return TargetScore(target_ids=(5,), log_probs=(log_prob,), predicted=(5 if hit else 6,))


def test_each_kind_gets_its_own_mean_beside_the_overall_one():
    case = Case(
        EditRequest("{} is in", "The Louvre", "Rome", target_true="Paris"),
        locality=(LocalityProbe("A", "x", kind="pre-neighbour"), LocalityProbe("B", "y", kind="distract-neighbour"),
                  LocalityProbe("C", "z", kind="distract-neighbour")),
        portability=(PortabilityProbe("D", "w", kind="one-hop"), PortabilityProbe("E", "v")),
    )
    pairs, (layout,) = layout_probes([case])
    # pair order: rewrite new, rewrite true, locality answers A B C, locality new A B C, portability D E
    assert [prompt for prompt, _ in pairs] == ["The Louvre is in", "The Louvre is in", "A", "B", "C", "A", "B", "C",
                                               "D", "E"]
    before = [_score(True, -1.0)] * len(pairs)
    after = list(before)
    after[3] = _score(False, -1.0)  # B's argmax moved: distract-neighbour agreement 1/2
    after[8] = _score(False, -1.0)  # D (one-hop) wrong; E right
    after[5] = _score(True, -0.1)  # A's new-target score rises above its answer (-1.0): NS of pre-neighbour 0
    record = case_record(case, layout, before, after)
    token = record["token"]["post"]
    assert token["locality"] == pytest.approx(2 / 3)
    assert token["locality.pre-neighbour"] == 1.0 and token["locality.distract-neighbour"] == 0.5
    assert token["portability"] == 0.5 and token["portability.one-hop"] == 0.0
    assert "portability.None" not in token
    probability = record["probability"]["post"]
    assert probability["neighborhood_score.pre-neighbour"] == 0.0
    assert probability["neighborhood_score.distract-neighbour"] == 0.0  # ties are not preferences
    assert probability["neighborhood_score"] == 0.0


def test_cases_without_kinds_keep_their_records_unchanged():
    case = Case(EditRequest("{} is in", "The Louvre", "Rome", target_true="Paris"),
                locality=(LocalityProbe("A", "x"),))
    pairs, (layout,) = layout_probes([case])
    scores = [_score(True, -1.0)] * len(pairs)
    record = case_record(case, layout, scores, scores)
    assert not any("." in key for key in record["token"]["post"])
    assert not any("." in key for key in record["probability"]["post"])
