"""Factored weight deltas (ΔW = U Vᵀ): the same change as the dense matrix, bit-identical to
themselves across save and load, summed correctly by combine, and produced by MEND, ROME and MEMIT;
edit folders written before factored deltas existed still load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import kedit
from kedit.edits import DELTAS_FILE, EDIT_MANIFEST, LowRankDelta, WeightEdit
from kedit.edits.base import manifest_of, save_edit_files
from kedit.edits.deltas import compact, dense_nbytes
from kedit.errors import KeditError
from kedit.methods import load_edit
from kedit.methods.mend import MEND, capture_factors, mend_factors, transformed_factors
from kedit.methods.targets import target_batch
from kedit.requests import EditRequest

# tiny random models rarely reach the targets in three steps; the tests check the deltas, not the outcome
pytestmark = pytest.mark.filterwarnings("ignore::kedit.errors.KeditWarning")

R1 = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
R2 = EditRequest("{} plays the sport of", "Michael Jordan", "football", target_true="basketball")
ROME_FAST = {"layer": 1, "v_num_grad_steps": 3, "context_template_length_params": [[3, 2]], "mom2_adjustment": False}


def _state(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def _assert_state(lm, expected) -> None:
    for name, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def _factors(shape, rank, seed, dtype=torch.float32) -> LowRankDelta:
    generator = torch.Generator().manual_seed(seed)
    rows, cols = shape
    return LowRankDelta(0.01 * torch.randn(rows, rank, generator=generator, dtype=dtype),
                        torch.randn(cols, rank, generator=generator, dtype=dtype), torch.float32)


def _edit(lm, deltas, method="random") -> WeightEdit:
    return WeightEdit(method=method, requests=(R1,), hparams={}, deltas=deltas, base_fingerprint=lm.fingerprint)


# ------------------------------------------------------------------------------------------ the factors


def test_the_factors_form_u_v_transposed_and_rank_one_transposes_exactly():
    delta = _factors((5, 7), 1, seed=0, dtype=torch.float64)
    expected = torch.outer(delta.u[:, 0], delta.v[:, 0]).to(torch.float32)  # every entry one product
    assert torch.equal(delta.dense(), expected) and delta.dense().dtype == torch.float32
    assert delta.shape == (5, 7) and delta.rank == 1 and delta.nbytes == (5 + 7) * 8
    assert torch.equal(delta.transposed().dense(), delta.dense().T)  # a Conv1D weight's orientation
    wide = _factors((5, 7), 3, seed=1)
    torch.testing.assert_close(wide.dense(), sum(torch.outer(wide.u[:, i], wide.v[:, i]) for i in range(3)))
    with pytest.raises(ValueError, match="U \\(rows, r\\) and V \\(cols, r\\)"):
        LowRankDelta(torch.zeros(5, 2), torch.zeros(7, 3), torch.float32)


def test_compact_keeps_factors_only_while_they_are_smaller_than_the_dense_matrix():
    rows, cols = 48, 128  # r (rows + cols) < rows cols  <=>  r < 34.9 (float32 on both sides)
    assert isinstance(compact(_factors((rows, cols), 34, seed=0)), LowRankDelta)
    dense = compact(_factors((rows, cols), 35, seed=0))
    assert isinstance(dense, torch.Tensor) and dense.shape == (rows, cols)
    # float64 factors of a float32 delta cost twice as much per number
    assert isinstance(compact(_factors((rows, cols), 18, seed=0, dtype=torch.float64)), torch.Tensor)
    assert dense_nbytes((rows, cols), torch.bfloat16) == rows * cols * 2


def test_deltas_read_dense_and_keep_the_factors(make_lm):
    lm = make_lm("llama")
    name = lm.anatomy.mlp_out_weight(1)
    factored = _factors(tuple(lm.parameter(name).shape), 2, seed=3)
    edit = _edit(lm, {name: factored})
    assert isinstance(edit.deltas[name], torch.Tensor) and torch.equal(edit.deltas[name], factored.dense())
    assert edit.deltas.form(name) is factored and edit.deltas.nbytes == factored.nbytes
    assert list(edit.deltas) == [name] and edit.touches() == (name,)
    [(where, what)] = edit.changes()
    assert where == name and "rank 2, factored" in what


# --------------------------------------------------------------------------------- applying, saving


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_factored_and_dense_application_agree_and_the_factored_one_is_bit_identical_after_save_load(
        make_lm, tmp_path, architecture):
    lm = make_lm(architecture)
    original = _state(lm)
    names = [lm.anatomy.mlp_out_weight(layer) for layer in (0, 2)]
    factored = {name: _factors(tuple(lm.parameter(name).shape), 3, seed=i) for i, name in enumerate(names)}
    # the same change held dense, formed independently (float64 sum of outer products)
    dense = {name: sum(torch.outer(f.u[:, i].double(), f.v[:, i].double()) for i in range(f.rank)).float()
             for name, f in factored.items()}
    low, full = _edit(lm, factored), _edit(lm, dense)

    full.apply(lm)
    dense_state = _state(lm)
    full.revert(lm)
    low.apply(lm)
    for name in names:
        torch.testing.assert_close(lm.parameter(name), dense_state[name], rtol=1e-6, atol=1e-7)
        assert torch.equal(lm.parameter(name), original[name] + low.deltas[name])  # one delta, one add
    applied = _state(lm)
    low.revert(lm)
    _assert_state(lm, original)

    folder = low.save(tmp_path / "factored")
    stored = load_file(str(folder / DELTAS_FILE))
    assert sorted(stored) == sorted(f"{name}{suffix}" for name in names for suffix in ("#U", "#V"))
    manifest = json.loads((folder / EDIT_MANIFEST).read_text())
    assert manifest["factored"] == {name: {"rank": 3, "dtype": "float32"} for name in names}
    assert manifest["parameters"] == {name: list(lm.parameter(name).shape) for name in names}
    loaded = load_edit(folder)
    assert list(loaded.deltas) == names
    for name in names:
        assert isinstance(loaded.deltas.form(name), LowRankDelta)
        assert torch.equal(loaded.deltas.form(name).u, factored[name].u)
        assert torch.equal(loaded.deltas[name], low.deltas[name])
    loaded.apply(lm)
    _assert_state(lm, applied)
    loaded.revert(lm)
    _assert_state(lm, original)


def test_a_damaged_factored_edit_is_refused(make_lm, tmp_path):
    lm = make_lm("llama")
    name = lm.anatomy.mlp_out_weight(1)
    folder = _edit(lm, {name: _factors(tuple(lm.parameter(name).shape), 2, seed=0)}).save(tmp_path / "edit")
    data = bytearray((folder / DELTAS_FILE).read_bytes())
    data[-2] ^= 0x01
    (folder / DELTAS_FILE).write_bytes(bytes(data))
    with pytest.raises(KeditError, match="does not match the sha256"):
        load_edit(folder)
    # a manifest that names an unknown dtype, with the files' sha256 intact
    folder = _edit(lm, {name: _factors(tuple(lm.parameter(name).shape), 2, seed=0)}).save(tmp_path / "edit2")
    manifest = json.loads((folder / EDIT_MANIFEST).read_text())
    manifest["factored"][name]["dtype"] = "float33"
    (folder / EDIT_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KeditError, match="float33.*is not a torch dtype"):
        load_edit(folder)


def test_dense_edits_are_saved_as_before_and_old_dense_folders_load(make_lm, tmp_path):
    lm = make_lm("gpt2")
    name = lm.anatomy.mlp_out_weight(1)
    delta = 0.01 * torch.randn(lm.parameter(name).shape, generator=torch.Generator().manual_seed(0))
    edit = _edit(lm, {name: delta})
    folder = edit.save(tmp_path / "dense")
    assert sorted(load_file(str(folder / DELTAS_FILE))) == [name]
    assert "factored" not in json.loads((folder / EDIT_MANIFEST).read_text())

    # a folder exactly as kedit wrote it before factored deltas: the manifest of manifest_of with the
    # parameters' shapes, the dense tensors under their names
    old = tmp_path / "old"
    old_manifest = manifest_of(edit, parameters={name: list(delta.shape)})
    save_edit_files(old, old_manifest, lambda f: save_file({name: delta.contiguous()}, str(f / DELTAS_FILE)))
    loaded = load_edit(old)
    assert isinstance(loaded.deltas.form(name), torch.Tensor) and torch.equal(loaded.deltas[name], delta)
    before = _state(lm)
    loaded.apply(lm)
    assert torch.equal(lm.parameter(name), before[name] + delta)
    loaded.revert(lm)
    _assert_state(lm, before)


# ---------------------------------------------------------------------------------------------- combine


def test_combine_sums_factored_dense_and_mixed_deltas(make_lm):
    lm = make_lm("llama")
    name = lm.anatomy.mlp_out_weight(1)
    shape = tuple(lm.parameter(name).shape)
    a, b = _factors(shape, 1, seed=1), _factors(shape, 2, seed=2)
    both = WeightEdit.combine([_edit(lm, {name: a}), _edit(lm, {name: b})])
    form = both.deltas.form(name)
    assert isinstance(form, LowRankDelta) and form.rank == 3  # factors side by side
    torch.testing.assert_close(both.deltas[name], a.dense() + b.dense(), rtol=1e-6, atol=1e-7)
    # dense deltas: summed in edit order exactly as before (first copied, then added)
    d1, d2 = a.dense(), b.dense()
    dense = WeightEdit.combine([_edit(lm, {name: d1}), _edit(lm, {name: d2})])
    assert torch.equal(dense.deltas[name], d1.clone() + d2)
    mixed = WeightEdit.combine([_edit(lm, {name: d1}), _edit(lm, {name: b})])
    assert isinstance(mixed.deltas.form(name), torch.Tensor)
    assert torch.equal(mixed.deltas[name], d1.clone() + b.dense())
    # past the break-even rank (36 columns > 34.9) the deltas are formed and summed dense, in edit order
    parts = [_factors(shape, 9, seed=s) for s in range(4)]
    many = WeightEdit.combine([_edit(lm, {name: part}) for part in parts])
    assert isinstance(many.deltas.form(name), torch.Tensor)
    assert torch.equal(many.deltas[name], parts[0].dense().clone() + parts[1].dense() + parts[2].dense() + parts[3].dense())


# ------------------------------------------------------------------------------------------ the methods


def _old_mend_dense(lm, editor, requests):
    """The deployed MEND update as kedit formed it before factoring: α (δ̃ᵀ ũ) over every (row, token)
    entry, the dropped ones zero, transposed for Conv1D."""
    factors = capture_factors(lm, editor.weights, target_batch(lm, [(r.text, r.target_new) for r in requests]))
    with torch.no_grad():
        u_tilde, delta_tilde = transformed_factors(editor, factors)
        result = {}
        for index, weight in enumerate(editor.weights):
            update = delta_tilde[index].reshape(-1, weight.d_out).T @ u_tilde[index].reshape(-1, weight.d_in)
            update = update.T if weight.transposed else update
            result[weight.name] = editor.edit_lrs[index] * update
    return result


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_mend_factors_equal_the_dense_update_and_have_one_column_per_token(make_lm, architecture):
    lm = make_lm(architecture)
    hparams = MEND().default_hparams(lm, overrides={"rank": 8})
    editor = MEND().build_editor(lm, hparams)
    generator = torch.Generator().manual_seed(1)
    for index, weight in enumerate(editor.weights):  # statistics, so the editor can run in eval mode
        editor.transform(index, torch.randn(20, weight.d_in, generator=generator),
                         torch.randn(20, weight.d_out, generator=generator))
    editor.eval()
    with torch.no_grad():
        for parameter in editor.network_parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        editor.edit_lrs.copy_(torch.linspace(-0.3, 0.5, len(editor.weights)))
    factored = mend_factors(lm, editor, [R1, R2])
    expected = _old_mend_dense(lm, editor, [R1, R2])
    tokens = sum(target_batch(lm, [(r.text, r.target_new) for r in (R1, R2)]).batch.lengths)
    for name, update in factored.items():
        assert update.shape == lm.parameter(name).shape and 0 < update.rank <= tokens
        # float32 rounding only: the products are summed in another order (α folded into U, no zero rows)
        error = (update.dense() - expected[name]).norm() / expected[name].norm()
        assert float(error) < 1e-6, name


def test_rome_returns_one_factor_pair_per_request_and_applies_their_sum(make_lm):
    lm = make_lm("gpt2")
    name = lm.anatomy.mlp_out_weight(1)
    original = _state(lm)
    edit = kedit.edit(lm, "rome", [R1, R2], apply=False, **ROME_FAST)
    form = edit.deltas.form(name)
    assert isinstance(form, LowRankDelta) and form.rank == 2 and form.u.dtype == torch.float64
    assert form.shape == lm.parameter(name).shape and form.nbytes < dense_nbytes(form.shape, torch.float32)
    # the sum of the two rank-one updates, each formed on its own (the second on the model carrying the first)
    first = kedit.edit(lm, "rome", R1, **ROME_FAST)
    second = kedit.edit(lm, "rome", R2, apply=False, **ROME_FAST)
    first.revert(lm)
    _assert_state(lm, original)
    torch.testing.assert_close(edit.deltas[name], first.deltas[name] + second.deltas[name], rtol=1e-5, atol=1e-7)


def test_memit_keeps_its_per_layer_update_factored_with_rank_the_number_of_requests(make_lm, corpus_file):
    lm = make_lm("llama")
    options = {"layers": [1, 2], "v_num_grad_steps": 3, "context_template_length_params": [[3, 2]],
               "mom2_corpus": str(corpus_file), "mom2_tokens": 2000, "z_cache": False}
    edit = kedit.edit(lm, "memit", [R1, R2], apply=False, **options)
    for layer in (1, 2):
        form = edit.deltas.form(lm.anatomy.mlp_out_weight(layer))
        assert isinstance(form, LowRankDelta) and form.rank == 2 and form.dtype == torch.float32
