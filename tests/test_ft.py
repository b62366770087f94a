"""FT-L / FT-M (kedit.methods.ft) and the SSS regulariser (SPEC-ALGORITHMS C): the losses against
hand-computed cross-entropies, SSS against its analytic gradient, the L∞ bound, learning, bit-exact
restore and revert, and clear errors for bad hyperparameters."""

from __future__ import annotations

import math

import pytest
import torch

import kedit
from kedit.errors import KeditError
from kedit.methods import ft as ft_module
from kedit.methods import get_method
from kedit.methods.ft import (
    PROMPT_LAST,
    TARGET_NEW,
    FTLHparams,
    FTMHparams,
    chunk_objective,
    encode_chunk,
)
from kedit.methods.losses import masked_nll, regularised_objective, sss_penalty
from kedit.models import weights_fingerprint
from kedit.models.batching import pad_left
from kedit.models.scoring import encode_pair, score
from kedit.models.tracing import final_hidden, logits_from_hidden
from kedit.requests import EditRequest

REQUESTS = [
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French"),
    EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball"),
    EditRequest("The official language of {} is", "Brazil", "Spanish guitar", target_true="Portuguese"),
]


def _snapshot(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def _assert_same_state(lm, expected: dict[str, torch.Tensor]) -> None:
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), f"{name} differs"
    assert weights_fingerprint(lm.model) == lm.fingerprint
    assert not any(parameter.requires_grad for parameter in lm.model.parameters())


# --------------------------------------------------------------------------- the losses


def _hand_nll(logits: list[list[float]], label: int) -> float:
    row = logits
    return -(row[label] - math.log(sum(math.exp(v) for v in row)))


def test_masked_nll_matches_hand_cross_entropy_and_ignores_prompt_labels():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[1, 4, 2, 0], [3, 3, 1, 2]])
    # row 0: prompt, prompt, target, target; row 1: prompt, target, target, target
    mask = torch.tensor([[False, False, True, True], [False, True, True, True]])
    expected_rows = []
    for row in range(2):
        terms = [_hand_nll(logits[row, t].tolist(), int(labels[row, t])) for t in range(4) if mask[row, t]]
        expected_rows.append(sum(terms) / len(terms))  # mean over the request's target tokens
    expected = sum(expected_rows) / 2  # then over requests
    loss = masked_nll(logits, labels, mask)
    assert loss.dtype == torch.float64
    assert float(loss) == pytest.approx(expected, rel=1e-12)

    relabelled = labels.clone()
    relabelled[0, 0], relabelled[0, 1], relabelled[1, 0] = 4, 0, 0  # change every prompt label
    assert torch.equal(masked_nll(logits, relabelled, mask), loss)

    target_changed = labels.clone()
    target_changed[0, 2] = 3  # a target label does matter
    assert float(masked_nll(logits, target_changed, mask)) != pytest.approx(expected, rel=1e-6)


def test_ft_l_reads_every_target_token_from_the_last_prompt_distribution():
    generator = torch.Generator().manual_seed(4)
    last = torch.randn(2, 1, 6, generator=generator, dtype=torch.float64)  # (B, 1, V)
    labels = torch.tensor([[0, 2, 5], [0, 0, 4]])
    mask = torch.tensor([[True, True, True], [False, False, True]])
    row0 = sum(_hand_nll(last[0, 0].tolist(), t) for t in (2, 5, 0)) / 3
    row1 = _hand_nll(last[1, 0].tolist(), 4)
    assert float(masked_nll(last, labels, mask)) == pytest.approx((row0 + row1) / 2, rel=1e-12)


def _toy_sss_expected(hidden, weight, labels, mask):
    """g = ∂L/∂h by hand for logits = h Wᵀ: (softmax(z) − onehot(y)) W / (n_b · B) at masked positions."""
    batch = hidden.shape[0]
    gradient = torch.zeros_like(hidden)
    for b in range(batch):
        count = int(mask[b].sum())
        for t in range(hidden.shape[1]):
            if mask[b, t]:
                probs = torch.softmax(hidden[b, t] @ weight.T, dim=-1)
                probs[labels[b, t]] -= 1.0
                gradient[b, t] = probs @ weight / (count * batch)
    return float(gradient.pow(2).sum())


def test_sss_equals_the_sum_of_squares_of_the_analytic_hidden_gradient():
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 6, 2], [3, 1, 5]])
    mask = torch.tensor([[False, True, True], [True, True, True]])
    loss = masked_nll(hidden @ weight.T, labels, mask)
    sss = sss_penalty(loss, hidden)
    assert float(sss.detach()) == pytest.approx(_toy_sss_expected(hidden.detach(), weight.detach(), labels, mask), rel=1e-10)

    # differentiable: the gradient of SSS w.r.t. the weights agrees with finite differences
    def penalty(w: torch.Tensor) -> torch.Tensor:
        return sss_penalty(masked_nll(hidden @ w.T, labels, mask), hidden)
    assert torch.autograd.gradcheck(penalty, (weight,))


def test_regularised_objective_mixes_the_terms_and_is_the_plain_loss_at_zero():
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(1, 2, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    labels, mask = torch.tensor([[1, 2]]), torch.tensor([[True, True]])
    loss = masked_nll(hidden @ weight.T, labels, mask)

    plain = regularised_objective(loss, hidden, 0.0)
    assert plain.total is loss and plain.sss is None

    sss = float(sss_penalty(loss, hidden).detach())
    assert sss > 0
    full = regularised_objective(loss, hidden, 1.0)
    assert float(full.total.detach()) == pytest.approx(sss, rel=1e-12)
    mixed = regularised_objective(loss, hidden, 0.9)
    assert float(mixed.total.detach()) == pytest.approx(0.1 * float(loss.detach()) + 0.9 * sss, rel=1e-12)


@pytest.mark.parametrize("architecture", ["gpt2", "gemma3"])
def test_chunk_losses_agree_with_unpadded_forwards(make_lm, architecture):
    """FT-M's loss is the mean over requests of −mean target log-prob that score() reports; FT-L's is
    the mean over each target's tokens of −log p(token) from the distribution after the whole prompt,
    computed here one unpadded prompt at a time (padding and positions must not change it)."""
    lm = make_lm(architecture)
    scores = score(lm, [(r.text, r.target_new) for r in REQUESTS])
    assert max(len(s.target_ids) for s in scores) > 1  # a multi-token target is among them
    ft_m = chunk_objective(lm, encode_chunk(lm, REQUESTS, TARGET_NEW), 0.0)
    assert float(ft_m.total) == pytest.approx(-sum(s.mean_log_prob for s in scores) / len(scores), rel=1e-5)

    expected = []
    for request in REQUESTS:
        prompt_ids, target_ids = encode_pair(lm.tokenizer, request.text, request.target_new)
        with torch.no_grad():
            hidden = final_hidden(lm, pad_left([prompt_ids], lm.pad_token_id))[0, -1]
            log_probs = torch.log_softmax(logits_from_hidden(lm, hidden), dim=-1)
        expected.append(-float(log_probs[target_ids].mean()))
    ft_l = chunk_objective(lm, encode_chunk(lm, REQUESTS, PROMPT_LAST), 0.0)
    assert float(ft_l.total) == pytest.approx(sum(expected) / len(expected), rel=1e-5)


# --------------------------------------------------------------------------- editing


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])  # Conv1D (stored transposed) and Linear
def test_ft_l_respects_its_linf_bound(make_lm, architecture):
    lm = make_lm(architecture)
    original = _snapshot(lm)
    epsilon = 1e-3
    method = get_method("ft-l")
    hparams = method.default_hparams(lm, overrides={"layers": [0, 2], "lr": 0.1, "num_steps": 4,
                                                    "norm_constraint": epsilon, "early_stop_loss": 0.0})
    edit = method.compute(lm, REQUESTS, hparams)
    _assert_same_state(lm, original)  # compute leaves the model as it was
    assert set(edit.deltas) == {lm.anatomy.mlp_out_weight(0), lm.anatomy.mlp_out_weight(2)}
    for delta in edit.deltas.values():
        largest = float(delta.abs().max())
        assert largest <= epsilon + 1e-7
        assert largest >= epsilon - 1e-7  # lr ≫ ε: the clamp is active somewhere
    assert edit.info["steps"] == 4 and edit.info["updates"] == 4
    assert edit.info["max_abs_delta"]["0"] == pytest.approx(epsilon, abs=1e-7)

    unbounded = method.compute(lm, REQUESTS, FTLHparams(layers=(0,), lr=0.1, num_steps=4,
                                                        norm_constraint=None, early_stop_loss=0.0))
    assert float(unbounded.deltas[lm.anatomy.mlp_out_weight(0)].abs().max()) > 10 * epsilon


def test_ft_m_raises_the_target_probability_and_reverts_bit_for_bit(make_lm):
    lm = make_lm("llama")
    original = _snapshot(lm)
    pairs = [(r.text, r.target_new) for r in REQUESTS]
    before = [s.mean_log_prob for s in score(lm, pairs)]
    edit = kedit.edit(lm, "ft-m", REQUESTS, layers=[1], lr=1e-2, num_steps=30, apply=False)
    _assert_same_state(lm, original)
    losses = edit.info["losses"]
    assert losses[-1] < 0.5 * losses[0]
    assert edit.info["sss"] == [] and edit.info["objective_values"] == losses  # sss_coef 0: the plain loss

    edit.apply(lm)
    after = [s.mean_log_prob for s in score(lm, pairs)]
    for old, new in zip(before, after, strict=True):
        assert new > old + 1.0  # each target gains more than one nat per token
    name = lm.anatomy.mlp_out_weight(1)
    assert torch.equal(lm.parameter(name), original[name] + edit.deltas[name])
    edit.revert(lm)
    _assert_same_state(lm, original)


@pytest.mark.parametrize("architecture", ["gpt2", "gemma3"])  # gemma3: SSS through the logit soft-cap
def test_sss_is_recorded_and_mixed_into_the_objective(make_lm, architecture):
    lm = make_lm(architecture)
    hparams = FTMHparams(layers=(1,), lr=1e-2, num_steps=3, sss_coef=0.9, early_stop_loss=0.0)
    edit = get_method("ft-m").compute(lm, REQUESTS, hparams)
    info = edit.info
    assert len(info["sss"]) == len(info["losses"]) == 3
    for loss, sss, total in zip(info["losses"], info["sss"], info["objective_values"], strict=True):
        assert sss > 0
        assert total == pytest.approx(0.1 * loss + 0.9 * sss, rel=1e-6)


def test_batch_size_splits_the_requests_into_updates(make_lm):
    lm = make_lm("llama")
    hparams = FTMHparams(layers=(1,), lr=1e-3, num_steps=2, batch_size=2, early_stop_loss=0.0)
    edit = get_method("ft-m").compute(lm, REQUESTS, hparams)
    assert edit.info["updates"] == 2 * 2  # 3 requests in chunks of 2 and 1, two steps


def test_early_stop_when_the_loss_is_below_the_threshold(make_lm):
    lm = make_lm("llama")
    hparams = FTMHparams(layers=(1,), num_steps=10, early_stop_loss=1e9)
    edit = get_method("ft-m").compute(lm, REQUESTS, hparams)
    assert edit.info["steps"] == 1 and edit.info["updates"] == 0 and edit.info["early_stopped"]
    assert all(not torch.any(delta) for delta in edit.deltas.values())


def test_a_failing_run_still_restores_the_model(make_lm, monkeypatch):
    """The second forward fails after one Adam update changed the weights: they are put back."""
    lm = make_lm("llama")
    original = _snapshot(lm)
    real = ft_module.chunk_objective
    calls = []

    def failing_on_second_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            assert not torch.equal(lm.parameter(lm.anatomy.mlp_out_weight(1)), original[lm.anatomy.mlp_out_weight(1)])
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(ft_module, "chunk_objective", failing_on_second_call)
    hparams = FTMHparams(layers=(1,), lr=1e-2, num_steps=5, early_stop_loss=0.0)
    with pytest.raises(RuntimeError, match="interrupted"):
        get_method("ft-m").compute(lm, REQUESTS, hparams)
    _assert_same_state(lm, original)


# --------------------------------------------------------------------------- hyperparameters


def test_defaults_use_romes_layer_and_the_methods_bounds(make_lm):
    lm = make_lm("llama")
    rome_layer = get_method("rome").default_hparams(lm).layer
    ft_l = get_method("ft-l").default_hparams(lm)
    ft_m = get_method("ft-m").default_hparams(lm)
    assert ft_l.layers == ft_m.layers == (rome_layer,)
    assert ft_l.norm_constraint == 5e-4 and ft_m.norm_constraint is None
    assert ft_l.sss_coef == 0.0 and ft_l.num_steps == 25 and ft_l.lr == 5e-4
    # EasyEdit spellings
    assert get_method("ft-m").default_hparams(lm, overrides={"norm_constraint": False}).norm_constraint is None
    assert get_method("ft-l").default_hparams(lm, overrides={"layer": 2}).layers == (2,)
    assert get_method("ft-l").default_hparams(lm, overrides={"objective_optimization": "prompt_last"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sss_coef": 1.5}, "sss_coef"),
        ({"sss_coef": -0.1}, "sss_coef"),
        ({"norm_constraint": -1e-3}, "norm_constraint"),
        ({"layers": [99]}, "out of range"),
        ({"layers": [2, 1]}, "ascending"),
        ({"num_steps": 0}, "num_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"objective_optimization": "target_new"}, "ft-m"),
        ({"nun_steps": 3}, "num_steps"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(make_lm, overrides, message):
    lm = make_lm("llama")
    with pytest.raises(KeditError, match=message):
        get_method("ft-l").default_hparams(lm, overrides=overrides)


def test_compute_checks_layers_against_the_model(make_lm):
    lm = make_lm("llama")
    with pytest.raises(KeditError, match="out of range"):
        get_method("ft-m").compute(lm, REQUESTS, FTMHparams(layers=(7,)))
    with pytest.raises(KeditError, match="at least one request"):
        get_method("ft-m").compute(lm, [], FTMHparams(layers=(1,)))


def test_exponent_numbers_without_a_dot_are_numbers_in_overrides_and_files(make_lm, tmp_path):
    """PyYAML reads `5e-4` as a string (YAML 1.1); every paper's config writes it that way."""
    from kedit.methods.hparams import parse_override

    assert parse_override("norm_constraint=5e-4") == ("norm_constraint", 5e-4)
    assert parse_override("lr=-1E+2") == ("lr", -100.0)
    assert parse_override("layers=[1e0]") == ("layers", [1.0])
    assert parse_override("name=e5") == ("name", "e5")  # not a number: stays text
    lm = make_lm("llama")
    user = tmp_path / "ft.yaml"
    user.write_text("lr: 2e-3\nnorm_constraint: 1e-3\n")
    hparams = get_method("ft-l").default_hparams(lm, user_file=user, overrides={})
    assert (hparams.lr, hparams.norm_constraint) == (2e-3, 1e-3)


def test_a_method_section_of_a_shared_defaults_file_applies_to_that_method_only(make_lm, tmp_path):
    from types import SimpleNamespace

    from kedit.methods.ft import DEFAULTS_YAML
    from kedit.methods.hparams import load_defaults

    lm = make_lm("llama")  # loaded as "tiny-llama"
    shared = tmp_path / "ft.yaml"
    shared.write_text("generic:\n  lr: 1.0e-3\nmodels:\n  tiny-llama:\n    num_steps: 7\n"
                      "ft-l:\n  generic:\n    lr: 2e-3\n  models:\n    tiny-llama:\n      norm_constraint: 1e-2\n")
    assert load_defaults(shared, lm) == {"lr": 1e-3, "num_steps": 7}
    assert load_defaults(shared, lm, "ft-l") == {"lr": 2e-3, "num_steps": 7, "norm_constraint": 1e-2}
    assert load_defaults(shared, lm, "ft-m") == {"lr": 1e-3, "num_steps": 7}
    assert load_defaults(shared, None, "ft-l") == {"lr": 2e-3}
    # The shipped file: the bound tuned for the bundled SmolLM2 is FT-L's alone.
    smollm2 = SimpleNamespace(source="smollm2-135m", model=SimpleNamespace(config=SimpleNamespace(model_type="llama")))
    assert load_defaults(DEFAULTS_YAML, smollm2, "ft-l")["norm_constraint"] == 1e-2
    assert "norm_constraint" not in load_defaults(DEFAULTS_YAML, smollm2, "ft-m")
    assert "norm_constraint" not in load_defaults(DEFAULTS_YAML, lm, "ft-l")  # other models: the dataclass's 5e-4
