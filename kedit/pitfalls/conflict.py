"""Knowledge conflict (ConflictEdit, SPEC A.3-A.7): two edits in sequence and what the second did to the first.

Protocol for one record (num_edits = 1, every case starts and ends on the original weights θ):

1. score every fact on θ;
2. e1 computed on θ and applied -> θm;
3. e2 computed on θm and applied -> θ''; score every fact;
4. e2 reverted (the weights before e2, i.e. θm, come back bit for bit); score every fact;
5. e1 reverted -> θ. Coverage and composite: e2 computed afresh on θ and applied alone -> θe2;
   score every fact; reverted.

Every snapshot scores the same facts: k_o = (s1, r1, o1*), k_n explicit = (s2, r2, o2*), k_n
implicit (reverse: (o2*, r1, o1*); composite: (s1, r1, o2*)) and the tied fact k_f (composite,
triples[0]). Scoring all of them at every snapshot costs a few dozen prompts per state, next to
nothing beside an edit, and keeps every intermediate number in the case record.

Metrics per case (means over cases in the summary):

* ``CS_exp`` / ``CS_imp``: 1[S_θ''(k_n) > S_θ''(k_o)] with the explicit / implicit k_n (A.4). Both
  come from one run; the reference code computes one per run, selected by a flag that cannot be
  switched off from its command line (``bool("false")`` is true).
* ``CM``: (S_θm(k_o) - S_θ''(k_o)) / S_θm(k_o) as in the paper (unclipped); ``CM_ref`` clips each
  case at -1 as the reference code does (A.5).
* ``TFD`` (composite): the paper defines it like CM with the tied fact k_f in place of k_o, so its
  reference is θm: (S_θm(k_f) - S_θ''(k_f)) / S_θm(k_f). ``TFD_ref`` is the reference code's
  ``FFD``, relative to the original θ (A.6). ``TFD_e2_only``: the same drop with e2 alone on θ
  (the reference computes it, as ``fixed_o``, but does not report it).
* ``Succ`` (coverage): 1[S_θe2(s1, r1, o2*) > S_θe2(s1, r1, o1*)], e2 alone on θ (A.7).

The editing machinery (:class:`kedit.edits.EditStack`, :class:`MethodEditor`) is shared with RoundEdit
(:mod:`kedit.pitfalls.distortion`), whose sequencing is the same; it works for every edit kind.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedit.data.pitfalls import ConflictRecord
from kedit.edits import Edit, EditStack
from kedit.errors import KeditError, KeditWarning
from kedit.models.loading import LoadedModel
from kedit.pitfalls import metrics as m
from kedit.pitfalls.probability import FactQuery, FactScore, fact_query, score_named, scores_block
from kedit.requests import EditRequest

# Model states, named after the paper's symbols.
THETA = "theta"  # original weights
THETA_M = "theta_m"  # after e1
THETA_2 = "theta_2"  # θ'': after e1 then e2
THETA_E2 = "theta_e2"  # after e2 alone (coverage, composite)

OLD = "old"  # k_o
NEW_EXPLICIT = "new_explicit"  # k_n,exp
NEW_IMPLICIT = "new_implicit"  # k_n,imp
TIED = "tied"  # k_f

PROTOCOL = ("pitfalls-conflict: S(s,r,o) = mean over the edit prompt and its paraphrases of the teacher-forced "
            "geometric-mean token probability of ' '+o; states theta (original), theta_m (after e1), "
            "theta_2 (after e1 then e2), theta_e2 (e2 alone)")

Editor = Callable[[LoadedModel, Sequence[EditRequest]], Edit]
"""Computes an edit on the model as it is now and returns it unapplied (the model is left unchanged)."""


@dataclass(frozen=True)
class MethodEditor:
    """An :data:`Editor` for a registered method, through :func:`kedit.api.edit` (``apply=False``)."""

    method: str
    hparams_file: str | Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> Edit:
        from kedit.api import edit

        return edit(lm, self.method, list(requests), hparams_file=self.hparams_file, apply=False,
                    **dict(self.overrides))


@dataclass
class CaseLog:
    """Timings, edit details and warnings collected while a case runs."""

    seconds: dict[str, float] = field(default_factory=dict)
    edits: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def compute(self, name: str, editor: Editor, lm: LoadedModel, requests: Sequence[EditRequest]) -> Edit:
        """Run ``editor`` and keep its time, method and info under ``name``; kedit's warnings (e.g. "the model
        already answers the new target") are kept in the case record instead of being printed."""
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", KeditWarning)
            edit = editor(lm, requests)
        self.seconds[f"edit_{name}"] = time.perf_counter() - started
        info = dict(edit.info)
        info.pop("seconds", None)
        self.edits[name] = {"method": edit.method, "kind": edit.kind, **info}
        for caught_warning in caught:
            if issubclass(caught_warning.category, KeditWarning):
                self.warnings.append(f"{name}: {caught_warning.message}")
            else:  # a library's warning is not about this case: let it through as usual
                warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename,
                                       caught_warning.lineno)
        return edit


@dataclass(frozen=True)
class ConflictCaseResult:
    """Everything one ConflictEdit case measured."""

    record: ConflictRecord
    probabilities: Mapping[str, Mapping[str, FactScore]]  # state -> fact name -> score
    metrics: Mapping[str, float]
    log: CaseLog

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of this case (one line of ``cases.jsonl``)."""
        record = self.record
        return {
            "case_id": record.case_id,
            "index": record.index,
            "type": record.kind,
            "rule": record.rule,
            "requests": [record.first.request().to_dict(), record.second.request().to_dict()],
            "pitfalls": scores_block(PROTOCOL, self.probabilities, self.metrics),
            "edits": self.log.edits,
            "seconds": self.log.seconds,
            "warnings": self.log.warnings,
        }


def conflict_queries(record: ConflictRecord, prompts: Mapping[str, Sequence[str]]) -> dict[str, FactQuery]:
    """The facts every state of a ConflictEdit case scores, by name."""
    queries = {OLD: fact_query(record.old_fact, prompts), NEW_EXPLICIT: fact_query(record.new_fact_explicit, prompts)}
    if record.new_fact_implicit is not None:
        queries[NEW_IMPLICIT] = fact_query(record.new_fact_implicit, prompts)
    if record.tied_fact is not None:
        queries[TIED] = fact_query(record.tied_fact, prompts)
    return queries


def conflict_case_metrics(kind: str, s: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The per-case metrics of a record of ``kind`` from its fact probabilities ``s[state][fact]``."""
    post, mid = s[THETA_2], s[THETA_M]
    result = {
        "CS_exp": float(m.newer_wins(post[NEW_EXPLICIT], post[OLD])),
        "CM": m.conflict_magnitude(mid[OLD], post[OLD]),
        "CM_ref": m.conflict_magnitude(mid[OLD], post[OLD], clip_at=-1.0),
    }
    if kind in ("reverse", "composite"):
        result["CS_imp"] = float(m.newer_wins(post[NEW_IMPLICIT], post[OLD]))
    if kind == "composite":
        result["TFD"] = m.tied_fact_damage(mid[TIED], post[TIED])
        result["TFD_ref"] = m.tied_fact_damage(s[THETA][TIED], post[TIED])
        result["TFD_e2_only"] = m.tied_fact_damage(s[THETA][TIED], s[THETA_E2][TIED])
    if kind == "coverage":
        alone = s[THETA_E2]
        result["Succ"] = float(m.newer_wins(alone[NEW_EXPLICIT], alone[OLD]))
    return result


def run_conflict_case(lm: LoadedModel, record: ConflictRecord, prompts: Mapping[str, Sequence[str]],
                      editor: Editor) -> ConflictCaseResult:
    """Run the protocol of the module docstring on one record; the model ends on its original weights."""
    queries = conflict_queries(record, prompts)
    log = CaseLog()
    states: dict[str, dict[str, FactScore]] = {}
    first, second = record.first.request(), record.second.request()

    def measure(state: str) -> None:
        started = time.perf_counter()
        states[state] = score_named(lm, queries)
        log.seconds[f"score_{state}"] = time.perf_counter() - started

    with EditStack(lm) as stack:
        measure(THETA)
        stack.push(log.compute("e1", editor, lm, [first]))
        stack.push(log.compute("e2", editor, lm, [second]))
        measure(THETA_2)
        stack.pop()  # back to θm
        measure(THETA_M)
        stack.pop()  # back to θ
        if record.kind in ("coverage", "composite"):
            stack.push(log.compute("e2_alone", editor, lm, [second]))
            measure(THETA_E2)
            stack.pop()
    stack.verify_restored()
    values = {state: {name: s.value for name, s in facts.items()} for state, facts in states.items()}
    return ConflictCaseResult(record, states, conflict_case_metrics(record.kind, values), log)


# Summary keys per data set, in table order.
CONFLICT_METRICS = {
    "coverage": ("Succ", "CS_exp", "CM", "CM_ref"),
    "reverse": ("CS_exp", "CS_imp", "CM", "CM_ref"),
    "composite": ("CS_exp", "CS_imp", "CM", "CM_ref", "TFD", "TFD_ref", "TFD_e2_only"),
}


def summarize_conflict(case_records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Means of every metric per data set (``type``) over case records (:meth:`ConflictCaseResult.to_dict`)."""
    blocks: dict[str, dict[str, list[float]]] = {}
    for record in case_records:
        kind = record.get("type")
        if kind not in CONFLICT_METRICS:
            raise KeditError(f"case {record.get('case_id')!r} has type {kind!r}; expected one of {', '.join(CONFLICT_METRICS)}")
        values = record["pitfalls"]["metrics"]
        block = blocks.setdefault(kind, {name: [] for name in CONFLICT_METRICS[kind]})
        for name in CONFLICT_METRICS[kind]:
            block[name].append(float(values[name]))
    return {kind: {"cases": len(next(iter(block.values()))), **{name: m.mean(v) for name, v in block.items()}}
            for kind, block in blocks.items()}
