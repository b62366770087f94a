"""GRACE: the codebook rules (add, split halving both radii, expand, inside) on hand-made keys; the
adaptor leaves every position outside all radii bit for bit and replaces the ones inside; edits on
tiny random models reach their target, revert bit for bit, round-trip through save/load, grow one
codebook when kept in sequence (one adaptor deep), refuse a codebook they were not computed on, and
score the same under prefix-tree packing, left-padded batches and one unpadded forward per pair.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from torch import nn

import kedit
from kedit.edits import EditStack
from kedit.errors import EditStateError, KeditWarning
from kedit.evaluate.runner import run_bench
from kedit.ledger import Ledger, LedgerError, export_merged
from kedit.methods import load_edit
from kedit.methods.grace import BOUNDARY_SLACK, Entry, GRACEAdaptor, nearest, update_codebook
from kedit.models import scoring
from kedit.models.scoring import encode_pair, score
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.runs import read_lines

# one-token targets: on a 3-layer random model a value at one position cannot spell a longer word
R1 = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "German", target_true="French")
R2 = EditRequest("{} plays the sport of", "Lionel Messi", "city", target_true="football")
R3 = EditRequest("{} was a physicist who worked in", "Albert Einstein", "Rome", target_true="Berlin")
UNRELATED = [("The Nile is a river in", "Africa"), ("Berlin is the capital of", "Germany")]
LAYER = 1
SETTINGS = {"layer": LAYER, "eps_init": 0.5, "n_iter": 40}


def entry(key, label, radius=1.0, value=None):
    key = torch.tensor(key, dtype=torch.float32)
    return Entry(key, torch.zeros(2) if value is None else torch.tensor(value), radius, label)


# --------------------------------------------------------------------------------- codebook rules


def test_a_far_key_is_added_and_a_conflicting_label_inside_range_splits_both_radii_to_half_the_gap():
    book = (entry([0.0, 0.0], "A", radius=1.0),)
    far = update_codebook(book, torch.tensor([3.0, 0.0]), "B", torch.ones(2), eps_init=1.0)
    assert far.action == "add" and far.trained == 1 and far.distance == pytest.approx(3.0)
    assert [e.radius for e in far.entries] == [1.0, 1.0]  # 3 > 1 + 1: the balls cannot overlap
    near = update_codebook(book, torch.tensor([0.0, 1.5]), "B", torch.ones(2), eps_init=1.0)
    assert near.action == "split" and near.trained == 1
    assert [e.radius for e in near.entries] == [0.75, 0.75]  # d = 1.5 ≤ 1 + 1, both halved to d/2
    assert near.entries[0].key is book[0].key and torch.equal(near.entries[1].key, torch.tensor([0.0, 1.5]))


def test_the_same_label_widens_the_nearest_radius_to_the_query_or_moves_the_key():
    book = (entry([0.0, 0.0], "A", radius=1.0), entry([10.0, 0.0], "C", radius=1.0))
    widened = update_codebook(book, torch.tensor([1.5, 0.0]), "A", torch.ones(2), eps_init=1.0)
    assert widened.action == "expand" and widened.trained == 0 and len(widened.entries) == 2
    assert widened.entries[0].radius == 1.5 * (1 + BOUNDARY_SLACK) and widened.entries[1] is book[1]
    moved = update_codebook(book, torch.tensor([1.5, 0.0]), "A", torch.ones(2), eps_init=1.0,
                            eps_expand="moving_average")
    assert torch.equal(moved.entries[0].key, torch.tensor([0.75, 0.0])) and moved.entries[0].radius == widened.entries[0].radius
    inside = update_codebook(book, torch.tensor([0.5, 0.0]), "A", torch.ones(2), eps_init=1.0)
    assert inside.action == "inside" and inside.entries == book and inside.trained == 0


def test_nearest_breaks_ties_towards_the_newest_entry_and_measures_exactly():
    keys = torch.tensor([[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    index, distance = nearest(keys, torch.tensor([[1.0, 0.0], [4.0, 5.0]]))
    assert index.tolist() == [1, 2] and distance.tolist() == [0.0, 1.0]


def test_outside_every_radius_the_output_is_bit_for_bit_the_modules_inside_it_is_the_value():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    entries = (entry([1.0, 0.0, 0.0], "A", radius=0.5, value=[7.0, 8.0]),
               entry([0.0, 4.0, 0.0], "B", radius=1.0, value=[-1.0, -2.0]))
    adaptor = GRACEAdaptor(layer, entries, "test")
    x = torch.tensor([[[1.2, 0.1, 0.0], [5.0, 5.0, 5.0], [0.0, 3.2, 0.5], [1.0, 0.6, 0.0]]])  # (1, 4, 3)
    out = adaptor(x)
    own = layer(x)
    assert out[0, 0].tolist() == [7.0, 8.0] and out[0, 2].tolist() == [-1.0, -2.0]  # within 0.5 and 1.0
    assert torch.equal(out[0, 1], own[0, 1]) and torch.equal(out[0, 3], own[0, 3])  # d = 0.61 > 0.5: untouched
    assert [name for name, _ in adaptor.named_parameters()] == ["weight", "bias"]
    assert adaptor.weight is layer.weight and adaptor.in_features == 3


# ---------------------------------------------------------------------------------- on tiny models


def test_an_edit_takes_leaves_unrelated_prompts_bit_for_bit_and_reverts_exactly(make_lm):
    lm = make_lm("llama")
    path = lm.anatomy.mlp_out_paths[LAYER]
    original = lm.module(path)
    weights = {n: t.clone() for n, t in lm.model.state_dict().items()}
    state = lm.state_fingerprint()
    before = score(lm, UNRELATED)
    edit = kedit.edit(lm, "grace", R1, **SETTINGS)
    assert edit.kind == "module-swap" and edit.info["targets_reached"] == [True]
    assert isinstance(lm.module(path), GRACEAdaptor) and lm.module(path).base is original
    assert lm.state_fingerprint() != state
    after = score(lm, UNRELATED)
    assert [s.log_probs for s in after] == [s.log_probs for s in before]  # outside the radius: nothing moves
    assert all(score(lm, [(R1.text, R1.target_new)])[0].hits)
    edit.revert(lm)
    assert lm.module(path) is original and lm.state_fingerprint() == state
    assert all(torch.equal(t, weights[n]) for n, t in lm.model.state_dict().items())


def test_sequential_edits_grow_one_codebook_one_adaptor_deep_and_unwind_in_order(make_lm):
    lm = make_lm("llama")
    path = lm.anatomy.mlp_out_paths[LAYER]
    original = lm.module(path)
    with EditStack(lm) as stack:
        for request in (R1, R2, R3):
            stack.push(kedit.edit(lm, "grace", request, apply=False, **SETTINGS))
        adaptor = lm.module(path)
        assert isinstance(adaptor, GRACEAdaptor) and adaptor.base is original and len(adaptor.entries) == 3
        assert all(all(s.hits) for s in score(lm, [(r.text, r.target_new) for r in (R1, R2, R3)]))
        stack.pop()
        assert len(lm.module(path).entries) == 2
    stack.verify_restored()
    assert lm.module(path) is original


def test_a_conflicting_edit_of_the_same_prompt_replaces_its_entry_and_the_new_label_answers(make_lm):
    lm = make_lm("llama")
    first = kedit.edit(lm, "grace", R1, **SETTINGS)
    second = kedit.edit(lm, "grace", EditRequest(R1.prompt, R1.subject, "Paris"), **SETTINGS)
    assert second.info["requests"][0]["action"] == "replace" and second.info["requests"][0]["distance"] == 0.0
    book = lm.module(lm.anatomy.mlp_out_paths[LAYER]).entries
    assert [e.radius for e in book] == [0.5] and [e.label for e in book] == ["Paris"]
    assert all(score(lm, [(R1.text, "Paris")])[0].hits)
    second.revert(lm)
    assert [e.label for e in lm.module(lm.anatomy.mlp_out_paths[LAYER]).entries] == ["German"]
    first.revert(lm)


def test_an_edit_made_on_a_codebook_is_refused_on_another(make_lm):
    lm = make_lm("llama")
    first = kedit.edit(lm, "grace", R1, **SETTINGS)
    second = kedit.edit(lm, "grace", R2, apply=False, **SETTINGS)
    first.revert(lm)
    with pytest.raises(EditStateError, match="apply the edits it was made after first"):
        second.apply(lm)
    assert not second.is_applied


def test_save_load_round_trip_and_the_sequence_edit_give_the_same_scores(make_lm, tmp_path):
    lm = make_lm("llama")
    probes = [(R1.text, R1.target_new), (R2.text, R2.target_new), *UNRELATED]
    combined = kedit.edit(lm, "grace", [R1, R2], mode="sequential", apply=False, **SETTINGS)
    assert len(combined.swaps) == 2
    combined.apply(lm)
    expected = score(lm, probes)
    assert len(lm.module(lm.anatomy.mlp_out_paths[LAYER]).entries) == 2
    combined.revert(lm)
    loaded = load_edit(combined.save(tmp_path / "grace"))
    loaded.apply(lm)
    assert score(lm, probes) == expected
    loaded.revert(lm)
    batch = kedit.edit(lm, "grace", [R1, R2], **SETTINGS)  # one call, the requests in order: the same codebook
    assert score(lm, probes) == expected
    batch.revert(lm)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_tree_packed_left_padded_and_one_forward_per_pair_score_alike(make_lm, architecture, monkeypatch):
    lm = make_lm(architecture)
    # a wide radius, so positions of the other prompts (and target tokens) fall inside it too
    edit = kedit.edit(lm, "grace", R1, apply=False, **(SETTINGS | {"eps_init": 3.0}))
    edit.apply(lm)
    pairs = [(R1.text, R1.target_new), (R1.text, "French"), (R1.text + " the", "language"), *UNRELATED]
    packed = score(lm, pairs)
    monkeypatch.setattr(scoring, "tree_packing_supported", lambda model, longest: False)
    padded = score(lm, pairs)
    single = []
    for prompt, target in pairs:
        prompt_ids, target_ids = encode_pair(lm.tokenizer, prompt, target)
        ids = torch.tensor([prompt_ids + target_ids[:-1]])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, -len(target_ids):].log_softmax(-1)
        single.append(logits.gather(1, torch.tensor(target_ids)[:, None])[:, 0])
    adaptor = lm.module(lm.anatomy.mlp_out_paths[LAYER])
    keys = torch.stack([e.key for e in adaptor.entries])
    assert keys.shape[0] == 1
    for a, b, c in zip(packed, padded, single, strict=True):
        assert torch.allclose(torch.tensor(a.log_probs), c, atol=1e-5)
        assert torch.allclose(torch.tensor(b.log_probs), c, atol=1e-5)
    edit.revert(lm)


def test_the_runner_edits_in_sequence_and_resumes_from_the_saved_parts(make_lm, tmp_path):
    cases = [Case(r, rephrases=(r.text,), locality=(LocalityProbe(*UNRELATED[0]),)) for r in (R1, R2, R3)]
    lm = make_lm("llama")
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeditWarning)
        run_bench(lm, "grace", cases, mode="sequential:1", out_dir=out, overrides=SETTINGS, progress=False)
        first = read_lines(out / "results.jsonl")
        stored = sorted((out / "edits").iterdir())
        assert len(stored) == 3
        shutil.rmtree(stored[-1])  # as if killed before the last edit was kept
        (out / "results.jsonl").unlink()
        run_bench(lm, "grace", cases, mode="sequential:1", out_dir=out, overrides=SETTINGS, progress=False,
                  resume=True)
    again = read_lines(out / "results.jsonl")
    assert [(r["token"], r["probability"]) for r in again] == [(r["token"], r["probability"]) for r in first]
    assert all(r["edit"]["target_reached"] for r in again)
    assert not isinstance(lm.module(lm.anatomy.mlp_out_paths[LAYER]), GRACEAdaptor)


def test_grace_edits_go_into_a_ledger_and_a_fresh_load_replays_the_same_codebook(make_lm, tmp_path):
    lm = make_lm("llama")
    base_state = lm.state_fingerprint()
    book = Ledger.open(tmp_path / "ledger", create=True)
    states = []
    for request in (R1, R2):
        chain = book.apply(lm)
        edit = kedit.edit(lm, "grace", request, apply=False, **SETTINGS)
        chain.stack.push(edit)
        states.append(book.append(edit, lm, chain).result_fingerprint)
        chain.revert()
        assert lm.state_fingerprint() == base_state
    fresh = make_lm("llama")
    chain = book.apply(fresh)
    assert fresh.state_fingerprint() == states[-1]
    assert [e.label for e in fresh.module(fresh.anatomy.mlp_out_paths[LAYER]).entries] == ["German", "city"]
    assert all(all(s.hits) for s in score(fresh, [(R1.text, R1.target_new), (R2.text, R2.target_new)]))
    chain.revert()
    assert fresh.state_fingerprint() == base_state
    with pytest.raises(LedgerError, match="cannot export"):
        export_merged(book, fresh, tmp_path / "merged")
