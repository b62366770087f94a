"""find_anatomy locates blocks, MLP output projections, final norm and unembedding structurally."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kedit.errors import AnatomyError
from kedit.models import find_anatomy
from tests.tiny_models import ALL_ARCHITECTURES, HIDDEN, INTERMEDIATE, NUM_LAYERS, build_model

# The module names each family's source code gives its parts (from transformers' modelling files).
EXPECTED = {
    "gpt2": ("transformer.h", "mlp.c_proj", "transformer.ln_f"),
    "gptj": ("transformer.h", "mlp.fc_out", "transformer.ln_f"),
    "llama": ("model.layers", "mlp.down_proj", "model.norm"),
    "gemma3": ("model.layers", "mlp.down_proj", "model.norm"),
    "qwen2": ("model.layers", "mlp.down_proj", "model.norm"),
    "mistral": ("model.layers", "mlp.down_proj", "model.norm"),
    "gptneox": ("gpt_neox.layers", "mlp.dense_4h_to_h", "gpt_neox.final_layer_norm"),
}


@pytest.mark.parametrize("architecture", ALL_ARCHITECTURES)
def test_find_anatomy_matches_known_module_names(architecture, tokenizer):
    model = build_model(architecture, len(tokenizer))
    anatomy = find_anatomy(model)
    blocks, down, final_norm = EXPECTED[architecture]

    assert anatomy.num_layers == NUM_LAYERS
    assert anatomy.block_paths == tuple(f"{blocks}.{i}" for i in range(NUM_LAYERS))
    assert anatomy.mlp_out_paths == tuple(f"{blocks}.{i}.{down}" for i in range(NUM_LAYERS))
    assert anatomy.final_norm_path == final_norm
    assert anatomy.unembed_path == "lm_head"
    assert anatomy.hidden_size == HIDDEN
    assert anatomy.key_size == INTERMEDIATE
    assert anatomy.transposed is (architecture == "gpt2")

    # The stored weight, viewed as (d_out, d_in), maps keys (d_k) to the model width.
    weight = model.get_parameter(anatomy.mlp_out_weight(1))
    assert tuple(anatomy.as_out_in(weight).shape) == (HIDDEN, INTERMEDIATE)
    assert tuple(anatomy.as_update(torch.zeros(HIDDEN, INTERMEDIATE)).shape) == tuple(weight.shape)


def test_find_anatomy_depth_follows_config(tokenizer):
    anatomy = find_anatomy(build_model("llama", len(tokenizer), num_layers=2))
    assert anatomy.num_layers == 2
    with pytest.raises(AnatomyError, match="out of range"):
        anatomy.check_layer(2)
    with pytest.raises(AnatomyError, match="out of range"):
        anatomy.check_layer(-1)


class _UnknownLayout(nn.Module):
    """A model with embeddings but no block list with an MLP child."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        self.head = nn.Linear(16, 50)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_unknown_layout_raises_and_lists_modules():
    with pytest.raises(AnatomyError) as raised:
        find_anatomy(_UnknownLayout())
    message = str(raised.value)
    assert "Modules seen" in message
    for name in ("embed: Embedding", "body: Sequential", "body.0: Linear", "head: Linear"):
        assert name in message
