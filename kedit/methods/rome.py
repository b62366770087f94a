"""ROME: Rank-One Model Editing (Meng et al., 2022), with the r-ROME key fix.

For one request at layer l, with W the MLP output projection (y = W k + b):

1. key k* = mean over context templates of the MLP key at the subject's last token;
2. value v* = v_init + delta, delta from :func:`optimize_target_value` (added at W's output);
3. rank-one update, paper form:  dW = (v* - (W k* + b)) (C⁻¹ k*)ᵀ / ((C⁻¹ k*)ᵀ k*),
   so that the new W maps k* exactly to v*. C = E[k kᵀ] over a corpus (``mom2_adjustment``;
   C = I when off).

``key_mode`` chooses which key enters the numerator and denominator:

* ``"paper"`` (default): k* everywhere, the equation of the ROME paper. It is the same update
  that r-ROME (Gupta et al., 2024, "random prefix keys") restored: the denominator
  k*ᵀ C⁻¹ k* is always positive, which removes the "disabling edits" of the reference code.
* ``"original"``: the kmeng01/rome code — u from k*, but the numerator and denominator use the
  bare-prompt key k (``v* - (W k + b)`` and ``k · C⁻¹ k*``). Offered to reproduce published
  numbers; it can blow up when k · C⁻¹ k* is small.
* ``"prompt"``: r-ROME's alternative — the bare-prompt key k everywhere.

Several requests are applied one after another, each computed on the model as edited by the
previous ones; the returned deltas are their sum, kept as factors (one column pair per request:
:class:`~kedit.edits.LowRankDelta`) while that is smaller than the dense matrix.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from kedit.edits import LowRankDelta, ParameterSnapshot, WeightEdit
from kedit.edits.deltas import compact
from kedit.errors import KeditError, KeditWarning
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams, single_layer_alias
from kedit.methods.locate import ValueOptimization, context_templates, optimize_target_value, request_keys
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest
from kedit.stats.second_moment import second_moments

DEFAULTS_YAML = Path(__file__).with_name("rome.yaml")
KEY_MODES = ("paper", "original", "prompt")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ROMEHparams:
    layer: int | None = None  # None: round(layer_fraction * number of blocks)
    layer_fraction: float = 0.2
    fact_token: str = "subject_last"
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    mom2_adjustment: bool = True
    mom2_tokens: int = 100_000
    mom2_corpus: str | None = None  # None: the offline default corpus (see kedit.stats.corpus)
    context_template_length_params: tuple[tuple[int, int], ...] = ((5, 10), (10, 10))
    template_seed: int = 0
    key_mode: str = "paper"
    cache_prefix: bool = True  # v* loop: tokens before the subject come from a KV cache
    cache_lower_blocks: bool = True  # v* loop: blocks below the edit layer are replayed

    def __post_init__(self) -> None:
        if self.key_mode not in KEY_MODES:
            raise KeditError(f"key_mode {self.key_mode!r} is not one of {KEY_MODES}")
        if self.v_num_grad_steps < 1:
            raise KeditError("v_num_grad_steps must be at least 1")

    def value_settings(self) -> ValueOptimization:
        return ValueOptimization(
            steps=self.v_num_grad_steps,
            lr=self.v_lr,
            weight_decay=self.v_weight_decay,
            clamp_norm_factor=self.clamp_norm_factor,
            kl_factor=self.kl_factor,
            fact_token=self.fact_token,
            cache_lower_blocks=self.cache_lower_blocks,
            cache_prefix=self.cache_prefix,
        )


def _ignored_article_count(value: Any) -> tuple[str, Any]:
    warnings.warn(
        "mom2_n_samples counts Wikipedia articles; kedit counts tokens (mom2_tokens). Ignoring it.",
        KeditWarning, stacklevel=4,
    )
    return None, value


ALIASES = {
    "layers": single_layer_alias,
    "mom2_dataset": lambda value: ("mom2_corpus", None if value in (None, "stdlib") else value),
    "mom2_n_samples": _ignored_article_count,
}


def _derive(values: dict[str, Any], lm: LoadedModel | None) -> dict[str, Any]:
    if values.get("layer") is None and lm is not None:
        fraction = values.get("layer_fraction", ROMEHparams.layer_fraction)
        values["layer"] = min(lm.anatomy.num_layers - 1, round(fraction * lm.anatomy.num_layers))
    return values


# key_mode "original" divides by k·C⁻¹k* instead of k*·C⁻¹k*; when the prompt's key k is far from
# k* the first is small and the update is amplified by their ratio: r-ROME's "disabling edits".
AMPLIFICATION_WARNING = 10.0


def _warn_if_amplified(request: EditRequest, denominator: float, paper_denominator: float) -> None:
    if paper_denominator > 0 and denominator * AMPLIFICATION_WARNING >= paper_denominator:
        return
    warnings.warn(
        f"ROME (key_mode original) on {request.text!r}: k·C⁻¹k* = {denominator:.4g} against "
        f"k*·C⁻¹k* = {paper_denominator:.4g}, so the update is amplified "
        f"{paper_denominator / denominator if denominator else float('inf'):.3g}x and may damage the model "
        "(r-ROME's disabling edits); key_mode=paper or key_mode=prompt cannot do this",
        KeditWarning, stacklevel=5,
    )


@dataclass(frozen=True)
class RankOneUpdate:
    factors: LowRankDelta  # (d_out, d_k), y = W k orientation: U = residual / denominator, V = C⁻¹k (float64)
    denominator: float
    losses: tuple[float, ...]
    target_norm: float
    delta_norm: float

    @property
    def delta_weight(self) -> torch.Tensor:
        """The dense (d_out, d_k) update in the weight's dtype."""
        return self.factors.dense()


def rank_one_update(
    lm: LoadedModel,
    request: EditRequest,
    hparams: ROMEHparams,
    templates: Sequence[str],
    second_moment: torch.Tensor | None,
) -> RankOneUpdate:
    """The ROME update for one request on the model as it is now (nothing is modified)."""
    layer = hparams.layer
    path = lm.anatomy.mlp_out_paths[layer]
    keys = request_keys(lm, request, layer, templates, hparams.fact_token)  # (n_templates, d_k)
    key_star, key_bare = keys.mean(dim=0), keys[0]
    target = optimize_target_value(lm, request, path, layer, templates, hparams.value_settings())

    module = lm.module(path)
    weight = lm.anatomy.as_out_in(module.weight).detach().double()  # (d_out, d_k)
    bias = module.bias.detach().double() if getattr(module, "bias", None) is not None else 0.0
    key_for_u = key_bare if hparams.key_mode == "prompt" else key_star
    key_for_value = key_star if hparams.key_mode == "paper" else key_bare
    key_for_u, key_for_value = key_for_u.double(), key_for_value.double()
    if second_moment is None:
        c_inv_key = key_for_u
    else:
        c_inv_key = torch.linalg.solve(second_moment.to(key_for_u), key_for_u)  # (d_k,)
    denominator = torch.dot(c_inv_key, key_for_value)
    if hparams.key_mode == "original":
        _warn_if_amplified(request, float(denominator), float(torch.dot(c_inv_key, key_star.double())))
    residual = target.value.double() - (weight @ key_for_value + bias)  # (d_out,)
    return RankOneUpdate(
        factors=LowRankDelta((residual / denominator)[:, None], c_inv_key[:, None], module.weight.dtype),
        denominator=float(denominator),
        losses=target.losses,
        target_norm=float(target.value.norm()),
        delta_norm=float(target.delta.norm()),
    )


@register("rome")
class ROME:
    summary: ClassVar[str] = "Rank-one update of one MLP output matrix (Meng et al. 2022; r-ROME key fix by default)"
    hparams_class: ClassVar[type] = ROMEHparams
    batch_capable: ClassVar[bool] = False

    def default_hparams(
        self, lm: LoadedModel | None, user_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> ROMEHparams:
        hparams = build_hparams(ROMEHparams, lm, DEFAULTS_YAML, user_file, overrides, ALIASES, _derive)
        if lm is not None:
            lm.anatomy.check_layer(hparams.layer)
        return hparams

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: ROMEHparams) -> WeightEdit:
        layer = hparams.layer
        lm.anatomy.check_layer(layer)
        name = lm.anatomy.mlp_out_weight(layer)
        parameter = lm.parameter(name)
        second_moment = (
            second_moments(lm, [layer], hparams.mom2_corpus, hparams.mom2_tokens)[layer]
            if hparams.mom2_adjustment else None
        )
        templates = context_templates(lm, hparams.context_template_length_params, hparams.template_seed)
        snapshot = ParameterSnapshot(lm)
        snapshot.record([name])
        parts: list[LowRankDelta] = []  # each request's rank-one update, stored orientation
        details = []
        try:
            for request in requests:
                started = time.perf_counter()
                update = rank_one_update(lm, request, hparams, templates, second_moment)
                parts.append(update.factors.transposed() if lm.anatomy.transposed else update.factors)
                with torch.no_grad():
                    parameter.add_(parts[-1].dense(parameter.device))  # later requests see earlier ones
                details.append({
                    "subject": request.subject,
                    "seconds": time.perf_counter() - started,
                    "optimisation_steps": len(update.losses),
                    "final_loss": update.losses[-1],
                    "denominator": update.denominator,
                    "delta_norm": update.delta_norm,
                })
        finally:
            snapshot.restore()
        return WeightEdit(
            method=self.name,
            requests=tuple(requests),
            hparams=asdict(hparams),
            # Σ of the rank-one updates: factors side by side (rank = requests) while smaller than dense
            deltas={name: compact(LowRankDelta.concatenate(parts))} if parts else {name: torch.zeros_like(parameter)},
            base_fingerprint=lm.fingerprint,
            info={"layer": layer, "requests": details},
        )
