"""A search on Ray Tune: sample hyperparameters, run each trial's cases in chunks, stop weak trials
early, write the best configuration as a hyperparameter file.

A trial is the search's base run with the sampled values among its ``--set`` overrides (numbers
rounded to ``digits`` significant digits, so trials have short stable names and a search run again
with the same ``search_seed`` samples the same trials and resumes their run directories). Its cases
run in chunks of ``report_every``, each chunk a bench run directory under ``shards/NAME/K`` (as a
sharded run's parts); after each chunk the trial reports the metric over all its cases so far, and
ASHA (``scheduler: asha``) stops the trials that trail the others at the same number of cases. A
trial that measured all its cases is merged into ``runs/NAME`` like any run. The best trial is
chosen among the finished ones only (a trial stopped after 10 cases is never preferred for a lucky
start); ``search.json`` lists every trial, ``best.yaml`` holds the best one's hyperparameters (the
searched values and the fixed ``set`` ones) for ``--hparams``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kedit.paths import atomic_path, exclusive_lock, lock_path, write_json_atomic
from kedit.runs import SUMMARY_FILE
from kedit.sweep.drive import prepare_directory, task_command
from kedit.sweep.layout import SweepLayout
from kedit.sweep.naming import run_name
from kedit.sweep.objective import metric_value
from kedit.sweep.plan import Plan, PlannedSearch
from kedit.sweep.ray_pool import connect, import_ray
from kedit.sweep.settings import RunSettings, SweepError
from kedit.sweep.tasks import Task
from kedit.sweep.values import Dimension, round_significant

OBJECTIVE = "objective"  # the name the trials report their metric under (Tune's metric)
TRIALS = "trials"  # the Tune experiment's folder under tune/


@dataclass(frozen=True)
class Trial:
    name: str
    settings: RunSettings
    values: dict[str, Any]  # the sampled values, after rounding
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class BestConfig:
    trial: str
    values: dict[str, Any]
    metric: str
    value: float
    cases: int
    file: Path

    def describe(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in self.values.items())
        return f"{shown} ({self.metric} = {self.value:.4f} on {self.cases} cases; run {self.trial})"


def _rounded(value: Any, dimension: Dimension, digits: int) -> Any:
    if dimension.integer:
        return int(value)
    if dimension.continuous:
        return round_significant(float(value), digits)
    return value


def trial_for(search: PlannedSearch, config: Mapping[str, Any]) -> Trial:
    """The trial that Tune's sampled ``config`` stands for: its settings, name and chunks."""
    settings = search.settings
    values = {dimension.name: _rounded(config[dimension.name], dimension, settings.digits) for dimension in settings.space}
    run = search.base.settings.with_overrides(values)
    identity = {**search.base.identity, "set": {**search.base.identity["set"], **values}}
    n, every = run.n, settings.report_every
    spans = tuple((start, min(start + every, n)) for start in range(0, n, every))
    return Trial(run_name(run, identity), run, values, spans)


def _chunk_task(layout: SweepLayout, trial: Trial, number: int, command: str | None, threads: int) -> Task:
    return Task(trial.name, number, trial.spans[number], trial.settings,
                str(layout.shard_dir(trial.name, number).resolve()),
                str(layout.status_file(trial.name, number).resolve()), task_command(command, trial.name) or "", threads)


def _records_so_far(layout: SweepLayout, trial: Trial, chunks: int, cases: Any) -> list[dict[str, Any]]:
    from kedit.sweep.merge import merged_records

    stop = trial.spans[chunks - 1][1]
    folders = [layout.shard_dir(trial.name, number) for number in range(chunks)]
    return merged_records(folders, trial.spans[:chunks], cases[:stop])


def run_trial(config: dict[str, Any], search: PlannedSearch, root: str, command: str | None, threads: int) -> None:
    """Tune's trainable: one trial, chunk by chunk, reporting the metric after each (in a Ray worker)."""
    import torch
    from transformers.utils import logging as transformers_logging

    from kedit.models.loading import load_model
    from kedit.sweep.cases import run_cases

    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()
    layout = SweepLayout(Path(root))
    trial = trial_for(search, config)
    settings = trial.settings
    data = run_cases(settings)
    lm = load_model(settings.model, device=settings.device, start_token=settings.start_token)
    # Two samples that round to the same values are one trial: the second waits, then finds its chunks done.
    with exclusive_lock(lock_path(layout.run_dir(trial.name))):
        _run_chunks(search, layout, trial, data, lm, command, threads)


def _run_chunks(search: PlannedSearch, layout: SweepLayout, trial: Trial, data: Any, lm: Any, command: str | None,
                threads: int) -> None:
    from ray import tune

    from kedit.evaluate.evaluation import summarize
    from kedit.evaluate.runner import run_bench
    from kedit.sweep.layout import DONE, RUNNING
    from kedit.sweep.merge import merge_shards
    from kedit.sweep.worker import SHARD_KEY, write_status

    settings = trial.settings
    for number, (start, stop) in enumerate(trial.spans):
        task = _chunk_task(layout, trial, number, command, threads)
        write_status(task, RUNNING, values=trial.values)
        run_bench(lm, settings.method, data.cases[start:stop], mode=settings.mode, out_dir=task.out_dir,
                  overrides=settings.overrides_dict(), resume=True, progress=False, eval_batch=settings.eval_batch,
                  held_out=data.held_out, hparams_file=settings.hparams, model_name=settings.model,
                  data=dict(data.spec) | {SHARD_KEY: [start, stop]}, command=task.command)
        write_status(task, DONE, values=trial.values)
        records = _records_so_far(layout, trial, number + 1, data.cases)
        if number == len(trial.spans) - 1:
            folders = [layout.shard_dir(trial.name, k) for k in range(len(trial.spans))]
            merge_shards(layout.run_dir(trial.name), folders, trial.spans, data.cases, task.command)
        value = metric_value(summarize(records), search.settings.metric)
        tune.report({OBJECTIVE: value if value is not None else math.nan, "cases": stop, "run": trial.name})


def exhaustive(search: PlannedSearch) -> bool:
    """A space of lists only is searched exhaustively: every combination once (random draws would repeat)."""
    return all(dimension.choices for dimension in search.settings.space)


def _space(search: PlannedSearch) -> dict[str, Any]:
    from ray import tune

    space = {}
    for dimension in search.settings.space:
        if exhaustive(search):
            space[dimension.name] = tune.grid_search(list(dimension.choices))
        elif dimension.choices:
            space[dimension.name] = tune.choice(list(dimension.choices))
        elif dimension.integer:
            space[dimension.name] = tune.randint(dimension.low, dimension.high + 1)  # randint excludes its upper end
        elif dimension.log:
            space[dimension.name] = tune.loguniform(dimension.low, dimension.high)
        else:
            space[dimension.name] = tune.uniform(dimension.low, dimension.high)
    return space


def _scheduler(search: PlannedSearch, chunks: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    settings = search.settings
    if settings.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=chunks, grace_period=min(settings.grace, chunks),
                             reduction_factor=settings.reduction)
    return FIFOScheduler()


def _fit_with_progress(tuner: Any, layout: SweepLayout, total: int, shown: bool) -> Any:
    """``tuner.fit()`` under one rich bar over the cases of all trials, read from the trials' run
    directories once a second (Tune pickles its callbacks, which a live progress bar is not)."""
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kedit.runs import RESULTS_FILE

    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["results"] = tuner.fit()
        except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
            outcome["error"] = error

    worker = threading.Thread(target=fit, daemon=True)
    with Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("cases (at most)"),
                  TimeElapsedColumn(), disable=not shown) as bar:
        task = bar.add_task("search", total=total)
        worker.start()
        while worker.is_alive():
            worker.join(1.0)
            done = sum(path.read_bytes().count(b"\n") for path in (layout.root / "shards").glob(f"*/*/{RESULTS_FILE}"))
            bar.update(task, completed=done)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]


def _trial_rows(layout: SweepLayout, search: PlannedSearch, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every trial with its values, cases measured and the metric over them, read from its run directories."""
    from kedit.evaluate.evaluation import summarize
    from kedit.sweep.cases import run_cases

    cases = run_cases(search.base.settings).cases
    rows = []
    trials = {trial.name: trial for trial in (trial_for(search, config) for config in configs)}  # repeats once
    for trial in trials.values():
        chunks = 0
        while chunks < len(trial.spans) and (layout.shard_dir(trial.name, chunks) / SUMMARY_FILE).is_file():
            chunks += 1
        records = _records_so_far(layout, trial, chunks, cases) if chunks else []
        rows.append({"run": trial.name, "values": trial.values, "cases": len(records),
                     "finished": (layout.run_dir(trial.name) / SUMMARY_FILE).is_file(),
                     search.settings.metric: metric_value(summarize(records), search.settings.metric) if records else None})
    return rows


def _best(rows: list[dict[str, Any]], search: PlannedSearch) -> dict[str, Any]:
    metric, goal = search.settings.metric, search.settings.goal
    finished = [row for row in rows if row["finished"] and row[metric] is not None]
    if not finished:
        raise SweepError("no trial of the search measured all its cases; see `kedit sweep status` and resume it")
    return (max if goal == "max" else min)(finished, key=lambda row: row[metric])


def write_best(layout: SweepLayout, search: PlannedSearch, best: Mapping[str, Any]) -> Path:
    """best.yaml: the fixed and the best searched hyperparameters, as --hparams reads them."""
    settings = search.settings
    base = search.base.settings
    data_name = base.data.partition(":")[0]
    header = (f"# kedit sweep: the best of the trials of {base.method} on {base.n} case(s) of {data_name} "
              f"({settings.goal}imising {settings.metric} = {best[settings.metric]:.4f}; run {best['run']}).\n"
              f"# Use it as: kedit bench --method {base.method} --hparams {layout.best.name} ...\n")
    values = {**base.overrides_dict(), **best["values"]}
    with atomic_path(layout.best) as tmp:
        tmp.write_text(header + yaml.safe_dump(values, sort_keys=True, default_flow_style=None), encoding="utf-8")
    return layout.best


def run_search(plan: Plan, out: Path, address: str, *, cpus: float, gpus: float, resume: bool, command: str | None,
               threads: int, log: Callable[[str], None] = print, progress: bool = True) -> BestConfig:
    """Run the plan's search on Ray Tune into the sweep directory ``out``; write search.json and best.yaml."""
    search = plan.search
    if search is None:
        raise SweepError(f"{plan.sweep.path} declares no search")
    ray = import_ray()
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    layout = SweepLayout(Path(out))
    prepare_directory(layout, plan, resume, command)
    started = connect(address)
    try:
        settings = search.settings
        chunks = math.ceil(search.base.settings.n / settings.report_every)
        trials = math.prod(len(d.choices) for d in settings.space) if exhaustive(search) else settings.samples
        shutil.rmtree(layout.tune / TRIALS, ignore_errors=True)  # Tune's records of an earlier session; ours stay
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, search=search, root=str(layout.root.resolve()), command=command,
                                 threads=threads), {"cpu": cpus, "gpu": gpus})
        tuner = tune.Tuner(
            trainable, param_space=_space(search),
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode=settings.goal,
                                        num_samples=1 if exhaustive(search) else settings.samples,
                                        scheduler=_scheduler(search, chunks),
                                        search_alg=BasicVariantGenerator(random_state=settings.search_seed)),
            run_config=tune.RunConfig(name=TRIALS, storage_path=str(layout.tune.resolve()), verbose=0))
        log(f"search: {trials} trial(s) of {search.base.settings.method} on Ray "
            f"({ray.cluster_resources().get('CPU', 0):g} CPU), {settings.scheduler}, "
            f"{chunks} report(s) of {settings.report_every} cases each")
        results = _fit_with_progress(tuner, layout, trials * search.base.settings.n, progress)
        configs = [dict(result.config) for result in results]
        errors = [str(result.error).splitlines()[0] for result in results if result.error is not None]
    finally:
        if started:
            ray.shutdown()
    rows = _trial_rows(layout, search, configs)
    best = _best(rows, search)
    file = write_best(layout, search, best)
    write_json_atomic(layout.search, {"metric": settings.metric, "goal": settings.goal, "trials": rows, "best": best,
                                      "errors": errors, "space": [dataclasses.asdict(d) for d in settings.space]})
    for error in errors:
        log(f"a trial failed: {error}")
    return BestConfig(best["run"], dict(best["values"]), settings.metric, float(best[settings.metric]),
                      int(best["cases"]), file)


def read_search(root: Path) -> dict[str, Any] | None:
    path = SweepLayout(Path(root)).search
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
