"""Knowledge-neuron attribution (Dai et al. 2022; SPEC-ALGORITHMS J.1–J.2): integrated gradients over
the MLP intermediate neurons at the last prompt token, the adaptive threshold and the refining
over several prompts of one fact.

* **Neurons.** Neuron (l, i) is the i-th input of layer l's MLP output projection at the last
  prompt token: the post-activation intermediate value the paper attributes (BERT's GELU output;
  for a gated MLP, ``act(gate) * up``, the input of ``down_proj``; GPT-2's ``c_proj`` input).
* **Integrated gradients** (J.1). For layer l with activation vector ā (d_k,) at that position,
  the whole vector is replaced by α·ā (that layer only, every other layer untouched) and
  P(α) = softmax probability (not log) of the answer token at the last position. Then
  Attr(l, i) = ā_i · (1/m) Σ_k ∂P(α_k ā)/∂a_i. The α grid (``riemann_alphas``): ``right``
  α_k = k/m, k = 1..m (the Riemann sum as the paper writes it), ``left`` k = 0..m−1
  (Hunter-DDM's ``scaled_input``), ``linspace`` m points from 0 to 1 (EleutherAI / EasyEdit).
* **Batching.** A row of a batch scales one layer at one α; rows never interact, so one forward
  of n_layers·m rows and one backward of the sum of their probabilities give every
  ∂P(α_k ā_l)/∂a at once (:func:`integrated_gradients`). The prompt's tokens before the last
  are computed once (batch 1, KV cache) and their keys and values copied to every row, so each
  row recomputes a single token: for SmolLM2 (30 layers, m = 20) 600 one-token rows in a few
  chunks of ``ig_batch_size`` rows, instead of 600 forwards of the whole prompt.
* **Selection** (J.2). Coarse neurons of a prompt: Attr > t · max Attr over all layers and
  neurons of that prompt (t = ``adaptive_threshold``, 0.2). Refined: neurons coarse in more than
  p·n of the n prompts (p = ``refine_fraction``, the paper's 0.7); with ``kn_count_range`` the
  fraction is moved by ``refine_fraction_step`` (0.05) for at most ``refine_rounds`` rounds
  until the number of refined neurons lies in the range ([2, 5] in the paper, per relation
  there; per fact here, since requests carry no relation).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from kedit.models.batching import encode
from kedit.models.loading import LoadedModel
from kedit.models.tracing import (
    capture_inputs,
    final_hidden,
    kv_cache_keyword,
    logits_from_hidden,
    returned_kv_cache,
)

IG_GRIDS = ("right", "left", "linspace")


# --------------------------------------------------------------------------------- integrated gradients


def riemann_alphas(steps: int, grid: str) -> torch.Tensor:
    """(steps,) float64 scaling factors of the Riemann sum (see the module docstring)."""
    if steps < 1:
        raise ValueError(f"integrated gradients need at least one step, got {steps}")
    if grid == "right":
        return torch.arange(1, steps + 1, dtype=torch.float64) / steps
    if grid == "left":
        return torch.arange(0, steps, dtype=torch.float64) / steps
    if grid == "linspace":
        return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    raise ValueError(f"ig_grid {grid!r} is not one of {IG_GRIDS}")


def integrated_gradients(probability: Callable[[torch.Tensor], torch.Tensor], activations: torch.Tensor,
                         alphas: torch.Tensor) -> torch.Tensor:
    """(n, d) attributions ā_j ⊙ (1/m) Σ_k ∂P(α_k ā_j)/∂a of n independent activation vectors.

    ``activations`` (n, d); ``alphas`` (m,). ``probability`` receives the (n·m, d) scaled points,
    row j·m + k = α_k ā_j, and returns (n·m,) probabilities in which row r depends on point row r
    only; the gradient of their sum is then every row's own gradient.
    """
    n, d = activations.shape
    m = len(alphas)
    scale = alphas.to(activations.dtype)
    points = (scale[None, :, None] * activations[:, None, :].detach()).reshape(n * m, d).requires_grad_(True)
    with torch.enable_grad():
        total = probability(points).sum()
        (gradients,) = torch.autograd.grad(total, points)
    return activations.detach() * gradients.reshape(n, m, d).mean(dim=1)


@dataclass(frozen=True)
class PromptAttribution:
    """Attributions of one prompt: (n_layers, d_k) for ``layers`` in order, and what was attributed."""

    layers: tuple[int, ...]
    scores: torch.Tensor  # (n_layers, d_k) float32
    answer_id: int
    probability: float  # P(answer) on the unedited prompt


def _expand(output: object, rows: int) -> object:
    """A block output recorded for one row, as the output for ``rows`` identical rows (views, no copy)."""
    if isinstance(output, torch.Tensor):
        return output.expand(rows, *output.shape[1:]) if output.shape[0] == 1 else output
    if isinstance(output, tuple):
        return tuple(_expand(item, rows) for item in output)
    return output


class _PromptPass:
    """One prompt, computed once: the KV cache of its tokens before the last (batch 1), and the clean
    pass of the last token — each block's output, the MLP output projections' inputs (ā) and P.

    Rows of a later batch start from copies of that cache and of the recorded block outputs: the
    blocks below the lowest layer a batch scales are not run at all (their output is the clean one
    in every row), and only the last token is computed from there up.
    """

    def __init__(self, lm: LoadedModel, ids: list[int], layers: Sequence[int], use_cache: bool) -> None:
        self.lm, self.ids = lm, ids
        self.cache, self._saved = None, None
        if use_cache and len(ids) > 1:
            prefix = torch.tensor([ids[:-1]], device=lm.device)
            with torch.no_grad():
                output = lm.model.base_model(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                                             position_ids=torch.arange(len(ids) - 1, device=lm.device)[None],
                                             use_cache=True)
            cache = returned_kv_cache(output)
            if getattr(cache, "layers", None):
                self.cache, self._saved = cache, [dict(vars(layer)) for layer in cache.layers]
        blocks = [lm.module(path) for path in lm.anatomy.block_paths]
        paths = [lm.anatomy.mlp_out_paths[layer] for layer in layers]
        self.recorded: list[object] = [None] * len(blocks)
        handles = []
        for index, block in enumerate(blocks):
            def record(_module, _args, output, index=index):
                self.recorded[index] = output
            handles.append(block.register_forward_hook(record))
        try:
            with torch.no_grad(), capture_inputs({path: lm.module(path) for path in paths}) as seen:
                hidden = final_hidden(lm, self.inputs(1))[:, -1]
        finally:
            for handle in handles:
                handle.remove()
        self.activations = torch.stack([seen[path][0, -1].float() for path in paths])  # (n_layers, d_k)
        self.probabilities = torch.softmax(logits_from_hidden(lm, hidden).float(), dim=-1)[0]  # (V,)

    def inputs(self, rows: int) -> dict:
        """Keyword inputs for ``rows`` copies of the prompt (the last token only, when cached)."""
        lm, ids = self.lm, self.ids
        if self.cache is None:
            full = torch.tensor([ids] * rows, device=lm.device)
            return {"input_ids": full, "attention_mask": torch.ones_like(full),
                    "position_ids": torch.arange(len(ids), device=lm.device).expand(rows, -1), "use_cache": False}
        for layer, saved in zip(self.cache.layers, self._saved, strict=True):
            vars(layer).clear()
            vars(layer).update(saved)  # back to the one-row prefix: a forward appended to it
        self.cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=lm.device))
        return {"input_ids": torch.full((rows, 1), ids[-1], device=lm.device),
                "attention_mask": torch.ones((rows, len(ids)), dtype=torch.long, device=lm.device),
                "position_ids": torch.full((rows, 1), len(ids) - 1, device=lm.device),
                kv_cache_keyword(lm): self.cache, "use_cache": True}

    @contextlib.contextmanager
    def blocks_below_skipped(self, layer: int, rows: int) -> Iterator[None]:
        """Blocks ``0 .. layer-1`` return their clean outputs for ``rows`` rows instead of running."""
        blocks = [self.lm.module(path) for path in self.lm.anatomy.block_paths[:layer]]
        for block, output in zip(blocks, self.recorded, strict=False):
            expanded = _expand(output, rows)
            block.forward = lambda *_args, expanded=expanded, **_kwargs: expanded
        try:
            yield
        finally:
            for block in blocks:
                del block.forward  # back to the class's forward

    def probability(self, answer_id: int, layers: Sequence[int], steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """P(answer) for rows whose layer ``layers[j]`` intermediate vector at the last token is point row j·m + k."""
        lm = self.lm

        def probability(points: torch.Tensor) -> torch.Tensor:
            rows = points.shape[0]
            inputs = self.inputs(rows)
            handles = []
            for j, layer in enumerate(layers):
                block = slice(j * steps, (j + 1) * steps)

                def replace(_module, args, block=block):
                    x = args[0].clone()  # (rows, T or 1, d_k)
                    x[block, -1, :] = points[block].to(x.dtype)
                    return (x, *args[1:])
                handles.append(lm.module(lm.anatomy.mlp_out_paths[layer]).register_forward_pre_hook(replace))
            try:
                with self.blocks_below_skipped(min(layers), rows):
                    hidden = final_hidden(lm, inputs)[:, -1]  # (rows, d)
            finally:
                for handle in handles:
                    handle.remove()
            logits = logits_from_hidden(lm, hidden).float()  # (rows, V)
            return torch.softmax(logits, dim=-1)[:, answer_id]
        return probability


def prompt_attributions(lm: LoadedModel, text: str, answer_id: int | None, layers: Sequence[int],
                        alphas: torch.Tensor, rows_per_forward: int, use_cache: bool = True) -> PromptAttribution:
    """Integrated-gradient attributions of every neuron of ``layers`` for P(answer_id) after ``text``
    (``answer_id`` None: the model's own top-1 next token)."""
    ids = encode(lm.tokenizer, text)
    clean = _PromptPass(lm, ids, layers, use_cache)
    answer = int(clean.probabilities.argmax()) if answer_id is None else answer_id
    steps = len(alphas)
    per_forward = max(1, rows_per_forward // steps)  # layers whose m rows share one forward
    scores = []
    for start in range(0, len(layers), per_forward):
        chunk = list(layers[start:start + per_forward])
        scores.append(integrated_gradients(clean.probability(answer, chunk, steps),
                                           clean.activations[start:start + len(chunk)], alphas))
    return PromptAttribution(tuple(layers), torch.cat(scores).float(), answer, float(clean.probabilities[answer]))


# ------------------------------------------------------------------------------------------- selection


def coarse_neurons(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n_layers, d_k) bool: attribution > threshold · the largest attribution of the prompt (none if that is ≤ 0)."""
    top = float(scores.max())
    if not top > 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    return scores > threshold * top


@dataclass(frozen=True)
class Refined:
    neurons: torch.Tensor  # (n_layers, d_k) bool
    fraction: float  # the sharing fraction p that produced them
    rounds: int  # adjustments made


def shared_by_more_than(coarse: torch.Tensor, fraction: float) -> torch.Tensor:
    """(n_layers, d_k) bool: coarse (n_prompts, n_layers, d_k) in more than fraction · n_prompts prompts."""
    counts = coarse.sum(dim=0)
    # a tolerance so that e.g. 0.7 * 10 = 7.000000000000001 does not count 7 prompts as "more than"
    return counts > fraction * coarse.shape[0] + 1e-9


def refine_neurons(coarse: torch.Tensor, fraction: float, count_range: tuple[int, int] | None = None,
                   step: float = 0.05, rounds: int = 6) -> Refined:
    """Neurons shared by more than ``fraction`` of the prompts; with ``count_range`` = (lo, hi) the
    fraction is lowered (too few) or raised (too many) by ``step`` for at most ``rounds`` rounds,
    stopping as soon as the count lies in [lo, hi], the count jumps past the range (the move would
    turn back) or the fraction would leave [0, 1].

    With few prompts the count moves in jumps (from 7 shared neurons to none when p·n passes n − 1),
    so the range may never be hit: then the fraction whose count came closest to it is kept (the
    first such one, i.e. the one nearest the starting fraction), an empty set only if nothing else
    was seen."""
    kept = shared_by_more_than(coarse, fraction)
    if count_range is None:
        return Refined(kept, fraction, 0)
    low, high = count_range

    def distance(count: int) -> float:
        if count == 0 and low > 0:
            return math.inf  # no neuron at all: kept only when every fraction tried gives none
        return low - count if count < low else max(0, count - high)

    visited = [(distance(int(kept.sum())), 0, fraction, kept)]
    made, direction = 0, 0
    while made < rounds and visited[-1][0] > 0:
        wanted = -1 if int(visited[-1][3].sum()) < low else 1  # lower p for more neurons, raise it for fewer
        moved = round(visited[-1][2] + wanted * step, 12)
        if direction and wanted != direction or not 0.0 <= moved <= 1.0:
            break  # the count jumped over the range (turning back would only revisit), or p ran out
        direction = wanted
        made += 1
        kept = shared_by_more_than(coarse, moved)
        visited.append((distance(int(kept.sum())), made, moved, kept))
    best = min(visited, key=lambda entry: (entry[0], entry[1]))
    return Refined(best[3], best[2], made)


def selected(neurons: torch.Tensor, layers: Sequence[int], scores: torch.Tensor) -> list[tuple[int, int, float]]:
    """(layer, neuron index, mean attribution) of every selected neuron, strongest first."""
    picked = torch.nonzero(neurons)
    found = [(int(layers[row]), int(index), float(scores[row, index])) for row, index in picked.tolist()]
    return sorted(found, key=lambda item: (-item[2] if math.isfinite(item[2]) else 0.0, item[0], item[1]))
