"""Knowledge distortion (RoundEdit, SPEC A.8) and its mitigation Multi-Label Edit (SPEC A.9).

Protocol for one record (s, r, o, o*, Obj), starting and ending on the original weights θ:

1. score o, o* and every other true object o'_i (Obj with the first o removed) on θ;
2. e1 = (s, r): o -> o*, computed on θ and applied -> θm;
3. e2 = (s, r): o* -> o, computed on θm and applied -> θ''; score the same objects;
4. e2 reverted -> θm; score them again; e1 reverted -> θ.

With ``mle=True`` (Multi-Label Edit) the return edit is one call of the editor with one request whose
``target_new`` is o and whose ``extra_targets`` are the other true objects (method ``mle``, which
writes all of them at once; the reference code issues |Obj| MEMIT requests o* -> o_i in one batch).
e1 and the evaluation are unchanged.

Each object's probability is S(s, r, o) over the relation's edit prompt and its paraphrases
(:mod:`kedit.pitfalls.probability`). Metrics per case (means over cases in the summary):

* ``Succ`` = 0.5 * 1[S_θm(o*) > S_θm(o)] + 0.5 * 1[S_θ''(o) > S_θ''(o*)];
* ``IR`` = share of the o'_i with S_θ(o'_i) > S_θ''(o'_i); ``FR`` = 1[IR > 0.5];
* ``D`` = JS divergence between [S_θ''(o), S_θ''(o'_i)...] and [S_θ(o), S_θ(o'_i)...], each
  normalised to sum 1 (the paper). ``D_ref`` divides it by |Obj|, which is what the reference
  code's ``KLDivLoss(reduction="batchmean")`` on 1-D tensors computes.

Departure from the reference code: the reference scores θ in a separate run and aligns the two
result files by index; here θ is scored inside the case, so a case can never be compared with
another record's baseline.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.data.pitfalls import Fact, RoundRecord
from kedit.edits import EditStack
from kedit.errors import KeditError
from kedit.models.loading import LoadedModel
from kedit.pitfalls import metrics as m
from kedit.pitfalls.conflict import THETA, THETA_2, THETA_M, CaseLog, Editor, MethodEditor
from kedit.pitfalls.probability import FactQuery, FactScore, fact_query, score_named, scores_block

TARGET = "target"  # o
INTERMEDIATE = "intermediate"  # o*
OTHER = "other_{}"  # o'_i, i = 0, 1, ...

PROTOCOL = ("pitfalls-round: S(s,r,o) = mean over the edit prompt and its paraphrases of the teacher-forced "
            "geometric-mean token probability of ' '+o; states theta (original), theta_m (after o -> o*), "
            "theta_2 (after o -> o* then o* -> o)")
ROUND_METRICS = ("Succ", "D", "D_ref", "IR", "FR")
MLE_METHOD = "mle"  # the registered Multi-Label Edit method (SPEC A.9)


@dataclass(frozen=True)
class RoundCaseResult:
    """Everything one RoundEdit case measured."""

    record: RoundRecord
    mle: bool
    probabilities: Mapping[str, Mapping[str, FactScore]]  # state -> object name -> score
    metrics: Mapping[str, float]
    log: CaseLog

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of this case (one line of ``cases.jsonl``)."""
        record = self.record
        second = record.multi_label_request() if self.mle else record.second_request()
        return {
            "case_id": record.case_id,
            "index": record.index,
            "type": record.kind,
            "mle": self.mle,
            "true_objects": list(record.true_objects),
            "others": list(record.others),
            "requests": [record.first_request().to_dict(), second.to_dict()],
            "pitfalls": scores_block(PROTOCOL, self.probabilities, self.metrics),
            "edits": self.log.edits,
            "seconds": self.log.seconds,
            "warnings": self.log.warnings,
        }


def round_queries(record: RoundRecord, prompts: Mapping[str, Sequence[str]]) -> dict[str, FactQuery]:
    """o, o* and each other true object, all about (s, r) with the same prompt set."""
    def about(target: str) -> FactQuery:
        return fact_query(Fact(record.subject, record.relation_id, record.prompt, target), prompts)

    queries = {TARGET: about(record.target), INTERMEDIATE: about(record.intermediate)}
    for position, other in enumerate(record.others):
        queries[OTHER.format(position)] = about(other)
    return queries


def round_case_metrics(s: Mapping[str, Mapping[str, float]], n_others: int) -> dict[str, float]:
    """The per-case metrics from object probabilities ``s[state][object name]``."""
    before, mid, post = s[THETA], s[THETA_M], s[THETA_2]
    others = [OTHER.format(position) for position in range(n_others)]
    case_ir = m.ignore_rate([before[name] for name in others], [post[name] for name in others])
    after_dist = [post[TARGET]] + [post[name] for name in others]
    before_dist = [before[TARGET]] + [before[name] for name in others]
    return {
        "Succ": m.round_success(mid[INTERMEDIATE], mid[TARGET], post[TARGET], post[INTERMEDIATE]),
        "D": m.distortion(after_dist, before_dist),
        "D_ref": m.distortion(after_dist, before_dist, per_object=True),
        "IR": case_ir,
        "FR": float(m.is_failure(case_ir)),
    }


def mle_editor(editor: Editor) -> Editor:
    """The return-edit editor of MLE: method ``mle`` with the same hyperparameter overrides.

    An editor that is not a :class:`MethodEditor` is used as it is (it must then write
    ``extra_targets`` itself).
    """
    return dataclasses.replace(editor, method=MLE_METHOD) if isinstance(editor, MethodEditor) else editor


def run_round_case(lm: LoadedModel, record: RoundRecord, prompts: Mapping[str, Sequence[str]], editor: Editor,
                   *, mle: bool = False, return_editor: Editor | None = None) -> RoundCaseResult:
    """Run the round trip on one record; the model ends on its original weights.

    ``return_editor`` computes the return edit (default: ``editor``, or :func:`mle_editor` of it with
    ``mle``); with ``mle`` it gets the multi-label request (o* -> o plus the other true objects as
    ``extra_targets``).
    """
    queries = round_queries(record, prompts)
    log = CaseLog()
    states: dict[str, dict[str, FactScore]] = {}
    second = record.multi_label_request() if mle else record.second_request()
    if return_editor is None:
        return_editor = mle_editor(editor) if mle else editor

    def measure(state: str) -> None:
        started = time.perf_counter()
        states[state] = score_named(lm, queries)
        log.seconds[f"score_{state}"] = time.perf_counter() - started

    with EditStack(lm) as stack:
        measure(THETA)
        stack.push(log.compute("e1", editor, lm, [record.first_request()]))
        stack.push(log.compute("e2", return_editor, lm, [second]))
        measure(THETA_2)
        stack.pop()  # back to θm
        measure(THETA_M)
        stack.pop()  # back to θ
    stack.verify_restored()
    values = {state: {name: s.value for name, s in objects.items()} for state, objects in states.items()}
    return RoundCaseResult(record, mle, states, round_case_metrics(values, len(record.others)), log)


def summarize_round(case_records: Sequence[Mapping[str, Any]], split: str) -> dict[str, dict[str, float]]:
    """Means of every metric over case records (:meth:`RoundCaseResult.to_dict`), under the split's name."""
    if not case_records:
        raise KeditError("no finished cases to summarise")
    values = {name: [float(r["pitfalls"]["metrics"][name]) for r in case_records] for name in ROUND_METRICS}
    return {split: {"cases": len(case_records), **{name: m.mean(v) for name, v in values.items()}}}
