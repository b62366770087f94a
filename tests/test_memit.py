"""MEMIT (SPEC-ALGORITHMS D.8–D.10): batched z optimisation equals separate runs, keys follow the
template weighting, the solve satisfies its normal equations, the layer spread writes the whole
residual, and the z cache never serves a value computed on other weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kedit.edits import WeightEdit
from kedit.methods import get_method
from kedit.methods import value_cache as value_cache_module
from kedit.methods.locate import (
    ValueOptimization,
    context_templates,
    optimize_target_value,
    optimize_target_values,
    request_keys,
    subject_hidden,
    subject_token_index,
    template_weights,
    weighted_subject_keys,
)
from kedit.methods.memit import MEMIT, MEMITHparams, compute_targets, memit_solver, spread_over_layers
from kedit.methods.value_cache import cached_target_values
from kedit.requests import EditRequest
from kedit.stats import second_moments

MOM2_TOKENS = 2000
REQUESTS = [
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French"),
    EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball"),
    EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", target_true="Paris"),
    EditRequest("The official language of {} is", "Brazil", "Spanish", target_true="Portuguese"),
    EditRequest("Yesterday we flew to {}", "Tokyo", "Berlin"),  # the subject ends the prompt
]
# Generated templates up to 8 tokens: prefixes longer than the tiny Gemma's sliding window of 6.
TEMPLATE_LENGTHS = ((3, 1), (8, 2))


def _hparams(corpus_file, **changes) -> MEMITHparams:
    values = {
        "layers": (1, 2),
        "v_num_grad_steps": 5,
        "context_template_length_params": ((4, 2),),
        "mom2_corpus": str(corpus_file),
        "mom2_tokens": MOM2_TOKENS,
        "mom2_update_weight": 50.0,
        "z_cache": False,
    } | changes
    return MEMITHparams(**values)


# --------------------------------------------------------------------------- batched z


def _compare(batched, separate) -> None:
    """Same trajectories. Deltas are compared where the loss moved: where the tiny model saturates
    (Gemma's logit soft-cap) gradients vanish and Adam, which divides by their size, turns float
    rounding of a different batch shape into steps of full size that change the loss by < 1e-5."""
    moved = 0
    for together, alone in zip(batched, separate, strict=True):
        assert len(together.losses) == len(alone.losses)
        assert together.losses == pytest.approx(alone.losses, rel=1e-4, abs=1e-5)
        assert torch.allclose(together.v_init, alone.v_init, rtol=1e-4, atol=1e-5)
        if alone.losses[0] - min(alone.losses) > 5e-3 * alone.losses[0]:
            moved += 1
            assert torch.allclose(together.delta, alone.delta, rtol=1e-3, atol=1e-4)
    assert moved >= 2


def _splitting_threshold(trajectories) -> float:
    """A loss threshold that stops some requests early and lets others run all iterations, placed
    in the widest gap between recorded losses (so float rounding cannot move a request across it)."""
    values = sorted({v for t in trajectories for v in t})
    low, high = sorted(t[1] for t in trajectories)[0], sorted(t[-1] for t in trajectories)[-1]
    gaps = [(b - a, (a + b) / 2) for a, b in zip(values, values[1:], strict=False) if low <= a and b <= high]
    return max(gaps)[1]


@pytest.mark.parametrize("where", ["block", "mlp"], ids=["memit-z", "rome-v"])
def test_batched_target_values_equal_separate_runs(any_lm, where):
    """Each request's delta, v_init and loss trajectory are those of a run on its own, whatever
    else is in the batch (shared template prefixes, padding, frozen neighbours)."""
    lm = any_lm
    layer = 1
    path = lm.anatomy.block_paths[layer] if where == "block" else lm.anatomy.mlp_out_paths[layer]
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    # lr 2 makes the tiny model's loss move; the clamp (1.5 |v_init|) binds for some requests.
    free = ValueOptimization(steps=6, lr=2.0, early_stop_loss=-math.inf, clamp_norm_factor=1.5)
    trajectories = [optimize_target_value(lm, r, path, layer, templates, free).losses for r in REQUESTS]
    threshold = _splitting_threshold(trajectories)
    settings = dataclasses.replace(free, early_stop_loss=threshold)
    separate = [optimize_target_value(lm, r, path, layer, templates, settings) for r in REQUESTS]
    lengths = [len(value.losses) for value in separate]
    assert min(lengths) < 6 and max(lengths) == 6, lengths  # both cases occur
    assert all(float(v.delta.norm()) > 0 for v in separate if len(v.losses) > 1)
    batched = optimize_target_values(lm, REQUESTS, path, layer, templates, settings)
    _compare(batched, separate)


@pytest.mark.parametrize(("cache_prefix", "cache_lower_blocks"), [(False, False), (True, False), (False, True)])
def test_batched_values_do_not_depend_on_caches_or_chunking(lm, cache_prefix, cache_lower_blocks):
    layer = 1
    path = lm.anatomy.block_paths[layer]
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    reference = optimize_target_values(lm, REQUESTS, path, layer, templates, ValueOptimization(steps=5))
    settings = ValueOptimization(steps=5, cache_prefix=cache_prefix, cache_lower_blocks=cache_lower_blocks,
                                 requests_per_chunk=2)
    _compare(optimize_target_values(lm, REQUESTS, path, layer, templates, settings), reference)
    before = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    optimize_target_values(lm, REQUESTS, path, layer, templates, ValueOptimization(steps=3))
    for name, tensor in lm.model.state_dict().items():  # no hook or replaced forward is left behind
        assert torch.equal(tensor, before[name])
    assert all("forward" not in vars(lm.module(p)) for p in lm.anatomy.block_paths)


def test_clamp_applies_per_request(make_lm):
    lm = make_lm("llama")
    layer = 1
    path = lm.anatomy.block_paths[layer]
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    values = optimize_target_values(lm, REQUESTS, path, layer, templates,
                                    ValueOptimization(steps=5, clamp_norm_factor=0.01))
    for value in values:
        assert float(value.delta.norm()) <= 0.01 * float(value.v_init.norm()) * (1 + 1e-5)
        assert float(value.delta.norm()) >= 0.01 * float(value.v_init.norm()) * (1 - 1e-3)  # it binds


# --------------------------------------------------------------------------- keys and hidden states


def test_template_weights_follow_memit_grouping():
    assert template_weights(((10, 5),)) == pytest.approx([0.5] + [0.1] * 5)
    assert template_weights(((5, 2), (10, 4))) == pytest.approx([1 / 3] + [1 / 6] * 2 + [1 / 12] * 4)
    assert template_weights(()) == [1.0]
    assert sum(template_weights(((5, 10), (10, 10)))) == pytest.approx(1.0)


def test_weighted_keys_are_the_weighted_mean_of_per_template_keys(lm):
    layer = 1
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    weights = template_weights(TEMPLATE_LENGTHS)
    keys = weighted_subject_keys(lm, REQUESTS, layer, templates, weights, "subject_last")
    assert keys.shape == (len(REQUESTS), lm.anatomy.key_size)
    for request, key in zip(REQUESTS, keys, strict=True):
        per_template = request_keys(lm, request, layer, templates, "subject_last")  # full prompts, one batch
        expected = (torch.tensor(weights)[:, None] * per_template).sum(dim=0)
        assert torch.allclose(key, expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(key, per_template.mean(dim=0), rtol=1e-3, atol=1e-4)  # weighting matters


def test_subject_hidden_is_the_block_output_at_the_subject_token(lm):
    layer = 1
    hidden = subject_hidden(lm, REQUESTS, layer, "subject_last")
    block = lm.module(lm.anatomy.block_paths[layer])
    for request, state in zip(REQUESTS, hidden, strict=True):
        seen: list[torch.Tensor] = []

        def record(_module, _args, out, seen=seen):
            seen.append((out[0] if isinstance(out, tuple) else out)[0])

        handle = block.register_forward_hook(record)
        with torch.no_grad():
            lm.model(torch.tensor([lm.tokenizer(request.text)["input_ids"]]))
        handle.remove()
        index = subject_token_index(lm.tokenizer, request.prompt, request.subject)
        assert torch.allclose(state, seen[0][index], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the solve and the spread


@pytest.fixture
def llama(make_lm):
    return make_lm("llama")


def _moments(lm, corpus_file, layers):
    return second_moments(lm, layers, str(corpus_file), n_tokens=MOM2_TOKENS, progress=False)


def test_one_request_one_layer_satisfies_the_normal_equations(llama, corpus_file):
    """ΔW (λC + KKᵀ) = R Kᵀ for the K, R the method used, and R is z minus the current residual."""
    lm = llama
    hparams = _hparams(corpus_file, layers=(2,))
    request = REQUESTS[:1]
    templates = context_templates(lm, hparams.context_template_length_params)
    moments = _moments(lm, corpus_file, [2])
    captured = {}

    def solve(layer, keys, share):
        captured.update(keys=keys, share=share)
        return memit_solver(moments, hparams.mom2_update_weight)(layer, keys, share)

    targets = compute_targets(lm, request, hparams, templates)
    deltas, _ = spread_over_layers(lm, request, hparams, templates, targets.z, solve)
    delta = deltas[lm.anatomy.mlp_out_weight(2)].double()  # Llama: (d_out, d_k) as stored
    keys, share = captured["keys"], captured["share"]
    weights = template_weights(hparams.context_template_length_params)
    assert torch.allclose(keys[:, 0], weighted_subject_keys(lm, request, 2, templates, weights,
                                                            "subject_last")[0].double(), rtol=1e-5, atol=1e-6)
    current = subject_hidden(lm, request, 2, "subject_last")[0].double()
    assert torch.allclose(share[:, 0], targets.z[0].double() - current, rtol=1e-5, atol=1e-5)
    lhs = delta @ (hparams.mom2_update_weight * moments[2].double() + keys @ keys.T)
    rhs = share @ keys.T
    assert float((lhs - rhs).norm() / rhs.norm()) < 1e-5
    # λ matters: this is not the unregularised rank-one map.
    assert float((delta @ keys - share).norm() / share.norm()) > 1e-2


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gptneox"])
def test_small_lambda_writes_every_target(make_lm, corpus_file, architecture):
    """With λ → 0 and bare-prompt keys only, the last layer writes the whole remaining residual:
    after the edit the z_layer residual at each request's subject token equals its z.
    (Not Gemma-3: its MLP output passes a norm before it joins the residual, so an RMSNorm output
    of fixed scale bounds what one layer can add; test_gemma3_spread_writes_through_the_post_mlp_norm.)"""
    lm = make_lm(architecture)
    hparams = _hparams(corpus_file, layers=(1, 2), context_template_length_params=(), mom2_update_weight=1e-7)
    edit = MEMIT().compute(lm, REQUESTS, hparams)
    templates = context_templates(lm, ())
    z = compute_targets(lm, REQUESTS, hparams, templates).z
    before = subject_hidden(lm, REQUESTS, 2, "subject_last")
    assert float((before - z).norm(dim=1).min()) > 1e-2  # there is something to write
    edit.apply(lm)
    after = subject_hidden(lm, REQUESTS, 2, "subject_last")
    assert torch.allclose(after, z, rtol=1e-3, atol=1e-3)
    # the first layer took half of the residual it saw
    first = edit.info["layer_details"][0]
    assert first["share_norm_mean"] == pytest.approx(first["residual_norm_mean"] / 2, rel=1e-6)
    assert first["share_written"] == pytest.approx(1.0, abs=1e-4)
    edit.revert(lm)


def test_compute_leaves_model_untouched_and_revert_is_bit_exact(make_lm, corpus_file):
    lm = make_lm("gpt2")  # Conv1D: deltas are stored transposed
    hparams = _hparams(corpus_file)
    before = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    edit = MEMIT().compute(lm, REQUESTS[:3], hparams)
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert sorted(edit.deltas) == sorted(lm.anatomy.mlp_out_weight(layer) for layer in (1, 2))
    for name, delta in edit.deltas.items():
        assert delta.shape == lm.parameter(name).shape == (lm.anatomy.key_size, lm.anatomy.hidden_size)
        assert float(delta.norm()) > 0
    edit.apply(lm)
    assert not torch.equal(lm.parameter(lm.anatomy.mlp_out_weight(1)), before[lm.anatomy.mlp_out_weight(1)])
    edit.revert(lm)
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert edit.info["requests_in_batch"] == 3 and edit.info["layers"] == [1, 2]


@pytest.mark.parametrize("weight", [5.0, 500.0])
def test_regularised_edit_moves_every_residual_toward_its_target(make_lm, corpus_file, weight):
    """With λ > 0 the edit is a compromise, but it brings each subject's z_layer residual closer to
    z; a larger λ writes less."""
    lm = make_lm("llama")
    hparams = _hparams(corpus_file, mom2_update_weight=weight)
    templates = context_templates(lm, hparams.context_template_length_params)
    z = compute_targets(lm, REQUESTS, hparams, templates).z
    before = (subject_hidden(lm, REQUESTS, 2, "subject_last") - z).norm(dim=1)
    edit = MEMIT().compute(lm, REQUESTS, hparams)
    edit.apply(lm)
    after = (subject_hidden(lm, REQUESTS, 2, "subject_last") - z).norm(dim=1)
    edit.revert(lm)
    assert bool((after < before).all()), (before, after)
    written = [layer["share_written"] for layer in edit.info["layer_details"]]
    assert all(0 < w < 1 for w in written)
    if weight == 500.0:
        assert max(written) < 0.5


# --------------------------------------------------------------------------- z cache


def test_z_cache_reuses_values_only_for_the_same_weights(make_lm, corpus_file, kedit_home, monkeypatch):
    lm = make_lm("llama", seed=3)
    layer = 2
    path = lm.anatomy.block_paths[layer]
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    settings = ValueOptimization(steps=4)
    calls = []
    real = value_cache_module.optimize_target_values

    def counting(lm_, requests, *args, **kwargs):
        calls.append(len(requests))
        return real(lm_, requests, *args, **kwargs)

    monkeypatch.setattr(value_cache_module, "optimize_target_values", counting)
    first = cached_target_values(lm, REQUESTS[:3], path, layer, templates, settings)
    assert (first.hits, calls) == (0, [3])
    again = cached_target_values(lm, REQUESTS, path, layer, templates, settings)
    assert (again.hits, calls) == (3, [3, 2])  # only the two new requests are optimised
    for a, b in zip(first.values, again.values[:3], strict=True):
        assert torch.equal(a.delta, b.delta) and a.losses == b.losses
    assert first.weights_digest == lm.fingerprint

    # Any setting of the objective is part of the key.
    cached_target_values(lm, REQUESTS[:1], path, layer, templates, dataclasses.replace(settings, lr=0.3))
    assert calls[-1] == 1

    # Edited weights (lm.fingerprint unchanged): the cached values are stale and never served.
    hparams = _hparams(corpus_file)
    edit = MEMIT().compute(lm, REQUESTS[3:], hparams)
    edit.apply(lm)
    assert lm.fingerprint == first.weights_digest
    stale = cached_target_values(lm, REQUESTS[:3], path, layer, templates, settings)
    assert (stale.hits, calls[-1]) == (0, 3)
    assert stale.weights_digest != first.weights_digest
    fresh = optimize_target_values(lm, REQUESTS[:3], path, layer, templates, settings)
    for a, b in zip(stale.values, fresh, strict=True):
        assert torch.allclose(a.delta, b.delta, rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(a.value, b.value, atol=1e-3) for a, b in zip(stale.values, first.values, strict=True))
    edit.revert(lm)
    back = cached_target_values(lm, REQUESTS[:3], path, layer, templates, settings)
    assert back.hits == 3  # the original weights again: their entries are valid
    for a, b in zip(first.values, back.values, strict=True):
        assert torch.equal(a.delta, b.delta)


def test_memit_uses_the_z_cache_between_runs(make_lm, corpus_file, monkeypatch):
    lm = make_lm("gptneox", seed=5)
    hparams = _hparams(corpus_file, z_cache=True)
    first = MEMIT().compute(lm, REQUESTS[:2], hparams)
    assert first.info["z_cache_hits"] == 0
    second = MEMIT().compute(lm, REQUESTS[:2], hparams)
    assert second.info["z_cache_hits"] == 2
    for name, delta in first.deltas.items():
        assert torch.allclose(second.deltas[name], delta, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- hyperparameters and registry


def test_hparams_defaults_aliases_and_registry(make_lm):
    lm = make_lm("llama", num_layers=6)
    method = get_method("memit")
    assert method.batch_capable and method.summary
    hparams = method.default_hparams(lm)
    assert hparams.layers == (0, 1, 2, 3, 4)  # 5 layers around 0.2 × 6, clamped to the model
    assert hparams.z_layer == 4
    assert hparams.context_template_length_params == ((10, 5),)
    chosen = method.default_hparams(lm, overrides={"layers": [2, 3], "mom2_adjustment": True,
                                                   "layer_selection": "all", "mom2_update_weight": 100})
    assert chosen.layers == (2, 3) and chosen.mom2_update_weight == 100
    with pytest.raises(Exception, match="ascending"):
        method.default_hparams(lm, overrides={"layers": [3, 2]})
    with pytest.raises(Exception, match="out of range"):
        method.default_hparams(lm, overrides={"layers": [5, 6]})
    with pytest.raises(Exception, match="unknown hyperparameter 'mom2_weight'"):
        method.default_hparams(lm, overrides={"mom2_weight": 1})


def test_saved_memit_edit_round_trips(make_lm, corpus_file, tmp_path):
    lm = make_lm("llama")
    edit = MEMIT().compute(lm, REQUESTS[:2], _hparams(corpus_file))
    edit.save(tmp_path / "edit")
    loaded = WeightEdit.load(tmp_path / "edit")
    assert loaded.method == "memit" and loaded.requests == edit.requests
    for name, delta in edit.deltas.items():
        assert torch.equal(loaded.deltas[name], delta)


def test_shift_through_norm_reaches_a_reachable_output():
    """The change it finds makes norm(y + Δ) equal norm(y) + change when some input gives that output."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    from kedit.methods.norm_preimage import shift_through_norm

    generator = torch.Generator().manual_seed(0)
    norm = Gemma3RMSNorm(16)
    with torch.no_grad():
        norm.weight.normal_(0.0, 0.5, generator=generator)
    y, other = torch.randn(3, 16, generator=generator) * 20, torch.randn(3, 16, generator=generator) * 20
    change = (norm(other) - norm(y)).double()
    delta, reached = shift_through_norm(norm, y, change)
    assert reached == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(norm(y.double() + delta.float().double()).double(), norm(y).double() + change, atol=1e-5)


def test_gemma3_spread_writes_through_the_post_mlp_norm(make_lm, corpus_file):
    """Gemma-3 adds norm(MLP output) to the residual: written through the norm, the λ → 0 edit
    brings the z_layer residual much closer to z than writing the share into the MLP output as is."""
    import dataclasses

    lm = make_lm("gemma3")
    assert all(path and path.endswith("post_feedforward_layernorm") for path in lm.anatomy.post_mlp_norm_paths)
    with torch.no_grad():  # MLP outputs far larger than 1, as in the real Gemma-3 (the norm then shrinks them)
        for layer in range(lm.anatomy.num_layers):
            lm.parameter(lm.anatomy.mlp_out_weight(layer)).mul_(30.0)
    llama = make_lm("llama")
    assert llama.anatomy.post_mlp_norm_paths == (None,) * llama.anatomy.num_layers
    hparams = _hparams(corpus_file, layers=(1, 2), context_template_length_params=(), mom2_update_weight=1e-7)
    z = compute_targets(lm, REQUESTS, hparams, context_templates(lm, ())).z
    before = float((subject_hidden(lm, REQUESTS, 2, "subject_last") - z).norm())

    def miss(anatomy) -> float:
        lm.anatomy = anatomy
        edit = MEMIT().compute(lm, REQUESTS, hparams)
        edit.apply(lm)
        result = float((subject_hidden(lm, REQUESTS, 2, "subject_last") - z).norm())
        edit.revert(lm)
        return result

    through = miss(lm.anatomy)
    plain = miss(dataclasses.replace(lm.anatomy, post_mlp_norm_paths=()))
    assert through < 0.5 * before and through < 0.5 * plain, (before, plain, through)


def test_prompt_key_source_writes_at_each_bare_prompts_own_key(make_lm, corpus_file):
    """key_source="prompt": the spread's keys are the bare prompts' keys (not the template mean), so
    with λ → 0 and one layer the edited MLP writes its share exactly at the key the prompt makes."""
    from kedit.errors import KeditError
    from kedit.methods.locate import mlp_keys
    from kedit.methods.memit import spread_keys

    lm = make_lm("llama")
    hparams = _hparams(corpus_file, layers=(1,), key_source="prompt", mom2_update_weight=1e-7,
                       context_template_length_params=((3, 2),))
    templates = context_templates(lm, hparams.context_template_length_params)
    bare = mlp_keys(lm, 1, [r.text for r in REQUESTS],
                    [subject_token_index(lm.tokenizer, r.prompt, r.subject) for r in REQUESTS])
    assert torch.allclose(spread_keys(lm, REQUESTS, 1, templates, hparams), bare, atol=1e-5)
    mean = spread_keys(lm, REQUESTS, 1, templates, dataclasses.replace(hparams, key_source="templates"))
    assert float((mean - bare).norm()) > 1e-3  # the two sources differ on these prompts
    edit = MEMIT().compute(lm, REQUESTS, hparams)
    details = edit.info["layer_details"][0]
    assert details["share_written"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(KeditError, match="key_source 'nope' is not one of"):
        _hparams(corpus_file, key_source="nope")
