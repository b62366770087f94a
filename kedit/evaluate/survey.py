"""Survey metrics of a benchmark run: success rate, generalization rate and drawdown.

Pure functions over the per-case records written by the runner (:func:`kedit.evaluate` records,
plus an optional ``held_out`` block). Each metric exists once per protocol and the two are never
mixed: the token protocol reads the ``token`` block of the records, the probability protocol the
``probability`` block.

Definitions (``post`` is the model state the record's case was measured on after editing — after
its own edit unit in single and batch runs, after the whole sequence in sequential runs; ``pre``
is the unedited model):

* **Success rate SR** — the fraction of edited cases whose edit prompt is answered with the new
  target after editing.

  - token protocol: every target token of ``target_new`` is the model's argmax (teacher forced)
    after the edit prompt, i.e. the case's ``reliability`` is exactly 1;
  - probability protocol: p(target_new) > p(target_true) after the edit prompt (per-token
    geometric-mean probabilities, ``efficacy_score`` = 1). Cases without ``target_true`` have no
    probability record and are left out of this rate.

* **Generalization rate GR** — the fraction of edited cases *with at least one rephrase* for which
  every rephrase is answered with the new target, in the same sense as SR (token: the case's
  ``generalization`` is exactly 1, i.e. all target tokens of every rephrase are argmax; probability:
  ``paraphrase_score`` = 1, i.e. p(new) > p(true) after every rephrase). With one rephrase per
  case this is the per-rephrase rate.

* **Drawdown DD** — accuracy on held-out facts before editing minus after editing (positive: the
  edits destroyed knowledge; negative: accuracy rose). Accuracy on a set of held-out probes is

  - token protocol: the mean teacher-forced token accuracy of the probes' answers (the case
    metric ``locality_accuracy``, averaged over cases);
  - probability protocol: the fraction of probes whose answer is more probable than the edited
    case's new target (the case metric ``neighborhood_score``, averaged over cases).

  Two held-out sets are reported separately:

  - ``drawdown_locality`` — the edited cases' own locality probes: mean over the cases that have
    them of accuracy ``pre`` minus accuracy ``post``;
  - ``drawdown_held_out`` — a separate list of unedited cases (``--held-out``), whose rewrite
    prompt and rephrases with ``target_true`` and locality probes are all held-out probes
    (:func:`held_out_probe_case`). Each record then carries
    ``held_out[protocol] = {"pre": accuracy, "post": accuracy}`` measured on the state that record
    was measured on; DD is the mean over records of pre minus post.

  ``drawdown`` is the held-out-list value when there is one, else the locality value;
  ``drawdown_source`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kedit.evaluate import metrics as m
from kedit.requests import Case, LocalityProbe

SR_METRIC = {m.TOKEN_PROTOCOL: "reliability", m.PROBABILITY_PROTOCOL: "efficacy_score"}
GR_METRIC = {m.TOKEN_PROTOCOL: "generalization", m.PROBABILITY_PROTOCOL: "paraphrase_score"}
ACCURACY_METRIC = {m.TOKEN_PROTOCOL: "locality_accuracy", m.PROBABILITY_PROTOCOL: "neighborhood_score"}
SURVEY_PROTOCOLS = (m.TOKEN_PROTOCOL, m.PROBABILITY_PROTOCOL)
# summary.json keys: the token-protocol block is "survey" (what the comparison report reads), the
# probability-protocol block sits beside it.
SURVEY_KEYS = {m.TOKEN_PROTOCOL: "survey", m.PROBABILITY_PROTOCOL: "survey_probability"}
HELD_OUT = "held_out"
SOURCE_HELD_OUT = "held-out cases"
SOURCE_LOCALITY = "locality probes of the edited cases"


def _check(protocol: str) -> None:
    if protocol not in SURVEY_PROTOCOLS:
        raise ValueError(f"survey metrics exist for the protocols {SURVEY_PROTOCOLS}, not {protocol!r}")


def _value(record: Mapping[str, Any], protocol: str, state: str, name: str) -> float | None:
    value = ((record.get(protocol) or {}).get(state) or {}).get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _rate_of_perfect(records: Sequence[Mapping[str, Any]], protocol: str, name: str) -> float | None:
    # A case counts when its per-case value is exactly 1: every probe (every token) succeeded.
    values = [v for v in (_value(r, protocol, "post", name) for r in records) if v is not None]
    return sum(v == 1.0 for v in values) / len(values) if values else None


def success_rate(records: Sequence[Mapping[str, Any]], protocol: str) -> float | None:
    """SR: fraction of edited cases whose edit prompt gives the new target (see the module docstring)."""
    _check(protocol)
    return _rate_of_perfect(records, protocol, SR_METRIC[protocol])


def generalization_rate(records: Sequence[Mapping[str, Any]], protocol: str) -> float | None:
    """GR: fraction of edited cases with rephrases whose every rephrase gives the new target."""
    _check(protocol)
    return _rate_of_perfect(records, protocol, GR_METRIC[protocol])


def accuracy(records: Sequence[Mapping[str, Any]], protocol: str, state: str) -> float | None:
    """Held-out accuracy of ``state`` over the records' locality probes (mean over cases that have them)."""
    _check(protocol)
    return m.mean(v for v in (_value(r, protocol, state, ACCURACY_METRIC[protocol]) for r in records) if v is not None)


def locality_drawdown(records: Sequence[Mapping[str, Any]], protocol: str) -> float | None:
    """DD on the edited cases' own locality probes: mean over cases with both states of pre minus post."""
    _check(protocol)
    name = ACCURACY_METRIC[protocol]
    pairs = [(_value(r, protocol, "pre", name), _value(r, protocol, "post", name)) for r in records]
    return m.mean(pre - post for pre, post in pairs if pre is not None and post is not None)


def held_out_drawdown(records: Sequence[Mapping[str, Any]], protocol: str) -> float | None:
    """DD on a separate held-out case list: mean over records of their ``held_out`` pre minus post."""
    _check(protocol)
    differences = []
    for record in records:
        block = (record.get(HELD_OUT) or {}).get(protocol) or {}
        pre, post = block.get("pre"), block.get("post")
        if isinstance(pre, int | float) and isinstance(post, int | float):
            differences.append(float(pre) - float(post))
    return m.mean(differences)


def held_out_block(held_out_records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """The ``held_out`` block of a record from the held-out cases' records on one edited state."""
    return {
        protocol: {"pre": accuracy(held_out_records, protocol, "pre"), "post": accuracy(held_out_records, protocol, "post")}
        for protocol in SURVEY_PROTOCOLS
    }


def held_out_probe_case(case: Case) -> Case:
    """A held-out case whose probes all ask for true facts: every one becomes a locality probe.

    The rewrite prompt and each rephrase with ``target_true`` (when known) join the case's own
    locality probes; the request itself is kept, because the probability protocol compares each
    answer against the case's ``target_new``.
    """
    true = case.request.target_true
    asked = () if true is None else tuple(LocalityProbe(p, true) for p in (case.request.text, *case.rephrases))
    return Case(request=case.request, locality=asked + case.locality, case_id=case.case_id)


def survey_protocol(records: Sequence[Mapping[str, Any]], protocol: str) -> dict[str, Any]:
    """SR, GR and DD of one protocol (with what DD was measured on), as summary.json stores them."""
    _check(protocol)
    on_locality = locality_drawdown(records, protocol)
    on_held_out = held_out_drawdown(records, protocol)
    has_held_out = any(HELD_OUT in record for record in records)
    return {
        "protocol": m.PROTOCOL_DESCRIPTIONS[protocol],
        "success_rate": success_rate(records, protocol),
        "generalization_rate": generalization_rate(records, protocol),
        "drawdown": on_held_out if has_held_out else on_locality,
        "drawdown_source": SOURCE_HELD_OUT if has_held_out else SOURCE_LOCALITY,
        "drawdown_locality": on_locality,
        "drawdown_held_out": on_held_out,
        "accuracy_locality": {"pre": accuracy(records, protocol, "pre"), "post": accuracy(records, protocol, "post")},
        "cases": len(records),
    }


def survey_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"survey": token-protocol block, "survey_probability": probability-protocol block}``."""
    return {SURVEY_KEYS[protocol]: survey_protocol(records, protocol) for protocol in SURVEY_PROTOCOLS}
