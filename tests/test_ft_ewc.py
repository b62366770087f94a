"""FT+EWC (kedit.methods.ft_ewc, SPEC-ALGORITHMS K): the penalty and the diagonal Fisher against hand
computations, λ = 0 giving FT-L's and FT-M's edits bit for bit, the penalty entering the objective,
the corpus Fisher's cache, GRACE's history form, and a sequential run that resumes exactly."""

from __future__ import annotations

import pytest
import torch

import kedit
from kedit.errors import KeditError
from kedit.evaluate.runner import run_bench
from kedit.methods import ft_ewc as ft_ewc_module
from kedit.methods import get_method
from kedit.methods.ft_ewc import FTEWCSession, history_fisher
from kedit.methods.losses import ewc_penalty
from kedit.requests import Case, EditRequest
from kedit.runs import read_lines
from kedit.stats import fisher as fisher_module
from kedit.stats.fisher import corpus_fisher, diagonal_fisher

# the tiny random models never learn their targets; the outcome check says so, which is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")

R1 = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
R2 = EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball")
R3 = EditRequest("The official language of {} is", "Brazil", "Spanish", target_true="Portuguese")


def test_ewc_penalty_equals_a_hand_computation_and_its_gradient():
    theta = [torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True), torch.tensor([0.5, 0.0, 2.0], requires_grad=True)]
    anchor = [torch.tensor([[0.0, 2.0], [1.0, 1.0]]), torch.tensor([0.5, 1.0, -1.0])]
    fisher = [torch.tensor([[2.0, 7.0], [0.5, 1.0]]), torch.tensor([3.0, 4.0, 0.25])]
    # Σ F (θ − θ*)²: 2·1 + 7·0 + 0.5·4 + 1·4  +  3·0 + 4·1 + 0.25·9 = 8 + 6.25 = 14.25
    value = ewc_penalty(theta, anchor, fisher, strength=0.5)  # Kirkpatrick: λ/2 with λ = 1
    assert float(value) == pytest.approx(0.5 * 14.25)
    value.backward()
    # ∂/∂θ = 2 s F (θ − θ*) with s = 0.5: F (θ − θ*)
    assert theta[0].grad.tolist() == [[2.0, 0.0], [1.0, -2.0]]
    assert theta[1].grad.tolist() == [0.0, -4.0, 0.75]
    assert float(ewc_penalty([a.clone() for a in anchor], anchor, fisher, 3.0)) == 0.0


def test_diagonal_fisher_is_the_mean_of_per_example_squared_gradients():
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
    examples = [(torch.tensor([1.0, 2.0]), 1.0), (torch.tensor([-1.0, 0.5]), 0.0), (torch.tensor([2.0, 1.0]), -1.0)]
    # loss_n = (w·x_n − t_n)², gradient 2 (w·x_n − t_n) x_n:
    #   (0.5 − 2 − 1) = −2.5 → (−5, −10);  (−0.5 − 0.5) = −1 → (2, −1);  (1 − 1 + 1) = 1 → (4, 2)
    found = diagonal_fisher([w], [lambda x=x, t=t: (w @ x - t) ** 2 for x, t in examples])[0]
    assert found.tolist() == pytest.approx([(25 + 4 + 16) / 3, (100 + 1 + 4) / 3])
    assert not w.requires_grad or w.grad is None  # no gradient left behind
    # GRACE's code never zeroes .grad, so it would square running sums: (−5)² + (−3)² + 1², not the above
    assert found[0] != pytest.approx((25 + 9 + 1) / 3)


def _fast(**extra):
    return {"num_steps": 6, "lr": 5e-3, "fisher_texts": 4, "fisher_text_tokens": 12, **extra}


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_lambda_zero_gives_ft_l_and_ft_m_bit_for_bit(make_lm, corpus_file, architecture):
    lm = make_lm(architecture)
    ft_l = kedit.edit(lm, "ft-l", [R1, R2], apply=False, num_steps=6, lr=5e-3, norm_constraint=2e-3)
    ewc_l = kedit.edit(lm, "ft-ewc", [R1, R2], apply=False, ewc_lambda=0.0, fisher_corpus=str(corpus_file),
                       **_fast(objective_optimization="prompt_last", norm_constraint=2e-3))
    ft_m = kedit.edit(lm, "ft-m", [R1, R2], apply=False, num_steps=6, lr=5e-3)
    ewc_m = kedit.edit(lm, "ft-ewc", [R1, R2], apply=False, ewc_lambda=0.0, fisher_corpus=str(corpus_file),
                       **_fast())
    for plain, ewc in ((ft_l, ewc_l), (ft_m, ewc_m)):
        assert set(plain.deltas) == set(ewc.deltas)
        for name in plain.deltas:
            assert torch.equal(plain.deltas[name], ewc.deltas[name]), name
        assert plain.info["losses"] == ewc.info["losses"]
        assert any(float(delta.abs().max()) > 0 for delta in ewc.deltas.values())


def test_the_penalty_enters_the_objective_and_pulls_towards_the_anchor(make_lm, corpus_file):
    lm = make_lm("llama")
    free = kedit.edit(lm, "ft-ewc", [R1], apply=False, ewc_lambda=0.0, fisher_corpus=str(corpus_file), **_fast())
    held = kedit.edit(lm, "ft-ewc", [R1], apply=False, ewc_lambda=1e6, fisher_corpus=str(corpus_file), **_fast())
    penalties = held.info["penalties"]
    assert penalties[0] == 0.0 and max(penalties) > 0  # θ = θ* before the first update
    for loss, penalty, objective in zip(held.info["losses"], penalties, held.info["objective_values"], strict=True):
        assert objective == pytest.approx(loss + penalty, rel=1e-6)
    name = lm.anatomy.mlp_out_weight(held.info["layers"][0])
    fisher = corpus_fisher(lm, [name], str(corpus_file), 4, 12)[name]

    def weighted(edit):  # Σ F Δθ²: what the penalty measures
        return float((fisher * edit.deltas[name].pow(2)).sum())
    assert weighted(held) < 0.5 * weighted(free)
    assert held.info["fisher_source"] == "corpus" and held.info["ewc_strength"] == 0.5e6


def test_the_corpus_fisher_is_cached_per_model_state(make_lm, corpus_file, monkeypatch):
    lm = make_lm("llama")
    name = lm.anatomy.mlp_out_weight(1)
    first = corpus_fisher(lm, [name], str(corpus_file), 3, 10)[name]
    assert first.shape == lm.parameter(name).shape and float(first.sum()) > 0

    def refuse(*_args, **_kwargs):
        raise AssertionError("recomputed although cached")
    monkeypatch.setattr(fisher_module, "diagonal_fisher", refuse)
    assert torch.equal(corpus_fisher(lm, [name], str(corpus_file), 3, 10)[name], first)
    with torch.no_grad():
        lm.parameter(name).add_(1e-3)  # another model state: another entry
    with pytest.raises(AssertionError, match="recomputed"):
        corpus_fisher(lm, [name], str(corpus_file), 3, 10)


def test_the_history_form_uses_the_most_recent_edits_including_the_current_one(make_lm):
    lm = make_lm("llama")
    method = get_method("ft-ewc")
    hparams = method.default_hparams(lm, overrides=_fast(fisher_source="history", fisher_history=2))
    session = method.open_session(lm, hparams)
    first = session.compute([R1])
    assert first.info["fisher_items"] == 1 and session.history == []
    first.apply(lm)
    session.applied(first)
    second = session.compute([R2, R3])
    assert second.info["fisher_items"] == 2  # R1 R2 R3, the last two
    name = lm.anatomy.mlp_out_weight(hparams.layers[0])
    expected = history_fisher(lm, [name], [R2, R3], hparams.objective_optimization)[0]
    assert second.info["fisher_sum"][name] == pytest.approx(float(expected.double().sum()), rel=1e-6)
    first.revert(lm)


def test_ft_ewc_hyperparameters_are_checked_and_grace_names_accepted(make_lm):
    lm = make_lm("llama")
    method = get_method("ft-ewc")
    hparams = method.default_hparams(lm, overrides={"edit_lr": 0.02, "n_iter": 7, "fisher_mem": 3, "layer": 1})
    assert (hparams.lr, hparams.num_steps, hparams.fisher_history, hparams.layers) == (0.02, 7, 3, (1,))
    for bad, match in (({"ewc_lambda": -1.0}, "ewc_lambda"), ({"ewc_form": "x"}, "ewc_form"),
                       ({"fisher_source": "x"}, "fisher_source"), ({"objective_optimization": "x"}, "objective")):
        with pytest.raises(KeditError, match=match):
            method.default_hparams(lm, overrides=bad)


class Crash(Exception):
    pass


def test_a_sequential_history_run_resumes_to_the_uninterrupted_records(make_lm, tmp_path, monkeypatch):
    lm = make_lm("llama")
    cases = [Case(request=r, rephrases=(r.text,)) for r in (R1, R2, R3)]
    overrides = _fast(fisher_source="history")
    run = {"mode": "sequential:1", "overrides": overrides, "progress": False}
    whole = run_bench(lm, "ft-ewc", cases, out_dir=tmp_path / "whole", **run)
    real = FTEWCSession.compute
    calls = [0]

    def crashing(self, requests):
        calls[0] += 1
        if calls[0] == 3:
            raise Crash("simulated crash at the third edit")
        return real(self, requests)
    monkeypatch.setattr(ft_ewc_module.FTEWCSession, "compute", crashing)
    with pytest.raises(Crash):
        run_bench(lm, "ft-ewc", cases, out_dir=tmp_path / "crashed", **run)
    monkeypatch.setattr(ft_ewc_module.FTEWCSession, "compute", real)
    resumed = run_bench(lm, "ft-ewc", cases, out_dir=tmp_path / "crashed", resume=True, **run)

    def comparable(path):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in read_lines(path / "results.jsonl")]
    assert comparable(tmp_path / "crashed") == comparable(tmp_path / "whole")
    assert resumed["token"] == whole["token"]
