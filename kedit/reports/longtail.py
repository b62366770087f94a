"""The long-tail section of ``kedit report``: probing and editing per frequency bin, from run files only.

Reads ``kedit longtail probe`` folders (run.json kind ``longtail-probe``) and ``kedit longtail edit``
folders (bench runs with ``longtail_facts.jsonl``), groups them by the benchmark they ran on, and
writes per benchmark, results first:

1. what the frequency axis is (``subject popularity`` or ``co-occurrence`` — never one called the
   other) and the facts per bin x cardinality;
2. probing before editing: accuracy per bin per model, without and with demonstrations; one-to-one
   vs one-to-many (own object, and best over every valid object);
3. editing in the paper's Table 2 layout (a row per method, a column group per bin: reliability,
   generalization, locality after the edit; the unedited model first), the gain over the unedited
   model per bin x cardinality (paired per fact), one-to-many facts and their other objects, MLE
   against MEMIT on the same facts;
4. document-level vs sentence-level bins side by side (or why there is one level only);
5. cost: seconds per probed fact and per edit.

Every mean carries its percentile-bootstrap interval over the facts of its cell; a cell without
facts is written ``empty`` (and drawn as the word, not as a missing bar). No torch: numpy and the
JSON files.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import KeditError
from kedit.longtail.aggregate import ALL, CARDINALITY_GROUPS, Cell, CellSettings, Value, cell, path_value
from kedit.longtail.evaluate import EDIT_METRICS, FACTS_FILE, join_facts
from kedit.reports.intervals import METHOD, paired_difference
from kedit.reports.markdown import markdown_table
from kedit.reports.palette import method_rank
from kedit.runs import LONGTAIL_PROBE, RESULTS_FILE, RUN_FILE, SUMMARY_FILE, portable_path, read_lines

PROBE, EDIT = "probe", "edit"
AXIS_TITLES = {"subject-popularity": "subject popularity", "cooccurrence": "co-occurrence"}
AXIS_UNITS = {
    ("subject-popularity", "document"): "PubMed articles linked to the subject",
    ("cooccurrence", "document"): "documents in which subject and object both occur",
    ("cooccurrence", "sentence"): "sentences in which subject and object both occur",
}
UNEDITED = "unedited"


@dataclass(frozen=True)
class LongTailRun:
    """One probe or edit run folder, its records joined with their facts."""

    path: Path
    kind: str  # PROBE or EDIT
    info: Mapping[str, Any]  # run.json
    records: tuple[Mapping[str, Any], ...]

    @property
    def data(self) -> Mapping[str, Any]:
        return self.info.get("data") or {}

    @property
    def manifest(self) -> Mapping[str, Any]:
        return self.data.get("manifest") or {}

    @property
    def benchmark(self) -> str:
        return str(self.data.get("benchmark_sha256") or self.data.get("path") or "?")

    @property
    def model(self) -> str:
        return str((self.info.get("model") or {}).get("name") or "?")

    @property
    def method(self) -> str:
        return str(self.info.get("method") or PROBE)

    @property
    def axis(self) -> str:
        return str(self.manifest.get("axis") or next((r["longtail"].get("axis") for r in self.records), "cooccurrence"))

    @property
    def levels(self) -> tuple[str, ...]:
        levels = self.manifest.get("levels") or list(dict.fromkeys(
            level for r in self.records for level in (r["longtail"].get("bins") or {})))
        return tuple(levels)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple((self.manifest.get("bins") or {}).get("labels") or ("[0,10)", "[10,100)", "[100,1000)", "[1000,inf)"))


def is_probe_run(path: Path) -> bool:
    run_file = Path(path) / RUN_FILE
    if not run_file.is_file():
        return False
    try:
        return json.loads(run_file.read_text(encoding="utf-8")).get("kind") == LONGTAIL_PROBE
    except (OSError, json.JSONDecodeError):
        return False


def is_longtail_run(path: Path) -> bool:
    """A probe folder, or an edit folder (a bench run beside its facts file)."""
    return is_probe_run(path) or (Path(path) / FACTS_FILE).is_file()


def read_longtail_run(path: Path) -> LongTailRun:
    """One finished long-tail run; a KeditError says what is missing."""
    path = Path(path)
    if not (path / SUMMARY_FILE).is_file():
        raise KeditError(f"{path}: no {SUMMARY_FILE}: the run has not finished; resume it, then report")
    info = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
    records = read_lines(path / RESULTS_FILE)
    if is_probe_run(path):
        return LongTailRun(path, PROBE, info, tuple(records))
    facts = {str(line["case_id"]): line["longtail"] for line in read_lines(path / FACTS_FILE)}
    return LongTailRun(path, EDIT, info, tuple(join_facts(records, facts)))


# -------------------------------------------------------------------------------------------- values


PROBE_VALUES: dict[str, Value] = {
    "plain": path_value("probe", "plain", "accuracy"),
    "demonstrations": path_value("probe", "demonstrations", "accuracy"),
    "plain, best object": path_value("probe", "plain", "best_accuracy"),
    "demonstrations, best object": path_value("probe", "demonstrations", "best_accuracy"),
}


def gain(name: str) -> Value:
    """post − pre of one token metric for one fact (a paired difference: the same fact edited and not)."""
    pre, post = EDIT_METRICS[f"pre.{name}"], EDIT_METRICS[f"post.{name}"]

    def value(record: Mapping[str, Any]) -> float | None:
        before, after = pre(record), post(record)
        return None if before is None or after is None else after - before

    return value


def axis_title(axis: str) -> str:
    return AXIS_TITLES.get(axis, axis)


def bin_axis_label(axis: str, level: str) -> str:
    """The x-axis label of a bin plot: the axis, its level and what is counted."""
    unit = AXIS_UNITS.get((axis, level), f"{level} count")
    return f"{axis_title(axis)} bin ({unit})"


def _cell_text(found: Cell) -> str:
    return "empty" if found.empty else f"{found.describe()} ({found.n})"


def _settings_line(settings: CellSettings) -> str:
    return (f"_Each cell: the mean over the facts of the bin [{settings.level * 100:g} % interval, {METHOD}, "
            f"{settings.resamples:,} resamples, seed {settings.seed}] (number of facts). `empty`: no fact in the bin._")


# -------------------------------------------------------------------------------------------- tables


def counts_table(runs: Sequence[LongTailRun], level: str, labels: Sequence[str]) -> str:
    """Facts per bin x cardinality in each run (probe runs hold the whole benchmark, edit runs a selection)."""
    rows = []
    for run in runs:
        name = f"{run.model} · {run.method}"
        row = [name]
        for label in labels:
            one = sum(_in(r, level, label, "one-to-one") for r in run.records)
            many = sum(_in(r, level, label, "one-to-many") for r in run.records)
            row.append(f"{one} / {many}" if one or many else "empty")
        rows.append(row)
    return markdown_table(["run (facts: one-to-one / one-to-many)", *labels], rows)


def _in(record: Mapping[str, Any], level: str, label: str, cardinality: str) -> bool:
    from kedit.longtail.aggregate import in_cell

    return in_cell(record, level, label, cardinality)


def probe_table(runs: Sequence[LongTailRun], level: str, labels: Sequence[str], settings: CellSettings) -> str:
    """Rows model x variant, columns bins: the paper's own-object accuracy, without and with demonstrations."""
    rows = []
    for run in runs:
        for variant in ("plain", "demonstrations"):
            k = next((r["probe"]["demonstrations"].get("k") for r in run.records), 0) if variant != "plain" else 0
            name = f"{run.model}, " + ("no demonstrations" if variant == "plain" else f"{k} demonstrations")
            rows.append([name, *(_cell_text(cell(run.records, PROBE_VALUES[variant], variant, level, label, ALL,
                                                 settings)) for label in labels)])
    return markdown_table(["model, prompt", *labels], rows)


def cardinality_table(runs: Sequence[LongTailRun], level: str, labels: Sequence[str], settings: CellSettings) -> str:
    """One-to-one vs one-to-many per bin (with demonstrations): own object (the paper) and best valid object."""
    rows = []
    for run in runs:
        for cardinality in ("one-to-one", "one-to-many"):
            variants = ("demonstrations",) if cardinality == "one-to-one" else ("demonstrations",
                                                                              "demonstrations, best object")
            for variant in variants:
                shown = "own object" if variant == "demonstrations" else "best of all valid objects"
                rows.append([f"{run.model}, {cardinality}, {shown}",
                             *(_cell_text(cell(run.records, PROBE_VALUES[variant], variant, level, label,
                                               cardinality, settings)) for label in labels)])
    return markdown_table(["model, facts, score", *labels], rows)


TABLE2_METRICS = (("reliability", "Rel."), ("generalization", "Gen."), ("locality", "Loc."))


def table2(edits: Sequence[LongTailRun], level: str, labels: Sequence[str], settings: CellSettings,
           cardinality: str = ALL) -> str:
    """The paper's Table 2 layout: a row per method (the unedited model first), per bin Rel. / Gen. / Loc."""
    headers = ["model", "method"] + [f"{label} {short}" for label in labels for _, short in TABLE2_METRICS]
    rows = []
    for model in dict.fromkeys(run.model for run in edits):
        runs = [run for run in edits if run.model == model]
        base = runs[0]
        unedited = [model, UNEDITED]
        for label in labels:
            for name, _ in TABLE2_METRICS:
                # locality of the unedited model is agreement with itself: 1 by definition, not measured
                unedited.append("–" if name == "locality" else _cell_text(
                    cell(base.records, EDIT_METRICS[f"pre.{name}"], name, level, label, cardinality, settings)))
        rows.append(unedited)
        for run in sorted(runs, key=lambda r: method_rank(r.method)):
            row = [model, run.method]
            for label in labels:
                row += [_cell_text(cell(run.records, EDIT_METRICS[f"post.{name}"], name, level, label, cardinality,
                                        settings)) for name, _ in TABLE2_METRICS]
            rows.append(row)
    return markdown_table(headers, rows, text_columns=2)


def gain_table(edits: Sequence[LongTailRun], level: str, labels: Sequence[str], settings: CellSettings) -> str:
    """Reliability gain (post − pre, paired per fact) per method x cardinality, columns bins."""
    rows = []
    for run in sorted(edits, key=lambda r: (r.model, method_rank(r.method))):
        for cardinality in CARDINALITY_GROUPS:
            rows.append([run.model, run.method, cardinality,
                         *(_cell_text(cell(run.records, gain("reliability"), "gain", level, label, cardinality,
                                           settings)) for label in labels)])
    return markdown_table(["model", "method", "facts", *labels], rows, text_columns=3)


def one_to_many_table(edits: Sequence[LongTailRun], level: str, labels: Sequence[str], settings: CellSettings) -> str:
    """One-to-many facts: after the edit, the own object and the other valid objects (were they kept or taught?)."""
    rows = []
    for run in sorted(edits, key=lambda r: (r.model, method_rank(r.method))):
        for metric, shown in (("post.reliability", "own object after"), ("pre.other_objects", "other objects before"),
                              ("post.other_objects", "other objects after")):
            rows.append([run.model, run.method, shown,
                         *(_cell_text(cell(run.records, EDIT_METRICS[metric], metric, level, label, "one-to-many",
                                           settings)) for label in labels)])
    return markdown_table(["model", "method", "one-to-many facts: score", *labels], rows, text_columns=3)


def locality_table(edits: Sequence[LongTailRun], level: str, labels: Sequence[str], settings: CellSettings) -> str:
    """Both localities per method and bin: kedit's agreement and the paper's 'accuracy unchanged'."""
    rows = []
    for run in sorted(edits, key=lambda r: (r.model, method_rank(r.method))):
        for metric, shown in (("post.locality", "agreement with the unedited model (kedit)"),
                              ("post.locality_paper", "partner's accuracy unchanged (the paper)")):
            rows.append([run.model, run.method, shown,
                         *(_cell_text(cell(run.records, EDIT_METRICS[metric], metric, level, label, ALL, settings))
                           for label in labels)])
    return markdown_table(["model", "method", "locality", *labels], rows, text_columns=3)


def paired_rows(edits: Sequence[LongTailRun], first: str, second: str, metric: str, level: str,
                labels: Sequence[str], settings: CellSettings) -> list[list[str]]:
    """``first`` − ``second`` on the one-to-many facts both edited (same model), per bin, paired by fact."""
    rows = []
    value = EDIT_METRICS[metric]
    for model in dict.fromkeys(run.model for run in edits):
        a = next((r for r in edits if r.model == model and r.method == first), None)
        b = next((r for r in edits if r.model == model and r.method == second), None)
        if a is None or b is None:
            continue
        row = [model, f"{first} − {second}", metric]
        for label in labels:
            left = {r["case_id"]: value(r) for r in a.records if _in(r, level, label, "one-to-many")}
            right = {r["case_id"]: value(r) for r in b.records if _in(r, level, label, "one-to-many")}
            keys = [key for key in left if key in right and left[key] is not None and right[key] is not None]
            if not keys:
                row.append("empty")
                continue
            diff = paired_difference([left[k] for k in keys], [right[k] for k in keys], resamples=settings.resamples,
                                     level=settings.level, seed=settings.seed)
            row.append(f"{diff.estimate:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}] ({diff.n})")
        rows.append(row)
    return rows


def cost_table(runs: Sequence[LongTailRun]) -> str:
    """Seconds per probed fact, per edit and per edit's evaluation (medians over the records)."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.kind, r.model, method_rank(r.method))):
        if run.kind == PROBE:
            seconds = [float(r.get("seconds", 0.0)) for r in run.records]
            rows.append([run.model, "probe (both prompts, every object)", str(len(seconds)),
                         f"{statistics.median(seconds):.2f}", "–", f"{sum(seconds) / 60:.1f}"])
        else:
            edit = [float((r.get("seconds") or {}).get("edit", 0.0)) for r in run.records]
            evaluate = [float((r.get("seconds") or {}).get("evaluate", 0.0)) for r in run.records]
            rows.append([run.model, f"edit: {run.method}", str(len(edit)), f"{statistics.median(edit):.2f}",
                         f"{statistics.median(evaluate):.2f}", f"{(sum(edit) + sum(evaluate)) / 60:.1f}"])
    return markdown_table(["model", "run", "facts", "median s per fact (probe, or the edit)",
                           "median s per edit's evaluation", "total minutes"], rows, text_columns=2)


def runs_table(runs: Sequence[LongTailRun]) -> str:
    """Provenance of every run of the benchmark: folder, kind, model fingerprint, method, command."""
    rows = []
    for run in runs:
        model = run.info.get("model") or {}
        rows.append([f"`{portable_path(run.path)}`", run.kind, run.model, f"`{str(model.get('fingerprint', '?'))[:12]}`",
                     run.method, str(len(run.records)), f"`{run.info.get('command') or '–'}`"])
    return markdown_table(["folder", "kind", "model", "fingerprint", "method", "facts", "command"], rows,
                          text_columns=7)


def level_table(bench: Benchmark, settings: CellSettings) -> str:
    """Probing (with demonstrations) and reliability after each edit, per level: the same facts in both bins."""
    labels = bench.first.labels
    rows = []
    for level in bench.first.levels:
        for run in bench.probes:
            rows.append([level, f"probe {run.model}, with demonstrations",
                         *(_cell_text(c) for c in level_cells(run, PROBE_VALUES["demonstrations"], "p", level,
                                                               settings))])
        for run in sorted(bench.edits, key=lambda r: (r.model, method_rank(r.method))):
            rows.append([level, f"{run.method} ({run.model}): reliability after",
                         *(_cell_text(c) for c in level_cells(run, EDIT_METRICS["post.reliability"], "r", level,
                                                               settings))])
    return markdown_table(["level", "run", *labels], rows, text_columns=2)


# ----------------------------------------------------------------------------------------------- page


@dataclass(frozen=True)
class Benchmark:
    """The runs on one benchmark, and what its facts' frequency means."""

    key: str
    runs: tuple[LongTailRun, ...]

    @property
    def probes(self) -> list[LongTailRun]:
        return [run for run in self.runs if run.kind == PROBE]

    @property
    def edits(self) -> list[LongTailRun]:
        return [run for run in self.runs if run.kind == EDIT]

    @property
    def first(self) -> LongTailRun:
        return self.runs[0]

    @property
    def title(self) -> str:
        manifest = self.first.manifest
        name = manifest.get("source") or Path(str(self.first.data.get("path") or "benchmark")).name
        return f"{name} — frequency axis: {axis_title(self.first.axis)}"


def group_benchmarks(runs: Sequence[LongTailRun]) -> list[Benchmark]:
    keys = list(dict.fromkeys(run.benchmark for run in runs))
    return [Benchmark(key, tuple(run for run in runs if run.benchmark == key)) for key in keys]


def axis_note(bench: Benchmark) -> str:
    first = bench.first
    levels = ", ".join(f"{level} level: {AXIS_UNITS.get((first.axis, level), level)}" for level in first.levels)
    if first.axis == "subject-popularity":
        return (f"**Frequency axis: subject popularity** ({levels}) — how often the *subject* is written about, "
                "not how often subject and object occur together; the paper's co-occurrence bins are a different "
                "axis and are not compared with these.")
    return f"**Frequency axis: co-occurrence** ({levels}), as in the paper."


def benchmark_section(bench: Benchmark, plots: Mapping[str, str], settings: CellSettings) -> list[str]:
    """The markdown blocks of one benchmark (``plots`` maps plot roles to file names already written)."""
    first = bench.first
    labels, levels = first.labels, first.levels
    level = levels[0]
    parts = [f"### {bench.title}", axis_note(bench),
             f"Benchmark `{portable_path(str(first.data.get('path') or '?'))}`"
             + (f" (cases sha256 `{digest[:12]}`)." if (digest := first.data.get("benchmark_sha256")) else "."),
             _settings_line(settings),
             f"**Facts per {level}-level bin** (one-to-one / one-to-many)", counts_table(bench.runs, level, labels)]
    if bench.probes:
        parts += [f"#### Probing before editing ({level}-level bins)",
                  "Token accuracy of the answer after the question (the paper's score: the fact's own object).",
                  probe_table(bench.probes, level, labels, settings),
                  "One-to-one vs one-to-many, with demonstrations; for one-to-many facts also the best score over "
                  "every valid object of the subject and relation (the paper counts another valid object as wrong).",
                  cardinality_table(bench.probes, level, labels, settings)]
        parts += [f"![{role}]({plots[role]})" for role in ("probe", "cardinality") if role in plots]
    if bench.edits:
        parts += [f"#### Editing ({level}-level bins): the paper's Table 2 layout",
                  "Each fact edited alone (the true object written in), measured, and reverted. Rel. = token "
                  "accuracy on the question, Gen. = on the rephrase, Loc. = agreement with the unedited model on "
                  "another subject's fact of the same relation; the `unedited` row is the model before editing "
                  "(reliability and generalization of the same facts).",
                  table2(bench.edits, level, labels, settings),
                  "**Reliability gain over the unedited model** (post − pre per fact, bootstrapped as paired "
                  "differences)", gain_table(bench.edits, level, labels, settings),
                  "**One-to-many facts**: the own object after the edit, and the fact's other valid objects "
                  "(up to `--max-labels` − 1, the same objects MLE writes) before and after",
                  one_to_many_table(bench.edits, level, labels, settings),
                  "**Locality, both definitions**", locality_table(bench.edits, level, labels, settings)]
        paired = [row for first_method, second_method in (("mle", "memit"),)
                  for metric in ("post.reliability", "post.other_objects")
                  for row in paired_rows(bench.edits, first_method, second_method, metric, level, labels, settings)]
        if paired:
            parts += ["**MLE − MEMIT on the same one-to-many facts** (paired by fact; MLE writes the other objects "
                      "too, MEMIT the own object only)",
                      markdown_table(["model", "difference", "metric", *labels], paired, text_columns=3)]
        parts += [f"![{role}]({plots[role]})" for role in ("edit", "edit_cardinality") if role in plots]
    parts += level_section(bench, plots, settings)
    parts += ["#### Cost", cost_table(bench.runs), "#### Runs", runs_table(bench.runs)]
    return parts


def level_section(bench: Benchmark, plots: Mapping[str, str], settings: CellSettings) -> list[str]:
    levels = bench.first.levels
    if len(levels) < 2:
        reason = ("the subject-popularity axis counts documents only (a subject's articles), so there are no "
                  "sentence-level bins" if bench.first.axis == "subject-popularity"
                  else f"this benchmark was counted at the {levels[0] if levels else '?'} level only")
        return ["#### Document vs sentence level", f"One level only: {reason}."]
    parts = ["#### Document vs sentence level",
             "The same facts binned by the documents and by the sentences in which subject and object both occur "
             "(side by side). A fact's sentence count is lower than its document count when the pair shares "
             "documents but not sentences, and higher when one document has several such sentences."]
    return parts + [level_table(bench, settings)] + [f"![{role}]({plots[role]})" for role in ("levels",)
                                                    if role in plots]


def longtail_sections(runs: Sequence[LongTailRun], plots: Mapping[str, Mapping[str, str]],
                      settings: CellSettings) -> list[str]:
    """The whole long-tail part of a report page; ``plots[benchmark key][role]`` names written plots."""
    parts = ["## Long-tail knowledge (probing and editing per frequency bin)"]
    for bench in group_benchmarks(runs):
        parts += benchmark_section(bench, plots.get(bench.key, {}), settings)
    return parts


def level_cells(run: LongTailRun, value: Value, metric: str, level: str, settings: CellSettings,
                cardinality: str = ALL) -> list[Cell]:
    return [cell(run.records, value, metric, level, label, cardinality, settings) for label in run.labels]
