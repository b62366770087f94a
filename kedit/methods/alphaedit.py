"""AlphaEdit: null-space constrained knowledge editing (Fang et al., 2025), SPEC-ALGORITHMS E.

AlphaEdit is MEMIT (same z, same keys, same residual spread over layers — it calls
:func:`kedit.methods.memit.spread_edit`) with another per-layer solve:

    ΔW = R Kᵀ P ((K Kᵀ + C_p) P + α I)⁻¹          (y = W k orientation)

* P = Û Ûᵀ (d_k × d_k) projects onto the approximate null space of the preserved knowledge: Û are
  the eigenvectors of the corpus second moment C₀ = E[k kᵀ] (statistics of the unedited model,
  D.1) whose eigenvalues are below ``nullspace_threshold``. A key k₀ that the corpus uses
  (P k₀ ≈ 0) keeps its output: ΔW k₀ = 0 exactly when P k₀ = 0, because the solution lies in
  range(P). The threshold is ABSOLUTE, so how many dimensions are "free" depends on the scale of
  C₀ for each model and layer: :func:`null_space_dimensions` reports it, docs/ALPHAEDIT.md gives
  the numbers for the bundled models.
* C_p accumulates K Kᵀ of the keys of earlier edits (recomputed on the edited model after each
  batch is applied) in a sequential run, so later edits keep earlier ones: the
  :class:`AlphaEditSession` holds it (open it with :func:`kedit.methods.base.open_session`).
* α (``l2``): the paper writes the identity (α = 1); the reference code uses α = 10. kedit's
  default is the paper's; ``l2=10`` reproduces the code. There is no λ C₀ term, so
  ``mom2_update_weight`` does not exist here.

The solve runs in float64 (the reference uses float32): X = solve(P (K Kᵀ + C_p) + α I, P K Rᵀ),
ΔW = Xᵀ — the same matrix, since P and K Kᵀ + C_p are symmetric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from kedit.edits import Edit, WeightEdit
from kedit.errors import KeditError
from kedit.methods.base import EditSession, register
from kedit.methods.hparams import build_hparams
from kedit.methods.locate import context_templates
from kedit.methods.memit import (
    SPREAD_ALIASES,
    LayerSolver,
    SpreadHparams,
    check_layers,
    derive_layers,
    spread_edit,
    spread_keys,
)
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest
from kedit.stats.second_moment import second_moments

DEFAULTS_YAML = Path(__file__).with_name("alphaedit.yaml")


@dataclass(frozen=True)
class AlphaEditHparams(SpreadHparams):
    nullspace_threshold: float = 2e-2  # eigenvalues of C₀ below it span the null space (absolute)
    l2: float = 1.0  # α; the paper's identity term. The reference code uses 10.

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nullspace_threshold < 0:
            raise KeditError("nullspace_threshold must be >= 0")
        if self.l2 <= 0:
            raise KeditError("l2 (α) must be > 0: the projected system is singular without it")


# EasyEdit / reference spelling: "L2" is α.
ALPHAEDIT_ALIASES = {**SPREAD_ALIASES, "L2": lambda value: ("l2", value),
                     "mom2_update_weight": lambda value: (None, value)}


@dataclass(frozen=True)
class NullSpace:
    """P = Û Ûᵀ for one layer, and how many of d_k dimensions it keeps."""

    projector: torch.Tensor  # (d_k, d_k) float64
    dimensions: int
    total: int


def null_space(moment: torch.Tensor, threshold: float) -> NullSpace:
    """The projector onto the eigenvectors of the symmetric PSD ``moment`` (d_k × d_k) whose
    eigenvalues are below ``threshold`` (an SVD of a symmetric PSD matrix is its eigendecomposition)."""
    values, vectors = torch.linalg.eigh(moment.to(torch.float64))
    kept = vectors[:, values < threshold]  # (d_k, r)
    return NullSpace(projector=kept @ kept.T, dimensions=kept.shape[1], total=moment.shape[0])


def null_space_dimensions(moment: torch.Tensor, thresholds: Sequence[float]) -> list[int]:
    """Null-space dimension of ``moment`` at each threshold (for choosing the threshold)."""
    values = torch.linalg.eigvalsh(moment.to(torch.float64))
    return [int((values < t).sum()) for t in thresholds]


def alphaedit_solver(spaces: Mapping[int, NullSpace], accumulated: Mapping[int, torch.Tensor],
                     alpha: float) -> LayerSolver:
    """ΔW = Xᵀ with X = solve(P (K Kᵀ + C_p) + α I, P K Rᵀ) (SPEC E), in float64."""
    def solve(layer: int, keys: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        projector = spaces[layer].projector.to(keys.device)  # (d_k, d_k)
        past = accumulated.get(layer)
        gram = keys @ keys.T if past is None else keys @ keys.T + past.to(keys.device, torch.float64)
        system = projector @ gram + alpha * torch.eye(gram.shape[0], dtype=torch.float64, device=keys.device)
        x = torch.linalg.solve(system, projector @ keys @ share.T)  # (d_k, d)
        return x.T
    return solve


class AlphaEditSession(EditSession):
    """Projectors computed once; C_p grows by K Kᵀ of every batch applied through :meth:`applied`."""

    def __init__(self, method: AlphaEdit, lm: LoadedModel, hparams: AlphaEditHparams) -> None:
        super().__init__(method, lm, hparams)
        self.layers = check_layers(lm, hparams)
        moments = second_moments(lm, self.layers, hparams.mom2_corpus, hparams.mom2_tokens)
        self.spaces = {layer: null_space(moments[layer], hparams.nullspace_threshold) for layer in self.layers}
        self.accumulated: dict[int, torch.Tensor] = {}  # layer -> (d_k, d_k) float64 C_p
        self.templates = context_templates(lm, hparams.context_template_length_params, hparams.template_seed)
        self.edits_applied = 0

    def compute(self, requests: Sequence[EditRequest]) -> WeightEdit:
        hparams = self.hparams
        info = {
            "null_space_dimensions": {str(layer): space.dimensions for layer, space in self.spaces.items()},
            "key_dimensions": next(iter(self.spaces.values())).total,
            "earlier_requests_in_C_p": self.edits_applied,
        }
        solve = alphaedit_solver(self.spaces, self.accumulated, hparams.l2)
        return spread_edit(self.method.name, self.lm, requests, hparams, solve, info, self.templates)

    def applied(self, edit: Edit) -> None:
        """C_p += K Kᵀ with the batch's keys recomputed on the (now edited) model, every layer."""
        requests = list(edit.requests)
        if not requests:
            return
        for layer in self.layers:
            keys = spread_keys(self.lm, requests, layer, self.templates, self.hparams).to(torch.float64)  # (n, d_k)
            gram = keys.T @ keys
            self.accumulated[layer] = self.accumulated[layer] + gram if layer in self.accumulated else gram
        self.edits_applied += len(requests)


@register("alphaedit")
class AlphaEdit:
    summary: ClassVar[str] = "MEMIT with the update projected onto the null space of preserved keys (Fang et al. 2025)"
    hparams_class: ClassVar[type] = AlphaEditHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(
        self, lm: LoadedModel | None, user_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> AlphaEditHparams:
        hparams = build_hparams(AlphaEditHparams, lm, DEFAULTS_YAML, user_file, overrides, ALPHAEDIT_ALIASES,
                                derive_layers)
        if lm is not None:
            check_layers(lm, hparams)
        return hparams

    def open_session(self, lm: LoadedModel, hparams: AlphaEditHparams) -> AlphaEditSession:
        return AlphaEditSession(self, lm, hparams)

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: AlphaEditHparams) -> WeightEdit:
        """One batch with no earlier edits (C_p = 0); use a session for sequential editing."""
        return self.open_session(lm, hparams).compute(requests)
