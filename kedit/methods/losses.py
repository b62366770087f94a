"""Losses the editors share: masked NLL of target tokens, KL locality, and the SSS regulariser.

FT-L / FT-M call :func:`masked_nll` and :func:`regularised_objective` (FT+EWC adds
:func:`ewc_penalty`); MEND and SERAC call
:func:`per_request_nll`, :func:`kl_locality` and :func:`sss_penalty` in their meta-training
objectives. SSS is defined in SPEC-ALGORITHMS section C: SSS = Σ g², the plain sum over every entry
of g = ∂L_edit/∂h, h the final hidden states (after the final norm), taken with ``create_graph``
so that an optimiser follows the gradient of SSS too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def per_request_nll(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean negative log-likelihood of each row's target tokens.

    logits (B, T, V) or (B, 1, V): the distribution that predicts each label; a single column is
    shared by all T labels of its row (FT-L reads every target token at the last prompt token).
    labels (B, T) long; mask (B, T) bool, True where a label is a target token. Labels under a
    False mask never influence the value (their entries are replaced by zero, not multiplied).
    """
    log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    picked = torch.take_along_dim(log_probs, labels[..., None], dim=-1)[..., 0]  # (B, T)
    picked = torch.where(mask, picked, torch.zeros_like(picked))
    return -picked.sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def masked_nll(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over requests of :func:`per_request_nll`."""
    return per_request_nll(logits, labels, mask).mean()


def kl_per_token(pre_logits: torch.Tensor, post_logits: torch.Tensor) -> torch.Tensor:
    """(B, T) KL(p_pre ‖ p_post) = Σ_v p_pre (log p_pre − log p_post) at every position, in float32.

    pre_logits, post_logits (B, T, V); p_pre is detached (the locality target, not trained).
    """
    pre = torch.log_softmax(pre_logits.detach().float(), dim=-1)
    post = torch.log_softmax(post_logits.float(), dim=-1)
    return (pre.exp() * (pre - post)).sum(-1)


def kl_locality(pre_logits: torch.Tensor, post_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked token mean of :func:`kl_per_token` over the whole batch; mask (B, T) bool, True at real tokens."""
    per_token = torch.where(mask, kl_per_token(pre_logits, post_logits), 0.0)
    return per_token.sum() / mask.sum().clamp_min(1)


def kl_per_row(pre_logits: torch.Tensor, post_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) masked token mean of :func:`kl_per_token` within each row (a batch of independent single-row losses)."""
    per_token = torch.where(mask, kl_per_token(pre_logits, post_logits), 0.0)
    return per_token.sum(-1) / mask.sum(-1).clamp_min(1)


def sss_penalty(edit_loss: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """SSS = Σ (∂L_edit/∂h)² over every entry of ``hidden`` (B, T, d); differentiable (create_graph)."""
    (gradient,) = torch.autograd.grad(edit_loss, hidden, create_graph=True)
    return gradient.pow(2).sum()


@dataclass(frozen=True)
class ObjectiveTerms:
    total: torch.Tensor  # what the optimiser minimises
    edit_loss: torch.Tensor  # L_edit (FT-L or FT-M loss)
    sss: torch.Tensor | None  # None when sss_coef == 0


def regularised_objective(edit_loss: torch.Tensor, hidden: torch.Tensor, sss_coef: float) -> ObjectiveTerms:
    """L = (1 − C) L_edit + C SSS; with C = 0 the objective is L_edit itself (SSS is not computed)."""
    if sss_coef == 0:
        return ObjectiveTerms(total=edit_loss, edit_loss=edit_loss, sss=None)
    sss = sss_penalty(edit_loss, hidden)
    return ObjectiveTerms(total=(1.0 - sss_coef) * edit_loss + sss_coef * sss, edit_loss=edit_loss, sss=sss)


def ewc_penalty(parameters: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor], fishers: Sequence[torch.Tensor],
                strength: float) -> torch.Tensor:
    """Elastic weight consolidation: ``strength`` · Σ_j F_j (θ_j − θ*_j)² over every entry of every parameter.

    ``parameters`` θ, ``anchors`` θ* and ``fishers`` F (the diagonal Fisher information) are matched
    by position, each pair of the same shape. Kirkpatrick et al. 2017 write the term (λ/2) Σ F (θ − θ*)²
    (strength = λ/2); GRACE's FT+EWC drops the 1/2 (strength = λ).
    """
    total = parameters[0].new_zeros(())
    for parameter, anchor, fisher in zip(parameters, anchors, fishers, strict=True):
        total = total + (fisher.to(parameter.dtype) * (parameter - anchor.to(parameter.dtype)).pow(2)).sum()
    return strength * total
