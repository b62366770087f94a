"""KN (kedit.methods.kn, SPEC-ALGORITHMS J): integrated gradients against the analytic Riemann sum and
the closed-form integral of a hand-built two-neuron MLP; the model wiring (cached prefix, rows of
several layers in one forward, skipped lower blocks) against plain forwards, one per α; the adaptive
threshold and the refining on hand-made attributions; the edit rule by hand and that it moves exactly
the selected value slots; the method through kedit.edit, save/load and a bit-exact revert."""

from __future__ import annotations

import math

import pytest
import torch

import kedit
from kedit.errors import KeditError
from kedit.methods import get_method
from kedit.methods.kn import KNHparams, knowledge_neuron_update, neuron_deltas
from kedit.methods.kn_attribution import (
    coarse_neurons,
    integrated_gradients,
    prompt_attributions,
    refine_neurons,
    riemann_alphas,
)
from kedit.models import weights_fingerprint
from kedit.models.batching import encode
from kedit.models.tracing import final_hidden, logits_from_hidden
from kedit.requests import EditRequest

# the tiny random models never learn their targets; the outcome check says so, which is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")

# ------------------------------------------------------------------------- a hand-built two-neuron MLP

X = torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64)
W_IN = torch.tensor([[1.5, -0.3, 0.8], [-0.6, -1.1, 0.2]], dtype=torch.float64)  # 2 neurons x 3 inputs
W_OUT = torch.tensor([[2.0, -1.0], [-0.5, 1.5]], dtype=torch.float64)  # 2 classes x 2 neurons
BIAS = torch.tensor([0.3, -0.2], dtype=torch.float64)
ANSWER, OTHER = 0, 1


def _activation() -> torch.Tensor:
    """ā: the two intermediate neurons (post-activation, as the paper attributes) of input X."""
    return torch.relu(W_IN @ X)  # (0.84 + 0.36 + 0.32, -0.42 + 1.32 + 0.08) = (1.52, 0.98)


def _probability(points: torch.Tensor) -> torch.Tensor:
    """P(answer) of the MLP's output layer for each row of intermediate values (rows, 2)."""
    return torch.softmax(points @ W_OUT.T + BIAS, dim=-1)[:, ANSWER]


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


# Two classes: P(α) = σ(α s + c) with s = (W_y − W_o)·ā, c = b_y − b_o, so ∂P/∂a_i = σ'(α s + c) d_i
# with d = W_y − W_o. The m-step sum is ā_i d_i (1/m) Σ_k σ'(α_k s + c); the integral is
# ā_i d_i (σ(s + c) − σ(c)) / s.
def _riemann_by_hand(alphas: list[float]) -> list[float]:
    a = _activation().tolist()
    d = (W_OUT[ANSWER] - W_OUT[OTHER]).tolist()
    s, c = sum(ai * di for ai, di in zip(a, d, strict=True)), float(BIAS[ANSWER] - BIAS[OTHER])
    mean_slope = sum(_sigmoid(al * s + c) * (1 - _sigmoid(al * s + c)) for al in alphas) / len(alphas)
    return [ai * di * mean_slope for ai, di in zip(a, d, strict=True)]


def _closed_form() -> list[float]:
    a = _activation().tolist()
    d = (W_OUT[ANSWER] - W_OUT[OTHER]).tolist()
    s, c = sum(ai * di for ai, di in zip(a, d, strict=True)), float(BIAS[ANSWER] - BIAS[OTHER])
    return [ai * di * (_sigmoid(s + c) - _sigmoid(c)) / s for ai, di in zip(a, d, strict=True)]


def test_riemann_grids_are_the_paper_s_and_the_codes():
    assert riemann_alphas(4, "right").tolist() == [0.25, 0.5, 0.75, 1.0]  # k/m, k = 1..m
    assert riemann_alphas(4, "left").tolist() == [0.0, 0.25, 0.5, 0.75]  # Hunter-DDM scaled_input
    assert riemann_alphas(5, "linspace").tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]  # EleutherAI / EasyEdit
    assert riemann_alphas(1, "linspace").tolist() == [0.0]  # EasyEdit's steps: 1 (Llama files)
    with pytest.raises(ValueError, match="ig_grid"):
        riemann_alphas(4, "middle")


@pytest.mark.parametrize("grid", ["right", "left", "linspace"])
def test_integrated_gradients_of_a_two_neuron_mlp_equal_the_analytic_riemann_sum(grid):
    alphas = riemann_alphas(20, grid)
    found = integrated_gradients(_probability, _activation()[None], alphas)[0]
    assert found.tolist() == pytest.approx(_riemann_by_hand(alphas.tolist()), rel=1e-12, abs=1e-15)


def test_integrated_gradients_converge_to_the_closed_form_integral():
    exact = _closed_form()
    errors = []
    for steps in (5, 20, 200, 2000):
        found = integrated_gradients(_probability, _activation()[None], riemann_alphas(steps, "right"))[0]
        errors.append(max(abs(f - e) for f, e in zip(found.tolist(), exact, strict=True)))
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-3 * max(abs(e) for e in exact)
    assert 9.0 < errors[2] / errors[3] < 11.0  # a Riemann sum's error falls as 1/m
    # a left and a right sum of the same m bracket the integral of this monotone integrand (σ' is
    # monotone on [c, s + c] here: both are below 0, where σ' rises)
    right = integrated_gradients(_probability, _activation()[None], riemann_alphas(20, "right"))[0]
    left = integrated_gradients(_probability, _activation()[None], riemann_alphas(20, "left"))[0]
    for r, lo, e in zip(right.tolist(), left.tolist(), exact, strict=True):
        assert min(r, lo) <= e <= max(r, lo)
    # completeness: the attributions of the exact integral add up to P(ā) − P(0)
    total = float(_probability(_activation()[None])[0] - _probability(torch.zeros(1, 2, dtype=torch.float64))[0])
    assert sum(exact) == pytest.approx(total, rel=1e-12)


def test_integrated_gradients_of_several_vectors_are_independent():
    """n vectors in one call give what each gives alone (rows of a batch never mix)."""
    vectors = torch.stack([_activation(), torch.tensor([0.3, 2.0], dtype=torch.float64)])
    alphas = riemann_alphas(7, "right")
    together = integrated_gradients(_probability, vectors, alphas)
    for row in range(2):
        alone = integrated_gradients(_probability, vectors[row:row + 1], alphas)[0]
        assert torch.allclose(together[row], alone, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- wiring on a real model


def _brute_force(lm, text: str, answer: int, layer: int, alphas: torch.Tensor) -> torch.Tensor:
    """Attr of one layer from plain forwards of the whole prompt, one per α (no cache, no batching)."""
    ids = torch.tensor([encode(lm.tokenizer, text)])
    module = lm.module(lm.anatomy.mlp_out_paths[layer])
    seen = {}
    handle = module.register_forward_pre_hook(lambda _m, args: seen.setdefault("a", args[0][0, -1].detach().clone()))
    with torch.no_grad():
        lm.model(input_ids=ids)
    handle.remove()
    activation = seen["a"].float()
    total = torch.zeros_like(activation)
    for alpha in alphas.tolist():
        point = (alpha * activation).requires_grad_(True)

        def replace(_module, args, point=point):
            x = args[0].clone()
            x[0, -1] = point
            return (x,)
        handle = module.register_forward_pre_hook(replace)
        try:
            with torch.enable_grad():
                hidden = final_hidden(lm, {"input_ids": ids, "use_cache": False})
                probability = torch.softmax(logits_from_hidden(lm, hidden[:, -1]).float(), dim=-1)[0, answer]
                (gradient,) = torch.autograd.grad(probability, point)
        finally:
            handle.remove()
        total += gradient
    return activation * total / len(alphas)


@pytest.mark.parametrize("rows_per_forward", [4, 100])
def test_model_attributions_equal_plain_forwards_one_alpha_at_a_time(lm, rows_per_forward):
    text, answer = "The Eiffel Tower is located in the city of", 7
    alphas = riemann_alphas(4, "right")
    layers = list(range(lm.anatomy.num_layers))
    found = prompt_attributions(lm, text, answer, layers, alphas, rows_per_forward)
    assert found.answer_id == answer and found.scores.shape == (len(layers), lm.anatomy.key_size)
    for row, layer in enumerate(layers):
        expected = _brute_force(lm, text, answer, layer, alphas)
        assert torch.allclose(found.scores[row], expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    uncached = prompt_attributions(lm, text, answer, layers, alphas, rows_per_forward, use_cache=False)
    assert torch.allclose(found.scores, uncached.scores, rtol=1e-4, atol=1e-10)


# ------------------------------------------------------------------------------- threshold and refining


def test_adaptive_threshold_keeps_neurons_strictly_above_the_fraction_of_the_maximum():
    scores = torch.tensor([[0.1, 1.0, 0.25, 0.2], [0.19, 0.21, -3.0, 0.0]])
    assert coarse_neurons(scores, 0.2).tolist() == [[False, True, True, False], [False, True, False, False]]
    assert coarse_neurons(scores, 0.1).tolist() == [[False, True, True, True], [True, True, False, False]]
    assert not coarse_neurons(-scores.abs(), 0.2).any()  # nothing positive: no neuron expresses the fact


def _coarse(*rows: str) -> torch.Tensor:
    """Coarse masks of n prompts over 1 layer of len(row) neurons, written as strings of 0/1."""
    return torch.tensor([[[c == "1" for c in row]] for row in rows])


def test_refining_keeps_neurons_shared_by_more_than_the_fraction_and_adjusts_it_to_the_count_range():
    # counts per neuron over 5 prompts:  5  4  3  2  1  0
    coarse = _coarse("111110", "111100", "111000", "110000", "100000")
    plain = refine_neurons(coarse, 0.7)  # more than 3.5 prompts: counts 5 and 4
    assert plain.neurons[0].tolist() == [True, True, False, False, False, False] and plain.rounds == 0
    exact = refine_neurons(coarse, 0.6)  # more than 3 (not 3 itself)
    assert exact.neurons[0].tolist() == [True, True, False, False, False, False]
    # want 3 to 5 neurons: 0.7 -> 0.65 (> 3.25: 2) -> 0.6 (> 3: 2) -> 0.55 (> 2.75: 3 neurons)
    lowered = refine_neurons(coarse, 0.7, (3, 5), 0.05, 6)
    assert lowered.neurons[0].tolist() == [True, True, True, False, False, False]
    assert lowered.fraction == pytest.approx(0.55) and lowered.rounds == 3
    # want exactly 1: raised from 0.5 (> 2.5: 3 neurons) to 0.6 (2) to 0.8 (> 4: 1)
    raised = refine_neurons(coarse, 0.5, (1, 1), 0.1, 6)
    assert raised.neurons[0].tolist() == [True, False, False, False, False, False]
    assert raised.fraction == pytest.approx(0.8) and raised.rounds == 3
    capped = refine_neurons(coarse, 0.7, (3, 5), 0.05, 1)  # one round only: 0.65, still 2 neurons
    assert int(capped.neurons.sum()) == 2 and capped.rounds == 1
    nothing = refine_neurons(_coarse("000", "000"), 0.7, (2, 5), 0.05, 6)
    assert not nothing.neurons.any()  # no neuron is ever shared: the fraction runs out, none kept
    # 7 neurons in every one of 3 prompts, 1 in two: too many at every p < 1, none at p = 1 (more
    # than 3 of 3 prompts); the range is never hit and the closest non-empty count is kept (7 at
    # p = 0.7, visited first)
    jumpy = refine_neurons(_coarse("11111111", "11111111", "11111110"), 0.7, (2, 5), 0.1, 6)
    assert int(jumpy.neurons.sum()) == 7 and jumpy.fraction == pytest.approx(0.7) and jumpy.rounds == 3


# ----------------------------------------------------------------------------------------- the edit


def test_the_paper_rule_scales_the_embeddings_to_each_value_slot_and_the_code_s_rule_does_not():
    values = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    old, new = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.5])
    paper = knowledge_neuron_update(values, old, new, erase=1.0, write=8.0, rule="paper")
    # -1 * ‖v‖ * (1, 0) + 8 * ‖v‖ * (0, 1)
    assert paper.tolist() == [[-5.0, 40.0], [-1.0, 8.0]]
    code = knowledge_neuron_update(values, old, new, erase=2.0, write=2.0, rule="unnormalised")
    assert code.tolist() == [[-4.0, 1.0], [-4.0, 1.0]]


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])  # Linear (d_out, d_k) and GPT-2 Conv1D (d_k, d_out)
def test_the_edit_changes_exactly_the_selected_value_slots(make_lm, architecture):
    lm = make_lm(architecture)
    hparams = KNHparams()
    neurons = [(0, 5, 0.3), (2, 17, 0.2), (2, 3, 0.1)]
    old_ids, new_ids = [11, 12], [40]
    deltas = neuron_deltas(lm, neurons, old_ids, new_ids, hparams)
    assert set(deltas) == {lm.anatomy.mlp_out_weight(0), lm.anatomy.mlp_out_weight(2)}
    table = lm.model.get_input_embeddings().weight.detach()
    e_old, e_new = table[11] + table[12], table[40]
    for layer, chosen in ((0, [5]), (2, [3, 17])):
        name = lm.anatomy.mlp_out_weight(layer)
        delta = lm.anatomy.as_out_in(deltas[name])  # (d_out, d_k)
        assert deltas[name].shape == lm.parameter(name).shape
        changed = torch.nonzero(delta.abs().sum(dim=0)).flatten().tolist()
        assert changed == chosen
        weight = lm.anatomy.as_out_in(lm.parameter(name).detach())
        for index in chosen:
            norm = weight[:, index].norm()
            expected = norm * (8.0 * e_new / e_new.norm() - 1.0 * e_old / e_old.norm())
            assert torch.allclose(delta[:, index], expected, rtol=1e-6, atol=1e-7)


REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
FAST = {"ig_steps": 4, "refine_templates": [[5, 2]], "ig_batch_size": 8}


def test_kn_edits_through_kedit_edit_saves_loads_and_reverts_bit_for_bit(make_lm, tmp_path):
    lm = make_lm("llama")
    before = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    edit = kedit.edit(lm, "kn", [REQUEST], **FAST)
    details = edit.info["requests"][0]
    assert details["prompts"] == 3 and len(details["coarse_per_prompt"]) == 3
    neurons = {(layer, index) for layer, index, _ in details["neurons"]}
    assert neurons, "the tiny model shares some neuron across its three prompts"
    for name, delta in edit.deltas.items():
        layer = next(lay for lay in range(lm.anatomy.num_layers) if lm.anatomy.mlp_out_weight(lay) == name)
        changed = torch.nonzero(lm.anatomy.as_out_in(delta).abs().sum(dim=0)).flatten().tolist()
        assert changed == sorted(index for lay, index in neurons if lay == layer)
    assert edit.is_applied
    edit.revert(lm)
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert weights_fingerprint(lm.model) == lm.fingerprint
    loaded = kedit.load_edit(edit.save(tmp_path / "kn-edit"))
    assert set(loaded.deltas) == set(edit.deltas)
    assert all(torch.equal(loaded.deltas[name], edit.deltas[name]) for name in edit.deltas)


def test_kn_hyperparameters_are_checked_and_easyedit_keys_accepted(make_lm):
    lm = make_lm("llama")
    method = get_method("kn")
    hparams = method.default_hparams(lm, overrides={"steps": 1, "batch_size": 1, "refine": False})
    assert (hparams.ig_steps, hparams.ig_batch_size, hparams.refine_templates) == (1, 1, ())
    for bad, match in (({"ig_grid": "middle"}, "ig_grid"), ({"adaptive_threshold": 0.0}, "adaptive_threshold"),
                       ({"update_rule": "x"}, "update_rule"), ({"layers": [7]}, "out of range"),
                       ({"refine_fraction": 1.5}, "refine_fraction")):
        with pytest.raises(KeditError, match=match):
            method.default_hparams(lm, overrides=bad)
