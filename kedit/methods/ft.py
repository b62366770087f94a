"""Fine-tuning editors FT-L and FT-M, with the optional SSS regulariser (SPEC-ALGORITHMS C).

Both methods train the MLP output projection weights of the chosen layers (``layers``; by
default the single layer ROME would edit on this model) with Adam (``lr``, ``weight_decay``) for
at most ``num_steps`` steps. All requests are optimised together: each step runs over the
requests in left-padded chunks of ``batch_size`` (all of them in one chunk by default), one Adam
update per chunk. They differ only in the loss and in the default L∞ bound.

**FT-L** (``objective_optimization: prompt_last``; ROME's constrained fine-tuning baseline
"FT+L", SPEC-ALGORITHMS C): the model reads the prompt alone; the log-softmax of the next-token
distribution at the LAST prompt token is taken, and EVERY target token id is gathered from that
same distribution; the loss is the mean of their negative log-probabilities per request, then the
mean over requests. For a one-token target this is the usual NLL of the target; for a longer
target it trains all target tokens as candidates for the next token (a bag of tokens), not the
sequence. This is the reference code's behaviour (kmeng01/rome ``ft_main.py``, carried into
EasyEdit's FT-L and EditSSS); kedit keeps it because published FT-L numbers come from it.
After every Adam update each edited weight is clamped elementwise into [W0 − ε, W0 + ε]
(ε = ``norm_constraint``, default 5e-4, the reference value tuned for GPT-2 XL; 1e-2 for the
bundled SmolLM2, swept in docs/BENCHMARKS.md; ``None`` or ``false`` removes the bound).

**FT-M** (``objective_optimization: target_new``, EasyEdit's FT-M): the model reads prompt +
target (teacher forcing); the loss is the cross-entropy of each target token given everything
before it, prompt positions masked out, averaged over the target tokens of each request, then
over requests. No L∞ bound by default (``norm_constraint: None``); setting one clamps as FT-L.

Prompt and target are tokenised by :func:`kedit.models.scoring.encode_pair` (target with one
leading space, split from the joint tokenisation), the same tokens the evaluation scores.
The reference FT-L tokenises the target on its own and pads on the right; kedit pads on the left
with explicit position ids, which gives each request the numbers of an unpadded forward (a test
checks this against one-prompt-at-a-time forwards).

**SSS** (``sss_coef`` = C in [0, 1], default 0 = off; the paper's scripts use 0.9):
L = (1 − C) · L_edit + C · SSS with SSS = Σ g², the plain sum over batch, positions and width of
g = ∂L_edit/∂h, h the model's final hidden states after the final norm, shape (B, T, d), all
positions (only positions whose logits enter L_edit get a non-zero g: for FT-L the last prompt
token, for FT-M the positions that predict target tokens). g is taken with
``create_graph=True`` so the Adam update follows the gradient of SSS too. Because L_edit is a
mean over the chunk's requests, g (and so SSS) depends on the chunk size (SSS ∝ 1/n² for n
identical requests); the reference behaves the same. With C = 0 the objective is exactly L_edit
(SSS is not even computed).

Where kedit departs from the reference code (SPEC-ALGORITHMS C "Known bugs"):

* in EditSSS the FT regulariser is dead code (an uppercase "SSS" is looked for in a lower-cased
  algorithm name), so its published FT-SSS runs used no SSS at all; here ``sss_coef > 0`` applies it;
* the reference sums g² with a Python loop; here it is one vectorised sum (same value);
* the reference's paper calls SSS an eigenvalue: Σ g² is the only non-zero eigenvalue of g gᵀ, the same number;
* the early stop (``early_stop_loss``, 1e-2 as in the reference) compares L_edit, not the
  regularised objective: the threshold means "the target is learned". A chunk whose L_edit is
  below it gets no update in that step, and the optimisation ends after a step whose mean L_edit
  over chunks is below it.

The model is left exactly as it was: the edited weights are copied back (and their
``requires_grad`` restored) in a ``finally`` block, and the edit is returned as deltas.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from kedit.edits import ParameterSnapshot, WeightEdit
from kedit.errors import KeditError
from kedit.methods.base import register
from kedit.methods.hparam_types import check_values
from kedit.methods.hparams import build_hparams
from kedit.methods.losses import ObjectiveTerms, masked_nll, regularised_objective
from kedit.methods.rome import ROME
from kedit.methods.targets import TargetBatch, target_batch
from kedit.models.loading import LoadedModel
from kedit.models.tracing import final_hidden, logits_from_hidden
from kedit.requests import EditRequest

DEFAULTS_YAML = Path(__file__).with_name("ft.yaml")
PROMPT_LAST = "prompt_last"  # FT-L: every target token read at the last prompt position
TARGET_NEW = "target_new"  # FT-M: teacher-forced cross-entropy on the target tokens
PROGRESS_MIN_UPDATES = 50  # show a progress bar only when the run has at least this many Adam updates


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class FTHparams:
    """What FT-L and FT-M share. ``layers=None`` resolves to ROME's default layer for the model."""

    layers: tuple[int, ...] | None = None
    num_steps: int = 25
    lr: float = 5e-4
    weight_decay: float = 0.0
    batch_size: int | None = None  # requests per Adam update; None: all requests in one chunk
    norm_constraint: float | None = None  # ε of the L∞ bound around the original weights; None: unbounded
    early_stop_loss: float = 1e-2
    sss_coef: float = 0.0  # C: L = (1 - C) L_edit + C SSS

    FALSE_MEANS_NONE: ClassVar[frozenset[str]] = frozenset({"norm_constraint"})  # EasyEdit's "no bound"

    def __post_init__(self) -> None:
        if self.norm_constraint is False:  # EasyEdit writes `norm_constraint: false` for "no bound"
            object.__setattr__(self, "norm_constraint", None)
        # Types and the ranges every method shares (steps >= 1, lr > 0, decay >= 0, ...): the same
        # check as for YAML and --set values, so directly built hparams are checked too.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in check_values(type(self), values, {}).items():
            object.__setattr__(self, name, value)
        if self.layers is not None:
            layers = self.layers
            if not layers or list(layers) != sorted(set(layers)):
                raise KeditError(f"layers must be a non-empty ascending list without repeats, got {list(layers)}")
        if self.norm_constraint is not None and not self.norm_constraint > 0:
            raise KeditError(
                f"norm_constraint (ε of the L∞ bound) must be a positive number, got {self.norm_constraint!r}; "
                "use null / false to fine-tune without a bound"
            )
        if not 0.0 <= self.sss_coef <= 1.0:
            raise KeditError(f"sss_coef (C of L = (1-C) L_edit + C SSS) must be in [0, 1], got {self.sss_coef!r}")


@dataclass(frozen=True)
class FTLHparams(FTHparams):
    norm_constraint: float | None = 5e-4


@dataclass(frozen=True)
class FTMHparams(FTHparams):
    pass


def _objective_alias(expected: str, method: str) -> Callable[[Any], tuple[None, Any]]:
    """EasyEdit's ``objective_optimization`` picks FT-L or FT-M; here the method name does."""
    other = {PROMPT_LAST: "ft-l", TARGET_NEW: "ft-m"}

    def check(value: Any) -> tuple[None, Any]:
        if value != expected:
            hint = f"; that objective is method {other[value]!r}" if value in other else ""
            raise KeditError(
                f"objective_optimization {value!r} does not match method {method!r} "
                f"(which optimises {expected!r}){hint}"
            )
        return None, value
    return check


def layer_alias(value: Any) -> tuple[str, Any]:
    """ROME's single ``layer`` spelling."""
    return "layers", (value,)


def _aliases(objective: str, method: str) -> dict[str, Callable[[Any], tuple[str | None, Any]]]:
    return {
        "layer": layer_alias,
        "objective_optimization": _objective_alias(objective, method),
        "kl_factor": lambda value: (None, value),  # in EasyEdit's FT files, never used by FT
    }


def derive_layers(values: dict[str, Any], lm: LoadedModel | None) -> dict[str, Any]:
    """No layers given: the layer ROME edits on this model (its rome.yaml entry or fraction of depth)."""
    if values.get("layers") is None and lm is not None:
        values["layers"] = (ROME().default_hparams(lm).layer,)
    return values


def check_layers(lm: LoadedModel, hparams: FTHparams) -> tuple[int, ...]:
    if not hparams.layers:
        raise KeditError("no layers given: set layers (e.g. layers=[4])")
    for layer in hparams.layers:
        lm.anatomy.check_layer(layer)
    return hparams.layers


# --------------------------------------------------------------------------- losses


# --------------------------------------------------------------------------- batches


TrainingChunk = TargetBatch  # the requests of one Adam update


def encode_chunk(lm: LoadedModel, requests: Sequence[EditRequest], objective: str) -> TargetBatch:
    if objective not in (PROMPT_LAST, TARGET_NEW):
        raise KeditError(f"unknown fine-tuning objective {objective!r}; expected {PROMPT_LAST!r} or {TARGET_NEW!r}")
    return target_batch(lm, [(request.text, request.target_new) for request in requests],
                        at_last_prompt_token=objective == PROMPT_LAST)


def chunk_objective(lm: LoadedModel, chunk: TrainingChunk, sss_coef: float) -> ObjectiveTerms:
    """One forward of the chunk and its (regularised) loss; the graph reaches the trainable weights."""
    hidden = final_hidden(lm, chunk.batch)  # (n, T, d) after the final norm
    logits = logits_from_hidden(lm, hidden[:, -chunk.window:])  # (n, window, V)
    edit_loss = masked_nll(logits, chunk.labels, chunk.mask)
    return regularised_objective(edit_loss, hidden, sss_coef)


# --------------------------------------------------------------------------- the optimisation


@dataclass(frozen=True)
class FineTuneResult:
    deltas: dict[str, torch.Tensor]  # parameter name -> W_final - W0 (storage orientation)
    losses: tuple[float, ...]  # per step: mean L_edit over chunks, before that step's updates
    objectives: tuple[float, ...]  # per step: mean regularised objective over chunks
    sss: tuple[float, ...]  # per step: mean SSS over chunks (empty when sss_coef == 0)
    updates: int  # Adam updates made
    early_stopped: bool
    penalties: tuple[float, ...] = ()  # per step: mean extra penalty over chunks (empty without one)


Penalty = Callable[[Sequence[torch.Tensor]], torch.Tensor]  # trained weights (in ``layers`` order) -> a scalar


def fine_tune(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    hparams: FTHparams,
    objective: str,
    description: str = "fine-tune",
    penalty: Penalty | None = None,
) -> FineTuneResult:
    """Train the MLP output weights of ``hparams.layers`` on ``requests``; the model is restored
    bit for bit before returning and the changes come back as deltas.

    ``penalty`` (FT+EWC's quadratic term) is added to every chunk's objective; the early stop still
    reads L_edit alone. Without one the loop is exactly FT-L's / FT-M's."""
    layers = check_layers(lm, hparams)
    if not requests:
        raise KeditError(f"{description} needs at least one request")
    size = hparams.batch_size or len(requests)
    chunks = [encode_chunk(lm, requests[start:start + size], objective) for start in range(0, len(requests), size)]
    names = [lm.anatomy.mlp_out_weight(layer) for layer in layers]
    parameters = [lm.parameter(name) for name in names]
    snapshot = ParameterSnapshot(lm)
    snapshot.record(names)
    originals = [snapshot.originals[name] for name in names]  # the ε box is around these
    grad_flags = [parameter.requires_grad for parameter in parameters]
    epsilon = hparams.norm_constraint
    losses, objectives, sss_values, penalty_values = [], [], [], []
    updates, early_stopped = 0, False
    bar = tqdm(range(hparams.num_steps), desc=description, unit="step", leave=False,
               disable=hparams.num_steps * len(chunks) < PROGRESS_MIN_UPDATES)
    try:
        for parameter in parameters:
            parameter.requires_grad_(True)
        optimizer = torch.optim.Adam(parameters, lr=hparams.lr, weight_decay=hparams.weight_decay)
        with torch.enable_grad():
            for _step in bar:
                step_losses, step_objectives, step_sss, step_penalties = [], [], [], []
                for chunk in chunks:
                    optimizer.zero_grad(set_to_none=True)
                    terms = chunk_objective(lm, chunk, hparams.sss_coef)
                    total = terms.total
                    if penalty is not None:
                        extra = penalty(parameters)
                        step_penalties.append(float(extra.detach()))
                        total = total + extra
                    edit_loss = float(terms.edit_loss.detach())
                    step_losses.append(edit_loss)
                    step_objectives.append(float(total.detach()))
                    if terms.sss is not None:
                        step_sss.append(float(terms.sss.detach()))
                    if not math.isfinite(edit_loss) or not math.isfinite(step_objectives[-1]):
                        raise KeditError(f"{description}: the loss became {step_objectives[-1]}; lower lr")
                    if edit_loss < hparams.early_stop_loss:
                        continue  # this chunk's targets are learned: no update (as the reference)
                    total.backward()
                    optimizer.step()
                    updates += 1
                    if epsilon is not None:
                        with torch.no_grad():
                            for parameter, original in zip(parameters, originals, strict=True):
                                parameter.clamp_(min=original - epsilon, max=original + epsilon)  # elementwise
                losses.append(statistics.fmean(step_losses))
                objectives.append(statistics.fmean(step_objectives))
                if step_sss:
                    sss_values.append(statistics.fmean(step_sss))
                if step_penalties:
                    penalty_values.append(statistics.fmean(step_penalties))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if losses[-1] < hparams.early_stop_loss:
                    early_stopped = True
                    break
        deltas = {
            name: (parameter.detach() - original).clone()
            for name, parameter, original in zip(names, parameters, originals, strict=True)
        }
    finally:
        bar.close()
        snapshot.restore()
        for parameter, flag in zip(parameters, grad_flags, strict=True):
            parameter.requires_grad_(flag)
            parameter.grad = None
    return FineTuneResult(
        deltas=deltas,
        losses=tuple(losses),
        objectives=tuple(objectives),
        sss=tuple(sss_values),
        updates=updates,
        early_stopped=early_stopped,
        penalties=tuple(penalty_values),
    )


# --------------------------------------------------------------------------- the two methods


class _FineTuneMethod:
    """Shared body of FT-L and FT-M; subclasses fix the objective and the hyperparameter class."""

    name: ClassVar[str]
    summary: ClassVar[str]
    hparams_class: ClassVar[type[FTHparams]]
    objective: ClassVar[str]
    batch_capable: ClassVar[bool] = True

    def default_hparams(
        self, lm: LoadedModel | None, user_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> FTHparams:
        hparams = build_hparams(self.hparams_class, lm, DEFAULTS_YAML, user_file, overrides,
                                _aliases(self.objective, self.name), derive_layers, defaults_section=self.name)
        if lm is not None:
            check_layers(lm, hparams)
        return hparams

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: FTHparams) -> WeightEdit:
        return fine_tune_edit(lm, requests, hparams, self.objective, self.name)


def fine_tune_edit(lm: LoadedModel, requests: Sequence[EditRequest], hparams: FTHparams, objective: str, method: str,
                   penalty: Penalty | None = None, extra_info: Mapping[str, Any] | None = None) -> WeightEdit:
    """:func:`fine_tune` on ``requests`` as the :class:`WeightEdit` of ``method`` (FT-L, FT-M, FT+EWC)."""
    requests = list(requests)
    started = time.perf_counter()
    result = fine_tune(lm, requests, hparams, objective, description=method, penalty=penalty)
    layers = check_layers(lm, hparams)
    return WeightEdit(
        method=method,
        requests=tuple(requests),
        hparams=asdict(hparams),
        deltas=result.deltas,
        base_fingerprint=lm.fingerprint,
        info={
            "layers": list(layers),
            "objective": objective,
            "requests_in_batch": len(requests),
            "steps": len(result.losses),
            "updates": result.updates,
            "early_stopped": result.early_stopped,
            "losses": list(result.losses),
            "objective_values": list(result.objectives),
            "sss": list(result.sss),
            **({"penalties": list(result.penalties)} if penalty is not None else {}),
            "max_abs_delta": {
                str(layer): float(result.deltas[lm.anatomy.mlp_out_weight(layer)].abs().max()) for layer in layers
            },
            **dict(extra_info or {}),
            "seconds": time.perf_counter() - started,
        },
    )


@register("ft-l")
class FTL(_FineTuneMethod):
    summary: ClassVar[str] = "Fine-tune MLP output weights, target read at the last prompt token, L∞-clamped (FT-L)"
    hparams_class: ClassVar[type[FTHparams]] = FTLHparams
    objective: ClassVar[str] = PROMPT_LAST


@register("ft-m")
class FTM(_FineTuneMethod):
    summary: ClassVar[str] = "Fine-tune MLP output weights on teacher-forced target tokens, prompt masked (FT-M)"
    hparams_class: ClassVar[type[FTHparams]] = FTMHparams
    objective: ClassVar[str] = TARGET_NEW
