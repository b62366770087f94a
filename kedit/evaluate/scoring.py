"""THE scoring primitive: batched, teacher-forced scoring of (prompt, target) pairs.

For each pair the target (with a leading space) is appended to the prompt and fed in one forward;
for every target token we read the log-probability the model gave it and the model's argmax at
that position. Every metric in kedit is a function of these numbers; nothing else runs a forward
loop to measure an edit.

Pairs from many cases are scored together: they are sorted by length, packed into left-padded
batches under a token budget, and only the target positions go through the unembedding (the
vocabulary projection is the most expensive layer of a small model, so it is not applied to
prompt positions whose logits nobody reads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kedit.models.batching import encode, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.tracing import final_hidden, logits_from_hidden

DEFAULT_TOKEN_BUDGET = 4096  # padded tokens per forward: keeps activations small on a CPU


@dataclass(frozen=True)
class TargetScore:
    """How the model scores one target after one prompt, token by token."""

    target_ids: tuple[int, ...]
    log_probs: tuple[float, ...]  # log p(t_j | prompt, t_<j), natural log
    predicted: tuple[int, ...]  # argmax token at each target position (teacher forced)

    @property
    def hits(self) -> tuple[bool, ...]:
        return tuple(p == t for p, t in zip(self.predicted, self.target_ids, strict=True))

    @property
    def mean_log_prob(self) -> float:
        return sum(self.log_probs) / len(self.log_probs)

    @property
    def geometric_mean_prob(self) -> float:
        """exp(mean token log-prob): the per-token probability used by the probability protocol."""
        return math.exp(self.mean_log_prob)


def target_text(target: str) -> str:
    """Targets are scored with one leading space (the convention of every editing benchmark)."""
    return target if target[:1].isspace() else " " + target


def encode_pair(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the target as they appear after it.

    The pair is tokenised jointly and split at the prompt's own tokenisation when that is a prefix
    of the joint one (true for byte-level BPE with the leading space); otherwise the target is
    tokenised on its own, which is what a model sees when it generates it after the prompt.
    """
    prompt_ids = encode(tokenizer, prompt)
    joint = encode(tokenizer, prompt + target_text(target))
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return prompt_ids, joint[len(prompt_ids) :]
    target_ids = list(tokenizer(target_text(target), add_special_tokens=False)["input_ids"])
    if not target_ids:
        raise ValueError(f"target {target!r} tokenises to nothing")
    return prompt_ids, target_ids


def prefix_hosts(sequences: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """For each sequence, the longest distinct sequence of the list that starts with it (itself when
    none does). A causal model's logits at a sequence's positions are the same inside any longer
    sequence that begins with it, so only the hosts need a forward.

    In lexicographic order a sequence's extensions follow it directly, so one backward pass over
    the sorted distinct sequences finds every host.
    """
    distinct = sorted({tuple(sequence) for sequence in sequences})
    host: dict[tuple[int, ...], tuple[int, ...]] = {}
    following: tuple[int, ...] | None = None
    for sequence in reversed(distinct):
        extends = following is not None and following[: len(sequence)] == sequence
        host[sequence] = host[following] if extends else sequence  # type: ignore[index]
        following = sequence
    return [host[tuple(sequence)] for sequence in sequences]


def score(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> list[TargetScore]:
    """Score every (prompt, target) pair; the result is in the order of ``pairs``.

    Each prompt is shown with the model's installed prompt contexts (:meth:`LoadedModel.in_context`).
    Pairs whose input is a prefix of another pair's input (the same prompt with a one-token target
    and any other target, or an exact repeat) are read from that pair's forward: benchmarks score
    most prompts with both the new and the true object, so this removes up to half of the rows.
    """
    shown = lm.in_context([prompt for prompt, _ in pairs])
    encoded = [encode_pair(lm.tokenizer, prompt, target) for prompt, (_, target) in zip(shown, pairs, strict=True)]
    # Feed prompt + target minus its last token: the last len(target) positions predict the target.
    inputs = [prompt_ids + target_ids[:-1] for prompt_ids, target_ids in encoded]
    hosts = prefix_hosts(inputs)
    served: dict[tuple[int, ...], list[int]] = {}
    for index, host in enumerate(hosts):
        served.setdefault(host, []).append(index)
    rows = sorted(served, key=len)
    results: list[TargetScore | None] = [None] * len(inputs)
    start = 0
    while start < len(rows):
        stop = start + 1
        while stop < len(rows) and (stop - start + 1) * len(rows[stop]) <= token_budget:
            stop += 1
        chunk = rows[start:stop]
        # (row in the chunk, end of the pair's input within its host, target ids) per pair
        reads = [(row, len(inputs[index]), encoded[index][1])
                 for row, host in enumerate(chunk) for index in served[host]]
        indices = [index for host in chunk for index in served[host]]
        for index, scored in zip(indices, _score_batch(lm, [list(host) for host in chunk], reads), strict=True):
            results[index] = scored
        start = stop
    return results  # type: ignore[return-value]


@torch.no_grad()
def _score_batch(lm: LoadedModel, inputs: list[list[int]],
                 reads: Sequence[tuple[int, int, Sequence[int]]]) -> list[TargetScore]:
    """One forward of the left-padded ``inputs``; for each read (row, end, target) the target's
    log-probabilities at the ``len(target)`` positions before ``end`` of that row's sequence."""
    batch = pad_left(inputs, lm.pad_token_id, lm.device)
    hidden = final_hidden(lm, batch)  # (B, T, d)
    width = batch.width
    rows = torch.cat([torch.full((len(t),), row, dtype=torch.long) for row, _, t in reads])
    # row `row` starts at column width - len(inputs[row]); its position `end - 1` is the last one read
    cols = torch.cat([torch.arange(end - len(t), end) + width - len(inputs[row]) for row, end, t in reads])
    log_probs = torch.log_softmax(logits_from_hidden(lm, hidden[rows, cols]).float(), dim=-1)  # (N, V)
    flat_targets = torch.tensor([token for _, _, t in reads for token in t], device=log_probs.device)
    chosen = log_probs.gather(1, flat_targets[:, None])[:, 0].tolist()
    predicted = log_probs.argmax(dim=-1).tolist()
    scores, offset = [], 0
    for _, _, target in reads:
        end = offset + len(target)
        scores.append(TargetScore(tuple(target), tuple(chosen[offset:end]), tuple(predicted[offset:end])))
        offset = end
    return scores


@torch.no_grad()
def top_next_tokens(lm: LoadedModel, prompts: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """The k most likely next tokens (decoded) and their probabilities after each prompt."""
    batch = pad_left([encode(lm.tokenizer, prompt) for prompt in lm.in_context(prompts)], lm.pad_token_id, lm.device)
    hidden = final_hidden(lm, batch)[:, -1]
    probs = torch.softmax(logits_from_hidden(lm, hidden).float(), dim=-1)
    values, indices = probs.topk(k, dim=-1)
    return [
        [(lm.tokenizer.decode([token]), float(value)) for token, value in zip(row_ids.tolist(), row_values.tolist(), strict=True)]
        for row_ids, row_values in zip(indices, values, strict=True)
    ]
