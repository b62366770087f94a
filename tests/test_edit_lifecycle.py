"""An Edit's life: apply, revert bit for bit, refuse double application, save, load, check the model."""

from __future__ import annotations

import pytest
import torch

import kedit
from kedit.edits import DELTAS_FILE, EDIT_MANIFEST
from kedit.errors import EditStateError, KeditError
from kedit.methods import WeightEdit, load_edit
from kedit.models import weights_fingerprint
from kedit.requests import EditRequest

REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French")
FAST = {
    "layer": 1,
    "v_num_grad_steps": 3,
    "context_template_length_params": [[3, 2]],
    "mom2_adjustment": False,
}


def _snapshot(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def _assert_same_state(lm, expected: dict[str, torch.Tensor]) -> None:
    state = lm.model.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, expected[name]), f"{name} differs"


def test_apply_then_revert_restores_every_parameter_bit_for_bit(lm):
    original = _snapshot(lm)
    edit = kedit.edit(lm, "rome", REQUEST, **FAST)
    assert edit.is_applied
    [name] = edit.deltas
    assert name == lm.anatomy.mlp_out_weight(1)
    changed = [key for key, tensor in lm.model.state_dict().items() if not torch.equal(tensor, original[key])]
    assert changed == [name]
    edited = lm.parameter(name).detach().clone()
    assert torch.equal(edited, original[name] + edit.deltas[name])

    edit.revert(lm)
    assert not edit.is_applied
    _assert_same_state(lm, original)
    assert weights_fingerprint(lm.model) == lm.fingerprint

    edit.apply(lm)  # applying again after a revert gives the same weights
    assert torch.equal(lm.parameter(name), edited)
    edit.revert(lm)
    _assert_same_state(lm, original)


def test_double_apply_and_revert_without_apply_raise(make_lm):
    lm = make_lm("llama")
    original = _snapshot(lm)
    edit = kedit.edit(lm, "rome", REQUEST, apply=False, **FAST)
    assert not edit.is_applied
    _assert_same_state(lm, original)  # apply=False leaves the model alone
    with pytest.raises(EditStateError, match="not applied"):
        edit.revert(lm)
    edit.apply(lm)
    applied = _snapshot(lm)
    with pytest.raises(EditStateError, match="already applied"):
        edit.apply(lm)
    _assert_same_state(lm, applied)  # the refused second apply added nothing
    edit.revert(lm)
    with pytest.raises(EditStateError):
        edit.revert(lm)
    _assert_same_state(lm, original)


def test_save_load_apply_is_bit_identical(make_lm, tmp_path):
    lm = make_lm("gpt2")
    original = _snapshot(lm)
    edit = kedit.edit(lm, "rome", REQUEST, **FAST)
    applied = _snapshot(lm)
    edit.revert(lm)

    folder = edit.save(tmp_path / "saved-edit")
    assert (folder / DELTAS_FILE).is_file() and (folder / EDIT_MANIFEST).is_file()
    loaded = load_edit(folder)
    assert isinstance(loaded, WeightEdit)
    assert loaded.method == "rome"
    assert loaded.requests == (REQUEST,)
    assert loaded.base_fingerprint == lm.fingerprint
    assert loaded.deltas.keys() == edit.deltas.keys()
    for name, delta in edit.deltas.items():
        assert torch.equal(loaded.deltas[name], delta)
    assert loaded.hparams["layer"] == 1 and loaded.hparams["mom2_adjustment"] is False

    loaded.apply(lm)
    _assert_same_state(lm, applied)
    loaded.revert(lm)
    _assert_same_state(lm, original)


def test_apply_to_a_different_model_is_refused(make_lm):
    lm = make_lm("llama")
    edit = kedit.edit(lm, "rome", REQUEST, apply=False, **FAST)
    other = make_lm("llama", seed=1)  # same shapes, different weights
    assert other.fingerprint != lm.fingerprint
    before = _snapshot(other)
    with pytest.raises(EditStateError, match="computed on model"):
        edit.apply(other)
    assert not edit.is_applied
    _assert_same_state(other, before)


def test_tampered_deltas_file_is_refused_on_load(make_lm, tmp_path):
    lm = make_lm("llama")
    edit = kedit.edit(lm, "rome", REQUEST, apply=False, **FAST)
    folder = edit.save(tmp_path / "saved-edit")
    deltas = folder / DELTAS_FILE
    data = bytearray(deltas.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    deltas.write_bytes(bytes(data))
    with pytest.raises(KeditError, match="sha256"):
        load_edit(folder)
    deltas.unlink()
    with pytest.raises(KeditError, match="missing"):
        WeightEdit.load(folder)
    with pytest.raises(KeditError, match="no saved edit"):
        load_edit(tmp_path / "nothing-here")
