"""From a trainee to a published artifact: the part of ``Method.train`` every trained editor shares.

:func:`train_editor` checks the data (no validation case that is also a training case), runs the
loop (:mod:`kedit.training.loop`) in the training folder, writes the best tensors as an artifact in
``<out>/artifact`` with its manifest, and copies it into the store where ``compute`` finds it.
:func:`check_no_overlap` is what the benchmark runner calls before evaluating a trained editor.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import KeditError, KeditWarning
from kedit.requests import Case
from kedit.training.artifact import (
    Artifact,
    ArtifactManifest,
    TrainingKeys,
    publish,
    save_artifact,
    training_overlap,
)
from kedit.training.loop import Schedule, Trainee, TrainingOutcome, load_best, run_loop

ARTIFACT_SUBDIR = "artifact"
SHOWN_IDS = 5


@dataclass(frozen=True)
class TrainingData:
    """Training and validation cases, and what the manifest records about where they came from."""

    cases: tuple[Case, ...]
    val_cases: tuple[Case, ...]
    spec: Mapping[str, Any]  # name (format), path, sha256 of the file; for the validation set under "val"

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "cases"))


def check_no_overlap(artifact: Artifact, cases: Sequence[Case], dataset: str, *, allow: bool = False) -> None:
    """Refuse (or, with ``allow``, warn loudly) when evaluation cases were seen in training.

    A shared prompt (the edit prompt or a rephrase) is an overlap whatever the file; a shared case id
    counts only within the same dataset format (ids restart at 0 in every file, so across formats
    they say nothing). With ``allow`` the run goes on and a :class:`KeditWarning` says how many.
    """
    overlap = training_overlap(artifact.training_keys(), cases, dataset)
    if overlap.empty:
        return
    parts = []
    if overlap.by_prompt:
        parts.append(f"{len(overlap.by_prompt)} share a prompt with the training data "
                     f"(e.g. {', '.join(overlap.by_prompt[:SHOWN_IDS])})")
    if overlap.by_id:
        parts.append(f"{len(overlap.by_id)} have the case id of a training case of {dataset!r} "
                     f"(e.g. {', '.join(overlap.by_id[:SHOWN_IDS])})")
    message = (f"of {len(cases)} evaluation cases, " + " and ".join(parts) + f": the {artifact.manifest.method} "
               f"editor in {artifact.folder} was trained on {artifact.manifest.data.get('path') or 'them'}")
    if not allow:
        raise KeditError(message + "; evaluate on held-out data (or --set allow_training_overlap=true to "
                         "measure it anyway, clearly marked)")
    warnings.warn("TRAINING OVERLAP: " + message, KeditWarning, stacklevel=2)


def without_training_overlap(artifact: Artifact, cases: Sequence[Case], dataset: str) -> tuple[list[Case], int]:
    """``cases`` minus those sharing a prompt (or, in the same format, a case id) with the editor's
    training data, and how many were dropped (CounterFact's edit and train files share ~2 % of prompts)."""
    overlap = training_overlap(artifact.training_keys(), cases, dataset)
    seen = set(overlap.by_prompt) | set(overlap.by_id)
    kept = [case for index, case in enumerate(cases)
            if (str(case.case_id) if case.case_id is not None else f"#{index}") not in seen]
    return kept, len(cases) - len(kept)


def train_editor(
    lm: Any,
    *,
    method: str,
    editor_version: int,
    trainee: Trainee,
    training_hparams: Mapping[str, Any],
    data: TrainingData,
    schedule: Schedule,
    out_dir: Path,
) -> tuple[Artifact, TrainingOutcome]:
    """Train ``trainee`` in ``out_dir`` (resuming what is there) and publish the best state as an artifact."""
    from kedit.runs.provenance import versions

    if not data.cases:
        raise KeditError("training needs at least one training case")
    if not data.val_cases:
        raise KeditError("training needs validation cases (--val FORMAT:FILE, or a training set large enough "
                         "to hold some out)")
    keys = TrainingKeys.of(data.cases, data.name)
    leaked = training_overlap(keys, data.val_cases, data.spec.get("val", {}).get("name", data.name))
    if leaked.by_prompt:
        raise KeditError(f"{len(leaked.by_prompt)} validation case(s) share a prompt with the training cases "
                         f"(e.g. {', '.join(leaked.by_prompt[:SHOWN_IDS])}); validate on held-out cases")
    val_keys = TrainingKeys.of(data.val_cases, data.name)
    identity = {
        "method": method,
        "editor_version": editor_version,
        "base_fingerprint": lm.fingerprint,
        "training_hparams": dict(training_hparams),
        "data_digest": keys.digest(),
        "val_digest": val_keys.digest(),
    }
    out_dir = Path(out_dir)
    outcome = run_loop(trainee, schedule, out_dir, identity)
    manifest = ArtifactManifest(
        method=method,
        editor_version=editor_version,
        base_fingerprint=lm.fingerprint,
        base_source=lm.source,
        training_hparams=dict(training_hparams),
        data=dict(data.spec) | {"keys_digest": keys.digest(), "cases": len(data.cases),
                                "val_cases": len(data.val_cases)},
        versions=versions(),
        training=outcome.to_json() | {"schedule": {"max_steps": schedule.max_steps,
                                                   "time_budget_s": schedule.time_budget_s,
                                                   "val_every": schedule.val_every,
                                                   "patience": schedule.patience}},
    )
    artifact = save_artifact(out_dir / ARTIFACT_SUBDIR, manifest, load_best(out_dir), keys)
    publish(artifact)
    return artifact, outcome
