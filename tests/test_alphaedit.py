"""AlphaEdit (SPEC-ALGORITHMS E), Multi-Label Edit (A.9) and kedit.edit's batch / sequential modes.

AlphaEdit: the projector keeps exactly the eigen-directions of C₀ under the threshold, the update
satisfies its projected normal equations and leaves every key outside the null space unchanged
(ΔW k₀ = 0 when P k₀ = 0), and a session accumulates K Kᵀ of the applied batches.
"""

from __future__ import annotations

import pytest
import torch

import kedit
from kedit.errors import KeditError
from kedit.methods import get_method
from kedit.methods.alphaedit import (
    AlphaEdit,
    AlphaEditHparams,
    alphaedit_solver,
    null_space,
    null_space_dimensions,
)
from kedit.methods.base import open_session
from kedit.methods.locate import context_templates, subject_hidden, template_weights, weighted_subject_keys
from kedit.methods.memit import MEMIT, MEMITHparams, compute_targets
from kedit.methods.mle import MultiLabelEdit, label_requests
from kedit.requests import EditRequest
from kedit.stats import second_moments

MOM2_TOKENS = 2000
REQUESTS = [
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French"),
    EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball"),
    EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", target_true="Paris"),
]
COMMON = {
    "layers": (1, 2),
    "v_num_grad_steps": 5,
    "context_template_length_params": ((4, 2),),
    "mom2_tokens": MOM2_TOKENS,
    "z_cache": False,
}


def _alpha_hparams(corpus_file, lm, quantile: float = 0.5, **changes) -> AlphaEditHparams:
    """A threshold at the given quantile of the layers' eigenvalues, so the tiny models have a
    null space of about that fraction of d_k (an absolute 2e-2 would keep all or nothing)."""
    moments = second_moments(lm, [1, 2], str(corpus_file), n_tokens=MOM2_TOKENS, progress=False)
    values = torch.cat([torch.linalg.eigvalsh(moments[layer].double()) for layer in (1, 2)])
    threshold = float(torch.quantile(values, quantile))
    return AlphaEditHparams(**(COMMON | {"mom2_corpus": str(corpus_file), "nullspace_threshold": threshold} | changes))


def test_null_space_projector_keeps_the_small_eigen_directions():
    torch.manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    values = torch.tensor([1e-4, 5e-3, 1e-2, 0.5, 2.0, 9.0], dtype=torch.float64)
    moment = basis @ torch.diag(values) @ basis.T
    space = null_space(moment, 2e-2)
    assert space.dimensions == 3 and space.total == 6
    expected = basis[:, :3] @ basis[:, :3].T
    assert torch.allclose(space.projector, expected, atol=1e-10)
    assert torch.allclose(space.projector @ space.projector, space.projector, atol=1e-10)  # a projector
    assert null_space_dimensions(moment, [1e-5, 2e-2, 1.0, 10.0]) == [0, 3, 4, 6]


def test_solver_satisfies_the_projected_normal_equations_and_spares_preserved_keys():
    """X = solve(P (KKᵀ + C_p) + αI, P K Rᵀ): check the equation, X ∈ range(P), ΔW k₀ = 0 for P k₀ = 0."""
    torch.manual_seed(1)
    d_k, d, n = 8, 5, 3
    basis, _ = torch.linalg.qr(torch.randn(d_k, d_k, dtype=torch.float64))
    values = torch.tensor([1e-3] * 4 + [1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    space = null_space(basis @ torch.diag(values) @ basis.T, 2e-2)
    keys, share = torch.randn(d_k, n, dtype=torch.float64), torch.randn(d, n, dtype=torch.float64)
    past = torch.randn(d_k, 2, dtype=torch.float64)
    accumulated = past @ past.T
    delta = alphaedit_solver({0: space}, {0: accumulated}, alpha=1.0)(0, keys, share)  # (d, d_k)
    p = space.projector
    x = delta.T
    lhs = (p @ (keys @ keys.T + accumulated) + torch.eye(d_k, dtype=torch.float64)) @ x
    assert torch.allclose(lhs, p @ keys @ share.T, atol=1e-10)
    assert torch.allclose(p @ x, x, atol=1e-10)
    preserved = basis[:, 4:]  # eigenvectors above the threshold: P k₀ = 0
    assert float((delta @ preserved).abs().max()) < 1e-10
    # without C_p the paper's closed form R Kᵀ P (K Kᵀ P + I)⁻¹ gives the same matrix
    plain = alphaedit_solver({0: space}, {}, alpha=1.0)(0, keys, share)
    closed = share @ keys.T @ p @ torch.linalg.inv(keys @ keys.T @ p + torch.eye(d_k, dtype=torch.float64))
    assert torch.allclose(plain, closed, atol=1e-10)


def test_edit_leaves_outputs_on_preserved_keys_unchanged(make_lm, corpus_file):
    lm = make_lm("llama")
    hparams = _alpha_hparams(corpus_file, lm)
    edit = AlphaEdit().compute(lm, REQUESTS, hparams)
    moments = second_moments(lm, [1, 2], str(corpus_file), n_tokens=MOM2_TOKENS, progress=False)
    for layer in (1, 2):
        delta = edit.deltas[lm.anatomy.mlp_out_weight(layer)].double()  # Llama: (d_out, d_k)
        values, vectors = torch.linalg.eigh(moments[layer].double())
        preserved = vectors[:, values >= hparams.nullspace_threshold]
        free = vectors[:, values < hparams.nullspace_threshold]
        assert preserved.shape[1] > 10 and free.shape[1] > 10
        assert float(delta.norm()) > 1e-3  # it does write something
        # float32 storage of ΔW: zero up to rounding relative to its size
        assert float((delta @ preserved).norm()) < 1e-5 * float(delta.norm())
        assert float((delta @ free).norm()) > 0.5 * float(delta.norm())
        assert edit.info["null_space_dimensions"][str(layer)] == free.shape[1]


def test_edit_moves_the_residual_toward_z(make_lm, corpus_file):
    lm = make_lm("gpt2")
    hparams = _alpha_hparams(corpus_file, lm, quantile=0.7)
    templates = context_templates(lm, hparams.context_template_length_params)
    z = compute_targets(lm, REQUESTS, hparams, templates).z
    before = (subject_hidden(lm, REQUESTS, 2, "subject_last") - z).norm(dim=1)
    edit = AlphaEdit().compute(lm, REQUESTS, hparams)
    edit.apply(lm)
    after = (subject_hidden(lm, REQUESTS, 2, "subject_last") - z).norm(dim=1)
    edit.revert(lm)
    assert bool((after < before).all()), (before, after)


def test_session_accumulates_the_keys_of_applied_batches(make_lm, corpus_file):
    lm = make_lm("llama")
    hparams = _alpha_hparams(corpus_file, lm)
    session = open_session(AlphaEdit(), lm, hparams)
    first = session.compute(REQUESTS[:2])
    assert session.accumulated == {}
    first.apply(lm)
    session.applied(first)
    templates = context_templates(lm, hparams.context_template_length_params)
    weights = template_weights(hparams.context_template_length_params)
    for layer in (1, 2):
        keys = weighted_subject_keys(lm, REQUESTS[:2], layer, templates, weights, "subject_last").double()
        assert torch.allclose(session.accumulated[layer], keys.T @ keys, rtol=1e-10, atol=1e-10)
    second = session.compute(REQUESTS[2:])
    assert second.info["earlier_requests_in_C_p"] == 2
    # the second batch differs from a fresh one: the earlier keys enter its solve
    fresh = AlphaEdit().compute(lm, REQUESTS[2:], hparams)
    name = lm.anatomy.mlp_out_weight(1)
    assert not torch.allclose(second.deltas[name], fresh.deltas[name])
    first.revert(lm)


def test_alphaedit_hparams_registry_and_errors(make_lm):
    lm = make_lm("llama")
    method = get_method("alphaedit")
    hparams = method.default_hparams(lm, overrides={"L2": 10, "mom2_update_weight": 15000})
    assert hparams.l2 == 10 and hparams.nullspace_threshold == 2e-2
    with pytest.raises(KeditError, match="l2"):
        method.default_hparams(lm, overrides={"l2": 0})
    with pytest.raises(KeditError, match="nullspace_threshold"):
        method.default_hparams(lm, overrides={"nullspace_threshold": -1})


# --------------------------------------------------------------------------- Multi-Label Edit


def test_label_requests_expand_every_distinct_label():
    request = EditRequest("{} speaks", "Ann", "French", target_true="German", extra_targets=("English", "French"))
    labels = label_requests(request)
    assert [r.target_new for r in labels] == ["French", "English"]
    assert all(r.subject == "Ann" and r.prompt == "{} speaks" and r.target_true == "German" for r in labels)
    assert all(r.extra_targets == () for r in labels)


def test_mle_is_one_memit_batch_over_the_labels(make_lm, corpus_file):
    lm = make_lm("llama")
    hparams = MEMITHparams(**(COMMON | {"mom2_corpus": str(corpus_file), "mom2_update_weight": 50.0}))
    request = EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball",
                          extra_targets=("tennis",))
    edit = MultiLabelEdit().compute(lm, [request], hparams)
    direct = MEMIT().compute(lm, label_requests(request), hparams)
    assert edit.method == "mle" and edit.requests == (request,)
    assert edit.info["labels"] == [["football", "tennis"]] and edit.info["requests_in_batch"] == 2
    for name, delta in direct.deltas.items():
        assert torch.equal(edit.deltas[name], delta)


# --------------------------------------------------------------------------- modes


def test_sequential_mode_equals_applying_the_steps_in_turn(make_lm, corpus_file):
    lm = make_lm("llama")
    overrides = COMMON | {"mom2_corpus": str(corpus_file), "mom2_update_weight": 50.0}
    before = {name: t.clone() for name, t in lm.model.state_dict().items()}
    edit = kedit.edit(lm, "memit", REQUESTS, mode="sequential", batch_size=2, apply=False, **overrides)
    assert len(edit.info["steps"]) == 2
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # compute left the model as it was
    # by hand: the first two, applied; then the third on top
    hparams = get_method("memit").default_hparams(lm, overrides=overrides)
    first = MEMIT().compute(lm, REQUESTS[:2], hparams)
    first.apply(lm)
    second = MEMIT().compute(lm, REQUESTS[2:], hparams)
    first.revert(lm)
    for name, delta in edit.deltas.items():
        assert torch.allclose(delta, first.deltas[name] + second.deltas[name], atol=1e-6)
    # a batch computes all three jointly: a different update
    batch = kedit.edit(lm, "memit", REQUESTS, mode="batch", apply=False, **overrides)
    name = next(iter(batch.deltas))
    assert not torch.allclose(batch.deltas[name], edit.deltas[name], atol=1e-4)
    edit.apply(lm)
    edit.revert(lm)
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_bad_mode_and_batch_size_are_refused(make_lm):
    lm = make_lm("llama")
    with pytest.raises(KeditError, match="mode"):
        kedit.edit(lm, "memit", REQUESTS, mode="parallel")
    with pytest.raises(KeditError, match="batch_size"):
        kedit.edit(lm, "memit", REQUESTS, mode="sequential", batch_size=0)
