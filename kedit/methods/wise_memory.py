"""WISE's memory as data (SPEC I.4): side weights, the state after a number of edits, shards stored
and merged at their frequencies, and each edit's *part* of the state (what a saved edit holds).

A side weight is stored sparsely, as the entries where it differs from the main weight W0: the side
memory being written differs only inside its shard's random mask, and a merged memory only where a
shard changed it. States are immutable and share their pieces, so the states of a chain of edits
(kept for revert) cost one mask's values each.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kedit.errors import EditStateError
from kedit.methods.wise_merge import ties_merge
from kedit.methods.wrappers import tensor_bytes

# the reference's weights when shards are merged into an existing side memory W_s (WISE-Merge)
SHARD_SHARE, SIDE_SHARE = 0.4, 0.6


@dataclass(frozen=True)
class SideWeight:
    """A weight equal to W0 except at ``indices`` (flat positions of its storage layout), where it
    holds ``values``; ``min_act`` is the smallest mean activation score of the edits written into it
    (inf: none), whose ``act_ratio`` part is its routing threshold."""

    indices: torch.Tensor  # (k,) long
    values: torch.Tensor  # (k,) in the weight's dtype
    min_act: float
    shard: int = -1  # for the side memory being written: the shard whose mask ``indices`` is

    def dense(self, base: torch.Tensor) -> torch.Tensor:
        weight = base.detach().clone().reshape(-1)
        weight[self.indices] = self.values
        return weight.reshape(base.shape)


def sparse_from(base: torch.Tensor, weight: torch.Tensor, min_act: float) -> SideWeight:
    """The entries where ``weight`` differs from ``base`` (exactly: the dense form rebuilds ``weight``)."""
    flat_base, flat = base.detach().reshape(-1), weight.detach().reshape(-1)
    indices = (flat != flat_base).nonzero()[:, 0]
    return SideWeight(indices, flat[indices].clone(), min_act)


@dataclass(frozen=True)
class WISEState:
    """Everything a WISE memory holds after ``count`` edits (shared between the wrappers of a chain)."""

    count: int = 0
    current: SideWeight | None = None  # W' of the shard being written (None: still W0)
    stored: tuple[SideWeight, ...] = ()  # Retrieve: the memories; Merge: shards waiting for the merge
    merged: SideWeight | None = None  # Merge: the side memory W_s (None: still W0)
    min_act_all: float = math.inf  # Merge's threshold: the smallest over every edit (never reset)


def shard_mask(numel: int, ratio: float, seed: int, shard: int) -> torch.Tensor:
    """(k,) sorted flat positions of shard ``shard``'s gradient mask: Bernoulli(ratio), drawn from (seed, shard) on the CPU."""
    generator = torch.Generator().manual_seed(int(hashlib.sha256(f"wise-mask|{seed}|{shard}".encode()).hexdigest()[:15], 16))
    return (torch.rand(numel, generator=generator) < ratio).nonzero()[:, 0]


def mask_digest(indices: torch.Tensor) -> str:
    return hashlib.sha256(tensor_bytes(indices)).hexdigest()[:16]


def merge_shards(base: torch.Tensor, shards: Sequence[SideWeight], into: SideWeight | None,
                 density: float, merge_weight: float) -> torch.Tensor:
    """WISE-Merge's TIES merge of ``shards`` (dense) into the side memory ``into`` (None: W0), as the reference."""
    dense = [shard.dense(base) for shard in shards]
    n = len(dense)
    if into is None:
        return ties_merge(base, dense, [merge_weight / n] * n, density)
    return ties_merge(base, [*dense, into.dense(base)], [SHARD_SHARE / n] * n + [SIDE_SHARE], density)


@dataclass(frozen=True)
class MemorySchedule:
    """When shards are stored and merged, and how (I.4)."""

    save_freq: int
    merge_freq: int
    retrieve: bool
    density: float
    merge_weight: float


def advance(state: WISEState, written: SideWeight, act: float, base: torch.Tensor, hparams: MemorySchedule) -> WISEState:
    """The state after one edit wrote ``written`` (the new W') with mean activation ``act`` (I.4)."""
    count = state.count + 1
    current = SideWeight(written.indices, written.values, min(written.min_act, act), written.shard)
    stored, merged = state.stored, state.merged
    if count % hparams.save_freq == 0:
        stored, current = (*stored, current), None
    if count % hparams.merge_freq == 0:
        if hparams.retrieve:
            group = hparams.merge_freq // hparams.save_freq
            joined = ties_merge(base, [s.dense(base) for s in stored[-group:]], [hparams.merge_weight / group] * group,
                                hparams.density)
            stored = (*stored[:-group], sparse_from(base, joined, min(s.min_act for s in stored[-group:])))
        else:
            merged = sparse_from(base, merge_shards(base, stored, merged, hparams.density, hparams.merge_weight),
                                 math.inf)
            stored = ()
    return WISEState(count, current, stored, merged, min(state.min_act_all, act))


def _json_float(value: float) -> float | None:
    return None if math.isinf(value) else value


def _float(value: float | None) -> float:
    return math.inf if value is None else float(value)


def memory_part(parent: WISEState, new: WISEState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The (config, tensors) of what ``new`` adds to ``parent``: W' in its mask, new stored memories, a new W_s."""
    keep = 0
    while keep < min(len(parent.stored), len(new.stored)) and parent.stored[keep] is new.stored[keep]:
        keep += 1
    config: dict[str, Any] = {"count": new.count, "keep": keep, "min_act_all": _json_float(new.min_act_all),
                              "stored": [_json_float(s.min_act) for s in new.stored[keep:]]}
    state: dict[str, torch.Tensor] = {}
    for number, side in enumerate(new.stored[keep:]):
        state[f"stored/{number}/indices"], state[f"stored/{number}/values"] = side.indices.cpu(), side.values.cpu()
    config["current"] = None if new.current is None else {
        "shard": new.current.shard, "min_act": _json_float(new.current.min_act), "mask": mask_digest(new.current.indices)}
    if new.current is not None:
        state["current"] = new.current.values.cpu()
    config["merged"] = "kept" if new.merged is parent.merged else (
        None if new.merged is None else {"min_act": _json_float(new.merged.min_act)})
    if isinstance(config["merged"], dict):
        state["merged/indices"], state["merged/values"] = new.merged.indices.cpu(), new.merged.values.cpu()
    return config, state


def apply_memory_part(parent: WISEState, config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                      numel: int, device: torch.device) -> WISEState:
    """``parent`` with a part from :func:`memory_part` added (tensors moved to ``device``)."""
    stored = list(parent.stored[: int(config["keep"])])
    for number, min_act in enumerate(config["stored"]):
        stored.append(SideWeight(state[f"stored/{number}/indices"].to(device), state[f"stored/{number}/values"].to(device),
                                 _float(min_act)))
    current = None
    if config["current"] is not None:
        described = config["current"]
        shard = int(described["shard"])
        same = parent.current is not None and parent.current.shard == shard
        indices = parent.current.indices if same else shard_mask(numel, config["mask_ratio"], config["seed"], shard).to(device)
        if mask_digest(indices) != described["mask"]:
            raise EditStateError(f"the WISE mask of shard {shard} redrawn from its seed differs from the one the edit "
                                 "was trained in (another torch random generator?); the edit cannot be rebuilt")
        current = SideWeight(indices, state["current"].to(device), _float(described["min_act"]), shard)
    merged = parent.merged if config["merged"] == "kept" else None
    if isinstance(config["merged"], dict):
        merged = SideWeight(state["merged/indices"].to(device), state["merged/values"].to(device),
                            _float(config["merged"]["min_act"]))
    return WISEState(int(config["count"]), current, tuple(stored), merged, _float(config["min_act_all"]))
