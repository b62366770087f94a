"""Scoring time with a long prefix shared by every prompt (IKE's in-context demonstrations), with
prefix-tree packing against the left-padded batches it replaced.

Every probe of ``--n`` CounterFact cases is shown after the same block of demonstrations (``New Fact:
… Prompt: …`` lines built from the cases, repeated to about ``--prefix-tokens`` tokens), as IKE
with fact retrieval shows one edit's probes. The two layouts must give the same log-probabilities;
the script checks that before printing the times::

    python bench/long_prefix_scoring.py --n 16 --prefix-tokens 900
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import kedit
from kedit.data.bench_data import load_bench_data
from kedit.evaluate.runner import case_probes
from kedit.models import scoring


def demonstrations(cases, tokenizer, tokens: int) -> str:
    lines = [f"New Fact: {case.request.prompt.format(case.request.subject)} {case.request.target_new}\n"
             f"Prompt: {case.request.prompt.format(case.request.subject)} {case.request.target_new}\n\n"
             for case in cases]
    text = ""
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += "".join(lines)
    return text


def timed(lm, pairs, packed: bool) -> tuple[float, list]:
    with mock.patch.object(scoring, "tree_packing_supported", scoring.tree_packing_supported if packed
                           else (lambda model, longest: False)):
        started = time.perf_counter()
        scores = scoring.score(lm, pairs)
        return time.perf_counter() - started, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--prefix-tokens", type=int, default=900)
    args = parser.parse_args()

    lm = kedit.load_model(args.model)
    cases = list(load_bench_data(args.data, args.n, 0).cases)
    pairs = [pair for case in cases for pair in case_probes(case).pairs]
    prefix = demonstrations(cases, lm.tokenizer, args.prefix_tokens)
    lm.push_prompt_context(lambda shown: [prefix] * len(shown), "bench-prefix")
    scoring.score(lm, pairs[:2])  # warm-up
    tree_seconds, tree = timed(lm, pairs, packed=True)
    padded_seconds, padded = timed(lm, pairs, packed=False)
    worst = max(abs(a - b) for x, y in zip(tree, padded, strict=True) for a, b in zip(x.log_probs, y.log_probs, strict=True))
    if worst > 1e-3:
        raise SystemExit(f"packed and padded scoring disagree by {worst:.2e}")
    print(f"{len(pairs)} pairs of {len(cases)} cases behind a {len(lm.tokenizer(prefix)['input_ids'])}-token prefix; "
          f"layouts agree to {worst:.1e}\n")
    print("| layout | seconds | pairs/s |\n|---|---:|---:|")
    print(f"| prefix trees | {tree_seconds:.2f} | {len(pairs) / tree_seconds:.1f} |")
    print(f"| left-padded batches | {padded_seconds:.2f} | {len(pairs) / padded_seconds:.1f} |")
    print(f"\nspeed-up {padded_seconds / tree_seconds:.1f}x")


if __name__ == "__main__":
    main()
