"""score(): left-padded batches give the numbers of unpadded forwards, which equal a hand computation."""

from __future__ import annotations

import pytest
import torch

from kedit.evaluate import score

PAIRS = [
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("Rome is the capital of", "Italy"),
    ("The mother tongue of Danielle Darrieux is", "French"),
    ("Michael Jordan plays", "the sport of basketball"),
    ("A", "cat"),
    ("The official language of Brazil is", "Portuguese"),
]


def _hand_scores(lm, prompt: str, target: str) -> tuple[list[int], list[float], list[int]]:
    """Target ids, their log-probs and the argmax at each target position, from one plain forward."""
    tokenizer = lm.tokenizer
    prompt_ids = tokenizer(prompt)["input_ids"]
    joint = tokenizer(prompt + " " + target)["input_ids"]
    assert joint[: len(prompt_ids)] == prompt_ids  # byte-level BPE: the prompt's tokens are a prefix
    target_ids = joint[len(prompt_ids):]
    with torch.no_grad():
        logits = lm.model(torch.tensor([joint])).logits[0].double()  # (T, V)
    log_probs = torch.log_softmax(logits, dim=-1)
    positions = range(len(prompt_ids) - 1, len(joint) - 1)  # position p predicts token p + 1
    chosen = [float(log_probs[p, t]) for p, t in zip(positions, target_ids, strict=True)]
    predicted = [int(log_probs[p].argmax()) for p in positions]
    return target_ids, chosen, predicted


def test_batched_score_equals_single_pair_scores(any_lm):
    lm = any_lm
    batched = score(lm, PAIRS)
    lengths = {len(lm.tokenizer(p + " " + t)["input_ids"]) for p, t in PAIRS}
    assert len(lengths) >= 4  # the batch really is padded
    for pair, together in zip(PAIRS, batched, strict=True):
        [alone] = score(lm, [pair])
        assert together.target_ids == alone.target_ids
        assert together.log_probs == pytest.approx(alone.log_probs, abs=1e-5)
        assert together.predicted == alone.predicted


def test_small_token_budget_splits_batches_without_changing_scores(lm):
    whole = score(lm, PAIRS)
    split = score(lm, PAIRS, token_budget=12)  # forces several forwards
    for a, b in zip(whole, split, strict=True):
        assert a.target_ids == b.target_ids
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-5)


def test_score_equals_hand_computed_log_softmax(any_lm):
    lm = any_lm
    for (prompt, target), scored in zip(PAIRS, score(lm, PAIRS), strict=True):
        target_ids, chosen, predicted = _hand_scores(lm, prompt, target)
        assert list(scored.target_ids) == target_ids
        assert list(scored.log_probs) == pytest.approx(chosen, abs=1e-5)
        assert list(scored.predicted) == predicted
        assert all(value < 0 for value in scored.log_probs)
    # Multi-token target: the later tokens are teacher-forced (their own positions are read).
    assert len(score(lm, [PAIRS[3]])[0].target_ids) >= 3
