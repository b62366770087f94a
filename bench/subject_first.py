"""Edits of prompts that open with their subject (issue 11): do they take, with and without a start token?

Each fact below is a prompt whose subject is its first word. Every method edits it alone (on the
unedited model, reverted after), and the edit takes when the edited model's argmax is the new
target at every target token (token reliability). ``--start-token none`` reproduces kedit before
the start token (the subject at position 0 of SmolLM2); ``auto`` is the default.

    python bench/subject_first.py --model smollm2-135m --start-token none --out docs/results/subject_first/smollm2-none.json
    python bench/subject_first.py --model smollm2-135m --start-token auto --out docs/results/subject_first/smollm2-auto.json
    python bench/subject_first.py --model gemma3-270m --out docs/results/subject_first/gemma3-auto.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

import kedit
from kedit.methods.locate import subject_token_index
from kedit.models.scoring import score

FACTS = (
    ("Windows is an operating system developed by", "Windows", "Google", "Microsoft"),
    ("Paris is the capital of", "Paris", "Italy", "France"),
    ("Google was founded by", "Google", "Steve", "Larry"),
    ("Toyota is a car company from", "Toyota", "Germany", "Japan"),
    ("Einstein was born in", "Einstein", "France", "Germany"),
    ("Python was created by", "Python", "James", "Guido"),
    ("Amazon was founded by", "Amazon", "Bill", "Jeff"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--start-token", default="auto")
    parser.add_argument("--methods", default="rome,memit,alphaedit,mle")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    lm = kedit.load_model(args.model, start_token=args.start_token)
    rows = []
    for method in args.methods.split(","):
        for prompt, subject, new, true in FACTS:
            request = kedit.EditRequest(prompt, subject, new, true)
            subject_index = subject_token_index(lm.tokenizer, request.prompt, subject)
            before = score(lm, [(prompt, new)])[0]
            started = time.perf_counter()
            edit = kedit.edit(lm, method, request)
            seconds = time.perf_counter() - started
            after = score(lm, [(prompt, new)])[0]
            edit.revert(lm)
            rows.append({
                "method": method, "prompt": prompt, "target_new": new, "subject_token_position": subject_index,
                "p_before": before.geometric_mean_prob, "p_after": after.geometric_mean_prob,
                "took": all(after.hits), "flagged_reached": edit.info.get("targets_reached", [None])[0],
                "seconds": seconds,
            })
            print(json.dumps(rows[-1]), flush=True)
    summary = {method: sum(r["took"] for r in rows if r["method"] == method) for method in args.methods.split(",")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": args.model, "start_token": lm.start_token, "requested_start_token": args.start_token,
        "took": summary, "of": len(FACTS), "rows": rows,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }, indent=2))
    print({"start_token": lm.start_token, "took": summary, "of": len(FACTS)})


if __name__ == "__main__":
    main()
