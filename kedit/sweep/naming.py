"""Stable run-directory names: readable settings first, then a digest of every setting.

``rome-smollm2-135m-counterfact-easyedit-single-n50-3f2a9c1d07``: the method, the model's short
name, the data format, the mode, n (and seed and each ``--set`` value, when given), then 10 hex
digits of the sha256 of the run's identity (:func:`run_identity`). The identity holds the data
file's sha256 rather than its path and the hyperparameter file's content rather than its name, so
the same sweep planned from another checkout, machine or working directory gives the same names,
and ``--resume`` finds its runs. ``device`` is left out (a run may be continued on another
device, as ``kedit bench --resume`` allows); everything else that is given is in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from kedit.paths import sha256_text
from kedit.sweep.settings import RunSettings

DIGEST_CHARS = 10
READABLE_CHARS = 100  # the readable part is cut here; the digest keeps names apart
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def run_identity(settings: RunSettings, data_sha256: str | None, hparams_sha256: str | None) -> dict[str, Any]:
    """What a run's name digests: its settings with files replaced by their content digests."""
    name, _, _ = settings.data.partition(":")
    return {
        "method": settings.method, "model": settings.model,
        "data": {"format": name.strip().lower(), "sha256": data_sha256},
        "n": settings.n, "mode": settings.mode, "seed": settings.seed,
        "set": {key: value for key, value in settings.overrides},
        "hparams_sha256": hparams_sha256, "held_out": settings.held_out, "eval_batch": settings.eval_batch,
        "start_token": settings.start_token, "shards": settings.shards,
    }


def _tag(value: Any) -> str:
    if isinstance(value, bool):  # as YAML and --set write them
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "_".join(_tag(item) for item in value)
    if isinstance(value, Mapping):
        return "_".join(f"{key}{_tag(item)}" for key, item in value.items())
    return _UNSAFE.sub("_", str(value)).strip("_") or "_"


def model_tag(model: str) -> str:
    """A model's short name: a bundled name or hub id as written, a folder or file by its last part."""
    return _tag(PurePath(model.rstrip("/")).name.removesuffix(".gguf") or model)


def run_name(settings: RunSettings, identity: Mapping[str, Any]) -> str:
    """The run's directory name (see the module docstring)."""
    parts = [settings.method, model_tag(settings.model or "default"), identity["data"]["format"] or "data",
             settings.mode.replace(":", "-"), f"n{settings.n}"]
    if settings.seed is not None:
        parts.append(f"seed{settings.seed}")
    parts += [f"{key}={_tag(value)}" for key, value in settings.overrides]
    if settings.shards > 1:
        parts.append(f"{settings.shards}shards")
    readable = _tag("-".join(_tag(part) for part in parts))[:READABLE_CHARS].rstrip("-_.")
    digest = sha256_text(json.dumps(identity, sort_keys=True, default=str))[:DIGEST_CHARS]
    return f"{readable}-{digest}"
