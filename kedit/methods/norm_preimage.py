"""What to write at an MLP's output when a norm stands between it and the residual stream.

MEMIT's layer spread (D.10) wants layer l to add ``share`` to the residual stream at each
request's subject token, and solves for ΔW with ΔW k = share: right when the residual gains the
MLP output itself (GPT-2, Llama, SmolLM2). Gemma-2/3 and OLMo-2 add ``norm(y)`` instead, y the
MLP output (``post_feedforward_layernorm``), so writing ``share`` into y changes the residual by
something else — RMSNorm is invariant to y's scale, and y is large, so almost nothing (issue 11:
MEMIT, AlphaEdit and MLE took 0 of 7 edits on Gemma-3).

:func:`shift_through_norm` finds the change of y that makes ``norm(y + Δ)`` as close as possible to
``norm(y) + share`` (least squares, L-BFGS on the norm module itself, in float64), so any norm
module works without knowing its formula. A share that no input reaches (an RMSNorm output has a
fixed root-mean-square before its gain) is met as closely as possible; the spread recomputes the
residual that is still missing before each deeper layer, so the rest moves to later layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def shift_through_norm(norm: nn.Module, inputs: torch.Tensor, change: torch.Tensor,
                       iterations: int = 100) -> tuple[torch.Tensor, float]:
    """(Δ, reached): Δ (n, d) float64 with ``norm(inputs + Δ) ≈ norm(inputs) + change`` for each
    row, and the share of ``change`` reached, 1 - |norm(inputs + Δ) - target| / |change|.

    ``inputs`` and ``change`` are (n, d); the norm is applied row-wise, as in the model.
    """
    norm64 = copy.deepcopy(norm).to(torch.float64)
    for parameter in norm64.parameters():
        parameter.requires_grad_(False)
    inputs = inputs.detach().to(torch.float64)
    change = change.detach().to(torch.float64)
    with torch.no_grad():
        target = norm64(inputs) + change
    delta = torch.zeros_like(inputs, requires_grad=True)
    optimizer = torch.optim.LBFGS([delta], lr=1.0, max_iter=iterations, tolerance_grad=1e-12,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (norm64(inputs + delta) - target).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        missing = (norm64(inputs + delta) - target).norm()
        reached = float(1 - missing / change.norm().clamp_min(1e-30))
    return delta.detach(), reached
