"""Sampled continuations of prompts (for fluency and context templates), reproducible by seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kedit.models.batching import Batch, encode, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.routing import RouteGroup, gather, route_groups


@torch.no_grad()
def generate_ids(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    seed: int = 0,
    top_k: int = 5,
) -> list[list[int]]:
    """Top-k sampled continuations (new token ids only) of token-id prompts, in one batch.

    The seed fixes the result on a given device: sampling runs under a forked RNG so the caller's
    random state is left alone.
    """
    batch: Batch = pad_left(prompts, lm.pad_token_id, lm.device)
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        output = lm.model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            top_k=top_k,
            top_p=1.0,
            temperature=1.0,
            pad_token_id=lm.pad_token_id,
        )
    return [row[batch.width :].tolist() for row in output]


def generate(
    lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 40, seed: int = 0, top_k: int = 5
) -> list[str]:
    """Prompt plus sampled continuation, as text (ROME's fluency protocol samples with top-k 5).

    The model sees each prompt with its installed prompt contexts; the text returned starts at the prompt.
    A prompt a query router claims (:mod:`kedit.models.routing`) is continued by the model the router
    names, after the text it gives (one batch per answering model, each sampled with ``seed``); the
    text returned still starts at the prompt as given.
    """
    if lm.routers:
        def answer(group: RouteGroup) -> list[str]:
            model = group.model
            shown = group.shown if group.routed else lm.in_context(group.shown)
            ids = generate_ids(model, [encode(model.tokenizer, text) for text in shown], max_new_tokens, seed, top_k)
            return [prompts[index] + model.tokenizer.decode(new, skip_special_tokens=True)
                    for index, new in zip(group.indices, ids, strict=True)]

        return gather(route_groups(lm, prompts), answer, len(prompts))
    ids = generate_ids(lm, [encode(lm.tokenizer, p) for p in lm.in_context(prompts)], max_new_tokens, seed, top_k)
    return [prompt + lm.tokenizer.decode(new, skip_special_tokens=True) for prompt, new in zip(prompts, ids, strict=True)]
