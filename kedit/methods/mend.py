"""MEND — Model Editor Networks with Gradient Decomposition (Mitchell et al. 2022a; SPEC-ALGORITHMS F).

A meta-trained editor maps the rank-1 factors of one edit's fine-tuning gradient to a better
update. For each edited weight W (default: every MLP matrix of the last 3 blocks) and every token
n of the edit input: u_n = the weight's input, δ_n = ∂L/∂(its output), with L the masked mean NLL
of the new target after the prompt (teacher forced). Rows where u or δ is all zero are dropped
(padding). The editor (:mod:`kedit.methods.mend_networks`) normalises u and δ with running
statistics, passes their concatenation through a low-rank residual MLP initialised to the
identity, and splits the result into (ũ_n, δ̃_n). The update is

    W' = W + α_l Σ_n δ̃_n ũ_nᵀ        (d_out × d_in; GPT-2 Conv1D stores the transpose)

a SUM over tokens (and over all requests of a batch edit: the paper's simultaneous edit), α_l one
learned scalar per edited weight. ``compute`` is one forward/backward plus the editor and returns
a :class:`~kedit.edits.WeightEdit`, so revert, the ledger, batch and sequential editing need nothing
else. Its deltas are kept as the factors U = (α δ̃)ᵀ, V = ũᵀ (rank ≤ the number of tokens:
:class:`~kedit.edits.LowRankDelta`): on SmolLM2 about 76 kB per token of the edit input for the nine
matrices, instead of 32 MB dense. Following the reference code, the update is ADDED (the paper
writes W − α∇̃; the sign is absorbed by the editor and α).

Meta-training (``MEND.train``, SPEC F.6–F.7), per step, for ``edits_per_step`` training cases:
edit with the case's request; then on the edited model

    L_e   = masked mean NLL of the target after a rephrase of the prompt (the paper, ``edit_loss_on:
            rephrase``; EasyEdit scores the edit prompt itself: ``edit_loss_on: edit``; kedit's
            ``mixed`` draws one of the two per edit, each with probability 1/2)
    L_loc = token mean of KL(p_pre ‖ p_post) on an unrelated input (the case's locality prompt and
            answer; another training case's prompt when it has none)
    L     = C · SSS + (1 − C) · (c_edit L_e + c_loc L_loc)          (C = ``sss_coef``, default 0)

SSS (SPEC C): Σ g², g = ∂L_edit/∂h with h the post-edit model's final hidden states on the EDIT
input (prompt + target, all positions) and L_edit its NLL there; taken with ``create_graph`` so
the meta-gradient follows it. The published EditSSS code never ran this (its algorithm names do
not select the regulariser, SPEC C "Known bugs"); here ``sss_coef > 0`` applies it.

Where kedit departs from the reference, and why:

* the ``edits_per_step`` edits of a step (the reference: 10 single-edit batches accumulated into one
  update) run as ONE padded batch in which row b is edited by its own update (the output hook adds
  α x ũ_bᵀ δ̃_b per row), so the meta-gradient is the mean of the ten single-edit gradients as in the
  reference, at a fraction of the forward calls;
* blocks below the lowest edited layer are run once per input and replayed (their output cannot
  change), and the edit's backward stops at the lowest edited weight (δ is read from the module
  outputs; no weight gradient is ever computed);
* the running statistics are float64 buffers that survive a resume (the reference restarts them);
* early stopping works (EasyEdit never calls its stopper, SPEC F.7 FLAG) and keeps the best checkpoint.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from kedit.edits import LowRankDelta, WeightEdit
from kedit.edits.deltas import compact
from kedit.errors import KeditError
from kedit.methods.base import register
from kedit.methods.hparam_types import check_values
from kedit.methods.hparams import build_hparams
from kedit.methods.losses import kl_per_row, per_request_nll, sss_penalty
from kedit.methods.mend_networks import EditedWeight, MENDEditor
from kedit.methods.targets import TargetBatch, target_batch
from kedit.models.batching import Batch, encode, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.tracing import final_hidden, logits_from_hidden, replay_blocks_below
from kedit.requests import Case, EditRequest

DEFAULTS_YAML = Path(__file__).with_name("mend.yaml")
EDIT_LOSS_ON = ("rephrase", "edit", "mixed")
EDIT_TIME_FIELDS = frozenset({"artifact", "allow_training_overlap"})  # not part of the trained editor's key


@dataclass(frozen=True)
class MENDHparams:
    layers: tuple[int, ...] | None = None  # blocks whose MLP matrices are edited; None: the last 3
    rank: int = 1920
    n_hidden: int = 1
    edit_lr: float = 1e-4  # α at initialisation
    lr: float = 1e-6  # Adam on the editor networks
    lr_lr: float = 1e-4  # Adam on α
    edit_coef: float = 0.1  # c_edit
    loc_coef: float = 1.0  # c_loc
    sss_coef: float = 0.0  # C
    edits_per_step: int = 10  # the reference's accumulation of 10 single-edit batches
    grad_clip: float = 100.0
    edit_loss_on: str = "rephrase"
    val_cases: int = 100  # validation cases read from the validation set
    seed: int = 0
    artifact: str | None = None  # a trained editor's folder; None: the newest matching one in the store
    allow_training_overlap: bool = False

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in check_values(type(self), values, {}).items():
            object.__setattr__(self, name, value)
        if self.edit_loss_on not in EDIT_LOSS_ON:
            raise KeditError(f"edit_loss_on must be one of {', '.join(EDIT_LOSS_ON)}, got {self.edit_loss_on!r}")
        if not 0.0 <= self.sss_coef <= 1.0:
            raise KeditError(f"sss_coef (C of L = C SSS + (1-C) L_orig) must be in [0, 1], got {self.sss_coef!r}")
        if self.layers is not None and list(self.layers) != sorted(set(self.layers)):
            raise KeditError(f"layers must be an ascending list without repeats, got {list(self.layers)}")


_ALIASES = {
    "cedit": lambda value: ("edit_coef", value),
    "cloc": lambda value: ("loc_coef", value),
    "inner_params": lambda value: (None, value),  # kedit finds the MLP weights by structure (layers=)
}


# --------------------------------------------------------------------------- edited weights


def edited_weights(lm: LoadedModel, layers: Sequence[int]) -> list[EditedWeight]:
    """Every weight matrix of the MLP of each layer, in module order (gate, up, down / c_fc, c_proj)."""
    found = []
    for layer in layers:
        lm.anatomy.check_layer(layer)
        mlp_path = lm.anatomy.mlp_out_paths[layer].rsplit(".", 1)[0]
        for child_name, child in lm.module(mlp_path).named_children():
            weight = getattr(child, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or isinstance(child, nn.Embedding):
                continue
            transposed = hasattr(child, "nf") and not isinstance(child, nn.Linear)  # GPT-2 Conv1D
            d_in, d_out = (weight.shape[0], weight.shape[1]) if transposed else (weight.shape[1], weight.shape[0])
            found.append(EditedWeight(f"{mlp_path}.{child_name}.weight", f"{mlp_path}.{child_name}",
                                      int(d_in), int(d_out), transposed))
    if not found:
        raise KeditError(f"no MLP weight matrices found in layers {list(layers)}")
    return found


def resolve_layers(lm: LoadedModel, hparams: MENDHparams) -> tuple[int, ...]:
    if hparams.layers is not None:
        for layer in hparams.layers:
            lm.anatomy.check_layer(layer)
        return tuple(hparams.layers)
    depth = lm.anatomy.num_layers
    return tuple(range(max(0, depth - 3), depth))


# --------------------------------------------------------------------------- inputs


def text_batch(lm: LoadedModel, texts: Sequence[str]) -> Batch:
    return pad_left([encode(lm.tokenizer, text) for text in texts], lm.pad_token_id, lm.device)


def target_nll(lm: LoadedModel, inputs: TargetBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row NLL (B,), final hidden states (B, T, d)) of a forward on ``inputs``."""
    hidden = final_hidden(lm, inputs.batch)
    logits = logits_from_hidden(lm, hidden[:, -inputs.window:])
    return per_request_nll(logits, inputs.labels, inputs.mask), hidden


def all_logits(lm: LoadedModel, batch: Batch) -> torch.Tensor:
    return logits_from_hidden(lm, final_hidden(lm, batch))


# --------------------------------------------------------------------------- factors and updates


@dataclass(frozen=True)
class Factors:
    """Per edited weight: u (B, T, d_in), δ (B, T, d_out), and which (row, token) entries are kept."""

    u: list[torch.Tensor]
    delta: list[torch.Tensor]
    keep: list[torch.Tensor]  # (B, T) bool: u and δ both non-zero


def capture_factors(lm: LoadedModel, weights: Sequence[EditedWeight], inputs: TargetBatch) -> Factors:
    """One forward/backward of L = Σ_rows (row's masked mean NLL) on the current weights.

    δ is read from each module's output (made to require grad in a forward hook), so the backward
    stops at the lowest edited module and no weight gradient is formed. Summing the rows' losses
    makes row b's δ the gradient of its own loss alone (rows do not interact), so one batch gives
    every request's single-edit factors.
    """
    us: dict[int, torch.Tensor] = {}
    deltas: dict[int, torch.Tensor] = {}
    handles = []

    def hook(index: int):
        def forward_hook(_module, args, output):
            us[index] = args[0].detach()
            if not output.requires_grad:
                output.requires_grad_(True)
            def keep(gradient):
                deltas[index] = gradient.detach()
            output.register_hook(keep)
            return output
        return forward_hook

    for index, weight in enumerate(weights):
        handles.append(lm.module(weight.module_path).register_forward_hook(hook(index)))
    try:
        with torch.enable_grad():
            losses, _ = target_nll(lm, inputs)
            losses.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    u = [us[index].float() for index in range(len(weights))]
    delta = [deltas[index].float() for index in range(len(weights))]
    keep = [(a.abs().amax(-1) > 0) & (d.abs().amax(-1) > 0) for a, d in zip(u, delta, strict=True)]
    return Factors(u, delta, keep)


def transformed_factors(editor: MENDEditor, factors: Factors) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per edited weight, (ũ (B, T, d_in), δ̃ (B, T, d_out)) with zeros at the dropped entries.

    The kept rows of every weight go through the editor in ``(row, token)`` order, the order the
    running statistics see them in.
    """
    u_out, delta_out = [], []
    for index in range(len(editor.weights)):
        keep = factors.keep[index]
        u_kept, delta_kept = editor.transform(index, factors.u[index][keep], factors.delta[index][keep])
        u_full = factors.u[index].new_zeros(factors.u[index].shape).masked_scatter(keep[..., None], u_kept)
        delta_full = factors.delta[index].new_zeros(factors.delta[index].shape).masked_scatter(
            keep[..., None], delta_kept)
        u_out.append(u_full)
        delta_out.append(delta_full)
    return u_out, delta_out


def weight_update(weight: EditedWeight, u_rows: torch.Tensor, delta_rows: torch.Tensor, rate: torch.Tensor,
                  dtype: torch.dtype) -> LowRankDelta:
    """α Σ_n δ̃_n ũ_nᵀ over the kept (row, token) entries as factors, in the stored orientation.

    u_rows (N, d_in), delta_rows (N, d_out): ΔW = U Vᵀ with U = (α δ̃)ᵀ (d_out, N) and V = ũᵀ (d_in, N);
    a Conv1D weight, stored (d_in, d_out), gets the factors swapped. Rank ≤ N, the tokens of the edit
    input; forming it dense gives the matrix α (δ̃ᵀ ũ) up to float rounding (α is folded into U).
    """
    update = LowRankDelta((rate * delta_rows).T, u_rows.T, dtype)  # (d_out, d_in) orientation
    return update.transposed() if weight.transposed else update


@contextlib.contextmanager
def per_row_edits(lm: LoadedModel, weights: Sequence[EditedWeight], rates: torch.Tensor,
                  u_tilde: Sequence[torch.Tensor], delta_tilde: Sequence[torch.Tensor]) -> Iterator[None]:
    """Forwards in this block see row b of each batch edited by row b's own update.

    For an input x (B, T, d_in) of edited weight l the module's output gains
    α_l Σ_n (x · ũ_bn) δ̃_bn = α_l x (ΔW_b)ᵀ: the edited weight's output without forming ΔW_b.
    u_tilde[l] (B, N, d_in), delta_tilde[l] (B, N, d_out) keep the graph to the editor and α.
    """
    handles = []
    for index, weight in enumerate(weights):
        def hook(_module, args, output, index=index):
            x = args[0]
            coefficients = torch.einsum("btd,bnd->btn", x.float(), u_tilde[index])  # (B, T, N)
            change = torch.einsum("btn,bne->bte", coefficients, delta_tilde[index])  # (B, T, d_out)
            return output + (rates[index] * change).to(output.dtype)
        handles.append(lm.module(weight.module_path).register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def mend_factors(lm: LoadedModel, editor: MENDEditor, requests: Sequence[EditRequest]) -> dict[str, LowRankDelta]:
    """The deployed edit, factored: α_l Σ_n δ̃_n ũ_nᵀ summed over all tokens of all requests, per
    edited weight, one factor column per kept (row, token) entry (dropped padding entries add nothing)."""
    inputs = target_batch(lm, [(request.text, request.target_new) for request in requests])
    factors = capture_factors(lm, editor.weights, inputs)
    with torch.no_grad():
        u_tilde, delta_tilde = transformed_factors(editor, factors)
        return {
            weight.name: weight_update(weight, u_tilde[index][factors.keep[index]],
                                       delta_tilde[index][factors.keep[index]], editor.edit_lrs[index],
                                       lm.parameter(weight.name).dtype)
            for index, weight in enumerate(editor.weights)
        }


def mend_deltas(lm: LoadedModel, editor: MENDEditor, requests: Sequence[EditRequest]) -> dict[str, torch.Tensor]:
    """The deployed edit as dense tensors (:func:`mend_factors` formed): what applying it adds."""
    return {name: update.dense() for name, update in mend_factors(lm, editor, requests).items()}


# --------------------------------------------------------------------------- meta-training


@dataclass(frozen=True)
class TrainingExample:
    """What one edit of a meta-training step reads."""

    request: EditRequest
    outer_prompt: str  # where L_e is measured (a rephrase, or the edit prompt itself)
    loc_text: str  # the unrelated input of L_loc


def training_example(case: Case, pool: Sequence[Case], rng: random.Random, edit_loss_on: str) -> TrainingExample:
    request = case.request
    outer = request.text
    rephrase = edit_loss_on == "rephrase" or (edit_loss_on == "mixed" and rng.random() < 0.5)
    if rephrase and case.rephrases:
        outer = rng.choice(case.rephrases)
    if case.locality:
        probe = rng.choice(case.locality)
        loc_text = f"{probe.prompt} {probe.answer}"
    else:
        other = pool[rng.randrange(len(pool))]
        while other is case and len(pool) > 1:
            other = pool[rng.randrange(len(pool))]
        loc_text = f"{other.request.text} {other.request.target_new}"
    return TrainingExample(request, outer, loc_text)


@dataclass(frozen=True)
class MetaLosses:
    total: torch.Tensor
    edit: torch.Tensor  # mean over rows of L_e
    loc: torch.Tensor  # mean over rows of L_loc
    sss: torch.Tensor | None
    edit_accuracy: float  # fraction of target tokens argmax-correct on the L_e input after the edit
    prompt_accuracy: float | None = None  # the same on the edit prompt itself (validation only)


def meta_losses(lm: LoadedModel, editor: MENDEditor, examples: Sequence[TrainingExample],
                hparams: MENDHparams, first_layer: int, with_sss: bool = True,
                measure_prompt: bool = False) -> MetaLosses:
    """The meta-training objective for a batch of edits, each row edited by its own update.

    ``with_sss`` False skips the SSS term (validation measures c_edit L_e + c_loc L_loc only);
    ``measure_prompt`` also reads the edited model's token accuracy on the edit prompt itself (what
    reliability measures; L_e reads a rephrase).
    """
    weights = editor.weights
    edit_inputs = target_batch(lm, [(e.request.text, e.request.target_new) for e in examples])
    outer_inputs = target_batch(lm, [(e.outer_prompt, e.request.target_new) for e in examples])
    loc_batch = text_batch(lm, [e.loc_text for e in examples])
    rows = len(examples)
    with replay_blocks_below(lm, first_layer, edit_inputs.batch):
        factors = capture_factors(lm, weights, edit_inputs)
        u_tilde, delta_tilde = transformed_factors(editor, factors)
        sss = None
        if hparams.sss_coef > 0 and with_sss:
            with per_row_edits(lm, weights, editor.edit_lrs, u_tilde, delta_tilde):
                edit_nll, hidden = target_nll(lm, edit_inputs)
            # rows are independent, so Σ over rows of Σ g_b² is Σ_b SSS_b; divided by B: the mean per edit
            sss = sss_penalty(edit_nll.sum(), hidden) / rows
        prompt_accuracy = None
        if measure_prompt:
            with torch.no_grad(), per_row_edits(lm, weights, editor.edit_lrs, u_tilde, delta_tilde):
                hidden = final_hidden(lm, edit_inputs.batch)
                predicted = logits_from_hidden(lm, hidden[:, -edit_inputs.window:]).argmax(-1)
                hits = (predicted == edit_inputs.labels) & edit_inputs.mask
                prompt_accuracy = float(hits.sum() / edit_inputs.mask.sum())
    with replay_blocks_below(lm, first_layer, outer_inputs.batch), \
            per_row_edits(lm, weights, editor.edit_lrs, u_tilde, delta_tilde):
        hidden = final_hidden(lm, outer_inputs.batch)
        logits = logits_from_hidden(lm, hidden[:, -outer_inputs.window:])
        outer_nll = per_request_nll(logits, outer_inputs.labels, outer_inputs.mask)
    with torch.no_grad():
        hits = (logits.argmax(-1) == outer_inputs.labels) & outer_inputs.mask
        accuracy = float(hits.sum() / outer_inputs.mask.sum())
    with replay_blocks_below(lm, first_layer, loc_batch):
        with torch.no_grad():
            pre = all_logits(lm, loc_batch)
        with per_row_edits(lm, weights, editor.edit_lrs, u_tilde, delta_tilde):
            post = all_logits(lm, loc_batch)
    loc = kl_per_row(pre, post, loc_batch.attention_mask.bool())
    edit_loss, loc_loss = outer_nll.mean(), loc.mean()
    original = hparams.edit_coef * edit_loss + hparams.loc_coef * loc_loss
    total = original if sss is None else hparams.sss_coef * sss + (1 - hparams.sss_coef) * original
    return MetaLosses(total, edit_loss, loc_loss, sss, accuracy, prompt_accuracy)


class MENDTrainee:
    """MEND's editor under meta-training, for :func:`kedit.training.loop.run_loop`.

    Step s draws its ``edits_per_step`` cases and their rephrase / locality choices from
    ``random.Random(f"{seed}:{s}")`` only, so a resumed run repeats the uninterrupted one exactly.
    """

    def __init__(self, lm: LoadedModel, editor: MENDEditor, hparams: MENDHparams,
                 cases: Sequence[Case], val_cases: Sequence[Case], first_layer: int) -> None:
        self.lm, self.editor, self.hparams = lm, editor, hparams
        self.cases, self.val_cases = list(cases), list(val_cases)[: hparams.val_cases]
        self.first_layer = first_layer
        self.network_optimizer = torch.optim.Adam(editor.network_parameters(), lr=hparams.lr)
        self.rate_optimizer = torch.optim.Adam([editor.edit_lrs], lr=hparams.lr_lr)
        self.skipped_steps = 0

    def examples(self, step: int) -> list[TrainingExample]:
        rng = random.Random(f"{self.hparams.seed}:{step}")
        chosen = rng.sample(range(len(self.cases)), min(self.hparams.edits_per_step, len(self.cases)))
        return [training_example(self.cases[i], self.cases, rng, self.hparams.edit_loss_on) for i in chosen]

    def step(self, step: int) -> dict[str, float]:
        self.editor.train()
        self.network_optimizer.zero_grad(set_to_none=True)
        self.rate_optimizer.zero_grad(set_to_none=True)
        losses = meta_losses(self.lm, self.editor, self.examples(step), self.hparams, self.first_layer)
        losses.total.backward()
        parameters = [*self.editor.network_parameters(), self.editor.edit_lrs]
        gradients = [p.grad for p in parameters if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in gradients)
        if finite:
            torch.nn.utils.clip_grad_norm_(parameters, self.hparams.grad_clip)
            self.network_optimizer.step()
            self.rate_optimizer.step()
        else:
            self.skipped_steps += 1  # the reference skips a step whose gradient is not finite
        result = {"loss": float(losses.total.detach()), "edit": float(losses.edit.detach()),
                  "loc": float(losses.loc.detach()), "edit_acc": losses.edit_accuracy,
                  "skipped": float(not finite)}
        if losses.sss is not None:
            result["sss"] = float(losses.sss.detach())
        return result

    def validate(self) -> dict[str, float]:
        self.editor.eval()
        size = self.hparams.edits_per_step
        totals = {"edit": 0.0, "loc": 0.0, "edit_acc": 0.0, "prompt_acc": 0.0}
        batches = 0
        rng = random.Random(f"{self.hparams.seed}:validation")  # the same choices at every validation
        examples = [training_example(case, self.val_cases, rng, self.hparams.edit_loss_on) for case in self.val_cases]
        for start in range(0, len(examples), size):
            with torch.no_grad():  # the factor capture enables gradients for itself
                losses = meta_losses(self.lm, self.editor, examples[start:start + size], self.hparams,
                                     self.first_layer, with_sss=False, measure_prompt=True)
            totals["edit"] += float(losses.edit.detach())
            totals["loc"] += float(losses.loc.detach())
            totals["edit_acc"] += losses.edit_accuracy
            totals["prompt_acc"] += losses.prompt_accuracy or 0.0
            batches += 1
        self.editor.train()
        means = {key: value / max(batches, 1) for key, value in totals.items()}
        means["val_loss"] = self.hparams.edit_coef * means["edit"] + self.hparams.loc_coef * means["loc"]
        return means

    def state(self) -> dict[str, Any]:
        return {"editor": self.editor.state_dict(), "networks": self.network_optimizer.state_dict(),
                "rates": self.rate_optimizer.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.editor.load_state_dict(state["editor"])
        self.network_optimizer.load_state_dict(state["networks"])
        self.rate_optimizer.load_state_dict(state["rates"])
        self.skipped_steps = int(state["skipped_steps"])

    def artifact_tensors(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.editor.state_dict().items()}


# --------------------------------------------------------------------------- the method


@register("mend")
class MEND:
    """Meta-trained gradient editor: one forward/backward plus the editor per edit."""

    summary: ClassVar[str] = "Meta-trained editor networks transform the fine-tuning gradient's rank-1 factors (MEND)"
    hparams_class: ClassVar[type] = MENDHparams
    batch_capable: ClassVar[bool] = True
    editor_version: ClassVar[int] = 1

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> MENDHparams:
        from kedit.training.artifact import with_artifact_hparams

        overrides = with_artifact_hparams(self.name, overrides)
        hparams = build_hparams(MENDHparams, lm, DEFAULTS_YAML, user_file, overrides, _ALIASES)
        if lm is not None and hparams.layers is None:
            hparams = MENDHparams(**(asdict(hparams) | {"layers": resolve_layers(lm, hparams)}))
        return hparams

    def training_hparams(self, hparams: MENDHparams) -> dict[str, Any]:
        values = asdict(hparams)
        values["layers"] = list(values["layers"]) if values["layers"] is not None else None
        return {key: value for key, value in values.items() if key not in EDIT_TIME_FIELDS}

    def build_editor(self, lm: LoadedModel, hparams: MENDHparams) -> MENDEditor:
        weights = edited_weights(lm, resolve_layers(lm, hparams))
        return MENDEditor(weights, hparams.rank, hparams.n_hidden, hparams.edit_lr, hparams.seed).to(lm.device)

    def train(self, lm: LoadedModel, data: Any, hparams: MENDHparams, schedule: Any, out_dir: Path) -> Any:
        from kedit.training import train_editor

        editor = self.build_editor(lm, hparams)
        trainee = MENDTrainee(lm, editor, hparams, data.cases, data.val_cases, min(resolve_layers(lm, hparams)))
        artifact, _ = train_editor(lm, method=self.name, editor_version=self.editor_version, trainee=trainee,
                                   training_hparams=self.training_hparams(hparams), data=data,
                                   schedule=schedule, out_dir=out_dir)
        return artifact

    def trained_artifact(self, lm: LoadedModel, hparams: MENDHparams) -> Any:
        from kedit.training import resolve_artifact

        return resolve_artifact(self.name, self.editor_version, lm.fingerprint, lm.source,
                                self.training_hparams(hparams), hparams.artifact)

    def load_editor(self, lm: LoadedModel, hparams: MENDHparams) -> tuple[MENDEditor, Any]:
        """The trained editor for ``lm`` (kept in ``lm.reuse`` per artifact, so it is read once)."""
        artifact = self.trained_artifact(lm, hparams)
        key = f"mend-editor:{artifact.folder.resolve()}:{artifact.manifest.files.get('editor.safetensors')}"
        editor = lm.reuse.get(key)
        if editor is None:
            editor = self.build_editor(lm, hparams)
            editor.load_state_dict(artifact.tensors(lm.device))
            editor.eval()
            lm.reuse[key] = editor
        return editor, artifact

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: MENDHparams) -> WeightEdit:
        requests = list(requests)
        if not requests:
            raise KeditError("mend needs at least one request")
        started = time.perf_counter()
        editor, artifact = self.load_editor(lm, hparams)
        # factored while that is smaller than dense (rank N tokens against a 576×1536 matrix: N < 419)
        deltas = {name: compact(update) for name, update in mend_factors(lm, editor, requests).items()}
        edit = WeightEdit(
            method=self.name,
            requests=tuple(requests),
            hparams=asdict(hparams),
            deltas=deltas,
            base_fingerprint=lm.fingerprint,
            info={
                "editor_digest": artifact.manifest.files.get("editor.safetensors"),
                "edited_weights": [weight.name for weight in editor.weights],
                "requests_in_batch": len(requests),
                "edit_lrs": [float(rate) for rate in editor.edit_lrs.detach()],
            },
        )
        edit.info["update_norms"] = {name: float(delta.float().norm()) for name, delta in edit.deltas.items()}
        edit.info["seconds"] = time.perf_counter() - started
        return edit
