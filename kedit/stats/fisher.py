"""The diagonal (empirical) Fisher information of chosen weights, for FT+EWC (SPEC-ALGORITHMS K).

F_j = (1/N) Σ_n (∂L_n/∂θ_j)²: the mean over N examples of each example's squared gradient, L_n the
example's loss at its true tokens (the empirical Fisher, as GRACE's FT+EWC computes it; Kirkpatrick
et al. 2017 sample the labels from the model instead). Every example gets its own backward with the
gradients zeroed before it (GRACE's code accumulates them across examples, so its "Fisher" squares
running sums: SPEC K FLAG 2), and the sum is divided by the number of examples used (FLAG 3).

:func:`corpus_fisher` estimates it on the first ``n_texts`` windows of ``text_tokens`` tokens of a
text corpus (:mod:`kedit.stats.corpus`; the offline default is the Python standard library's
docstrings), each window's loss its mean next-token NLL. The result is cached under
``$KEDIT_HOME/fisher`` keyed by the model's *state* fingerprint (the weights it was computed at, so
an edited model never reads the unedited model's entry), the weights, the corpus digest, the counts,
the dtype and the start token; files are safetensors written atomically with the key in their
metadata, checked on load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kedit.errors import CacheError
from kedit.models.loading import LoadedModel
from kedit.models.tracing import final_hidden, logits_from_hidden
from kedit.paths import atomic_path, cache_dir, sha256_text
from kedit.stats.corpus import Corpus, resolve_corpus

log = logging.getLogger(__name__)


def diagonal_fisher(parameters: Sequence[torch.nn.Parameter], losses: Iterable[Callable[[], torch.Tensor]]
                    ) -> list[torch.Tensor]:
    """Per parameter, the mean over ``losses`` (each a closure computing one example's loss) of the
    squared gradient; float32 tensors of the parameters' shapes. Gradients are zeroed per example."""
    flags = [parameter.requires_grad for parameter in parameters]
    sums = [torch.zeros_like(parameter, dtype=torch.float64) for parameter in parameters]
    count = 0
    try:
        for parameter in parameters:
            parameter.requires_grad_(True)
        with torch.enable_grad():
            for loss in losses:
                gradients = torch.autograd.grad(loss(), list(parameters))
                for total, gradient in zip(sums, gradients, strict=True):
                    total += gradient.double().pow(2)
                count += 1
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)
    if not count:
        raise ValueError("the Fisher information needs at least one example")
    return [(total / count).float() for total in sums]


def text_windows(lm: LoadedModel, corpus: Corpus, n_texts: int, text_tokens: int) -> list[list[int]]:
    """The first ``n_texts`` windows of at most ``text_tokens`` tokens (at least 2) of the corpus, in order."""
    windows: list[list[int]] = []
    for document in corpus.documents():
        ids = lm.tokenizer(document, add_special_tokens=True)["input_ids"]
        for start in range(0, len(ids), text_tokens):
            window = ids[start:start + text_tokens]
            if len(window) >= 2:
                windows.append(window)
            if len(windows) == n_texts:
                return windows
    raise CacheError(f"corpus {corpus.name} holds only {len(windows)} windows of text; {n_texts} were requested")


def _window_loss(lm: LoadedModel, window: Sequence[int]) -> Callable[[], torch.Tensor]:
    def loss() -> torch.Tensor:
        ids = torch.tensor([list(window)], device=lm.device)
        hidden = final_hidden(lm, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False})
        logits = logits_from_hidden(lm, hidden[0, :-1])  # (T-1, V): position t predicts token t+1
        return torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:])  # mean NLL of the window
    return loss


def _key(lm: LoadedModel, names: Sequence[str], corpus: Corpus, n_texts: int, text_tokens: int,
         state: str) -> dict[str, str]:
    return {"state": state, "parameters": ",".join(names), "corpus_digest": corpus.digest,
            "texts": str(n_texts), "text_tokens": str(text_tokens), "dtype": str(lm.dtype),
            "tokenization": lm.tokenization}


def fisher_cache_path(key: dict[str, str]) -> Path:
    return cache_dir("fisher") / key["state"][:24] / f"{sha256_text(repr(sorted(key.items())))[:24]}.safetensors"


def _load(path: Path, key: dict[str, str]) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if any(metadata.get(name) != value for name, value in key.items()):
            raise CacheError(f"{path} was written for different inputs")
        return load_file(str(path))
    except Exception as problem:  # noqa: BLE001 - an unreadable entry is recomputed, never trusted
        log.warning("ignoring unreadable Fisher cache %s (%s); recomputing", path, problem)
        return None


def corpus_fisher(lm: LoadedModel, names: Sequence[str], corpus: str | Sequence[str] | Corpus | None = None,
                  n_texts: int = 100, text_tokens: int = 64, progress: bool = True) -> dict[str, torch.Tensor]:
    """The diagonal Fisher of the parameters ``names`` on the current weights over a corpus (cached)."""
    corpus = resolve_corpus(corpus)
    key = _key(lm, names, corpus, n_texts, text_tokens, lm.state_fingerprint())
    path = fisher_cache_path(key)
    cached = _load(path, key)
    if cached is not None and set(cached) == set(names):
        return {name: cached[name] for name in names}
    windows = text_windows(lm, corpus, n_texts, text_tokens)
    parameters = [lm.parameter(name) for name in names]
    bar: Iterator = tqdm(windows, desc="Fisher information", unit="text", disable=None if progress else True,
                         leave=False)  # None: shown on a terminal only
    values = diagonal_fisher(parameters, (_window_loss(lm, window) for window in bar))
    result = {name: value.cpu().contiguous() for name, value in zip(names, values, strict=True)}
    with atomic_path(path) as tmp:
        save_file(result, str(tmp), metadata=key)
    return result
