"""TIES merging of WISE's side memories (Yadav et al. 2023, as WISE uses it: SPEC I.4).

Each memory is a weight matrix W_i trained from the same base W0; its task vector is τ_i = W_i − W0.

1. trim: keep the ``int(density · numel)`` entries of largest |τ_i| of each task vector, zero the rest;
2. elect: the majority sign of every entry, sign(Σ_i w_i τ_i) (0 counts as +);
3. disjoint mean: average the weighted entries that agree with it,
   Σ_i w_i τ_i 1[sign(w_i τ_i) = majority] / Σ_i w_i 1[sign(w_i τ_i) = majority] (a zero agrees with
   neither sign, so trimmed entries are left out; where nothing agrees the divisor is 1);
4. W = W0 + that mean.

This is the "magnitude" sparsification with "sum" consensus and normalisation of the reference
(EasyEdit ``merge/gta.py``, ``merge_alg: ties``), written from that description.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def keep_largest(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ``int(density · numel)`` largest-magnitude entries set to zero."""
    if density >= 1:
        return delta
    keep = int(density * delta.numel())
    if keep < 1:
        raise ValueError(f"density {density} keeps no entry of a tensor of {delta.numel()}")
    flat = delta.reshape(-1)
    mask = torch.zeros_like(flat)
    mask[flat.abs().float().topk(keep, largest=True).indices] = 1
    return (flat * mask).reshape(delta.shape)


def ties_merge(base: torch.Tensor, weights: Sequence[torch.Tensor], coefficients: Sequence[float],
               density: float) -> torch.Tensor:
    """W0 + the TIES mean of the task vectors of ``weights`` (each the shape of ``base``), weighted by ``coefficients``."""
    if len(weights) != len(coefficients) or not weights:
        raise ValueError(f"{len(weights)} weights and {len(coefficients)} coefficients: need one coefficient each")
    deltas = torch.stack([keep_largest(weight - base, density) for weight in weights])  # (n, *shape)
    scale = torch.tensor(list(coefficients), dtype=deltas.dtype, device=deltas.device).reshape(-1, *[1] * base.dim())
    weighted = deltas * scale
    majority = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agrees = (weighted.sign() == majority).to(deltas.dtype)
    divisor = (scale * agrees).sum(dim=0)
    divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return (base + (weighted * agrees).sum(dim=0) / divisor).to(base.dtype)
