"""``kedit longtail edit``: edit each fact of a long-tail benchmark alone and measure it (SPEC-ALGORITHMS B.7).

As in the paper, every triple is edited on its own (kedit's runner in ``single`` mode: edit, measure,
revert bit for bit), the edit writes the *true* object in (the model does not know long-tail facts;
``target_new`` is the true answer), and the edit prompt is the bare question. The measuring is
kedit's (:func:`kedit.evaluate.runner.run_bench`, token protocol), so every number means what it
means in ``kedit bench``:

* reliability — token accuracy of the object after the question, before (``pre``) and after (``post``);
* generalization — the same on the relation's rephrase;
* locality — kedit's: argmax agreement with the unedited model on the locality partner's answer
  (another subject's fact of the same relation); and the paper's ``neighborhood_acc``: 1 when the
  partner's token accuracy is the same after the edit as before, else 0 (B.7's FLAG: it compares
  accuracy scalars, not predictions);
* portability, where the case has probes: ``subject-alias`` (the question asked of one of the
  subject's aliases), and ``other-object`` — for a one-to-many fact, token accuracy of its other
  valid objects (up to ``max_labels - 1`` of them) after the same question: whether the edit taught
  the *set* or one member of it.

MLE (:mod:`kedit.methods.mle`) edits the fact's own object and the same ``max_labels - 1`` other
objects in one MEMIT batch (the request's ``extra_targets``), the paper's open question 1; the
other methods edit the own object only. Departures from B.7: no ``demonstrated`` score (the
demonstration-prefixed question; probing covers demonstrations before editing) and the rephrase is
scored without demonstrations.

The run folder is a ``kedit bench`` folder (``kedit report`` shows it like any other) plus
``longtail_facts.jsonl``: each case's fact (bins, counts, cardinality), which the long-tail report
joins to the records by ``case_id``. This module imports no torch until a run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kedit.errors import DataError, KeditError
from kedit.longtail.aggregate import ALL, DEFAULT_SETTINGS, CellSettings, Value, cells, in_cell, path_value
from kedit.longtail.probe import benchmark_info, fact_block, levels_and_labels
from kedit.longtail.schema import CARDINALITIES, Demonstration, LongTailCase, read_cases, read_demonstrations
from kedit.requests import Case, EditRequest, LocalityProbe, PortabilityProbe

FACTS_FILE = "longtail_facts.jsonl"
SUMMARY_FILE = "longtail_summary.json"
IKE_POOL_FILE = "ike_pool.jsonl"
OTHER_OBJECT_KIND = "other-object"
ALIAS_KIND = "subject-alias"
DEFAULT_MAX_LABELS = 5  # the own object and up to 4 others: MLE's batch, and the other-object probes


# ------------------------------------------------------------------------------------------ cases


def select_cases(cases: Sequence[LongTailCase], *, cardinality: str | None = None, per_cell: int | None = None,
                 level: str = "document") -> list[LongTailCase]:
    """The cases to edit, in file order: of one ``cardinality`` (None: both), the first ``per_cell`` of each
    bin x cardinality at ``level`` (None: all). A benchmark is already a seeded sample ordered by bin, so the
    first ``per_cell`` of a cell are a seeded sample of it too."""
    if cardinality is not None and cardinality not in CARDINALITIES:
        raise KeditError(f"--cardinality must be one of {', '.join(CARDINALITIES)}, got {cardinality!r}")
    if per_cell is not None and per_cell < 1:
        raise KeditError(f"--per-cell must be at least 1, got {per_cell}")
    taken: dict[tuple[str | None, str], int] = {}
    chosen = []
    for case in cases:
        if cardinality is not None and case.fact.cardinality != cardinality:
            continue
        key = (case.fact.bins.get(level), case.fact.cardinality)
        if per_cell is not None and taken.get(key, 0) >= per_cell:
            continue
        taken[key] = taken.get(key, 0) + 1
        chosen.append(case)
    return chosen


def other_objects(case: LongTailCase, max_labels: int) -> tuple[str, ...]:
    """The fact's other valid objects, at most ``max_labels - 1``, in the benchmark's order, distinct."""
    own = case.fact.object
    others = [obj for obj in dict.fromkeys(case.fact.objects[1:]) if obj != own]
    return tuple(others[: max(0, max_labels - 1)])


def edit_case(case: LongTailCase, max_labels: int = DEFAULT_MAX_LABELS) -> Case:
    """The :class:`Case` the runner edits: the benchmark's case with ``extra_targets`` = the other objects kept
    (MLE's labels) and one ``other-object`` portability probe per other object (the same ones)."""
    if max_labels < 1:
        raise KeditError(f"--max-labels must be at least 1 (the fact's own object), got {max_labels}")
    others = other_objects(case, max_labels)
    original = case.case
    request = dataclasses.replace(original.request, extra_targets=others)
    probes = tuple(PortabilityProbe(original.request.text, obj, OTHER_OBJECT_KIND) for obj in others)
    return dataclasses.replace(original, request=request, portability=(*original.portability, *probes))


def ike_pool(demonstrations: Mapping[str, Sequence[Demonstration]]) -> list[Case]:
    """IKE's demonstration pool from the held-out demonstrations (never a benchmark fact): each a copy
    demonstration of itself, retaining the next relation's first demonstration as its locality probe."""
    relations = [relation for relation, demos in demonstrations.items() if demos]
    pool = []
    for number, relation in enumerate(relations):
        neighbour = demonstrations[relations[(number + 1) % len(relations)]][0]
        for demo in demonstrations[relation]:
            locality = (LocalityProbe(neighbour.question, neighbour.answer),) if len(relations) > 1 else ()
            pool.append(Case(EditRequest(prompt="{}", subject=demo.question.strip(), target_new=demo.answer),
                             locality=locality, case_id=f"demonstration:{relation}:{len(pool)}"))
    return pool


# ---------------------------------------------------------------------------------------- metrics


def _token(state: str, name: str) -> Value:
    return path_value("token", state, name)


def paper_locality(record: Mapping[str, Any]) -> float | None:
    """B.7's neighborhood_acc: 1 when the partner's token accuracy after the edit equals the one before."""
    token = record.get("token") or {}
    before = (token.get("pre") or {}).get("locality_accuracy")
    after = (token.get("post") or {}).get("locality_accuracy")
    if before is None or after is None:
        return None
    return float(before == after)


# name -> getter over a results.jsonl record joined with its fact ("longtail")
EDIT_METRICS: dict[str, Value] = {
    "pre.reliability": _token("pre", "reliability"),
    "post.reliability": _token("post", "reliability"),
    "pre.generalization": _token("pre", "generalization"),
    "post.generalization": _token("post", "generalization"),
    "post.locality": _token("post", "locality"),
    "post.locality_paper": paper_locality,
    "pre.other_objects": _token("pre", f"portability.{OTHER_OBJECT_KIND}"),
    "post.other_objects": _token("post", f"portability.{OTHER_OBJECT_KIND}"),
    "pre.alias": _token("pre", f"portability.{ALIAS_KIND}"),
    "post.alias": _token("post", f"portability.{ALIAS_KIND}"),
}


def join_facts(records: Sequence[Mapping[str, Any]], facts: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each record with its fact under ``"longtail"`` (matched by ``case_id``); a record without one is an error."""
    joined = []
    for record in records:
        fact = facts.get(str(record.get("case_id")))
        if fact is None:
            raise DataError(f"record of case {record.get('case_id')!r} has no fact in {FACTS_FILE}")
        joined.append({**record, "longtail": fact})
    return joined


def summarize_edit(records: Sequence[Mapping[str, Any]], levels: Sequence[str], labels: Sequence[str],
                   settings: CellSettings = DEFAULT_SETTINGS) -> dict[str, Any]:
    """Means per level x bin x cardinality of every edit metric, with bootstrap intervals."""
    found = [c.to_dict() for level in levels for c in cells(records, EDIT_METRICS, level, labels, settings=settings)]
    per_bin = {level: {label: sum(in_cell(r, level, label, ALL) for r in records) for label in labels}
               for level in levels}
    return {"cases": len(records), "cases_per_bin": per_bin, "cells": found,
            "bootstrap": {"resamples": settings.resamples, "level": settings.level, "seed": settings.seed}}


# -------------------------------------------------------------------------------------------- run


def run_edit(lm: Any, bench: Path, method: str, out_dir: Path, *, cardinality: str | None = None,
             per_cell: int | None = None, max_labels: int = DEFAULT_MAX_LABELS,
             overrides: Mapping[str, Any] | None = None, hparams_file: Path | None = None, resume: bool = False,
             progress: bool = True, eval_batch: int = 64, model_name: str | None = None,
             command: str | None = None) -> dict[str, Any]:
    """Edit each selected fact of ``bench`` alone with ``method``; write the bench run folder ``out_dir``
    (plus the facts and the long-tail summary) and return the long-tail summary."""
    from kedit.evaluate.runner import run_bench
    from kedit.runs import RUN_FILE, ResumeError, write_json_atomic, write_lines_atomic

    bench, out_dir = Path(bench), Path(out_dir)
    if (out_dir / RUN_FILE).exists() and not resume:
        raise ResumeError(f"{out_dir} already holds a run ({RUN_FILE}); pass --resume to continue it, "
                          "or choose another --out folder")
    data = benchmark_info(bench)
    all_cases = read_cases(bench)
    levels, labels = levels_and_labels(all_cases, data)
    chosen = select_cases(all_cases, cardinality=cardinality, per_cell=per_cell, level=levels[0])
    if not chosen:
        raise DataError(f"{bench}: no case of cardinality {cardinality!r} to edit")
    overrides = dict(overrides or {})
    if method == "ike" and "pool_file" not in overrides:
        demonstrations = read_demonstrations(bench)
        if not demonstrations:
            raise DataError(f"{bench}: no demonstrations.jsonl for IKE's pool; pass --set pool_file=FILE")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_lines_atomic(out_dir / IKE_POOL_FILE, [case.to_dict() for case in ike_pool(demonstrations)])
        overrides["pool_file"] = str(out_dir / IKE_POOL_FILE)
    selection = {"cardinality": cardinality, "per_cell": per_cell, "max_labels": max_labels}
    run_bench(lm, method, [edit_case(case, max_labels) for case in chosen], mode="single", out_dir=out_dir,
              overrides=overrides, hparams_file=hparams_file, resume=resume, progress=progress, eval_batch=eval_batch,
              model_name=model_name, data={**data, "selection": selection}, command=command)
    facts = {case.case.case_id: {**fact_block(case), "labels": 1 + len(other_objects(case, max_labels))}
             for case in chosen}
    write_lines_atomic(out_dir / FACTS_FILE, [{"case_id": key, "longtail": value} for key, value in facts.items()])
    from kedit.runs import RESULTS_FILE, read_lines

    records = join_facts(read_lines(out_dir / RESULTS_FILE), facts)
    summary = {"method": method, "selection": selection, "levels": levels, "labels": labels,
               **summarize_edit(records, levels, labels)}
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
