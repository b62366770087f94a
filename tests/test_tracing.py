"""Hook helpers: replaying the blocks below a layer gives the forward's own numbers, and really replays."""

from __future__ import annotations

import pytest
import torch

from kedit.models.batching import encode_batch
from kedit.models.tracing import capture_inputs, edit_output, final_hidden, replay_blocks_below
from tests.tiny_models import NUM_LAYERS

TEXTS = ["The Eiffel Tower is located in the city of", "Rome is the capital of", "A cat"]


def _plain_forward_hidden(lm, text: str) -> torch.Tensor:
    with torch.no_grad():
        output = lm.model(torch.tensor([lm.tokenizer(text)["input_ids"]]), output_hidden_states=True)
    return output.hidden_states[-1][0]


@pytest.mark.parametrize("layer", range(NUM_LAYERS + 1))
def test_replay_gives_identical_final_hidden_states(lm, layer):
    batch = encode_batch(lm.tokenizer, TEXTS)
    with torch.no_grad():
        normal = final_hidden(lm, batch)
        with replay_blocks_below(lm, layer, batch):
            replayed = final_hidden(lm, batch)
            replayed_again = final_hidden(lm, batch)
    assert torch.equal(replayed, normal)
    assert torch.equal(replayed_again, normal)
    # and the batched, left-padded forward equals the plain one of each text
    for row, text in enumerate(TEXTS):
        length = batch.lengths[row]
        assert torch.allclose(normal[row, -length:], _plain_forward_hidden(lm, text), rtol=1e-4, atol=1e-5)


def test_replay_really_skips_the_lower_blocks(lm):
    batch = encode_batch(lm.tokenizer, TEXTS)
    lower = lm.parameter(lm.anatomy.mlp_out_weight(0))
    upper = lm.parameter(lm.anatomy.mlp_out_weight(2))
    with torch.no_grad():
        normal = final_hidden(lm, batch)
        with replay_blocks_below(lm, 2, batch):
            lower.mul_(2.0)  # block 0 is replayed: changing it changes nothing
            assert torch.equal(final_hidden(lm, batch), normal)
            lower.div_(2.0)
            upper.mul_(2.0)  # block 2 runs for real
            assert not torch.allclose(final_hidden(lm, batch), normal)
            upper.div_(2.0)
        assert all("forward" not in vars(lm.module(path)) for path in lm.anatomy.block_paths)
        assert all(not lm.module(path)._forward_hooks for path in lm.anatomy.block_paths)
        lower.mul_(2.0)  # after the block, block 0 runs again
        assert not torch.allclose(final_hidden(lm, batch), normal)
        lower.div_(2.0)
        assert torch.equal(final_hidden(lm, batch), normal)


def test_replay_with_keyword_inputs(lm):
    batch = encode_batch(lm.tokenizer, TEXTS)
    kwargs = batch.model_inputs() | {"use_cache": False}
    with torch.no_grad():
        normal = lm.model.base_model(**kwargs).last_hidden_state
        with replay_blocks_below(lm, 2, kwargs):
            replayed = lm.model.base_model(**kwargs).last_hidden_state
    assert torch.equal(replayed, normal)


def test_capture_and_edit_output_hooks(lm):
    batch = encode_batch(lm.tokenizer, TEXTS)
    path = lm.anatomy.mlp_out_paths[1]
    module = lm.module(path)
    with torch.no_grad():
        normal = final_hidden(lm, batch)
        with capture_inputs({path: module}) as seen:
            final_hidden(lm, batch)
        assert seen[path].shape == (len(TEXTS), batch.width, lm.anatomy.key_size)
        with edit_output(module, lambda out: out * 0.0):
            zeroed = final_hidden(lm, batch)
        assert not torch.allclose(zeroed, normal)
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert torch.equal(final_hidden(lm, batch), normal)
