"""Training trained editors (MEND, SERAC): the shared loop, artifacts on disk, the overlap check.

* :mod:`kedit.training.loop` — ``run_loop(trainee, schedule, folder, identity)``: steps, validation,
  best checkpoint, early stopping, time budgets, exact resume after ``kill -9``.
* :mod:`kedit.training.artifact` — the artifact folder, its manifest and keys, the store under
  ``$KEDIT_HOME/artifacts``, the base-model and hyperparameter checks, training keys for overlap.
* :mod:`kedit.training.editor` — ``train_editor`` (loop + artifact + publish) and ``check_no_overlap``.

Imports no torch at module level.
"""

from kedit.training.artifact import (
    Artifact,
    ArtifactManifest,
    TrainingKeys,
    load_artifact,
    resolve_artifact,
)
from kedit.training.editor import TrainingData, check_no_overlap, train_editor, without_training_overlap
from kedit.training.loop import Schedule, Trainee, TrainingOutcome, parse_duration, run_loop

__all__ = [
    "Artifact", "ArtifactManifest", "Schedule", "Trainee", "TrainingData", "TrainingKeys", "TrainingOutcome",
    "check_no_overlap", "load_artifact", "parse_duration", "resolve_artifact", "run_loop", "train_editor", "without_training_overlap",
]
