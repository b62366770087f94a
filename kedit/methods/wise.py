"""WISE: a side memory beside one MLP output projection, with a router (Wang et al. 2024, SPEC I).

The main memory is the model's own matrix W0 (the MLP output projection of block ``layer``); the
side memory W' starts as a copy of it and is the only thing an edit trains.

* **edit** (one request, I.3): rows = the prompt + target inside each context template (``"{}"``
  and sampled prefixes), plus one *unrelated* text (an unrelated prompt and its answer, see "pool"
  below). Every training forward replaces the projection's output by y' = W' x (bias kept) in all
  rows. L = L_edit + L_act: L_edit the token NLL of the target in the edit rows; with Δ(row) the
  mean of ‖y'_t − y0_t‖ over the row's span the router reads (edit rows: the prompt's own tokens,
  not the template prefix nor the target; the unrelated row: its tokens) (``activation_score: paper``, the paper's
  ‖A(x)(W' − W)‖; ``code``: ‖act(y'_t) − act(y0_t)‖ with the model's activation, as the reference),
  L_act = mean_e [Δ(unrelated) − Δ(e) + γ]_+ + [Δ(unrelated) − α]_+ + mean_e [β − Δ(e)]_+
  (``act_loss_mean: all``; ``violating`` averages each hinge over its violating rows only, as the
  reference). SGD (``edit_lr``, ``weight_decay``) on the entries of W' in the shard's random mask
  (``mask_ratio`` of them, Bernoulli, drawn per shard from (seed, shard)); after each step W' is
  clamped into [W0 − c, W0 + c] (``norm_constraint``); at most ``n_iter`` steps, stopping early as
  the reference (the loss ≤ 0.02 and changed by ≤ 1e-4). The mean Δ of the edit rows at the last
  forward updates the shard's smallest activation min_a.
* **shards and merging** (I.4, :mod:`kedit.methods.wise_memory`): after every ``save_freq`` edits
  the side memory is stored as a shard and W' starts again from W0 with a new mask; after every
  ``merge_freq`` edits shards are merged with TIES (:mod:`kedit.methods.wise_merge`). WISE-Merge
  (``retrieve: false``, the paper's WISE, the default) merges every stored shard into one side
  memory W_s; WISE-Retrieve (``retrieve: true``, the reference's hparams files) merges the last
  merge_freq/save_freq shards into one retrievable memory.
* **routing** (I.5, :mod:`kedit.methods.wise_routing`): once per query, from its prompt: Δ = the
  mean over the prompt's tokens of the per-token score, against threshold = min_a × ``act_ratio``.
  Merge: W_s's and W''s scores both below the threshold (min_a over every edit) → the main memory,
  else the larger; pending shards (stored, not merged yet, once ``save_freq`` edits were made) are
  seen merged into W_s, as the reference merges them at its first evaluation forward (evaluating
  does not change the edit state here). Retrieve: W' when its score reaches its threshold, then any
  stored memory whose score beats the best so far and its own threshold. The chosen memory answers
  the whole query — prompt, and target tokens when scored — with its matrix at every position,
  exactly as the edit was trained; the main memory answers as the unedited model, bit for bit.
* **pool of unrelated texts**: an EditRequest carries no locality probes, and a case's own
  locality probe is what the benchmark measures (training the router on it would flatter
  locality), so the unrelated text comes from ``loc_pool``: the locality probes of a dataset
  (``NAME:PATH``, e.g. the derived-10k ZsRE training set's NQ questions, the source the reference
  draws from) or of a cases file; by default the 40 written for kedit in ``wise_pool.yaml``. Each
  request takes the entry a hash of (seed, request) picks, independent of the order of edits.

An edit is a ``wise-memory`` edit: it installs a query router on the model (as SERAC's memory
does; :mod:`kedit.models.routing`) whose routed queries are answered by the same model with W' (or
a stored memory) in place of W0 — a shallow copy sharing every other module. The edit holds its
*part* of the memory (the values of W' in the shard's mask — the mask is redrawn from (seed, shard)
and checked —, the shards it stored, the memory it merged) and the digest of the memory it was
computed on. Applied over the router of earlier edits (the latest router of the model, for the
same projection) it replaces that router by one holding their memory plus its part, so a sequence
of edits is one router; revert puts the earlier router back. It is refused on another memory.

Where kedit departs from the reference (docs/METHODS.md): the decision is made once per query from
its prompt, not from every position of prompt + target (teacher-forced scoring would let the
target scored decide which memory answers); the document-start token is left out of every mean
(it is the same in every sequence); the side output keeps the layer's bias (SPEC I.1 FLAG); Δ
averages over real tokens only (the reference includes padding) and its max over tokens for inputs
longer than 100 is not applied; weight decay acts on the masked entries only (the reference's SGD
also shrinks the 80 % outside the mask, towards zero); the edit loss is the plain token mean (the
reference counts one masked position per row); context templates are kedit's shared sampled
templates (5 seed words), not greedy continuations of "I", "You", "Because", "Yes", "Q: ".
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from kedit.edits.base import (
    check_base,
    check_combinable,
    check_files,
    manifest_of,
    read_manifest,
    register_kind,
    requests_of,
    save_edit_files,
)
from kedit.errors import EditStateError, KeditError
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams
from kedit.methods.locate import context_templates
from kedit.methods.losses import masked_nll
from kedit.methods.wise_memory import (
    MemorySchedule,
    SideWeight,
    WISEState,
    advance,
    apply_memory_part,
    memory_part,
    merge_shards,
    shard_mask,
)
from kedit.methods.wise_routing import (
    choose_merge,
    choose_retrieve,
    counted_tokens,
    sequence_means,
    token_scores,
)
from kedit.methods.wrappers import EMPTY_MEMORY, chain_digest
from kedit.models.anatomy import text_config
from kedit.models.batching import encode, pad_left
from kedit.models.loading import LoadedModel
from kedit.models.scoring import DEFAULT_TOKEN_BUDGET, encode_pair
from kedit.models.tracing import (
    capture_inputs,
    final_hidden,
    logits_from_hidden,
    replay_blocks_below,
    run_until,
)
from kedit.requests import EditRequest

METHOD = "wise"
MEMORY_KIND = "wise-memory"
PARTS_FILE = "memory.safetensors"
DEFAULTS_YAML = Path(__file__).with_name("wise.yaml")
BUILTIN_POOL = Path(__file__).with_name("wise_pool.yaml")
SCORES = ("paper", "code")
ACT_LOSS_MEANS = ("all", "violating")
EARLY_STOP_LOSS, EARLY_STOP_CHANGE = 0.02, 1e-4  # the reference's EarlyStopMeter


@dataclass(frozen=True)
class WISEHparams:
    layer: int | None = None  # the block whose MLP output projection gets a side memory; None: layer_fraction
    layer_fraction: float = 0.85  # the reference's Llama-2-7B layer 27 of 32
    mask_ratio: float = 0.2
    edit_lr: float = 1.0
    n_iter: int = 70
    act_margin: tuple[float, float, float] = (5.0, 20.0, 10.0)  # α, β, γ of the activation hinges
    act_ratio: float = 0.88
    norm_constraint: float = 1.0
    weight_decay: float = 1e-5
    save_freq: int = 500
    merge_freq: int = 1000
    density: float = 0.53  # TIES: the fraction of each task vector kept
    merge_weight: float = 1.0  # TIES: shards weigh merge_weight / n each
    retrieve: bool = False  # False: WISE-Merge (the paper's WISE); True: WISE-Retrieve
    activation_score: str = "paper"
    act_loss_mean: str = "all"
    context_template_length_params: tuple[tuple[int, int], ...] = ((5, 5), (10, 5))
    template_seed: int = 0
    loc_pool: str | None = None  # NAME:PATH of a dataset or a cases file; None: wise_pool.yaml
    seed: int = 0  # masks (per shard) and the choice of unrelated text (per request)
    cache_lower_blocks: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio <= 1:
            raise KeditError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.n_iter < 1:
            raise KeditError(f"n_iter must be at least 1, got {self.n_iter}")
        if self.save_freq < 1 or self.merge_freq < 1 or self.merge_freq % self.save_freq:
            raise KeditError(f"merge_freq ({self.merge_freq}) must be a positive multiple of save_freq ({self.save_freq})")
        if not 0 < self.density <= 1:
            raise KeditError(f"density must be in (0, 1], got {self.density}")
        if self.activation_score not in SCORES:
            raise KeditError(f"activation_score {self.activation_score!r} is not one of {SCORES}")
        if self.act_loss_mean not in ACT_LOSS_MEANS:
            raise KeditError(f"act_loss_mean {self.act_loss_mean!r} is not one of {ACT_LOSS_MEANS}")
        if self.act_ratio <= 0:
            raise KeditError(f"act_ratio must be positive, got {self.act_ratio}")

    def schedule(self) -> MemorySchedule:
        return MemorySchedule(self.save_freq, self.merge_freq, self.retrieve, self.density, self.merge_weight)


def _only(key: str, allowed: object) -> Callable[[Any], tuple[None, Any]]:
    """An EasyEdit key kedit accepts only with the value it implements (then ignores it)."""
    def check(value: Any) -> tuple[None, Any]:
        if value != allowed:
            raise KeditError(f"WISE: {key}={value!r} is not implemented (kedit does {allowed!r})")
        return None, value
    return check


ALIASES = {
    "densities": lambda value: ("density", value),
    "weights": lambda value: ("merge_weight", value),
    "merge_alg": _only("merge_alg", "ties"),
    "objective_optimization": _only("objective_optimization", "only_label"),
    "replay": _only("replay", False),
}


def _derive(values: dict[str, Any], lm: LoadedModel | None) -> dict[str, Any]:
    if values.get("layer") is None and lm is not None:
        fraction = values.get("layer_fraction", WISEHparams.layer_fraction)
        values["layer"] = min(lm.anatomy.num_layers - 1, round(fraction * lm.anatomy.num_layers))
    return values


# ------------------------------------------------------------------------------------------- outputs


def side_output(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv1d: bool) -> torch.Tensor:
    """The projection's output with ``weight`` in its storage layout: x Wᵀ + b (Linear) or x W + b (GPT-2 Conv1D)."""
    if not conv1d:
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]) @ weight
    if bias is not None:
        flat = flat + bias
    return flat.reshape(*x.shape[:-1], weight.shape[-1])


def activation_loss(inside: torch.Tensor, outside: torch.Tensor, margins: Sequence[float], mean: str) -> torch.Tensor:
    """L_act (I.3) from the edit rows' scores ``inside`` (n,) and the unrelated row's ``outside`` (scalar)."""
    alpha, beta, gamma = margins
    terms = (outside - inside + gamma, (outside - alpha).reshape(1), beta - inside)
    if mean == "all":
        return sum(term.clamp_min(0).mean() for term in terms)
    return sum(term[term > 0].mean() if bool((term > 0).any()) else term.new_zeros(()) for term in terms)


def activation_function(lm: LoadedModel) -> str:
    """The name of the model's MLP activation (``hidden_act`` / ``activation_function``), for ``activation_score: code``."""
    config = text_config(lm.model)
    name = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    if not name:
        raise KeditError("activation_score=code needs the model's MLP activation (hidden_act), which its config lacks")
    return str(name)


def _act(name: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if name is None:
        return None
    from transformers.activations import ACT2FN

    return ACT2FN[name]


# --------------------------------------------------------------------------------- answering models


class SideProjection(nn.Module):
    """The projection with a side weight (storage layout) and the original's bias (the same parameter)."""

    def __init__(self, original: nn.Module, weight: torch.Tensor, conv1d: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.bias = getattr(original, "bias", None)
        self.conv1d = conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return side_output(x, self.weight, self.bias, self.conv1d)


def with_module(model: nn.Module, path: str, replacement: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` with ``replacement`` at ``path``: only the modules on the path are
    copied (each with its own child table), every other module and parameter is shared."""
    names = path.split(".")
    root = copy.copy(model)
    root._modules = dict(model._modules)
    parent, original = root, model
    for name in names[:-1]:
        child = copy.copy(original._modules[name])
        child._modules = dict(original._modules[name]._modules)
        parent._modules[name] = child
        parent, original = child, original._modules[name]
    parent._modules[names[-1]] = replacement
    return root


@dataclass(frozen=True)
class Settings:
    """What routing needs besides the memory (fixed by the edit that made the memory)."""

    path: str  # the projection
    retrieve: bool
    act_ratio: float
    activation_score: str
    act_fn: str | None
    conv1d: bool
    save_freq: int
    density: float
    merge_weight: float


class WISERouter:
    """The query router of a WISE memory: per prompt, None (the main memory answers: the model as it
    is) or (the model with the chosen side memory in W0's place, the prompt)."""

    def __init__(self, lm: LoadedModel, state: WISEState, digest: str, settings: Settings) -> None:
        self.lm, self.state, self.digest, self.settings = lm, state, digest, settings
        self._memories: tuple[list[torch.Tensor | None], list[float]] | None = None
        self._answering: dict[int, LoadedModel] = {}

    def memories(self) -> tuple[list[torch.Tensor | None], list[float]]:
        """Dense side weights and their thresholds in routing order (built on first use).

        Retrieve: [W' (when written), stored...]. Merge: [W_s, W'] (None where a memory is still W0),
        pending shards seen merged into W_s once ``save_freq`` edits were made.
        """
        if self._memories is None:
            base, s, state = self.lm.module(self.settings.path).weight, self.settings, self.state
            if s.retrieve:
                sides = ([state.current] if state.current is not None else []) + list(state.stored)
                weights: list[torch.Tensor | None] = [side.dense(base) for side in sides]
                thresholds = [side.min_act * s.act_ratio for side in sides]
            else:
                pending = list(state.stored) + ([state.current] if state.current is not None else [])
                if state.count >= s.save_freq and pending:
                    weights = [merge_shards(base, pending, state.merged, s.density, s.merge_weight), None]
                else:
                    weights = [None if state.merged is None else state.merged.dense(base),
                               None if state.current is None else state.current.dense(base)]
                thresholds = [state.min_act_all * s.act_ratio] * 2
            self._memories = (weights, thresholds)
        return self._memories

    def release(self) -> None:
        """Drop the dense copies and answering models (rebuilt on demand): a router kept for revert holds only its state."""
        self._memories, self._answering = None, {}

    def answering(self, index: int) -> LoadedModel:
        """The model with memory ``index`` in W0's place (the model's current prompt contexts apply to it too)."""
        kept = self._answering.get(index)
        if kept is None:
            weights, _ = self.memories()
            side = SideProjection(self.lm.module(self.settings.path), weights[index], self.settings.conv1d)
            kept = dataclasses.replace(self.lm, model=with_module(self.lm.model, self.settings.path, side),
                                       routers=(), overlays=(), reuse={})
        if kept.prompt_contexts is not self.lm.prompt_contexts:
            kept = dataclasses.replace(kept, prompt_contexts=self.lm.prompt_contexts)
        self._answering[index] = kept  # one object per memory: routing groups a call's prompts by the model
        return kept

    @torch.no_grad()
    def scores(self, prompts: Sequence[str]) -> torch.Tensor:
        """(M, N) each memory's activation score of each prompt: the mean over its tokens but the first."""
        weights, _ = self.memories()
        module = self.lm.module(self.settings.path)
        act = _act(self.settings.act_fn)
        encoded = [encode(self.lm.tokenizer, prompt) for prompt in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        result = torch.zeros((len(weights), len(prompts)))
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * len(encoded[order[stop]]) <= DEFAULT_TOKEN_BUDGET:
                stop += 1
            rows = order[start:stop]
            batch = pad_left([encoded[i] for i in rows], self.lm.pad_token_id, self.lm.device)
            with capture_inputs({self.settings.path: module}) as seen:
                run_until(self.lm, batch, module)
            x = seen[self.settings.path]
            main = module(x)
            counted = counted_tokens(batch.attention_mask)
            for m, weight in enumerate(weights):
                if weight is not None:
                    side = side_output(x, weight, getattr(module, "bias", None), self.settings.conv1d)
                    result[m, rows] = sequence_means(token_scores(side, main, self.settings.activation_score, act),
                                                     counted).cpu()
            start = stop
        return result

    def choose(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) the answering memory of each prompt, −1 = the main memory."""
        weights, thresholds = self.memories()
        if all(weight is None for weight in weights):
            return torch.full((len(prompts),), -1)
        means = self.scores(prompts)
        if self.settings.retrieve:
            return choose_retrieve(means, thresholds)
        return choose_merge(means[0], means[1], thresholds[0])

    def __call__(self, prompts: Sequence[str]) -> list[tuple[LoadedModel, str] | None]:
        distinct = list(dict.fromkeys(prompts))
        decided = dict(zip(distinct, self.choose(distinct).tolist(), strict=True))
        return [None if decided[p] < 0 else (self.answering(decided[p]), p) for p in prompts]


def _settings(config: Mapping[str, Any]) -> Settings:
    return Settings(**config["settings"])


# ---------------------------------------------------------------------------------------- edit kind


@dataclass(frozen=True)
class MemoryPart:
    """One edit's part of a memory: ``config`` (the parent's and its own digest, counts, min_a, the
    routing settings) and ``tensors`` (the values it wrote)."""

    config: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor]


def installed_router(lm: LoadedModel, path: str) -> WISERouter | None:
    """The model's latest router when it is a WISE memory of the projection at ``path``."""
    top = lm.routers[-1] if lm.routers else None
    return top if isinstance(top, WISERouter) and top.settings.path == path else None


@register_kind(MEMORY_KIND)
@dataclass(eq=False)
class WISEEdit:
    """A WISE memory edit: ``apply`` puts a router holding the memory after its parts on the model
    (replacing the router of the memory its first part was computed on), ``revert`` puts that back."""

    kind: ClassVar[str]
    stacks: ClassVar[bool] = True
    touches_parameters: ClassVar[bool] = False
    export_refusal: ClassVar[str | None] = (
        "changes no weight: a router answers in-scope prompts with a side memory of one MLP matrix, which a single "
        "checkpoint cannot hold; save the edit (kedit edit --save DIR) and load it with kedit.load_edit")

    method: str
    requests: tuple[EditRequest, ...]
    hparams: Mapping[str, Any]
    parts: tuple[MemoryPart, ...]
    base_fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    _installed: list[tuple[WISERouter | None, WISERouter]] | None = field(default=None, repr=False)

    @property
    def is_applied(self) -> bool:
        return self._installed is not None

    @property
    def path(self) -> str:
        return self.parts[0].config["settings"]["path"]

    def touches(self) -> tuple[str, ...]:
        return (f"{self.path} (side memory)",)

    def changes(self) -> list[tuple[str, str]]:
        last = self.parts[-1].config
        mode = "retrieve" if last["settings"]["retrieve"] else "merge"
        return [(self.path, f"WISE-{mode} side memory after {last['count']} edit(s) "
                            f"({len(self.parts)} part(s) here, act_ratio {last['settings']['act_ratio']})")]

    def content_digest(self) -> str:
        """The chain digest after the last part (it covers every earlier part and the memory they start from)."""
        return str(self.parts[-1].config["digest"])

    def apply(self, lm: LoadedModel) -> None:
        if self.is_applied:
            raise EditStateError(f"this {self.method} edit is already applied")
        check_base(self, lm)
        installed: list[tuple[WISERouter | None, WISERouter]] = []
        try:
            for part in self.parts:
                previous = installed_router(lm, part.config["settings"]["path"])
                state, digest = (previous.state, previous.digest) if previous else (WISEState(), EMPTY_MEMORY)
                if part.config["parent"] != digest:
                    raise EditStateError(
                        f"this WISE edit was computed on a memory of {part.config['parent_count']} edits "
                        f"({str(part.config['parent'])[:12]}), but the model's latest router holds {state.count} "
                        f"({digest[:12]}); apply the edits it was made after first, in order")
                body = {k: v for k, v in part.config.items() if k not in ("parent", "digest")}
                if chain_digest(digest, body, part.tensors) != part.config["digest"]:
                    raise EditStateError("this WISE part does not match its digest (damaged edit)")
                weight = lm.module(part.config["settings"]["path"]).weight
                memory = apply_memory_part(state, part.config, part.tensors, weight.numel(), weight.device)
                router = WISERouter(lm, memory, part.config["digest"], _settings(part.config))
                if previous is not None:
                    lm.pop_router(previous, previous.digest)
                    previous.release()
                lm.push_router(router, router.digest)
                installed.append((previous, router))
        except BaseException:
            self._undo(lm, installed)
            raise
        self._installed = installed

    def _undo(self, lm: LoadedModel, installed: list[tuple[WISERouter | None, WISERouter]]) -> None:
        for previous, router in reversed(installed):
            lm.pop_router(router, router.digest)
            if previous is not None:
                lm.push_router(previous, previous.digest)

    def revert(self, lm: LoadedModel) -> None:
        if self._installed is None:
            raise EditStateError(f"this {self.method} edit is not applied; nothing to revert")
        if not lm.routers or lm.routers[-1] is not self._installed[-1][1]:
            raise EditStateError("this WISE memory is not the model's latest router; revert the later edits first")
        self._undo(lm, self._installed)
        self._installed = None

    def manifest(self) -> dict[str, Any]:
        return manifest_of(self, parts=[dict(part.config) for part in self.parts])

    def save(self, directory: str | Path) -> Path:
        tensors = {f"{number}/{name}": tensor.contiguous()
                   for number, part in enumerate(self.parts) for name, tensor in part.tensors.items()}

        def write(folder: Path) -> None:
            save_file(tensors, str(folder / PARTS_FILE))

        return save_edit_files(directory, self.manifest(), write)

    @classmethod
    def load(cls, directory: str | Path) -> WISEEdit:
        manifest = read_manifest(directory, MEMORY_KIND)
        check_files(directory, manifest)
        tensors = load_file(str(Path(directory) / PARTS_FILE))
        parts = []
        for number, config in enumerate(manifest["parts"]):
            prefix = f"{number}/"
            parts.append(MemoryPart(config, {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}))
        return cls(method=manifest["method"], requests=requests_of(manifest), hparams=manifest["hparams"],
                   parts=tuple(parts), base_fingerprint=manifest["base_fingerprint"], info=manifest.get("info", {}))

    @classmethod
    def combine(cls, edits: Sequence[WISEEdit]) -> WISEEdit:
        """One edit applying every part in order (each on the memory the ones before it leave)."""
        check_combinable(cls, edits)
        return cls(method=edits[0].method, requests=tuple(r for e in edits for r in e.requests),
                   hparams=dict(edits[0].hparams), parts=tuple(p for e in edits for p in e.parts),
                   base_fingerprint=edits[0].base_fingerprint,
                   info={"combined": len(edits), "steps": [dict(e.info) for e in edits]})


def make_part(parent: WISEState, parent_digest: str, new: WISEState, settings: Settings,
              hparams: WISEHparams) -> MemoryPart:
    body, tensors = memory_part(parent, new)
    body = {"parent_count": parent.count, "mask_ratio": hparams.mask_ratio, "seed": hparams.seed,
            "settings": asdict(settings), **body}
    return MemoryPart({"parent": parent_digest, **body, "digest": chain_digest(parent_digest, body, tensors)}, tensors)


# ----------------------------------------------------------------------------------------- the pool


@dataclass(frozen=True)
class UnrelatedPool:
    """Unrelated (prompt, answer) texts; each request takes the one a hash of (seed, request) picks."""

    texts: tuple[tuple[str, str], ...]
    source: str

    def pick(self, request: EditRequest, seed: int) -> tuple[str, str]:
        key = hashlib.sha256(f"{seed}|{request.text}|{request.target_new}".encode()).hexdigest()
        return self.texts[int(key[:15], 16) % len(self.texts)]


def load_pool(spec: str | None) -> UnrelatedPool:
    """The locality probes of ``spec`` (``NAME:PATH`` of a dataset, or a cases file), or the built-in pool."""
    if spec is None:
        entries = yaml.safe_load(BUILTIN_POOL.read_text(encoding="utf-8"))
        return UnrelatedPool(tuple((e["prompt"], e["answer"]) for e in entries), BUILTIN_POOL.name)
    from kedit.data.registry import DATASETS, load_dataset
    from kedit.requests import load_cases

    name, _, path = spec.partition(":")
    known = path and name.strip().lower().replace("_", "-") in (*DATASETS, "auto")
    cases = load_dataset(name, path).cases if known else load_cases(spec)
    texts = tuple(dict.fromkeys((probe.prompt, probe.answer) for case in cases for probe in case.locality))
    if not texts:
        raise KeditError(f"loc_pool {spec}: its cases have no locality probes to serve as unrelated texts")
    return UnrelatedPool(texts, spec)


# ------------------------------------------------------------------------------------------- editing


@dataclass
class _SideTraining:
    """Forward hook on the projection while an edit trains: every row gets y' = W' x (+ b), W' = W0
    with ``values`` at ``indices``; the main and side outputs of the last forward are kept."""

    base: torch.Tensor  # W0, detached, storage layout
    indices: torch.Tensor
    values: nn.Parameter
    conv1d: bool
    main: torch.Tensor | None = field(default=None, init=False)
    side: torch.Tensor | None = field(default=None, init=False)

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        weight = self.base.reshape(-1).index_put((self.indices,), self.values).reshape(self.base.shape)
        self.main = output.detach()
        self.side = side_output(inputs[0], weight, getattr(module, "bias", None), self.conv1d)
        return self.side


@dataclass(frozen=True)
class EditRows:
    """The rows of one edit: the templated prompt + target rows, then the unrelated text; ``counted``
    marks the positions each row's activation score averages (what the router reads at a query)."""

    batch: Any  # kedit.models.batching.Batch, left-padded
    labels: torch.Tensor  # (n_edit, W) right-aligned target ids
    mask: torch.Tensor  # (n_edit, W) bool
    counted: torch.Tensor  # (B, T) bool
    n_edit: int


def prompt_start(tokenizer: Any, template: str, text: str) -> int:
    """The index, among the tokens of ``template.format(text)``, of the first token of ``text`` itself
    (after the template's prefix and any start token), from the tokenizer's character offsets."""
    prefix = len(template[: template.index("{}")])
    offsets = tokenizer(template.format(text), add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    return next(i for i, (start, end) in enumerate(offsets) if end > max(prefix, start))


def edit_rows(lm: LoadedModel, request: EditRequest, templates: Sequence[str], unrelated: tuple[str, str]) -> EditRows:
    """Edit rows count the prompt's own tokens — not the template's prefix, the start token, the
    row's first position nor the target —, the span the router reads when the prompt is a query; the
    unrelated row counts every token but the first."""
    encoded = [encode_pair(lm.tokenizer, template.format(request.text), request.target_new) for template in templates]
    width = max(len(target) for _, target in encoded)
    labels = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, (_, target) in enumerate(encoded):
        labels[row, width - len(target):] = torch.tensor(target)
        mask[row, width - len(target):] = True
    rows = [prompt + target[:-1] for prompt, target in encoded] + [encode(lm.tokenizer, " ".join(unrelated))]
    batch = pad_left(rows, lm.pad_token_id, lm.device)
    counted = counted_tokens(batch.attention_mask)
    for row, (template, (prompt, _)) in enumerate(zip(templates, encoded, strict=True)):
        start = batch.width - len(rows[row])  # left padding
        counted[row] = False
        # position 0 never counts, as at routing (counted_tokens): with no template prefix and no
        # start token it is the prompt's own first token
        first = max(1, prompt_start(lm.tokenizer, template, request.text))
        counted[row, start + first: start + len(prompt)] = True
    return EditRows(batch, labels.to(lm.device), mask.to(lm.device), counted, len(encoded))


@dataclass(frozen=True)
class SideEdit:
    written: SideWeight  # W' after the edit (its min_act not yet updated)
    act: float  # mean activation score of the edit rows at the last forward
    losses: tuple[float, ...]
    outside: float  # the unrelated row's score at the last forward


def train_side(lm: LoadedModel, layer: int, projection: nn.Module, start: SideWeight, rows: EditRows,
               hparams: WISEHparams, conv1d: bool, act: Callable[[torch.Tensor], torch.Tensor] | None) -> SideEdit:
    """SGD on W' in the shard's mask (I.3), the projection answered by W' in every row."""
    base = projection.weight.detach()
    flat_base = base.reshape(-1)[start.indices]
    low, high = flat_base - hparams.norm_constraint, flat_base + hparams.norm_constraint
    values = nn.Parameter(start.values.detach().clone())
    optimizer = torch.optim.SGD([values], lr=hparams.edit_lr, weight_decay=hparams.weight_decay)
    hook = _SideTraining(base, start.indices, values, conv1d)
    counted = rows.counted  # (B, T)
    width = rows.labels.shape[1]
    losses: list[float] = []
    act_value, outside = math.nan, math.nan
    with contextlib.ExitStack() as stack:
        handle = projection.register_forward_hook(hook)
        stack.callback(handle.remove)
        if hparams.cache_lower_blocks:  # blocks below cannot change: only the projection at `layer` does
            stack.enter_context(replay_blocks_below(lm, layer, rows.batch))
        stack.enter_context(torch.enable_grad())
        for step in range(hparams.n_iter):
            hidden = final_hidden(lm, rows.batch)  # (B, T, d)
            logits = logits_from_hidden(lm, hidden[: rows.n_edit, -width:])
            edit_loss = masked_nll(logits, rows.labels, rows.mask)
            per_row = sequence_means(token_scores(hook.side, hook.main, hparams.activation_score, act), counted)
            loss = edit_loss + activation_loss(per_row[: rows.n_edit], per_row[rows.n_edit], hparams.act_margin,
                                               hparams.act_loss_mean)
            stop = len(losses) >= 2 and abs(losses[-1] - losses[-2]) <= EARLY_STOP_CHANGE and losses[-1] <= EARLY_STOP_LOSS
            if stop or step == hparams.n_iter - 1:
                act_value, outside = per_row[: rows.n_edit].mean().item(), per_row[rows.n_edit].item()
            if stop:
                break
            (gradient,) = torch.autograd.grad(loss, [values])
            values.grad = gradient
            optimizer.step()
            values.grad = None
            with torch.no_grad():
                values.copy_(torch.maximum(torch.minimum(values, high), low))
            losses.append(loss.item())
    return SideEdit(SideWeight(start.indices, values.detach().clone(), start.min_act, start.shard), act_value,
                    tuple(losses), outside)


@register(METHOD)
class WISE:
    summary: ClassVar[str] = ("Side memory beside one MLP output matrix, edited in random masked shards merged by "
                              "TIES; an activation router sends in-scope queries to it; no weight changes "
                              "(Wang et al. 2024)")
    hparams_class: ClassVar[type] = WISEHparams
    batch_capable: ClassVar[bool] = False

    def __init__(self) -> None:
        self._pools: dict[str | None, UnrelatedPool] = {}  # loaded once per method object

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> WISEHparams:
        hparams = build_hparams(WISEHparams, lm, DEFAULTS_YAML, user_file, overrides, ALIASES, _derive)
        if lm is not None:
            lm.anatomy.check_layer(hparams.layer)
        return hparams

    def pool(self, spec: str | None) -> UnrelatedPool:
        if spec not in self._pools:
            self._pools[spec] = load_pool(spec)
        return self._pools[spec]

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: WISEHparams) -> WISEEdit:
        """Requests in order (one per training run, as the reference), each on the memory the earlier
        ones left (the model's current WISE router for this projection first)."""
        if not requests:
            raise KeditError("WISE needs at least one request")
        layer = hparams.layer
        lm.anatomy.check_layer(layer)
        path = lm.anatomy.mlp_out_paths[layer]
        previous = installed_router(lm, path)
        parent = previous.state if previous else WISEState()
        parent_digest = previous.digest if previous else EMPTY_MEMORY
        settings = Settings(path, hparams.retrieve, hparams.act_ratio, hparams.activation_score,
                            activation_function(lm) if hparams.activation_score == "code" else None,
                            lm.anatomy.transposed, hparams.save_freq, hparams.density, hparams.merge_weight)
        templates = context_templates(lm, hparams.context_template_length_params, hparams.template_seed)
        pool, act = self.pool(hparams.loc_pool), _act(settings.act_fn)
        projection = lm.module(path)
        base = projection.weight.detach()
        state, details = parent, []
        for request in requests:
            started = time.perf_counter()
            shard = state.count // hparams.save_freq
            if state.current is not None and state.current.shard == shard:
                start = state.current
            else:
                indices = shard_mask(base.numel(), hparams.mask_ratio, hparams.seed, shard).to(base.device)
                start = SideWeight(indices, base.reshape(-1)[indices].clone(), math.inf, shard)
            unrelated = pool.pick(request, hparams.seed)
            edit = train_side(lm, layer, projection, start, edit_rows(lm, request, templates, unrelated), hparams,
                              lm.anatomy.transposed, act)
            state = advance(state, edit.written, edit.act, base, hparams.schedule())
            details.append({"subject": request.subject, "shard": shard, "steps": len(edit.losses),
                            "final_loss": edit.losses[-1] if edit.losses else None, "act": edit.act,
                            "unrelated_act": edit.outside, "unrelated": unrelated[0],
                            "seconds": time.perf_counter() - started})
        return WISEEdit(method=METHOD, requests=tuple(requests), hparams=asdict(hparams),
                        parts=(make_part(parent, parent_digest, state, settings, hparams),),
                        base_fingerprint=lm.fingerprint,
                        info={"layer": layer, "path": path, "edits_in_memory": state.count, "pool": pool.source,
                              "requests": details})
