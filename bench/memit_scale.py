"""MEMIT (or AlphaEdit) with n CounterFact edits in ONE batch on the bundled model: wall time, peak
memory, and the CounterFact probability-protocol scores ES / PS / NS (plus token-level reliability).

Each n runs in its own process so the peak resident memory (ru_maxrss) belongs to that n alone.
Statistics and context templates are cached beforehand (``--warm``) and not timed; the z cache is
off, so every z is optimised.

    python bench/memit_scale.py --ns 1 10 100 1000 --out docs/results/memit_scale.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/counterfact/easyedit_counterfact-edit.json"


def load_cases(path: Path, n: int):
    from kedit.data.counterfact import load_counterfact

    return load_counterfact(path, limit=n)


def one_run(n: int, method: str, data: Path, threads: int, overrides: dict, device: str = "cpu") -> dict:
    """Edit the first n records in one batch, evaluate them before and after; peak RSS of this process
    (and, on a GPU, the peak memory the CUDA allocator held)."""
    import kedit
    from kedit.evaluate import evaluate, summarize

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    lm = kedit.load_model("smollm2-135m", device=device)
    loaded = list(load_cases(data, n + 1))
    cases, spare = loaded[:n], loaded[n:]
    if lm.device.type == "cuda" and spare:
        # CUDA start-up (context, cuBLAS handles, lazy kernel loading) is paid by an untimed edit of
        # the record after the timed ones
        kedit.edit(lm, method, [spare[0].request], apply=False, z_cache=False, **overrides)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    edit = kedit.edit(lm, method, [c.request for c in cases], apply=False, z_cache=False, **overrides)
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    edit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    records = evaluate(lm, cases, edit)
    eval_seconds = time.perf_counter() - started
    summary = summarize(records)
    probability = summary.get("probability", {}).get("post", {})
    token = summary.get("token", {}).get("post", {})
    return {
        "n": n,
        "method": method,
        "edit_seconds": edit_seconds,
        "z_seconds": edit.info.get("z_seconds"),
        "spread_seconds": edit.info.get("spread_seconds"),
        "eval_seconds": eval_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ES": probability.get("efficacy_score"),
        "PS": probability.get("paraphrase_score"),
        "NS": probability.get("neighborhood_score"),
        "reliability": token.get("reliability"),
        "generalization": token.get("generalization"),
        "locality": token.get("locality"),
        "layers": edit.info.get("layers"),
        "z_iterations_mean": edit.info.get("z_iterations_mean"),
        "threads": threads,
        "device": torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else "cpu",
        "peak_gpu_mib": torch.cuda.max_memory_allocated(lm.device) / 2**20 if lm.device.type == "cuda" else None,
    }


def warm(method: str, overrides: dict, device: str = "cpu") -> None:
    """Convert the model, collect the statistics and sample the templates once (not timed)."""
    import kedit
    from kedit.methods import get_method
    from kedit.methods.locate import context_templates
    from kedit.stats import second_moments

    lm = kedit.load_model("smollm2-135m", device=device)
    hparams = get_method(method).default_hparams(lm, overrides=overrides)
    layers = list(getattr(hparams, "layers", None) or [hparams.layer])  # MEMIT/AlphaEdit: layers; ROME: layer
    second_moments(lm, layers, hparams.mom2_corpus, hparams.mom2_tokens)
    context_templates(lm, hparams.context_template_length_params, hparams.template_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--method", default="memit")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--set", action="append", default=[], help="hyperparameter override key=value")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: run this n, print JSON
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from kedit.methods.hparams import parse_override

    overrides = dict(parse_override(text) for text in args.set)
    if args.one is not None:
        print(json.dumps(one_run(args.one, args.method, args.data, args.threads, overrides, args.device)))
        return
    warm(args.method, overrides, args.device)
    rows = []
    for n in args.ns:
        command = [sys.executable, __file__, "--one", str(n), "--method", args.method, "--data", str(args.data),
                   "--threads", str(args.threads), "--device", args.device, *[f"--set={text}" for text in args.set]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "command": " ".join(["python bench/memit_scale.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available, "
                   f"torch {torch.__version__}"
                   + (f", {torch.cuda.get_device_name()}" if args.device != "cpu" else ""),
        "overrides": overrides,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
