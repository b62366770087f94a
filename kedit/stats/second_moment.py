"""The uncentred second moment C = E[k kᵀ] of MLP keys, for many layers in one pass, cached on disk.

k is the input of a block's MLP output projection (its width is d_k), taken at every non-padding
token of a corpus. All requested layers are collected in the same forward passes, which stop right
after the deepest requested layer (nothing above it is computed).

Accumulation: each batch's Xᵀ X is formed in the model's dtype (float32) by one matrix product and
added to a float64 running sum; a batch holds at most a few thousand tokens, so the float32 partial
sums are exact to ~1e-7 relative and the float64 total does not drift over 10⁵–10⁶ tokens (the test
suite compares against an all-float64 accumulation).

Cache key: (model fingerprint, layer, corpus digest, token count, model dtype, start token); files are
safetensors written atomically, with the key repeated in their metadata and checked on load.
Processes sharing the cache (the runs of a sweep) compute a (model, corpus, tokens) group under one
lock (:func:`kedit.paths.exclusive_lock`): the first computes the layers nobody has, the others wait
and read them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kedit.errors import CacheError
from kedit.models.anatomy import text_config
from kedit.models.batching import pad_left
from kedit.models.loading import LoadedModel
from kedit.models.tracing import run_until
from kedit.paths import atomic_path, cache_dir, exclusive_lock, lock_path, sha256_text
from kedit.stats.corpus import Corpus, resolve_corpus

DEFAULT_TOKENS = 100_000
DEFAULT_SEQUENCE_LENGTH = 512
DEFAULT_BATCH_TOKENS = 4096
log = logging.getLogger(__name__)


def _context_length(lm: LoadedModel) -> int | None:
    """The longest sequence the model accepts (its position-embedding count), if the config says."""
    config = text_config(lm.model)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _windows(lm: LoadedModel, corpus: Corpus, n_tokens: int, sequence_length: int) -> Iterator[list[int]]:
    """Token windows (each document tokenised, cut into pieces no longer than the model's context)
    until ``n_tokens`` have been produced."""
    sequence_length = min(sequence_length, _context_length(lm) or sequence_length)
    produced = 0
    for document in corpus.documents():
        ids = lm.tokenizer(document, add_special_tokens=True)["input_ids"]
        for start in range(0, len(ids), sequence_length):
            window = ids[start : start + sequence_length][: n_tokens - produced]
            if len(window) < 2:
                continue
            produced += len(window)
            yield window
            if produced >= n_tokens:
                return
    if produced < n_tokens:
        raise CacheError(f"corpus {corpus.name} holds only {produced} tokens; {n_tokens} were requested")


def _batches(windows: Iterator[list[int]], batch_tokens: int) -> Iterator[list[list[int]]]:
    batch: list[list[int]] = []
    for window in windows:
        if batch and (len(batch) + 1) * max(len(window), max(map(len, batch))) > batch_tokens:
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


@torch.no_grad()
def collect_second_moments(
    lm: LoadedModel,
    layers: Sequence[int],
    corpus: Corpus,
    n_tokens: int = DEFAULT_TOKENS,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    block_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """Compute (d_k, d_k) float64 second moments for ``layers`` in one pass over ``corpus``.

    ``block_dtype`` is the dtype of each batch's partial product (default: the model's dtype);
    pass ``torch.float64`` for an all-float64 accumulation.
    """
    layers = sorted(set(layers))
    for layer in layers:
        lm.anatomy.check_layer(layer)
    if n_tokens < 1:
        raise ValueError("n_tokens must be positive")
    modules = {layer: lm.module(lm.anatomy.mlp_out_paths[layer]) for layer in layers}
    d_k = lm.anatomy.key_size
    sums = {layer: torch.zeros(d_k, d_k, dtype=torch.float64, device=lm.device) for layer in layers}
    seen = {"mask": None}

    def make_hook(layer: int):
        def hook(_module, args):
            keys = args[0][seen["mask"]]  # (n_real_tokens, d_k)
            keys = keys.to(block_dtype or keys.dtype)
            sums[layer] += (keys.T @ keys).to(torch.float64)
        return hook

    handles = [modules[layer].register_forward_pre_hook(make_hook(layer)) for layer in layers]
    counted = 0
    bar = tqdm(total=n_tokens, desc=f"key statistics, layers {','.join(map(str, layers))}",
               unit="tok", disable=not progress, leave=False)
    try:
        for rows in _batches(_windows(lm, corpus, n_tokens, sequence_length), batch_tokens):
            batch = pad_left(rows, lm.pad_token_id, lm.device)
            seen["mask"] = batch.attention_mask.bool()
            run_until(lm, batch, modules[layers[-1]])
            counted += sum(batch.lengths)
            bar.update(sum(batch.lengths))
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
    return {layer: (total / counted).cpu() for layer, total in sums.items()}


def _group_name(lm: LoadedModel, corpus: Corpus, n_tokens: int) -> str:
    dtype = str(lm.dtype).removeprefix("torch.")
    start = sha256_text(lm.tokenization)[:8]  # documents begin with the start token, if any
    return f"corpus{corpus.digest[:16]}-tok{n_tokens}-{dtype}-{start}"


def statistics_cache_path(lm: LoadedModel, layer: int, corpus: Corpus, n_tokens: int) -> Path:
    """Where the second moment of ``layer`` for (this model, corpus, token count, dtype) is cached."""
    return cache_dir("stats") / lm.fingerprint[:24] / f"layer{layer}-{_group_name(lm, corpus, n_tokens)}.safetensors"


def _metadata(lm: LoadedModel, layer: int, corpus: Corpus, n_tokens: int) -> dict[str, str]:
    return {
        "fingerprint": lm.fingerprint,
        "layer": str(layer),
        "corpus": corpus.name[:500],
        "corpus_digest": corpus.digest,
        "tokens": str(n_tokens),
        "dtype": str(lm.dtype),
        "tokenization": lm.tokenization,
    }


def _load_cached(path: Path, expected: dict[str, str]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if any(metadata.get(key) != value for key, value in expected.items() if key != "corpus"):
            raise CacheError(f"{path} was written for different inputs")
        return load_file(str(path))["second_moment"]
    except Exception as problem:  # noqa: BLE001 - any unreadable file is rebuilt, never trusted
        log.warning("ignoring unreadable statistics cache %s (%s); recomputing", path, problem)
        return None


def _read_cached(lm: LoadedModel, layers: Sequence[int], corpus: Corpus, n_tokens: int,
                 into: dict[int, torch.Tensor]) -> list[int]:
    """Put the cached layers not yet in ``into`` there; return the layers still missing."""
    missing = []
    for layer in sorted(set(layers) - set(into)):
        cached = _load_cached(statistics_cache_path(lm, layer, corpus, n_tokens), _metadata(lm, layer, corpus, n_tokens))
        if cached is None:
            missing.append(layer)
        else:
            into[layer] = cached
    return missing


def second_moments(
    lm: LoadedModel,
    layers: Sequence[int],
    corpus: str | Sequence[str] | Corpus | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """Cached second moments for ``layers``: cached layers are read, the rest computed in one pass."""
    corpus = resolve_corpus(corpus)
    result: dict[int, torch.Tensor] = {}
    if _read_cached(lm, layers, corpus, n_tokens, result):
        # One lock per (model, corpus, tokens, dtype, start token): another process computing layers of
        # this group finishes first, and what it wrote is read here instead of computed again.
        with exclusive_lock(lock_path(statistics_cache_path(lm, 0, corpus, n_tokens), _group_name(lm, corpus, n_tokens))):
            missing = _read_cached(lm, layers, corpus, n_tokens, result)
            computed = collect_second_moments(lm, missing, corpus, n_tokens, progress=progress) if missing else {}
            for layer, matrix in computed.items():
                path = statistics_cache_path(lm, layer, corpus, n_tokens)
                with atomic_path(path) as tmp:
                    save_file({"second_moment": matrix.contiguous()}, str(tmp),
                              metadata=_metadata(lm, layer, corpus, n_tokens))
                result[layer] = matrix
    return {layer: result[layer] for layer in sorted(set(layers))}
