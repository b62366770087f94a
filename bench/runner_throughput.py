"""Cases per second of the benchmark runner against a per-prompt loop.

Two measurements, each on the same cases and the same model:

* one model state (the unedited model): the runner's batched scoring (all probes of ``--eval-batch``
  cases in one :func:`kedit.score` call) against a per-probe loop;
* single mode: ``run_bench(..., mode="single")`` (unedited state scored once up front, each edited
  state scored in one call) against a loop that, per case, edits, scores every probe on its own
  before and after the edit, and reverts. Reported twice: evaluation time only (the runner's
  scoring phases against the loop's scoring calls; the edits are the same computation on both
  sides) and everything included.

Two per-probe loops, both one forward per probe:

* "toolkit loop": ``model(input_ids)`` on prompt + target, which returns logits at every position,
  then the target's log-probabilities read from them: how most toolkits score a probe;
* "kedit loop": ``score([pair])``, kedit's own scorer one pair at a time (unembedding at the target
  positions only), which isolates what batching and prefix sharing buy.

Before timing, the script checks that the three give the same log-probabilities on every probe of the
first 10 cases.

Prints a markdown table to stdout (progress to stderr)::

    python bench/runner_throughput.py --n 50
    python bench/runner_throughput.py --tiny --n 4 --set layer=1 --set v_num_grad_steps=2 \
        --set mom2_adjustment=false --set "context_template_length_params=[[3,1]]"   # smoke run

``--tiny`` uses a tiny random model from tests/tiny_models.py (run from the repository root).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import kedit
from kedit.evaluate.runner import case_probes, case_record, run_bench, score_groups
from kedit.methods.hparams import parse_override
from kedit.models.scoring import TargetScore, encode_pair, score


def load(args: argparse.Namespace):
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from kedit.models import prepare_model
        from tests.tiny_models import build_model, train_tokenizer

        tokenizer = train_tokenizer()
        return prepare_model(build_model("llama", len(tokenizer)), tokenizer, source="tiny-llama")
    return kedit.load_model(args.model, device=args.device)


def load_cases(args: argparse.Namespace):
    if args.data == "demo":
        from kedit.data.demo import demo_cases

        return demo_cases(args.n)
    from kedit.data.bench_data import load_bench_data

    return list(load_bench_data(args.data, args.n, 0).cases)


@torch.no_grad()
def toolkit_score(lm, pair: tuple[str, str]) -> TargetScore:
    """One probe the way most toolkits score it: a forward returning logits at every position."""
    [prompt] = lm.in_context([pair[0]])
    prompt_ids, target_ids = encode_pair(lm.tokenizer, prompt, pair[1])
    logits = lm.model(input_ids=torch.tensor([prompt_ids + target_ids], device=lm.device)).logits[0]  # (T, V)
    log_probs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1].float(), dim=-1)  # rows predicting the target
    chosen = log_probs.gather(1, torch.tensor(target_ids, device=log_probs.device)[:, None])[:, 0]
    return TargetScore(tuple(target_ids), tuple(chosen.tolist()), tuple(log_probs.argmax(dim=-1).tolist()))


def kedit_score(lm, pair: tuple[str, str]) -> TargetScore:
    return score(lm, [pair])[0]


LOOPS = {"toolkit": toolkit_score, "kedit": kedit_score}


def check_agreement(lm, cases, eval_batch: int) -> float:
    """Largest log-probability difference between the runner and either loop (must be rounding only)."""
    groups = [case_probes(case) for case in cases]
    worst = 0.0
    for group, batched in zip(groups, score_groups(lm, groups, eval_batch), strict=True):
        for pair, together in zip(group.pairs, batched, strict=True):
            for loop in LOOPS.values():
                alone = loop(lm, pair)
                if alone.target_ids != together.target_ids:
                    raise SystemExit(f"target tokens differ for {pair}")
                worst = max(worst, *(abs(a - b) for a, b in zip(alone.log_probs, together.log_probs, strict=True)))
    if worst > 1e-3:
        raise SystemExit(f"the runner and the per-probe loops disagree by {worst:.2e} in log-probability")
    return worst


def one_state_batched(lm, cases, eval_batch: int) -> float:
    started = time.perf_counter()
    probes = [case_probes(case) for case in cases]
    for group, scores in zip(probes, score_groups(lm, probes, eval_batch), strict=True):
        case_record(group, scores, None)
    return len(cases) / (time.perf_counter() - started)


def one_state_per_prompt(lm, cases, loop) -> float:
    started = time.perf_counter()
    for case in cases:
        group = case_probes(case)
        case_record(group, [loop(lm, pair) for pair in group.pairs], None)
    return len(cases) / (time.perf_counter() - started)


def single_runner(lm, cases, method: str, overrides: dict, eval_batch: int) -> tuple[float, float]:
    """(evaluation cases/s, overall cases/s): evaluation = the runner's scoring phases, edits excluded."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        summary = run_bench(lm, method, cases, mode="single", out_dir=Path(folder) / "run", overrides=overrides,
                            eval_batch=eval_batch, progress=True)
        total = time.perf_counter() - started
    seconds = summary["seconds"]
    return len(cases) / (seconds["pre_evaluation"] + seconds["evaluation"]), len(cases) / total


def single_per_prompt(lm, cases, method: str, overrides: dict, loop) -> tuple[float, float]:
    """The same two rates for a loop that scores every probe in its own forward, before and after each edit."""
    scoring = 0.0
    started = time.perf_counter()
    for case in cases:
        group = case_probes(case)
        clock = time.perf_counter()
        before = [loop(lm, pair) for pair in group.pairs]
        scoring += time.perf_counter() - clock
        edit = kedit.edit(lm, method, case, apply=True, **overrides)
        try:
            clock = time.perf_counter()
            after = [loop(lm, pair) for pair in group.pairs]
            scoring += time.perf_counter() - clock
        finally:
            edit.revert(lm)
        case_record(group, before, after)
    return len(cases) / scoring, len(cases) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument("--data", default="demo", help="demo or NAME:PATH as for kedit bench")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--method", default="rome")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value hyperparameter")
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-edits", action="store_true", help="measure the one-state scoring only")
    args = parser.parse_args()
    overrides = dict(parse_override(item) for item in args.overrides)

    lm = load(args)
    cases = load_cases(args)
    warnings.simplefilter("ignore", kedit.KeditWarning)  # "already answers the new target" on every edit
    probes = sum(len(case_probes(case).pairs) for case in cases)
    worst = check_agreement(lm, cases[: min(len(cases), 10)], args.eval_batch)
    # The table is printed row by row as each measurement finishes, so a run stopped part way (a
    # short GPU lease) still leaves the rows it completed.
    print(f"model {'tiny-llama' if args.tiny else args.model} on {lm.device}, torch threads "
          f"{torch.get_num_threads()}, {len(cases)} cases ({probes} probes), eval batch {args.eval_batch}; "
          f"runner and loops agree to {worst:.1e} in log-probability\n")
    print("| measurement | runner (cases/s) | toolkit loop (cases/s) | speed-up | kedit loop (cases/s) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)

    def row(label: str, fast: float, slow: dict[str, float]) -> None:
        cells = " | ".join(f"{slow[name]:.2f} | {fast / slow[name]:.2f}x" for name in LOOPS)
        print(f"| {label} | {fast:.2f} | {cells} |", flush=True)

    row("one model state (scoring only)", one_state_batched(lm, cases, args.eval_batch),
        {name: one_state_per_prompt(lm, cases, loop) for name, loop in LOOPS.items()})
    if not args.skip_edits:
        runner, runner_total = single_runner(lm, cases, args.method, overrides, args.eval_batch)
        loops = {name: single_per_prompt(lm, cases, args.method, overrides, loop) for name, loop in LOOPS.items()}
        row(f"single mode ({args.method}), evaluation only", runner, {name: rates[0] for name, rates in loops.items()})
        row(f"single mode ({args.method}), edits included", runner_total, {name: rates[1] for name, rates in loops.items()})


if __name__ == "__main__":
    main()
