"""Edit time of a trained editor (MEND: one forward/backward + the editor; SERAC: storing the edit and
embedding its key) and, for SERAC, the query overhead of routing, on the bundled model.

    python bench/trained_edit_time.py --method mend --artifact runs/mend-sweep/lr-1e-5 \
        --data counterfact-easyedit:../shared/data/counterfact/easyedit_counterfact-edit.json --n 20

Each request is edited alone; the first edit (which reads the artifact) is timed apart. Run it on a
quiet machine: it is a timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--data", required=True, help="NAME:PATH")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from kedit.data.bench_data import load_bench_data
    from kedit.methods import method_for
    from kedit.models.loading import load_model
    from kedit.models.scoring import score

    lm = load_model(args.model)
    cases = load_bench_data(args.data, args.n + 1, 0).cases
    method = method_for(lm, args.method)
    hparams = method.default_hparams(lm, overrides={"artifact": args.artifact})
    started = time.perf_counter()
    method.compute(lm, [cases[0].request], hparams)
    first = time.perf_counter() - started
    times, query_base, query_edited = [], [], []
    for case in cases[1:]:
        started = time.perf_counter()
        edit = method.compute(lm, [case.request], hparams)
        times.append(time.perf_counter() - started)
        pairs = [(case.request.text, case.request.target_new), *[(p, case.request.target_new) for p in case.rephrases]]
        started = time.perf_counter()
        score(lm, pairs)
        query_base.append(time.perf_counter() - started)
        edit.apply(lm)
        started = time.perf_counter()
        score(lm, pairs)
        query_edited.append(time.perf_counter() - started)
        edit.revert(lm)
    result = {"method": args.method, "model": args.model, "edits": len(times), "threads": torch.get_num_threads(),
              "first_edit_s": first, "median_edit_s": statistics.median(times), "max_edit_s": max(times),
              "median_query_unedited_s": statistics.median(query_base),
              "median_query_edited_s": statistics.median(query_edited),
              "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
