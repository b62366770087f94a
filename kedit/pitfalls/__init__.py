"""The Pitfalls suite (Li et al., "Unveiling the Pitfalls of Knowledge Editing", ICLR 2024).

* knowledge conflict (ConflictEdit: coverage, reverse, composite) — :mod:`kedit.pitfalls.conflict`;
* knowledge distortion (RoundEdit: easy, hard; Multi-Label Edit) — :mod:`kedit.pitfalls.distortion`;
* the data files — :mod:`kedit.data.pitfalls` (loaded like every other dataset, see
  :mod:`kedit.data.registry`); the probability of a fact — :mod:`kedit.pitfalls.probability`;
* every metric as a pure function — :mod:`kedit.pitfalls.metrics`.
"""

from kedit.data.pitfalls import (
    ConflictEditStep,
    ConflictRecord,
    Fact,
    RoundRecord,
    load_conflict_edit,
    load_relation_prompts,
    load_round_edit,
)
from kedit.pitfalls.conflict import (
    ConflictCaseResult,
    MethodEditor,
    run_conflict_case,
    summarize_conflict,
)
from kedit.pitfalls.distortion import RoundCaseResult, run_round_case, summarize_round

__all__ = [
    "ConflictCaseResult",
    "ConflictEditStep",
    "ConflictRecord",
    "Fact",
    "MethodEditor",
    "RoundCaseResult",
    "RoundRecord",
    "load_conflict_edit",
    "load_relation_prompts",
    "load_round_edit",
    "run_conflict_case",
    "run_round_case",
    "summarize_conflict",
    "summarize_round",
]
