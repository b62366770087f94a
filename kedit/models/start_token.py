"""A document-start token for models whose tokenizer adds none.

Without one, the first token of every prompt sits at position 0. A causal model's position 0
sees only itself and carries the attention sink (massive activations), so its hidden state is
unlike that of the same token anywhere else. Locate-then-edit methods learn their keys and values
from the subject inside sampled contexts; a prompt that opens with its subject ("Paris is the
capital of") then presents a key the update was never solved for, and the edit silently does
nothing (issue 11, SmolLM2: without a start token 0 of 5 ROME edits of one-token subjects opening
the prompt took; with one all 7 subject-first facts took).

kedit therefore prepends the token the model saw between its pretraining documents, in the
tokenizer itself (its post-processor), so every path that tokenises text — scoring, keys, v*,
statistics, generation, in-context prompts — sees the same sequence, and character offsets still
map the subject to its tokens (the added token has an empty span).

``"auto"`` picks ``<|endoftext|>`` when the vocabulary has it (GPT-2, SmolLM, Qwen, GPT-NeoX: the
document separator of their pretraining), else the tokenizer's BOS, else its EOS. A tokenizer that
already adds a special token first (Llama, Gemma) is left alone. ``"none"`` keeps position 0 as
the tokenizer makes it (EasyEdit's behaviour); any other string names the token to use.
"""

from __future__ import annotations

import copy
from typing import Any

from kedit.errors import ModelLoadError

AUTO = "auto"
NONE = "none"
DOCUMENT_SEPARATOR = "<|endoftext|>"


def added_start_token(tokenizer: Any) -> str | None:
    """The special token the tokenizer already puts before a text, if it puts one."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    if len(full) > len(bare) and full[-len(bare):] == bare and full[0] in set(tokenizer.all_special_ids):
        return tokenizer.convert_ids_to_tokens(full[0])
    return None


def _in_vocabulary(tokenizer: Any, token: str) -> bool:
    return token in tokenizer.get_vocab()


def choose_start_token(tokenizer: Any, requested: str = AUTO) -> str | None:
    """The token to prepend (None: nothing to prepend) for the ``requested`` policy."""
    if requested == NONE or added_start_token(tokenizer) is not None:
        return None
    if requested != AUTO:
        if not _in_vocabulary(tokenizer, requested):
            raise ModelLoadError(f"start_token {requested!r} is not in the tokenizer's vocabulary; "
                                 f"use '{AUTO}', '{NONE}' or one of its special tokens")
        return requested
    for candidate in (DOCUMENT_SEPARATOR, tokenizer.bos_token, tokenizer.eos_token):
        if candidate and _in_vocabulary(tokenizer, candidate):
            return candidate
    return None


def with_start_token(tokenizer: Any, token: str) -> Any:
    """A copy of ``tokenizer`` that puts ``token`` before every text it encodes with special tokens.

    The caller's tokenizer is not modified (it may be shared, e.g. by several loaded models).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelLoadError(f"cannot add the start token {token!r}: {type(tokenizer).__name__} is not a fast "
                             f"(tokenizers-backed) tokenizer; load with start_token='{NONE}'")
    from tokenizers import processors

    copied = copy.deepcopy(tokenizer)
    token_id = copied.convert_tokens_to_ids(token)
    template = processors.TemplateProcessing(single=f"{token} $A", pair=f"{token} $A $B",
                                             special_tokens=[(token, token_id)])
    existing = copied.backend_tokenizer.post_processor
    copied.backend_tokenizer.post_processor = (
        template if existing is None else processors.Sequence([existing, template])
    )
    if added_start_token(copied) != token:
        raise ModelLoadError(f"the tokenizer did not take the start token {token!r}; load with start_token='{NONE}'")
    return copied
