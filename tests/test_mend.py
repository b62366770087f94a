"""MEND on tiny random models: the gradient factors, the editor's update against a hand-built one,
the identity at initialisation, per-row batched edits against single edits, SSS, the running
statistics, deployment as weight deltas, and the artifact checks."""

from __future__ import annotations

import math

import pytest
import torch

from kedit.errors import KeditError
from kedit.methods.mend import (
    MEND,
    TrainingExample,
    capture_factors,
    edited_weights,
    mend_deltas,
    meta_losses,
    target_nll,
)
from kedit.methods.mend_networks import MENDEditor, RunningNorm
from kedit.methods.targets import target_batch
from kedit.models import weights_fingerprint
from kedit.requests import Case, EditRequest, LocalityProbe
from kedit.training import Schedule, TrainingData

REQUESTS = [
    EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "German"),
    EditRequest("{} plays the sport of", "Michael Jordan", "football"),
]


def _cases(count: int = 6) -> list[Case]:
    subjects = ["The Eiffel Tower", "The Louvre", "Mount Everest", "The Colosseum", "The Nile", "Apple",
                "Berlin", "Tokyo"]
    targets = ["Rome", "Berlin", "Paris", "Tokyo", "Spain", "Japan", "Italy", "Africa"]
    return [Case(EditRequest("{} is located in", subject, target),
                 rephrases=(f"Where is {subject}? It is in",),
                 locality=(LocalityProbe("The Danube flows through", "Vienna"),), case_id=str(index))
            for index, (subject, target) in enumerate(zip(subjects[:count], targets[:count], strict=True))]


def _hparams(lm, **overrides):
    values = {"rank": 8, "edits_per_step": 3, "val_cases": 3, "lr": 1e-3, "lr_lr": 1e-2} | overrides
    return MEND().default_hparams(lm, overrides=values)


def _warmed_editor(lm, hparams, rows: int = 20) -> MENDEditor:
    """An editor whose normalisers have seen some random rows (eval mode needs statistics)."""
    editor = MEND().build_editor(lm, hparams)
    generator = torch.Generator().manual_seed(1)
    for index, weight in enumerate(editor.weights):
        editor.transform(index, torch.randn(rows, weight.d_in, generator=generator),
                         torch.randn(rows, weight.d_out, generator=generator))
    return editor.eval()


def test_default_edited_weights_are_every_mlp_matrix_of_the_last_three_blocks(make_lm):
    lm = make_lm("llama", num_layers=4)
    hparams = MEND().default_hparams(lm)
    assert hparams.layers == (1, 2, 3)
    names = [weight.name for weight in edited_weights(lm, hparams.layers)]
    assert names == [f"model.layers.{layer}.mlp.{part}.weight" for layer in (1, 2, 3)
                     for part in ("gate_proj", "up_proj", "down_proj")]
    gpt2 = make_lm("gpt2")
    weights = edited_weights(gpt2, (2,))
    assert [(w.name, w.transposed, w.d_in, w.d_out) for w in weights] == [
        ("transformer.h.2.mlp.c_fc.weight", True, 48, 128), ("transformer.h.2.mlp.c_proj.weight", True, 128, 48)]


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_captured_factors_rebuild_the_true_weight_gradient(make_lm, architecture):
    """Σ_n δ_n u_nᵀ over the kept tokens is exactly ∂L/∂W (the rank-1 decomposition MEND rests on)."""
    lm = make_lm(architecture)
    weights = edited_weights(lm, (1, 2))
    inputs = target_batch(lm, [(r.text, r.target_new) for r in REQUESTS[:2]])
    factors = capture_factors(lm, weights, inputs)
    parameters = [lm.parameter(weight.name) for weight in weights]
    for parameter in parameters:
        parameter.requires_grad_(True)
    try:
        with torch.enable_grad():
            losses, _ = target_nll(lm, inputs)
            gradients = torch.autograd.grad(losses.sum(), parameters)
    finally:
        for parameter in parameters:
            parameter.requires_grad_(False)
    for index, (weight, gradient) in enumerate(zip(weights, gradients, strict=True)):
        keep = factors.keep[index]
        u, delta = factors.u[index][keep], factors.delta[index][keep]  # (N, d_in), (N, d_out)
        rebuilt = delta.T @ u  # (d_out, d_in)
        if weight.transposed:
            rebuilt = rebuilt.T
        torch.testing.assert_close(rebuilt, gradient, rtol=1e-4, atol=1e-6)


def test_the_update_is_the_editor_applied_to_the_hand_built_factors(make_lm):
    lm = make_lm("llama")
    hparams = _hparams(lm, layers=[2])
    editor = _warmed_editor(lm, hparams)
    with torch.no_grad():  # make the editor non-trivial: non-zero U, non-unit scales, distinct rates
        for parameter in editor.network_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        editor.edit_lrs.copy_(torch.tensor([0.3, -0.2, 0.5]))
    request = REQUESTS[0]
    deltas = mend_deltas(lm, editor, [request])
    factors = capture_factors(lm, editor.weights, target_batch(lm, [(request.text, request.target_new)]))
    for index, weight in enumerate(editor.weights):
        keep = factors.keep[index]
        u, delta = factors.u[index][keep], factors.delta[index][keep]
        network = editor.networks[weight.shape_key]
        mode = editor.modes[index]
        # by hand: standardise, concatenate, two residual low-rank blocks, split, sum of outer products
        z = torch.cat([(u - network.norm_u.mean.float()) / ((network.norm_u.m2 / (network.norm_u.count - 1)).sqrt().float() + 1e-7),
                       (delta - network.norm_delta.mean.float())
                       / ((network.norm_delta.m2 / (network.norm_delta.count - 1)).sqrt().float() + 1e-7)], dim=-1)
        for block in network.blocks:
            inner = z @ block.v.T @ block.u.T + block.bias
            z = z + torch.clamp(inner * block.scale.weight[mode] + block.shift.weight[mode], min=0)
        u_tilde, delta_tilde = z[:, :weight.d_in], z[:, weight.d_in:]
        expected = editor.edit_lrs[index] * sum(torch.outer(d, v) for d, v in zip(delta_tilde, u_tilde, strict=True))
        torch.testing.assert_close(deltas[weight.name], expected.detach(), rtol=1e-4, atol=1e-6)


def test_identity_initialised_editor_passes_normalised_factors_and_zero_rate_changes_nothing(make_lm):
    lm = make_lm("llama")
    hparams = _hparams(lm)
    editor = _warmed_editor(lm, hparams)
    with torch.no_grad():
        editor.edit_lrs.zero_()  # lr 0 (the hyperparameter edit_lr must be > 0: set α itself)
    u, delta = torch.randn(5, editor.weights[0].d_in), torch.randn(5, editor.weights[0].d_out)
    network = editor.networks[editor.weights[0].shape_key]
    u_tilde, delta_tilde = editor.transform(0, u, delta)
    assert torch.equal(u_tilde, network.norm_u(u)) and torch.equal(delta_tilde, network.norm_delta(delta))
    deltas = mend_deltas(lm, editor, REQUESTS[:2])
    assert all(torch.count_nonzero(d) == 0 for d in deltas.values())
    before = weights_fingerprint(lm.model)
    from kedit.edits import WeightEdit

    edit = WeightEdit("mend", tuple(REQUESTS[:2]), {}, deltas, lm.fingerprint)
    edit.apply(lm)
    edit.revert(lm)
    assert weights_fingerprint(lm.model) == before


def test_running_norm_batched_update_equals_sequential_welford():
    rows = torch.randn(37, 6, dtype=torch.float64) * 3 + 1
    norm = RunningNorm(6)
    norm.update(rows[:10])
    norm.update(rows[10:11])
    norm.update(rows[11:])
    mean, m2 = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    for k, row in enumerate(rows, start=1):  # Welford one row at a time (SPEC F.3)
        previous = mean.clone()
        mean = mean + (row - mean) / k
        m2 = m2 + (row - previous) * (row - mean)
    torch.testing.assert_close(norm.mean, mean)
    torch.testing.assert_close(norm.m2, m2)
    assert float(norm.count) == 37
    torch.testing.assert_close(norm.m2 / 36, rows.var(0))


def test_a_batch_of_per_row_edits_equals_the_single_edits(make_lm):
    """Row b of a step is edited by its own update: the batch's losses are the mean of single-edit losses."""
    lm = make_lm("llama")
    hparams = _hparams(lm)
    editor = _warmed_editor(lm, hparams)
    with torch.no_grad():
        editor.edit_lrs.fill_(0.5)
    examples = [TrainingExample(case.request, case.rephrases[0], "The Danube flows through Vienna")
                for case in _cases(3)]
    joint = meta_losses(lm, editor, examples, hparams, 0)
    singles = [meta_losses(lm, editor, [example], hparams, 0) for example in examples]
    assert float(joint.edit.detach()) == pytest.approx(sum(float(s.edit.detach()) for s in singles) / 3, rel=1e-4)
    assert float(joint.loc.detach()) == pytest.approx(sum(float(s.loc.detach()) for s in singles) / 3, rel=1e-4,
                                                      abs=1e-9)
    assert float(joint.loc.detach()) > 0  # the edits do change the unrelated input a little


def test_sss_is_the_squared_hidden_gradient_of_the_edited_model_and_changes_the_meta_gradient(make_lm):
    lm = make_lm("llama")
    editor = _warmed_editor(lm, _hparams(lm))
    with torch.no_grad():
        editor.edit_lrs.fill_(0.5)
    example = TrainingExample(REQUESTS[0], "Where is the Eiffel Tower? In", "The Danube flows through Vienna")
    losses = meta_losses(lm, editor, [example], _hparams(lm, sss_coef=0.9), 0)
    # by hand: apply the same edit as real weight deltas, then Σ (∂L_edit/∂h)² on the edit input
    deltas = mend_deltas(lm, editor, [REQUESTS[0]])
    from kedit.edits import WeightEdit

    edit = WeightEdit("mend", (REQUESTS[0],), {}, deltas, lm.fingerprint)
    edit.apply(lm)
    try:
        inputs = target_batch(lm, [(REQUESTS[0].text, REQUESTS[0].target_new)])
        with torch.enable_grad():
            from kedit.methods.losses import per_request_nll
            from kedit.models.tracing import final_hidden, logits_from_hidden

            hidden = final_hidden(lm, inputs.batch).detach().requires_grad_(True)
            nll = per_request_nll(logits_from_hidden(lm, hidden[:, -inputs.window:]), inputs.labels, inputs.mask)
            (gradient,) = torch.autograd.grad(nll.sum(), hidden)
    finally:
        edit.revert(lm)
    assert float(losses.sss.detach()) == pytest.approx(float(gradient.pow(2).sum()), rel=1e-3)

    def meta_gradient(sss_coef: float) -> torch.Tensor:
        editor.zero_grad(set_to_none=True)
        meta_losses(lm, editor, [example], _hparams(lm, sss_coef=sss_coef), 0).total.backward()
        return torch.cat([p.grad.flatten() for p in editor.network_parameters() if p.grad is not None])

    plain, regularised = meta_gradient(0.0), meta_gradient(0.9)
    assert plain.abs().sum() > 0  # the identity-initialised networks get a gradient (clamp, not relu, at 0)
    assert not torch.allclose(plain, regularised)
    # C = 0 is exactly the unregularised objective c_edit L_e + c_loc L_loc
    zero = meta_losses(lm, editor, [example], _hparams(lm, sss_coef=0.0), 0)
    assert zero.sss is None
    assert float(zero.total) == pytest.approx(0.1 * float(zero.edit) + 1.0 * float(zero.loc), rel=1e-6)


def test_batch_edit_sums_the_single_edit_updates(make_lm):
    lm = make_lm("gpt2")
    hparams = _hparams(lm)
    editor = _warmed_editor(lm, hparams)
    joint = mend_deltas(lm, editor, REQUESTS[:2])
    first, second = mend_deltas(lm, editor, REQUESTS[:1]), mend_deltas(lm, editor, REQUESTS[1:2])
    for name, delta in joint.items():
        torch.testing.assert_close(delta, first[name] + second[name], rtol=1e-4, atol=1e-7)


def _train(lm, folder, steps, **overrides):
    hparams = _hparams(lm, **overrides)
    data = TrainingData(tuple(_cases(6)[:4]), tuple(_cases(6)[4:]), {"name": "test"})
    return MEND().train(lm, data, hparams, Schedule(max_steps=steps, val_every=2, progress=False), folder), hparams


def test_trained_editor_is_found_again_edits_as_weight_deltas_and_is_refused_on_another_model(make_lm, tmp_path):
    lm = make_lm("llama")
    artifact, hparams = _train(lm, tmp_path / "run", 4)
    assert artifact.manifest.base_fingerprint == lm.fingerprint and artifact.manifest.training["steps"] == 4
    edit = MEND().compute(lm, [REQUESTS[0]], hparams)  # found in the store by its keys
    assert set(edit.deltas) == {w.name for w in edited_weights(lm, hparams.layers)}
    assert edit.info["editor_digest"] == artifact.manifest.files["editor.safetensors"]
    before = weights_fingerprint(lm.model)
    edit.apply(lm)
    assert weights_fingerprint(lm.model) != before
    edit.revert(lm)
    assert weights_fingerprint(lm.model) == before
    explicit = MEND().default_hparams(lm, overrides={"rank": 8, "edits_per_step": 3, "val_cases": 3, "lr": 1e-3,
                                                     "lr_lr": 1e-2, "artifact": str(tmp_path / "run")})
    assert MEND().trained_artifact(lm, explicit).folder == tmp_path / "run" / "artifact"
    # naming the artifact alone is enough: its training hyperparameters become the defaults
    only_folder = MEND().default_hparams(lm, overrides={"artifact": str(tmp_path / "run")})
    assert only_folder.rank == 8 and only_folder.edits_per_step == 3
    assert MEND().compute(lm, [REQUESTS[0]], only_folder).deltas.keys() == edit.deltas.keys()
    other = make_lm("llama", seed=1)
    with pytest.raises(KeditError, match="was trained on tiny-llama"):
        MEND().compute(other, [REQUESTS[0]], MEND().default_hparams(other, overrides={
            "rank": 8, "edits_per_step": 3, "val_cases": 3, "lr": 1e-3, "lr_lr": 1e-2,
            "artifact": str(tmp_path / "run")}))
    with pytest.raises(KeditError, match="no trained mend editor"):
        MEND().compute(other, [REQUESTS[0]], MEND().default_hparams(other, overrides={"rank": 8}))
    with pytest.raises(KeditError, match="other hyperparameters.*rank"):
        MEND().trained_artifact(lm, MEND().default_hparams(lm, overrides={"rank": 4, "artifact": str(tmp_path / "run")}))


def test_resumed_training_matches_the_uninterrupted_run_step_for_step(make_lm, tmp_path):
    import json

    lm = make_lm("llama")
    _train(lm, tmp_path / "whole", 5)
    _train(lm, tmp_path / "cut", 3)
    _train(lm, tmp_path / "cut", 5)

    def steps(folder):
        lines = [json.loads(line) for line in (folder / "train-log.jsonl").read_text().splitlines()]
        return [line for line in lines if "loss" in line]

    whole, cut = steps(tmp_path / "whole"), steps(tmp_path / "cut")
    assert [line["step"] for line in cut] == [1, 2, 3, 4, 5]
    assert whole == cut  # every loss of every step, bit for bit
    from safetensors.torch import load_file

    first = load_file(str(tmp_path / "whole" / "artifact" / "editor.safetensors"))
    second = load_file(str(tmp_path / "cut" / "artifact" / "editor.safetensors"))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_meta_training_lowers_the_meta_objective(make_lm, tmp_path):
    """On the training edits (a tiny random model's rephrases say nothing about held-out cases)."""
    import json

    lm = make_lm("llama")
    artifact, _ = _train(lm, tmp_path / "run", 40, lr=1e-3, lr_lr=5e-2, edit_coef=1.0)
    steps = [json.loads(line) for line in (tmp_path / "run" / "train-log.jsonl").read_text().splitlines()]
    losses = [step["loss"] for step in steps if "loss" in step]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert math.isfinite(artifact.manifest.training["best_val"])
