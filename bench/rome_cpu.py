"""ROME on the bundled model, one run on one machine: speed and quality.

Measures, in one process:
* seconds per ROME edit (median over --timing-n CounterFact records; statistics cached, v* optimisation
  included) with both caches on, with the lower-block replay off, and with both the prefix KV cache and
  the replay off;
* seconds to evaluate one case (all its probes, before and after the edit);
* statistics throughput (tokens per second of the one-pass key statistics, uncached);
* ROME metrics of both protocols on the first --metrics-n records (each edited alone, then reverted).

    python bench/rome_cpu.py --timing-n 10 --metrics-n 100 --out docs/results/rome_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

import kedit
from kedit.data.counterfact import load_counterfact
from kedit.stats import collect_second_moments, second_moments, stdlib_corpus

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/counterfact/easyedit_counterfact-edit.json"
CONFIGS = {
    "both caches (default)": {},
    "lower-block replay off": {"cache_lower_blocks": False},
    "prefix cache and replay off": {"cache_lower_blocks": False, "cache_prefix": False},
}


def time_edits(lm, cases, overrides: dict) -> list[float]:
    seconds = []
    for case in cases:
        started = time.perf_counter()
        kedit.edit(lm, "rome", case.request, apply=False, **overrides)
        seconds.append(time.perf_counter() - started)
    return seconds


def statistics_throughput(lm, layer: int, tokens: int) -> float:
    started = time.perf_counter()
    collect_second_moments(lm, [layer], stdlib_corpus(), n_tokens=tokens, progress=False)
    return tokens / (time.perf_counter() - started)


def metrics_run(lm, cases) -> tuple[dict, list[float], list[float]]:
    records, edit_seconds, eval_seconds = [], [], []
    for case in cases:
        started = time.perf_counter()
        edit = kedit.edit(lm, "rome", case.request, apply=False)
        edit_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        records.append(kedit.evaluate(lm, [case], edit)[0])
        eval_seconds.append(time.perf_counter() - started)
    return kedit.summarize(records), edit_seconds, eval_seconds


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_markdown(result: dict) -> str:
    """The tables that go into docs/BENCHMARKS.md."""
    speed = result["edit_seconds_median"]
    base = speed["both caches (default)"]
    lines = [
        f"Model {result['model']} (layer {result['layer']}), {result['machine']}, torch {result['torch']}.",
        "",
        "| measurement | value |",
        "|---|---:|",
    ]
    for name, seconds in speed.items():
        ratio = "" if name.startswith("both caches") else f" ({seconds / base:.2f}× the default)"
        lines.append(f"| seconds per ROME edit, median of {len(result['edit_seconds_all'][name])}, {name} | "
                     f"{seconds:.2f}{ratio} |")
    if "metrics" not in result:
        return "\n".join([*lines, f"| statistics throughput (tokens / s, one pass to layer {result['layer']}) | "
                                   f"{result['statistics_tokens_per_second']:.0f} |"])
    lines += [
        f"| seconds per ROME edit, median over the {result['metrics_n']} metric records | "
        f"{result['metrics_run_edit_seconds_median']:.2f} |",
        f"| seconds to evaluate one case (all probes, before and after), median | "
        f"{result['evaluate_one_case_seconds_median']:.3f} |",
        f"| statistics throughput (tokens / s, one pass to layer {result['layer']}) | "
        f"{result['statistics_tokens_per_second']:.0f} |",
        "",
        f"Quality on the first {result['metrics_n']} records (each edited alone, then reverted):",
        "",
        "| protocol | metric | before | after |",
        "|---|---|---:|---:|",
    ]
    for protocol in ("probability", "token"):
        block = result["metrics"].get(protocol, {})
        for name in block.get("post", {}):
            lines.append(f"| {protocol} | {name} | {_fmt(block.get('pre', {}).get(name))} | "
                         f"{_fmt(block['post'][name])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--timing-n", type=int, default=10)
    parser.add_argument("--metrics-n", type=int, default=100)
    parser.add_argument("--stats-tokens", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("docs/results/rome_cpu.json"))
    parser.add_argument("--only-default", action="store_true", help="time only the default configuration")
    args = parser.parse_args()
    warnings.simplefilter("ignore", kedit.KeditWarning)

    lm = kedit.load_model(args.model)
    layer = kedit.methods.get_method("rome").default_hparams(lm).layer
    second_moments(lm, [layer])  # cached before anything is timed
    cases = load_counterfact(args.data, max(args.timing_n, args.metrics_n))
    result: dict = {
        "model": args.model, "fingerprint": lm.fingerprint, "layer": layer,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
    }
    kedit.edit(lm, "rome", cases[0].request, apply=False)  # warm-up: allocator, templates on disk
    configs = dict(list(CONFIGS.items())[:1]) if args.only_default else CONFIGS
    timings = {name: time_edits(lm, cases[: args.timing_n], overrides) for name, overrides in configs.items()}
    print(json.dumps({name: statistics.median(values) for name, values in timings.items()}), flush=True)
    result["edit_seconds_median"] = {name: statistics.median(values) for name, values in timings.items()}
    result["edit_seconds_all"] = timings
    result["statistics_tokens_per_second"] = statistics_throughput(lm, layer, args.stats_tokens)
    if args.metrics_n:
        summary, edit_seconds, eval_seconds = metrics_run(lm, cases[: args.metrics_n])
        result["metrics"] = summary
        result["metrics_n"] = args.metrics_n
        result["metrics_run_edit_seconds_median"] = statistics.median(edit_seconds)
        result["evaluate_one_case_seconds_median"] = statistics.median(eval_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(render_markdown(result))


if __name__ == "__main__":
    main()
