"""WISE's router (SPEC I.2, I.5): which memory answers a query, from its activation scores.

A query's score for a side memory is the mean over its tokens of a per-token activation difference
between that memory's output and the main memory's at the edited projection (``token_scores``).
The decision rules are the reference's, applied to a batch of queries at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def token_scores(side: torch.Tensor, main: torch.Tensor, form: str,
                 act: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(...,) per-token score: ‖side − main‖ (``paper``: ‖A(x)(W' − W)‖) or ‖act(side) − act(main)‖ (``code``)."""
    if form == "code":
        side, main = act(side), act(main)
    return (side.float() - main.float()).norm(dim=-1)


def sequence_means(scores: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """(..., B) mean of ``scores`` (..., B, T) over the positions ``counted`` (B, T) marks (0 where none)."""
    weight = counted.to(scores.dtype)
    return (scores * weight).sum(-1) / weight.sum(-1).clamp_min(1)


def counted_tokens(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the real tokens of left- or right-padded rows except each row's first one.

    kedit puts a document-start token before every text (Llama and Gemma tokenizers add a BOS), so
    the first position holds the same token, with the same state, in every sequence: its score says
    nothing about the query, and it is left out of every mean, in training and routing alike.
    """
    real = attention_mask.bool().clone()
    real[torch.arange(real.shape[0]), real.to(torch.uint8).argmax(dim=1)] = False
    return real


def choose_retrieve(means: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """WISE-Retrieve (I.5): (N,) index of the answering memory per query, −1 = the main memory.

    ``means`` (M, N): memory 0 is the side memory being written, 1.. the stored ones. Memory 0
    answers when its score reaches its threshold; a stored memory takes over when its score is
    above its own threshold and above the best score so far (which starts at memory 0's, reached
    or not, as in the reference).
    """
    choice = torch.where(means[0] >= thresholds[0], 0, -1)
    best = means[0]
    for index in range(1, means.shape[0]):
        better = (means[index] > best) & (means[index] > thresholds[index])
        choice = torch.where(better, index, choice)
        best = torch.where(better, means[index], best)
    return choice


def choose_merge(side: torch.Tensor, current: torch.Tensor, threshold: float) -> torch.Tensor:
    """WISE-Merge (I.5) per query: 0 = the merged side memory, 1 = the one being written, −1 = main.

    Both scores (N,) below the threshold → main; else the larger (ties: the one being written).
    """
    return torch.where((side < threshold) & (current < threshold), -1, torch.where(side > current, 0, 1))
