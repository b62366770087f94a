"""ROME: the rank-one update maps the chosen key to v*, has the documented form, and the v*
optimisation is the documented objective whatever caches it uses (SPEC-ALGORITHMS D.4-D.7)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from kedit.errors import KeditWarning
from kedit.evaluate import score
from kedit.methods.locate import (
    ValueOptimization,
    context_templates,
    mlp_keys,
    optimize_target_value,
    request_keys,
    subject_token_index,
)
from kedit.methods.rome import ROME, ROMEHparams, rank_one_update
from kedit.requests import EditRequest
from kedit.stats import second_moments
from tests.tiny_models import MAIN_ARCHITECTURES

LAYER = 1
MOM2_TOKENS = 2000
TEMPLATE_LENGTHS = ((3, 2),)
REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")


def _hparams(corpus_file, **changes) -> ROMEHparams:
    values = {
        "layer": LAYER,
        "v_num_grad_steps": 4,
        "context_template_length_params": TEMPLATE_LENGTHS,
        "mom2_corpus": str(corpus_file),
        "mom2_tokens": MOM2_TOKENS,
    } | changes
    return ROMEHparams(**values)


def _module_output(lm, key: torch.Tensor) -> torch.Tensor:
    """The edited module's own forward on one key (bias included, Conv1D orientation handled)."""
    module = lm.module(lm.anatomy.mlp_out_paths[LAYER])
    with torch.no_grad():
        return module(key[None].to(lm.dtype))[0].double()


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def _apply(lm, delta_out_in: torch.Tensor) -> None:
    parameter = lm.parameter(lm.anatomy.mlp_out_weight(LAYER))
    with torch.no_grad():
        parameter.add_(lm.anatomy.as_update(delta_out_in))


@pytest.fixture
def setting(lm, corpus_file):
    """(lm, templates, C, keys, v*) for REQUEST at LAYER, all computed on the unedited model."""
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    assert len(templates) == 3 and templates[0] == "{}"
    moment = second_moments(lm, [LAYER], str(corpus_file), n_tokens=MOM2_TOKENS, progress=False)[LAYER]
    keys = request_keys(lm, REQUEST, LAYER, templates, "subject_last")  # (3, d_k)
    settings = _hparams(corpus_file).value_settings()
    target = optimize_target_value(lm, REQUEST, lm.anatomy.mlp_out_paths[LAYER], LAYER, templates, settings)
    return lm, templates, moment, keys, target


def test_request_keys_are_the_module_inputs_at_the_subject_token(lm):
    """Keys equal the down-projection input captured by hand at the subject's last token."""
    templates = ["{}", "Yesterday we flew to Rome. {}"]
    keys = request_keys(lm, REQUEST, LAYER, templates, "subject_last")
    module = lm.module(lm.anatomy.mlp_out_paths[LAYER])
    for template, key in zip(templates, keys, strict=True):
        prompt_template = template.replace("{}", REQUEST.prompt)
        index = subject_token_index(lm.tokenizer, prompt_template, REQUEST.subject)
        seen: list[torch.Tensor] = []
        handle = module.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0][0]))
        with torch.no_grad():
            lm.model(torch.tensor([lm.tokenizer(prompt_template.replace("{}", REQUEST.subject))["input_ids"]]))
        handle.remove()
        assert torch.allclose(key, seen[0][index], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(keys[0], keys[1])  # the context changes the key
    assert not torch.allclose(mlp_keys(lm, LAYER, [REQUEST.text], [0])[0], keys[0])  # the index matters


@pytest.mark.parametrize("use_mom2", [True, False], ids=["C", "identity"])
def test_paper_update_maps_mean_key_to_target_value(setting, corpus_file, use_mom2):
    lm, templates, moment, keys, target = setting
    key_star = keys.mean(dim=0)
    hparams = _hparams(corpus_file, key_mode="paper", mom2_adjustment=use_mom2)
    update = rank_one_update(lm, REQUEST, hparams, templates, moment if use_mom2 else None)
    assert update.target_norm == pytest.approx(float(target.value.norm()), rel=1e-5)
    assert float(target.delta.norm()) > 0.0
    assert _relative(_module_output(lm, key_star), target.value) > 1e-2  # not already true

    _apply(lm, update.delta_weight)
    assert _relative(_module_output(lm, key_star), target.v_init + target.delta) < 1e-4

    # The documented closed form: dW = (v* - W k* - b) (C⁻¹k*)ᵀ / (k*ᵀ C⁻¹ k*).
    _apply(lm, -update.delta_weight)
    c_inv_key = torch.linalg.solve(moment, key_star.double()) if use_mom2 else key_star.double()
    residual = target.value.double() - _module_output(lm, key_star)
    expected = torch.outer(residual, c_inv_key) / torch.dot(c_inv_key, key_star.double())
    assert _relative(update.delta_weight, expected) < 1e-4
    assert update.denominator == pytest.approx(float(torch.dot(c_inv_key, key_star.double())), rel=1e-6)
    assert update.denominator > 0


@pytest.mark.parametrize("key_mode", ["prompt", "original"])
@pytest.mark.parametrize("use_mom2", [True, False], ids=["C", "identity"])
def test_prompt_and_original_modes_map_bare_prompt_key_to_target_value(setting, corpus_file, key_mode, use_mom2):
    lm, templates, moment, keys, target = setting
    key_bare, key_star = keys[0], keys.mean(dim=0)
    hparams = _hparams(corpus_file, key_mode=key_mode, mom2_adjustment=use_mom2)
    update = rank_one_update(lm, REQUEST, hparams, templates, moment if use_mom2 else None)
    _apply(lm, update.delta_weight)
    assert _relative(_module_output(lm, key_bare), target.value) < 1e-4
    # u comes from k (prompt) or from k* (original, the kmeng01/rome code): check the row space.
    key_for_u = (key_bare if key_mode == "prompt" else key_star).double()
    direction = torch.linalg.solve(moment, key_for_u) if use_mom2 else key_for_u
    _assert_row_space(update.delta_weight, direction)


def _assert_row_space(delta: torch.Tensor, direction: torch.Tensor) -> None:
    """delta has rank one and every row is a multiple of ``direction``."""
    delta = delta.double()
    assert int(torch.linalg.matrix_rank(delta, rtol=1e-5)) == 1
    unit = direction / direction.norm()
    outside = delta - torch.outer(delta @ unit, unit)
    assert float(outside.norm() / delta.norm()) < 1e-5


@pytest.mark.parametrize("use_mom2", [True, False], ids=["C", "identity"])
def test_paper_update_is_rank_one_along_whitened_mean_key(setting, corpus_file, use_mom2):
    lm, templates, moment, keys, _ = setting
    key_star = keys.mean(dim=0).double()
    hparams = _hparams(corpus_file, key_mode="paper", mom2_adjustment=use_mom2)
    update = rank_one_update(lm, REQUEST, hparams, templates, moment if use_mom2 else None)
    direction = torch.linalg.solve(moment, key_star) if use_mom2 else key_star
    _assert_row_space(update.delta_weight, direction)
    if use_mom2:  # C is not the identity here: the row space is not k* itself
        unit = key_star / key_star.norm()
        assert float((update.delta_weight.double() @ unit).norm() / update.delta_weight.double().norm()) < 0.999


@pytest.mark.parametrize("architecture", MAIN_ARCHITECTURES)
def test_rome_compute_stores_delta_in_parameter_orientation(make_lm, corpus_file, kedit_home, architecture):
    lm = make_lm(architecture)
    hparams = _hparams(corpus_file, mom2_adjustment=True)
    fingerprint = lm.fingerprint
    before = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    edit = ROME().compute(lm, [REQUEST], hparams)
    for name, tensor in lm.model.state_dict().items():  # compute leaves the model untouched
        assert torch.equal(tensor, before[name]), name

    name = lm.anatomy.mlp_out_weight(LAYER)
    assert list(edit.deltas) == [name]
    stored = edit.deltas[name]
    assert stored.shape == lm.parameter(name).shape
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    moment = second_moments(lm, [LAYER], str(corpus_file), n_tokens=MOM2_TOKENS, progress=False)[LAYER]
    update = rank_one_update(lm, REQUEST, hparams, templates, moment)
    if architecture == "gpt2":  # Conv1D keeps (d_in, d_out): the stored delta is the transpose
        assert stored.shape == (lm.anatomy.key_size, lm.anatomy.hidden_size)
        assert torch.allclose(stored, update.delta_weight.T, rtol=1e-5, atol=1e-7)
    else:
        assert stored.shape == (lm.anatomy.hidden_size, lm.anatomy.key_size)
        assert torch.allclose(stored, update.delta_weight, rtol=1e-5, atol=1e-7)

    key_star = request_keys(lm, REQUEST, LAYER, templates, "subject_last").mean(dim=0)
    target = optimize_target_value(lm, REQUEST, lm.anatomy.mlp_out_paths[LAYER], LAYER, templates,
                                   hparams.value_settings())
    edit.apply(lm)
    assert _relative(_module_output(lm, key_star), target.value) < 1e-4
    edit.revert(lm)
    assert edit.base_fingerprint == fingerprint
    # statistics and templates were cached in this session's folder, keyed by the fingerprint
    assert list((kedit_home / "stats" / fingerprint[:24]).glob("layer1-*.safetensors"))
    assert list((kedit_home / "templates").glob(f"{fingerprint[:24]}-*.json"))


def test_rome_compute_applies_requests_sequentially(make_lm, corpus_file):
    """Two requests: the second update is computed on the model already carrying the first."""
    lm = make_lm("llama")
    second = EditRequest("{} plays the sport of", "Michael Jordan", "football")
    hparams = _hparams(corpus_file, mom2_adjustment=False)
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    first_update = rank_one_update(lm, REQUEST, hparams, templates, None).delta_weight
    _apply(lm, first_update)
    second_update = rank_one_update(lm, second, hparams, templates, None).delta_weight
    _apply(lm, -first_update)
    edit = ROME().compute(lm, [REQUEST, second], hparams)
    expected = first_update + second_update
    assert torch.allclose(edit.deltas[lm.anatomy.mlp_out_weight(LAYER)], expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- v* optimisation


def test_first_loss_is_the_scored_negative_log_likelihood(lm):
    """Step 0 has delta = 0: the loss is the mean over templates of the target's mean token NLL."""
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    settings = ValueOptimization(steps=1)
    target = optimize_target_value(lm, REQUEST, lm.anatomy.mlp_out_paths[LAYER], LAYER, templates, settings)
    texts = [t.replace("{}", REQUEST.prompt).replace("{}", REQUEST.subject) for t in templates]
    scored = score(lm, [(text, REQUEST.target_new) for text in texts])
    expected = -sum(s.mean_log_prob for s in scored) / len(scored)
    assert len(target.losses) == 1
    assert target.losses[0] == pytest.approx(expected, abs=1e-4)
    assert torch.count_nonzero(target.delta) == 0  # the last iteration takes no step
    assert len(scored[0].target_ids) >= 2  # a multi-token target is averaged per token


def test_value_optimisation_lowers_loss_and_respects_clamp(lm):
    templates = context_templates(lm, TEMPLATE_LENGTHS)
    path = lm.anatomy.mlp_out_paths[LAYER]
    # No norm penalty: on these random models the target's NLL depends so weakly on the subject's
    # value that ROME's penalty (0.5 |delta| / |v_init|^2) outweighs it and Adam holds delta near 0.
    free = optimize_target_value(lm, REQUEST, path, LAYER, templates, ValueOptimization(steps=5, weight_decay=0.0))
    assert len(free.losses) == 5
    assert free.losses[-1] < free.losses[0]
    # v_init is the module output at the subject token of the bare prompt.
    index = subject_token_index(lm.tokenizer, REQUEST.prompt, REQUEST.subject)
    key = mlp_keys(lm, LAYER, [REQUEST.text], [index])[0]
    assert torch.allclose(free.v_init.double(), _module_output(lm, key), rtol=1e-5, atol=1e-5)

    factor = 0.05
    clamped = optimize_target_value(lm, REQUEST, path, LAYER, templates,
                                    ValueOptimization(steps=5, weight_decay=0.0, clamp_norm_factor=factor))
    assert float(free.delta.norm()) > factor * float(free.v_init.norm())  # the clamp binds
    assert float(clamped.delta.norm()) <= factor * float(clamped.v_init.norm()) * (1 + 1e-5)


@pytest.mark.parametrize(
    ("cache_prefix", "cache_lower_blocks"), [(True, True), (True, False), (False, True)],
    ids=["both", "prefix", "lower-blocks"],
)
@pytest.mark.parametrize("request_", [REQUEST, EditRequest("{} plays the sport of", "Paris", "football")],
                         ids=["subject-inside", "subject-first"])
def test_value_caches_change_nothing(any_lm, cache_prefix, cache_lower_blocks, request_):
    lm = any_lm
    # Templates up to 8 tokens: prefixes longer than Gemma's sliding window of 6.
    templates = context_templates(lm, ((3, 1), (8, 2)))
    path = lm.anatomy.mlp_out_paths[LAYER]

    def run(prefix: bool, lower: bool):
        settings = ValueOptimization(steps=5, cache_prefix=prefix, cache_lower_blocks=lower)
        return optimize_target_value(lm, request_, path, LAYER, templates, settings)

    plain, cached = run(False, False), run(cache_prefix, cache_lower_blocks)
    assert len(plain.losses) == len(cached.losses) == 5
    assert cached.losses == pytest.approx(plain.losses, rel=1e-4, abs=1e-4)
    assert torch.allclose(cached.v_init, plain.v_init, rtol=1e-4, atol=1e-4)
    assert torch.allclose(cached.delta, plain.delta, rtol=1e-4, atol=1e-4)
    assert float(plain.delta.norm()) > 0
    before = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    run(cache_prefix, cache_lower_blocks)
    for name, tensor in lm.model.state_dict().items():  # no hook or replaced forward is left behind
        assert torch.equal(tensor, before[name])
    assert all("forward" not in vars(lm.module(p)) for p in lm.anatomy.block_paths)


def test_cache_switches_reach_the_optimisation_and_change_no_delta(make_lm, corpus_file):
    """Turning both v* caches off through ROME's hyperparameters gives the same weight delta."""
    lm = make_lm("llama")
    hparams = _hparams(corpus_file, mom2_adjustment=False)
    plain = ROME().default_hparams(lm, overrides={**dataclasses.asdict(hparams), "cache_prefix": False,
                                                  "cache_lower_blocks": False})
    assert plain.value_settings().cache_prefix is False and plain.value_settings().cache_lower_blocks is False
    name = lm.anatomy.mlp_out_weight(LAYER)
    cached = ROME().compute(lm, [REQUEST], hparams).deltas[name]
    uncached = ROME().compute(lm, [REQUEST], plain).deltas[name]
    assert torch.allclose(cached, uncached, rtol=1e-4, atol=1e-6)


def test_original_key_mode_warns_when_the_update_is_amplified():
    """kmeng01/rome's denominator k·C⁻¹k* can be small or negative: that edit is flagged."""
    from kedit.methods.rome import _warn_if_amplified

    request = EditRequest("{} is the capital of", "Paris", "Italy")
    with pytest.warns(KeditWarning, match="amplified 100x"):
        _warn_if_amplified(request, 1.0, 100.0)
    with pytest.warns(KeditWarning, match="amplified -100x"):
        _warn_if_amplified(request, -1.0, 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeditWarning)
        _warn_if_amplified(request, 50.0, 100.0)  # halves / doubles: ordinary
