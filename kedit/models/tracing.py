"""Hook points on a model: read a module's input, add to a module's output, stop a forward early,
and replay the blocks below a layer from a cache.

Every helper is a context manager that removes what it installed on exit, so a failed step never
leaves a hook behind.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator

import torch
from torch import nn

from kedit.models.anatomy import text_config
from kedit.models.batching import Batch
from kedit.models.loading import LoadedModel


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once everything needed has been seen."""


def kv_cache_keyword(lm: LoadedModel) -> str:
    """The keyword the base model's forward takes a KV cache under: ``cache`` from transformers 5.x
    (where ``past_key_values`` is deprecated), ``past_key_values`` before."""
    parameters = inspect.signature(lm.model.base_model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def returned_kv_cache(output: object) -> object | None:
    """The KV cache a forward returned (``cache`` or, in older transformers, ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


@contextlib.contextmanager
def capture_inputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the first positional input of each module; the dict fills during the forward."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():
        def hook(_module, args, name=name):
            seen[name] = args[0]
        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def edit_output(module: nn.Module, change: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace ``module``'s output (a tensor) by ``change(output)`` during forwards in this block."""
    def hook(_module, _args, output):
        return change(output)
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_until(lm: LoadedModel, inputs: Batch | dict, last_module: nn.Module) -> None:
    """Run a forward (of a Batch, or of keyword inputs for the base model) that stops as soon as
    ``last_module`` has run; nothing above it is computed."""
    def stop(_module, _args, _output):
        raise _StopForward
    kwargs = inputs.model_inputs() | {"use_cache": False} if isinstance(inputs, Batch) else inputs
    handle = last_module.register_forward_hook(stop)
    try:
        lm.model.base_model(**kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()


def final_hidden(lm: LoadedModel, inputs: Batch | dict) -> torch.Tensor:
    """(B, T, d) hidden states after the final norm, without computing logits for every position.

    ``inputs`` is a Batch or keyword inputs for the base model (e.g. with a KV cache).
    """
    kwargs = inputs.model_inputs() | {"use_cache": False} if isinstance(inputs, Batch) else inputs
    output = lm.model.base_model(**kwargs)
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def logits_from_hidden(lm: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the unembedding (and the final logit soft-cap some families use) to final hidden states."""
    logits = lm.module(lm.anatomy.unembed_path)(hidden)
    cap = getattr(text_config(lm.model), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@contextlib.contextmanager
def replay_blocks_below(
    lm: LoadedModel, layer: int, inputs: Batch | dict, before: Callable[[], None] = lambda: None
) -> Iterator[None]:
    """Make blocks ``0 .. layer-1`` return, for ``inputs``, the outputs they gave on a first forward.

    Their outputs cannot change while only layer ``layer`` and above are modified (for example
    while optimising a vector added at layer ``layer``), so recomputing them at every step is
    wasted work. The first forward runs normally and records each block's output; afterwards each
    lower block's ``forward`` is replaced by a function returning its recorded output, whatever
    arguments it receives. Only valid for forwards on these same ``inputs``; ``before`` runs just
    before the recording forward (for example to reset a KV cache).
    """
    blocks = [lm.module(path) for path in lm.anatomy.block_paths[:layer]]
    if not blocks:
        yield
        return
    recorded: list[object] = [None] * len(blocks)
    handles = []
    for index, block in enumerate(blocks):
        def record(_module, _args, output, index=index):
            recorded[index] = _detach(output)
        handles.append(block.register_forward_hook(record))
    try:
        with torch.no_grad():
            before()
            run_until(lm, inputs, blocks[-1])
    finally:
        for handle in handles:
            handle.remove()
    for block, output in zip(blocks, recorded, strict=True):
        block.forward = _returning(output)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # back to the class's forward


def _returning(output: object) -> Callable[..., object]:
    def forward(*_args, **_kwargs):
        return output
    return forward


def _detach(output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple):
        return tuple(_detach(item) for item in output)
    return output
