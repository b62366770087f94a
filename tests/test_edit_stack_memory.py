"""The lean EditStack: weight edits kept without a copy each, yet every pop (and every lift out of
the middle) leaves the model bit for bit as today's per-edit copies would, module swaps and prompt
contexts between them still work, and the tensors a stack of K rank-one edits holds grow with
K·(m + n), not K·m·n."""

from __future__ import annotations

import random
from dataclasses import fields, is_dataclass

import pytest
import torch
from torch import nn

from kedit.edits import EditStack, LowRankDelta, ModuleSwapEdit, WeightEdit, register_swap_module, swap_of
from kedit.errors import EditStateError
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest

REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English")


def _state(lm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in lm.model.state_dict().items()}


def _same_bits(lm, expected) -> bool:
    return all(torch.equal(t.reshape(-1).view(torch.uint8), expected[n].reshape(-1).view(torch.uint8))
               for n, t in lm.model.state_dict().items())


def _random_edits(lm, count: int, seed: int, layers=(0, 1, 2)) -> list[WeightEdit]:
    """Edits on random subsets of the MLP output weights of ``layers``: dense ones and factored ones of rank 1-3."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    names = [lm.anatomy.mlp_out_weight(layer) for layer in layers]
    edits = []
    for _ in range(count):
        deltas = {}
        for name in rng.sample(names, rng.randint(1, len(names))):
            rows, cols = lm.parameter(name).shape
            if rng.random() < 0.5:
                deltas[name] = 0.05 * torch.randn(rows, cols, generator=generator)
            else:
                rank = rng.randint(1, 3)
                deltas[name] = LowRankDelta(0.05 * torch.randn(rows, rank, generator=generator),
                                            torch.randn(cols, rank, generator=generator), torch.float32)
        edits.append(WeightEdit(method="random", requests=(REQUEST,), hparams={}, deltas=deltas,
                                base_fingerprint=lm.fingerprint))
    return edits


def _twin(edit: WeightEdit) -> WeightEdit:
    """The same deltas in a second edit object (each object tracks its own applied state)."""
    return WeightEdit(method=edit.method, requests=edit.requests, hparams={}, deltas=edit.deltas.forms,
                      base_fingerprint=edit.base_fingerprint)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_pop_restores_what_per_edit_copies_restore_bit_for_bit(make_lm, dtype):
    """A random walk of pushes and pops on a lean stack, beside a twin model on which each edit is
    applied and reverted with its own copy (kedit's behaviour before the lean stack)."""
    lean_lm, reference_lm = make_lm("llama"), make_lm("llama")
    lean_lm.model.to(dtype)
    reference_lm.model.to(dtype)
    original = _state(lean_lm)
    edits = _random_edits(lean_lm, 12, seed=0)
    rng = random.Random(1)
    stack = EditStack(lean_lm)
    reference: list[WeightEdit] = []  # applied on the twin, each with its own copy
    unused = list(range(len(edits)))
    for step in range(40):  # eight pushes first, so that pops re-add several edits below
        if unused and (not reference or step < 8 or rng.random() < 0.5):
            index = unused.pop(rng.randrange(len(unused)))
            stack.push(edits[index])
            reference.append(_twin(edits[index]))
            reference[-1].apply(reference_lm)
        else:
            popped = stack.pop()
            reference.pop().revert(reference_lm)
            unused.append(next(i for i, edit in enumerate(edits) if edit is popped))
            assert not popped.is_applied
        assert _same_bits(lean_lm, _state(reference_lm))
    while reference:  # popping all the way down, one at a time (each pop re-adds the edits below)
        stack.pop()
        reference.pop().revert(reference_lm)
        assert _same_bits(lean_lm, _state(reference_lm))
    assert _same_bits(lean_lm, original)
    stack.verify_restored()


def test_a_lean_stack_pushes_to_the_same_bits_as_applying_in_turn_and_unwinds_at_once(make_lm):
    lm = make_lm("gpt2")
    original = _state(lm)
    edits = _random_edits(lm, 8, seed=2)
    for edit in edits:
        edit.apply(lm)
    applied = _state(lm)
    for edit in reversed(edits):
        edit.revert(lm)
    with EditStack(lm) as stack:
        for edit in edits:
            stack.push(edit)
        assert _same_bits(lm, applied) and all(edit.is_applied for edit in edits)
        assert all(edit._snapshot is None for edit in edits)  # no copy per edit
    assert _same_bits(lm, original) and not any(edit.is_applied for edit in edits)
    stack.verify_restored()


def test_lifting_an_edit_out_of_the_middle_gives_the_state_without_it_and_puts_it_back(make_lm):
    lm = make_lm("llama")
    edits = _random_edits(lm, 5, seed=3)
    stack = EditStack(lm)
    for edit in edits:
        stack.push(edit)
    full = _state(lm)
    for edit in (edits[0], edits[2]):
        reference_lm = make_lm("llama")
        for other in edits:  # the reference: every edit but the lifted one, applied in order
            if other is not edit:
                _twin(other).apply(reference_lm)
        without = _state(reference_lm)
        with stack.lifted(edit):
            assert _same_bits(lm, without) and not edit.is_applied
            with stack.pushed(edit):  # what evaluate() does inside: the edit alone on top of the rest
                pass
            assert _same_bits(lm, without)
        assert _same_bits(lm, full) and edit.is_applied and stack.edits == tuple(edits)
    stack.unwind()
    stack.verify_restored()


def test_an_edit_on_a_stack_is_taken_off_only_through_it(make_lm):
    lm = make_lm("llama")
    [edit] = _random_edits(lm, 1, seed=4)
    with EditStack(lm) as stack:
        stack.push(edit)
        with pytest.raises(EditStateError, match="take it off through the stack"):
            edit.revert(lm)
        with pytest.raises(EditStateError, match="already applied"):
            edit.apply(lm)
        with pytest.raises(EditStateError, match="already applied"):
            stack.push(edit)
    [direct] = _random_edits(lm, 1, seed=5)
    direct.apply(lm)
    with pytest.raises(EditStateError, match="already applied"):
        EditStack(lm).push(direct)
    direct.revert(lm)


# ----------------------------------------------------------------------- weight edits and other kinds


@register_swap_module("test-lean-shift")
class _Shift(nn.Module):
    """Wraps a module and adds a fixed vector to its output (it moves the wrapped module's parameters
    under ``wrapped.``: a weight edit after it names other parameters)."""

    def __init__(self, wrapped: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.shift = nn.Parameter(shift, requires_grad=False)

    def forward(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs) + self.shift

    def swap_config(self):
        return {}

    def swap_state(self):
        return {"shift": self.shift.detach()}

    @classmethod
    def rebuild(cls, config, state, replaced):
        return cls(replaced, state["shift"].clone())


def _weights(lm) -> dict[str, torch.Tensor]:
    """The model's weights under their unswapped names (a wrapped module's ``wrapped.`` dropped, the shift left out)."""
    return {name.replace(".wrapped.", "."): tensor for name, tensor in lm.model.state_dict().items()
            if not name.endswith(".shift")}


def test_weight_edits_around_a_module_swap_pop_bit_exactly(make_lm):
    lm, reference_lm = make_lm("llama"), make_lm("llama")
    original = _state(lm)
    path = lm.anatomy.mlp_out_paths[0]
    swap = ModuleSwapEdit(method="test", requests=(REQUEST,), hparams={}, base_fingerprint=lm.fingerprint,
                          swaps=(swap_of(path, _Shift(lm.module(path), torch.ones(lm.anatomy.hidden_size))),))
    below = _random_edits(lm, 3, seed=6)
    above = _random_edits(lm, 3, seed=7, layers=(1, 2))  # layer 0's weight is under the swap then
    stack = EditStack(lm)
    twins = []
    states = []  # the reference's weights with each prefix of the weight edits applied
    for edit in below:
        stack.push(edit)
        twins.append(_twin(edit))
        twins[-1].apply(reference_lm)
        states.append(_state(reference_lm))
    stack.push(swap)
    assert lm.overlays and isinstance(lm.module(path), _Shift)
    for edit in above:
        stack.push(edit)  # a new run of weight edits: its own originals
        twins.append(_twin(edit))
        twins[-1].apply(reference_lm)
        states.append(_state(reference_lm))
    for depth in range(len(twins) - 1, len(below) - 1, -1):
        assert all(torch.equal(tensor, states[depth][name]) for name, tensor in _weights(lm).items())
        stack.pop()
        twins.pop().revert(reference_lm)
    assert stack.pop() is swap and not lm.overlays
    assert _same_bits(lm, states[len(below) - 1])
    stack.pop()
    assert _same_bits(lm, states[len(below) - 2])
    with pytest.raises(EditStateError, match="sits under a module swap"):
        stack.push(swap)
        with stack.lifted(below[0]):
            pass
    stack.unwind()
    assert _same_bits(lm, original)
    stack.verify_restored()


# ------------------------------------------------------------------------------------------- memory


def _held_tensor_bytes(root: object) -> int:
    """Bytes of every tensor reachable from ``root`` through attributes and containers, each storage
    once; the model (and its parameters) is not part of it."""
    seen_objects: set[int] = set()
    storages: dict[int, int] = {}
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in seen_objects or isinstance(item, LoadedModel | nn.Module | nn.Parameter | type):
            continue
        seen_objects.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            todo.extend(item)
        elif is_dataclass(item):
            todo.extend(getattr(item, f.name) for f in fields(item))
        elif hasattr(item, "__dict__"):
            todo.extend(vars(item).values())
        elif hasattr(item, "items"):  # read-only mapping views
            todo.extend(item.values())
    return sum(storages.values())


def test_a_stack_of_rank_one_edits_grows_with_k_times_m_plus_n(make_lm):
    lm = make_lm("llama")
    name = lm.anatomy.mlp_out_weight(1)
    rows, cols = lm.parameter(name).shape
    generator = torch.Generator().manual_seed(0)
    stack = EditStack(lm)
    held = {}
    for count in range(1, 41):
        stack.push(WeightEdit(method="rome", requests=(REQUEST,), hparams={}, base_fingerprint=lm.fingerprint,
                              deltas={name: LowRankDelta(torch.randn(rows, 1, generator=generator),
                                                         torch.randn(cols, 1, generator=generator), torch.float32)}))
        held[count] = _held_tensor_bytes(stack)
    # each further edit adds exactly its two factors; the copies (the original, the top edit's) do not grow
    per_edit = (rows + cols) * 4
    assert [held[k + 1] - held[k] for k in range(2, 40)] == [per_edit] * 38
    assert held[40] - 40 * per_edit <= 2 * rows * cols * 4  # the original and the top edit's copy
    assert stack.copies_nbytes == 2 * rows * cols * 4
    stack.unwind()
    stack.verify_restored()
