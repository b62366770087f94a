"""A disk cache of optimised target values (MEMIT's z), so a rerun of the same batch is cheap.

An entry is keyed by everything the optimisation reads:

* the digest of the model's CURRENT weights (:func:`kedit.models.fingerprint.weights_fingerprint`
  of the model as it is now). ``lm.fingerprint`` is not enough: it is the fingerprint at load
  time and does not change when an edit is applied, and in sequential editing each batch's z is
  optimised on the model carrying the earlier edits. Hashing 135M float32 weights takes ~0.6 s on
  the development machine, once per call — small next to the optimisation it saves;
* the request fields the optimisation reads: prompt, subject, target_new;
* the module, its layer, the context templates (their text), the objective settings
  (:meth:`ValueOptimization.objective`) and the model dtype.

Entries are safetensors files (v_init, delta; losses and the key in the metadata) written
atomically under ``$KEDIT_HOME/target_values/<weights digest>/``; an unreadable or mismatching
entry is recomputed, never trusted. The values a call misses are optimised under a lock named by
those entries' keys, so processes that edit the same requests on the same weights at once (a
sweep over MEMIT's λ, which z does not depend on) optimise them once; calls whose requests only
partly overlap compute the shared ones each (the entries are the same, and renamed into place).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kedit.methods.locate import TargetValue, ValueOptimization, optimize_target_values
from kedit.models.fingerprint import weights_fingerprint
from kedit.models.loading import LoadedModel
from kedit.paths import atomic_path, cache_dir, exclusive_lock, lock_path, sha256_text
from kedit.requests import EditRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedValues:
    values: list[TargetValue]
    hits: int  # requests whose value came from the cache
    weights_digest: str | None  # digest of the weights the values belong to (None: cache not used)


def entry_key(weights_digest: str, request: EditRequest, module_path: str, layer: int, templates: Sequence[str],
              settings: ValueOptimization, dtype: str, tokenization: str) -> str:
    payload = {
        "weights": weights_digest,
        "request": [request.prompt, request.subject, request.target_new],
        "module": module_path,
        "layer": layer,
        "templates": list(templates),
        "objective": settings.objective(),
        "dtype": dtype,
        "tokenization": tokenization,
    }
    return sha256_text(json.dumps(payload, sort_keys=True))


def entry_path(weights_digest: str, key: str) -> Path:
    return cache_dir("target_values") / weights_digest[:24] / f"{key[:40]}.safetensors"


def _load(path: Path, key: str) -> TargetValue | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("key") != key:
            return None
        tensors = load_file(str(path))
        return TargetValue(v_init=tensors["v_init"], delta=tensors["delta"],
                           losses=tuple(json.loads(metadata["losses"])))
    except Exception as problem:  # noqa: BLE001 - an unreadable entry is recomputed, never trusted
        log.warning("ignoring unreadable target-value cache entry %s (%s)", path, problem)
        return None


def _store(path: Path, key: str, value: TargetValue) -> None:
    with atomic_path(path) as tmp:
        save_file({"v_init": value.v_init.detach().cpu().contiguous(), "delta": value.delta.detach().cpu().contiguous()},
                  str(tmp), metadata={"key": key, "losses": json.dumps(list(value.losses))})


def cached_target_values(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    module_path: str,
    layer: int,
    templates: Sequence[str],
    settings: ValueOptimization,
    use_cache: bool = True,
    progress: bool = False,
) -> CachedValues:
    """:func:`optimize_target_values` for the requests not found in the cache; results are stored."""
    if not use_cache:
        return CachedValues(optimize_target_values(lm, requests, module_path, layer, templates, settings, progress),
                            0, None)
    digest = weights_fingerprint(lm.model)
    dtype = str(lm.dtype)
    keys = [entry_key(digest, r, module_path, layer, templates, settings, dtype, lm.tokenization) for r in requests]
    values: list[TargetValue | None] = [_load(entry_path(digest, key), key) for key in keys]
    missing = [index for index, value in enumerate(values) if value is None]
    if missing:
        batch = sha256_text("\n".join(sorted(keys[index] for index in missing)))[:40]
        with exclusive_lock(lock_path(entry_path(digest, keys[missing[0]]), f"batch-{batch}")):
            for index in missing:  # written by another process while this one waited for the lock
                values[index] = _load(entry_path(digest, keys[index]), keys[index])
            missing = [index for index, value in enumerate(values) if value is None]
            computed = optimize_target_values(lm, [requests[i] for i in missing], module_path, layer, templates,
                                              settings, progress) if missing else []
            for index, value in zip(missing, computed, strict=True):
                value = TargetValue(value.v_init.to(lm.device), value.delta.to(lm.device), value.losses)
                _store(entry_path(digest, keys[index]), keys[index], value)
                values[index] = value
    resolved = [TargetValue(v.v_init.to(lm.device), v.delta.to(lm.device), v.losses) for v in values]
    return CachedValues(resolved, len(requests) - len(missing), digest)
