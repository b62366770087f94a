"""``kedit longtail probe``: what the unedited model knows, per fact, before any edit (SPEC-ALGORITHMS B.6).

Score of a fact = the paper's teacher-forced token accuracy: the question, a space, the answer; the
fraction of answer tokens that are the argmax after the tokens before them (partial credit; not
generation). Every fact is scored twice: on the bare question, and after the k held-out
demonstrations of its relation rendered as ``question\\nanswer\\n\\n`` each (B.5).

For a one-to-many fact the paper scores only the triple's own object, so a model that answers
with another valid object of the same subject and relation is counted wrong. kedit records that
score (``accuracy``) *and* the best score over every valid object (``best_accuracy``, with the
object that reached it): the departure is a second column, never a replacement.

A probe run folder holds ``run.json`` (kind ``longtail-probe``), ``results.jsonl`` (one record
per fact, appended per chunk of facts, so a killed run resumes where it stopped) and
``summary.json`` (means per bin x cardinality with bootstrap intervals).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedit.errors import DataError, KeditError
from kedit.longtail.aggregate import DEFAULT_SETTINGS, CellSettings, cells, path_value
from kedit.longtail.schema import (
    CASES_FILE,
    MANIFEST_FILE,
    Demonstration,
    LongTailCase,
    read_cases,
    read_demonstrations,
)

DEFAULT_K = 5  # demonstrations per relation (B.1 step 5)
DEFAULT_CHUNK = 16  # facts per score() call and per appended block of records
PLAIN, DEMONSTRATED = "plain", "demonstrations"
VARIANTS: tuple[str, ...] = (PLAIN, DEMONSTRATED)
PROTOCOL = "teacher-forced token accuracy of the answer after the question (Yi et al. 2025, B.6)"


# ------------------------------------------------------------------------------------------ prompts


def demonstrations_for(case: LongTailCase, pool: Mapping[str, Sequence[Demonstration]], k: int) -> tuple[Demonstration, ...]:
    """The first ``k`` held-out demonstrations of the fact's relation, never one that asks the fact's own question.

    A demonstration with the same question is about the same subject and relation: its answer would be
    the probed fact itself (or another object of it). Benchmarks built by kedit hold such groups out
    already; this guard keeps a hand-made demonstrations file honest too.
    """
    question = case.case.request.text
    usable = [demo for demo in pool.get(case.fact.relation, ()) if demo.question.strip() != question.strip()]
    return tuple(usable[:k])


def demonstration_prefix(demonstrations: Sequence[Demonstration]) -> str:
    """``question\\nanswer\\n\\n`` per demonstration, in order (B.5); the probed question follows it."""
    return "".join(f"{demo.question}\n{demo.answer}\n\n" for demo in demonstrations)


@dataclass(frozen=True)
class ProbePlan:
    """The scored pairs of one fact: per variant, the prompt and the objects scored after it (own first)."""

    case: LongTailCase
    prompts: Mapping[str, str]  # variant -> prompt
    objects: tuple[str, ...]
    demonstrations: int  # how many demonstrations the demonstrated prompt holds

    def pairs(self) -> list[tuple[str, str]]:
        return [(self.prompts[variant], obj) for variant in VARIANTS for obj in self.objects]


def plan_probe(case: LongTailCase, pool: Mapping[str, Sequence[Demonstration]], k: int,
               max_objects: int | None = None) -> ProbePlan:
    """The pairs that probe one fact; ``max_objects`` caps the valid objects scored (None: all of them)."""
    question = case.case.request.text
    demos = demonstrations_for(case, pool, k)
    objects = case.fact.objects if max_objects is None else case.fact.objects[: max(1, max_objects)]
    return ProbePlan(case, {PLAIN: question, DEMONSTRATED: demonstration_prefix(demos) + question},
                     tuple(objects), len(demos))


# ------------------------------------------------------------------------------------------ scoring


def variant_scores(objects: Sequence[str], accuracies: Sequence[float]) -> dict[str, Any]:
    """The paper's score (the own object, first) and the best over every valid object scored.

    ``accuracies[i]`` is the token accuracy of ``objects[i]``; ties for the best go to the earlier object.
    """
    if not accuracies or len(accuracies) != len(objects):
        raise KeditError(f"expected one accuracy per object ({len(objects)}), got {len(accuracies)}")
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i))
    return {"accuracy": float(accuracies[0]), "best_accuracy": float(accuracies[best]), "best_object": objects[best],
            "objects_scored": len(objects)}


def fact_block(case: LongTailCase) -> dict[str, Any]:
    """What a probe (or edit) record keeps of its fact: enough to aggregate and to read it."""
    fact = case.fact
    return {"subject": fact.subject, "relation": fact.relation, "object": fact.object, "cardinality": fact.cardinality,
            "axis": fact.axis, "counts": dict(fact.counts), "bins": dict(fact.bins), "n_objects": len(fact.objects)}


def probe_record(plan: ProbePlan, accuracies: Sequence[float], index: int) -> dict[str, Any]:
    """The record of one fact from the token accuracies of ``plan.pairs()`` (in that order)."""
    width = len(plan.objects)
    if len(accuracies) != width * len(VARIANTS):
        raise KeditError(f"expected {width * len(VARIANTS)} scores for {plan.case.case.case_id}, got {len(accuracies)}")
    probe = {variant: variant_scores(plan.objects, accuracies[number * width:(number + 1) * width])
             for number, variant in enumerate(VARIANTS)}
    probe[DEMONSTRATED]["k"] = plan.demonstrations
    return {"index": index, "key": plan.case.case.case_id, "case_id": plan.case.case.case_id,
            "question": plan.case.case.request.text, "longtail": fact_block(plan.case), "probe": probe}


# Metrics of a probe summary: (variant, score) -> getter.
PROBE_METRICS = {f"{variant}.{name}": path_value("probe", variant, name)
                 for variant in VARIANTS for name in ("accuracy", "best_accuracy")}


def summarize_probe(records: Sequence[Mapping[str, Any]], levels: Sequence[str], labels: Sequence[str],
                    settings: CellSettings = DEFAULT_SETTINGS) -> dict[str, Any]:
    """Means per level x bin x cardinality of the four probe scores, with bootstrap intervals."""
    return {"cases": len(records),
            "cells": [c.to_dict() for level in levels for c in cells(records, PROBE_METRICS, level, labels,
                                                                     settings=settings)],
            "bootstrap": {"resamples": settings.resamples, "level": settings.level, "seed": settings.seed}}


# ---------------------------------------------------------------------------------------------- run


def benchmark_info(folder: Path) -> dict[str, Any]:
    """The data block of a run over a benchmark folder: where it is, its cases' digest, axis, levels, bins."""
    import json

    from kedit.paths import sha256_file
    from kedit.runs import portable_path

    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    if not (folder / CASES_FILE).is_file():
        raise DataError(f"{folder}: no {CASES_FILE}; pass a folder written by 'kedit longtail build' or 'genes'")
    digest = sha256_file(folder / CASES_FILE)
    # "cases_sha256" is what a run's resume check compares (an edit run's is replaced by the runner's digest of
    # the cases it edits); "benchmark_sha256" stays the benchmark file's, so reports can group runs by benchmark
    return {"name": "longtail", "path": portable_path(folder), "cases_sha256": digest, "benchmark_sha256": digest,
            "manifest": {key: manifest.get(key) for key in ("source", "axis", "levels", "bins", "sampling", "frequency")
                         if key in manifest}}


def levels_and_labels(cases: Sequence[LongTailCase], data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The levels and the bin labels in order: from the manifest when it has them, else from the facts."""
    manifest = data.get("manifest") or {}
    levels = list(manifest.get("levels") or dict.fromkeys(level for c in cases for level in c.fact.bins))
    labels = list((manifest.get("bins") or {}).get("labels") or [])
    if not labels:
        from kedit.longtail.bins import Bins

        labels = list(Bins().labels)
    return levels, labels


def run_probe(lm: Any, bench: Path, out_dir: Path, *, k: int = DEFAULT_K, max_objects: int | None = None,
              limit: int | None = None, resume: bool = False, chunk: int = DEFAULT_CHUNK, progress: bool = True,
              model_name: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Probe every fact of the benchmark folder ``bench`` on ``lm``; write the run folder ``out_dir``."""
    from tqdm.auto import tqdm

    from kedit.evaluate.metrics import token_accuracy
    from kedit.models.scoring import score
    from kedit.runs import (
        LONGTAIL_PROBE,
        RESULTS_FILE,
        SUMMARY_FILE,
        append_lines,
        model_info,
        provenance,
        read_lines,
        start_run,
        write_json_atomic,
    )

    if k < 0 or chunk < 1:
        raise KeditError(f"k must be >= 0 and chunk >= 1, got k={k}, chunk={chunk}")
    bench, out_dir = Path(bench), Path(out_dir)
    cases = read_cases(bench)[:limit]
    if not cases:
        raise DataError(f"{bench / CASES_FILE}: no cases")
    pool = read_demonstrations(bench)
    data = benchmark_info(bench)
    info = {"kind": LONGTAIL_PROBE, "model": model_info(lm, model_name or lm.source), "data": {**data, "n": len(cases)},
            "probe": {"k": k, "max_objects": max_objects, "limit": limit, "protocol": PROTOCOL}, "n": len(cases),
            **provenance(command)}
    info = start_run(out_dir, info, resume=resume)
    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    results = out_dir / RESULTS_FILE
    done = {record.get("key") for record in read_lines(results, repair=True)}
    plans = [plan_probe(case, pool, k, max_objects) for case in cases]
    todo = [index for index, plan in enumerate(plans) if plan.case.case.case_id not in done]
    started = time.perf_counter()
    with tqdm(total=len(plans), initial=len(plans) - len(todo), unit="fact", desc="probing", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), chunk):
            indices = todo[start:start + chunk]
            chunk_started = time.perf_counter()
            flat = score(lm, [pair for index in indices for pair in plans[index].pairs()])
            seconds = (time.perf_counter() - chunk_started) / len(indices)
            records, offset = [], 0
            for index in indices:
                width = len(plans[index].pairs())
                hits = [token_accuracy(scored) for scored in flat[offset:offset + width]]
                offset += width
                records.append({**probe_record(plans[index], hits, index), "seconds": seconds})
            append_lines(results, records)
            bar.update(len(indices))
    records = sorted(read_lines(results), key=lambda record: record["index"])
    levels, labels = levels_and_labels(cases, data)
    summary = {"kind": LONGTAIL_PROBE, "model": info["model"], **summarize_probe(records, levels, labels),
               "levels": levels, "labels": labels,
               "seconds": {"this_session": time.perf_counter() - started,
                           "recorded": sum(float(r.get("seconds", 0.0)) for r in records)}}
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
