"""THE scoring primitive: batched, teacher-forced scoring of (prompt, target) pairs.

For each pair the target (with a leading space) is appended to the prompt and fed in one forward;
for every target token we read the log-probability the model gave it and the model's argmax at
that position. Every metric in kedit is a function of these numbers; nothing else runs a forward
loop to measure an edit.

Pairs from many cases are scored together: their inputs are packed as prefix trees into a few
rows (a shared prefix runs once, nothing is padded), and only the target positions go through the
unembedding (the vocabulary projection is the most expensive layer of a small model, so it is not
applied to prompt positions whose logits nobody reads).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from kedit.models.batching import encode, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.packing import pack_prefix_trees, tree_packing_supported
from kedit.models.routing import RouteGroup, gather, route_groups
from kedit.models.tracing import final_hidden, logits_from_hidden

DEFAULT_TOKEN_BUDGET = 4096  # token positions per forward: keeps activations small on a CPU
# Columns of one prefix-tree row. Attention over a row costs O(width^2) against O(width) for the
# linear layers; at 128 it is a few percent of the forward, and sequences rarely straddle a row end.
TREE_ROW_WIDTH = 128


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
    When query routers are installed (:mod:`kedit.models.routing`), a routed pair is scored by the
    model its router names, on the text the router gives (SERAC: memory entry + prompt), through
    this same function; the rest as below. The inputs are packed as prefix trees (:mod:`kedit.models.packing`): a prefix shared by several
    pairs (one prompt scored with the new and the true object, prompts that begin alike, a pair
    whose whole input begins another's) runs once, and nothing is padded. Models where a tree mask
    would not be exact (a sliding window shorter than an input) get left-padded, length-sorted
    batches instead, where a pair whose input prefixes another's is still read from that row.
    """
    if lm.routers:
        return _routed_score(lm, pairs, token_budget)
    return _score_own(lm, pairs, token_budget)


def _routed_score(lm: LoadedModel, pairs: Sequence[tuple[str, str]], token_budget: int) -> list[TargetScore]:
    """Each route group scored by the model that answers it; results in the order of ``pairs``."""
    def answer(group: RouteGroup) -> list[TargetScore]:
        shown = [(text, pairs[index][1]) for index, text in zip(group.indices, group.shown, strict=True)]
        return score(group.model, shown, token_budget) if group.routed else _score_own(lm, shown, token_budget)

    return gather(route_groups(lm, [prompt for prompt, _ in pairs]), answer, len(pairs))


def _score_own(lm: LoadedModel, pairs: Sequence[tuple[str, str]], token_budget: int) -> list[TargetScore]:
    """:func:`score` by ``lm`` itself (through its prompt contexts, no routing)."""
    shown = lm.in_context([prompt for prompt, _ in pairs])
    encoded = [encode_pair(lm.tokenizer, prompt, target) for prompt, (_, target) in zip(shown, pairs, strict=True)]
    # Feed prompt + target minus its last token: the last len(target) positions predict the target.
    inputs = [prompt_ids + target_ids[:-1] for prompt_ids, target_ids in encoded]
    targets = [target_ids for _, target_ids in encoded]
    if not inputs:
        return []
    if tree_packing_supported(lm.model, max(len(sequence) for sequence in inputs)):
        forwards = _tree_forwards(lm, inputs, targets, token_budget)
    else:
        forwards = _padded_forwards(lm, inputs, targets, token_budget)
    results: list[TargetScore | None] = [None] * len(inputs)
    for model_inputs, reads in forwards:
        scored = _read_targets(lm, model_inputs, [(row, columns, targets[index]) for index, row, columns in reads])
        for (index, _, _), result in zip(reads, scored, strict=True):
            results[index] = result
    return results  # type: ignore[return-value]


# One forward: the model's keyword inputs, and per pair read from it (pair index, row, the columns
# holding the pair's last len(target) input positions, which predict the target's tokens).
_Forward = tuple[dict[str, torch.Tensor], list[tuple[int, int, Sequence[int]]]]


def _target_columns(path: Sequence[int], input_length: int, target_length: int) -> Sequence[int]:
    """Columns of the positions that predict the target: the last ``target_length`` of the input."""
    return path[input_length - target_length : input_length]


def _tree_forwards(lm: LoadedModel, inputs: list[list[int]], targets: list[list[int]], token_budget: int) -> Iterator[_Forward]:
    """Prefix-tree rows (``TREE_ROW_WIDTH`` columns, wider for long inputs), as many per forward as
    fit ``token_budget`` positions."""
    dtype = next(lm.model.parameters()).dtype
    packed = pack_prefix_trees(inputs, TREE_ROW_WIDTH, lm.pad_token_id)
    by_row: dict[int, list[int]] = {}
    for index, (row, _) in enumerate(packed.paths):
        by_row.setdefault(row, []).append(index)
    first = 0
    while first < len(packed.rows):
        stop, width = first + 1, len(packed.rows[first].tokens)
        while stop < len(packed.rows) and (stop + 1 - first) * max(width, len(packed.rows[stop].tokens)) <= token_budget:
            width = max(width, len(packed.rows[stop].tokens))
            stop += 1
        reads = [
            (index, packed.paths[index][0] - first,
             _target_columns(packed.paths[index][1], len(inputs[index]), len(targets[index])))
            for row in range(first, stop) for index in by_row[row]
        ]
        yield packed.model_inputs(first, stop, dtype=dtype, device=lm.device) | {"use_cache": False}, reads
        first = stop


def _padded_forwards(lm: LoadedModel, inputs: list[list[int]], targets: list[list[int]],
                     token_budget: int) -> Iterator[_Forward]:
    """Left-padded batches of distinct host inputs, sorted by length, at most ``token_budget`` padded tokens each."""
    hosts = prefix_hosts(inputs)
    served: dict[tuple[int, ...], list[int]] = {}
    for index, host in enumerate(hosts):
        served.setdefault(host, []).append(index)
    rows = sorted(served, key=len)
    start = 0
    while start < len(rows):
        stop = start + 1
        while stop < len(rows) and (stop - start + 1) * len(rows[stop]) <= token_budget:
            stop += 1
        chunk = rows[start:stop]
        batch = pad_left([list(host) for host in chunk], lm.pad_token_id, lm.device)
        reads = []
        for row, host in enumerate(chunk):
            path = range(batch.width - len(host), batch.width)  # row `row` is right-aligned
            reads += [(index, row, _target_columns(path, len(inputs[index]), len(targets[index])))
                      for index in served[host]]
        yield batch.model_inputs() | {"use_cache": False}, reads
        start = stop


@torch.no_grad()
def _read_targets(lm: LoadedModel, model_inputs: dict[str, torch.Tensor],
                  reads: Sequence[tuple[int, Sequence[int], Sequence[int]]]) -> list[TargetScore]:
    """One forward of ``model_inputs``; for each read (row, columns, target ids) the target's
    log-probabilities and argmaxes at those columns of that row. Only these positions go through
    the unembedding."""
    hidden = final_hidden(lm, model_inputs)  # (B, T, d)
    rows = torch.tensor([row for row, columns, _ in reads for _ in columns], dtype=torch.long)
    cols = torch.tensor([column for _, columns, _ in reads for column in columns], dtype=torch.long)
    log_probs = torch.log_softmax(logits_from_hidden(lm, hidden[rows, cols]).float(), dim=-1)  # (N, V)
    flat_targets = torch.tensor([token for _, _, target in reads for token in target], device=log_probs.device)
    chosen = log_probs.gather(1, flat_targets[:, None])[:, 0].tolist()
    predicted = log_probs.argmax(dim=-1).tolist()
    scores, offset = [], 0
    for _, _, target in reads:
        end = offset + len(target)
        scores.append(TargetScore(tuple(target), tuple(chosen[offset:end]), tuple(predicted[offset:end])))
        offset = end
    return scores


def top_next_tokens(lm: LoadedModel, prompts: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """The k most likely next tokens (decoded) and their probabilities after each prompt (a routed
    prompt: those of the model its router names, after the text the router gives)."""
    if lm.routers:
        def answer(group: RouteGroup) -> list[list[tuple[str, float]]]:
            return top_next_tokens(group.model, group.shown, k) if group.routed else _top_own(lm, group.shown, k)

        return gather(route_groups(lm, prompts), answer, len(prompts))
    return _top_own(lm, prompts, k)


@torch.no_grad()
def _top_own(lm: LoadedModel, prompts: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    batch = pad_left([encode(lm.tokenizer, prompt) for prompt in lm.in_context(prompts)], lm.pad_token_id, lm.device)
    hidden = final_hidden(lm, batch)[:, -1]
    probs = torch.softmax(logits_from_hidden(lm, hidden).float(), dim=-1)
    values, indices = probs.topk(k, dim=-1)
    return [
        [(lm.tokenizer.decode([token]), float(value)) for token, value in zip(row_ids.tolist(), row_values.tolist(), strict=True)]
        for row_ids, row_values in zip(indices, values, strict=True)
    ]
