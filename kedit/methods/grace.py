"""GRACE: a discrete key-value codebook wrapped around one layer (Hartvigsen et al. 2023, SPEC H).

The adaptor sits on the MLP output projection of one block (``layer``). Keys are that module's
INPUT at a token, values replace its OUTPUT there, and each key has a deferral radius ε:

* **edit** (one request, H.3): q = the module's input at the request's last prompt token. With
  d = ‖K_j* − q‖ to the nearest key j*:
  empty codebook or d > ε_init + ε_j* → ADD (q, v_new, ε_init);
  otherwise a different label → SPLIT: ADD (q, v_new) and set both radii to d/2 (the balls no
  longer overlap) — except at d = 0 (the same prompt edited again), where the entry's value and
  label are replaced and its radius kept (kedit's choice: radii of 0 would answer no recomputed
  key, and in the reference's form, ε_j* = d/2 − 1e-5, neither entry would answer); the same label → EXPAND: ε_j* = d when d > ε_j* (``eps_expand: coverage``; with
  ``moving_average`` the key also moves to the mean of K_j* and q), and the entry's value is
  trained again (the expanded radius gets a relative slack of 1e-4, so q is not left on the boundary,
  where recomputing it could land it outside). The value of the entry that now holds q (v_new: U[0, 1)^d, ``val_init: cold``,
  or the layer's own output at q, ``warm``) is trained with Adam (``edit_lr``) for ``n_iter`` steps
  on the token cross-entropy of the target after the prompt, the adaptor in place; nothing else
  is trained. Labels are compared as target strings (the reference compares the means of the two
  label tensors, SPEC H.3 FLAG).
* **inference** (H.4): every token position is a query. Its nearest key j (ties: the newest
  entry) replaces the output at that position by V_j when ‖K_j − x‖ ≤ ε_j; every other position
  keeps the module's own output, bit for bit.

Which positions are queried is kedit's choice, named in docs/METHODS.md: GRACE's code reads the
query at one position of the whole input (``key_id``, -1 = the last token; EasyEdit's evaluation
reuses the last edit's prompt length, SPEC H.4 FLAG) and its generation loop queries the newest
token at each step. Querying every position independently is that generation rule applied to
every prefix: the output at position t depends only on tokens ≤ t, so teacher-forced scoring of
prompt + target, prefix-tree packing (where one column serves many sequences) and left-padded
batches give each sequence exactly what generating it would. At the last prompt token the query
is the edit's key, as in the paper; target positions are queried too (their keys are other
tokens' inputs, outside the ball unless the codebook says otherwise). Training uses the same rule.

Edits are ``module-swap`` edits: the recipe is this edit's *part* of the codebook (the entries it
added, the entries of the earlier codebook it changed) and the digest of the codebook it was
computed on. Applied over the adaptor of earlier edits, the new adaptor takes their codebook
(refusing one with another digest), adds its part and wraps the same original module, so 1,000
sequential edits are one adaptor with one codebook; reverting puts the previous adaptor back.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kedit.edits import ModuleSwap, ModuleSwapEdit, register_swap_module
from kedit.errors import EditStateError, KeditError
from kedit.methods.base import register
from kedit.methods.hparams import build_hparams
from kedit.methods.locate import _CacheSnapshot as CacheSnapshot  # the v* loop's prefix-cache restore
from kedit.methods.wrappers import EMPTY_MEMORY, TransparentWrapper, chain_digest, original_of, swapped
from kedit.models.batching import pad_left
from kedit.models.loading import LoadedModel
from kedit.models.scoring import encode_pair
from kedit.models.tracing import (
    capture_inputs,
    final_hidden,
    kv_cache_keyword,
    logits_from_hidden,
    replay_blocks_below,
    returned_kv_cache,
    run_until,
)
from kedit.requests import EditRequest

METHOD = "grace"
SWAP_NAME = "grace-codebook"
DEFAULTS_YAML = Path(__file__).with_name("grace.yaml")
VALUE_INITS = ("cold", "warm")
BOUNDARY_SLACK = 1e-4  # relative: an expanded radius is d (1 + 1e-4), so the query that set it stays inside
EXPANSIONS = ("coverage", "moving_average")


@dataclass(frozen=True)
class GRACEHparams:
    layer: int | None = None  # the block whose MLP output projection is wrapped; None: layer_fraction
    layer_fraction: float = 0.85  # EasyEdit's Llama-2-7B layer 27 of 32
    eps_init: float = 1.0  # ε of a new key (paper and reference: 1.0, on T5's key scale)
    edit_lr: float = 1.0
    n_iter: int = 100  # GRACE's config; EasyEdit uses 50 for the 7B models
    val_init: str = "cold"
    eps_expand: str = "coverage"
    seed: int = 0  # cold values: U[0, 1) drawn from (seed, request)
    cache_prefix: bool = True  # prompt tokens before the last one come from a KV cache in the training steps
    cache_lower_blocks: bool = True  # blocks below the layer run once per edit, not once per step

    def __post_init__(self) -> None:
        if self.val_init not in VALUE_INITS:
            raise KeditError(f"val_init {self.val_init!r} is not one of {VALUE_INITS}")
        if self.eps_expand not in EXPANSIONS:
            raise KeditError(f"eps_expand {self.eps_expand!r} is not one of {EXPANSIONS}")
        if not self.eps_init > 0:
            raise KeditError(f"eps_init must be positive, got {self.eps_init}")


ALIASES = {"eps": lambda value: ("eps_init", value)}


def _derive(values: dict[str, Any], lm: LoadedModel | None) -> dict[str, Any]:
    if values.get("layer") is None and lm is not None:
        fraction = values.get("layer_fraction", GRACEHparams.layer_fraction)
        values["layer"] = min(lm.anatomy.num_layers - 1, round(fraction * lm.anatomy.num_layers))
    return values


# ------------------------------------------------------------------------------------------ codebook


@dataclass(frozen=True)
class Entry:
    """One codebook entry. Entries are never changed in place: an edit that changes one makes a new
    entry, so the codebooks of earlier edits (kept for revert) share the entries they have in common."""

    key: torch.Tensor  # (d_key,) float32, the module input the entry answers
    value: torch.Tensor  # (d_value,) in the module's dtype, the output it puts there
    radius: float
    label: str  # the target text the value was trained for


@dataclass(frozen=True)
class CodebookUpdate:
    entries: tuple[Entry, ...]  # the codebook after the update (the trained entry still has its old value)
    trained: int  # index of the entry whose value the edit trains
    action: str  # "add" | "split" | "replace" | "expand" | "inside"
    distance: float | None  # to the nearest key before the update (None: the codebook was empty)


def nearest(keys: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query (N, d) the nearest of ``keys`` (n, d) — ties go to the newest (highest index) —
    and its exact Euclidean distance: (index (N,) long, distance (N,) float32).

    ``cdist`` finds the nearest through a matrix product (fast, slightly inexact); the distance to
    the chosen key is then computed directly, so a radius test never depends on that rounding.
    """
    keys, queries = keys.float(), queries.float()
    flipped = torch.cdist(queries, keys.flip(0))  # (N, n)
    index = keys.shape[0] - 1 - flipped.argmin(dim=1)
    return index, (queries - keys[index]).norm(dim=-1)


def update_codebook(entries: Sequence[Entry], query: torch.Tensor, label: str, initial_value: torch.Tensor,
                    eps_init: float, eps_expand: str = "coverage") -> CodebookUpdate:
    """The codebook after one edit's key update (SPEC H.3), before its value is trained."""
    query = query.detach().float()
    fresh = Entry(query, initial_value.detach(), float(eps_init), label)
    if not entries:
        return CodebookUpdate((fresh,), 0, "add", None)
    keys = torch.stack([entry.key for entry in entries])
    index_tensor, distance_tensor = nearest(keys, query[None])
    j, d = int(index_tensor[0]), float(distance_tensor[0])
    near = entries[j]
    if d > eps_init + near.radius:  # the two balls could not overlap
        return CodebookUpdate((*entries, fresh), len(entries), "add", d)
    if label != near.label and d == 0.0:  # the same key edited again: halving would leave two balls of radius 0
        updated = list(entries)
        updated[j] = replace(fresh, radius=near.radius)
        return CodebookUpdate(tuple(updated), j, "replace", d)
    if label != near.label:  # conflicting labels: both radii halved to the gap, so neither ball reaches the other key
        updated = list(entries)
        updated[j] = replace(near, radius=d / 2)
        return CodebookUpdate((*updated, replace(fresh, radius=d / 2)), len(entries), "split", d)
    if d <= near.radius:
        return CodebookUpdate(tuple(entries), j, "inside", d)
    key = 0.5 * near.key + 0.5 * query if eps_expand == "moving_average" else near.key
    updated = list(entries)
    # ε = d puts q on the boundary, where recomputing the key (another batch layout, a KV cache) can
    # land it just outside; a relative slack of BOUNDARY_SLACK keeps it inside
    updated[j] = replace(near, key=key, radius=d * (1 + BOUNDARY_SLACK))
    return CodebookUpdate(tuple(updated), j, "expand", d)


# ------------------------------------------------------------------------------------------- adaptor


def _float_list(tensor: torch.Tensor) -> list[float]:
    return [float(x) for x in tensor.tolist()]


def codebook_part(parent: Sequence[Entry], entries: Sequence[Entry]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The (config, tensors) of what ``entries`` adds to and changes in ``parent`` (a prefix of it)."""
    added = list(entries[len(parent):])
    changed = [j for j in range(len(parent)) if entries[j] is not parent[j]]
    d_key = int(entries[0].key.numel()) if entries else 0
    d_value = int(entries[0].value.numel()) if entries else 0

    def rows(items: list[Entry], field: str, width: int) -> torch.Tensor:
        if not items:
            return torch.zeros((0, width))
        return torch.stack([getattr(item, field).detach().cpu() for item in items]).contiguous()

    config = {
        "parent_size": len(parent),
        "added_radii": [entry.radius for entry in added], "added_labels": [entry.label for entry in added],
        "changed": changed, "changed_radii": [entries[j].radius for j in changed],
        "changed_labels": [entries[j].label for j in changed],
    }
    state = {"added_keys": rows(added, "key", d_key), "added_values": rows(added, "value", d_value),
             "changed_keys": rows([entries[j] for j in changed], "key", d_key),
             "changed_values": rows([entries[j] for j in changed], "value", d_value)}
    return config, state


def apply_part(parent: Sequence[Entry], config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
               device: torch.device, dtype: torch.dtype) -> tuple[Entry, ...]:
    """``parent`` with a part from :func:`codebook_part` added (keys float32 and values ``dtype`` on ``device``)."""
    if int(config["parent_size"]) != len(parent):
        raise EditStateError(f"this GRACE part was made for a codebook of {config['parent_size']} entries, "
                             f"the layer holds {len(parent)}")
    entries = list(parent)
    for row, j in enumerate(config["changed"]):
        entries[j] = replace(entries[j], key=state["changed_keys"][row].to(device, torch.float32),
                             value=state["changed_values"][row].to(device, dtype),
                             radius=float(config["changed_radii"][row]), label=str(config["changed_labels"][row]))
    for row, (radius, label) in enumerate(zip(config["added_radii"], config["added_labels"], strict=True)):
        entries.append(Entry(state["added_keys"][row].to(device, torch.float32),
                             state["added_values"][row].to(device, dtype), float(radius), str(label)))
    return tuple(entries)


@register_swap_module(SWAP_NAME)
class GRACEAdaptor(TransparentWrapper):
    """The wrapped module with a codebook (:class:`Entry` tuple) whose digest is ``digest``.

    ``part`` is the (config, tensors) recipe this adaptor was built from (what ``swap_state`` saves).
    ``training`` = (index, parameter) puts a trainable value in that entry's place (compute only).
    """

    def __init__(self, base: nn.Module, entries: tuple[Entry, ...], digest: str,
                 part: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None,
                 training: tuple[int, torch.Tensor] | None = None) -> None:
        super().__init__(base)
        self.entries = entries
        self.digest = digest
        self.part = part
        self.training_value = training
        self._stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys (n, d_key), values (n, d_value), radii (n,) float64), built on first use."""
        if self._stacked is None:
            self._stacked = (torch.stack([e.key for e in self.entries]), torch.stack([e.value for e in self.entries]),
                             torch.tensor([e.radius for e in self.entries], dtype=torch.float64))
        return self._stacked

    def release(self) -> None:
        """Drop the stacked copy (rebuilt on demand): a superseded adaptor kept for revert holds only its entries."""
        self._stacked = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.base(x)  # (..., d_value): the module's own output, kept wherever no key answers
        if not self.entries:
            return output
        keys, values, radii = self.stacked()
        flat_x = x.reshape(-1, x.shape[-1])
        index, distance = nearest(keys, flat_x)
        hit = distance.double() <= radii.to(distance.device)[index]
        if not bool(hit.any()):
            return output
        if self.training_value is not None:
            trained, parameter = self.training_value
            values = values.index_put((torch.tensor([trained], device=values.device),), parameter[None].to(values.dtype))
        flat = output.reshape(-1, output.shape[-1])
        replaced = torch.where(hit[:, None], values[index].to(flat.dtype), flat)
        return replaced.reshape(output.shape)

    def swap_config(self) -> dict[str, Any]:
        if self.part is None:
            raise KeditError("this GRACE adaptor was built for training and has no recipe")
        return dict(self.part[0])

    def swap_state(self) -> dict[str, torch.Tensor]:
        if self.part is None:
            raise KeditError("this GRACE adaptor was built for training and has no recipe")
        return dict(self.part[1])

    @classmethod
    def rebuild(cls, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], replaced: nn.Module) -> GRACEAdaptor:
        """The adaptor of ``replaced``'s codebook plus this part (``replaced``: the original module, or
        the adaptor of the edits this one was computed after)."""
        parent = replaced.entries if isinstance(replaced, GRACEAdaptor) else ()
        parent_digest = replaced.digest if isinstance(replaced, GRACEAdaptor) else EMPTY_MEMORY
        if config["parent"] != parent_digest:
            raise EditStateError(
                f"this GRACE edit was computed on a codebook of {config['parent_size']} entries "
                f"({str(config['parent'])[:12]}), but the layer holds {len(parent)} ({parent_digest[:12]}); "
                "apply the edits it was made after first, in order")
        body = {k: v for k, v in config.items() if k not in ("parent", "digest")}
        if chain_digest(parent_digest, body, state) != config["digest"]:
            raise EditStateError("this GRACE part does not match its digest (damaged edit)")
        base = original_of(replaced)
        weight = next(base.parameters())
        entries = apply_part(parent, config, state, weight.device, weight.dtype)
        if isinstance(replaced, GRACEAdaptor):
            replaced.release()
        return cls(base, entries, config["digest"], (dict(config), dict(state)))


def _recipe(path: str, parent: Sequence[Entry], parent_digest: str, entries: Sequence[Entry]) -> ModuleSwap:
    body, state = codebook_part(parent, entries)
    config = {"parent": parent_digest, **body, "digest": chain_digest(parent_digest, body, state)}
    return ModuleSwap(path, SWAP_NAME, config, state)


# ------------------------------------------------------------------------------------------- editing


@dataclass(frozen=True)
class ValueTraining:
    value: torch.Tensor  # (d_value,) the trained value
    losses: tuple[float, ...]  # token cross-entropy of the target at each step, before its update


def prompt_inputs(lm: LoadedModel, path: str, prompt_ids: Sequence[int]) -> torch.Tensor:
    """(T, d_key) the inputs of the module at ``path`` at every prompt token (the forward stops there);
    the last row is the edit's key q."""
    module = lm.module(path)
    batch = pad_left([list(prompt_ids)], lm.pad_token_id, lm.device)
    with torch.no_grad(), capture_inputs({path: module}) as seen:
        run_until(lm, batch, module)
    return seen[path][0].detach().float()


def initial_value(base: nn.Module, query: torch.Tensor, request: EditRequest, hparams: GRACEHparams) -> torch.Tensor:
    """v_new: U[0, 1)^d drawn from (seed, request) (``cold``, the paper), or the module's own output at q (``warm``)."""
    weight = next(base.parameters())
    with torch.no_grad():
        own = base(query[None].to(weight.dtype))[0]  # (d_value,)
    if hparams.val_init == "warm":
        return own.detach().clone()
    text = f"{hparams.seed}|{request.text}|{request.target_new}"
    generator = torch.Generator().manual_seed(int(hashlib.sha256(text.encode()).hexdigest()[:15], 16))
    return torch.rand(own.shape, generator=generator, dtype=torch.float32).to(weight.device, own.dtype)


def _step_inputs(lm: LoadedModel, prompt_ids: Sequence[int], target_ids: Sequence[int],
                 prefix_cached: bool) -> tuple[dict[str, Any], Callable[[], None]]:
    """The keyword inputs of one training forward and what to call before each one.

    With ``prefix_cached`` the prompt tokens before the last one run once into a KV cache (their
    states cannot depend on the trained value, which is read at the last prompt token and after);
    each step then recomputes only the last prompt token and the target (restoring the cache first).
    """
    sequence = list(prompt_ids) + list(target_ids[:-1])
    if not prefix_cached:
        batch = pad_left([sequence], lm.pad_token_id, lm.device)
        return batch.model_inputs() | {"use_cache": False}, lambda: None
    start = len(prompt_ids) - 1
    with torch.no_grad():
        output = lm.model.base_model(input_ids=torch.tensor([sequence[:start]], device=lm.device),
                                     position_ids=torch.arange(start, device=lm.device)[None], use_cache=True)
    snapshot = CacheSnapshot(returned_kv_cache(output))
    kwargs = {"input_ids": torch.tensor([sequence[start:]], device=lm.device),
              "attention_mask": torch.ones((1, len(sequence)), dtype=torch.long, device=lm.device),
              "position_ids": torch.arange(start, len(sequence), device=lm.device)[None],
              kv_cache_keyword(lm): snapshot.cache, "use_cache": True}
    return kwargs, snapshot.restore


def _prefix_reaches(entries: tuple[Entry, ...], trained: int, inputs: torch.Tensor) -> bool:
    """Whether a prompt token before the last (rows of ``inputs`` but the last) is answered by entry ``trained``."""
    if inputs.shape[0] < 2:
        return False
    keys = torch.stack([entry.key for entry in entries])
    index, distance = nearest(keys, inputs[:-1])
    return bool(((index == trained) & (distance.double() <= entries[trained].radius)).any())


def train_value(lm: LoadedModel, path: str, layer: int, base: nn.Module, entries: tuple[Entry, ...], trained: int,
                prompt_ids: Sequence[int], target_ids: Sequence[int], hparams: GRACEHparams,
                inputs: torch.Tensor | None = None) -> ValueTraining:
    """Adam on entry ``trained``'s value alone, the codebook ``entries`` in place at ``path`` (H.3):
    ``n_iter`` steps of the target's token cross-entropy after the prompt (teacher forced).

    ``inputs`` (T, d_key), the module's inputs at the prompt tokens, lets the prompt before its last
    token come from a KV cache when none of those tokens is answered by the trained entry.
    """
    parameter = nn.Parameter(entries[trained].value.detach().clone())
    adaptor = GRACEAdaptor(base, entries, "training", training=(trained, parameter))
    labels = torch.tensor(list(target_ids), device=lm.device)
    optimizer = torch.optim.Adam([parameter], lr=hparams.edit_lr)
    cached = (hparams.cache_prefix and len(prompt_ids) > 1 and inputs is not None
              and not _prefix_reaches(entries, trained, inputs))
    losses = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(swapped(lm, path, adaptor))
        kwargs, restore = _step_inputs(lm, prompt_ids, target_ids, cached)
        if hparams.cache_lower_blocks:  # their outputs cannot change: only the value at `layer` is trained
            stack.enter_context(replay_blocks_below(lm, layer, kwargs, before=restore))
        stack.enter_context(torch.enable_grad())
        for _ in range(hparams.n_iter):
            restore()
            hidden = final_hidden(lm, kwargs)[0, -len(target_ids):]  # (n_target, d_model)
            loss = F.cross_entropy(logits_from_hidden(lm, hidden).float(), labels)
            gradient = torch.autograd.grad(loss, [parameter], allow_unused=True)[0] if loss.requires_grad else None
            if gradient is None:
                raise KeditError(f"GRACE at {path}: the edit's own key does not reach entry {trained} "
                                 "(nothing was replaced while training); this is a bug, please report it")
            parameter.grad = gradient
            optimizer.step()
            parameter.grad = None
            losses.append(loss.item())
    return ValueTraining(parameter.detach().clone(), tuple(losses))


@register(METHOD)
class GRACE:
    summary: ClassVar[str] = ("Codebook adaptor at one layer: keys with deferral radii, learned values replace the "
                              "layer's output inside a radius; no weight changes (Hartvigsen et al. 2023)")
    hparams_class: ClassVar[type] = GRACEHparams
    batch_capable: ClassVar[bool] = False

    def default_hparams(self, lm: LoadedModel | None, user_file: str | Path | None = None,
                        overrides: Mapping[str, Any] | None = None) -> GRACEHparams:
        hparams = build_hparams(GRACEHparams, lm, DEFAULTS_YAML, user_file, overrides, ALIASES, _derive)
        if lm is not None:
            lm.anatomy.check_layer(hparams.layer)
        return hparams

    def compute(self, lm: LoadedModel, requests: Sequence[EditRequest], hparams: GRACEHparams) -> ModuleSwapEdit:
        """Requests in order, each on the codebook the earlier ones left (the layer's current one first)."""
        if not requests:
            raise KeditError("GRACE needs at least one request")
        layer = hparams.layer
        lm.anatomy.check_layer(layer)
        path = lm.anatomy.mlp_out_paths[layer]
        current = lm.module(path)
        base = original_of(current)
        parent = current.entries if isinstance(current, GRACEAdaptor) else ()
        parent_digest = current.digest if isinstance(current, GRACEAdaptor) else EMPTY_MEMORY
        entries, details = parent, []
        for request in requests:
            started = time.perf_counter()
            prompt_ids, target_ids = encode_pair(lm.tokenizer, request.text, request.target_new)
            inputs = prompt_inputs(lm, path, prompt_ids)  # (T, d_key)
            query = inputs[-1]
            update = update_codebook(entries, query, request.target_new, initial_value(base, query, request, hparams),
                                     hparams.eps_init, hparams.eps_expand)
            training = train_value(lm, path, layer, base, update.entries, update.trained, prompt_ids, target_ids,
                                   hparams, inputs)
            updated = list(update.entries)
            updated[update.trained] = replace(updated[update.trained], value=training.value)
            entries = tuple(updated)
            details.append({"subject": request.subject, "action": update.action, "entry": update.trained,
                            "distance": update.distance, "radius": entries[update.trained].radius,
                            "final_loss": training.losses[-1], "seconds": time.perf_counter() - started})
        return ModuleSwapEdit(method=METHOD, requests=tuple(requests), hparams=asdict(hparams),
                              swaps=(_recipe(path, parent, parent_digest, entries),), base_fingerprint=lm.fingerprint,
                              info={"layer": layer, "path": path, "codebook_size": len(entries), "requests": details})
