"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al., 2023), SPEC-ALGORITHMS D.8–D.10.

Many requests are written at once into the MLP output matrices of a range of layers
L_1 < … < L_m (the last one, z_layer, is where the targets live):

1. **Targets.** For each request, z = h + delta: h is the residual stream (block z_layer's
   output) at the subject token of the bare prompt, and delta is optimised so the model predicts
   the new object after every context template (:func:`kedit.methods.locate.optimize_target_values`,
   all requests in batched chunks; results cached on disk by :mod:`kedit.methods.value_cache`).
   All z are computed on the model as it is before the edit.
2. **Spread.** For each layer in ascending order, on the model as edited so far:
   K = template-weighted keys at the subject token (d_k × n, D.9); R = Z − H with H the current
   z_layer residual at the bare prompt (what is still missing); the layer takes the share
   R_l = R / (number of layers left) and solves

       ΔW_l = R_l Kᵀ (λ C_l + K Kᵀ)⁻¹     (float64; C_l = E[k kᵀ] of the layer's keys)

   i.e. the least-squares map that writes R_l at the new keys while changing the outputs on the
   corpus keys as little as possible (λ weighs the corpus). ΔW_l is applied at once so deeper
   layers see its effect, then all weights are restored and the deltas returned.

C is the per-token mean E[k kᵀ] (as in the reference code, which also uses the normalised second
moment), so λ plays the role of "how many corpus tokens the preservation term is worth"; its
right value depends on the model's key scale (chosen per model in memit.yaml, by measurement).
The layer loop accepts any per-layer solver: AlphaEdit (kedit.methods.alphaedit) reuses it.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from kedit.edits import Deltas, LowRankDelta, ParameterSnapshot, WeightEdit
from kedit.edits.deltas import as_dense, compact
from kedit.errors import KeditError, KeditWarning
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams
from kedit.methods.locate import (
    ValueOptimization,
    context_templates,
    subject_hidden,
    subject_output,
    template_weights,
    weighted_subject_keys,
)
from kedit.methods.norm_preimage import shift_through_norm
from kedit.methods.value_cache import cached_target_values
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest
from kedit.stats.second_moment import second_moments

DEFAULTS_YAML = Path(__file__).with_name("memit.yaml")
log = logging.getLogger(__name__)

# (layer, keys K (d_k, n) float64, residual share R_l (d, n) float64) -> ΔW (d, d_k) float64, dense or
# as factors (rank ≤ n: a LowRankDelta, kept factored in the edit while that is smaller than dense)
LayerSolver = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | LowRankDelta]
KEY_SOURCES = ("templates", "prompt")


@dataclass(frozen=True)
class SpreadHparams:
    """What MEMIT and AlphaEdit share: the layer range, the z optimisation, keys and statistics."""

    layers: tuple[int, ...] | None = None  # None: layer_count consecutive layers around layer_fraction of depth
    layer_fraction: float = 0.2
    layer_count: int = 5
    fact_token: str = "subject_last"
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    v_early_stop_loss: float = 0.05
    mom2_tokens: int = 100_000
    mom2_corpus: str | None = None  # None: the offline default corpus (see kedit.stats.corpus)
    context_template_length_params: tuple[tuple[int, int], ...] = ((10, 5),)
    template_seed: int = 0
    cache_prefix: bool = True  # z loop: tokens before the subject come from a KV cache
    cache_lower_blocks: bool = True  # z loop: blocks up to z_layer are replayed
    z_cache: bool = True  # reuse z from $KEDIT_HOME/target_values when nothing it depends on changed
    z_requests_per_chunk: int = 32  # requests optimised together in one forward (speed only)
    z_chunk_token_budget: int = 2048  # padded tokens per chunk step (speed and memory only)
    # the keys the spread writes at: "templates" (MEMIT's D.9 mean over the context templates, the
    # bare prompt weighing 1/2) or "prompt" (the bare prompt's own key, as ROME's original form)
    key_source: str = "templates"

    def __post_init__(self) -> None:
        if self.key_source not in KEY_SOURCES:
            raise KeditError(f"key_source {self.key_source!r} is not one of {KEY_SOURCES}")
        if self.layers is not None:
            layers = tuple(int(layer) for layer in self.layers)
            if not layers or list(layers) != sorted(set(layers)):
                raise KeditError(f"layers must be a non-empty ascending list without repeats, got {list(layers)}")
            object.__setattr__(self, "layers", layers)
        if self.v_num_grad_steps < 1:
            raise KeditError("v_num_grad_steps must be at least 1")
        if self.z_requests_per_chunk < 1 or self.z_chunk_token_budget < 1:
            raise KeditError("z_requests_per_chunk and z_chunk_token_budget must be positive")

    @property
    def z_layer(self) -> int:
        if not self.layers:
            raise KeditError("no layers resolved: pass layers or load the hyperparameters for a model")
        return self.layers[-1]

    def value_settings(self) -> ValueOptimization:
        return ValueOptimization(
            steps=self.v_num_grad_steps,
            lr=self.v_lr,
            weight_decay=self.v_weight_decay,
            clamp_norm_factor=self.clamp_norm_factor,
            kl_factor=self.kl_factor,
            early_stop_loss=self.v_early_stop_loss,
            fact_token=self.fact_token,
            cache_lower_blocks=self.cache_lower_blocks,
            cache_prefix=self.cache_prefix,
            requests_per_chunk=self.z_requests_per_chunk,
            chunk_token_budget=self.z_chunk_token_budget,
        )


@dataclass(frozen=True)
class MEMITHparams(SpreadHparams):
    mom2_update_weight: float = 15000.0  # λ: weight of the corpus second moment in the solve

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mom2_update_weight < 0:
            raise KeditError("mom2_update_weight (λ) must be >= 0")


def _ignored_article_count(value: Any) -> tuple[str | None, Any]:
    warnings.warn(
        "mom2_n_samples counts Wikipedia articles; kedit counts tokens (mom2_tokens). Ignoring it.",
        KeditWarning, stacklevel=4,
    )
    return None, value


def _ignored(value: Any) -> tuple[None, Any]:
    return None, value


# EasyEdit / reference spellings accepted by MEMIT and AlphaEdit.
SPREAD_ALIASES: dict[str, Callable[[Any], tuple[str | None, Any]]] = {
    "mom2_dataset": lambda value: ("mom2_corpus", None if value in (None, "stdlib") else value),
    "mom2_n_samples": _ignored_article_count,
    "mom2_adjustment": _ignored,  # MEMIT always uses C (the reference ignores the flag too)
    "layer_selection": _ignored,
}


def derive_layers(values: dict[str, Any], lm: LoadedModel | None) -> dict[str, Any]:
    """Without explicit layers: ``layer_count`` consecutive layers centred on round(fraction × depth)."""
    if values.get("layers") is None and lm is not None:
        depth = lm.anatomy.num_layers
        count = min(int(values.get("layer_count", SpreadHparams.layer_count)), depth)
        centre = round(values.get("layer_fraction", SpreadHparams.layer_fraction) * depth)
        start = max(0, min(depth - count, centre - count // 2))
        values["layers"] = tuple(range(start, start + count))
    return values


def check_layers(lm: LoadedModel, hparams: SpreadHparams) -> tuple[int, ...]:
    if not hparams.layers:
        raise KeditError("no layers given: set layers (e.g. layers=[3,4,5,6,7])")
    for layer in hparams.layers:
        lm.anatomy.check_layer(layer)
    return hparams.layers


@dataclass(frozen=True)
class Targets:
    z: torch.Tensor  # (n, d) float32: target residual at z_layer for each request
    info: dict[str, Any]


def compute_targets(lm: LoadedModel, requests: Sequence[EditRequest], hparams: SpreadHparams,
                    templates: Sequence[str]) -> Targets:
    """MEMIT's z for every request (D.8), on the model as it is now."""
    started = time.perf_counter()
    z_layer = hparams.z_layer
    settings = hparams.value_settings()
    cached = cached_target_values(lm, requests, lm.anatomy.block_paths[z_layer], z_layer, templates, settings,
                                  use_cache=hparams.z_cache, progress=len(requests) > settings.requests_per_chunk)
    z = torch.stack([value.value for value in cached.values])
    iterations = [len(value.losses) for value in cached.values]
    finals = [value.losses[-1] for value in cached.values]
    info = {
        "z_layer": z_layer,
        "z_seconds": time.perf_counter() - started,
        "z_cache_hits": cached.hits,
        "z_iterations_mean": statistics.fmean(iterations),
        "z_iterations_max": max(iterations),
        "z_final_loss_mean": statistics.fmean(finals),
        "z_final_loss_max": max(finals),
        "z_delta_norm_mean": statistics.fmean(float(v.delta.norm()) for v in cached.values),
    }
    return Targets(z=z, info=info)


def spread_keys(lm: LoadedModel, requests: Sequence[EditRequest], layer: int, templates: Sequence[str],
                hparams: SpreadHparams) -> torch.Tensor:
    """(n, d_k) keys the spread writes at (``hparams.key_source``): MEMIT's template-weighted keys
    (D.9), or the bare prompt's own (templates[0] is the bare "{}"). z is always optimised after
    every template."""
    if hparams.key_source == "prompt":
        return weighted_subject_keys(lm, requests, layer, templates[:1], [1.0], hparams.fact_token)
    weights = template_weights(hparams.context_template_length_params)
    return weighted_subject_keys(lm, requests, layer, templates, weights, hparams.fact_token)


def spread_over_layers(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    hparams: SpreadHparams,
    templates: Sequence[str],
    z: torch.Tensor,
    solve: LayerSolver,
) -> tuple[Deltas, list[dict[str, Any]]]:
    """D.10: layer by layer (ascending), keys and residual on the current model, ``solve`` for ΔW,
    applied at once; the model is restored before returning. Returns the deltas in each
    parameter's storage orientation (a :class:`~kedit.edits.Deltas`: factored ones read dense) and one
    info dict per layer."""
    layers = check_layers(lm, hparams)
    weights = template_weights(hparams.context_template_length_params)
    if len(weights) != len(templates):
        raise KeditError(f"{len(templates)} context templates for length params "
                         f"{hparams.context_template_length_params}: the template cache is inconsistent")

    names = [lm.anatomy.mlp_out_weight(layer) for layer in layers]
    snapshot = ParameterSnapshot(lm)
    snapshot.record(names)
    targets = z.to(lm.device, torch.float64).T  # (d, n)
    deltas: dict[str, torch.Tensor | LowRankDelta] = {}
    details = []
    try:
        for index, (layer, name) in enumerate(zip(layers, names, strict=True)):
            started = time.perf_counter()
            keys = spread_keys(lm, requests, layer, templates, hparams).to(torch.float64).T  # (d_k, n)
            current = subject_hidden(lm, requests, hparams.z_layer, hparams.fact_token).to(torch.float64).T  # (d, n)
            residual = targets - current
            share = residual / (len(layers) - index)
            written_share, through_norm = _mlp_output_share(lm, requests, layer, share, hparams.fact_token)
            solved = solve(layer, keys, written_share)
            parameter = lm.parameter(name)
            deltas[name] = _stored_delta(lm, solved, parameter.dtype)
            delta = solved.dense() if isinstance(solved, LowRankDelta) else solved  # (d, d_k) float64
            with torch.no_grad():
                parameter.add_(as_dense(deltas[name], parameter.device))  # deeper layers see this layer's edit
            written = delta @ keys
            details.append({
                **({"share_through_norm": through_norm} if through_norm is not None else {}),
                "layer": layer,
                "residual_norm_mean": float(residual.norm(dim=0).mean()),
                "share_norm_mean": float(share.norm(dim=0).mean()),
                "key_norm_mean": float(keys.norm(dim=0).mean()),
                # how much of this layer's share ΔW actually writes at the new keys (1 = all of it)
                "share_written": float(1 - (written - written_share).norm() / written_share.norm().clamp_min(1e-30)),
                "delta_norm": float(delta.norm()),
                "seconds": time.perf_counter() - started,
            })
    finally:
        snapshot.restore()
    return Deltas(deltas), details


def _stored_delta(lm: LoadedModel, solved: torch.Tensor | LowRankDelta, dtype: torch.dtype) -> torch.Tensor | LowRankDelta:
    """A solver's (d, d_k) float64 ΔW in the parameter's orientation: its factors (formed in float64,
    cast to ``dtype``) while they are smaller than the dense matrix, else the dense matrix in ``dtype``."""
    if isinstance(solved, LowRankDelta):
        stored = LowRankDelta(solved.u, solved.v, dtype)
        return compact(stored.transposed() if lm.anatomy.transposed else stored)
    return lm.anatomy.as_update(solved).to(dtype)


def _mlp_output_share(lm: LoadedModel, requests: Sequence[EditRequest], layer: int, share: torch.Tensor,
                      fact_token: str) -> tuple[torch.Tensor, float | None]:
    """(d, n) change to write at layer ``layer``'s MLP output so the residual stream gains ``share``,
    and the share of it reached through the layer's post-MLP norm (None: the block has none, and
    the MLP output is the residual increment)."""
    norm_path = lm.anatomy.post_mlp_norm_paths[layer] if lm.anatomy.post_mlp_norm_paths else None
    if norm_path is None:
        return share, None
    outputs = subject_output(lm, requests, lm.anatomy.mlp_out_paths[layer], fact_token)  # (n, d)
    change, reached = shift_through_norm(lm.module(norm_path), outputs, share.T)
    return change.T.to(share.device), reached


def memit_solver(moments: Mapping[int, torch.Tensor], weight: float) -> LayerSolver:
    """ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹, solved as A = (λ C + K Kᵀ)⁻¹ K, ΔW = R Aᵀ, in float64: returned as
    the factors U = R (d, n), V = A (d_k, n), rank ≤ n requests."""
    def solve(layer: int, keys: torch.Tensor, share: torch.Tensor) -> LowRankDelta:
        moment = moments[layer].to(keys.device, torch.float64)
        adjusted = torch.linalg.solve(weight * moment + keys @ keys.T, keys)  # (d_k, n)
        return LowRankDelta(share, adjusted, torch.float64)
    return solve


def spread_edit(
    method: str,
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    hparams: SpreadHparams,
    solve: LayerSolver,
    info: Mapping[str, Any] | None = None,
    templates: Sequence[str] | None = None,
) -> WeightEdit:
    """A whole batch edit: z for every request (D.8), then the layer spread (D.10) with ``solve``."""
    requests = list(requests)
    if not requests:
        raise KeditError(f"{method} needs at least one request")
    layers = check_layers(lm, hparams)
    started = time.perf_counter()
    if templates is None:
        templates = context_templates(lm, hparams.context_template_length_params, hparams.template_seed)
    targets = compute_targets(lm, requests, hparams, templates)
    spread_started = time.perf_counter()
    deltas, layer_info = spread_over_layers(lm, requests, hparams, templates, targets.z, solve)
    return WeightEdit(
        method=method,
        requests=tuple(requests),
        hparams=asdict(hparams),
        deltas=deltas,
        base_fingerprint=lm.fingerprint,
        info={
            "layers": list(layers),
            "requests_in_batch": len(requests),
            **targets.info,
            "spread_seconds": time.perf_counter() - spread_started,
            "total_seconds": time.perf_counter() - started,
            "layer_details": layer_info,
            **(info or {}),
        },
    )


@register("memit")
class MEMIT:
    summary: ClassVar[str] = "Batch edit spread over a range of MLP layers by least squares (Meng et al. 2023)"
    hparams_class: ClassVar[type] = MEMITHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(
        self, lm: LoadedModel | None, user_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> MEMITHparams:
        hparams = build_hparams(MEMITHparams, lm, DEFAULTS_YAML, user_file, overrides, SPREAD_ALIASES, derive_layers)
        if lm is not None:
            check_layers(lm, hparams)
        return hparams

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: MEMITHparams) -> WeightEdit:
        layers = check_layers(lm, hparams)
        moments = second_moments(lm, layers, hparams.mom2_corpus, hparams.mom2_tokens)
        return spread_edit(self.name, lm, requests, hparams, memit_solver(moments, hparams.mom2_update_weight))
