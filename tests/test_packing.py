"""Prefix-tree packing: the layout and mask on a hand-built example, and packed rows giving every
architecture the hidden states of the unpacked sequences."""

from __future__ import annotations

import pytest
import torch

from kedit.models.anatomy import text_config
from kedit.models.packing import pack_prefix_trees, tree_packing_supported
from kedit.models.tracing import final_hidden


def test_shared_prefixes_become_one_column_each_with_ancestor_only_attention():
    sequences = [(1, 2, 3), (1, 2, 4), (1, 2), (5,), (1, 2, 3)]
    packed = pack_prefix_trees(sequences, row_width=16, pad_id=0)
    inputs = packed.model_inputs()
    # Lexicographic order (1,2) (1,2,3) (1,2,3) (1,2,4) (5,): columns 1 2 3 | 4 | 5
    assert inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 2, 0]]
    assert packed.paths == ((0, (0, 1, 2)), (0, (0, 1, 3)), (0, (0, 1)), (0, (4,)), (0, (0, 1, 2)))
    sees = (inputs["attention_mask"][0, 0] == 0).int().tolist()
    assert sees == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],  # token 4 sees its ancestors 1 2 and itself, not its sibling 3
        [0, 0, 0, 0, 1],  # a new root sees only itself
    ]
    assert inputs["attention_mask"][0, 0, 3, 2].item() == torch.finfo(torch.float32).min
    half = packed.model_inputs(dtype=torch.bfloat16)["attention_mask"]
    assert half.dtype == torch.bfloat16 and half[0, 0, 3, 2].item() == torch.finfo(torch.bfloat16).min


def test_rows_break_where_the_next_sequence_no_longer_fits_and_restart_their_trie():
    packed = pack_prefix_trees([(1, 2), (1, 3), (4, 5), (1, 6, 7)], row_width=4, pad_id=9)
    inputs = packed.model_inputs()
    # Capacity max(4, 2 x 3) = 6. Order (1,2) (1,3) (1,6,7) (4,5): columns 1 2 | 3 | 6 7 fill 5; (4,5)
    # would make 7, so it starts a new row (whose unused columns are padding).
    assert inputs["input_ids"].tolist() == [[1, 2, 3, 6, 7], [4, 5, 9, 9, 9]]
    assert packed.paths == ((0, (0, 1)), (0, (0, 2)), (1, (0, 1)), (0, (0, 3, 4)))
    assert inputs["position_ids"].tolist() == [[0, 1, 1, 1, 2], [0, 1, 0, 0, 0]]
    unused = inputs["attention_mask"][1, 0, 2:]
    assert (unused == 0).int().tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]  # itself only
    assert packed.model_inputs(1, 2)["input_ids"].tolist() == [[4, 5]]  # a forward of row 1 alone is 2 wide
    wide = pack_prefix_trees([(1, 2, 3, 4, 5, 6)], row_width=4, pad_id=0)  # a longer sequence widens its row
    assert wide.model_inputs()["input_ids"].shape == (1, 6)


def test_a_long_shared_prefix_runs_once_for_many_suffixes():
    """In-context demonstrations put one long prefix in front of every prompt: rows grow to twice
    the longest sequence so that the prefix is not recomputed for each suffix."""
    prefix = tuple(range(10, 30))  # 20 tokens, longer than the row width
    sequences = [(*prefix, suffix) for suffix in range(1, 9)]
    packed = pack_prefix_trees(sequences, row_width=8, pad_id=0)
    assert packed.model_inputs()["input_ids"].tolist() == [[*prefix, *range(1, 9)]]  # 20 + 8 columns, one row
    assert all(columns[:20] == tuple(range(20)) for _, columns in packed.paths)


def test_packing_rejects_empty_input():
    with pytest.raises(ValueError, match="no sequences"):
        pack_prefix_trees([], row_width=8, pad_id=0)
    with pytest.raises(ValueError, match="empty"):
        pack_prefix_trees([(1,), ()], row_width=8, pad_id=0)


def test_packed_rows_give_the_hidden_states_of_unpacked_sequences(any_lm):
    lm = any_lm
    texts = ["The capital of France is Paris", "The capital of France is Rome", "The capital of Spain",
             "A cat sat on", "The capital"]
    # The tiny Gemma-3's 6-token window would be dropped by a custom mask: keep its inputs inside it.
    window = getattr(text_config(lm.model), "sliding_window", None) or 1000
    sequences = [lm.tokenizer(text)["input_ids"][:window] for text in texts]
    assert tree_packing_supported(lm.model, max(map(len, sequences)))
    packed = pack_prefix_trees(sequences, row_width=12, pad_id=lm.pad_token_id)
    assert len(packed.rows) >= 2  # several rows, some sharing prefixes
    columns_used = {(row, column) for row, columns in packed.paths for column in columns}
    assert len(columns_used) < sum(map(len, sequences))  # shared prefixes ran once
    with torch.no_grad():
        hidden = final_hidden(lm, packed.model_inputs() | {"use_cache": False})  # (R, W, d)
        for sequence, (row, columns) in zip(sequences, packed.paths, strict=True):
            alone = final_hidden(lm, {"input_ids": torch.tensor([sequence]), "use_cache": False})[0]
            assert torch.allclose(hidden[row, list(columns)], alone, atol=1e-5)


def test_a_sliding_window_shorter_than_the_input_rules_packing_out(make_lm):
    gemma = make_lm("gemma3")  # the tiny Gemma-3 has a 6-token window that a custom mask would drop
    assert tree_packing_supported(gemma.model, 6)
    assert not tree_packing_supported(gemma.model, 7)
    llama = make_lm("llama")
    assert tree_packing_supported(llama.model, 100)
    llama.model.config._attn_implementation = "flash_attention_2"  # takes no 4D mask
    assert not tree_packing_supported(llama.model, 10)
