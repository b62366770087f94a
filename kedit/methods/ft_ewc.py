"""FT+EWC: fine-tuning with elastic weight consolidation (Kirkpatrick et al. 2017; the regularisation
baseline of GRACE and of the survey; SPEC-ALGORITHMS K).

The fine-tuning is FT's (:func:`kedit.methods.ft.fine_tune`: the MLP output weights of ``layers``,
Adam, the early stop on L_edit, the optional L∞ bound), with one term added to every objective:

    L = L_edit + s · Σ_j F_j (θ_j − θ*_j)²,   s = λ/2 (``ewc_form: kirkpatrick``, the paper) or λ (``grace``)

λ = ``ewc_lambda``. L_edit is FT-M's teacher-forced cross-entropy of the target tokens
(``objective_optimization: target_new``, what GRACE's FT+EWC trains: the token CE on the labels) or
FT-L's last-prompt-token form (``prompt_last``); with λ = 0 the edit is FT-M's (or FT-L's with FT-L's
settings) bit for bit.

Where F and θ* come from (``fisher_source``):

* ``corpus`` (default): the diagonal empirical Fisher of the tuned weights over ``fisher_texts``
  windows of ``fisher_text_tokens`` tokens of a text corpus unrelated to the edits (``fisher_corpus``;
  the offline default is the Python standard library's docstrings, :mod:`kedit.stats.corpus`),
  computed once per model state and cached (:mod:`kedit.stats.fisher`); θ* = the weights it was
  computed at, i.e. when the session opened: in a sequential run the unedited model, so the
  penalty keeps every edit close to what the model knew before editing (Kirkpatrick's task A is
  the model's pretraining).
* ``history`` (GRACE's ``ft_ewc.py``): recomputed at every edit on the current model from the
  ``fisher_history`` (10) most recent edited requests, the current ones included, each example's
  loss its L_edit; θ* = the current weights. Fixed here (SPEC K FLAGs): the parameter names are a
  list, gradients are zeroed per example, F and θ* are divided by the number of examples used.

Departures: the optimisation stops when L_edit < ``early_stop_loss`` (FT's rule) rather than
GRACE's "every label is the argmax" test; the Fisher is the empirical one (squared gradients at the
true tokens), as GRACE's, not Kirkpatrick's expectation over the model's own predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from kedit.edits import WeightEdit
from kedit.errors import KeditError
from kedit.methods.base import EditSession, register
from kedit.methods.ft import (
    PROMPT_LAST,
    TARGET_NEW,
    FTHparams,
    check_layers,
    chunk_objective,
    derive_layers,
    encode_chunk,
    fine_tune_edit,
    layer_alias,
)
from kedit.methods.hparams import build_hparams
from kedit.methods.losses import ewc_penalty
from kedit.models.loading import LoadedModel
from kedit.requests import EditRequest
from kedit.stats.fisher import corpus_fisher, diagonal_fisher

DEFAULTS_YAML = Path(__file__).with_name("ft_ewc.yaml")
CORPUS, HISTORY = "corpus", "history"
EWC_FORMS = {"kirkpatrick": 0.5, "grace": 1.0}  # the factor of λ


@dataclass(frozen=True)
class FTEWCHparams(FTHparams):
    objective_optimization: str = TARGET_NEW
    ewc_lambda: float = 0.1
    ewc_form: str = "kirkpatrick"
    fisher_source: str = CORPUS
    fisher_corpus: str | None = None  # None: the offline default corpus (kedit.stats.corpus)
    fisher_texts: int = 100
    fisher_text_tokens: int = 64
    fisher_history: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.objective_optimization not in (PROMPT_LAST, TARGET_NEW):
            raise KeditError(f"objective_optimization {self.objective_optimization!r} is not one of "
                             f"{(TARGET_NEW, PROMPT_LAST)} (FT-M's or FT-L's loss)")
        if self.ewc_form not in EWC_FORMS:
            raise KeditError(f"ewc_form {self.ewc_form!r} is not one of {tuple(EWC_FORMS)} "
                             "(kirkpatrick: λ/2 Σ F (θ − θ*)², grace: λ Σ F (θ − θ*)²)")
        if self.fisher_source not in (CORPUS, HISTORY):
            raise KeditError(f"fisher_source {self.fisher_source!r} is not one of {(CORPUS, HISTORY)}")
        if not self.ewc_lambda >= 0:
            raise KeditError(f"ewc_lambda must be >= 0, got {self.ewc_lambda!r}")
        if self.fisher_texts < 1 or self.fisher_history < 1:
            raise KeditError("fisher_texts and fisher_history must be at least 1")


ALIASES = {
    "layer": layer_alias,
    "edit_lr": lambda value: ("lr", value),  # GRACE's config names
    "n_iter": lambda value: ("num_steps", value),
    "fisher_mem": lambda value: ("fisher_history", value),
    "kl_factor": lambda value: (None, value),  # in EasyEdit's FT files, never used by FT
}


def history_fisher(lm: LoadedModel, names: Sequence[str], items: Sequence[EditRequest], objective: str) -> list[torch.Tensor]:
    """GRACE's Fisher: per edited request, the squared gradient of its own L_edit, averaged."""
    parameters = [lm.parameter(name) for name in names]
    chunks = [encode_chunk(lm, [item], objective) for item in items]
    return diagonal_fisher(parameters, (lambda chunk=chunk: chunk_objective(lm, chunk, 0.0).edit_loss
                                        for chunk in chunks))


class FTEWCSession(EditSession):
    """The Fisher and anchor of a series of edits: fixed at opening (``corpus``) or per edit (``history``)."""

    def __init__(self, method: Any, lm: LoadedModel, hparams: FTEWCHparams) -> None:
        super().__init__(method, lm, hparams)
        self.names = [lm.anatomy.mlp_out_weight(layer) for layer in check_layers(lm, hparams)]
        self.history: list[EditRequest] = []  # requests of the edits applied in this session
        self.fisher: list[torch.Tensor] | None = None
        self.anchors: list[torch.Tensor] | None = None
        if hparams.fisher_source == CORPUS:
            found = corpus_fisher(lm, self.names, hparams.fisher_corpus, hparams.fisher_texts, hparams.fisher_text_tokens)
            self.fisher = [found[name].to(lm.device) for name in self.names]
            self.anchors = [lm.parameter(name).detach().clone() for name in self.names]

    def compute(self, requests: Sequence[EditRequest]) -> WeightEdit:
        lm, hparams = self.lm, self.hparams
        fisher, anchors, items = self.fisher, self.anchors, 0
        if hparams.fisher_source == HISTORY:
            recent = (self.history + list(requests))[-hparams.fisher_history:]  # GRACE: H includes this edit
            fisher = history_fisher(lm, self.names, recent, hparams.objective_optimization)
            anchors = [lm.parameter(name).detach().clone() for name in self.names]
            items = len(recent)
        strength = EWC_FORMS[hparams.ewc_form] * hparams.ewc_lambda

        def penalty(parameters: Sequence[torch.Tensor]) -> torch.Tensor:
            return ewc_penalty(parameters, anchors, fisher, strength)

        info = {"fisher_source": hparams.fisher_source, "ewc_strength": strength,
                "fisher_sum": {name: float(f.double().sum()) for name, f in zip(self.names, fisher, strict=True)},
                **({"fisher_items": items} if items else {})}
        return fine_tune_edit(lm, requests, hparams, hparams.objective_optimization, self.method.name,
                              penalty=penalty, extra_info=info)

    def applied(self, edit: Any) -> None:
        self.history.extend(edit.requests)


@register("ft-ewc")
class FTEWC:
    summary: ClassVar[str] = ("Fine-tuning with elastic weight consolidation: a diagonal-Fisher penalty towards the "
                              "pre-edit weights (Kirkpatrick et al. 2017; GRACE's baseline)")
    hparams_class: ClassVar[type] = FTEWCHparams
    batch_capable: ClassVar[bool] = True

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> FTEWCHparams:
        hparams = build_hparams(FTEWCHparams, lm, DEFAULTS_YAML, user_file, overrides, ALIASES, derive_layers)
        if lm is not None:
            check_layers(lm, hparams)
        return hparams

    def open_session(self, lm: LoadedModel, hparams: FTEWCHparams) -> FTEWCSession:
        return FTEWCSession(self, lm, hparams)

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: FTEWCHparams) -> WeightEdit:
        if not requests:
            raise KeditError("ft-ewc needs at least one request")
        return self.open_session(lm, hparams).compute(requests)
