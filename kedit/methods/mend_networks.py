"""MEND's editor networks (SPEC-ALGORITHMS F.3–F.4): running input normalisation and the low-rank
residual MLP initialised to the identity, one network per distinct edited-weight shape.

Pure ``torch.nn``: nothing here knows about language models. :class:`MENDEditor` maps, for one
edited weight, the per-token factors (u, δ) of its fine-tuning gradient — u the weight's input
(N, d_in), δ the gradient of the loss with respect to its output (N, d_out) — to transformed
factors (ũ, δ̃) of the same shapes; the update built from them lives in :mod:`kedit.methods.mend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

NORM_EPS = 1e-7  # added to the standard deviation (the reference value)


class RunningNorm(nn.Module):
    """Cumulative mean and variance of the rows seen in training (Welford), frozen in eval mode.

    Buffers: ``mean`` (d,), ``m2`` (d,) the sum of squared deviations, ``count`` (). They are float64
    so that statistics over millions of tokens do not drift; the reference keeps float32 (the values
    agree to float32 precision). Unlike the reference, whose "initialised" flag is a plain Python
    attribute (so a resumed run restarts its statistics: SPEC F.3 edge), ``count`` is a buffer and
    a resumed run continues the same statistics.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(width, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        """Add the rows (N, d) to the statistics, as N sequential Welford updates would (Chan's merge)."""
        if rows.shape[0] == 0:
            return
        rows = rows.detach().to(torch.float64)
        n = float(rows.shape[0])
        batch_mean = rows.mean(0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n / total)
        self.count.fill_(total)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(rows)
        if self.count < 2:
            raise RuntimeError("MEND's input normaliser has seen fewer than 2 rows; it cannot standardise yet")
        std = (self.m2 / (self.count - 1)).sqrt().to(rows.dtype)
        return (rows - self.mean.to(rows.dtype)) / (std + NORM_EPS)


class LowRankResidual(nn.Module):
    """h = z + ReLU((U (V z) + b) ⊙ s[mode] + o[mode]), U (D×r) zero-initialised: the identity at init.

    The ReLU is ``clamp(min=0)``, as in the reference: at initialisation every pre-activation is
    exactly 0, where ``torch.relu`` passes no gradient (its derivative at 0 is taken as 0) but
    ``clamp`` passes it (derivative 1 at the boundary). With ``relu`` the networks would never
    leave the identity and only the edit rates α would learn.
    """

    def __init__(self, dim: int, rank: int, modes: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.zeros(dim, rank))
        self.v = nn.Parameter(torch.randn(rank, dim, generator=generator))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Embedding(modes, dim)
        self.shift = nn.Embedding(modes, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, z: torch.Tensor, mode: int) -> torch.Tensor:
        # z (N, D); (z Vᵀ) Uᵀ is U V z for every row
        index = torch.tensor(mode, device=z.device)
        inner = (z @ self.v.T) @ self.u.T + self.bias
        return z + torch.clamp(inner * self.scale(index) + self.shift(index), min=0)


class IdentityInitMLP(nn.Module):
    """The reference's IDMLP: ``n_hidden + 1`` low-rank residual blocks on D = d_in + d_out."""

    def __init__(self, d_in: int, d_out: int, rank: int, n_hidden: int, modes: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        dim = d_in + d_out
        self.d_in, self.d_out = d_in, d_out
        self.blocks = nn.ModuleList(
            LowRankResidual(dim, min(rank, dim), modes, generator) for _ in range(n_hidden + 1)
        )
        self.norm_u = RunningNorm(d_in)
        self.norm_delta = RunningNorm(d_out)

    def forward(self, u: torch.Tensor, delta: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """u (N, d_in), δ (N, d_out) → (ũ, δ̃) of the same shapes (normalised, combined, transformed, split)."""
        z = torch.cat([self.norm_u(u.float()), self.norm_delta(delta.float())], dim=-1)  # (N, D)
        for block in self.blocks:
            z = block(z, mode)
        return z[:, : self.d_in], z[:, self.d_in :]


@dataclass(frozen=True)
class EditedWeight:
    """One weight MEND edits: its parameter name, the module owning it, and its widths."""

    name: str
    module_path: str
    d_in: int
    d_out: int
    transposed: bool  # GPT-2 Conv1D: stored (d_in, d_out)

    @property
    def shape_key(self) -> str:
        return f"{self.d_in}x{self.d_out}"


class MENDEditor(nn.Module):
    """Editor networks shared by weights of one shape (``shared`` mode), and the learned edit rates.

    ``networks[shape_key]`` serves every edited weight of that (d_in, d_out); ``mode`` of a weight is
    its index among the edited weights of its shape, in ``weights`` order (which selects its scale
    and shift rows). ``edit_lrs`` (one per edited weight) are α of W' = W + α ΔW̃.
    """

    def __init__(self, weights: Sequence[EditedWeight], rank: int, n_hidden: int, edit_lr: float,
                 seed: int = 0) -> None:
        super().__init__()
        self.weights = tuple(weights)
        generator = torch.Generator().manual_seed(seed)
        counts: dict[str, int] = {}
        self.modes: list[int] = []
        for weight in self.weights:
            self.modes.append(counts.get(weight.shape_key, 0))
            counts[weight.shape_key] = self.modes[-1] + 1
        shapes = {weight.shape_key: weight for weight in self.weights}
        self.networks = nn.ModuleDict({
            key: IdentityInitMLP(weight.d_in, weight.d_out, rank, n_hidden, counts[key], generator)
            for key, weight in shapes.items()
        })
        self.edit_lrs = nn.Parameter(torch.full((len(self.weights),), float(edit_lr)))

    def network_parameters(self) -> list[nn.Parameter]:
        return list(self.networks.parameters())

    def transform(self, index: int, u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ũ, δ̃) for edited weight ``index`` from its kept factor rows u (N, d_in), δ (N, d_out)."""
        weight = self.weights[index]
        return self.networks[weight.shape_key](u, delta, self.modes[index])
