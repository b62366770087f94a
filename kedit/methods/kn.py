"""KN: Knowledge Neurons (Dai et al. 2022, "Knowledge Neurons in Pretrained Transformers"; SPEC-ALGORITHMS J).

For each request (prompt, subject, target_new y', target_true y):

1. **Prompts of the fact.** The request's prompt after each of kedit's context templates
   (:func:`kedit.methods.locate.context_templates`, ``refine_templates``; the first template is the
   bare prompt). The paper refines over paraphrases of the fact (ParaRel); a request carries none,
   and the case's rephrases are what generalization is measured on, so they are not used.
2. **Attribution** of every MLP intermediate neuron of ``layers`` (default: all) at each prompt's
   last token, for P(first token of y) (:mod:`kedit.methods.kn_attribution`, ``ig_steps`` = 20).
   y is ``target_true`` (``old_answer: true``, the paper's gold answer; the model's own top-1
   next token when a request has none) or always that top-1 token (``old_answer: predicted``).
3. **Selection**: the adaptive threshold per prompt, then the neurons shared by more than
   ``refine_fraction`` of the prompts (adjusted towards ``kn_count_range``).
4. **Edit** (J.3) of each selected neuron's value slot v_i (column i of the layer's MLP output
   matrix, in (d_out, d_k) orientation):

   * ``update_rule: paper`` (default): v_i ← v_i − λ1 (‖v_i‖/‖e(y)‖) e(y) + λ2 (‖v_i‖/‖e(y')‖) e(y'),
     λ1 = ``erase_coef`` (1), λ2 = ``write_coef`` (8), ‖v_i‖ the norm before the edit;
   * ``update_rule: unnormalised``: v_i ← v_i − λ1 e(y) + λ2 e(y') (EleutherAI's code with
     λ1 = λ2 = 2; EasyEdit's single-token form is λ1 = 2, λ2 = 1).

   e(w) is the input embedding of w; for a several-token answer the sum of its tokens'
   embeddings (for the paper's rule only its direction matters, so sum or mean give the same edit).

Several requests in one ``compute`` are edited one after another, each on the model carrying the
earlier ones (as ROME); the result is one :class:`WeightEdit` of the summed deltas.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from kedit.edits import ParameterSnapshot, WeightEdit
from kedit.errors import KeditError
from kedit.methods.base import register
from kedit.methods.hparam_types import check_values
from kedit.methods.hparams import build_hparams
from kedit.methods.kn_attribution import (
    IG_GRIDS,
    coarse_neurons,
    prompt_attributions,
    refine_neurons,
    riemann_alphas,
    selected,
)
from kedit.methods.locate import context_templates, filled_templates
from kedit.models.loading import LoadedModel
from kedit.models.scoring import encode_pair
from kedit.requests import EditRequest

DEFAULTS_YAML = Path(__file__).with_name("kn.yaml")
UPDATE_RULES = ("paper", "unnormalised")
OLD_ANSWERS = ("true", "predicted")


@dataclass(frozen=True)
class KNHparams:
    layers: tuple[int, ...] | None = None  # None: every layer (the paper attributes all of them)
    ig_steps: int = 20  # m
    ig_grid: str = "right"
    ig_batch_size: int = 200  # rows (layer, α) per forward of the attribution
    adaptive_threshold: float = 0.2  # t: coarse neurons have Attr > t · max Attr
    refine_fraction: float = 0.7  # p: kept neurons are coarse in more than p · n prompts
    kn_count_range: tuple[int, int] | None = (2, 5)
    refine_fraction_step: float = 0.05
    refine_rounds: int = 6
    refine_templates: tuple[tuple[int, int], ...] = ((10, 4),)  # context templates: (length, count)
    template_seed: int = 0
    old_answer: str = "true"
    update_rule: str = "paper"
    erase_coef: float = 1.0  # λ1
    write_coef: float = 8.0  # λ2

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in check_values(type(self), values, {}).items():
            object.__setattr__(self, name, value)
        if self.ig_grid not in IG_GRIDS:
            raise KeditError(f"ig_grid {self.ig_grid!r} is not one of {IG_GRIDS}; the paper's Riemann sum is 'right'")
        if self.update_rule not in UPDATE_RULES:
            raise KeditError(f"update_rule {self.update_rule!r} is not one of {UPDATE_RULES}")
        if self.old_answer not in OLD_ANSWERS:
            raise KeditError(f"old_answer {self.old_answer!r} is not one of {OLD_ANSWERS}")
        if not 0.0 < self.adaptive_threshold <= 1.0:
            raise KeditError(f"adaptive_threshold (t of Attr > t · max) must be in (0, 1], got {self.adaptive_threshold}")
        if not 0.0 < self.refine_fraction_step <= 1.0 or self.refine_rounds < 0:
            raise KeditError("refine_fraction_step must be in (0, 1] and refine_rounds >= 0")
        if self.kn_count_range is not None and not 0 <= self.kn_count_range[0] <= self.kn_count_range[1]:
            raise KeditError(f"kn_count_range must be [low, high] with 0 <= low <= high, got {list(self.kn_count_range)}")
        if self.layers is not None and (not self.layers or list(self.layers) != sorted(set(self.layers))):
            raise KeditError(f"layers must be a non-empty ascending list without repeats, got {list(self.layers)}")


def _aliases() -> dict[str, Any]:
    """EasyEdit's KN keys: ``steps`` = ig_steps, ``batch_size`` = rows per forward, ``refine``: false
    = no refining (every coarse neuron of the single prompt: no templates)."""
    def refine(value: Any) -> tuple[str, Any]:
        return "refine_templates", (((10, 4),) if value else ())
    return {"steps": lambda value: ("ig_steps", value), "batch_size": lambda value: ("ig_batch_size", value),
            "refine": refine, "lr_scale": lambda value: (None, value), "n_toks": lambda value: (None, value)}


def check_layers(lm: LoadedModel, hparams: KNHparams) -> tuple[int, ...]:
    layers = hparams.layers if hparams.layers is not None else tuple(range(lm.anatomy.num_layers))
    for layer in layers:
        lm.anatomy.check_layer(layer)
    return layers


# ----------------------------------------------------------------------------------------------- the edit


def knowledge_neuron_update(values: torch.Tensor, old_embedding: torch.Tensor, new_embedding: torch.Tensor,
                            erase: float, write: float, rule: str) -> torch.Tensor:
    """(k, d) changes of k value slots ``values`` (k, d) (J.3): ``paper`` scales e(y), e(y') to each
    slot's norm; ``unnormalised`` adds them as they are."""
    if rule == "paper":
        norms = values.norm(dim=1, keepdim=True)  # (k, 1)
        return norms * (write * new_embedding / new_embedding.norm() - erase * old_embedding / old_embedding.norm())
    if rule == "unnormalised":
        return (write * new_embedding - erase * old_embedding).expand_as(values).clone()
    raise KeditError(f"update_rule {rule!r} is not one of {UPDATE_RULES}")


def answer_embedding(lm: LoadedModel, token_ids: Sequence[int]) -> torch.Tensor:
    """(d,) float32 sum of the input embeddings of ``token_ids``."""
    table = lm.model.get_input_embeddings().weight
    return table[torch.tensor(list(token_ids), device=table.device)].float().sum(dim=0)


@dataclass(frozen=True)
class _Located:
    neurons: list[tuple[int, int, float]]  # (layer, index, mean attribution over prompts)
    old_ids: tuple[int, ...]
    fraction: float
    coarse_counts: list[int]  # coarse neurons per prompt
    p_old: float  # P(first token of y) after the bare prompt


def locate_neurons(lm: LoadedModel, request: EditRequest, hparams: KNHparams, layers: Sequence[int],
                   templates: Sequence[str]) -> _Located:
    """The knowledge neurons of ``request``'s fact on the current model (J.1–J.2)."""
    prompts = [text for _, text in filled_templates(request, templates)]  # the bare prompt first
    alphas = riemann_alphas(hparams.ig_steps, hparams.ig_grid)
    old_ids: tuple[int, ...] | None = None
    if hparams.old_answer == "true" and request.target_true is not None:
        old_ids = tuple(encode_pair(lm.tokenizer, request.text, request.target_true)[1])
    # without a true answer, the bare prompt's top-1 next token is attributed (and erased)
    first = prompt_attributions(lm, prompts[0], old_ids[0] if old_ids else None, layers, alphas,
                                hparams.ig_batch_size)
    old_ids = old_ids or (first.answer_id,)
    attributions = [first, *(prompt_attributions(lm, text, old_ids[0], layers, alphas, hparams.ig_batch_size)
                             for text in prompts[1:])]
    coarse = torch.stack([coarse_neurons(a.scores, hparams.adaptive_threshold) for a in attributions])
    refined = refine_neurons(coarse, hparams.refine_fraction, hparams.kn_count_range,
                             hparams.refine_fraction_step, hparams.refine_rounds)
    mean_scores = torch.stack([a.scores for a in attributions]).mean(dim=0)
    return _Located(selected(refined.neurons, layers, mean_scores), old_ids, refined.fraction,
                    [int(c.sum()) for c in coarse], attributions[0].probability)


def neuron_deltas(lm: LoadedModel, neurons: Sequence[tuple[int, int, float]], old_ids: Sequence[int],
                  new_ids: Sequence[int], hparams: KNHparams) -> dict[str, torch.Tensor]:
    """Deltas in each parameter's storage orientation that change exactly the selected value slots."""
    old, new = answer_embedding(lm, old_ids), answer_embedding(lm, new_ids)
    deltas: dict[str, torch.Tensor] = {}
    for layer in sorted({layer for layer, _, _ in neurons}):
        name = lm.anatomy.mlp_out_weight(layer)
        weight = lm.anatomy.as_out_in(lm.parameter(name).detach())  # (d_out, d_k)
        indices = torch.tensor([index for l_, index, _ in neurons if l_ == layer], device=weight.device)
        values = weight[:, indices].T.float()  # (k, d_out): v_i as rows
        change = knowledge_neuron_update(values, old.to(values.device), new.to(values.device),
                                         hparams.erase_coef, hparams.write_coef, hparams.update_rule)
        delta = torch.zeros_like(weight)
        delta[:, indices] = change.T.to(delta.dtype)
        deltas[name] = lm.anatomy.as_update(delta)
    return deltas


@register("kn")
class KN:
    summary: ClassVar[str] = ("Knowledge neurons: integrated-gradient attribution, refined over prompts; "
                              "their value slots rewritten with word embeddings (Dai et al. 2022)")
    hparams_class: ClassVar[type] = KNHparams
    batch_capable: ClassVar[bool] = False

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> KNHparams:
        hparams = build_hparams(KNHparams, lm, DEFAULTS_YAML, user_file, overrides, _aliases())
        if lm is not None:
            check_layers(lm, hparams)
        return hparams

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: KNHparams) -> WeightEdit:
        requests = list(requests)
        if not requests:
            raise KeditError("kn needs at least one request")
        layers = check_layers(lm, hparams)
        templates = (context_templates(lm, hparams.refine_templates, hparams.template_seed)
                     if hparams.refine_templates else ["{}"])
        names = [lm.anatomy.mlp_out_weight(layer) for layer in layers]
        snapshot = ParameterSnapshot(lm)
        snapshot.record(names)
        totals: dict[str, torch.Tensor] = {}
        details = []
        try:
            for request in requests:
                started = time.perf_counter()
                located = locate_neurons(lm, request, hparams, layers, templates)
                new_ids = encode_pair(lm.tokenizer, request.text, request.target_new)[1]
                deltas = neuron_deltas(lm, located.neurons, located.old_ids, new_ids, hparams)
                with torch.no_grad():
                    for name, delta in deltas.items():
                        lm.parameter(name).add_(delta)  # later requests see earlier ones
                        totals[name] = totals[name] + delta if name in totals else delta.clone()
                details.append({
                    "subject": request.subject,
                    "neurons": [[layer, index, score] for layer, index, score in located.neurons],
                    "old_answer_ids": list(located.old_ids),
                    "p_old_before": located.p_old,
                    "refine_fraction": located.fraction,
                    "prompts": len(templates),
                    "coarse_per_prompt": located.coarse_counts,
                    "seconds": time.perf_counter() - started,
                })
        finally:
            snapshot.restore()
        return WeightEdit(method=self.name, requests=tuple(requests), hparams=asdict(hparams), deltas=totals,
                          base_fingerprint=lm.fingerprint,
                          info={"layers": [layers[0], layers[-1]], "requests": details})
