"""The 95 % intervals docs/BENCHMARKS.md states beside its comparisons, computed from what is committed.

    python bench/claim_intervals.py                 # every section
    python bench/claim_intervals.py --section key_modes

Three kinds of number, each labelled in the output:

* ``paired``: the paired bootstrap of a difference over the cases both runs measured
  (:func:`kedit.reports.intervals.paired_difference`, cases matched by their resume key), from
  committed per-case records (docs/results/issue11, or a commit's copy of them);
* ``boot``: the percentile bootstrap of one run's mean over its committed records;
* ``bound``: for results whose per-case records were not kept (the GPU session's 200-case runs,
  the sequential curves, the pitfalls suite, the λ and ε sweeps): the widest normal interval a
  mean of n values in [0, 1] can have given the recorded mean
  (:func:`kedit.reports.intervals.bounded_mean_interval`). Two such intervals that do not overlap
  show a difference; overlapping ones do not show there is none (a paired interval over the same
  cases is usually far tighter, but needs the records). The means are the tables' (two or three
  decimals), so the bounds are good to about ±0.005.

Bootstrap settings: 10,000 resamples, seed 0, as ``kedit report``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kedit.reports.intervals import (  # noqa: E402
    Interval,
    bootstrap,
    bounded_mean_interval,
    indicator,
    paired_columns,
    paired_difference,
    per_case,
)
from kedit.reports.records import metric  # noqa: E402

RESULTS = REPO / "docs" / "results"
ISSUE11 = RESULTS / "issue11"
TEMPLATE_KEYS_COMMIT = "5482fa0"  # MEMIT batch:100, start token, template keys: the first 100 records (stopped run)
Record = Mapping[str, Any]
Value = Callable[[Record], float | None]


def read_records(folder: Path, commit: str | None = None) -> list[dict[str, Any]]:
    """A run folder's results.jsonl, from the work tree or from ``commit``."""
    path = folder / "results.jsonl"
    if commit is None:
        text = path.read_text(encoding="utf-8")
    else:
        text = subprocess.run(["git", "show", f"{commit}:{path.relative_to(REPO).as_posix()}"], cwd=REPO,
                              check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def post(protocol: str, name: str, state: str = "post") -> Value:
    return lambda record: metric(record, protocol, state, name)


def perfect(protocol: str, name: str) -> Value:
    """The survey's per-case success: the metric exactly 1 after the edit."""
    return lambda record: indicator(metric(record, protocol, "post", name))


def fmt(interval: Interval, signed: bool = False) -> str:
    spec = "+.3f" if signed else ".3f"
    return f"{interval.estimate:{spec}} [{interval.low:{spec}}, {interval.high:{spec}}] (n={interval.n})"


def paired(label: str, first: Sequence[Record], second: Sequence[Record], value: Value,
           second_value: Value | None = None, first_n: int | None = None) -> None:
    """first − second over the shared cases (the first ``first_n`` of the first run's order, if given)."""
    a, b = per_case(first, value), per_case(second, second_value or value)
    if first_n is not None:
        a = dict(list(a.items())[:first_n])
    _, x, y = paired_columns(a, b)
    print(f"  paired  {label}: {fmt(paired_difference(x, y), signed=True)}")


def boot(label: str, records: Sequence[Record], value: Value, first_n: int | None = None) -> None:
    values = [v for v in (value(r) for r in records[:first_n]) if v is not None]
    print(f"  boot    {label}: {fmt(bootstrap(np.array(values)))}")


def bound(label: str, mean: float, n: int) -> None:
    low, high = bounded_mean_interval(mean, n)
    print(f"  bound   {label}: {mean:.3f} [{low:.3f}, {high:.3f}] (n={n})")


def bounds(label: str, rows: Sequence[tuple[str, float]], n: int) -> None:
    for name, mean in rows:
        bound(f"{label}, {name}", mean, n)


# -------------------------------------------------------------------------------------------- sections


def issue11_defaults() -> None:
    rome, memit = read_records(ISSUE11 / "cf-rome"), read_records(ISSUE11 / "cf-memit-batch100")
    print("ROME single (new defaults) on the 200 CounterFact evaluation records")
    boot("reliability", rome, post("token", "reliability"))
    bound("reliability, previous defaults (records not kept)", 0.89, 200)
    boot("success rate", rome, perfect("token", "reliability"))
    bound("success rate, previous defaults", 0.88, 200)
    paired("NS after − NS before (new defaults)", rome, rome, post("probability", "neighborhood_score"),
           post("probability", "neighborhood_score", "pre"))
    paired("NS after − before, first 100", rome, rome, post("probability", "neighborhood_score"),
           post("probability", "neighborhood_score", "pre"), first_n=100)
    boot("NS, first 100", rome, post("probability", "neighborhood_score"), first_n=100)
    bound("NS, previous defaults, first 100 (rome_cpu.json)", 0.63, 100)
    boot("reliability, first 100", rome, post("token", "reliability"), first_n=100)
    bound("reliability, previous defaults, first 100 (rome_cpu.json)", 0.905, 100)
    print("MEMIT batch:100 (new defaults) on the same 200 records")
    boot("reliability", memit, post("token", "reliability"))
    bound("reliability, previous defaults (records not kept)", 0.96, 200)
    boot("locality", memit, post("token", "locality"))
    bound("locality, previous defaults", 0.79, 200)
    boot("generalization", memit, post("token", "generalization"))
    bound("generalization, previous defaults", 0.33, 200)
    paired("NS after − before", memit, memit, post("probability", "neighborhood_score"),
           post("probability", "neighborhood_score", "pre"))
    old = read_records(ISSUE11 / "cf-memit-batch100", commit=TEMPLATE_KEYS_COMMIT)
    print(f"MEMIT batch:100, prompt keys − template keys (commit {TEMPLATE_KEYS_COMMIT}), first 100 records")
    for name in ("reliability", "generalization", "locality"):
        paired(name, memit, old, post("token", name))
    print("ROME single − MEMIT batch:100, new defaults, the same 200 records "
          "(also: kedit report docs/results/issue11/cf-rome docs/results/issue11/cf-memit-batch100 --out R --compare)")
    for protocol, name in (("token", "reliability"), ("token", "generalization"), ("token", "locality"),
                           ("probability", "efficacy_score"), ("probability", "paraphrase_score"),
                           ("probability", "neighborhood_score")):
        paired(name, rome, memit, post(protocol, name))


def key_modes() -> None:
    runs = {mode: read_records(ISSUE11 / folder) for mode, folder in
            (("paper", "train-rome-steps-20"), ("prompt", "train-rome-key-prompt"), ("original", "train-rome-key-original"))}
    print("ROME key_mode on the CounterFact train records (the cases both runs finished)")
    for other in ("prompt", "original"):
        for protocol, name in (("token", "reliability"), ("token", "locality"), ("probability", "paraphrase_score"),
                               ("token", "generalization")):
            paired(f"{other} − paper, {name}", runs[other], runs["paper"], post(protocol, name))
    paired("original − prompt, locality", runs["original"], runs["prompt"], post("token", "locality"))


def memit_sweep() -> None:
    print("MEMIT one batch of 100 train records (summaries only: bounds)")
    for label, reliability, locality in (("template keys, λ 2000", 0.975, 0.857), ("template keys, λ 250", 0.965, 0.867),
                                         ("prompt keys, λ 2000", 0.995, 0.837)):
        bounds(label, (("reliability", reliability), ("locality", locality)), 100)


def rome_cpu() -> None:
    print("ROME on the first 100 records (bench/rome_cpu.py: means only, bounds)")
    bounds("NS", (("after the edit", 0.63), ("before", 0.66)), 100)


def memit_scale() -> None:
    print("MEMIT, n edits in one batch (bench/memit_scale.py JSON: means only, bounds; n = the batch)")
    for name in ("memit_scale.json", "memit_scale_fast.json", "gpu/memit_scale_h200_1000_shared.json"):
        for row in json.loads((RESULTS / name).read_text())["rows"]:
            if row["n"] >= 100:
                bounds(f"{name} n={row['n']}", tuple((k, row[k]) for k in ("ES", "PS", "NS", "reliability", "locality")
                                                     if row.get(k) is not None), row["n"])


def bench_200() -> None:
    print("200-case runs before issue 11 (records not kept: bounds, n = 200)")
    rows = {
        ("CounterFact", "ROME"): {"PS": 0.93, "NS": 0.68, "reliability": 0.89, "generalization": 0.30, "locality": 0.96},
        ("CounterFact", "FT-L 1e-2"): {"PS": 0.71, "NS": 0.62, "reliability": 0.89, "generalization": 0.12,
                                       "locality": 0.84},
        ("CounterFact", "FT-L 5e-4"): {"reliability": 0.06, "locality": 0.99},
        ("CounterFact", "MEMIT"): {"PS": 0.91, "NS": 0.68, "reliability": 0.98, "generalization": 0.35,
                                   "locality": 0.96},
        ("CounterFact", "MEMIT batch:100"): {"ES": 0.99, "NS": 0.68, "reliability": 0.96, "locality": 0.79},
        ("CounterFact", "unedited"): {"NS": 0.69},
        ("ZsRE", "ROME"): {"PS": 0.91, "reliability": 0.80, "locality": 0.97, "success rate": 0.54},
        ("ZsRE", "FT-L 1e-2"): {"PS": 0.65, "reliability": 0.46, "locality": 0.98},
        ("ZsRE", "MEMIT"): {"reliability": 0.93, "locality": 0.97},
        ("ZsRE", "MEMIT batch:100"): {"ES": 0.95, "locality": 0.78},
    }
    for (data, method), values in rows.items():
        bounds(f"{data} {method}", tuple(values.items()), 200)


def sequential() -> None:
    print("Sequential curves (records not kept: bounds; n = the edits so far)")
    for label, n, values in (
        ("alphaedit per100 at 1000", 1000, (("ES", 0.88), ("reliability", 0.33), ("locality", 0.37))),
        ("memit per100 at 1000", 1000, (("ES", 0.69), ("reliability", 0.13), ("locality", 0.18))),
        ("alphaedit per100 at 500", 500, (("ES", 0.97), ("reliability", 0.79))),
        ("memit per100 at 500", 500, (("ES", 0.93), ("reliability", 0.57))),
        ("memit per100 at 200", 200, (("ES", 0.98), ("reliability", 0.91))),
        ("alphaedit single at 100", 100, (("reliability", 0.94), ("locality", 0.76))),
        ("memit single at 100", 100, (("ES", 0.95), ("reliability", 0.61), ("locality", 0.50))),
        ("memit single at 100, CPU run", 100, (("ES", 0.88),)),
        ("rome single at 100", 100, (("ES", 0.94), ("locality", 0.77))),
        ("ft-l at 100", 100, (("ES", 0.45), ("locality", 0.93))),
        ("ft-l + SSS at 100", 100, (("ES", 0.39), ("locality", 0.89))),
    ):
        bounds(label, values, n)


def ft_sweep() -> None:
    print("FT-L ε sweep on 50 train records (summaries only: bounds)")
    for eps, es, locality in (("5e-3", 0.92, 0.91), ("1e-2", 0.98, 0.86)):
        bounds(f"ε {eps}", (("ES", es), ("locality", locality)), 50)


def pitfalls() -> None:
    print("Pitfalls suite (records not kept: bounds; CM and TFD are not in [0, 1] and get none)")
    for label, n, values in (
        ("RoundEdit easy, MEMIT", 100, (("Succ", 0.99), ("D", 0.19), ("IR", 0.47), ("FR", 0.46))),
        ("RoundEdit easy, MEMIT + MLE", 100, (("Succ", 0.93), ("D", 0.07), ("IR", 0.04), ("FR", 0.01))),
        ("RoundEdit hard, MEMIT", 100, (("Succ", 0.97), ("D", 0.36), ("IR", 0.66), ("FR", 0.64))),
        ("RoundEdit hard, MEMIT + MLE", 100, (("Succ", 0.86), ("D", 0.06), ("IR", 0.10), ("FR", 0.04))),
        ("ConflictEdit coverage, ROME", 67, (("CS_exp", 0.91),)),
        ("ConflictEdit coverage, MEMIT", 67, (("CS_exp", 0.97),)),
        ("ConflictEdit reverse, ROME", 67, (("CS_exp", 0.49), ("CS_imp", 0.00))),
        ("ConflictEdit reverse, MEMIT", 67, (("CS_exp", 0.57), ("CS_imp", 0.00))),
    ):
        bounds(label, values, n)


def subject_first() -> None:
    print("Subject-first facts: took with the start token (auto) − without (none), paired over the 7 facts")
    runs = {token: json.loads((RESULTS / "subject_first" / f"smollm2-{token}.json").read_text())
            for token in ("none", "auto")}
    for method in ("rome", "memit", "alphaedit", "mle"):
        took = {token: {row["prompt"]: float(row["took"]) for row in runs[token]["rows"] if row["method"] == method}
                for token in runs}
        _, auto, none = paired_columns(took["auto"], took["none"])
        print(f"  paired  {method}: {fmt(paired_difference(auto, none), signed=True)}")


def timings() -> None:
    print("ROME edit seconds (bench/rome_cpu.py): medians over the timed edits, bootstrapped over edits")
    rome_cpu = json.loads((RESULTS / "rome_cpu.json").read_text())["edit_seconds_all"]
    both, plain = np.array(rome_cpu["both caches (default)"]), np.array(rome_cpu["prefix cache and replay off"])
    replay_off = np.array(rome_cpu["lower-block replay off"])

    def ratio(samples: np.ndarray) -> np.ndarray:
        return np.median(samples[..., 1], axis=-1) / np.median(samples[..., 0], axis=-1)

    # the same 10 records in each setting: paired by record
    print(f"  paired  caches off / default, ratio of medians: {fmt(bootstrap(np.column_stack([both, plain]), ratio))}")
    print(f"  paired  replay off / default, ratio of medians: "
          f"{fmt(bootstrap(np.column_stack([both, replay_off]), ratio))}")
    for name in ("ab_before_1", "ab_before_2", "ab_after_1", "ab_after_2", "rome_cpu_timing", "rome_cpu_timing_before",
                 "rome_cpu_timing_repeat"):
        seconds = np.array(json.loads((RESULTS / "issue12" / f"{name}.json").read_text())["edit_seconds_all"]
                           ["both caches (default)"])
        median = bootstrap(seconds, lambda s: np.median(s[..., 0], axis=-1))
        print(f"  boot    issue12 {name}, median edit seconds: {fmt(median)}")


def issue15_grace() -> None:
    records = read_records(RESULTS / "issue15" / "zsre-grace-single")
    for name in ("reliability", "generalization", "locality", "portability"):
        boot(f"GRACE single, 200 ZsRE test, token {name}", records, post("token", name))
    seconds = np.array([r["seconds"]["edit"] for r in records])
    print(f"  boot    GRACE single, edit seconds (mean): {fmt(bootstrap(seconds))}")


SECTIONS = {"issue11_defaults": issue11_defaults, "key_modes": key_modes, "memit_sweep": memit_sweep,
            "rome_cpu": rome_cpu, "memit_scale": memit_scale, "bench_200": bench_200, "sequential": sequential, "ft_sweep": ft_sweep, "pitfalls": pitfalls,
            "subject_first": subject_first, "timings": timings,
            "issue15_grace": issue15_grace}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args(argv)
    for name in args.section or SECTIONS:
        print(f"## {name}")
        SECTIONS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
