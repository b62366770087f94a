"""Choose ROME's edit layer for a model: edit the same CounterFact records at each candidate layer.

For every layer, each record is edited alone (edit, evaluate, revert) and the probability-protocol
scores ES / PS / NS, their harmonic mean S, the mean optimisation steps and the median seconds per
edit are recorded. Statistics for all candidate layers are collected in one pass first.

    python bench/layer_sweep.py --model smollm2-135m --layers 2,4,6,8,10,12 --n 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

import kedit
from kedit.data.counterfact import load_counterfact
from kedit.evaluate.metrics import harmonic_mean
from kedit.stats import second_moments

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/counterfact/easyedit_counterfact-edit.json"


def sweep(model: str, layers: list[int], n: int, data: Path, overrides: dict) -> list[dict]:
    lm = kedit.load_model(model)
    second_moments(lm, layers)  # one pass for every candidate layer
    cases = load_counterfact(data, n)
    rows = []
    for layer in layers:
        scores, seconds, steps = [], [], []
        for case in cases:
            started = time.perf_counter()
            edit = kedit.edit(lm, "rome", case.request, apply=False, layer=layer, **overrides)
            seconds.append(time.perf_counter() - started)
            steps.append(edit.info["requests"][0]["optimisation_steps"])
            post = kedit.evaluate(lm, [case], edit)[0]["probability"]["post"]
            scores.append((post["efficacy_score"], post["paraphrase_score"], post["neighborhood_score"]))
        es, ps, ns = (statistics.mean(column) for column in zip(*scores, strict=True))
        row = {"layer": layer, "es": es, "ps": ps, "ns": ns, "s": harmonic_mean([es, ps, ns]),
               "mean_steps": statistics.mean(steps), "median_seconds": statistics.median(seconds)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="2,4,6,8,10,12")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--set", action="append", default=[], help="hyperparameter override key=value")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from kedit.methods.hparams import parse_override

    torch.manual_seed(0)
    warnings.simplefilter("ignore", kedit.KeditWarning)
    overrides = dict(parse_override(item) for item in args.set)
    rows = sweep(args.model, [int(x) for x in args.layers.split(",")], args.n, args.data, overrides)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "n": args.n, "overrides": overrides, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
