"""WISE: TIES on hand-made tensors against a hand computation; the causal router's pieces (visible
positions from every mask form, prefix means, the Retrieve and Merge choices) by hand; the
activation loss by hand; an edit on a tiny random model routes its own prompt to the side memory
and leaves unrelated prompts on the main memory bit for bit; shards are stored and merged at the
save / merge frequencies; revert is exact; save/load round-trips; a sequence of edits is one
wrapper deep and is refused on another memory; the block's parameters keep their names; scoring
agrees between prefix-tree packing, left padding and one forward per pair.
"""

from __future__ import annotations

import pytest
import torch

import kedit
from kedit.edits import EditStack
from kedit.errors import EditStateError
from kedit.ledger import Ledger, LedgerError, export_merged
from kedit.methods import load_edit
from kedit.methods.wise import WISERouter, activation_loss, edit_rows, load_pool, side_output
from kedit.methods.wise_memory import shard_mask
from kedit.methods.wise_merge import keep_largest, ties_merge
from kedit.methods.wise_routing import (
    choose_merge,
    choose_retrieve,
    counted_tokens,
    sequence_means,
    token_scores,
)
from kedit.models import scoring
from kedit.models.generation import generate
from kedit.models.scoring import encode_pair, score
from kedit.requests import EditRequest

R1 = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "German", target_true="French")
R2 = EditRequest("{} plays the sport of", "Lionel Messi", "city", target_true="football")
R3 = EditRequest("{} was a physicist who worked in", "Albert Einstein", "Rome", target_true="Berlin")
UNRELATED = [("The Nile is a river in", "Africa"), ("Tokyo is the capital of", "Japan")]
LAYER = 1
# the tiny random model's activation scale: margins it can meet, a small step (the reference's 1.0 explodes here)
SETTINGS = {"layer": LAYER, "n_iter": 60, "edit_lr": 0.1, "act_margin": [1.0, 4.0, 3.0],
            "context_template_length_params": [[5, 2]]}


# ------------------------------------------------------------------------------------------- TIES


def test_ties_merge_equals_the_hand_computation():
    base = torch.zeros(4)
    a = torch.tensor([3.0, -1.0, 0.5, 0.0])
    b = torch.tensor([0.3, 2.0, -0.4, 0.0])
    # density 0.5 keeps 2 of 4 entries of each task vector: a -> [3, -1, 0, 0], b -> [0, 2, -0.4, 0]
    assert keep_largest(a, 0.5).tolist() == [3.0, -1.0, 0.0, 0.0]
    assert torch.allclose(keep_largest(b, 0.5), torch.tensor([0.0, 2.0, -0.4, 0.0]))
    merged = ties_merge(base, [a, b], [0.5, 0.5], density=0.5)
    # entry 0: only a (weighted 1.5), mean 1.5 / 0.5 = 3; entry 1: -0.5 + 1.0 > 0, b alone agrees: 1.0 / 0.5 = 2;
    # entry 2: only b (-0.2), sign -, -0.2 / 0.5 = -0.4; entry 3: nothing kept, divisor 1 -> 0
    assert torch.allclose(merged, torch.tensor([3.0, 2.0, -0.4, 0.0]))
    full = ties_merge(torch.ones(3), [torch.tensor([2.0, 0.0, 3.0]), torch.tensor([4.0, 2.0, -1.0])], [1.0, 1.0], 1.0)
    # deltas [1, -1, 2] and [3, 1, -2]: signs of the sums +, 0 -> +, 0 -> + ; agreeing means 2, 1, 2
    assert full.tolist() == [3.0, 2.0, 3.0]


# ----------------------------------------------------------------------------------------- router


def test_a_querys_score_is_the_mean_token_difference_without_its_first_token():
    side = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [6.0, 8.0], [0.0, 0.0]]])  # (2, 3, 2)
    main = torch.zeros(2, 3, 2)
    scores = token_scores(side, main, "paper")
    assert scores.tolist() == [[5.0, 1.0, 2.0], [0.0, 10.0, 0.0]]
    counted = counted_tokens(torch.tensor([[1, 1, 1], [0, 1, 1]]))  # row 1 left-padded: its first token is column 1
    assert counted.tolist() == [[False, True, True], [False, False, True]]
    assert sequence_means(scores, counted).tolist() == [1.5, 0.0]
    coded = token_scores(side, main, "code", torch.relu)
    assert coded.tolist() == scores.tolist()  # relu leaves these non-negative outputs alone


def test_the_retrieve_and_merge_choices_follow_the_reference_rules():
    means = torch.tensor([[5.0, 1.0, 1.0, 6.0], [4.0, 3.0, 0.5, 9.0]])  # (2 memories, 4 queries)
    # memory 0 reaches 4.5 for queries 0 and 3; memory 1 (threshold 2) beats the best for queries 1 and 3
    assert choose_retrieve(means, [4.5, 2.0]).tolist() == [0, 1, -1, 1]
    side, current = torch.tensor([1.0, 7.0, 2.0]), torch.tensor([1.0, 3.0, 6.0])
    assert choose_merge(side, current, 2.5).tolist() == [-1, 0, 1]


def test_the_activation_loss_is_the_three_hinges_computed_by_hand():
    inside, outside = torch.tensor([6.0, 1.0]), torch.tensor(3.0)
    alpha, beta, gamma = 2.0, 5.0, 4.0
    # [out - in + γ]_+ = [1, 6] -> 3.5; [out - α]_+ = 1; [β - in]_+ = [0, 4] -> 2
    assert activation_loss(inside, outside, (alpha, beta, gamma), "all").item() == pytest.approx(3.5 + 1 + 2)
    # violating rows only: 3.5, 1, 4
    assert activation_loss(inside, outside, (alpha, beta, gamma), "violating").item() == pytest.approx(8.5)


def test_masks_are_reproducible_and_of_the_asked_density():
    first, again, other = shard_mask(10_000, 0.2, 0, 3), shard_mask(10_000, 0.2, 0, 3), shard_mask(10_000, 0.2, 0, 4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert abs(first.numel() / 10_000 - 0.2) < 0.02


def test_the_side_output_keeps_the_bias_in_both_layouts():
    x, weight, bias = torch.randn(2, 3, 4), torch.randn(5, 4), torch.randn(5)
    assert torch.allclose(side_output(x, weight, bias, False), x @ weight.T + bias)
    assert torch.allclose(side_output(x, weight.T.contiguous(), bias, True), x @ weight.T + bias)


def test_the_builtin_pool_and_a_dataset_pool(tmp_path):
    pool = load_pool(None)
    assert len(pool.texts) == 40 and pool.pick(R1, 0) == pool.pick(R1, 0)
    path = tmp_path / "cases.json"
    path.write_text('[{"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome",'
                    ' "locality": [{"prompt": "The Nile is in", "answer": "Africa"}]}]')
    assert load_pool(str(path)).texts == (("The Nile is in", "Africa"),)


# ---------------------------------------------------------------------------------- on tiny models


def test_edit_rows_count_the_span_the_router_reads(make_lm):
    """Training averages each edit row over the prompt's own tokens: not the template's prefix, not
    position 0 (which routing leaves out), not the target; the unrelated row over all but its first."""
    lm = make_lm("llama")
    prefix = "Once upon a time. "
    rows = edit_rows(lm, R1, ["{}", prefix + "{}"], UNRELATED[0])
    prompt = R1.text
    own = lm.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    with_prefix = lm.tokenizer(prefix + prompt, add_special_tokens=True)["input_ids"]
    mask = rows.batch.attention_mask.bool()
    for row, ids in enumerate([own, with_prefix]):
        counted = rows.batch.input_ids[row][rows.counted[row]].tolist()
        start = int(mask[row].to(torch.uint8).argmax())
        assert rows.counted[row, start] == False  # noqa: E712 - position 0 never counts
        # the counted tokens are the prompt's tail, ending where the prompt ends (the target follows)
        assert counted == ids[len(ids) - len(counted):]
        assert prompt.endswith(lm.tokenizer.decode(counted).strip())
    # no prefix: every prompt token but position 0; with the prefix: none of the prefix's tokens
    assert int(rows.counted[0].sum()) == len(own) - 1
    assert int(rows.counted[1].sum()) <= len(with_prefix) - len(lm.tokenizer(prefix.strip())["input_ids"])
    assert int(rows.counted[2].sum()) == int(mask[2].sum()) - 1


def test_an_edit_routes_its_prompt_to_the_side_memory_and_unrelated_prompts_to_the_main_one(make_lm):
    lm = make_lm("llama")
    weights = {n: t.clone() for n, t in lm.model.state_dict().items()}
    state = lm.state_fingerprint()
    pairs = [(R1.text, R1.target_new), (R1.text, "French"), *UNRELATED]
    before = score(lm, pairs)
    edit = kedit.edit(lm, "wise", R1, **SETTINGS)
    detail = edit.info["requests"][0]
    assert edit.kind == "wise-memory" and edit.info["targets_reached"] == [True]
    router = lm.routers[-1]
    assert isinstance(router, WISERouter) and lm.state_fingerprint() != state
    threshold = router.memories()[1][1]
    assert threshold == pytest.approx(detail["act"] * 0.88)
    assert router.choose([R1.text, *(p for p, _ in UNRELATED)]).tolist() == [1, -1, -1]  # W' for its prompt, W0 else
    after = score(lm, pairs)
    assert after[0].log_probs != before[0].log_probs and all(after[0].hits)
    assert [s.log_probs for s in after[2:]] == [s.log_probs for s in before[2:]]  # the main memory, bit for bit
    # one decision per prompt: both targets of the edit prompt are scored by the side memory
    side_scores = score(router.answering(1), pairs[:2])
    assert [s.log_probs for s in after[:2]] == [s.log_probs for s in side_scores]
    assert generate(lm, [R1.text], max_new_tokens=2, top_k=1) == generate(router.answering(1), [R1.text], 2, top_k=1)
    edit.revert(lm)
    assert lm.routers == () and lm.state_fingerprint() == state
    assert all(torch.equal(t, weights[n]) for n, t in lm.model.state_dict().items())
    assert score(lm, pairs) == before


@pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")  # 5 steps: not every target is reached
@pytest.mark.parametrize("retrieve", [False, True])
def test_shards_are_stored_and_merged_at_their_frequencies_in_one_router(make_lm, retrieve):
    lm = make_lm("gpt2")
    settings = SETTINGS | {"n_iter": 5, "save_freq": 1, "merge_freq": 2, "retrieve": retrieve}
    with EditStack(lm) as stack:
        stack.push(kedit.edit(lm, "wise", R1, apply=False, **settings))
        memory = lm.routers[-1].state
        assert memory.count == 1 and memory.current is None and len(memory.stored) == 1  # saved after edit 1
        stack.push(kedit.edit(lm, "wise", R2, apply=False, **settings))
        memory = lm.routers[-1].state
        if retrieve:  # the last two shards merged into one retrievable memory
            assert len(memory.stored) == 1 and memory.merged is None
            assert memory.stored[0].min_act == pytest.approx(min(stack.edits[0].info["requests"][0]["act"],
                                                                  stack.edits[1].info["requests"][0]["act"]))
        else:  # every shard merged into the side memory W_s
            assert memory.stored == () and memory.merged is not None
        stack.push(kedit.edit(lm, "wise", R3, apply=False, **settings))
        assert len(lm.routers) == 1 and lm.routers[-1].state.count == 3
        stack.pop()
        assert len(lm.routers) == 1 and lm.routers[-1].state.count == 2
    stack.verify_restored()
    assert lm.routers == ()


@pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")
def test_save_load_round_trip_and_refusal_on_another_memory(make_lm, tmp_path):
    lm = make_lm("llama")
    probes = [(R1.text, R1.target_new), (R2.text, R2.target_new), *UNRELATED]
    combined = kedit.edit(lm, "wise", [R1, R2], mode="sequential", apply=False, **SETTINGS)
    assert len(combined.parts) == 2
    combined.apply(lm)
    expected = score(lm, probes)
    assert lm.routers[-1].state.count == 2
    combined.revert(lm)
    loaded = load_edit(combined.save(tmp_path / "wise"))
    loaded.apply(lm)
    assert score(lm, probes) == expected
    loaded.revert(lm)
    second_alone = type(combined)(method=combined.method, requests=combined.requests[1:], hparams=combined.hparams,
                                  parts=combined.parts[1:], base_fingerprint=combined.base_fingerprint)
    with pytest.raises(EditStateError, match="apply the edits it was made after first"):
        second_alone.apply(lm)
    assert lm.routers == ()


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_tree_packed_left_padded_and_one_forward_per_pair_score_alike(make_lm, architecture, monkeypatch):
    lm = make_lm(architecture)
    edit = kedit.edit(lm, "wise", R1, **SETTINGS)
    router = lm.routers[-1]
    pairs = [(R1.text, R1.target_new), (R1.text, "French"), (R1.text + " the", "language"), *UNRELATED]
    answering = [lm if chosen < 0 else router.answering(chosen) for chosen in router.choose([p for p, _ in pairs])]
    packed = score(lm, pairs)
    monkeypatch.setattr(scoring, "tree_packing_supported", lambda model, longest: False)
    padded = score(lm, pairs)
    for (prompt, target), model, a, b in zip(pairs, answering, packed, padded, strict=True):
        prompt_ids, target_ids = encode_pair(lm.tokenizer, prompt, target)
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([prompt_ids + target_ids[:-1]])).logits[0, -len(target_ids):]
        single = logits.log_softmax(-1).gather(1, torch.tensor(target_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(a.log_probs), single, atol=1e-5)
        assert torch.allclose(torch.tensor(b.log_probs), single, atol=1e-5)
    edit.revert(lm)


def test_the_answering_model_shares_every_module_but_the_projection(make_lm):
    lm = make_lm("llama")
    edit = kedit.edit(lm, "wise", R1, **SETTINGS)
    side = lm.routers[-1].answering(1)
    path = lm.anatomy.mlp_out_paths[LAYER]
    assert side.module(path) is not lm.module(path) and side.module(path).weight.shape == lm.module(path).weight.shape
    shared = {name: p for name, p in lm.model.named_parameters()}
    assert all(p is shared[name] for name, p in side.model.named_parameters())  # the bias-free projection adds none
    assert side.module(lm.anatomy.block_paths[0]) is lm.module(lm.anatomy.block_paths[0])
    edit.revert(lm)


def test_wise_edits_go_into_a_ledger_and_a_fresh_load_replays_the_same_memory(make_lm, tmp_path):
    lm = make_lm("llama")
    base_state = lm.state_fingerprint()
    book = Ledger.open(tmp_path / "ledger", create=True)
    results = []
    for request in (R1, R2):
        chain = book.apply(lm)
        edit = kedit.edit(lm, "wise", request, apply=False, **SETTINGS)
        chain.stack.push(edit)
        results.append(book.append(edit, lm, chain).result_fingerprint)
        expected = score(lm, [(R1.text, R1.target_new), *UNRELATED])
        chain.revert()
        assert lm.state_fingerprint() == base_state and lm.routers == ()
    fresh = make_lm("llama")
    chain = book.apply(fresh)
    assert fresh.state_fingerprint() == results[-1] and len(fresh.routers) == 1
    assert fresh.routers[-1].state.count == 2
    assert score(fresh, [(R1.text, R1.target_new), *UNRELATED]) == expected
    chain.revert()
    assert fresh.state_fingerprint() == base_state
    with pytest.raises(LedgerError, match="cannot export"):
        export_merged(book, fresh, tmp_path / "merged")
