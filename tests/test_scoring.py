"""score(): packed (prefix-tree) and left-padded batches give the numbers of unpadded forwards, which
equal a hand computation."""

from __future__ import annotations

import pytest
import torch

from kedit.evaluate import score
from kedit.models.scoring import prefix_hosts

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
    assert len(lengths) >= 4  # inputs of several lengths share rows
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


def test_prefix_hosts_maps_each_sequence_to_its_longest_extension():
    sequences = [(1, 2), (1, 2, 3), (1, 2, 3, 4), (1, 5), (1, 2), (2,), (1,), (1, 2, 6)]
    hosts = prefix_hosts(sequences)
    assert hosts[0] == hosts[4] and hosts[0][:2] == (1, 2) and len(hosts[0]) >= 3
    assert hosts[1] == (1, 2, 3, 4) and hosts[2] == (1, 2, 3, 4)
    assert hosts[3] == (1, 5) and hosts[5] == (2,) and hosts[7] == (1, 2, 6)
    assert hosts[6][:1] == (1,) and hosts[6] in set(sequences)
    for sequence, host in zip(sequences, hosts, strict=True):  # every host begins with its sequence
        assert host[: len(sequence)] == tuple(sequence)
    assert prefix_hosts([]) == []


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gptneox", "qwen2"])  # not the tiny Gemma-3's 6-token window
def test_tree_packed_scoring_runs_each_distinct_prefix_once_with_unchanged_scores(make_lm, architecture, monkeypatch):
    """Pairs sharing a prompt (with a one-token and a longer target, or the same pair twice) and
    prompts sharing a beginning are packed as one trie: every distinct prefix is one column."""
    from kedit.models import scoring
    from kedit.models.scoring import encode_pair

    lm = make_lm(architecture)
    prompt = "The Eiffel Tower is located in the city of"
    pairs = [(prompt, "Rome"), (prompt, "the sport of basketball"), (prompt, "Rome"), PAIRS[1],
             ("The Eiffel Tower is in", "France")]
    alone = [score(lm, [pair])[0] for pair in pairs]
    packs = []
    real = scoring.pack_prefix_trees
    monkeypatch.setattr(scoring, "pack_prefix_trees", lambda *args, **kwargs: packs.append(real(*args, **kwargs)) or packs[-1])
    together = score(lm, pairs)
    inputs = [prompt_ids + target_ids[:-1] for prompt_ids, target_ids in (encode_pair(lm.tokenizer, *pair) for pair in pairs)]
    distinct_prefixes = {tuple(sequence[:end]) for sequence in inputs for end in range(1, len(sequence) + 1)}
    [packed] = packs
    assert len({(row, column) for row, columns in packed.paths for column in columns}) == len(distinct_prefixes)
    assert len(distinct_prefixes) < sum(map(len, inputs)) - len(inputs[0]) - len(inputs[2])  # "The Eiffel Tower is" too
    for a, b in zip(together, alone, strict=True):
        assert a.target_ids == b.target_ids and a.predicted == b.predicted
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-5)


def test_padded_fallback_reads_prefix_pairs_from_one_row_with_unchanged_scores(lm, monkeypatch):
    """Where a tree mask is not exact (a short sliding window), inputs are left-padded; a pair whose
    input prefixes another's is still read from that row."""
    from kedit.models import scoring

    prompt = "The Eiffel Tower is located in the city of"
    one_token = next(word for word in ("Rome", "Paris", "a", "the")
                     if len(lm.tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1)
    pairs = [(prompt, one_token), (prompt, "the sport of basketball"), (prompt, one_token), PAIRS[1]]
    alone = [score(lm, [pair])[0] for pair in pairs]
    monkeypatch.setattr(scoring, "tree_packing_supported", lambda model, longest: False)
    batches = []
    real = scoring.pad_left
    monkeypatch.setattr(scoring, "pad_left", lambda *args: batches.append(real(*args)) or batches[-1])
    together = score(lm, pairs)
    assert sum(len(batch.lengths) for batch in batches) == 2  # the long target's row serves both one-token reads
    for a, b in zip(together, alone, strict=True):
        assert a.target_ids == b.target_ids and a.predicted == b.predicted
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-5)
