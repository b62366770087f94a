"""The numbers a comparison of runs shows, pulled out of their summaries (pure functions, no drawing).

Tables and plots of :mod:`kedit.reports.comparison_page` and :mod:`kedit.reports.plots` both read
these structures, so a bar and the table cell beside it cannot disagree.

Protocols stay apart: each :class:`MetricGroup` reads one block of a summary (``probability``,
``token`` or the survey metrics), and a table or plot shows one group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kedit.reports.records import metric
from kedit.reports.runs import BENCH, Run


@dataclass(frozen=True)
class MetricSpec:
    key: str  # as written in summaries
    label: str  # as shown in tables and plots


@dataclass(frozen=True)
class MetricGroup:
    """Metrics read from one block of a summary; ``headline`` ones are also plotted."""

    name: str  # the summary block: "probability", "token" or "survey"
    title: str
    headline: tuple[MetricSpec, ...]
    extra: tuple[MetricSpec, ...] = ()
    has_baseline: bool = True  # whether the unedited model ("pre") has these metrics

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return self.headline + self.extra


PROBABILITY = MetricGroup(
    "probability", "Probability protocol (ROME/MEMIT CounterFact)",
    headline=(MetricSpec("efficacy_score", "ES"), MetricSpec("paraphrase_score", "PS"),
              MetricSpec("neighborhood_score", "NS"), MetricSpec("score_s", "S")),
    extra=(MetricSpec("efficacy_magnitude", "EM"), MetricSpec("paraphrase_magnitude", "PM"),
           MetricSpec("neighborhood_magnitude", "NM")),
)
TOKEN = MetricGroup(
    "token", "Token protocol (EasyEdit)",
    headline=(MetricSpec("reliability", "reliability"), MetricSpec("generalization", "generalization"),
              MetricSpec("locality", "locality"), MetricSpec("portability", "portability")),
)
_SURVEY_METRICS = (MetricSpec("success_rate", "success rate"), MetricSpec("generalization_rate", "generalization rate"),
                   MetricSpec("drawdown", "drawdown"))
SURVEY = MetricGroup("survey", "Survey metrics, token protocol", headline=_SURVEY_METRICS, has_baseline=False)
# The same rates with success judged by the probability protocol (p(new) > p(true)); never merged with the above.
SURVEY_PROBABILITY = MetricGroup("survey_probability", "Survey metrics, probability protocol",
                                 headline=_SURVEY_METRICS, has_baseline=False)
FLUENCY = MetricGroup(
    "fluency", "Fluency (generated text)", headline=(), extra=(MetricSpec("ngram_entropy", "n-gram entropy"),),
)
# Lifelong editing (kedit.evaluate.lifelong): in sequential runs' curve lines and summaries only, so
# it is drawn as curves (beside the groups above), not in the headline tables or bars.
LIFELONG = MetricGroup(
    "lifelong", "Lifelong editing, token protocol (GRACE's ERR and TRR)",
    headline=(MetricSpec("edit_retention", "edit retention (ERR)"),
              MetricSpec("upstream_accuracy", "upstream accuracy (TRR)"),
              MetricSpec("upstream_retention", "upstream retention")),
    extra=(MetricSpec("edit_retention_rate", "edits recalled perfectly"),),
    has_baseline=False,
)
GROUPS = (PROBABILITY, TOKEN, SURVEY, SURVEY_PROBABILITY)
CURVE_GROUPS = (*GROUPS, LIFELONG)
TABLE_GROUPS = (*GROUPS, FLUENCY)
POST, PRE = "post", "pre"


def survey_block(summary: Mapping[str, Any], name: str = SURVEY.name) -> Mapping[str, Any]:
    """Survey metrics of a summary: its ``name`` object (``survey`` or ``survey_probability``), or for
    ``survey`` the same names at the top level."""
    block = summary.get(name)
    if isinstance(block, Mapping):
        return block
    if name != SURVEY.name:
        return {}
    return {spec.key: summary[spec.key] for spec in SURVEY.specs if spec.key in summary}


def group_value(summary: Mapping[str, Any], group: MetricGroup, key: str, state: str = POST) -> float | None:
    """One metric of one group from a summarize()-shaped dict, or None when absent."""
    if group.name in (SURVEY.name, SURVEY_PROBABILITY.name):
        value = survey_block(summary, group.name).get(key)
        # A survey metric may itself be split into pre/post; the edited state is the one to show.
        if isinstance(value, Mapping):
            value = value.get(state)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return metric(summary, group.name, state, key)


@dataclass(frozen=True)
class Series:
    """One row of a metrics table and one colour of its bar chart."""

    label: str
    values: Mapping[str, float | None]  # metric key -> value
    baseline: bool  # the unedited model rather than an edited run


def _unique_labels(runs: Sequence[Run], namers: Sequence[Callable[[Run], str]]) -> list[str]:
    """Each run's first name; runs whose names collide get the next, more detailed namer's name."""
    labels = [namers[0](run) for run in runs]
    for namer in namers[1:]:
        counts = {label: labels.count(label) for label in labels}
        if max(counts.values(), default=1) == 1:
            break
        labels = [namer(run) if counts[label] > 1 else label for run, label in zip(runs, labels, strict=True)]
    return labels


def _with_details(run: Run) -> str:
    mode = run.info.get("mode_spec") or run.mode  # e.g. "sequential:log:100", which says the edit size
    parts = [p for p in (mode, f"n={run.n}" if run.n is not None else None) if p]
    return f"{run.method} ({', '.join(parts)})" if parts else run.method


def _with_mode(run: Run) -> str:
    """The method, with its mode unless the run edited one case at a time ("memit (batch:100)")."""
    mode = run.info.get("mode_spec") or run.mode
    return run.method if mode in (None, "single") else f"{run.method} ({mode})"


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short names, unique among runs of one kind: the method (and mode), then mode and size, then the folder name."""
    def with_folder(run: Run) -> str:
        return f"{_with_details(run)} [{run.path.name}]"

    labels: dict[int, str] = {}
    for kind in dict.fromkeys(run.kind for run in runs):
        same_kind = [run for run in runs if run.kind == kind]
        namers = (_with_mode, _with_details, with_folder, lambda run: str(run.path))
        labels.update(zip((id(run) for run in same_kind), _unique_labels(same_kind, namers), strict=True))
    return [labels[id(run)] for run in runs]


def _data_name(run: Run) -> str:
    return str(run.data.get("name") or run.data.get("path") or run.path.name)


def baseline_labels(runs: Sequence[Run]) -> list[str]:
    """Names of the unedited models measured by ``runs`` (one run per baseline): model, then data, then hashes."""
    def with_data(run: Run) -> str:
        return f"unedited {run.model_name} ({_data_name(run)}" + (f", n={run.n})" if run.n is not None else ")")

    def with_hashes(run: Run) -> str:
        fingerprint, sha = (run.fingerprint or "?")[:8], str(run.data.get("sha256") or "?")[:8]
        return f"{with_data(run)[:-1]}, model {fingerprint}, data {sha})"

    return _unique_labels(runs, (lambda run: f"unedited {run.model_name}", with_data, with_hashes))


def _baseline_key(run: Run) -> tuple[Any, ...]:
    data = run.data
    return (run.fingerprint or run.model_name, data.get("sha256") or data.get("name") or data.get("path"), run.n)


def _values(summary: Mapping[str, Any], group: MetricGroup, state: str) -> dict[str, float | None]:
    return {spec.key: group_value(summary, group, spec.key, state) for spec in group.specs}


def metric_series(runs: Sequence[Run], group: MetricGroup) -> list[Series]:
    """The unedited model(s) first, then each bench run; runs without any metric of the group are left out.

    Runs that share model, data and size share one unedited-model row (their ``pre`` values are the
    same numbers); otherwise each distinct baseline gets its own row, named by model and data.
    """
    bench = [(run, label) for run, label in zip(runs, run_labels(runs), strict=True) if run.kind == BENCH]
    edited = [Series(label, _values(run.metrics, group, POST), False) for run, label in bench]
    edited = [series for series in edited if any(v is not None for v in series.values.values())]
    if not group.has_baseline or not edited:
        return edited
    baselines: dict[tuple[Any, ...], tuple[Run, dict[str, float | None]]] = {}
    for run, _ in bench:
        values = _values(run.metrics, group, PRE)
        if any(v is not None for v in values.values()):
            baselines.setdefault(_baseline_key(run), (run, values))
    measured = list(baselines.values())
    rows = [
        Series(label, values, True)
        for label, (_, values) in zip(baseline_labels([run for run, _ in measured]), measured, strict=True)
    ]
    return rows + edited


@dataclass(frozen=True)
class Curve:
    """One metric of one sequential run as a function of the number of edits."""

    label: str
    points: tuple[tuple[int, float], ...]  # (n_edits, value), n_edits ascending, missing values left out


def curves(runs: Sequence[Run], group: MetricGroup, key: str) -> list[Curve]:
    """The curve of ``key`` for every run that has checkpoints with that metric."""
    result = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        points = tuple(
            (point.n_edits, value) for point in run.curve
            if (value := group_value(point.summary, group, key)) is not None
        )
        if points:
            result.append(Curve(label, points))
    return result
